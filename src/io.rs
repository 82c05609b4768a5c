//! Reading and writing the CLI's tensor files (`.safetensors` with f32, f16, bf16 or integer
//! tensors), with errors that name the file, the tensor and what was expected.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One tensor read from a file: its shape and values (floats as f32, integers as i64).
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }

    /// Values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as i64; floats must be whole numbers.
    pub fn to_i64(&self, name: &str) -> Result<Vec<i64>> {
        match &self.data {
            HostData::I64(v) => Ok(v.clone()),
            HostData::F32(v) => v
                .iter()
                .map(|&x| {
                    if x.fract() == 0.0 && x.is_finite() {
                        Ok(x as i64)
                    } else {
                        Err(Error::input(name, format!("value {x} is not an integer")))
                    }
                })
                .collect(),
        }
    }
}

fn decode(name: &str, v: &TensorView) -> Result<HostData> {
    let raw = v.data();
    Ok(match v.dtype() {
        Dtype::F32 => HostData::F32(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F64 => HostData::F32(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        Dtype::F16 => HostData::F32(
            raw.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => HostData::F32(
            raw.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::I64 => HostData::I64(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        Dtype::I32 => HostData::I64(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        ),
        other => {
            return Err(Error::input(
                name,
                format!("dtype {other:?} is not supported (use F32, F16, BF16, I64 or I32)"),
            ))
        }
    })
}

/// Parses every tensor of a safetensors buffer; `source` names the file in errors.
pub fn read_tensors(bytes: &[u8], source: &str) -> Result<HashMap<String, HostTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: source.into(),
        message: format!("{e:?}"),
    })?;
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = decode(&name, &v)?;
            Ok((
                name,
                HostTensor {
                    shape: v.shape().to_vec(),
                    data,
                },
            ))
        })
        .collect()
}

/// Serialises f32 tensors to a safetensors buffer.
pub fn write_tensors(tensors: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.to_vec(), bytemuck::cast_slice(data))
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Other(format!("tensor `{name}`: {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::Other(format!("writing safetensors: {e:?}")))
}

/// Relative L2 error `‖a − b‖ / ‖b‖` (the metric of the golden tests).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
