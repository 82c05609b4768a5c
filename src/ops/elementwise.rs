//! Elementwise ops (SiLU, add, affine, per-channel time modulation, channel concat):
//! `shaders/elementwise.wgsl` and their CPU references.

use crate::backend::Tensor;
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, GpuTensor};
use crate::error::{Error, Result};

/// `x · sigmoid(x)`, written as PyTorch does so that large |x| neither overflows nor loses digits.
#[inline(always)]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// `eˣ` within 2 ulp for `x` in [−87.3, 88.3] (clamped outside it; NaN stays NaN),
/// branch-free so that loops over it vectorise: libm's `expf` is a call per
/// element, and was 7 % of a CPU forward. Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// a degree-6 polynomial for `eʳ`, and `2ⁿ` put straight into the exponent bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // 1.5·2²³: adding it leaves round(x·log₂e) in the low mantissa bits, without a `round` call.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let two_n = ((t.to_bits() as i32 - SHIFTER.to_bits() as i32 + 127) << 23) as u32;
    er * f32::from_bits(two_n)
}

pub fn check_same(op: &str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(
            op,
            format!("operand shapes differ: {a:?} vs {b:?}"),
        ));
    }
    Ok(())
}

/// Shapes for `channel_modulate`: `x: [N,C,...]`, `emb: [N,E]` with the addressed columns inside E.
pub fn check_modulate(
    x: &[usize],
    emb: &[usize],
    shift_col: usize,
    scale_col: Option<usize>,
) -> Result<()> {
    let op = "channel_modulate";
    if x.len() < 2 || emb.len() != 2 || emb[0] != x[0] {
        return Err(Error::shape(
            op,
            format!("x {x:?} and emb {emb:?} do not pair up as [N,C,..] / [N,E]"),
        ));
    }
    let c = x[1];
    let last = shift_col.max(scale_col.unwrap_or(0)) + c;
    if last > emb[1] {
        return Err(Error::shape(
            op,
            format!("emb {emb:?} has no columns {shift_col}..{last} for {c} channels"),
        ));
    }
    Ok(())
}

pub fn check_concat(a: &[usize], b: &[usize]) -> Result<[usize; 4]> {
    match (a, b) {
        (&[n, ca, h, w], &[n2, cb, h2, w2]) if n == n2 && h == h2 && w == w2 => {
            Ok([n, ca + cb, h, w])
        }
        _ => Err(Error::shape(
            "concat_channels",
            format!("cannot concatenate {a:?} and {b:?} along channels"),
        )),
    }
}

simd_fn! {
pub fn silu_cpu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = silu_f32(v);
    }
}
}

pub fn add_cpu(a: &[f32], b: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = (x + y) * scale;
    }
}

pub fn affine_cpu(x: &[f32], mul: f32, add: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * mul + add;
    }
}

pub fn modulate_cpu(
    x: &[f32],
    xs: &[usize],
    emb: &[f32],
    e: usize,
    shift_col: usize,
    scale_col: Option<usize>,
    out: &mut [f32],
) {
    let (n, c) = (xs[0], xs[1]);
    let spatial: usize = xs[2..].iter().product();
    for b in 0..n {
        for ch in 0..c {
            let shift = emb[b * e + shift_col + ch];
            let scale = scale_col.map_or(0.0, |s| emb[b * e + s + ch]);
            let base = (b * c + ch) * spatial;
            let (src, dst) = (&x[base..base + spatial], &mut out[base..base + spatial]);
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = v * (1.0 + scale) + shift;
            }
        }
    }
}

pub fn concat_cpu(a: &[f32], as_: &[usize], b: &[f32], bs: &[usize], out: &mut [f32]) {
    let (n, ca, cb) = (as_[0], as_[1], bs[1]);
    let plane = as_[2] * as_[3];
    let (la, lb) = (ca * plane, cb * plane);
    for (i, dst) in out.chunks_exact_mut(la + lb).take(n).enumerate() {
        dst[..la].copy_from_slice(&a[i * la..(i + 1) * la]);
        dst[la..].copy_from_slice(&b[i * lb..(i + 1) * lb]);
    }
}

pub const SHADER: Shader = Shader {
    name: "elementwise",
    source: include_str!("../../shaders/elementwise.wgsl"),
    inputs: 2,
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    len: u32,
    c: u32,
    spatial: u32,
    e: u32,
    shift_col: u32,
    scale_col: u32,
    has_scale: u32,
    ca: u32,
    cb: u32,
    f0: f32,
    f1: f32,
    _pad: u32,
}

fn run(
    ctx: &GpuContext,
    entry: &'static str,
    shape: &[usize],
    params: Params,
    a: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let out = GpuTensor::empty(ctx, shape)?;
    let params = Params {
        len: out.numel() as u32,
        ..params
    };
    ctx.dispatch(
        SHADER,
        entry,
        &params,
        &[Some(a.buffer()), b.map(|t| t.buffer())],
        out.buffer(),
        grid_1d(out.numel())?,
    )?;
    Ok(out)
}

pub fn silu_gpu(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    run(ctx, "silu", x.shape(), Params::default(), x, None)
}

pub fn add_gpu(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor, scale: f32) -> Result<GpuTensor> {
    check_same("add", a.shape(), b.shape())?;
    run(
        ctx,
        "add",
        a.shape(),
        Params {
            f0: scale,
            ..Default::default()
        },
        a,
        Some(b),
    )
}

pub fn affine_gpu(ctx: &GpuContext, x: &GpuTensor, mul: f32, add: f32) -> Result<GpuTensor> {
    run(
        ctx,
        "affine",
        x.shape(),
        Params {
            f0: mul,
            f1: add,
            ..Default::default()
        },
        x,
        None,
    )
}

pub fn modulate_gpu(
    ctx: &GpuContext,
    x: &GpuTensor,
    emb: &GpuTensor,
    shift_col: usize,
    scale_col: Option<usize>,
) -> Result<GpuTensor> {
    check_modulate(x.shape(), emb.shape(), shift_col, scale_col)?;
    let params = Params {
        c: x.shape()[1] as u32,
        spatial: x.shape()[2..].iter().product::<usize>() as u32,
        e: emb.shape()[1] as u32,
        shift_col: shift_col as u32,
        scale_col: scale_col.unwrap_or(0) as u32,
        has_scale: scale_col.is_some() as u32,
        ..Default::default()
    };
    run(ctx, "modulate", x.shape(), params, x, Some(emb))
}

pub fn concat_gpu(ctx: &GpuContext, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let shape = check_concat(a.shape(), b.shape())?;
    let params = Params {
        spatial: (shape[2] * shape[3]) as u32,
        ca: a.shape()[1] as u32,
        cb: b.shape()[1] as u32,
        ..Default::default()
    };
    run(ctx, "concat", &shape, params, a, Some(b))
}

/// Shapes for concatenation along dim 0: every part has the same trailing dims.
pub fn check_concat_batch<'a>(mut parts: impl Iterator<Item = &'a [usize]>) -> Result<Vec<usize>> {
    let first = parts
        .next()
        .ok_or_else(|| Error::shape("concat_batch", "no tensors to concatenate"))?;
    let mut shape = first.to_vec();
    for p in parts {
        if p.len() != shape.len() || p[1..] != shape[1..] {
            return Err(Error::shape(
                "concat_batch",
                format!("cannot stack {p:?} onto {shape:?}"),
            ));
        }
        shape[0] += p[0];
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_2_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_f32(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want} ({ulp} ulp)");
            x += 0.0173;
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(1000.0) > 1e38);
        assert!(silu_f32(f32::NAN).is_nan());
        assert!(silu_f32(-200.0) <= 0.0 && silu_f32(-200.0) > -1e-30);
        assert_eq!(silu_f32(200.0), 200.0);
    }
}
