//! The CPU backend: plain Rust implementations of every op. It is the reference the GPU kernels
//! are tested against, and the fallback where WebGPU is missing.

// The low-level parts live below the ops (`crate::device::cpu`); re-exported for the backend's
// users.
pub use crate::device::cpu::{pool, threads, transpose};

use std::sync::{Arc, OnceLock};

/// The vector instructions this build's CPU kernels use in a browser: wasm's 128-bit SIMD, or that
/// with relaxed SIMD's fused multiply-add (the second module `scripts/wasm_relaxed.mjs` builds,
/// which the page loads where the browser has relaxed SIMD). Natively the kernels pick AVX2/FMA
/// or SSE at run time.
pub const WASM_SIMD: &str = if cfg!(target_feature = "relaxed-simd") {
    "relaxed SIMD"
} else {
    "SIMD128"
};

use crate::backend::{
    AttentionWeights, Backend, BiasMode, Conv2dParams, ConvEpilogue, InputNorm, MatmulSpec,
    Strides, Tensor,
};
use crate::error::{Error, Result};
use crate::ops::{attention, conv2d, elementwise, embedding, groupnorm, matmul, resample};

/// A dense f32 tensor in host memory; clones share the data.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Arc<Storage>,
}

/// A tensor's values. Op outputs come from [`pool`] and go back to it when the last handle drops;
/// uploaded tensors (weights, inputs) are plain allocations.
#[derive(Debug)]
struct Storage {
    values: Vec<f32>,
    pooled: bool,
    /// For a convolution weight: its values in the order the CPU convolution reads them
    /// (`[Co, kh, kw, Ci]`), made on first use and kept with the weight.
    conv_rows: OnceLock<Vec<f32>>,
    /// The same for the direct convolution ([`conv2d::direct::pack_weight`]).
    conv_packed: OnceLock<Vec<f32>>,
    /// The same for Winograd's ([`conv2d::winograd::pack_weight`]), F(2×2) then F(4×4).
    conv_winograd: [OnceLock<Vec<f32>>; 2],
}

impl std::ops::Deref for Storage {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.values
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.pooled {
            pool::give(std::mem::take(&mut self.values));
        }
    }
}

impl CpuTensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("shape {shape:?} needs {n} values, got {}", data.len()),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            data: Arc::new(Storage {
                values: data,
                pooled: false,
                conv_rows: OnceLock::new(),
                conv_packed: OnceLock::new(),
                conv_winograd: Default::default(),
            }),
        })
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// An op output of `shape` computed by `fill`, which must write every element of a buffer
    /// taken from the pool (its old values are stale).
    pub(crate) fn compute(shape: &[usize], fill: impl FnOnce(&mut [f32])) -> Self {
        let mut values = pool::take(shape.iter().product());
        fill(&mut values);
        Self {
            shape: shape.to_vec(),
            data: Arc::new(Storage {
                values,
                pooled: true,
                conv_rows: OnceLock::new(),
                conv_packed: OnceLock::new(),
                conv_winograd: Default::default(),
            }),
        }
    }
}

impl Tensor for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The convolution of `x` by a SIMD kernel ([`conv2d::winograd`] or [`conv2d::direct`]), its
/// input normalised as it is read where `norm` is given, into a new tensor of `shape`; the
/// caller checked the shapes and chose `kernel`.
#[allow(clippy::too_many_arguments)]
fn simd_conv(
    x: &CpuTensor,
    norm: Option<conv2d::direct::Prologue<'_>>,
    w: &CpuTensor,
    bias: Option<&CpuTensor>,
    p: Conv2dParams,
    e: ConvEpilogue<'_, CpuTensor>,
    shape: &[usize],
    kernel: conv2d::CpuKernel,
) -> CpuTensor {
    let g = conv2d::direct::Geometry::new(&x.shape, &w.shape, p);
    let e = conv2d::direct::Epilogue {
        bias: bias.map(|b| &b.data[..]),
        channel_add: e.channel_add.map(|t| &t.data[..]),
        residual: e.residual.map(|t| &t.data[..]),
        scale: e.scale,
    };
    match kernel {
        conv2d::CpuKernel::Winograd(tile) => {
            let slot = match tile {
                conv2d::winograd::Tile::F2 => 0,
                conv2d::winograd::Tile::F4 => 1,
            };
            let packed = w.data.conv_winograd[slot]
                .get_or_init(|| conv2d::winograd::pack_weight(&w.data, &w.shape, tile));
            CpuTensor::compute(shape, |out| {
                conv2d::winograd::conv(&x.data, &g, tile, packed, norm, e, out)
            })
        }
        conv2d::CpuKernel::Direct(width) => {
            let packed = w
                .data
                .conv_packed
                .get_or_init(|| conv2d::direct::pack_weight(&w.data, &w.shape));
            CpuTensor::compute(shape, |out| {
                conv2d::direct::conv(&x.data, &g, packed, norm, e, width, out)
            })
        }
    }
}

/// A convolution's output shape, its epilogue checked against it, and the SIMD kernel that runs
/// it, if one does.
fn conv_plan(
    x: &CpuTensor,
    w: &CpuTensor,
    bias: Option<&CpuTensor>,
    p: Conv2dParams,
    e: &ConvEpilogue<'_, CpuTensor>,
) -> Result<([usize; 4], Option<conv2d::CpuKernel>)> {
    let shape = conv2d::out_shape(&x.shape, &w.shape, bias.map(|b| b.shape()), p)?;
    conv2d::check_epilogue(
        &shape,
        e.channel_add.map(|t| &t.shape[..]),
        e.residual.map(|t| &t.shape[..]),
    )?;
    Ok((shape, conv2d::cpu_kernel(&x.shape, &w.shape, &shape, p)))
}

/// The CPU backend. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<CpuTensor> {
        CpuTensor::new(shape, data.to_vec())
    }

    async fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.to_vec())
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        p: Conv2dParams,
    ) -> Result<CpuTensor> {
        self.conv2d_epilogue(x, w, bias, p, ConvEpilogue::none())
    }

    fn conv2d_epilogue(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        p: Conv2dParams,
        e: ConvEpilogue<'_, CpuTensor>,
    ) -> Result<CpuTensor> {
        let (shape, kernel) = conv_plan(x, w, bias, p, &e)?;
        if let Some(kernel) = kernel {
            return Ok(simd_conv(x, None, w, bias, p, e, &shape, kernel));
        }
        let w_rows = w
            .data
            .conv_rows
            .get_or_init(|| conv2d::weight_rows(&w.data, &w.shape));
        Ok(CpuTensor::compute(&shape, |out| {
            conv2d::cpu(
                &x.data,
                &x.shape,
                w_rows,
                &w.shape,
                bias.map(|b| &b.data[..]),
                p,
                out,
            );
            conv2d::epilogue_cpu(
                out,
                &shape,
                e.channel_add.map(|t| &t.data[..]),
                e.residual.map(|t| &t.data[..]),
                e.scale,
            );
        }))
    }

    fn group_norm_conv2d(
        &self,
        x: &CpuTensor,
        norm: InputNorm<'_, CpuTensor>,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        p: Conv2dParams,
        e: ConvEpilogue<'_, CpuTensor>,
    ) -> Result<CpuTensor> {
        let InputNorm {
            gamma,
            beta,
            groups,
            eps,
            silu,
        } = norm;
        groupnorm::check(&x.shape, &gamma.shape, &beta.shape, groups)?;
        let (shape, kernel) = conv_plan(x, w, bias, p, &e)?;
        let Some(kernel) = kernel else {
            // The GEMM paths read the input in place: normalise it first.
            let h = self.group_norm(x, gamma, beta, groups, eps, silu)?;
            return self.conv2d_epilogue(&h, w, bias, p, e);
        };
        let (n, c) = (x.shape[0], x.shape[1]);
        let mut affine = pool::take(2 * n * c);
        let pairs: &mut [[f32; 2]] = bytemuck::cast_slice_mut(&mut affine);
        groupnorm::channel_affine(
            &x.data,
            &x.shape,
            &gamma.data,
            &beta.data,
            groups,
            eps,
            pairs,
        );
        let norm = conv2d::direct::Prologue {
            affine: pairs,
            silu,
        };
        let y = simd_conv(x, Some(norm), w, bias, p, e, &shape, kernel);
        pool::give(affine);
        Ok(y)
    }

    fn group_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<CpuTensor> {
        groupnorm::check(&x.shape, &gamma.shape, &beta.shape, groups)?;
        Ok(CpuTensor::compute(&x.shape, |out| {
            groupnorm::cpu(
                &x.data,
                &x.shape,
                &gamma.data,
                &beta.data,
                groups,
                eps,
                silu,
                out,
            )
        }))
    }

    fn matmul(
        &self,
        a: &CpuTensor,
        b: &CpuTensor,
        bias: Option<&CpuTensor>,
        residual: Option<&CpuTensor>,
        out_shape: &[usize],
        spec: &MatmulSpec,
    ) -> Result<CpuTensor> {
        let out_len = out_shape.iter().product();
        matmul::check(
            a.numel(),
            b.numel(),
            bias.map(|t| t.shape()),
            residual.map(|t| t.numel()),
            out_len,
            spec,
        )?;
        Ok(CpuTensor::compute(out_shape, |out| {
            matmul::cpu(
                &a.data,
                &b.data,
                bias.map(|t| &t.data[..]),
                residual.map(|t| &t.data[..]),
                spec,
                out,
            )
        }))
    }

    fn softmax_rows(&self, x: &CpuTensor, cols: usize) -> Result<CpuTensor> {
        attention::check_softmax(&x.shape, cols)?;
        Ok(CpuTensor::compute(&x.shape, |out| {
            attention::softmax_cpu(&x.data, cols, out)
        }))
    }

    fn attention(
        &self,
        normed: &CpuTensor,
        residual: &CpuTensor,
        w: AttentionWeights<'_, CpuTensor>,
        heads: usize,
        rescale: f32,
    ) -> Result<CpuTensor> {
        let [n, c, p] = attention::check(normed, residual, &w, heads)?;
        // Channel-major throughout: q, k, v = W_qkv · x per sample ([3C, P]), the fused core
        // into [C, P], and to_out's W · o lands in NCHW with its bias and the residual.
        let project = |m: usize, out_scale: f32| MatmulSpec {
            m,
            n: p,
            k: c,
            batch: n,
            batch_inner: 1,
            a: Strides {
                outer: 0,
                ..Strides::row_major(m, c)
            },
            b: Strides::row_major(c, p),
            c: Strides::row_major(m, p),
            alpha: 1.0,
            out_scale,
            bias: BiasMode::PerRow,
        };
        let (to_qkv, to_out) = (project(3 * c, 1.0), project(c, 1.0 / rescale));
        matmul::check(
            w.qkv.numel(),
            normed.numel(),
            Some(w.qkv_bias.shape()),
            None,
            n * 3 * c * p,
            &to_qkv,
        )?;
        matmul::check(
            w.out.numel(),
            n * c * p,
            Some(w.out_bias.shape()),
            Some(residual.numel()),
            residual.numel(),
            &to_out,
        )?;
        let mut qkv = pool::take(n * 3 * c * p);
        let qkv_bias = Some(&w.qkv_bias.data[..]);
        matmul::cpu(&w.qkv.data, &normed.data, qkv_bias, None, &to_qkv, &mut qkv);
        let mut o = pool::take(n * c * p);
        let scale = 1.0 / ((c / heads) as f32).sqrt();
        attention::core_cpu(&qkv, [n, c, p], heads, scale, &mut o);
        pool::give(qkv);
        let y = CpuTensor::compute(&normed.shape, |out| {
            let (bias, res) = (Some(&w.out_bias.data[..]), Some(&residual.data[..]));
            matmul::cpu(&w.out.data, &o, bias, res, &to_out, out)
        });
        pool::give(o);
        Ok(y)
    }

    fn silu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::compute(&x.shape, |out| {
            elementwise::silu_cpu(&x.data, out)
        }))
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor, scale: f32) -> Result<CpuTensor> {
        elementwise::check_same("add", &a.shape, &b.shape)?;
        Ok(CpuTensor::compute(&a.shape, |out| {
            elementwise::add_cpu(&a.data, &b.data, scale, out)
        }))
    }

    fn affine(&self, x: &CpuTensor, mul: f32, add: f32) -> Result<CpuTensor> {
        Ok(CpuTensor::compute(&x.shape, |out| {
            elementwise::affine_cpu(&x.data, mul, add, out)
        }))
    }

    fn channel_modulate(
        &self,
        x: &CpuTensor,
        emb: &CpuTensor,
        shift_col: usize,
        scale_col: Option<usize>,
    ) -> Result<CpuTensor> {
        elementwise::check_modulate(&x.shape, &emb.shape, shift_col, scale_col)?;
        Ok(CpuTensor::compute(&x.shape, |out| {
            elementwise::modulate_cpu(
                &x.data,
                &x.shape,
                &emb.data,
                emb.shape[1],
                shift_col,
                scale_col,
                out,
            )
        }))
    }

    fn concat_channels(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let shape = elementwise::check_concat(&a.shape, &b.shape)?;
        Ok(CpuTensor::compute(&shape, |out| {
            elementwise::concat_cpu(&a.data, &a.shape, &b.data, &b.shape, out)
        }))
    }

    fn concat_batch(&self, parts: &[CpuTensor]) -> Result<CpuTensor> {
        let shape = elementwise::check_concat_batch(parts.iter().map(|p| p.shape()))?;
        Ok(CpuTensor::compute(&shape, |out| {
            let mut at = 0;
            for p in parts {
                out[at..at + p.data.len()].copy_from_slice(&p.data);
                at += p.data.len();
            }
        }))
    }

    fn upsample_nearest2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let shape = resample::out_shape(&x.shape)?;
        Ok(CpuTensor::compute(&shape, |out| {
            resample::cpu(&x.data, &x.shape, out)
        }))
    }

    fn avg_pool2x2(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let shape = resample::avg_pool_out_shape(&x.shape)?;
        Ok(CpuTensor::compute(&shape, |out| {
            resample::avg_pool_cpu(&x.data, &x.shape, out)
        }))
    }

    fn timestep_embedding(
        &self,
        t: &CpuTensor,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<CpuTensor> {
        embedding::check_timestep(&t.shape, dim)?;
        Ok(CpuTensor::compute(&[t.shape[0], dim], |out| {
            embedding::timestep_cpu(&t.data, dim, flip_sin_to_cos, freq_shift, out)
        }))
    }

    fn embedding(&self, table: &CpuTensor, ids: &CpuTensor) -> Result<CpuTensor> {
        let shape = embedding::check_lookup(&table.shape, &ids.shape)?;
        embedding::check_ids(&ids.data, table.shape[0])?;
        Ok(CpuTensor::compute(&shape, |out| {
            embedding::lookup_cpu(&table.data, shape[1], &ids.data, out)
        }))
    }
}
