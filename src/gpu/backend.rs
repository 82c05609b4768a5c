//! [`GpuBackend`]: the [`Backend`] ops dispatched as WGSL compute shaders.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::backend::{Backend, Conv2dParams, ConvEpilogue, MatmulSpec, Tensor};
use crate::device::gpu::context::GpuContext;
use crate::device::gpu::tensor::{check_len, DType, GpuTensor};
use crate::error::Result;
use crate::ops::{attention, conv2d, elementwise, embedding, groupnorm, matmul, resample};

impl Tensor for GpuTensor {
    fn shape(&self) -> &[usize] {
        self.dims()
    }
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
        match t.dtype() {
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
