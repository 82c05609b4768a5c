//! Every GPU kernel against its CPU reference on fresh random inputs, at sizes that cross the
//! kernels' tile and workgroup boundaries (4×4 register tiles, 64-wide and 8×8 workgroups, 256-wide
//! reductions), natively through wgpu (lavapipe in CI).

mod common;

use common::{gpu, randn, rng};
use rand::Rng;
use stepwise::backend::{BiasMode, Conv2dParams, MatmulSpec, Strides};
use stepwise::cpu::CpuBackend;
use stepwise::gpu::GpuBackend;
use stepwise::io::rel_l2;
use stepwise::{Backend, Tensor};

const TOL: f64 = 1e-5;

fn both(
    g: &GpuBackend,
    shape: &[usize],
    data: &[f32],
) -> (stepwise::cpu::CpuTensor, stepwise::gpu::GpuTensor) {
    (
        CpuBackend.upload(shape, data).unwrap(),
        g.upload(shape, data).unwrap(),
    )
}

fn compare(
    g: &GpuBackend,
    what: &str,
    cpu: &stepwise::cpu::CpuTensor,
    gpu_t: &stepwise::gpu::GpuTensor,
    tol: f64,
) {
    assert_eq!(cpu.shape(), gpu_t.shape(), "{what}: shapes differ");
    let got = pollster::block_on(g.download(gpu_t)).unwrap();
    let err = rel_l2(&got, cpu.data());
    assert!(err <= tol, "{what}: relative L2 {err:e} > {tol:e}");
}

#[test]
fn conv2d_matches_cpu() {
    let g = gpu();
    let mut r = rng("conv2d");
    for case in 0..8 {
        let k = if case % 3 == 0 { 1 } else { 3 };
        let stride = if case % 2 == 0 { 1 } else { 2 };
        let (n, ci, co) = (
            r.random_range(1..3),
            r.random_range(1..20),
            r.random_range(1..23),
        );
        let (h, w) = (r.random_range(k..19), r.random_range(k..21));
        let pad = match case % 4 {
            0 => [k / 2; 4],
            1 => [0, 0, 1, 1],
            2 => [1, 0, 2, 1],
            _ => [0; 4],
        };
        let p = Conv2dParams { stride, pad };
        let x = randn(&mut r, n * ci * h * w);
        let wt = randn(&mut r, co * ci * k * k);
        let b = randn(&mut r, co);
        let (xc, xg) = both(&g, &[n, ci, h, w], &x);
        let (wc, wg) = both(&g, &[co, ci, k, k], &wt);
        let (bc, bg) = both(&g, &[co], &b);
        let bias = case % 5 != 4;
        let c = CpuBackend.conv2d(&xc, &wc, bias.then_some(&bc), p).unwrap();
        let gg = g.conv2d(&xg, &wg, bias.then_some(&bg), p).unwrap();
        compare(
            &g,
            &format!("conv2d {n}x{ci}x{h}x{w} -> {co} k{k} {p:?}"),
            &c,
            &gg,
            TOL,
        );
    }
}

#[test]
fn group_norm_matches_cpu() {
    let g = gpu();
    let mut r = rng("group_norm");
    for case in 0..6 {
        let groups = [1, 2, 4, 8, 32, 3][case];
        let c = groups * r.random_range(1..5);
        let (n, h, w) = (
            r.random_range(1..4),
            r.random_range(1..24),
            r.random_range(1..24),
        );
        // Offset activations: the two-pass variance must stay accurate away from zero.
        let x: Vec<f32> = randn(&mut r, n * c * h * w)
            .iter()
            .map(|v| v * 3.0 + 5.0)
            .collect();
        let (xc, xg) = both(&g, &[n, c, h, w], &x);
        let (gc, gg) = both(&g, &[c], &randn(&mut r, c));
        let (bc, bg) = both(&g, &[c], &randn(&mut r, c));
        let silu = case % 2 == 0;
        let want = CpuBackend
            .group_norm(&xc, &gc, &bc, groups, 1e-5, silu)
            .unwrap();
        let got = g.group_norm(&xg, &gg, &bg, groups, 1e-5, silu).unwrap();
        compare(
            &g,
            &format!("group_norm {n}x{c}x{h}x{w} g{groups}"),
            &want,
            &got,
            TOL,
        );
    }
}

#[test]
fn matmul_matches_cpu_with_strides_bias_and_residual() {
    let g = gpu();
    let mut r = rng("matmul");
    for case in 0..8 {
        let (m, n, k) = (
            r.random_range(1..70),
            r.random_range(1..70),
            r.random_range(1..50),
        );
        let (outer, inner) = (r.random_range(1..3), r.random_range(1..4));
        let batch = outer * inner;
        // A transposed in even cases (column-major per batch), B transposed in odd ones.
        let a = if case % 2 == 0 {
            Strides {
                offset: 3,
                row: 1,
                col: m,
                outer: m * k * inner,
                inner: m * k,
            }
        } else {
            Strides {
                offset: 0,
                row: k,
                col: 1,
                outer: m * k * inner,
                inner: m * k,
            }
        };
        let b = if case % 2 == 1 {
            Strides {
                offset: 0,
                row: 1,
                col: k,
                outer: k * n * inner,
                inner: k * n,
            }
        } else {
            Strides {
                offset: 5,
                row: n,
                col: 1,
                outer: 0,
                inner: k * n,
            }
        };
        let c = Strides {
            offset: 0,
            row: n,
            col: 1,
            outer: m * n * inner,
            inner: m * n,
        };
        let bias_mode = [BiasMode::None, BiasMode::PerRow, BiasMode::PerCol][case % 3];
        let spec = MatmulSpec {
            m,
            n,
            k,
            batch,
            batch_inner: inner,
            a,
            b,
            c,
            alpha: 0.7,
            out_scale: 1.3,
            bias: bias_mode,
        };
        let a_len = 3 + m * k * batch;
        let b_len = 5 + k * n * batch;
        let (ac, ag) = both(&g, &[a_len], &randn(&mut r, a_len));
        let (bc, bg) = both(&g, &[b_len], &randn(&mut r, b_len));
        let blen = if bias_mode == BiasMode::PerRow { m } else { n };
        let (biasc, biasg) = both(&g, &[blen], &randn(&mut r, blen));
        let out = [batch, m, n];
        let (rc, rg) = both(&g, &out, &randn(&mut r, batch * m * n));
        let use_bias = bias_mode != BiasMode::None;
        let use_res = case % 4 < 2;
        let want = CpuBackend
            .matmul(
                &ac,
                &bc,
                use_bias.then_some(&biasc),
                use_res.then_some(&rc),
                &out,
                &spec,
            )
            .unwrap();
        let got = g
            .matmul(
                &ag,
                &bg,
                use_bias.then_some(&biasg),
                use_res.then_some(&rg),
                &out,
                &spec,
            )
            .unwrap();
        compare(&g, &format!("matmul {spec:?}"), &want, &got, TOL);
    }
}

#[test]
fn softmax_matches_cpu_and_is_safe_for_large_scores() {
    let g = gpu();
    let mut r = rng("softmax");
    for &(rows, cols, scale) in &[(1usize, 1usize, 1.0f32), (65, 130, 1.0), (200, 257, 80.0)] {
        let x: Vec<f32> = randn(&mut r, rows * cols)
            .iter()
            .map(|v| v * scale)
            .collect();
        let (xc, xg) = both(&g, &[rows, cols], &x);
        let want = CpuBackend.softmax_rows(&xc, cols).unwrap();
        let got = g.softmax_rows(&xg, cols).unwrap();
        let data = pollster::block_on(g.download(&got)).unwrap();
        assert!(
            data.iter().all(|v| v.is_finite()),
            "softmax overflowed at scale {scale}"
        );
        compare(&g, &format!("softmax {rows}x{cols}"), &want, &got, TOL);
    }
}

#[test]
fn elementwise_ops_match_cpu() {
    let g = gpu();
    let mut r = rng("elementwise");
    let (n, c, h, w) = (3, 5, r.random_range(1..30), r.random_range(1..30));
    let shape = [n, c, h, w];
    let len = n * c * h * w;
    let x: Vec<f32> = randn(&mut r, len).iter().map(|v| v * 20.0).collect();
    let (xc, xg) = both(&g, &shape, &x);
    let (yc, yg) = both(&g, &shape, &randn(&mut r, len));
    let (ec, eg) = both(&g, &[n, 3 * c], &randn(&mut r, n * 3 * c));
    let (zc, zg) = both(&g, &[n, 2, h, w], &randn(&mut r, n * 2 * h * w));
    let t = |s: &str| s.to_string();
    let checks = [
        (
            t("silu"),
            CpuBackend.silu(&xc).unwrap(),
            g.silu(&xg).unwrap(),
        ),
        (
            t("add"),
            CpuBackend.add(&xc, &yc, 0.5).unwrap(),
            g.add(&xg, &yg, 0.5).unwrap(),
        ),
        (
            t("affine"),
            CpuBackend.affine(&xc, 2.0, -1.0).unwrap(),
            g.affine(&xg, 2.0, -1.0).unwrap(),
        ),
        (
            t("modulate shift"),
            CpuBackend.channel_modulate(&xc, &ec, 0, None).unwrap(),
            g.channel_modulate(&xg, &eg, 0, None).unwrap(),
        ),
        (
            t("modulate scale_shift"),
            CpuBackend
                .channel_modulate(&xc, &ec, c, Some(2 * c))
                .unwrap(),
            g.channel_modulate(&xg, &eg, c, Some(2 * c)).unwrap(),
        ),
        (
            t("concat"),
            CpuBackend.concat_channels(&xc, &zc).unwrap(),
            g.concat_channels(&xg, &zg).unwrap(),
        ),
        (
            t("concat_batch"),
            CpuBackend.concat_batch(&[xc.clone(), yc.clone()]).unwrap(),
            g.concat_batch(&[xg.clone(), yg.clone()]).unwrap(),
        ),
        (
            t("upsample"),
            CpuBackend.upsample_nearest2x(&xc).unwrap(),
            g.upsample_nearest2x(&xg).unwrap(),
        ),
    ];
    for (name, want, got) in &checks {
        compare(&g, name, want, got, TOL);
    }
}

#[test]
fn embeddings_match_cpu() {
    let g = gpu();
    let mut r = rng("embedding");
    let n = 70; // crosses one 64-wide workgroup
    let t: Vec<f32> = (0..n)
        .map(|_| r.random_range(0.0..1000.0f32).round())
        .collect();
    let (tc, tg) = both(&g, &[n], &t);
    for &(dim, flip, shift) in &[(32usize, true, 0.0f32), (33, false, 1.0), (128, true, 1.0)] {
        let want = CpuBackend
            .timestep_embedding(&tc, dim, flip, shift)
            .unwrap();
        let got = g.timestep_embedding(&tg, dim, flip, shift).unwrap();
        // sin/cos of arguments up to 1000 rad: agree to f32 rounding after range reduction.
        compare(&g, &format!("timestep dim {dim}"), &want, &got, 1e-5);
    }
    let (vocab, d) = (11, 37);
    let (tabc, tabg) = both(&g, &[vocab, d], &randn(&mut r, vocab * d));
    let ids: Vec<f32> = (0..n).map(|_| r.random_range(0..vocab) as f32).collect();
    let (ic, ig) = both(&g, &[n], &ids);
    compare(
        &g,
        "lookup",
        &CpuBackend.embedding(&tabc, &ic).unwrap(),
        &g.embedding(&tabg, &ig).unwrap(),
        0.0,
    );
}

#[test]
fn shape_errors_are_reported_not_panicked() {
    let g = gpu();
    let x = g.upload(&[1, 3, 8, 8], &[0.0; 192]).unwrap();
    let w = g.upload(&[4, 2, 3, 3], &[0.0; 72]).unwrap();
    let err = g
        .conv2d(&x, &w, None, Conv2dParams::same(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 channels") && err.contains("expects 2"),
        "{err}"
    );
    let gamma = g.upload(&[3], &[1.0; 3]).unwrap();
    let err = g
        .group_norm(&x, &gamma, &gamma, 2, 1e-5, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("num_groups (2) must divide num_channels (3)"),
        "{err}"
    );
}
