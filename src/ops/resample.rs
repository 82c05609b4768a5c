//! 2× resampling: nearest-neighbour upsampling (diffusers' `Upsample2D` before its conv, or in a
//! `ResnetBlock2D` with `up=True`) and 2×2 average pooling (`Downsample2D` without a conv, in a
//! `ResnetBlock2D` with `down=True`): `shaders/resample.wgsl` and its CPU reference. A
//! `Downsample2D` with a conv is a stride-2 conv (`conv2d`).

use crate::backend::Tensor;
use crate::device::gpu::context::{GpuContext, Shader};
use crate::device::gpu::{grid_1d, GpuTensor};
use crate::error::{Error, Result};

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

/// `avg_pool2x2`'s output: `[N, C, H/2, W/2]`, rounded down as torch's `AvgPool2d(2, 2)` does.
pub fn avg_pool_out_shape(x: &[usize]) -> Result<[usize; 4]> {
    match *x {
        [n, c, h, w] if h >= 2 && w >= 2 => Ok([n, c, h / 2, w / 2]),
        _ => Err(Error::shape(
            "avg_pool2x2",
            format!("expected [N,C,H,W] with H and W at least 2, got {x:?}"),
        )),
    }
}

/// The CPU reference of `avg_pool2x2`: each output the mean of its 2×2 window, summed in
/// torch's order (row by row); an odd last row or column is dropped.
pub fn avg_pool_cpu(x: &[f32], xs: &[usize], out: &mut [f32]) {
    let (nc, h, w) = (xs[0] * xs[1], xs[2], xs[3]);
    let (ho, wo) = (h / 2, w / 2);
    for (plane, dst) in out.chunks_exact_mut(ho * wo).take(nc).enumerate() {
        for (oy, row) in dst.chunks_exact_mut(wo).enumerate() {
            let top = (plane * h + 2 * oy) * w;
            let (a, b) = (&x[top..top + w], &x[top + w..top + 2 * w]);
            for (ox, o) in row.iter_mut().enumerate() {
                *o = (a[2 * ox] + a[2 * ox + 1] + b[2 * ox] + b[2 * ox + 1]) / 4.0;
            }
        }
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
    dispatch(ctx, x, out_shape(x.shape())?, "upsample_nearest2x")
}

pub fn avg_pool_gpu(ctx: &GpuContext, x: &GpuTensor) -> Result<GpuTensor> {
    dispatch(ctx, x, avg_pool_out_shape(x.shape())?, "avg_pool2x2")
}

/// One invocation per element of the output `o`; the parameters are the input's shape.
fn dispatch(
    ctx: &GpuContext,
    x: &GpuTensor,
    o: [usize; 4],
    entry: &'static str,
) -> Result<GpuTensor> {
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
        entry,
        &params,
        &[Some(x.buffer())],
        out.buffer(),
        grid_1d(out.numel())?,
    )?;
    Ok(out)
}
