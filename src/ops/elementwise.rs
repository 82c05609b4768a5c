//! Elementwise ops (SiLU, add, affine, per-channel time modulation, channel concat):
//! `shaders/elementwise.wgsl` and their CPU references.

use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, Shader};
use crate::gpu::{grid_1d, GpuTensor};

/// `x · sigmoid(x)`, written as PyTorch does so that large |x| neither overflows nor loses digits.
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
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

pub fn silu_cpu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| silu_f32(v)).collect()
}

pub fn add_cpu(a: &[f32], b: &[f32], scale: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| (x + y) * scale).collect()
}

pub fn affine_cpu(x: &[f32], mul: f32, add: f32) -> Vec<f32> {
    x.iter().map(|&v| v * mul + add).collect()
}

pub fn modulate_cpu(
    x: &[f32],
    xs: &[usize],
    emb: &[f32],
    e: usize,
    shift_col: usize,
    scale_col: Option<usize>,
) -> Vec<f32> {
    let (n, c) = (xs[0], xs[1]);
    let spatial: usize = xs[2..].iter().product();
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let shift = emb[b * e + shift_col + ch];
            let scale = scale_col.map_or(0.0, |s| emb[b * e + s + ch]);
            let base = (b * c + ch) * spatial;
            for i in base..base + spatial {
                out[i] = x[i] * (1.0 + scale) + shift;
            }
        }
    }
    out
}

pub fn concat_cpu(a: &[f32], as_: &[usize], b: &[f32], bs: &[usize]) -> Vec<f32> {
    let (n, ca, cb) = (as_[0], as_[1], bs[1]);
    let plane = as_[2] * as_[3];
    let mut out = Vec::with_capacity(a.len() + b.len());
    for i in 0..n {
        out.extend_from_slice(&a[i * ca * plane..(i + 1) * ca * plane]);
        out.extend_from_slice(&b[i * cb * plane..(i + 1) * cb * plane]);
    }
    out
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
