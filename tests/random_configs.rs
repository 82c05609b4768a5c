//! Fresh random UNet2DModel configs, scheduler configs, latent pipelines (AutoencoderKL + UNet)
//! and SDEdit runs on every run, checked against diffusers through the fixed CLI (`diffuse
//! forward` on the CPU and both GPU kernel sets, `diffuse sample --noise`, `diffuse edit
//! --noise`): the way the product is checked from outside, on models not in the repository.
//! The cases and tolerances are in tests/random_configs_vs_diffusers.py; the seed is printed
//! (`TEST_SEED=S cargo test --test random_configs` replays a run).

mod common;

use std::process::Command;

#[test]
fn random_models_and_scheduler_configs_match_diffusers() {
    let seed = common::seed("random_configs") % 1_000_000_007;
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(common::python())
        .arg(format!("{root}/tests/random_configs_vs_diffusers.py"))
        .args(["--diffuse", env!("CARGO_BIN_EXE_diffuse")])
        .args(["--unets", "6", "--schedulers", "24"])
        .args(["--latents", "3", "--edits", "8"])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run tests/random_configs_vs_diffusers.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "random configs differ from diffusers (TEST_SEED={seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every case ran and was compared (a crash of the script would not print this line).
    assert!(
        stdout.contains("0 of 41 random cases differ from diffusers"),
        "{stdout}"
    );
}
