//! AutoencoderKL parity with diffusers: every folder under tests/fixtures/vae (made by
//! make_vae_fixtures.py beside them) loads; its encoder moments, decoder output and scaled-latent
//! decode match diffusers' float64 output within relative L2 1e-4 on the CPU backend and 1e-3 on
//! the GPU backend.

mod common;

use std::path::{Path, PathBuf};

use stepwise::cpu::CpuBackend;
use stepwise::io::{read_tensors, rel_l2};
use stepwise::model::loader::{load_vae_files, DirSource};
use stepwise::model::AutoencoderKL;
use stepwise::{Backend, Tensor};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.safetensors").exists())
        .collect();
    v.sort();
    assert_eq!(v.len(), 4, "expected the 4 VAE cases in {}", root.display());
    v
}

/// The case with a factor-2 VAE, 3 image and 4 latent channels.
fn two_blocks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/two_blocks")
}

/// (name, shape, values) for `moments`, `decoded` and `decoded_scaled`.
fn run<B: Backend>(b: &B, dir: &Path) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let files = load_vae_files(&DirSource(dir.to_path_buf()))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .unwrap_or_else(|| panic!("{}: no VAE found", dir.display()));
    let vae = AutoencoderKL::load(b, files.config, &files.weights)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let inputs = read_tensors(
        &std::fs::read(dir.join("input.safetensors")).unwrap(),
        "input",
    )
    .unwrap();
    let up = |k: &str| b.upload(&inputs[k].shape, &inputs[k].to_f32()).unwrap();
    let (image, latents) = (up("image"), up("latents"));
    let outs = [
        ("moments", vae.encode(b, &image).unwrap()),
        ("decoded", vae.decode(b, &latents).unwrap()),
        ("decoded_scaled", vae.decode_latents(b, &latents).unwrap()),
    ];
    outs.into_iter()
        .map(|(k, t)| {
            (
                k,
                t.shape().to_vec(),
                pollster::block_on(b.download(&t)).unwrap(),
            )
        })
        .collect()
}

/// Every case's outputs within `tol` of diffusers; returns the largest relative L2.
fn check<B: Backend>(b: &B, device: &str, tol: f64) -> f64 {
    let mut largest = 0f64;
    for dir in cases() {
        let expected = read_tensors(
            &std::fs::read(dir.join("expected.safetensors")).unwrap(),
            "expected",
        )
        .unwrap();
        for (key, shape, got) in run(b, &dir) {
            let want = &expected[key];
            assert_eq!(shape, want.shape, "{}: {key}", dir.display());
            let err = rel_l2(&got, &want.to_f32());
            eprintln!(
                "{device} {} {key}: rel L2 {err:e}",
                dir.file_name().unwrap().to_string_lossy()
            );
            assert!(
                err <= tol,
                "{}: {key} relative L2 {err:e} > {tol:e} on the {device}",
                dir.display()
            );
            largest = largest.max(err);
        }
    }
    largest
}

#[test]
fn cpu_matches_diffusers() {
    check(&CpuBackend, "cpu", 1e-4);
}

#[test]
fn gpu_matches_diffusers() {
    check(&common::gpu(), "gpu", 1e-3);
}

#[test]
fn gpu_with_f16_weights_matches_diffusers() {
    // The decoders' convolution and linear weights rounded to f16 (`STEPWISE_PRECISION=f16`):
    // the fixtures' weights are f32, so the rounding must show, within 2e-3.
    let g = common::gpu();
    g.ctx.f16_weights.set(true);
    let largest = check(&g, "gpu with f16 weights", 2e-3);
    assert!(
        largest > 1e-5,
        "no output moved from f32 (largest rel L2 {largest:e}): f16 weights unused?"
    );
}

#[test]
fn wrong_inputs_are_named() {
    let dir = &two_blocks();
    let b = CpuBackend;
    let files = load_vae_files(&DirSource(dir.clone())).unwrap().unwrap();
    let vae = AutoencoderKL::load(&b, files.config, &files.weights).unwrap();
    let bad_channels = b.upload(&[1, 5, 16, 16], &vec![0.0; 5 * 256]).unwrap();
    let e = vae
        .encode(&b, &bad_channels)
        .map(|_| ())
        .expect_err("5 channels")
        .to_string();
    assert!(e.contains("[N, 3, H, W]"), "{e}");
    let odd = b.upload(&[1, 3, 15, 16], &vec![0.0; 3 * 15 * 16]).unwrap();
    let e = vae
        .encode(&b, &odd)
        .map(|_| ())
        .expect_err("odd size")
        .to_string();
    assert!(e.contains("downscale factor 2"), "{e}");
    let bad_latents = b.upload(&[1, 3, 8, 8], &vec![0.0; 3 * 64]).unwrap();
    let e = vae
        .decode(&b, &bad_latents)
        .map(|_| ())
        .expect_err("3 latent channels")
        .to_string();
    assert!(e.contains("[N, 4, H, W]"), "{e}");
}

#[test]
fn unknown_block_types_and_missing_tensors_are_named() {
    let dir = &two_blocks();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let tmp = std::env::temp_dir().join(format!("stepwise-vae-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("UpDecoderBlock2D", "AttnUpDecoderBlock2D"),
    )
    .unwrap();
    std::fs::write(tmp.join("diffusion_pytorch_model.safetensors"), &weights).unwrap();
    let e = load_vae_files(&DirSource(tmp.clone()))
        .map(|_| ())
        .expect_err("unknown block type")
        .to_string();
    assert!(e.contains("AttnUpDecoderBlock2D"), "{e}");
    // A config asking for more latent channels than the weights hold names the tensor.
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("\"latent_channels\": 4", "\"latent_channels\": 6"),
    )
    .unwrap();
    let files = load_vae_files(&DirSource(tmp.clone())).unwrap().unwrap();
    let e = AutoencoderKL::load(&CpuBackend, files.config, &files.weights)
        .map(|_| ())
        .expect_err("shape mismatch")
        .to_string();
    assert!(e.contains("encoder.conv_out.weight"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
