//! The committed corpus of broken and hostile model folders (tests/fixtures/hostile, made by
//! make_hostile.py there): through `diffuse forward`, each fails with exit status 1 and its own
//! message naming the problem (the piece in its `expect.txt`), never a panic; the valid control
//! folder runs. The page gets the same corpus in tests/e2e/hostile.test.mjs.

use std::path::{Path, PathBuf};
use std::process::Command;

use stepwise::io::write_tensors;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expect.txt").exists())
        .collect();
    v.sort();
    assert!(
        v.len() >= 20,
        "expected the 20 broken folders, found {}",
        v.len()
    );
    v
}

fn forward(model: &Path, input: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(["forward", "--device", "cpu", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap()
}

fn input_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepwise-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("input.safetensors");
    let bytes = write_tensors(&[
        ("sample", &[1, 1, 8, 8], &vec![0.5; 64]),
        ("timestep", &[1], &[10.0]),
    ])
    .unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_broken_folder_gets_its_own_clear_message() {
    let input = input_file();
    let out = input.with_file_name("out.safetensors");
    let mut messages = std::collections::HashSet::new();
    for dir in corpus() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expect = std::fs::read_to_string(dir.join("expect.txt")).unwrap();
        let o = forward(&dir, &input, &out);
        let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
        eprintln!("{name}: {stderr}");
        assert_eq!(o.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert!(stderr.starts_with("diffuse: error:"), "{name}: {stderr}");
        assert!(
            stderr.contains(expect.trim()),
            "{name}: expected the message to contain {:?}, got {stderr}",
            expect.trim()
        );
        messages.insert(stderr.replace(&dir.display().to_string(), "DIR"));
    }
    // No two kinds of damage collapse into one generic message.
    assert_eq!(
        messages.len(),
        corpus().len(),
        "some messages are identical"
    );
}

#[test]
fn the_valid_control_folder_runs() {
    let input = input_file();
    let out = input.with_file_name("valid-out.safetensors");
    let o = forward(&root().join("tests/fixtures/hostile/valid"), &input, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A model whose `conv_in` overflows f32: the run stops at step 1 naming the stage, on both
/// backends, instead of drawing garbage.
#[test]
fn non_finite_activations_are_reported_with_step_and_stage() {
    use safetensors::tensor::TensorView;
    let base = root().join("tests/fixtures/unet/attn_multihead");
    let dir = std::env::temp_dir().join(format!("stepwise-overflow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(base.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(base.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (k, _, _, data) in tensors.iter_mut() {
        if k == "conv_in.weight" {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&3.0e38f32.to_le_bytes());
            }
        }
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    for device in ["cpu", "gpu"] {
        let o = Command::new(env!("CARGO_BIN_EXE_diffuse"))
            .args([
                "sample",
                "--sampler",
                "ddim",
                "--steps",
                "3",
                "--device",
                device,
            ])
            .arg("--model")
            .arg(&dir)
            .arg("--output")
            .arg(dir.join("out.png"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{device}: {stderr}");
        assert!(
            stderr.contains("at step 1") && stderr.contains("`conv_in`"),
            "{device}: {stderr}"
        );
        assert!(!dir.join("out.png").exists(), "{device}: wrote an image");
    }
}
