//! The CPU backend: plain Rust implementations of every op. It is the reference the GPU kernels
//! are tested against, and the fallback where WebGPU is missing.

use std::sync::Arc;

use crate::backend::{Backend, Conv2dParams, MatmulSpec, Tensor};
use crate::error::{Error, Result};
use crate::ops::{attention, conv2d, elementwise, embedding, groupnorm, matmul, resample};

/// A dense f32 tensor in host memory; clones share the data.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
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
            data: Arc::new(data),
        })
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape: shape.to_vec(),
            data: Arc::new(data),
        }
    }
}

impl Tensor for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
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
        let shape = conv2d::out_shape(&x.shape, &w.shape, bias.map(|b| b.shape()), p)?;
        let out = conv2d::cpu(
            &x.data,
            &x.shape,
            &w.data,
            &w.shape,
            bias.map(|b| b.data()),
            p,
        );
        Ok(CpuTensor::from_vec(&shape, out))
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
        let out = groupnorm::cpu(
            &x.data,
            &x.shape,
            &gamma.data,
            &beta.data,
            groups,
            eps,
            silu,
        );
        Ok(CpuTensor::from_vec(&x.shape, out))
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
        let out = matmul::cpu(
            &a.data,
            &b.data,
            bias.map(|t| t.data()),
            residual.map(|t| t.data()),
            out_len,
            spec,
        );
        Ok(CpuTensor::from_vec(out_shape, out))
    }

    fn softmax_rows(&self, x: &CpuTensor, cols: usize) -> Result<CpuTensor> {
        attention::check_softmax(&x.shape, cols)?;
        Ok(CpuTensor::from_vec(
            &x.shape,
            attention::softmax_cpu(&x.data, cols),
        ))
    }

    fn silu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::from_vec(
            &x.shape,
            elementwise::silu_cpu(&x.data),
        ))
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor, scale: f32) -> Result<CpuTensor> {
        elementwise::check_same("add", &a.shape, &b.shape)?;
        Ok(CpuTensor::from_vec(
            &a.shape,
            elementwise::add_cpu(&a.data, &b.data, scale),
        ))
    }

    fn affine(&self, x: &CpuTensor, mul: f32, add: f32) -> Result<CpuTensor> {
        Ok(CpuTensor::from_vec(
            &x.shape,
            elementwise::affine_cpu(&x.data, mul, add),
        ))
    }

    fn channel_modulate(
        &self,
        x: &CpuTensor,
        emb: &CpuTensor,
        shift_col: usize,
        scale_col: Option<usize>,
    ) -> Result<CpuTensor> {
        elementwise::check_modulate(&x.shape, &emb.shape, shift_col, scale_col)?;
        let out = elementwise::modulate_cpu(
            &x.data,
            &x.shape,
            &emb.data,
            emb.shape[1],
            shift_col,
            scale_col,
        );
        Ok(CpuTensor::from_vec(&x.shape, out))
    }

    fn concat_channels(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let shape = elementwise::check_concat(&a.shape, &b.shape)?;
        Ok(CpuTensor::from_vec(
            &shape,
            elementwise::concat_cpu(&a.data, &a.shape, &b.data, &b.shape),
        ))
    }

    fn concat_batch(&self, parts: &[CpuTensor]) -> Result<CpuTensor> {
        let shape = elementwise::check_concat_batch(parts.iter().map(|p| p.shape()))?;
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Ok(CpuTensor::from_vec(&shape, data))
    }

    fn upsample_nearest2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let shape = resample::out_shape(&x.shape)?;
        Ok(CpuTensor::from_vec(
            &shape,
            resample::cpu(&x.data, &x.shape),
        ))
    }

    fn timestep_embedding(
        &self,
        t: &CpuTensor,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<CpuTensor> {
        embedding::check_timestep(&t.shape, dim)?;
        let out = embedding::timestep_cpu(&t.data, dim, flip_sin_to_cos, freq_shift);
        Ok(CpuTensor::from_vec(&[t.shape[0], dim], out))
    }

    fn embedding(&self, table: &CpuTensor, ids: &CpuTensor) -> Result<CpuTensor> {
        let shape = embedding::check_lookup(&table.shape, &ids.shape)?;
        embedding::check_ids(&ids.data, table.shape[0])?;
        Ok(CpuTensor::from_vec(
            &shape,
            embedding::lookup_cpu(&table.data, shape[1], &ids.data),
        ))
    }
}
