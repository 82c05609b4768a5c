//! Shared test helpers: a GPU backend that fails loudly when no adapter exists, fresh random data
//! with a printed seed, and the relative-L2 metric.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stepwise::gpu::GpuBackend;

/// The GPU backend. There is no skipping: without an adapter (install lavapipe:
/// `apt-get install mesa-vulkan-drivers`, which `scripts/test.sh` does) the test fails.
pub fn gpu() -> GpuBackend {
    match pollster::block_on(GpuBackend::new()) {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need a WebGPU-capable adapter (run scripts/test.sh, which installs lavapipe): {e}"),
    }
}

/// A fresh RNG per run; the seed is printed so that a failure can be replayed with `TEST_SEED`.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    // Box–Muller; test data only.
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(1e-7..1.0);
            let u2: f32 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}
