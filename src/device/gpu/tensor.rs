//! [`GpuTensor`]: a dense tensor in a pooled GPU buffer, what every GPU op reads and writes, and
//! the dispatch helpers the ops share.

use std::rc::Rc;

use crate::device::gpu::context::{GpuContext, PooledBuffer, Shader};
use crate::error::{Error, Result};

/// How a [`GpuTensor`] stores its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Only weights ([`GpuContext::f16_weights`]): a convolution's `w` and a matmul's `b`, whose
    /// kernels widen each value to f32 as they load it. Every other op reads and writes f32.
    F16,
}

/// A dense tensor in a pooled GPU storage buffer; clones share the buffer.
#[derive(Clone)]
pub struct GpuTensor {
    buf: Rc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl GpuTensor {
    /// An uninitialised f32 tensor from the pool (every op writes all of its output).
    pub fn empty(ctx: &GpuContext, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        Ok(Self {
            buf: ctx.alloc(n as u64 * 4)?,
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    /// An f16 tensor holding `data` rounded to nearest; the device needs `shader-f16` to read it.
    pub fn upload_f16(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Result<Self> {
        check_len(shape, data)?;
        if !ctx.shader_f16 {
            return Err(Error::Gpu(format!(
                "f16 tensors need the shader-f16 feature, which {} lacks",
                ctx.describe()
            )));
        }
        // Whole 4-byte words (WebGPU copies and bindings are 4-byte aligned): an odd count gets
        // one zero of padding that no kernel reads.
        let mut half: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        if half.len() % 2 == 1 {
            half.push(half::f16::ZERO);
        }
        let t = Self {
            buf: ctx.alloc(half.len() as u64 * 2)?,
            shape: shape.to_vec(),
            dtype: DType::F16,
        };
        ctx.write(t.buffer(), &half);
        Ok(t)
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

pub(crate) fn check_len(shape: &[usize], data: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape(
            "upload",
            format!("shape {shape:?} needs {n} values, got {}", data.len()),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{:?}", self.shape)?;
        if self.dtype == DType::F16 {
            write!(f, " f16")?;
        }
        Ok(())
    }
}

impl GpuTensor {
    /// The tensor's shape (also `crate::backend::Tensor::shape`).
    pub fn dims(&self) -> &[usize] {
        &self.shape
    }
}

/// The variant of `op`'s shader for its weights' type (`f32` or `f16`, compiled from one WGSL
/// file with different preludes), once its activation `input` is checked to be f32: only
/// weights may be f16.
pub fn weight_variant(
    op: &str,
    input: &GpuTensor,
    weights: &GpuTensor,
    f32: Shader,
    f16: Shader,
) -> Result<Shader> {
    if input.dtype != DType::F32 {
        return Err(Error::Gpu(format!(
            "{op}: the input must be f32 (only weights may be f16)"
        )));
    }
    Ok(match weights.dtype {
        DType::F32 => f32,
        DType::F16 => f16,
    })
}

/// A 1-D grid of 64-wide workgroups for `invocations`, folded into y past the per-dimension
/// limit (65535 workgroups); shaders rebuild the index as `gid.x + gid.y · nwg.x · 64`.
pub fn grid_1d(invocations: usize) -> Result<[u32; 3]> {
    let groups = invocations.div_ceil(64);
    let x = groups.min(65535);
    let y = groups.div_ceil(x.max(1));
    if y > 65535 {
        return Err(Error::Gpu(format!(
            "{invocations} invocations exceed one dispatch"
        )));
    }
    Ok([x as u32, y as u32, 1])
}
