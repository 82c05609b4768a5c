//! Attention over pixels: the row softmax (numerically safe, max subtracted first;
//! `shaders/attention.wgsl` and its CPU reference), the attention core that [`composed`] builds
//! from `matmul` and that softmax (the GPU's), and the fused CPU core ([`core_cpu`]). The block
//! around it (group norm, weights) is `model/attention.rs`.

use crate::backend::{AttentionWeights, Backend, BiasMode, MatmulSpec, Strides, Tensor};
use crate::device::cpu::{pool, threads};
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, GpuTensor};
use crate::error::{Error, Result};

/// Scores of one attention call are kept under WebGPU's default 128 MiB storage binding.
const MAX_SCORE_ELEMENTS: usize = (128 << 20) / 4;

/// Checks [`Backend::attention`]'s operands; `[N, C, P]` (P = H·W pixels).
pub fn check<T: Tensor>(
    normed: &T,
    residual: &T,
    w: &AttentionWeights<'_, T>,
    heads: usize,
) -> Result<[usize; 3]> {
    let op = "attention";
    let &[n, c, h, wd] = normed.shape() else {
        return Err(Error::shape(
            op,
            format!("expected [N,C,H,W], got {:?}", normed.shape()),
        ));
    };
    if residual.shape() != normed.shape() {
        return Err(Error::shape(
            op,
            format!(
                "residual {:?} differs from the input {:?}",
                residual.shape(),
                normed.shape()
            ),
        ));
    }
    if heads == 0 || !c.is_multiple_of(heads) {
        return Err(Error::shape(
            op,
            format!("{heads} heads do not divide {c} channels"),
        ));
    }
    let want = [
        (w.qkv.shape(), vec![3 * c, c], "to_qkv weight"),
        (w.qkv_bias.shape(), vec![3 * c], "to_qkv bias"),
        (w.out.shape(), vec![c, c], "to_out weight"),
        (w.out_bias.shape(), vec![c], "to_out bias"),
    ];
    for (got, want, what) in want {
        if got != want {
            return Err(Error::shape(
                op,
                format!("{what} is {got:?}, expected {want:?} for {c} channels"),
            ));
        }
    }
    Ok([n, c, h * wd])
}

/// A `[C, C·k]` weight's transpose read in place (`B[k][n] = W[n][k]`), as `Linear::weight_t`.
fn weight_t(in_features: usize) -> Strides {
    Strides {
        offset: 0,
        row: 1,
        col: in_features,
        outer: 0,
        inner: 0,
    }
}

/// [`Backend::attention`] as `matmul`s and `softmax_rows` over pixel-major q, k, v (`[N, P, 3C]`),
/// in chunks of samples whose scores fit one WebGPU binding: the GPU's attention.
pub fn composed<B: Backend>(
    b: &B,
    normed: &B::Tensor,
    residual: &B::Tensor,
    w: AttentionWeights<'_, B::Tensor>,
    heads: usize,
    rescale: f32,
) -> Result<B::Tensor> {
    let [n, c, p] = check(normed, residual, &w, heads)?;
    let (h, wd) = (normed.shape()[2], normed.shape()[3]);
    let hd = c / heads;
    // 1. qkv[n, i, :] = W_qkv · x[n, :, i] + b — reads NCHW as a [pixels, channels] matrix.
    let qkv = b.matmul(
        normed,
        w.qkv,
        Some(w.qkv_bias),
        None,
        &[n, p, 3 * c],
        &MatmulSpec {
            m: p,
            n: 3 * c,
            k: c,
            batch: n,
            batch_inner: 1,
            a: Strides {
                offset: 0,
                row: 1,
                col: p,
                outer: c * p,
                inner: 0,
            },
            b: weight_t(c),
            c: Strides {
                offset: 0,
                row: 3 * c,
                col: 1,
                outer: p * 3 * c,
                inner: 0,
            },
            alpha: 1.0,
            out_scale: 1.0,
            bias: BiasMode::PerCol,
        },
    )?;
    let per_sample = heads * p * p;
    if per_sample > MAX_SCORE_ELEMENTS {
        return Err(Error::unsupported(
            "attention size",
            format!("{heads} heads over {h}×{wd} pixels ({per_sample} scores per sample)"),
            "at most 32M attention scores per sample (128 MiB)",
        ));
    }
    let chunk = (MAX_SCORE_ELEMENTS / per_sample).clamp(1, n);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut outs = Vec::new();
    for n0 in (0..n).step_by(chunk) {
        let nc = chunk.min(n - n0);
        let base = n0 * p * 3 * c;
        let qkv_s = |col: usize| Strides {
            offset: base + col,
            row: 3 * c,
            col: 1,
            outer: p * 3 * c,
            inner: hd,
        };
        // 2. scores[z, i, j] = q_i · k_j / √d for z = (sample, head).
        let mut kt = qkv_s(c);
        (kt.row, kt.col) = (1, 3 * c);
        let scores = b.matmul(
            &qkv,
            &qkv,
            None,
            None,
            &[nc * heads, p, p],
            &MatmulSpec {
                m: p,
                n: p,
                k: hd,
                batch: nc * heads,
                batch_inner: heads,
                a: qkv_s(0),
                b: kt,
                c: Strides {
                    offset: 0,
                    row: p,
                    col: 1,
                    outer: heads * p * p,
                    inner: p * p,
                },
                alpha: scale,
                out_scale: 1.0,
                bias: BiasMode::None,
            },
        )?;
        // 3. softmax over keys (max-subtracted: safe for any score range).
        let probs = b.softmax_rows(&scores, p)?;
        // 4. out[n, i, head·d + e] = Σ_j probs[z, i, j] v[n, j, head·d + e].
        let attn = b.matmul(
            &probs,
            &qkv,
            None,
            None,
            &[nc, p, c],
            &MatmulSpec {
                m: p,
                n: hd,
                k: p,
                batch: nc * heads,
                batch_inner: heads,
                a: Strides {
                    offset: 0,
                    row: p,
                    col: 1,
                    outer: heads * p * p,
                    inner: p * p,
                },
                b: qkv_s(2 * c),
                c: Strides {
                    offset: 0,
                    row: c,
                    col: 1,
                    outer: p * c,
                    inner: hd,
                },
                alpha: 1.0,
                out_scale: 1.0,
                bias: BiasMode::None,
            },
        )?;
        outs.push(attn);
    }
    // 5. to_out, written straight back to NCHW, + residual, / rescale_output_factor.
    let attn = if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        b.concat_batch(&outs)?
    };
    b.matmul(
        &attn,
        w.out,
        Some(w.out_bias),
        Some(residual),
        &[n, c, h, wd],
        &MatmulSpec {
            m: p,
            n: c,
            k: c,
            batch: n,
            batch_inner: 1,
            a: Strides::row_major(p, c),
            b: weight_t(c),
            c: Strides {
                offset: 0,
                row: 1,
                col: p,
                outer: c * p,
                inner: 0,
            },
            alpha: 1.0,
            out_scale: 1.0 / rescale,
            bias: BiasMode::PerCol,
        },
    )
}

/// Query rows per work item of [`core_cpu`]: their scores (64 × P) are one scratch block.
const QUERY_ROWS: usize = 64;
/// The most parts [`core_cpu`] splits into.
const MAX_PARTS: usize = 16;

/// The attention core on the CPU, fused: `qkv` is `[N, 3C, P]` (channel-major: C rows of q, then
/// of k, then of v, each over the P pixels), and `out` (`[N, C, P]`, channel-major) receives each
/// head's softmax(q kᵀ·`scale`) v. Work items are (sample, head, block of [`QUERY_ROWS`] query
/// rows), split among the CPU threads in runs; an item's scores live in a scratch block, never in
/// a tensor, and its two products read q, k and v in place (the `gemm` crate takes any strides).
/// Every thread count gives the same bits (each item runs on one thread whatever the split).
pub fn core_cpu(qkv: &[f32], [n, c, p]: [usize; 3], heads: usize, scale: f32, out: &mut [f32]) {
    let hd = c / heads;
    assert_eq!(qkv.len(), n * 3 * c * p, "attention qkv size");
    assert_eq!(out.len(), n * c * p, "attention output size");
    let blocks = p.div_ceil(QUERY_ROWS);
    let items = n * heads * blocks;
    let macs = 2 * n * heads * p * p * hd;
    let parts = if macs >= crate::ops::conv2d::direct::PARALLEL_MACS {
        threads::count().min(MAX_PARTS).min(items)
    } else {
        1
    };
    // SAFETY: each item writes only its own (sample, head, query rows) elements of `out`, the
    // items are split into disjoint runs, and the threads join before this returns.
    let o = unsafe { threads::Shared::new(out.as_mut_ptr()) };
    let run = |first: usize, last: usize| {
        threads::alone(|| {
            let mut scores = pool::take(QUERY_ROWS * p);
            for item in first..last {
                let (sh, blk) = (item / blocks, item % blocks);
                let (s, h) = (sh / heads, sh % heads);
                let i0 = blk * QUERY_ROWS;
                let rows = QUERY_ROWS.min(p - i0);
                // q, k and v of this head: hd rows of P values each.
                let q0 = (s * 3 * c + h * hd) * p;
                let (pi, pp) = (1, p as isize);
                // SAFETY: every element addressed lies inside `qkv` (rows q0.. of its 3C·N rows
                // of P), `scores` (rows × P) or this head's hd × P block of `out`.
                unsafe {
                    let q = qkv.as_ptr().add(q0 + i0);
                    let k = qkv.as_ptr().add(q0 + c * p);
                    let v = qkv.as_ptr().add(q0 + 2 * c * p);
                    // scores[i][j] = scale · Σ_d q[d][i]·k[d][j]
                    super::matmul::sgemm(
                        [rows, hd, p],
                        scale,
                        (q, pi, pp),
                        (k, pp, pi),
                        false,
                        (scores.as_mut_ptr(), pp, pi),
                    );
                    softmax_in_place(&mut scores[..rows * p], p);
                    // out[e][i] = Σ_j scores[i][j]·v[e][j]
                    let dst = o.get().add((s * c + h * hd) * p + i0);
                    super::matmul::sgemm(
                        [rows, p, hd],
                        1.0,
                        (scores.as_ptr(), pp, pi),
                        (v, pi, pp),
                        false,
                        (dst, pi, pp),
                    );
                }
            }
            pool::give(scores);
        })
    };
    if parts < 2 {
        run(0, items);
    } else {
        let mut runs = [(0, 0); MAX_PARTS];
        for (i, r) in runs.iter_mut().take(parts).enumerate() {
            *r = (i * items / parts, (i + 1) * items / parts);
        }
        threads::for_each(&mut runs[..parts], |&mut (first, last)| run(first, last));
    }
}

/// Softmax of one row in place: max, then `exp(x − max)` and its sum, then the division, each
/// pass over 8 interleaved lanes so that it vectorises.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let n = row.len();
    let n8 = n / 8 * 8;
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut j = 0;
    while j < n8 {
        for l in 0..8 {
            m8[l] = m8[l].max(row[j + l]);
        }
        j += 8;
    }
    let mut m = f32::NEG_INFINITY;
    for &v in m8.iter().chain(&row[n8..]) {
        m = m.max(v);
    }
    for v in row.iter_mut() {
        *v = super::elementwise::exp_f32(*v - m);
    }
    let mut s8 = [0f32; 8];
    let mut j = 0;
    while j < n8 {
        for l in 0..8 {
            s8[l] += row[j + l];
        }
        j += 8;
    }
    let mut sum = 0.0;
    for &v in s8.iter().chain(&row[n8..]) {
        sum += v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

pub fn check_softmax(x: &[usize], cols: usize) -> Result<()> {
    let n: usize = x.iter().product();
    if cols == 0 || !n.is_multiple_of(cols) {
        return Err(Error::shape(
            "softmax",
            format!("{cols} columns do not tile a tensor of shape {x:?}"),
        ));
    }
    Ok(())
}

simd_fn! {
pub fn softmax_cpu(x: &[f32], cols: usize, out: &mut [f32]) {
    out.copy_from_slice(x);
    softmax_in_place(out, cols);
}
}

simd_fn! {
/// [`softmax_cpu`] in place. A plain loop: `for_each`'s closure would be compiled without AVX
/// (see `conv2d::winograd`'s transforms).
fn softmax_in_place(x: &mut [f32], cols: usize) {
    for row in x.chunks_mut(cols) {
        softmax_row(row);
    }
}
}

pub const SHADER: Shader = Shader {
    name: "attention",
    source: include_str!("../../shaders/attention.wgsl"),
    inputs: 1,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// GPU wrapper: one invocation per row on CPU adapters, one workgroup per row on real GPUs
/// ([`GpuContext::tiled`]).
pub fn softmax_gpu(ctx: &GpuContext, x: &GpuTensor, cols: usize) -> Result<GpuTensor> {
    check_softmax(x.shape(), cols)?;
    let out = GpuTensor::empty(ctx, x.shape())?;
    let rows = x.numel() / cols;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        _pad: [0; 2],
    };
    let (entry, grid) = if ctx.tiled.get() {
        // Workgroups = rows, folded into y past the per-dimension limit.
        let x = rows.clamp(1, 65535);
        ("softmax_rows", [x as u32, rows.div_ceil(x) as u32, 1])
    } else {
        ("softmax", grid_1d(rows)?)
    };
    if grid[1] > 65535 {
        return Err(Error::Gpu(format!(
            "softmax: {rows} rows exceed one dispatch"
        )));
    }
    ctx.dispatch(
        SHADER,
        entry,
        &params,
        &[Some(x.buffer())],
        out.buffer(),
        grid,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::cpu::CpuBackend;
    use crate::selftest::TestRng;

    /// The definition in f64: q, k, v projections, per-head softmax(q kᵀ/√d) v, to_out, the
    /// residual and the rescale.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        [n, c, p]: [usize; 3],
        wq: &[f32],
        bq: &[f32],
        wo: &[f32],
        bo: &[f32],
        heads: usize,
        rescale: f32,
    ) -> Vec<f64> {
        let hd = c / heads;
        let mut out = vec![0f64; n * c * p];
        for s in 0..n {
            let xs = &x[s * c * p..(s + 1) * c * p];
            // qkv[r][i] for r < 3C.
            let qkv: Vec<f64> = (0..3 * c * p)
                .map(|at| {
                    let (r, i) = (at / p, at % p);
                    bq[r] as f64
                        + (0..c)
                            .map(|k| wq[r * c + k] as f64 * xs[k * p + i] as f64)
                            .sum::<f64>()
                })
                .collect();
            let mut o = vec![0f64; c * p];
            for h in 0..heads {
                for i in 0..p {
                    let score = |j: usize| {
                        (0..hd)
                            .map(|d| qkv[(h * hd + d) * p + i] * qkv[(c + h * hd + d) * p + j])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    };
                    let scores: Vec<f64> = (0..p).map(score).collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|v| (v - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        o[(h * hd + d) * p + i] = (0..p)
                            .map(|j| e[j] / sum * qkv[(2 * c + h * hd + d) * p + j])
                            .sum();
                    }
                }
            }
            for r in 0..c {
                for i in 0..p {
                    let y = bo[r] as f64
                        + (0..c)
                            .map(|k| wo[r * c + k] as f64 * o[k * p + i])
                            .sum::<f64>();
                    let at = s * c * p + r * p + i;
                    out[at] = (y + x[at] as f64) / rescale as f64;
                }
            }
        }
        out
    }

    /// The fused CPU attention and the composed one (the GPU's, run here on the CPU's matmul and
    /// softmax) against the definition, with several heads, batches and pixel counts on both
    /// sides of a block of query rows; 1, 2 and 3 threads give the same bits.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn cpu_attention_matches_the_definition_on_any_thread_count() {
        use crate::device::cpu::threads;
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        let b = CpuBackend;
        // (batch, heads, head dimension, [H, W])
        let cases: [(usize, usize, usize, [usize; 2]); 5] = [
            (1, 2, 16, [8, 8]),
            (2, 3, 8, [9, 10]),
            (1, 1, 32, [3, 5]),
            (3, 4, 8, [12, 11]),
            (1, 2, 32, [16, 9]),
        ];
        let mut split = false;
        for (n, heads, hd, [h, w]) in cases {
            let (c, p) = (heads * hd, h * w);
            let items = n * heads * p.div_ceil(QUERY_ROWS);
            split |= 2 * n * heads * p * p * hd >= crate::ops::conv2d::direct::PARALLEL_MACS
                && items >= 3;
            let x = r.randn(n * c * p);
            let (wq, bq) = (r.randn(3 * c * c), r.randn(3 * c));
            let (wo, bo) = (r.randn(c * c), r.randn(c));
            let scale = 1.0 / (c as f32).sqrt();
            let (wq, wo): (Vec<f32>, Vec<f32>) = (
                wq.iter().map(|v| v * scale).collect(),
                wo.iter().map(|v| v * scale).collect(),
            );
            let rescale = if n == 2 { 2.0 } else { 1.0 };
            let want = reference(&x, [n, c, p], &wq, &bq, &wo, &bo, heads, rescale);
            let t = |shape: &[usize], v: &[f32]| b.upload(shape, v).unwrap();
            let xt = t(&[n, c, h, w], &x);
            let (wqt, bqt, wot, bot) = (
                t(&[3 * c, c], &wq),
                t(&[3 * c], &bq),
                t(&[c, c], &wo),
                t(&[c], &bo),
            );
            let weights = || AttentionWeights {
                qkv: &wqt,
                qkv_bias: &bqt,
                out: &wot,
                out_bias: &bot,
            };
            let fused = |threads: usize| {
                threads::with_threads(threads, || {
                    let y = b.attention(&xt, &xt, weights(), heads, rescale).unwrap();
                    y.data().to_vec()
                })
            };
            let one = fused(1);
            let composed = composed(&b, &xt, &xt, weights(), heads, rescale).unwrap();
            let what = format!("{n}×{c}×{h}×{w}, {heads} heads (seed {seed})");
            for (name, got) in [("fused", &one[..]), ("composed", composed.data())] {
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0))
                    .fold(0.0, f64::max);
                assert!(err < 1e-4, "{name} attention {what}: error {err}");
            }
            for threads in [2, 3] {
                assert!(
                    fused(threads) == one,
                    "{what}: {threads} threads differ from one"
                );
            }
        }
        assert!(split, "no case split its items among threads");
    }

    /// Wrong operands are errors naming the op, on both paths.
    #[test]
    fn attention_checks_its_operands() {
        let b = CpuBackend;
        let t = |shape: &[usize]| b.upload(shape, &vec![0.0; shape.iter().product()]).unwrap();
        let (x, wq, bq, wo, bo) = (t(&[1, 8, 2, 2]), t(&[24, 8]), t(&[24]), t(&[8, 8]), t(&[8]));
        let bad_out = t(&[8, 4]);
        let w = |out| AttentionWeights {
            qkv: &wq,
            qkv_bias: &bq,
            out,
            out_bias: &bo,
        };
        for e in [
            b.attention(&x, &x, w(&bad_out), 2, 1.0).unwrap_err(),
            composed(&b, &x, &x, w(&bad_out), 2, 1.0).unwrap_err(),
            b.attention(&x, &x, w(&wo), 3, 1.0).unwrap_err(),
            b.attention(&x, &t(&[1, 8, 4, 1]), w(&wo), 2, 1.0)
                .unwrap_err(),
        ] {
            assert!(e.to_string().contains("attention"), "{e}");
        }
        assert!(b.attention(&x, &x, w(&wo), 2, 1.0).is_ok());
    }
}
