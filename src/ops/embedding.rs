//! Sinusoidal timestep embeddings and table lookups (`nn.Embedding`): `shaders/embedding.wgsl`
//! and their CPU references.

use crate::backend::Tensor;
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, GpuTensor};
use crate::error::{Error, Result};

/// The frequencies of diffusers' `get_timestep_embedding`, computed in f32 exactly as PyTorch
/// does: `exp(-ln(10000) · i / (half_dim - shift))`.
pub fn frequencies(dim: usize, freq_shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let ln_max = -(10000f64.ln()) as f32;
    (0..half)
        .map(|i| ((ln_max * i as f32) / (half as f32 - freq_shift)).exp())
        .collect()
}

pub fn check_timestep(t: &[usize], dim: usize) -> Result<()> {
    if t.len() != 1 || dim < 2 {
        return Err(Error::shape(
            "timestep_embedding",
            format!("expected timesteps [N] and dim ≥ 2, got {t:?} and {dim}"),
        ));
    }
    Ok(())
}

/// CPU reference: `[sin(t·f), cos(t·f)]`, flipped to `[cos, sin]` when `flip_sin_to_cos`, zero
/// padded for odd `dim`.
pub fn timestep_cpu(
    t: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    out: &mut [f32],
) {
    let f = frequencies(dim, freq_shift);
    let half = dim / 2;
    // An odd `dim` leaves the last column zero (diffusers pads it).
    out.fill(0.0);
    for (n, &tv) in t.iter().enumerate() {
        for (i, &fi) in f.iter().enumerate() {
            let arg = tv * fi;
            let (s, c) = (arg.sin(), arg.cos());
            let (first, second) = if flip_sin_to_cos { (c, s) } else { (s, c) };
            out[n * dim + i] = first;
            out[n * dim + half + i] = second;
        }
    }
}

pub fn check_lookup(table: &[usize], ids: &[usize]) -> Result<[usize; 2]> {
    match (table, ids) {
        (&[_, d], &[n]) => Ok([n, d]),
        _ => Err(Error::shape(
            "embedding",
            format!("expected table [V,D] and ids [N], got {table:?} and {ids:?}"),
        )),
    }
}

/// Validates integer ids against the table size on the host (the GPU would clamp silently).
pub fn check_ids(ids: &[f32], vocab: usize) -> Result<()> {
    for &id in ids {
        if !(id >= 0.0 && (id as usize) < vocab && id.fract() == 0.0) {
            return Err(Error::input(
                "class_labels",
                format!(
                    "label {id} is outside the model's {vocab} classes (0..{})",
                    vocab - 1
                ),
            ));
        }
    }
    Ok(())
}

pub fn lookup_cpu(table: &[f32], d: usize, ids: &[f32], out: &mut [f32]) {
    for (dst, &id) in out.chunks_exact_mut(d).zip(ids) {
        dst.copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
    }
}

pub const SHADER: Shader = Shader {
    name: "embedding",
    source: include_str!("../../shaders/embedding.wgsl"),
    inputs: 2,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    half_dim: u32,
    flip: u32,
}

/// GPU wrapper; `freqs` holds [`frequencies`] for this `dim` and shift.
pub fn timestep_gpu(
    ctx: &GpuContext,
    t: &GpuTensor,
    freqs: &GpuTensor,
    dim: usize,
    flip_sin_to_cos: bool,
) -> Result<GpuTensor> {
    check_timestep(t.shape(), dim)?;
    let n = t.shape()[0];
    let out = GpuTensor::empty(ctx, &[n, dim])?;
    let params = Params {
        n: n as u32,
        dim: dim as u32,
        half_dim: (dim / 2) as u32,
        flip: flip_sin_to_cos as u32,
    };
    ctx.dispatch(
        SHADER,
        "timestep",
        &params,
        &[Some(t.buffer()), Some(freqs.buffer())],
        out.buffer(),
        grid_1d(n * dim)?,
    )?;
    Ok(out)
}

pub fn lookup_gpu(ctx: &GpuContext, table: &GpuTensor, ids: &GpuTensor) -> Result<GpuTensor> {
    let o = check_lookup(table.shape(), ids.shape())?;
    let out = GpuTensor::empty(ctx, &o)?;
    let params = Params {
        n: o[0] as u32,
        dim: o[1] as u32,
        half_dim: table.shape()[0] as u32,
        flip: 0,
    };
    ctx.dispatch(
        SHADER,
        "lookup",
        &params,
        &[Some(ids.buffer()), Some(table.buffer())],
        out.buffer(),
        grid_1d(o[0] * o[1])?,
    )?;
    Ok(out)
}
