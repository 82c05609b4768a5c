//! Micro-benchmark of the CPU backend's convolution paths at the shipped models' layer shapes:
//! the direct kernel (`ops::conv2d::direct`) against the GEMM paths (`ops::conv2d::cpu`), in
//! GFLOP/s on one thread (a multiply-add counted as 2), best and median of several runs: on a
//! shared machine the best shows what the core can do, the median what a forward meets.
//!
//! `cargo run --release --example cpu_conv`

use std::time::Instant;

use stepwise::backend::Conv2dParams;
use stepwise::ops::conv2d::{self, direct};
use stepwise::selftest::TestRng;

/// Best and median ms of `runs` timed calls after a warm-up call.
fn time_ms(runs: usize, mut f: impl FnMut()) -> [f64; 2] {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    [t[0], t[runs / 2]]
}

fn main() {
    let mut r = TestRng::new(1);
    // (batch, Ci, Co, H = W, stride)
    let shapes = [
        (1, 3, 32, 32, 1),
        (1, 32, 32, 32, 1),
        (1, 64, 32, 32, 1),
        (1, 32, 32, 32, 2),
        (1, 64, 64, 16, 1),
        (1, 128, 64, 16, 1),
        (1, 64, 64, 8, 1),
        (1, 32, 3, 32, 1),
        (4, 32, 32, 32, 1),
        (4, 64, 64, 16, 1),
        (4, 64, 64, 8, 1),
        (1, 128, 128, 8, 1),
        (1, 256, 256, 4, 1),
        (1, 16, 16, 64, 1),
        (1, 32, 16, 64, 1),
        (1, 48, 16, 64, 1),
    ];
    println!(
        "| N | Ci | Co | H×W | stride | direct GFLOP/s, best / median | GEMM paths, best / median | direct / GEMM median time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n, ci, co, hw, stride) in shapes {
        let p = Conv2dParams {
            stride,
            pad: [1; 4],
        };
        let (xs, ws) = ([n, ci, hw, hw], [co, ci, 3, 3]);
        let x = r.randn(n * ci * hw * hw);
        let w = r.randn(co * ci * 9);
        let bias = r.randn(co);
        let o = conv2d::out_shape(&xs, &ws, Some(&[co]), p).unwrap();
        let mut out = vec![0f32; o.iter().product()];
        let flop = 2.0 * (o.iter().product::<usize>() * ci * 9) as f64;
        let runs = (2e9 / flop).clamp(5.0, 200.0) as usize;
        let rows = conv2d::weight_rows(&w, &ws);
        let gemm = time_ms(runs, || {
            conv2d::cpu(&x, &xs, &rows, &ws, Some(&bias), p, &mut out)
        });
        let direct = match conv2d::direct_width(&ws, &o, p) {
            Some(width) => {
                let packed = direct::pack_weight(&w, &ws);
                let g = direct::Geometry::new(&xs, &ws, p);
                let e = direct::Epilogue {
                    bias: Some(&bias),
                    ..direct::Epilogue::NONE
                };
                time_ms(runs, || {
                    direct::conv(&x, &g, &packed, None, e, width, &mut out)
                })
            }
            None => [f64::NAN; 2],
        };
        let rate = |ms: f64| flop / ms / 1e6;
        println!(
            "| {n} | {ci} | {co} | {hw}×{hw} | {stride} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}× |",
            rate(direct[0]),
            rate(direct[1]),
            rate(gemm[0]),
            rate(gemm[1]),
            direct[1] / gemm[1]
        );
    }
}
