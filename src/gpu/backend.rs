//! [`GpuBackend`]: the [`Backend`] ops dispatched as WGSL compute shaders.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::backend::{Backend, Conv2dParams, ConvEpilogue, MatmulSpec, Tensor};
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, PooledBuffer, Shader};
use crate::ops::{attention, conv2d, elementwise, embedding, groupnorm, matmul, resample};

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

fn check_len(shape: &[usize], data: &[f32]) -> Result<()> {
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

impl Tensor for GpuTensor {
    fn shape(&self) -> &[usize] {
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

/// The GPU backend: a shared [`GpuContext`] plus small per-model caches.
#[derive(Clone)]
pub struct GpuBackend {
    pub ctx: Rc<GpuContext>,
    freqs: Rc<RefCell<HashMap<(usize, u32), GpuTensor>>>,
}

impl GpuBackend {
    pub async fn new() -> Result<Self> {
        Ok(Self::from_context(Rc::new(GpuContext::new().await?)))
    }

    pub fn from_context(ctx: Rc<GpuContext>) -> Self {
        Self {
            ctx,
            freqs: Rc::default(),
        }
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn name(&self) -> String {
        let name = self.ctx.describe();
        match (
            self.ctx.f16_weights.get(),
            self.ctx.f16_arith.get(),
            self.ctx.tiled.get(),
        ) {
            (false, _, _) => name,
            (true, false, _) => format!("{name}, f16 weights"),
            (true, true, true) => format!("{name}, f16 weights and convolution arithmetic"),
            (true, true, false) => {
                format!("{name}, f16 weights (f16 arithmetic is the tiled kernels' only)")
            }
        }
    }

    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        check_len(shape, data)?;
        let t = GpuTensor::empty(&self.ctx, shape)?;
        self.ctx.write(t.buffer(), data);
        Ok(t)
    }

    fn upload_weight(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        if self.ctx.f16_weights.get() {
            GpuTensor::upload_f16(&self.ctx, shape, data)
        } else {
            self.upload(shape, data)
        }
    }

    async fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.ctx.check()?;
        match t.dtype {
            DType::F32 => self.ctx.read(t.buffer(), t.numel() as u64 * 4).await,
            DType::F16 => {
                let words = self.ctx.read(t.buffer(), t.buffer().size()).await?;
                let half: &[half::f16] = bytemuck::cast_slice(&words);
                Ok(half[..t.numel()].iter().map(|v| v.to_f32()).collect())
            }
        }
    }

    fn conv2d(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        p: Conv2dParams,
    ) -> Result<GpuTensor> {
        conv2d::gpu(&self.ctx, x, w, bias, p, ConvEpilogue::none())
    }

    fn conv2d_epilogue(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        p: Conv2dParams,
        e: ConvEpilogue<'_, GpuTensor>,
    ) -> Result<GpuTensor> {
        conv2d::gpu(&self.ctx, x, w, bias, p, e)
    }

    fn group_norm(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<GpuTensor> {
        groupnorm::gpu(&self.ctx, x, gamma, beta, groups, eps, silu)
    }

    fn matmul(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: Option<&GpuTensor>,
        residual: Option<&GpuTensor>,
        out_shape: &[usize],
        spec: &MatmulSpec,
    ) -> Result<GpuTensor> {
        matmul::gpu(&self.ctx, a, b, bias, residual, out_shape, spec)
    }

    fn softmax_rows(&self, x: &GpuTensor, cols: usize) -> Result<GpuTensor> {
        attention::softmax_gpu(&self.ctx, x, cols)
    }

    fn silu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        elementwise::silu_gpu(&self.ctx, x)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor, scale: f32) -> Result<GpuTensor> {
        elementwise::add_gpu(&self.ctx, a, b, scale)
    }

    fn affine(&self, x: &GpuTensor, mul: f32, add: f32) -> Result<GpuTensor> {
        elementwise::affine_gpu(&self.ctx, x, mul, add)
    }

    fn channel_modulate(
        &self,
        x: &GpuTensor,
        emb: &GpuTensor,
        shift_col: usize,
        scale_col: Option<usize>,
    ) -> Result<GpuTensor> {
        elementwise::modulate_gpu(&self.ctx, x, emb, shift_col, scale_col)
    }

    fn concat_channels(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        elementwise::concat_gpu(&self.ctx, a, b)
    }

    fn concat_batch(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let shape = elementwise::check_concat_batch(parts.iter().map(|p| p.shape()))?;
        let out = GpuTensor::empty(&self.ctx, &shape)?;
        let mut offset = 0u64;
        for p in parts {
            let bytes = p.numel() as u64 * 4;
            self.ctx.copy(p.buffer(), 0, out.buffer(), offset, bytes);
            offset += bytes;
        }
        Ok(out)
    }

    fn upsample_nearest2x(&self, x: &GpuTensor) -> Result<GpuTensor> {
        resample::gpu(&self.ctx, x)
    }

    fn avg_pool2x2(&self, x: &GpuTensor) -> Result<GpuTensor> {
        resample::avg_pool_gpu(&self.ctx, x)
    }

    fn timestep_embedding(
        &self,
        t: &GpuTensor,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<GpuTensor> {
        let key = (dim, freq_shift.to_bits());
        let cached = self.freqs.borrow().get(&key).cloned();
        let freqs = match cached {
            Some(f) => f,
            None => {
                let f = embedding::frequencies(dim, freq_shift);
                let f =
                    self.upload(&[f.len().max(1)], &if f.is_empty() { vec![0.0] } else { f })?;
                self.freqs.borrow_mut().insert(key, f.clone());
                f
            }
        };
        embedding::timestep_gpu(&self.ctx, t, &freqs, dim, flip_sin_to_cos)
    }

    fn embedding(&self, table: &GpuTensor, ids: &GpuTensor) -> Result<GpuTensor> {
        embedding::lookup_gpu(&self.ctx, table, ids)
    }
}
