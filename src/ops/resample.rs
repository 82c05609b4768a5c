//! Nearest-neighbour 2× upsampling (diffusers' `Upsample2D` before its conv):
//! `shaders/resample.wgsl` and its CPU reference. Downsampling is a stride-2 conv (`conv2d`).

use crate::backend::Tensor;
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, Shader};
use crate::gpu::{grid_1d, GpuTensor};

pub fn out_shape(x: &[usize]) -> Result<[usize; 4]> {
    match *x {
        [n, c, h, w] => Ok([n, c, h * 2, w * 2]),
        _ => Err(Error::shape(
            "upsample_nearest2x",
            format!("expected [N,C,H,W], got {x:?}"),
        )),
    }
}

pub fn cpu(x: &[f32], xs: &[usize], out: &mut [f32]) {
    let (nc, h, w) = (xs[0] * xs[1], xs[2], xs[3]);
    // Each input row becomes two identical output rows of twice its width.
    for (src, dst) in x
        .chunks_exact(w)
        .zip(out.chunks_exact_mut(4 * w))
        .take(nc * h)
    {
        let (top, bottom) = dst.split_at_mut(2 * w);
        for (pair, &v) in top.chunks_exact_mut(2).zip(src) {
            pair[0] = v;
            pair[1] = v;
        }
        bottom.copy_from_slice(top);
    }
}

pub const SHADER: Shader = Shader {
    name: "resample",
    source: include_str!("../../shaders/resample.wgsl"),
    inputs: 1,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    h: u32,
    w: u32,
    _pad: u32,
}

pub fn gpu(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    let o = out_shape(x.shape())?;
    let out = GpuTensor::empty(ctx, &o)?;
    let xs = x.shape();
    let params = Params {
        planes: (xs[0] * xs[1]) as u32,
        h: xs[2] as u32,
        w: xs[3] as u32,
        _pad: 0,
    };
    ctx.dispatch(
        SHADER,
        "upsample_nearest2x",
        &params,
        &[Some(x.buffer())],
        out.buffer(),
        grid_1d(out.numel())?,
    )?;
    Ok(out)
}
