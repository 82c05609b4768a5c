//! 2-D convolution (3×3 and 1×1, stride 1 and 2, asymmetric padding): `shaders/conv2d.wgsl` and
//! its CPU reference (im2col + sgemm).

use crate::backend::{Conv2dParams, Tensor};
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, Shader};
use crate::gpu::{grid_1d, GpuTensor};

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

/// CPU reference: im2col per image, then one sgemm `W[Co, Ci·kh·kw] × cols[Ci·kh·kw, Ho·Wo]`.
pub fn cpu(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    p: Conv2dParams,
) -> Vec<f32> {
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    let ho = (h + p.pad[0] + p.pad[2] - kh) / p.stride + 1;
    let wo = (wd + p.pad[1] + p.pad[3] - kw) / p.stride + 1;
    let kdim = ci * kh * kw;
    let pix = ho * wo;
    let mut out = vec![0f32; n * co * pix];
    // A 1×1 convolution with stride 1 and no padding is a plain matmul on the input itself.
    let direct = kh == 1 && kw == 1 && p.stride == 1 && p.pad == [0; 4];
    let mut cols = if direct {
        Vec::new()
    } else {
        vec![0f32; kdim * pix]
    };
    for b in 0..n {
        let xb = &x[b * ci * h * wd..(b + 1) * ci * h * wd];
        if !direct {
            im2col(xb, [ci, h, wd], [kh, kw], [ho, wo], p, &mut cols);
        }
        let cols: &[f32] = if direct { xb } else { &cols };
        let ob = &mut out[b * co * pix..(b + 1) * co * pix];
        if let Some(bias) = bias {
            for (o, chunk) in ob.chunks_mut(pix).enumerate() {
                chunk.fill(bias[o]);
            }
        }
        // SAFETY: the pointers cover co×kdim, kdim×pix and co×pix dense row-major matrices.
        unsafe {
            super::matmul::sgemm(
                [co, kdim, pix],
                1.0,
                (w.as_ptr(), kdim as isize, 1),
                (cols.as_ptr(), pix as isize, 1),
                bias.is_some(),
                (ob.as_mut_ptr(), pix as isize, 1),
            );
        }
    }
    out
}

/// Unfolds one image into the `[ci·kh·kw, ho·wo]` matrix whose product with the weights is
/// the convolution. Each output row is copied as runs of the input row (zeros for padding), not
/// element by element.
fn im2col(
    xb: &[f32],
    [ci, h, wd]: [usize; 3],
    [kh, kw]: [usize; 2],
    [ho, wo]: [usize; 2],
    p: Conv2dParams,
    cols: &mut [f32],
) {
    let pix = ho * wo;
    let (s, pt, pl) = (p.stride, p.pad[0] as isize, p.pad[1] as isize);
    for c in 0..ci {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let dst = &mut cols[row * pix..(row + 1) * pix];
                // Output columns whose source column lies inside the image: ox in [lo, hi).
                let first = |ox: usize| (ox * s + kx) as isize - pl;
                let lo = (0..wo).find(|&ox| first(ox) >= 0).unwrap_or(wo);
                let hi = (lo..wo).find(|&ox| first(ox) >= wd as isize).unwrap_or(wo);
                for oy in 0..ho {
                    let d = &mut dst[oy * wo..(oy + 1) * wo];
                    let iy = (oy * s + ky) as isize - pt;
                    if iy < 0 || iy >= h as isize || lo >= hi {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &xb[(c * h + iy as usize) * wd..(c * h + iy as usize + 1) * wd];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    let ix0 = first(lo) as usize;
                    if s == 1 {
                        d[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (j, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = src[ix0 + j * s];
                        }
                    }
                }
            }
        }
    }
}

pub const SHADER: Shader = Shader {
    name: "conv2d",
    source: include_str!("../../shaders/conv2d.wgsl"),
    inputs: 3,
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
    _pad: u32,
}

/// GPU wrapper: one invocation per 4 channels × 4 columns of output.
pub fn gpu(
    ctx: &GpuContext,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
) -> Result<GpuTensor> {
    let o = out_shape(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
    let (xs, ws) = (x.shape(), w.shape());
    let out = GpuTensor::empty(ctx, &o)?;
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
        co_tiles: o[1].div_ceil(4) as u32,
        x_tiles: o[3].div_ceil(4) as u32,
        _pad: 0,
    };
    let inputs = [Some(x.buffer()), Some(w.buffer()), bias.map(|b| b.buffer())];
    if ctx.conv_tiled.get() {
        // 64 output channels × 64 output pixels (across the batch) per workgroup.
        let pixels = o[0] * o[2] * o[3];
        let grid = [pixels.div_ceil(64) as u32, o[1].div_ceil(64) as u32, 1];
        ctx.dispatch(SHADER, "conv2d_tiled", &params, &inputs, out.buffer(), grid)?;
        return Ok(out);
    }
    let invocations = o[0] * o[1].div_ceil(4) * o[2] * o[3].div_ceil(4);
    ctx.dispatch(
        SHADER,
        "conv2d",
        &params,
        &inputs,
        out.buffer(),
        grid_1d(invocations)?,
    )?;
    Ok(out)
}
