//! A 2D toy model folder from fuzz bytes: `[u16 LE config length][config.json][model.safetensors]`,
//! loaded as the page's toy lab loads it; whatever loads runs one forward pass on a few points.
//! Any panic, hang or out-of-memory is a bug: bad input must be an `Err`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwise::toy2d::mlp::{Mlp, Toy2dConfig};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (config, weights) = rest.split_at(n.min(rest.len()));
    let Ok(cfg) = Toy2dConfig::from_json(&String::from_utf8_lossy(config), "config.json") else {
        return;
    };
    assert_eq!(cfg.data.sample(16, 0).len(), 32, "16 data points");
    if let Ok(mlp) = Mlp::from_safetensors(weights, &cfg.model, "model.safetensors") {
        let x = [0.1f32, -0.2, 0.3, 0.4, -1.0, 1.0];
        let out = mlp.forward(&x, &[10.0]);
        assert_eq!(out.len(), x.len(), "one ε̂ per coordinate");
    }
});
