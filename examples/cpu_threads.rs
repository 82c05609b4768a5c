//! What splitting one op over the CPU backend's threads costs on this machine: the time a
//! two-way split of `work` µs adds beyond `work / 2`, when the previous split ended `gap` µs
//! before (the serial ops between two convolutions). rayon's idle threads sleep after a few tens
//! of microseconds; waking one is what a split pays after a longer gap. It sets
//! `ops::conv2d::direct::PARALLEL_MACS`.
//!
//! `cargo run --release --example cpu_threads`

use std::time::Instant;

use rayon::prelude::*;

/// Busy for `us` microseconds.
fn spin(us: f64) {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() * 1e6 < us {
        std::hint::spin_loop();
    }
}

fn main() {
    let threads = 2;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    println!(
        "{threads} threads; overhead = time per split - gap - work / {threads}, median of 301"
    );
    for gap in [0.0, 20.0, 50.0, 100.0, 500.0] {
        for work in [50.0, 200.0, 1000.0] {
            let mut t: Vec<f64> = pool.install(|| {
                let mut parts = vec![0u8; threads];
                (0..301)
                    .map(|_| {
                        spin(gap);
                        let t = Instant::now();
                        parts
                            .par_iter_mut()
                            .for_each(|_| spin(work / threads as f64));
                        t.elapsed().as_secs_f64() * 1e6
                    })
                    .collect()
            });
            t.sort_by(f64::total_cmp);
            let over = t[t.len() / 2] - work / threads as f64;
            println!("gap {gap:>5} µs, work {work:>6} µs: overhead {over:>6.1} µs");
        }
    }
}
