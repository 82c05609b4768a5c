//! `scheduler_config.json` text and a step count: every sampler is built from it, set to that
//! many steps, and stepped once on a small sample.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwise::sampler::{self, SamplerKind, SchedulerConfig};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let steps = u16::from_le_bytes([data[0], data[1]]) as usize;
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let Ok(cfg) = SchedulerConfig::from_json_str(text) else {
        return;
    };
    for kind in SamplerKind::ALL {
        let Ok(mut s) = sampler::build(kind, &cfg, 0.5) else {
            continue;
        };
        if s.set_timesteps(steps).is_err() {
            continue;
        }
        let x = vec![0.5f32; 8];
        let noise = vec![0.1f32; 8];
        if let Some(&t) = s.timesteps().first() {
            if let Ok(inp) = s.scale_model_input(&x, t) {
                let _ = s.step(&inp, t, &x, Some(&noise));
            }
        }
    }
});
