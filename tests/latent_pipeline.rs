//! Latent diffusion through `diffuse sample`: a diffusers DDIM loop over a UNet on 4×8×8
//! latents, decoded by an AutoencoderKL (tests/fixtures/latent_pipeline, made by
//! tests/fixtures/vae/make_vae_fixtures.py) with injected noise, on both backends; the PNG and
//! the per-step frames (latent panels beside the decoded x̂0).

use std::path::{Path, PathBuf};
use std::process::Command;

use stepwise::io::{read_tensors, rel_l2};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/latent_pipeline")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stepwise-latent-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn diffuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn golden(device: &str, tol: f64) {
    let out = tmp(device).join("out.safetensors");
    let noise = fixture().join("noise.safetensors");
    let o = diffuse(&[
        "sample",
        "--model",
        "tests/fixtures/latent_pipeline",
        "--sampler",
        "ddim",
        "--steps",
        "8",
        "--batch",
        "2",
        "--noise",
        noise.to_str().unwrap(),
        "--device",
        device,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "diffuse sample failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = read_tensors(&std::fs::read(&out).unwrap(), "out").unwrap();
    let want = read_tensors(
        &std::fs::read(fixture().join("expected.safetensors")).unwrap(),
        "expected",
    )
    .unwrap();
    for key in ["latents", "image"] {
        assert_eq!(got[key].shape, want[key].shape, "{key} shape");
        let err = rel_l2(&got[key].to_f32(), &want[key].to_f32());
        eprintln!("{device} {key}: rel L2 {err:e}");
        assert!(
            err <= tol,
            "{key} on {device}: relative L2 {err:e} > {tol:e}"
        );
    }
    assert_eq!(got["image"].shape, vec![2, 3, 32, 32]);
}

#[test]
fn latent_loop_and_decode_match_diffusers_on_cpu() {
    golden("cpu", 1e-4);
}

#[test]
fn latent_loop_and_decode_match_diffusers_on_gpu() {
    golden("gpu", 1e-3);
}

#[test]
fn png_is_the_decoded_image_and_frames_show_latents_and_decoded_x0() {
    let d = tmp("png");
    let png = d.join("out.png");
    let frames = d.join("frames");
    let o = diffuse(&[
        "sample",
        "--model",
        "tests/fixtures/latent_pipeline",
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--output",
        png.to_str().unwrap(),
        "--frames",
        frames.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (32, 32),
        "decoded size, not latent size"
    );
    let mut names: Vec<_> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["step_0000.png", "step_0001.png", "step_0002.png"]);
    // 4 latent panels of 8 px with 1 px gaps (35), a 4 px gap, the 32 px decoded image.
    let f = image::open(frames.join("step_0000.png")).unwrap();
    assert_eq!((f.width(), f.height()), (35 + 4 + 32, 32));
}
