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

pub fn cpu(x: &[f32], xs: &[usize]) -> Vec<f32> {
    let (nc, h, w) = (xs[0] * xs[1], xs[2], xs[3]);
    let mut out = vec![0f32; nc * 4 * h * w];
    for p in 0..nc {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
            }
        }
    }
    out
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
