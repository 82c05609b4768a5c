//! Micro-benchmark of the CPU backend's convolution paths at the shipped models' (and
//! google/ddpm-cifar10-32's) layer shapes: Winograd's F(4×4, 3×3) and F(2×2, 3×3) (`ops::conv2d::winograd`) and
//! the direct kernel (`ops::conv2d::direct`) against the GEMM paths (`ops::conv2d::cpu`), in
//! GFLOP/s on one thread (a multiply-add counted as 2, Winograd's counted as the direct
//! convolution's), best and median of several runs: on a shared machine the best shows what the
//! core can do, the median what a forward meets.
//!
//! `cargo run --release --example cpu_conv [N,Ci,Co,HW,stride]` (one shape alone, for profiling;
//! `CPU_CONV_ONLY=winograd|direct|gemm` runs one path alone)

use std::time::Instant;

use stepwise::backend::Conv2dParams;
use stepwise::ops::conv2d::{self, direct, winograd};
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
        (1, 128, 128, 32, 1),
        (1, 256, 256, 16, 1),
        (1, 256, 256, 8, 1),
    ];
    println!(
        "| N | Ci | Co | H×W | stride | F(4×4) Winograd GFLOP/s, best / median | F(2×2) Winograd GFLOP/s, best / median | direct GFLOP/s, best / median | GEMM paths, best / median | F(4×4) / F(2×2) median time | F(2×2) / direct median time | direct / GEMM median time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // `CPU_CONV_ONLY=winograd|direct|gemm` times one path alone, for `perf stat`.
    let only = std::env::var("CPU_CONV_ONLY").ok();
    let run = |path: &str| only.as_deref().is_none_or(|o| o == path);
    // One shape from the command line, for `perf record`.
    let one: Option<Vec<usize>> = std::env::args().nth(1).map(|a| {
        a.split(',')
            .map(|v| v.parse().expect("N,Ci,Co,HW,stride"))
            .collect()
    });
    let shapes = match one.as_deref() {
        Some(&[n, ci, co, hw, stride]) => vec![(n, ci, co, hw, stride)],
        Some(_) => panic!("expected N,Ci,Co,HW,stride"),
        None => shapes.to_vec(),
    };
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
        let gemm = if run("gemm") {
            time_ms(runs, || {
                conv2d::cpu(&x, &xs, &rows, &ws, Some(&bias), p, &mut out)
            })
        } else {
            [f64::NAN; 2]
        };
        let direct = match conv2d::direct_width(&ws, &o, p).filter(|_| run("direct")) {
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
        let g = direct::Geometry::new(&xs, &ws, p);
        let winograd_with =
            |tile: winograd::Tile, out: &mut Vec<f32>| match winograd::fits(&g, tile)
                && run("winograd")
            {
                true => {
                    let packed = winograd::pack_weight(&w, &ws, tile);
                    let e = direct::Epilogue {
                        bias: Some(&bias),
                        ..direct::Epilogue::NONE
                    };
                    time_ms(runs, || winograd::conv(&x, &g, tile, &packed, None, e, out))
                }
                false => [f64::NAN; 2],
            };
        let f2 = winograd_with(winograd::Tile::F2, &mut out);
        let f4 = winograd_with(winograd::Tile::F4, &mut out);
        let rate = |ms: f64| flop / ms / 1e6;
        println!(
            "| {n} | {ci} | {co} | {hw}×{hw} | {stride} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}× | {:.2}× | {:.2}× |",
            rate(f4[0]),
            rate(f4[1]),
            rate(f2[0]),
            rate(f2[1]),
            rate(direct[0]),
            rate(direct[1]),
            rate(gemm[0]),
            rate(gemm[1]),
            f4[1] / f2[1],
            f2[1] / direct[1],
            direct[1] / gemm[1]
        );
    }
}
