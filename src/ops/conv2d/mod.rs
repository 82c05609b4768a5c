//! 2-D convolution (3×3 and 1×1, stride 1 and 2, asymmetric padding): `shaders/conv2d.wgsl` and
//! its CPU reference: Winograd's F(4×4, 3×3) and F(2×2, 3×3) for 3×3 stride-1 'same'
//! convolutions ([`winograd`]) and a direct convolution for the others ([`direct`]) where this
//! CPU has the SIMD for them, else im2row + sgemm.

pub mod direct;
pub mod winograd;

use crate::backend::{Conv2dParams, ConvEpilogue, Tensor};
use crate::device::cpu::pool;
use crate::device::cpu::transpose::transpose;
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, weight_variant, GpuTensor};
use crate::error::{Error, Result};

/// Validates operand shapes and returns the output shape `[N, Co, Ho, Wo]`.
pub fn out_shape(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    p: Conv2dParams,
) -> Result<[usize; 4]> {
    let op = "conv2d";
    let (&[n, ci, h, wd], &[co, wci, kh, kw]) = (x, w) else {
        return Err(Error::shape(
            op,
            format!("expected x [N,C,H,W] and weight [Co,Ci,kh,kw], got {x:?} and {w:?}"),
        ));
    };
    if ci != wci {
        return Err(Error::shape(
            op,
            format!("input has {ci} channels but the weight {w:?} expects {wci}"),
        ));
    }
    if let Some(b) = bias {
        if b != [co] {
            return Err(Error::shape(
                op,
                format!("bias shape {b:?} does not match {co} output channels"),
            ));
        }
    }
    if p.stride == 0 || kh == 0 || kw == 0 {
        return Err(Error::shape(op, "stride and kernel size must be positive"));
    }
    let hp = h + p.pad[0] + p.pad[2];
    let wp = wd + p.pad[1] + p.pad[3];
    if hp < kh || wp < kw {
        return Err(Error::shape(
            op,
            format!("padded input {hp}×{wp} is smaller than the {kh}×{kw} kernel"),
        ));
    }
    Ok([n, co, (hp - kh) / p.stride + 1, (wp - kw) / p.stride + 1])
}

/// The weight `[Co, Ci, kh, kw]` reordered to `[Co, kh, kw, Ci]`, the order [`cpu`] reads: one
/// output channel's taps as rows of `Ci` values (the same order for a 1×1 kernel).
pub fn weight_rows(w: &[f32], ws: &[usize]) -> Vec<f32> {
    let (ci, taps) = (ws[1], ws[2] * ws[3]);
    let mut rows = vec![0f32; w.len()];
    for (src, dst) in w
        .chunks_exact(ci * taps)
        .zip(rows.chunks_exact_mut(ci * taps))
    {
        for c in 0..ci {
            for k in 0..taps {
                dst[k * ci + c] = src[c * taps + k];
            }
        }
    }
    rows
}

/// CPU reference into `out` (`[N, Co, Ho, Wo]`, every element written), with the weight in
/// [`weight_rows`] order and `ws` its original `[Co, Ci, kh, kw]` shape.
///
/// A 1×1 stride-1 convolution is one sgemm per image on the input as it lies. Any other runs
/// channels-last, pixels × channels, the form the `gemm` crate runs fastest for these shapes
/// (80–90 GFLOP/s against 40 for `W × im2col` with 32 output channels, one EPYC core): the
/// input goes channels-last, the GEMM gives a channels-last result, and one transpose back to
/// NCHW adds the bias. Stride 1 needs no unfolding ([`strided_taps`]) unless the images are
/// small; stride 2 unfolds ([`unfolded`]).
pub fn cpu(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    p: Conv2dParams,
    out: &mut [f32],
) {
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    let ho = (h + p.pad[0] + p.pad[2] - kh) / p.stride + 1;
    let wo = (wd + p.pad[1] + p.pad[3] - kw) / p.stride + 1;
    let pix = ho * wo;
    assert_eq!(out.len(), n * co * pix, "conv2d output size");
    if kh == 1 && kw == 1 && p.stride == 1 && p.pad == [0; 4] {
        for (xb, ob) in x.chunks_exact(ci * pix).zip(out.chunks_exact_mut(co * pix)) {
            if let Some(bias) = bias {
                for (chunk, &b) in ob.chunks_exact_mut(pix).zip(bias) {
                    chunk.fill(b);
                }
            }
            // SAFETY: the pointers cover co×ci, ci×pix and co×pix dense row-major matrices.
            unsafe {
                super::matmul::sgemm(
                    [co, ci, pix],
                    1.0,
                    (w.as_ptr(), ci as isize, 1),
                    (xb.as_ptr(), pix as isize, 1),
                    bias.is_some(),
                    (ob.as_mut_ptr(), pix as isize, 1),
                );
            }
        }
        return;
    }
    if uses_strided_taps(xs, ws, p) {
        strided_taps(x, [n, ci, h, wd], w, [co, kh, kw], p, bias, out);
    } else {
        unfolded(x, [n, ci, h, wd], w, [co, kh, kw], [ho, wo], p, bias, out);
    }
}

/// `STEPWISE_CPU_CONV` (natively), to compare the CPU's convolution paths in one build: `f2`
/// keeps [`winograd`] to F(2×2), `direct` turns it off, `gemm` both SIMD kernels.
fn cpu_conv_env() -> Option<&'static str> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static ONLY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        ONLY.get_or_init(|| std::env::var("STEPWISE_CPU_CONV").ok())
            .as_deref()
    }
    #[cfg(target_arch = "wasm32")]
    None
}

/// How the CPU's SIMD kernels run a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernel {
    /// [`winograd`] with this tile.
    Winograd(winograd::Tile),
    /// [`direct`] at this width.
    Direct(direct::Width),
}

/// How the CPU runs this convolution with a SIMD kernel, if it does: [`winograd`] where that
/// applies ([`winograd::tile`]), else [`direct`] ([`direct_width`]). `xs` is the input's shape,
/// `ws` the weight's and `o` the output's, from [`out_shape`].
pub fn cpu_kernel(xs: &[usize], ws: &[usize], o: &[usize], p: Conv2dParams) -> Option<CpuKernel> {
    let env = cpu_conv_env();
    if env == Some("gemm") {
        return None;
    }
    let g = direct::Geometry::new(xs, ws, p);
    let tile = match env {
        Some("direct") => None,
        Some("f2") => Some(winograd::Tile::F2).filter(|&t| winograd::fits(&g, t)),
        _ => winograd::tile(&g),
    };
    if let Some(tile) = tile {
        return Some(CpuKernel::Winograd(tile));
    }
    direct_width(ws, o, p).map(CpuKernel::Direct)
}

/// How the CPU runs this convolution directly ([`direct`]), if it can: every kernel but the
/// 1×1 stride-1 unpadded one (one GEMM on the input as it lies), where this CPU has the SIMD for
/// the output's rows. `ws` is the weight's shape and `o` the output's, from [`out_shape`].
pub fn direct_width(ws: &[usize], o: &[usize], p: Conv2dParams) -> Option<direct::Width> {
    if cpu_conv_env() == Some("gemm") {
        return None;
    }
    let pointwise = ws[2] == 1 && ws[3] == 1 && p.stride == 1 && p.pad == [0; 4];
    if pointwise || ws[2] * ws[3] > direct::MAX_TAPS || p.stride > direct::MAX_STRIDE {
        return None;
    }
    direct::width(o[2], o[3])
}

/// Checks a [`ConvEpilogue`](crate::backend::ConvEpilogue)'s operands against the convolution's
/// output shape `o`: the channel term is `[N, Co]`, the residual has the output's shape.
pub fn check_epilogue(
    o: &[usize],
    channel_add: Option<&[usize]>,
    residual: Option<&[usize]>,
) -> Result<()> {
    if let Some(a) = channel_add {
        if a != [o[0], o[1]] {
            return Err(Error::shape(
                "conv2d epilogue",
                format!(
                    "channel term {a:?} is not [N, Co] = {:?} of the output {o:?}",
                    [o[0], o[1]]
                ),
            ));
        }
    }
    if let Some(r) = residual {
        if r != o {
            return Err(Error::shape(
                "conv2d epilogue",
                format!("residual {r:?} does not have the output's shape {o:?}"),
            ));
        }
    }
    Ok(())
}

/// The epilogue on the CPU, in place over the NCHW output `out` of shape `o`:
/// `out = (residual + (out + channel_add[n, c])) · scale`.
pub fn epilogue_cpu(
    out: &mut [f32],
    o: &[usize],
    channel_add: Option<&[f32]>,
    residual: Option<&[f32]>,
    scale: f32,
) {
    if channel_add.is_none() && residual.is_none() && scale == 1.0 {
        return;
    }
    let pix = o[2] * o[3];
    for (plane, ob) in out.chunks_exact_mut(pix).enumerate() {
        let a = channel_add.map_or(0.0, |t| t[plane]);
        match residual {
            Some(r) => {
                for (v, &r) in ob.iter_mut().zip(&r[plane * pix..(plane + 1) * pix]) {
                    *v = (r + (*v + a)) * scale;
                }
            }
            None => ob.iter_mut().for_each(|v| *v = (*v + a) * scale),
        }
    }
}

/// Rows the stride-1 GEMMs of [`strided_taps`] compute for `[N, Ci, H, W]` through a `kh × kw`
/// kernel: every padded column of every output row, and the rows that straddle two images;
/// output `(b, oy, ox)` is row `(b·Hp + oy)·Wp + ox`, so the last one needed ends the count.
fn tall_rows(xs: &[usize], ws: &[usize], p: Conv2dParams) -> usize {
    let (hp, wp) = (xs[2] + p.pad[0] + p.pad[2], xs[3] + p.pad[1] + p.pad[3]);
    let (ho, wo) = (hp - ws[2] + 1, wp - ws[3] + 1);
    ((xs[0] - 1) * hp + ho - 1) * wp + wo
}

/// Whether [`cpu`] takes [`strided_taps`]: stride 1, unless its padding rows are over 30 % more
/// than the output's (small images: 8×8 at batch 4, 4×4), where [`unfolded`] is cheaper.
fn uses_strided_taps(xs: &[usize], ws: &[usize], p: Conv2dParams) -> bool {
    let (hp, wp) = (xs[2] + p.pad[0] + p.pad[2], xs[3] + p.pad[1] + p.pad[3]);
    let pix = (hp - ws[2] + 1) * (wp - ws[3] + 1);
    p.stride == 1 && tall_rows(xs, ws, p) * 10 <= xs[0] * pix * 13
}

/// Stride 1 without unfolding: the batch goes channels-last with its padding, one tall image
/// `[N·Hp, Wp, Ci]`. Computing every padded column `ox < Wp` (and discarding the last `kw − 1`
/// of each row, and the rows that straddle two images), the `kw` taps of kernel row `ky` read
/// `kw·Ci` consecutive values starting at `(p + ky·Wp)·Ci` for output position `p`: a matrix with
/// row stride `Ci` over the same buffer. So the convolution is `kh` accumulating GEMMs
/// `[M, kw·Ci] × [kw·Ci, Co]` on the input as it lies, with no 9× copy of it.
#[allow(clippy::too_many_arguments)]
fn strided_taps(
    x: &[f32],
    [n, ci, h, wd]: [usize; 4],
    wt: &[f32],
    [co, kh, kw]: [usize; 3],
    p: Conv2dParams,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (hp, wp) = (h + p.pad[0] + p.pad[2], wd + p.pad[1] + p.pad[3]);
    let (ho, wo) = (hp - kh + 1, wp - kw + 1);
    // The padded input: zeros written only where the image is not (a pooled buffer is stale).
    let mut xp = pool::take(n * hp * wp * ci);
    let row_len = wp * ci;
    for (b, img) in xp.chunks_exact_mut(hp * row_len).enumerate() {
        img[..p.pad[0] * row_len].fill(0.0);
        img[(p.pad[0] + h) * row_len..].fill(0.0);
        for iy in 0..h {
            let row = &mut img[(p.pad[0] + iy) * row_len..][..row_len];
            row[..p.pad[1] * ci].fill(0.0);
            row[(p.pad[1] + wd) * ci..].fill(0.0);
            let src = &x[b * ci * h * wd + iy * wd..];
            transpose(src, h * wd, [ci, wd], &mut row[p.pad[1] * ci..], ci, None);
        }
    }
    let m = tall_rows(&[n, ci, h, wd], &[co, ci, kh, kw], p);
    let kdim = kh * kw * ci;
    let mut y = pool::take(m * co);
    for ky in 0..kh {
        // SAFETY: row i of the A view reads xp[(i + ky·Wp)·Ci ..][..kw·Ci]; for i < m that
        // ends at most at N·Hp·Wp·Ci (see `m`). The B view reads wt[co·kdim + ky·kw·Ci ..]
        // [..kw·Ci] for co < Co. y is m×Co, dense.
        unsafe {
            super::matmul::sgemm(
                [m, kw * ci, co],
                1.0,
                (xp.as_ptr().add(ky * wp * ci), ci as isize, 1),
                (wt.as_ptr().add(ky * kw * ci), 1, kdim as isize),
                ky > 0,
                (y.as_mut_ptr(), co as isize, 1),
            );
        }
    }
    for b in 0..n {
        let ob = &mut out[b * co * ho * wo..];
        to_nchw(&y, |oy| (b * hp + oy) * wp, [ho, wo, co], bias, ob);
    }
    pool::give(xp);
    pool::give(y);
}

/// Strided convolutions (the downsamplers): each output pixel's receptive field unfolded into a
/// row (`[kh, kw, Ci]`, "im2row") from the channels-last image, then one GEMM per group of
/// images (as many as fit in 4096 rows, at least one).
#[allow(clippy::too_many_arguments)]
fn unfolded(
    x: &[f32],
    [n, ci, h, wd]: [usize; 4],
    wt: &[f32],
    [co, kh, kw]: [usize; 3],
    [ho, wo]: [usize; 2],
    p: Conv2dParams,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (pix, kdim) = (ho * wo, ci * kh * kw);
    let group = (4096 / pix).clamp(1, n);
    let mut x_hwc = pool::take(h * wd * ci);
    let mut rows = pool::take(group * pix * kdim);
    let mut y = pool::take(group * pix * co);
    for first in (0..n).step_by(group) {
        let imgs = group.min(n - first);
        for i in 0..imgs {
            let xb = &x[(first + i) * ci * h * wd..];
            transpose(xb, h * wd, [ci, h * wd], &mut x_hwc, ci, None);
            let dst = &mut rows[i * pix * kdim..(i + 1) * pix * kdim];
            im2row(&x_hwc, [ci, h, wd], [kh, kw], [ho, wo], p, dst);
        }
        // SAFETY: rows is (imgs·pix)×kdim, wt read as Wᵀ is kdim×Co, y is (imgs·pix)×Co.
        unsafe {
            super::matmul::sgemm(
                [imgs * pix, kdim, co],
                1.0,
                (rows.as_ptr(), kdim as isize, 1),
                (wt.as_ptr(), 1, kdim as isize),
                false,
                (y.as_mut_ptr(), co as isize, 1),
            );
        }
        for i in 0..imgs {
            let ob = &mut out[(first + i) * co * pix..];
            to_nchw(&y, |oy| (i * ho + oy) * wo, [ho, wo, co], bias, ob);
        }
    }
    pool::give(x_hwc);
    pool::give(rows);
    pool::give(y);
}

/// Writes one image `[Co, Ho, Wo]` of `out` from the channels-last GEMM result `y`, whose output
/// row `oy` starts at position `row(oy)` (`Co` values per position), adding the bias.
fn to_nchw(
    y: &[f32],
    row: impl Fn(usize) -> usize,
    [ho, wo, co]: [usize; 3],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    for oy in 0..ho {
        let src = &y[row(oy) * co..];
        transpose(src, co, [wo, co], &mut out[oy * wo..], ho * wo, bias);
    }
}

/// Unfolds one channels-last image `[h, w, ci]` into `[ho·wo, kh·kw·ci]`: row `p` is output
/// pixel `p`'s receptive field, `ci` values per tap, zeros where the tap falls in the padding.
fn im2row(
    x_hwc: &[f32],
    [ci, h, wd]: [usize; 3],
    [kh, kw]: [usize; 2],
    [ho, wo]: [usize; 2],
    p: Conv2dParams,
    rows: &mut [f32],
) {
    let kdim = kh * kw * ci;
    let (s, pt, pl) = (p.stride, p.pad[0], p.pad[1]);
    for oy in 0..ho {
        for ox in 0..wo {
            let row = &mut rows[(oy * wo + ox) * kdim..(oy * wo + ox + 1) * kdim];
            for ky in 0..kh {
                let iy = (oy * s + ky).wrapping_sub(pt);
                let taps = &mut row[ky * kw * ci..(ky + 1) * kw * ci];
                if iy >= h {
                    taps.fill(0.0);
                    continue;
                }
                // Taps kx whose column lies inside the image form one run of the input row.
                let ix0 = (ox * s) as isize - pl as isize;
                let lo = (-ix0).clamp(0, kw as isize) as usize;
                let hi = (wd as isize - ix0).clamp(lo as isize, kw as isize) as usize;
                taps[..lo * ci].fill(0.0);
                taps[hi * ci..].fill(0.0);
                if hi > lo {
                    let start = (iy * wd + (ix0 + lo as isize) as usize) * ci;
                    taps[lo * ci..hi * ci].copy_from_slice(&x_hwc[start..start + (hi - lo) * ci]);
                }
            }
        }
    }
}

/// The kernels with f32 weights.
pub const SHADER: Shader = Shader {
    name: "conv2d",
    source: concat!(
        "alias wtype = f32;\nalias ctype = f32;\nconst CHUNK_SUMS = false;\n",
        include_str!("../../../shaders/conv2d.wgsl")
    ),
    inputs: 5,
};

/// The same kernels reading f16 weights ([`crate::device::gpu::DType::F16`]); the device needs `shader-f16`.
pub const SHADER_F16: Shader = Shader {
    name: "conv2d_f16",
    source: concat!(
        "enable f16;\nalias wtype = f16;\nalias ctype = f32;\nconst CHUNK_SUMS = false;\n",
        include_str!("../../../shaders/conv2d.wgsl")
    ),
    inputs: 5,
};

/// f16 weights and, in `conv2d_tiled`, f16 arithmetic: f16 tiles, each K step's 16 products
/// multiplied and summed in f16 and added to f32 sums ([`crate::device::gpu::GpuContext::f16_arith`]).
/// The register kernels (CPU adapters) are those of [`SHADER_F16`].
pub const SHADER_F16_ARITH: Shader = Shader {
    name: "conv2d_f16_arith",
    source: concat!(
        "enable f16;\nalias wtype = f16;\nalias ctype = f16;\nconst CHUNK_SUMS = true;\n",
        include_str!("../../../shaders/conv2d.wgsl")
    ),
    inputs: 5,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
    co_tiles: u32,
    x_tiles: u32,
    splits: u32,
    k_chunk: u32,
    has_add: u32,
    has_residual: u32,
    out_scale: f32,
}

/// `conv2d_tiled`'s output tile (channels × pixels) and K step: shaders/conv2d.wgsl's TM, TN, TK.
const TILE: usize = 32;
const TILE_K: usize = 16;
/// Split-K aims for about this many workgroups (64 invocations each): enough to fill a large GPU
/// (an H100 holds 132 × 32 such workgroups at once), few enough that the partial sums stay small
/// (at most about `SPLIT_TARGET` × 32 × 32 floats).
const SPLIT_TARGET: usize = 1024;
/// Each split sums at least this many K steps, so that a split is more than its loads' latency.
const MIN_STEPS_PER_SPLIT: usize = 4;

/// How `conv2d_tiled` divides K for an NCHW output of shape `o` and a sum of length `kdim`
/// (`Ci·kh·kw`): (splits, K range per split).
pub(crate) fn split_k(o: &[usize], kdim: usize) -> (usize, usize) {
    let tiles = (o[0] * o[2] * o[3]).div_ceil(TILE) * o[1].div_ceil(TILE);
    let steps = kdim.div_ceil(TILE_K);
    let splits = (SPLIT_TARGET / tiles.max(1)).clamp(1, (steps / MIN_STEPS_PER_SPLIT).max(1));
    let chunk = steps.div_ceil(splits) * TILE_K;
    (kdim.div_ceil(chunk), chunk)
}

/// GPU wrapper. CPU adapters run `conv2d_wide`, one invocation per 8 channels × 8 columns of
/// output with no barriers (`conv2d_wide3` for 3-wide kernels at stride 1, which loads each
/// input row's ten columns once for its three taps; `conv2d`, 4 × 4, where rows are narrower
/// than 8, and `conv2d3` its version for 3-wide kernels); real GPUs run
/// `conv2d_tiled` (workgroup-memory implicit GEMM, split-K where the output has few tiles), see
/// [`GpuContext::tiled`]. All apply `e` as they store.
pub fn gpu(
    ctx: &GpuContext,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    e: ConvEpilogue<'_, GpuTensor>,
) -> Result<GpuTensor> {
    let o = out_shape(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
    check_epilogue(
        &o,
        e.channel_add.map(|t| t.shape()),
        e.residual.map(|t| t.shape()),
    )?;
    let (xs, ws) = (x.shape(), w.shape());
    let mut shader = weight_variant("conv2d", x, w, SHADER, SHADER_F16)?;
    if shader.name == SHADER_F16.name && ctx.f16_arith.get() {
        shader = SHADER_F16_ARITH;
    }
    let out = GpuTensor::empty(ctx, &o)?;
    let kdim = ws[1] * ws[2] * ws[3];
    let pixels = o[0] * o[2] * o[3];
    let tiles = [pixels.div_ceil(TILE), o[1].div_ceil(TILE)];
    let (splits, k_chunk) = split_k(&o, kdim);
    // CPU adapters' kernel: 8 channels × 8 columns per invocation where rows are that wide.
    let wide = o[3] >= 8;
    let (co_per, x_per) = if wide { (8, 8) } else { (4, 4) };
    let params = Params {
        n: o[0] as u32,
        cin: xs[1] as u32,
        h: xs[2] as u32,
        w: xs[3] as u32,
        cout: o[1] as u32,
        ho: o[2] as u32,
        wo: o[3] as u32,
        kh: ws[2] as u32,
        kw: ws[3] as u32,
        stride: p.stride as u32,
        pad_top: p.pad[0] as u32,
        pad_left: p.pad[1] as u32,
        has_bias: bias.is_some() as u32,
        co_tiles: o[1].div_ceil(co_per) as u32,
        x_tiles: o[3].div_ceil(x_per) as u32,
        splits: splits as u32,
        k_chunk: k_chunk as u32,
        has_add: e.channel_add.is_some() as u32,
        has_residual: e.residual.is_some() as u32,
        out_scale: e.scale,
    };
    let bias = bias.map(|b| b.buffer());
    let add = e.channel_add.map(|t| t.buffer());
    let residual = e.residual.map(|t| t.buffer());
    let inputs = [Some(x.buffer()), Some(w.buffer()), bias, add, residual];
    if ctx.tiled.get() {
        let grid = [tiles[0] as u32, tiles[1] as u32, splits as u32];
        if splits == 1 {
            ctx.dispatch(shader, "conv2d_tiled", &params, &inputs, out.buffer(), grid)?;
            return Ok(out);
        }
        let partial = GpuTensor::empty(ctx, &[splits, o[1], pixels])?;
        ctx.dispatch(
            shader,
            "conv2d_tiled",
            &params,
            &inputs,
            partial.buffer(),
            grid,
        )?;
        let sum_inputs = [Some(partial.buffer()), None, bias, add, residual];
        let grid = grid_1d(o.iter().product())?;
        ctx.dispatch(
            shader,
            "conv2d_split_sum",
            &params,
            &sum_inputs,
            out.buffer(),
            grid,
        )?;
        return Ok(out);
    }
    let invocations = o[0] * o[1].div_ceil(co_per) * o[2] * o[3].div_ceil(x_per);
    ctx.dispatch(
        shader,
        match (wide, ws[3] == 3 && p.stride == 1) {
            (true, true) => "conv2d_wide3",
            (true, false) => "conv2d_wide",
            (false, true) => "conv2d3",
            (false, false) => "conv2d",
        },
        &params,
        &inputs,
        out.buffer(),
        grid_1d(invocations)?,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selftest::TestRng;

    /// The definition, one output at a time.
    fn naive(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], p: Conv2dParams) -> Vec<f32> {
        let ([n, ci, h, wd], [co, _, kh, kw]) = (xs, ws);
        let ho = (h + p.pad[0] + p.pad[2] - kh) / p.stride + 1;
        let wo = (wd + p.pad[1] + p.pad[3] - kw) / p.stride + 1;
        let mut out = vec![0f32; n * co * ho * wo];
        for b in 0..n {
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0f64;
                        for c in 0..ci {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * p.stride + ky) as isize - p.pad[0] as isize;
                                    let ix = (ox * p.stride + kx) as isize - p.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((b * ci + c) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((o * ci + c) * kh + ky) * kw + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((b * co + o) * ho + oy) * wo + ox] = acc as f32;
                    }
                }
            }
        }
        out
    }

    /// What f32 sums of up to a few hundred products may be off by, relative to the largest
    /// expected value: a wrong tap, channel or epilogue term is off by about 1.
    fn tolerance(want: &[f32]) -> f32 {
        1e-5 * want.iter().fold(1f32, |m, v| m.max(v.abs()))
    }

    /// Max |a − b|, NaN-propagating: an unwritten (NaN) element must fail, and `f32::max`
    /// skips NaN.
    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, e| if e.is_nan() || e > m { e } else { m })
    }

    #[test]
    fn cpu_paths_match_the_definition() {
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        // 1×1 direct; stride 1 with taps (3×3, 1×3, padded 1×1: large images) and unfolded
        // (small ones); stride 2 unfolded; batches that share one GEMM; channel counts past the
        // 4×4 transpose blocks. The last column makes the output width a multiple of 8 or 4
        // (1: any), so that the direct kernel runs too (see also the next test).
        let cases = [
            ([1, 1, 1], 1, [0; 4], 1, 1),
            ([3, 3, 3], 1, [1; 4], 12, 1),
            ([3, 3, 3], 1, [1; 4], 1, 1),
            ([3, 3, 3], 2, [1; 4], 1, 1),
            ([3, 3, 3], 2, [0, 0, 1, 1], 1, 1),
            ([3, 1, 3], 1, [0, 1, 0, 1], 12, 1),
            ([1, 1, 1], 1, [1, 0, 2, 1], 12, 1),
            ([1, 1, 1], 2, [0; 4], 1, 1),
            ([3, 3, 3], 1, [0; 4], 12, 1),
            ([3, 3, 3], 1, [1; 4], 1, 8),
            ([3, 3, 3], 2, [0, 0, 1, 1], 1, 4),
            ([2, 1, 3], 1, [0, 1, 0, 1], 1, 8),
            ([2, 1, 1], 1, [1; 4], 1, 4),
        ];
        let mut stride1_paths = [false; 2]; // [unfolded, strided taps]
        for (i, &([nmax, kh, kw], stride, pad, min_size, width_of)) in cases.iter().enumerate() {
            let n = r.range(1, nmax + 1);
            let (ci, co) = (r.range(1, 70), r.range(1, 40));
            let (lo_h, lo_w) = (kh.max(min_size), kw.max(min_size));
            let (h, mut wd) = if min_size > 1 {
                (r.range(lo_h, 19), r.range(lo_w, 21))
            } else {
                (r.range(lo_h, 5), r.range(lo_w, 5))
            };
            if width_of > 1 {
                // Output width a multiple of `width_of` (1 to 3 vectors).
                let wo = width_of * r.range(1, 4);
                wd = (wo - 1) * stride + kw - pad[1] - pad[3];
            }
            let p = Conv2dParams { stride, pad };
            let (xs, ws) = ([n, ci, h, wd], [co, ci, kh, kw]);
            let direct = (kh, kw, stride, pad) == (1, 1, 1, [0; 4]);
            if stride == 1 && !direct {
                stride1_paths[uses_strided_taps(&xs, &ws, p) as usize] = true;
            }
            let x = r.randn(n * ci * h * wd);
            let w = r.randn(co * ci * kh * kw);
            let bias = r.randn(co);
            let o = out_shape(&xs, &ws, Some(&[co]), p).unwrap();
            let mut want = naive(&x, xs, &w, ws, p);
            for (j, v) in want.iter_mut().enumerate() {
                *v += bias[(j / (o[2] * o[3])) % co];
            }
            // Stale values in the output must all be overwritten.
            let mut got = vec![f32::NAN; o.iter().product()];
            cpu(
                &x,
                &xs,
                &weight_rows(&w, &ws),
                &ws,
                Some(&bias),
                p,
                &mut got,
            );
            let (err, tol) = (max_err(&want, &got), tolerance(&want));
            assert!(
                err < tol, // false for NaN
                "case {i} {xs:?} * {ws:?} {p:?}: max error {err} (seed {seed})"
            );
            if let Some(width) = direct_width(&ws, &o, p) {
                let g = direct::Geometry::new(&xs, &ws, p);
                let e = direct::Epilogue {
                    bias: Some(&bias),
                    ..direct::Epilogue::NONE
                };
                let mut got = vec![f32::NAN; o.iter().product()];
                direct::conv(
                    &x,
                    &g,
                    &direct::pack_weight(&w, &ws),
                    None,
                    e,
                    width,
                    &mut got,
                );
                let err = max_err(&want, &got);
                assert!(
                    err < tol,
                    "case {i} {xs:?} * {ws:?} {p:?}, direct {width:?}: max error {err} \
                     (seed {seed})"
                );
            }
        }
        assert_eq!(
            stride1_paths,
            [true, true],
            "both stride-1 paths must be tested (seed {seed})"
        );
    }

    /// The direct kernel's output-channel blocks cover every channel once, in blocks of 6 and 4,
    /// with padding channels only in the last block, and none at the UNets' usual widths.
    #[test]
    fn direct_blocks_cover_the_channels() {
        for co in 1..200 {
            let blocks: Vec<_> = direct::blocks(co).collect();
            let mut next = 0;
            for &(c0, r) in &blocks {
                assert_eq!(c0, next, "{co}: {blocks:?}");
                assert!(r == direct::RC || r == direct::RC_SMALL, "{co}: {blocks:?}");
                next += r;
            }
            assert!(
                next >= co && next - co < blocks.last().unwrap().1,
                "{co}: {blocks:?}"
            );
            assert!(
                next - co <= 3,
                "{co}: {blocks:?} pads {} channels",
                next - co
            );
            if co % 2 == 0 && co >= 4 {
                assert_eq!(next, co, "{co}: {blocks:?}");
            }
        }
    }

    /// google/ddpm-cifar10-32's convolutions split their channels among threads, the shipped
    /// models' their pixels: the weights decide, not the image alone.
    #[test]
    fn big_weights_split_channels() {
        let p = Conv2dParams::same(3);
        let bound = |ci: usize, co: usize, hw: usize| {
            direct::weights_bound(&direct::Geometry::new(&[1, ci, hw, hw], &[co, ci, 3, 3], p))
        };
        // cifar10: 128–256 channels at 32×32 down to 4×4 (590 KB–4.7 MB of weights).
        for (ci, co, hw) in [
            (128, 128, 32),
            (256, 128, 32),
            (256, 256, 16),
            (512, 256, 8),
        ] {
            assert!(bound(ci, co, hw), "{ci}→{co} at {hw}×{hw}");
        }
        // Shipped models (at most 147 KB per convolution), and big weights on a big image.
        for (ci, co, hw) in [(64, 64, 16), (64, 64, 8), (32, 32, 64), (128, 128, 64)] {
            assert!(!bound(ci, co, hw), "{ci}→{co} at {hw}×{hw}");
        }
    }

    /// A split over threads covers every block once, in order, in at most the parts asked for,
    /// of about equal channel counts.
    #[test]
    fn direct_split_covers_the_blocks() {
        for co in 1..200 {
            let n = direct::blocks(co).count();
            for parts in 1..=direct::MAX_PARTS {
                let (spans, k) = direct::split(co, parts);
                assert!(
                    (1..=parts.min(n)).contains(&k),
                    "{co} in {parts}: {k} spans"
                );
                let mut next = 0;
                for s in &spans[..k] {
                    assert!(s.first == next && s.count > 0, "{co} in {parts}: {spans:?}");
                    next += s.count;
                }
                assert_eq!(next, n, "{co} in {parts}: {spans:?}");
                let (c0, c1) = (spans[0].channels(co).0, spans[k - 1].channels(co).1);
                assert_eq!((c0, c1), (0, co));
                if co >= 6 * direct::RC * parts {
                    let widths = spans[..k].iter().map(|s| {
                        let (a, b) = s.channels(co);
                        b - a
                    });
                    let (lo, hi) = (widths.clone().min().unwrap(), widths.max().unwrap());
                    assert!(
                        k == parts && hi - lo <= 2 * direct::RC,
                        "{co}/{parts}: {spans:?}"
                    );
                }
            }
        }
    }

    /// The direct kernel gives the same bits on 2, 3 and 4 threads as on one, whether it splits
    /// by images (the batch divides among the threads), by pixel vectors (large images) or by
    /// output channels (4×4 images), with the prologue and the whole epilogue.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn direct_kernel_is_the_same_on_any_thread_count() {
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        use crate::device::cpu::threads;
        let cases = (2..=4).flat_map(|t| (1..=4).flat_map(move |n| [(t, n, false), (t, n, true)]));
        for (t, n, small) in cases {
            let (ci, co, ho, wo) = if small {
                (r.range(128, 160), r.range(64, 96), 4, 4)
            } else {
                (
                    r.range(48, 64),
                    r.range(4 * direct::RC, 64),
                    r.range(24, 40),
                    8 * r.range(3, 5),
                )
            };
            let p = Conv2dParams::same(3);
            let (xs, ws) = ([n, ci, ho, wo], [co, ci, 3, 3]);
            let o = out_shape(&xs, &ws, Some(&[co]), p).unwrap();
            let width = direct_width(&ws, &o, p).expect("the direct kernel runs on this CPU");
            let len: usize = o.iter().product();
            assert!(
                len * ci * 9 >= direct::PARALLEL_MACS,
                "{xs:?} too small to split"
            );
            let x = r.randn(n * ci * ho * wo);
            let w = direct::pack_weight(&r.randn(co * ci * 9), &ws);
            let (bias, add, res) = (r.randn(co), r.randn(n * co), r.randn(len));
            let affine: Vec<[f32; 2]> = (0..n * ci).map(|_| [r.randn(1)[0], 0.1]).collect();
            let run = |t: usize| {
                let mut got = vec![f32::NAN; len];
                threads::with_threads(t, || {
                    assert_eq!(threads::count(), t);
                    direct::conv(
                        &x,
                        &direct::Geometry::new(&xs, &ws, p),
                        &w,
                        Some(direct::Prologue {
                            affine: &affine,
                            silu: true,
                        }),
                        direct::Epilogue {
                            bias: Some(&bias),
                            channel_add: Some(&add),
                            residual: Some(&res),
                            scale: 0.5,
                        },
                        width,
                        &mut got,
                    )
                });
                got
            };
            let (want, got) = (run(1), run(t));
            assert!(want.iter().all(|v| v.is_finite()), "{xs:?} (seed {seed})");
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{xs:?} * {ws:?} on {t} threads differs (seed {seed})");
        }
    }

    /// The direct kernel with its whole epilogue against the definition, at every SIMD width this
    /// CPU has, strides 1, 2 and 3, one pass over the input channels and several, and channel
    /// counts that leave a partial block of direct::RC.
    #[test]
    fn direct_kernel_matches_the_definition() {
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        use direct::Width;
        // An output size (ho, wo) that runs at each width, where this CPU has it.
        let size = |r: &mut TestRng, width: Width| match width {
            Width::Avx => (r.range(1, 9), 8 * r.range(1, 4)),
            Width::AvxRowPairs => (2 * r.range(1, 4), 4),
            // Natively only where 8 lanes and row pairs do not run: an odd number of vectors
            // of 4, odd rows for a width of 4.
            Width::Four => {
                let ho = 2 * r.range(0, 4) + 1;
                (ho, 4 * (2 * r.range(0, 3) + 1))
            }
        };
        let widths: Vec<Width> = [Width::Avx, Width::AvxRowPairs, Width::Four]
            .into_iter()
            .filter(|&wd| {
                let (ho, wo) = size(&mut r, wd);
                direct::width(ho, wo) == Some(wd)
            })
            .collect();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert_eq!(widths.len(), 3, "this CPU has AVX2: every width must run");
        }
        for &width in &widths {
            // Stride 3 takes the prepare's general phase split (2 has its own loop).
            for (stride, pad) in [
                (1, [1; 4]),
                (2, [1; 4]),
                (2, [0, 0, 1, 1]),
                (3, [1, 2, 0, 1]),
            ] {
                for many in [false, true] {
                    let n = r.range(1, 3);
                    let ci = if many {
                        r.range(direct::KC + 1, 3 * direct::KC)
                    } else {
                        r.range(1, direct::KC + 1)
                    };
                    let co = r.range(1, 4 * direct::RC);
                    let (ho, wo) = size(&mut r, width);
                    let h = (ho - 1) * stride + 3 - pad[0] - pad[2];
                    let wd = (wo - 1) * stride + 3 - pad[1] - pad[3];
                    let p = Conv2dParams { stride, pad };
                    let (xs, ws) = ([n, ci, h, wd], [co, ci, 3, 3]);
                    let o = out_shape(&xs, &ws, Some(&[co]), p).unwrap();
                    assert_eq!(direct_width(&ws, &o, p), Some(width));
                    let x = r.randn(n * ci * h * wd);
                    let w = r.randn(co * ci * 9);
                    let (bias, add) = (r.randn(co), r.randn(n * co));
                    let res = r.randn(o.iter().product());
                    let scale = 0.5 + r.range(0, 3) as f32;
                    let plane = o[2] * o[3];
                    let want: Vec<f32> = naive(&x, xs, &w, ws, p)
                        .iter()
                        .enumerate()
                        .map(|(j, v)| {
                            (res[j] + (v + bias[j / plane % co] + add[j / plane])) * scale
                        })
                        .collect();
                    let g = direct::Geometry::new(&xs, &ws, p);
                    let e = direct::Epilogue {
                        bias: Some(&bias),
                        channel_add: Some(&add),
                        residual: Some(&res),
                        scale,
                    };
                    let mut got = vec![f32::NAN; o.iter().product()];
                    direct::conv(
                        &x,
                        &g,
                        &direct::pack_weight(&w, &ws),
                        None,
                        e,
                        width,
                        &mut got,
                    );
                    let (err, tol) = (max_err(&want, &got), tolerance(&want));
                    assert!(
                        err < tol,
                        "{xs:?} * {ws:?} {p:?} at {width:?}: max error {err} (seed {seed})"
                    );
                }
            }
        }
    }

    /// Which SIMD kernel the CPU picks: Winograd for 3×3 'same' layers with 32+ channels and 16+
    /// blocks, F(4×4) where the sides divide by 4 and 16, F(2×2) where they divide by 2 and 8;
    /// the direct kernel for the rest (3 or 16 channels, too few tiles, stride 2, other widths);
    /// none for a 1×1 unpadded convolution.
    #[test]
    fn cpu_kernel_picks_winograd_where_it_pays() {
        use direct::Width;
        use winograd::Tile;
        #[cfg(target_arch = "x86_64")]
        assert!(
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            "these expectations are for a CPU with AVX2 and FMA"
        );
        let same = Conv2dParams::same(3);
        let down = Conv2dParams {
            stride: 2,
            pad: [0, 0, 1, 1],
        };
        let wino = |t| Some(CpuKernel::Winograd(t));
        let direct = |w| Some(CpuKernel::Direct(w));
        // (N, Ci, Co, H = W, params, kernel), 3×3 unless the params say 1×1.
        let cases = [
            (1, 32, 32, 32, same, wino(Tile::F4)),
            (4, 128, 64, 16, same, wino(Tile::F4)),
            (1, 64, 64, 8, same, wino(Tile::F2)),
            (1, 256, 256, 8, same, wino(Tile::F2)),
            (1, 64, 64, 24, same, wino(Tile::F2)),
            (1, 3, 32, 32, same, direct(Width::Avx)),
            (1, 32, 3, 32, same, direct(Width::Avx)),
            (1, 16, 16, 64, same, direct(Width::Avx)),
            (1, 256, 256, 4, same, direct(Width::AvxRowPairs)),
            (1, 64, 64, 32, down, direct(Width::Avx)),
            (1, 32, 32, 12, same, direct(Width::Four)),
            (1, 32, 64, 16, Conv2dParams::same(1), None),
        ];
        for (n, ci, co, hw, p, want) in cases {
            let k = if p.pad == [0; 4] && p.stride == 1 {
                1
            } else {
                3
            };
            let (xs, ws) = ([n, ci, hw, hw], [co, ci, k, k]);
            let o = out_shape(&xs, &ws, None, p).unwrap();
            assert_eq!(cpu_kernel(&xs, &ws, &o, p), want, "{xs:?} * {ws:?} {p:?}");
        }
    }

    /// Winograd's F(2×2, 3×3) and F(4×4, 3×3), each wherever it fits, with the group norm and
    /// SiLU before it and its whole epilogue, against the definition: input channel counts past
    /// the direct kernel's pass of 32 (the GEMMs take all of them in one), output counts that
    /// leave partial microkernel blocks, transforms 8 and 4 lanes wide (tile rows of a multiple
    /// of 8 tiles or not, and 8 over two tile rows of 4), bands of one tile row and of several
    /// (the last one shorter), and on
    /// 1–3 threads each of [`winograd::conv`]'s splits: whole images per thread, an image's tile
    /// rows per thread, an image's output channels per thread. Every thread count gives the same bits.
    #[test]
    fn winograd_matches_the_definition() {
        use crate::device::cpu::threads;
        use crate::ops::groupnorm;
        use winograd::Tile;
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        // (N, Ci, Co, H, W)
        let cases = [
            (1, r.range(32, 40), r.range(32, 40), 4 * r.range(2, 5), 8),
            (1, r.range(32, 40), r.range(32, 40), 10, 8),
            (2, r.range(32, 45), r.range(32, 45), 2 * r.range(4, 9), 16),
            (3, r.range(60, 100), r.range(40, 64), 2 * r.range(4, 9), 40),
            (1, r.range(60, 100), r.range(40, 64), 2 * r.range(4, 9), 32),
            (1, 32, 32, 16, 32),
            (2, r.range(33, 70), r.range(32, 40), 2 * r.range(2, 6), 24),
            (1, r.range(32, 50), r.range(32, 50), 8 * r.range(2, 4), 16),
            (1, r.range(32, 50), r.range(32, 50), 20, 16),
            (1, 64, 64, 32, 16),
            (2, r.range(60, 100), r.range(40, 64), 4 * r.range(2, 6), 32),
            (1, 64, 64, 32, 32),
            (3, r.range(32, 40), r.range(32, 40), 4 * r.range(4, 6), 48),
        ];
        // [images, bands, channels] per thread, for each tile.
        let mut splits = [[false; 3]; 2];
        let mut runs = [0; 2];
        // Transforms of one tile row per vector and of two, for each tile.
        let mut pairs = [[false; 2]; 2];
        for (n, ci, co, h, w) in cases {
            let (xs, ws) = ([n, ci, h, w], [co, ci, 3, 3]);
            let p = Conv2dParams::same(3);
            let g = direct::Geometry::new(&xs, &ws, p);
            assert!(winograd::tile(&g).is_some(), "{xs:?}");
            let x = r.randn(n * ci * h * w);
            let wt = r.randn(co * ci * 9);
            let len = n * co * h * w;
            let (bias, add, res) = (r.randn(co), r.randn(n * co), r.randn(len));
            let affine: Vec<[f32; 2]> = (0..n * ci)
                .map(|_| [r.randn(1)[0], r.randn(1)[0]])
                .collect();
            let silu = r.range(0, 2) == 1;
            let scale = [1.0, 0.5][r.range(0, 2)];
            // The definition on the normalised input, then the epilogue.
            let xn: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| groupnorm::apply(v, affine[i / (h * w)], silu))
                .collect();
            let plane = h * w;
            let want: Vec<f32> = naive(&xn, xs, &wt, ws, p)
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (b, c) = (i / (co * plane), (i / plane) % co);
                    (res[i] + (v + bias[c] + add[b * co + c])) * scale
                })
                .collect();
            for (ti, tile) in [Tile::F2, Tile::F4].into_iter().enumerate() {
                if !winograd::fits(&g, tile) {
                    continue;
                }
                runs[ti] += 1;
                pairs[ti][winograd::row_pairs(&g, tile) as usize] = true;
                let packed = winograd::pack_weight(&wt, &ws, tile);
                let run = |t: usize| {
                    let mut got = vec![f32::NAN; len];
                    threads::with_threads(t, || {
                        winograd::conv(
                            &x,
                            &g,
                            tile,
                            &packed,
                            Some(direct::Prologue {
                                affine: &affine,
                                silu,
                            }),
                            direct::Epilogue {
                                bias: Some(&bias),
                                channel_add: Some(&add),
                                residual: Some(&res),
                                scale,
                            },
                            &mut got,
                        )
                    });
                    got
                };
                let one = run(1);
                // F(4×4)'s transforms (entries up to 8, and 1/6 and 1/24 in G) cost about a
                // decimal digit: its max error measured 0.5–0.6 of the F(2×2) bound at 70–76
                // input channels, F(2×2)'s 0.03–0.04.
                let loss = match tile {
                    Tile::F2 => 1.0,
                    Tile::F4 => 4.0,
                };
                let (err, tol) = (max_err(&want, &one), loss * tolerance(&want));
                assert!(
                    err < tol,
                    "{tile:?} {xs:?} * {ws:?}: max error {err} (seed {seed})"
                );
                let bands = winograd::band_count(&g, tile);
                for t in [2, 3] {
                    if len * ci * 9 < direct::PARALLEL_MACS {
                        continue;
                    }
                    splits[ti][if n % t == 0 {
                        0
                    } else if bands >= t {
                        1
                    } else {
                        2
                    }] = true;
                    let got = run(t);
                    let same = one
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{tile:?} {xs:?} * {ws:?} on {t} threads differs (seed {seed})"
                    );
                }
            }
        }
        assert!(runs.iter().all(|&n| n >= 4), "{runs:?} (seed {seed})");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(pairs, [[true; 2]; 2], "one and two tile rows per vector");
        assert_eq!(
            splits, [[true; 3]; 2],
            "every thread split must run for each tile (seed {seed})"
        );
    }

    /// The CPU backend's fused epilogue equals the separate ops it replaces (the trait's default).
    #[test]
    fn cpu_epilogue_matches_the_separate_ops() {
        use crate::backend::Backend;
        use crate::cpu::CpuBackend;
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        let cpu = CpuBackend;
        let (n, ci, co) = (2, r.range(1, 9), r.range(1, 9));
        let (h, w) = (r.range(3, 12), r.range(3, 12));
        let p = Conv2dParams::same(3);
        let x = cpu
            .upload(&[n, ci, h, w], &r.randn(n * ci * h * w))
            .unwrap();
        let wt = cpu.upload(&[co, ci, 3, 3], &r.randn(co * ci * 9)).unwrap();
        let b = cpu.upload(&[co], &r.randn(co)).unwrap();
        let add = cpu.upload(&[n, co], &r.randn(n * co)).unwrap();
        let res = cpu
            .upload(&[n, co, h, w], &r.randn(n * co * h * w))
            .unwrap();
        for (with_add, with_res, scale) in
            [(true, false, 1.0), (false, true, 0.5), (true, true, 2.0)]
        {
            let e = ConvEpilogue {
                channel_add: with_add.then_some(&add),
                residual: with_res.then_some(&res),
                scale,
            };
            let got = cpu.conv2d_epilogue(&x, &wt, Some(&b), p, e).unwrap();
            let mut want = cpu.conv2d(&x, &wt, Some(&b), p).unwrap();
            if with_add {
                want = cpu.channel_modulate(&want, &add, 0, None).unwrap();
            }
            if with_res {
                want = cpu.add(&res, &want, scale).unwrap();
            } else {
                want = cpu.affine(&want, scale, 0.0).unwrap();
            }
            // The fused store adds in another order than the separate ops.
            let (err, tol) = (max_err(want.data(), got.data()), tolerance(want.data()));
            assert!(
                err < tol,
                "{with_add} {with_res} {scale}: max error {err} (seed {seed})"
            );
        }
        // A channel term or residual of the wrong shape is an error, not a panic.
        let bad = ConvEpilogue {
            channel_add: Some(&b),
            ..ConvEpilogue::none()
        };
        assert!(cpu.conv2d_epilogue(&x, &wt, Some(&b), p, bad).is_err());
        // One output channel too many: wrong whatever Ci and Co are.
        let wide = cpu
            .upload(&[n, co + 1, h, w], &r.randn(n * (co + 1) * h * w))
            .unwrap();
        let bad = ConvEpilogue {
            residual: Some(&wide),
            ..ConvEpilogue::none()
        };
        assert!(cpu.conv2d_epilogue(&x, &wt, Some(&b), p, bad).is_err());
    }

    /// The CPU backend's group norm fused into the convolution's input copy equals the group norm
    /// followed by the convolution (the trait's default), on the direct kernel (8 lanes, row
    /// pairs, 4 lanes; several channel passes) and on the GEMM fallback (odd widths).
    #[test]
    fn cpu_input_norm_matches_the_separate_ops() {
        use crate::backend::{Backend, InputNorm};
        use crate::cpu::CpuBackend;
        let mut r = TestRng::from_env_or_clock();
        let seed = r.seed();
        let cpu = CpuBackend;
        let n = 2;
        let groups = r.range(1, 5);
        // Up to 48 channels: more than one of the direct kernel's 32-channel passes.
        let ci = groups * r.range(1, 13);
        let co = r.range(1, 14);
        let gamma = cpu.upload(&[ci], &r.randn(ci)).unwrap();
        let beta = cpu.upload(&[ci], &r.randn(ci)).unwrap();
        let wt = cpu.upload(&[co, ci, 3, 3], &r.randn(co * ci * 9)).unwrap();
        let bias = cpu.upload(&[co], &r.randn(co)).unwrap();
        let add = cpu.upload(&[n, co], &r.randn(n * co)).unwrap();
        let down = Conv2dParams {
            stride: 2,
            pad: [0, 0, 1, 1],
        };
        // Widths for each SIMD flavour and one that none takes.
        for (h, w) in [
            (r.range(3, 11), 16),
            (2 * r.range(1, 5), 4),
            (r.range(3, 9), 12),
            (5, 7),
        ] {
            // Every image and channel has its own mean and spread, so that statistics taken from
            // the wrong image, group or channel change the result.
            let mut xv = r.randn(n * ci * h * w);
            for (i, v) in xv.iter_mut().enumerate() {
                let (b, c) = (i / (ci * h * w), i / (h * w) % ci);
                *v = *v * (1.0 + (c % 3) as f32) + 3.0 * b as f32 - 0.5 * c as f32;
            }
            let x = cpu.upload(&[n, ci, h, w], &xv).unwrap();
            let res = cpu
                .upload(&[n, co, h, w], &r.randn(n * co * h * w))
                .unwrap();
            for (p, silu, with_res) in [
                (Conv2dParams::same(3), true, true),
                (Conv2dParams::same(3), false, false),
                (down, true, false),
            ] {
                let shape = out_shape(&[n, ci, h, w], &[co, ci, 3, 3], Some(&[co]), p).unwrap();
                #[cfg(target_arch = "x86_64")]
                if w != 7
                    && p.stride == 1
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    assert!(
                        direct_width(&[co, ci, 3, 3], &shape, p).is_some(),
                        "{h}×{w}"
                    );
                }
                let e = || ConvEpilogue {
                    channel_add: Some(&add),
                    residual: with_res.then_some(&res),
                    scale: 0.5,
                };
                let norm = InputNorm {
                    gamma: &gamma,
                    beta: &beta,
                    groups,
                    eps: 1e-5,
                    silu,
                };
                let got = cpu
                    .group_norm_conv2d(&x, norm, &wt, Some(&bias), p, e())
                    .unwrap();
                let hn = cpu
                    .group_norm(&x, &gamma, &beta, groups, 1e-5, silu)
                    .unwrap();
                let want = cpu.conv2d_epilogue(&hn, &wt, Some(&bias), p, e()).unwrap();
                assert_eq!(got.shape(), want.shape());
                let (err, tol) = (max_err(want.data(), got.data()), tolerance(want.data()));
                assert!(
                    err < tol,
                    "{h}×{w} {p:?} silu {silu}: max error {err} (seed {seed})"
                );
            }
        }
        // Norm weights of the wrong size (one channel too many) are an error, not a panic.
        let x = cpu.upload(&[n, ci, 8, 8], &r.randn(n * ci * 64)).unwrap();
        let wrong = cpu.upload(&[ci + 1], &r.randn(ci + 1)).unwrap();
        let bad = InputNorm {
            gamma: &wrong,
            beta: &beta,
            groups,
            eps: 1e-5,
            silu: true,
        };
        let p = Conv2dParams::same(3);
        assert!(cpu
            .group_norm_conv2d(&x, bad, &wt, None, p, ConvEpilogue::none())
            .is_err());
    }
}
