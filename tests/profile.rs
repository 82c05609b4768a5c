//! The GPU profiler (`STEPWISE_PROFILE=1`, `diffuse bench` prints its table). A test binary of its
//! own: the variable is read when a context is made, and in a shared process it would turn
//! profiling on for every other test.

mod common;

use stepwise::backend::Conv2dParams;
use stepwise::Backend;

#[test]
fn the_profiler_times_each_kernel() {
    std::env::set_var("STEPWISE_PROFILE", "1");
    let g = common::gpu();
    let p = g.ctx.profiler.as_ref().expect(
        "the adapter (lavapipe in CI) has timestamp queries inside passes: profiling should be on",
    );
    g.ctx.tiled.set(false);
    let x = g.upload(&[1, 3, 20, 20], &[0.5; 1200]).unwrap();
    let w = g.upload(&[8, 3, 3, 3], &[0.1; 216]).unwrap();
    let y = g.conv2d(&x, &w, None, Conv2dParams::same(3)).unwrap();
    let z = g.silu(&y).unwrap();
    pollster::block_on(g.download(&z)).unwrap();
    let report = p.report();
    let entries: Vec<&str> = report.iter().map(|k| k.entry).collect();
    assert_eq!(entries.len(), 2, "{report:?}");
    // A 20-wide 3 × 3 output on a CPU adapter runs the 8 × 8 register kernel for 3-wide taps.
    assert!(
        entries.contains(&"conv2d_wide3") && entries.contains(&"silu"),
        "{report:?}"
    );
    for k in &report {
        assert_eq!(k.dispatches, 1, "{report:?}");
        assert!(k.ms > 0.0 && k.ms < 60_000.0, "{report:?}");
    }
    p.reset();
    assert!(p.report().is_empty());
}
