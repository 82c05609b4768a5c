//! The CPU backend's fused attention ([`Backend::attention`] on the CPU: channel-major
//! projections, per head and block of query rows on the threads) against the composed one (the
//! GPU's sequence of `matmul` and `softmax_rows`, run on the CPU's ops), at the shipped models'
//! and google/ddpm-cifar10-32's attention shapes: best and median µs of 301 calls after a warm-up.
//!
//! `cargo run --release --example cpu_attention` (`STEPWISE_THREADS=1` for one thread)

use std::time::Instant;

use stepwise::backend::{AttentionWeights, Backend};
use stepwise::cpu::CpuBackend;
use stepwise::selftest::TestRng;

/// Best and median µs of 301 calls after one.
fn time_us(mut f: impl FnMut()) -> [f64; 2] {
    f();
    let mut t: Vec<f64> = (0..301)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    [t[0], t[t.len() / 2]]
}

fn main() {
    let b = CpuBackend;
    let mut r = TestRng::new(1);
    println!("| N | C | H×W | heads | fused µs, best / median | composed µs, best / median | fused / composed median |");
    println!("|---|---|---|---|---|---|---|");
    // (N, C, H = W, heads): fashion, emoji and emoji-sr at 8×8; emoji-latent at 8×8 and 4×4;
    // batch 4 at 8×8; 16×16 at 64 channels; google/ddpm-cifar10-32's 256 channels at 16×16.
    for (n, c, hw, heads) in [
        (1, 64, 8, 2),
        (1, 128, 4, 4),
        (4, 64, 8, 2),
        (1, 64, 16, 2),
        (1, 256, 16, 1),
    ] {
        let mut t = |shape: &[usize], scale: f32| {
            let v: Vec<f32> = r
                .randn(shape.iter().product())
                .iter()
                .map(|v| v * scale)
                .collect();
            b.upload(shape, &v).expect("upload")
        };
        let x = t(&[n, c, hw, hw], 1.0);
        let ws = 1.0 / (c as f32).sqrt();
        let (wq, bq, wo, bo) = (
            t(&[3 * c, c], ws),
            t(&[3 * c], 1.0),
            t(&[c, c], ws),
            t(&[c], 1.0),
        );
        let w = || AttentionWeights {
            qkv: &wq,
            qkv_bias: &bq,
            out: &wo,
            out_bias: &bo,
        };
        let fused = time_us(|| {
            b.attention(&x, &x, w(), heads, 1.0).expect("attention");
        });
        let composed = time_us(|| {
            stepwise::ops::attention::composed(&b, &x, &x, w(), heads, 1.0).expect("attention");
        });
        println!(
            "| {n} | {c} | {hw}×{hw} | {heads} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}× |",
            fused[0],
            fused[1],
            composed[0],
            composed[1],
            fused[1] / composed[1]
        );
    }
}
