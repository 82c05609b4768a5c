//! What splitting one op over two threads costs on this machine, for the CPU backend's pool
//! (micropool, `cpu/threads.rs`) and for rayon's: the time a two-way split of `work` µs adds
//! beyond `work / 2`, when the previous split ended `gap` µs before (the serial ops between two
//! convolutions). rayon's idle threads sleep after a few tens of microseconds and a split after
//! a longer gap pays to wake one; the backend's pool spins for about 2 ms first.
//!
//! `cargo run --release --example cpu_threads`

use std::time::Instant;

/// Busy for `us` microseconds.
fn spin(us: f64) {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() * 1e6 < us {
        std::hint::spin_loop();
    }
}

/// The median overhead of 301 splits of `work` µs after `gap` µs, split by `join`.
fn overhead(gap: f64, work: f64, join: &dyn Fn(&(dyn Fn() + Sync))) -> f64 {
    let mut t: Vec<f64> = (0..301)
        .map(|_| {
            spin(gap);
            let t = Instant::now();
            join(&|| spin(work / 2.0));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2] - work / 2.0
}

fn main() {
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a rayon pool");
    println!("2 threads; overhead = time per split - work / 2 (µs), median of 301 splits");
    println!("  gap    work   stepwise (micropool)   rayon");
    for gap in [0.0, 20.0, 50.0, 100.0, 500.0] {
        for work in [50.0, 200.0, 1000.0] {
            let ours = stepwise::cpu::threads::with_threads(2, || {
                overhead(gap, work, &|f| {
                    let mut two = [(); 2];
                    stepwise::cpu::threads::for_each(&mut two, |_| f());
                })
            });
            let theirs = rayon.install(|| overhead(gap, work, &|f| rayon::join(f, f).0));
            println!("{gap:>5} {work:>7} {ours:>17.1} {theirs:>12.1}");
        }
    }
}
