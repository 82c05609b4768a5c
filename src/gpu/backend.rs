//! [`GpuBackend`]: the [`Backend`] ops dispatched as WGSL compute shaders.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::backend::{Backend, Conv2dParams, ConvEpilogue, MatmulSpec, Tensor};
use crate::error::{Error, Result};
use crate::gpu::context::{GpuContext, PooledBuffer};
use crate::ops::{attention, conv2d, elementwise, embedding, groupnorm, matmul, resample};

/// A dense f32 tensor in a pooled GPU storage buffer; clones share the buffer.
#[derive(Clone)]
pub struct GpuTensor {
    buf: Rc<PooledBuffer>,
    shape: Vec<usize>,
}

impl GpuTensor {
    /// An uninitialised tensor from the pool (every op writes all of its output).
    pub fn empty(ctx: &GpuContext, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        Ok(Self {
            buf: ctx.alloc(n as u64 * 4)?,
            shape: shape.to_vec(),
        })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{:?}", self.shape)
    }
}

impl Tensor for GpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
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
        self.ctx.describe()
    }

    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "upload",
                format!("shape {shape:?} needs {n} values, got {}", data.len()),
            ));
        }
        let t = GpuTensor::empty(&self.ctx, shape)?;
        self.ctx.write(t.buffer(), data);
        Ok(t)
    }

    async fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.ctx.check()?;
        self.ctx.read(t.buffer(), t.numel() as u64 * 4).await
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
