//! Shared test helpers: a GPU backend that fails loudly when no adapter exists, and fresh seeds.

#![allow(dead_code)]

use stepwise::gpu::GpuBackend;

/// The GPU backend. There is no skipping: without an adapter (lavapipe:
/// `apt-get install mesa-vulkan-drivers`, which `scripts/test.sh` installs) the test fails.
pub fn gpu() -> GpuBackend {
    match pollster::block_on(GpuBackend::new()) {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need a WebGPU-capable adapter (run scripts/test.sh, which installs lavapipe): {e}"),
    }
}

/// A fresh seed per run, printed so that a failure can be replayed with `TEST_SEED`.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
        });
    eprintln!("{test}: TEST_SEED={seed}");
    seed
}

/// The project venv's Python (`STEPWISE_VENV`, default ~/.cache/stepwise/venv), failing loudly
/// when `scripts/setup.sh python` has not made it.
pub fn python() -> std::path::PathBuf {
    let venv = std::env::var("STEPWISE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/stepwise/venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh python (scripts/test.sh does)",
        py.display()
    );
    py
}
