//! The training side end to end, as issue #4 asks: `training/quick_test.py` trains the `tiny`
//! config for a few steps on a subset of Fashion-MNIST, exports it exactly as the shipped models
//! are exported (and loads it in diffusers' pipelines), and writes diffusers' float64 output on
//! fresh inputs; the Rust engine then loads that folder and must agree on both backends.
//! Trained fresh on every run (≈ 20–60 s on 2 cores), into target/quick-train.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use stepwise::cpu::CpuBackend;
use stepwise::io::{read_tensors, rel_l2};
use stepwise::model::loader::{load_unet_files, DirSource};
use stepwise::model::UNet2DModel;
use stepwise::{Backend, Tensor};

/// Trains and exports once per test binary; both tests share the folder.
fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/quick-train");
        let o = Command::new(common::python())
            .arg(root.join("training/quick_test.py"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run training/quick_test.py");
        assert!(
            o.status.success(),
            "training/quick_test.py failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out.join("model")
    })
}

fn check<B: Backend>(b: &B, device: &str, tol: f64) {
    let dir = model_dir();
    let files = load_unet_files(&DirSource(dir.to_path_buf())).unwrap();
    assert!(
        files.scheduler_config.is_some(),
        "the exported folder has a scheduler"
    );
    let unet = UNet2DModel::load(b, files.config, &files.weights).unwrap();
    let golden = read_tensors(
        &std::fs::read(dir.join("golden.safetensors")).unwrap(),
        "golden",
    )
    .unwrap();
    let x = b
        .upload(&golden["sample"].shape, &golden["sample"].to_f32())
        .unwrap();
    let labels = golden["class_labels"].to_i64("class_labels").unwrap();
    let y = unet
        .forward(b, &x, &golden["timestep"].to_f32(), Some(&labels))
        .unwrap();
    let got = pollster::block_on(b.download(&y)).unwrap();
    let want = golden["expected"].to_f32();
    assert_eq!(y.shape(), golden["expected"].shape.as_slice());
    let err = rel_l2(&got, &want);
    eprintln!("{device}: freshly trained tiny model, rel L2 {err:e}");
    assert!(err <= tol, "{device}: relative L2 {err:e} > {tol:e}");
}

#[test]
fn freshly_trained_model_matches_diffusers() {
    check(&CpuBackend, "cpu", 1e-4);
    check(&common::gpu(), "gpu", 1e-3);
}
