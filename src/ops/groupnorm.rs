//! Group normalisation with per-channel affine and optional fused SiLU: `shaders/groupnorm.wgsl`
//! and its CPU reference.

use crate::backend::Tensor;
use crate::device::cpu::pool;
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::GpuTensor;
use crate::error::{Error, Result};

pub fn check(x: &[usize], gamma: &[usize], beta: &[usize], groups: usize) -> Result<()> {
    let op = "group_norm";
    if x.len() < 2 {
        return Err(Error::shape(op, format!("expected [N,C,...], got {x:?}")));
    }
    let c = x[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(
            op,
            format!("num_groups ({groups}) must divide num_channels ({c})"),
        ));
    }
    if gamma != [c] || beta != [c] {
        return Err(Error::shape(
            op,
            format!("weight {gamma:?} / bias {beta:?} do not match {c} channels"),
        ));
    }
    Ok(())
}

/// Sum of `f(v)` over `xs` in f64, in 8 interleaved partial sums so that the loop vectorises
/// (one running f64 sum is a serial dependency chain).
#[inline(always)]
fn sum_f64(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

simd_fn! {
/// The group statistics of `x` (`[N, C, ...]`) as a per-channel affine: `affine[n·C + c] = [a, b]`
/// such that `group_norm(x)[n, c, …] = x[n, c, …]·a + b`. Two-pass mean and variance in f64
/// (biased variance, as PyTorch).
#[allow(clippy::too_many_arguments)]
pub fn channel_affine(
    x: &[f32],
    xs: &[usize],
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f32,
    affine: &mut [[f32; 2]],
) {
    let (n, c) = (xs[0], xs[1]);
    let spatial: usize = xs[2..].iter().product();
    let cpg = c / groups;
    let len = cpg * spatial;
    assert_eq!(affine.len(), n * c, "group_norm affine size");
    for b in 0..n {
        for g in 0..groups {
            let start = (b * c + g * cpg) * spatial;
            let xs = &x[start..start + len];
            let mean = sum_f64(xs, |v| v) / len as f64;
            let var = sum_f64(xs, |v| (v - mean) * (v - mean)) / len as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            for ch in g * cpg..(g + 1) * cpg {
                // (x − mean)·inv·γ + β as one multiply-add per element.
                let a = inv * gamma[ch] as f64;
                affine[b * c + ch] = [a as f32, (beta[ch] as f64 - mean * a) as f32];
            }
        }
    }
}
}

/// `x·a + b`, then SiLU if `silu`: one element of a normalised channel.
#[inline(always)]
pub fn apply(v: f32, [a, b]: [f32; 2], silu: bool) -> f32 {
    let y = v * a + b;
    if silu {
        super::elementwise::silu_f32(y)
    } else {
        y
    }
}

simd_fn! {
/// Writes `[a, b]`'s affine (and SiLU) of each of `src`'s values into `dst`: one channel's row.
pub fn apply_row(src: &[f32], dst: &mut [f32], affine: [f32; 2], silu: bool) {
    // Two loops, not a branch per element, so that each vectorises.
    if silu {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = apply(v, affine, true);
        }
    } else {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = apply(v, affine, false);
        }
    }
}
}

/// CPU reference, written into `out` (the shape of `x`): [`channel_affine`], then [`apply`].
#[allow(clippy::too_many_arguments)]
pub fn cpu(
    x: &[f32],
    xs: &[usize],
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f32,
    silu: bool,
    out: &mut [f32],
) {
    assert_eq!(out.len(), x.len(), "group_norm output size");
    let (n, c) = (xs[0], xs[1]);
    let spatial: usize = xs[2..].iter().product();
    let mut affine = pool::take(2 * n * c);
    let pairs: &mut [[f32; 2]] = bytemuck::cast_slice_mut(&mut affine);
    channel_affine(x, xs, gamma, beta, groups, eps, pairs);
    for (i, &ab) in pairs.iter().enumerate() {
        let row = i * spatial..(i + 1) * spatial;
        apply_row(&x[row.clone()], &mut out[row], ab, silu);
    }
    pool::give(affine);
}

pub const SHADER: Shader = Shader {
    name: "groupnorm",
    source: include_str!("../../shaders/groupnorm.wgsl"),
    inputs: 3,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    c: u32,
    spatial: u32,
    groups: u32,
    silu: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// GPU wrapper: one workgroup per (sample, group).
pub fn gpu(
    ctx: &GpuContext,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<GpuTensor> {
    check(x.shape(), gamma.shape(), beta.shape(), groups)?;
    let out = GpuTensor::empty(ctx, x.shape())?;
    let params = Params {
        c: x.shape()[1] as u32,
        spatial: x.shape()[2..].iter().product::<usize>() as u32,
        groups: groups as u32,
        silu: silu as u32,
        eps,
        _pad: [0; 3],
    };
    let wgs = (x.shape()[0] * groups) as u32;
    ctx.dispatch(
        SHADER,
        "group_norm",
        &params,
        &[Some(x.buffer()), Some(gamma.buffer()), Some(beta.buffer())],
        out.buffer(),
        [wgs, 1, 1],
    )?;
    Ok(out)
}
