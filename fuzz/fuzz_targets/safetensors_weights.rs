//! Raw `.safetensors` bytes: parse, then take every tensor as f32 under its own shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwise::model::Weights;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = Weights::from_bytes(data.to_vec(), "fuzz") {
        let keys: Vec<String> = w.keys().cloned().collect();
        for k in keys {
            if let Some(shape) = w.shape_of(&k) {
                let _ = w.get(&k, &shape);
            }
        }
        let _ = w.check_all_used();
    }
});
