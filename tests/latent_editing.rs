//! Editing with a latent model through the CLI (issue #7: "for latent models, in latent space
//! with a downsampled mask"): `diffuse edit --strength 0` returns the VAE's latents of the input,
//! and `diffuse inpaint` keeps exactly those latents wherever no image pixel of the latent pixel's
//! 4×4 block is masked, and regenerates the rest. Uses the shipped `emoji-latent` and a held-out
//! emoji (tests/fixtures/sr_heldout).

use std::path::{Path, PathBuf};
use std::process::Command;

use stepwise::io::{read_tensors, write_tensors};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], out: &Path) -> std::collections::HashMap<String, stepwise::io::HostTensor> {
    let o = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(root())
        .args(args)
        .args(["--model", "assets/models/emoji-latent", "--sampler", "ddim"])
        .args(["--steps", "4", "--seed", "3", "--device", "cpu", "--output"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diffuse {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_tensors(&std::fs::read(out).unwrap(), "out").unwrap()
}

#[test]
fn latent_inpainting_keeps_the_encoded_known_region() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("stepwise-latent-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = read_tensors(
        &std::fs::read(root().join("tests/fixtures/sr_heldout/heldout8.safetensors")).unwrap(),
        "fixture",
    )
    .unwrap();
    let image = &t["image"].to_f32()[..3 * 64 * 64];
    let input = dir.join("in.safetensors");
    std::fs::write(
        &input,
        write_tensors(&[("image", &[1, 3, 64, 64], image)]).unwrap(),
    )
    .unwrap();
    // Mask: image rows 10..30 (latent rows 2..7: rows 2 and 7 only partly covered).
    let mask: Vec<f32> = (0..64 * 64)
        .map(|p| {
            if (10..30).contains(&(p / 64)) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mask_path = dir.join("mask.safetensors");
    std::fs::write(
        &mask_path,
        write_tensors(&[("mask", &[1, 1, 64, 64], &mask)]).unwrap(),
    )
    .unwrap();
    let input_s = input.to_str().unwrap();
    let encoded = run(
        &["edit", "--input", input_s, "--strength", "0"],
        &dir.join("enc.safetensors"),
    );
    let inpainted = run(
        &[
            "inpaint",
            "--input",
            input_s,
            "--mask",
            mask_path.to_str().unwrap(),
        ],
        &dir.join("inp.safetensors"),
    );
    assert_eq!(encoded["latents"].shape, vec![1, 4, 16, 16]);
    assert_eq!(inpainted["image"].shape, vec![1, 3, 64, 64]);
    let (z0, z1) = (encoded["latents"].to_f32(), inpainted["latents"].to_f32());
    let (mut kept_diff, mut redrawn_diff) = (0.0f32, 0.0f32);
    for c in 0..4 {
        for y in 0..16 {
            for x in 0..16 {
                let i = (c * 16 + y) * 16 + x;
                let d = (z0[i] - z1[i]).abs();
                if (2..=7).contains(&y) {
                    redrawn_diff += d;
                } else {
                    kept_diff = kept_diff.max(d);
                }
            }
        }
    }
    assert_eq!(
        kept_diff, 0.0,
        "latents outside the downsampled mask must be the encoder's"
    );
    assert!(
        redrawn_diff / (4.0 * 6.0 * 16.0) > 0.05,
        "the masked latents were not regenerated"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
