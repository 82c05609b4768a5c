//! Batched, strided matrix multiply with fused bias, residual and scale: `shaders/matmul.wgsl` and
//! its CPU reference (sgemm). It serves `nn.Linear`, the attention products and the projections
//! that read NCHW activations as `[pixels, channels]` matrices without a transpose.

use crate::backend::Tensor;
use crate::backend::{BiasMode, MatmulSpec, Strides};
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, weight_variant, GpuTensor};
use crate::error::{Error, Result};

fn max_index(s: &Strides, rows: usize, cols: usize, spec: &MatmulSpec) -> usize {
    let outer = (spec.batch - 1) / spec.batch_inner.max(1);
    let inner = (spec.batch - 1) % spec.batch_inner.max(1);
    s.offset + (rows - 1) * s.row + (cols - 1) * s.col + outer * s.outer + inner * s.inner
}

/// Checks that every strided access stays inside its operand.
pub fn check(
    a_len: usize,
    b_len: usize,
    bias: Option<&[usize]>,
    residual_len: Option<usize>,
    out_len: usize,
    spec: &MatmulSpec,
) -> Result<()> {
    let op = "matmul";
    if spec.m == 0 || spec.n == 0 || spec.k == 0 || spec.batch == 0 || spec.batch_inner == 0 {
        return Err(Error::shape(op, format!("empty problem {spec:?}")));
    }
    if max_index(&spec.a, spec.m, spec.k, spec) >= a_len {
        return Err(Error::shape(
            op,
            format!("A ({a_len} elements) too small for {spec:?}"),
        ));
    }
    if max_index(&spec.b, spec.k, spec.n, spec) >= b_len {
        return Err(Error::shape(
            op,
            format!("B ({b_len} elements) too small for {spec:?}"),
        ));
    }
    if max_index(&spec.c, spec.m, spec.n, spec) >= out_len {
        return Err(Error::shape(
            op,
            format!("C ({out_len} elements) too small for {spec:?}"),
        ));
    }
    if let Some(r) = residual_len {
        if r != out_len {
            return Err(Error::shape(
                op,
                format!("residual has {r} elements, output has {out_len}"),
            ));
        }
    }
    match (bias, spec.bias) {
        (None, BiasMode::None) => {}
        (Some(b), BiasMode::PerRow) if b == [spec.m] => {}
        (Some(b), BiasMode::PerCol) if b == [spec.n] => {}
        (b, mode) => {
            return Err(Error::shape(
                op,
                format!(
                    "bias {b:?} does not fit mode {mode:?} for m={} n={}",
                    spec.m, spec.n
                ),
            ))
        }
    }
    Ok(())
}

/// `c = alpha·a·b` (or `c += alpha·a·b` with `accumulate`) for an m×k `a`, a k×n `b` and an
/// m×n `c`, each given as (pointer, row stride, column stride) in elements: the one GEMM of the
/// CPU backend (the `gemm` crate: AVX-512/AVX2 natively, simd128 in the browser). Large ones
/// split their rows among the CPU backend's threads ([`crate::device::cpu::threads`]).
///
/// # Safety
/// Every element the strides address must lie inside its allocation, and `c` must not alias
/// `a` or `b`.
pub unsafe fn sgemm(
    [m, k, n]: [usize; 3],
    alpha: f32,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    accumulate: bool,
    c: (*mut f32, isize, isize),
) {
    use crate::device::cpu::threads::{self, Shared};
    if m <= GEMV_ROWS && a.2 == 1 && b.1 == 1 {
        // SAFETY: forwarded from the caller; rows of `a` and columns of `b` are contiguous.
        return unsafe { gemv([m, k, n], alpha, a, b, accumulate, c) };
    }
    let parts = threads::count().min(MAX_PARTS);
    if parts < 2 || m < 2 * parts || m * k * n < crate::ops::conv2d::direct::PARALLEL_MACS {
        // SAFETY: forwarded from the caller.
        return unsafe { sgemm_one([m, k, n], alpha, a, b, accumulate, c) };
    }
    // SAFETY: the parts below read `a` and `b` and write disjoint rows of `c`, and the threads
    // join before this returns.
    let (ap, bp, cp) = unsafe { (Shared::new(a.0), Shared::new(b.0), Shared::new(c.0)) };
    let mut rows = [(0, 0); MAX_PARTS];
    for (i, r) in rows.iter_mut().take(parts).enumerate() {
        *r = (i * m / parts, (i + 1) * m / parts);
    }
    threads::for_each(&mut rows[..parts], |&mut (r0, r1)| {
        let at = r0 as isize;
        // SAFETY: rows r0..r1 of `a` and `c` lie inside what the caller vouched for.
        unsafe {
            sgemm_one(
                [r1 - r0, k, n],
                alpha,
                (ap.get().offset(at * a.1), a.1, a.2),
                (bp.get(), b.1, b.2),
                accumulate,
                (cp.get().offset(at * c.1), c.1, c.2),
            )
        }
    });
}

/// The most rows of `a` [`sgemm`] computes as dot products ([`gemv`]).
const GEMV_ROWS: usize = 4;

/// [`sgemm`] for a few rows of `a` against a `b` whose columns are contiguous (an `nn.Linear`'s
/// `Wᵀ` read in place: the time and class embeddings' layers at batch 1–4): each output one dot
/// product over contiguous memory. The `gemm` crate packs all of `b` first, which made each of
/// these 16–64 k multiply-adds cost 5–8 µs.
///
/// # Safety
/// As for [`sgemm`], with `a.2 == 1` and `b.1 == 1`.
unsafe fn gemv(
    [m, k, n]: [usize; 3],
    alpha: f32,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    accumulate: bool,
    c: (*mut f32, isize, isize),
) {
    let mut dots = [0f32; GEMV_COLUMNS];
    for i in 0..m {
        for j0 in (0..n).step_by(GEMV_COLUMNS) {
            let cols = GEMV_COLUMNS.min(n - j0);
            // SAFETY: row i of `a` (k values), columns j0.. of `b` (k values each) and
            // c[i][j0..] lie inside their allocations, as the caller vouched.
            unsafe {
                let row = std::slice::from_raw_parts(a.0.offset(i as isize * a.1), k);
                let b0 = b.0.offset(j0 as isize * b.2);
                dot_columns(row, b0, b.2, &mut dots[..cols]);
                for (j, &v) in (j0..).zip(&dots[..cols]) {
                    let at = c.0.offset(i as isize * c.1 + j as isize * c.2);
                    *at = if accumulate {
                        *at + alpha * v
                    } else {
                        alpha * v
                    };
                }
            }
        }
    }
}

/// Columns of `b` per [`dot_columns`] call.
const GEMV_COLUMNS: usize = 64;

simd_fn! {
/// `out[j] = Σ_p x[p]·b[j·stride + p]` for each j < `out.len()`, each in 8 interleaved partial
/// sums (one running sum would be a serial dependency chain). `b` must address `out.len()`
/// columns of `x.len()` values (see [`gemv`]).
fn dot_columns(x: &[f32], b: *const f32, stride: isize, out: &mut [f32]) {
    let k = x.len();
    let k8 = k / 8 * 8;
    for (j, o) in out.iter_mut().enumerate() {
        // SAFETY: as the caller vouched, column j of `b` is k values from b + j·stride.
        let y = unsafe { std::slice::from_raw_parts(b.offset(j as isize * stride), k) };
        let mut acc = [0f32; 8];
        for (xs, ys) in x[..k8].chunks_exact(8).zip(y[..k8].chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += xs[l] * ys[l];
            }
        }
        let mut sum = 0.0;
        for a in acc {
            sum += a;
        }
        for (&a, &b) in x[k8..].iter().zip(&y[k8..]) {
            sum += a * b;
        }
        *o = sum;
    }
}
}

/// The most parts [`sgemm`] splits into.
const MAX_PARTS: usize = 16;

/// [`sgemm`] on this thread.
///
/// # Safety
/// As for [`sgemm`].
unsafe fn sgemm_one(
    [m, k, n]: [usize; 3],
    alpha: f32,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    accumulate: bool,
    c: (*mut f32, isize, isize),
) {
    // SAFETY: forwarded from the caller. gemm computes dst = α·dst + β·lhs·rhs and takes
    // column stride before row stride.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.0,
            c.2,
            c.1,
            accumulate,
            a.0,
            a.2,
            a.1,
            b.0,
            b.2,
            b.1,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// CPU reference into `c`; output elements the spec does not address are zero.
pub fn cpu(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    spec: &MatmulSpec,
    c: &mut [f32],
) {
    let (m, n, bi) = (spec.m, spec.n, spec.batch_inner);
    // A dense row-major output, batch after batch: bias and residual go in before the GEMM,
    // which then accumulates onto them (no zero fill, no pass over the output afterwards).
    let dense = spec.c.offset == 0
        && spec.c.col == 1
        && spec.c.row == n
        && (bi == 1 && spec.c.outer == m * n
            || spec.c.inner == m * n && spec.c.outer == bi * m * n)
        && c.len() == spec.batch * m * n;
    if dense {
        match residual {
            Some(r) => c.copy_from_slice(r),
            None => c.fill(0.0),
        }
        if let Some(bias) = bias {
            for (r, row) in c.chunks_exact_mut(n).enumerate() {
                match spec.bias {
                    BiasMode::PerRow => row.iter_mut().for_each(|v| *v += bias[r % m]),
                    BiasMode::PerCol => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                    BiasMode::None => {}
                }
            }
        }
    } else {
        c.fill(0.0);
    }
    for z in 0..spec.batch {
        let (o, i) = (z / bi, z % bi);
        let off = |s: &Strides| s.offset + o * s.outer + i * s.inner;
        let (ao, bo, co) = (off(&spec.a), off(&spec.b), off(&spec.c));
        // SAFETY: `check` proved every addressed element lies inside the three slices.
        unsafe {
            sgemm(
                [m, spec.k, n],
                spec.alpha,
                (a.as_ptr().add(ao), spec.a.row as isize, spec.a.col as isize),
                (b.as_ptr().add(bo), spec.b.row as isize, spec.b.col as isize),
                dense,
                (
                    c.as_mut_ptr().add(co),
                    spec.c.row as isize,
                    spec.c.col as isize,
                ),
            );
        }
        if dense {
            continue;
        }
        for r in 0..m {
            for col in 0..n {
                let idx = co + r * spec.c.row + col * spec.c.col;
                let mut v = c[idx];
                match spec.bias {
                    BiasMode::PerRow => v += bias.map_or(0.0, |b| b[r]),
                    BiasMode::PerCol => v += bias.map_or(0.0, |b| b[col]),
                    BiasMode::None => {}
                }
                if let Some(res) = residual {
                    v += res[idx];
                }
                c[idx] = v * spec.out_scale;
            }
        }
    }
    if dense && spec.out_scale != 1.0 {
        c.iter_mut().for_each(|v| *v *= spec.out_scale);
    }
}

/// The kernels with an f32 B.
pub const SHADER: Shader = Shader {
    name: "matmul",
    source: concat!(
        "alias btype = f32;\n",
        include_str!("../../shaders/matmul.wgsl")
    ),
    inputs: 4,
};

/// The same kernels reading an f16 B (a linear layer's f16 weights, [`crate::device::gpu::DType::F16`]).
pub const SHADER_F16: Shader = Shader {
    name: "matmul_f16",
    source: concat!(
        "enable f16;\nalias btype = f16;\n",
        include_str!("../../shaders/matmul.wgsl")
    ),
    inputs: 4,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_inner: u32,
    a: [u32; 5],
    b: [u32; 5],
    c: [u32; 5],
    bias_mode: u32,
    has_residual: u32,
    alpha: f32,
    out_scale: f32,
    splits: u32,
    k_chunk: u32,
    batches: u32,
    _pad: [u32; 2],
}

fn strides(s: &Strides) -> [u32; 5] {
    [s.offset, s.row, s.col, s.outer, s.inner].map(|v| v as u32)
}

/// Split-K aims for about this many invocations on real GPUs (see `conv2d`'s `SPLIT_TARGET`).
const SPLIT_INVOCATIONS: usize = 32 * 1024;
/// Each split sums at least this much of K.
const MIN_K_PER_SPLIT: usize = 64;

/// How the matmul divides K on real GPUs: (splits, K range per split).
pub(crate) fn split_k(spec: &MatmulSpec) -> (usize, usize) {
    let invocations = spec.m.div_ceil(4) * spec.n.div_ceil(4) * spec.batch;
    let k = spec.k;
    let splits = (SPLIT_INVOCATIONS / invocations.max(1)).clamp(1, (k / MIN_K_PER_SPLIT).max(1));
    let chunk = k.div_ceil(splits);
    (k.div_ceil(chunk.max(1)).max(1), chunk.max(1))
}

/// GPU wrapper: 8×8 invocations per workgroup, each a 4×4 tile; z indexes the batch (and, on
/// real GPUs when the output is small, the K split, see [`GpuContext::tiled`]).
pub fn gpu(
    ctx: &GpuContext,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    residual: Option<&GpuTensor>,
    out_shape: &[usize],
    spec: &MatmulSpec,
) -> Result<GpuTensor> {
    let shader = weight_variant("matmul", a, b, SHADER, SHADER_F16)?;
    let out = GpuTensor::empty(ctx, out_shape)?;
    let (splits, k_chunk) = if ctx.tiled.get() {
        split_k(spec)
    } else {
        (1, spec.k.max(1))
    };
    check(
        a.numel(),
        b.numel(),
        bias.map(|t| t.shape()),
        residual.map(|t| t.numel()),
        out.numel(),
        spec,
    )?;
    let params = Params {
        m: spec.m as u32,
        n: spec.n as u32,
        k: spec.k as u32,
        batch_inner: spec.batch_inner as u32,
        a: strides(&spec.a),
        b: strides(&spec.b),
        c: strides(&spec.c),
        bias_mode: match spec.bias {
            BiasMode::None => 0,
            BiasMode::PerRow => 1,
            BiasMode::PerCol => 2,
        },
        has_residual: residual.is_some() as u32,
        alpha: spec.alpha,
        out_scale: spec.out_scale,
        splits: splits as u32,
        k_chunk: k_chunk as u32,
        batches: spec.batch as u32,
        _pad: [0; 2],
    };
    let bias = bias.map(|t| t.buffer());
    let residual = residual.map(|t| t.buffer());
    let grid = [
        spec.n.div_ceil(32) as u32,
        spec.m.div_ceil(32) as u32,
        (spec.batch * splits) as u32,
    ];
    let inputs = [Some(a.buffer()), Some(b.buffer()), bias, residual];
    if splits == 1 {
        ctx.dispatch(shader, "matmul", &params, &inputs, out.buffer(), grid)?;
        return Ok(out);
    }
    let partial = GpuTensor::empty(ctx, &[splits, spec.batch, spec.m, spec.n])?;
    ctx.dispatch(shader, "matmul", &params, &inputs, partial.buffer(), grid)?;
    let sum_inputs = [Some(partial.buffer()), None, bias, residual];
    let grid = grid_1d(spec.batch * spec.m * spec.n)?;
    ctx.dispatch(
        shader,
        "matmul_split_sum",
        &params,
        &sum_inputs,
        out.buffer(),
        grid,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selftest::TestRng;

    /// A GEMM large enough to split gives on 2–4 threads what it gives on one, into a row-major
    /// or a transposed output, assigned or accumulated, against the definition too.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn sgemm_splits_rows_among_threads() {
        use crate::device::cpu::threads;
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        for t in [2, 3, 4] {
            for (transposed, accumulate) in [(false, false), (true, true)] {
                let (m, k, n) = (r.range(80, 140), r.range(70, 100), r.range(100, 150));
                assert!(m * k * n >= crate::ops::conv2d::direct::PARALLEL_MACS);
                let (a, b, c0) = (r.randn(m * k), r.randn(k * n), r.randn(m * n));
                // C row stride and column stride: row-major, or each row a column.
                let (cr, cc) = if transposed {
                    (1, m as isize)
                } else {
                    (n as isize, 1)
                };
                let run = |threads: usize| {
                    let mut c = c0.clone();
                    threads::with_threads(threads, || {
                        assert_eq!(threads::count(), threads);
                        // SAFETY: the strides address m×k, k×n and m×n inside the buffers.
                        unsafe {
                            sgemm(
                                [m, k, n],
                                0.5,
                                (a.as_ptr(), k as isize, 1),
                                (b.as_ptr(), n as isize, 1),
                                accumulate,
                                (c.as_mut_ptr(), cr, cc),
                            )
                        }
                    });
                    c
                };
                let (one, many) = (run(1), run(t));
                for i in 0..m {
                    for j in 0..n {
                        let at = i * cr as usize + j * cc as usize;
                        let dot: f64 = (0..k).map(|p| (a[i * k + p] * b[p * n + j]) as f64).sum();
                        let want = 0.5 * dot + if accumulate { c0[at] as f64 } else { 0.0 };
                        let (x, y) = (one[at] as f64, many[at] as f64);
                        assert!(
                            (x - want).abs() < 1e-3 && (y - x).abs() <= 1e-5 * x.abs().max(1.0),
                            "{m}×{k}×{n} at ({i},{j}) on {t} threads: {y} vs {x} vs {want} \
                             (seed {seed})"
                        );
                    }
                }
            }
        }
    }

    /// A few rows against an `nn.Linear`'s `Wᵀ` read in place take the dot-product path
    /// ([`gemv`]): against the definition, assigned or accumulated, into a row-major or a
    /// transposed output, with k on both sides of a multiple of 8.
    #[test]
    fn sgemm_of_a_few_rows_matches_the_definition() {
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        for case in 0..16 {
            let m = 1 + case % GEMV_ROWS;
            let (k, n) = (r.range(1, 300), r.range(1, 70));
            let accumulate = case % 2 == 1;
            let (a, w, c0) = (r.randn(m * k), r.randn(n * k), r.randn(m * n));
            let (cr, cc) = if case % 4 < 2 { (n, 1) } else { (1, m) };
            let mut c = c0.clone();
            // SAFETY: a is m×k row-major, w n×k (B = wᵀ: row stride 1, column stride k), c m×n.
            unsafe {
                sgemm(
                    [m, k, n],
                    0.75,
                    (a.as_ptr(), k as isize, 1),
                    (w.as_ptr(), 1, k as isize),
                    accumulate,
                    (c.as_mut_ptr(), cr as isize, cc as isize),
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let at = i * cr + j * cc;
                    let dot: f64 = (0..k).map(|p| (a[i * k + p] * w[j * k + p]) as f64).sum();
                    let want = 0.75 * dot + if accumulate { c0[at] as f64 } else { 0.0 };
                    assert!(
                        (c[at] as f64 - want).abs() < 1e-4 * (k as f64).sqrt().max(1.0),
                        "{m}×{k}×{n} at ({i},{j}): {} vs {want} (seed {seed})",
                        c[at]
                    );
                }
            }
        }
    }

    #[test]
    fn cpu_matches_the_definition_dense_or_strided() {
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        for case in 0..12 {
            let (m, n, k) = (r.range(1, 30), r.range(1, 30), r.range(1, 20));
            let (outer, inner) = (r.range(1, 3), r.range(1, 3));
            let batch = outer * inner;
            let a = Strides::row_major(m, k);
            let a = Strides {
                outer: m * k * inner,
                inner: m * k,
                ..a
            };
            let b = Strides {
                offset: 0,
                row: 1,
                col: k,
                outer: 0,
                inner: k * n,
            };
            // Even cases: dense row-major output; odd: each batch entry written transposed.
            let c = if case % 2 == 0 {
                Strides {
                    offset: 0,
                    row: n,
                    col: 1,
                    outer: m * n * inner,
                    inner: m * n,
                }
            } else {
                Strides {
                    offset: 0,
                    row: 1,
                    col: m,
                    outer: m * n * inner,
                    inner: m * n,
                }
            };
            let mode = [BiasMode::None, BiasMode::PerRow, BiasMode::PerCol][case % 3];
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
                out_scale: if case % 4 < 2 { 1.0 } else { 1.3 },
                bias: mode,
            };
            let av = r.randn(m * k * batch);
            let bv = r.randn(k * n * inner);
            let bias = r.randn(if mode == BiasMode::PerRow { m } else { n });
            let res = r.randn(m * n * batch);
            let with_res = case % 3 != 2;
            let mut got = vec![f32::NAN; m * n * batch];
            cpu(
                &av,
                &bv,
                (mode != BiasMode::None).then_some(&bias[..]),
                with_res.then_some(&res[..]),
                &spec,
                &mut got,
            );
            for z in 0..batch {
                let (o, i) = (z / inner, z % inner);
                for row in 0..m {
                    for col in 0..n {
                        let mut acc = 0f64;
                        for kk in 0..k {
                            let x = av[o * a.outer + i * a.inner + row * k + kk];
                            let y = bv[i * b.inner + kk + col * k];
                            acc += x as f64 * y as f64;
                        }
                        let idx = o * c.outer + i * c.inner + row * c.row + col * c.col;
                        let mut want = 0.7 * acc as f32;
                        want += match mode {
                            BiasMode::PerRow => bias[row],
                            BiasMode::PerCol => bias[col],
                            BiasMode::None => 0.0,
                        };
                        if with_res {
                            want += res[idx];
                        }
                        want *= spec.out_scale;
                        assert!(
                            (got[idx] - want).abs() < 1e-4,
                            "case {case} {spec:?}: [{z},{row},{col}] {} vs {want} (seed {seed})",
                            got[idx]
                        );
                    }
                }
            }
        }
    }
}
