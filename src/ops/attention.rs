//! Row softmax for attention, numerically safe (max subtracted first): `shaders/attention.wgsl`
//! and its CPU reference. The attention block itself (`model/attention.rs`) composes it with
//! `matmul`.

use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, Shader};
use crate::gpu::{grid_1d, GpuTensor};

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
    for (row, o) in x.chunks(cols).zip(out.chunks_mut(cols)) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for (d, &v) in o.iter_mut().zip(row) {
            *d = super::elementwise::exp_f32(v - m);
        }
        let inv = 1.0 / o.iter().sum::<f32>();
        o.iter_mut().for_each(|v| *v *= inv);
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
