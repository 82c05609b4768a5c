//! A whole model folder from fuzz bytes: `[u16 LE config length][config.json][weights]`, loaded
//! as a bare UNet folder and as an AutoencoderKL folder; whatever loads runs one small forward
//! pass on the CPU backend. Any panic, hang or out-of-memory is a bug: bad input must be an `Err`.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use stepwise::cpu::CpuBackend;
use stepwise::model::loader::{load_unet_files, load_vae_files, MemorySource};
use stepwise::model::{AutoencoderKL, UNet2DModel};
use stepwise::Backend;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (config, weights) = rest.split_at(n.min(rest.len()));
    let mut files = HashMap::new();
    files.insert("config.json".to_string(), config.to_vec());
    files.insert(
        "diffusion_pytorch_model.safetensors".to_string(),
        weights.to_vec(),
    );
    let src = MemorySource {
        name: "fuzz".into(),
        files,
    };
    let b = CpuBackend;
    if let Ok(f) = load_unet_files(&src) {
        if let Ok(unet) = UNet2DModel::load(&b, f.config.clone(), &f.weights) {
            let m = unet.size_multiple().min(64);
            let shape = [1, f.config.in_channels, m, m];
            let labels = f.config.is_class_conditional().then(|| vec![0i64]);
            if unet.check_inputs(&shape, &[1.0], labels.as_deref()).is_ok() {
                let len = shape.iter().product();
                if let Ok(x) = b.upload(&shape, &vec![0.25; len]) {
                    let _ = unet.forward(&b, &x, &[1.0], labels.as_deref());
                }
            }
        }
    }
    if let Ok(Some(v)) = load_vae_files(&src) {
        if let Ok(vae) = AutoencoderKL::load(&b, v.config.clone(), &v.weights) {
            let shape = [1, v.config.latent_channels, 2, 2];
            if let Ok(z) = b.upload(&shape, &vec![0.1; shape.iter().product()]) {
                let _ = vae.decode_latents(&b, &z);
            }
        }
    }
});
