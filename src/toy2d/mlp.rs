//! The small ε-model of the 2D toys: an MLP on [x, y, timestep embedding(t)] with SiLU, trained by
//! `training/toy2d.py` and evaluated here on the CPU (a few thousand points per step, no GPU).
//!
//! Weights are torch's `nn.Linear` ones, `hidden.{i}.weight` [out, in] and `hidden.{i}.bias`
//! [out], then `out.weight`/`out.bias`. They are stored transposed ([in, out]) after loading, so
//! the forward pass is a row of axpy's over a contiguous output row, which the compiler turns into
//! SIMD (wasm simd128 in the browser) where a dot product's reduction would stay scalar.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::{read_tensors, HostTensor};
use crate::ops::embedding::timestep_cpu;

use super::distribution::DataConfig;

/// `config.json`'s `model`: the layer sizes and the timestep embedding.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MlpConfig {
    /// "mlp".
    pub kind: String,
    /// 2 (x, y).
    pub in_features: usize,
    /// The width of diffusers' `get_timestep_embedding`.
    pub time_embedding_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    /// Only 10000 (diffusers' default, which `ops::embedding` implements).
    pub max_period: f64,
    /// The widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// "silu".
    pub activation: String,
    /// 2 (ε̂_x, ε̂_y).
    pub out_features: usize,
}

/// A toy model folder's `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Toy2dConfig {
    pub model: MlpConfig,
    /// The generating parameters of the data it was trained on.
    pub data: DataConfig,
    /// What training did (steps, seconds, loss); informational.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl Toy2dConfig {
    /// Parses `config.json`; `source` names the file in errors.
    /// A mixture's weights and covariances are checked here, so that sampling its data cannot fail.
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let json = |message: String| Error::Json {
            path: source.into(),
            message,
        };
        let cfg: Self = serde_json::from_str(text).map_err(|e| json(e.to_string()))?;
        if let DataConfig::Mixture(m) = &cfg.data {
            m.check().map_err(|e| json(format!("`data`: {e}")))?;
        }
        Ok(cfg)
    }
}

impl MlpConfig {
    fn check(&self) -> Result<()> {
        let unsupported = |what: &str, value: String, supported: &str| {
            Err(Error::unsupported(what, value, supported))
        };
        if self.kind != "mlp" {
            return unsupported("toy model kind", self.kind.clone(), "mlp");
        }
        if self.activation != "silu" {
            return unsupported("activation", self.activation.clone(), "silu");
        }
        if self.max_period != 10000.0 {
            return unsupported("max_period", self.max_period.to_string(), "10000");
        }
        if self.in_features != 2 || self.out_features != 2 {
            return Err(Error::config(
                "in_features/out_features",
                format!(
                    "are {}/{}, a 2D toy model needs 2/2",
                    self.in_features, self.out_features
                ),
            ));
        }
        if self.time_embedding_dim < 2 || self.hidden.contains(&0) {
            return Err(Error::config(
                "hidden/time_embedding_dim",
                format!(
                    "widths must be ≥ 1 and the embedding ≥ 2 (got {:?} and {})",
                    self.hidden, self.time_embedding_dim
                ),
            ));
        }
        Ok(())
    }

    /// (name, in, out) of every layer, in order: `hidden.0` … then `out`.
    pub fn layers(&self) -> Vec<(String, usize, usize)> {
        let mut widths = vec![self.in_features + self.time_embedding_dim];
        widths.extend(&self.hidden);
        let mut layers: Vec<(String, usize, usize)> = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| (format!("hidden.{i}"), w[0], w[1]))
            .collect();
        layers.push((
            "out".into(),
            *widths.last().unwrap_or(&0),
            self.out_features,
        ));
        layers
    }
}

/// `nn.Linear`, its weight stored transposed.
#[derive(Debug, Clone)]
struct Linear {
    /// [in, out]
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    fn load(
        tensors: &mut HashMap<String, HostTensor>,
        prefix: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<Self> {
        let mut take = |name: &str, shape: Vec<usize>| -> Result<Vec<f32>> {
            let key = format!("{prefix}.{name}");
            let t = tensors.remove(&key).ok_or_else(|| Error::MissingTensor {
                key: key.clone(),
                expected: shape.clone(),
            })?;
            if t.shape != shape {
                return Err(Error::ShapeMismatch {
                    key,
                    expected: shape,
                    found: t.shape,
                });
            }
            let v = t.to_f32();
            if let Some((index, value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite {
                    key,
                    value: value.to_string(),
                    index,
                });
            }
            Ok(v)
        };
        let weight = take("weight", vec![outputs, inputs])?;
        let bias = take("bias", vec![outputs])?;
        let mut weight_t = vec![0.0; inputs * outputs];
        for o in 0..outputs {
            for i in 0..inputs {
                weight_t[i * outputs + o] = weight[o * inputs + i];
            }
        }
        Ok(Self {
            weight_t,
            bias,
            inputs,
            outputs,
        })
    }

    /// y = x Wᵀ + b for N rows of x.
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0; n * self.outputs];
        for (row, out) in x
            .chunks_exact(self.inputs)
            .zip(y.chunks_exact_mut(self.outputs))
        {
            out.copy_from_slice(&self.bias);
            for (&xi, w) in row.iter().zip(self.weight_t.chunks_exact(self.outputs)) {
                for (o, &wv) in out.iter_mut().zip(w) {
                    *o += xi * wv;
                }
            }
        }
        y
    }
}

/// SiLU(x) = x · sigmoid(x).
fn silu(v: &mut [f32]) {
    for x in v {
        *x /= 1.0 + (-*x).exp();
    }
}

/// The toy ε-model.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub config: MlpConfig,
    hidden: Vec<Linear>,
    out: Linear,
}

impl Mlp {
    /// The model from its `model.safetensors` bytes; every tensor of the architecture must be
    /// there with its shape, and no other (errors name the key and both shapes).
    pub fn from_safetensors(bytes: &[u8], config: &MlpConfig, source: &str) -> Result<Self> {
        config.check()?;
        let mut tensors = read_tensors(bytes, source)?;
        let mut layers = Vec::new();
        for (name, i, o) in config.layers() {
            layers.push(Linear::load(&mut tensors, &name, i, o)?);
        }
        if !tensors.is_empty() {
            let mut keys: Vec<String> = tensors.into_keys().collect();
            keys.sort();
            return Err(Error::UnexpectedTensors { keys });
        }
        let out = layers.pop().expect("layers() ends with `out`");
        Ok(Self {
            config: config.clone(),
            hidden: layers,
            out,
        })
    }

    /// The number of parameters.
    pub fn parameters(&self) -> usize {
        self.hidden
            .iter()
            .chain([&self.out])
            .map(|l| l.weight_t.len() + l.bias.len())
            .sum()
    }

    /// ε̂ for N points `x` (flat N×2) at timesteps `t` (one per point, or one for all).
    pub fn forward(&self, x: &[f32], t: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let n = x.len() / 2;
        let dim = c.time_embedding_dim;
        // 1. time: diffusers' sinusoidal embedding (the one CPU reference in ops::embedding)
        let mut emb = vec![0.0; t.len() * dim];
        timestep_cpu(t, dim, c.flip_sin_to_cos, c.freq_shift, &mut emb);
        // 2. input: [x, y, emb(t)]
        let width = 2 + dim;
        let mut h = vec![0.0; n * width];
        for (i, row) in h.chunks_exact_mut(width).enumerate() {
            row[..2].copy_from_slice(&x[2 * i..2 * i + 2]);
            let e = if t.len() == 1 { 0 } else { i };
            row[2..].copy_from_slice(&emb[e * dim..(e + 1) * dim]);
        }
        // 3. hidden layers with SiLU, then the linear output
        for layer in &self.hidden {
            h = layer.forward(&h, n);
            silu(&mut h);
        }
        self.out.forward(&h, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MlpConfig {
        MlpConfig {
            kind: "mlp".into(),
            in_features: 2,
            time_embedding_dim: 4,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            max_period: 10000.0,
            hidden: vec![3],
            activation: "silu".into(),
            out_features: 2,
        }
    }

    #[test]
    fn a_config_with_an_empty_or_singular_mixture_is_refused() {
        let model = r#""model": {"kind": "mlp", "in_features": 2, "time_embedding_dim": 4,
            "flip_sin_to_cos": true, "freq_shift": 0.0, "max_period": 10000.0, "hidden": [3],
            "activation": "silu", "out_features": 2}"#;
        for (data, why) in [
            (r#"{"kind": "mixture", "components": []}"#, "at least one"),
            (
                r#"{"kind": "mixture", "components": [{"weight": 1.0, "mean": [0, 0],
                    "cov": [[1.0, 2.0], [2.0, 1.0]]}]}"#,
                "positive definite",
            ),
        ] {
            let text = format!("{{{model}, \"data\": {data}}}");
            let err = Toy2dConfig::from_json(&text, "config.json").unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert!(err.to_string().contains("config.json"), "{err}");
        }
        let ok = r#"{"kind": "mixture", "components": [{"weight": 1.0, "mean": [0, 0],
            "cov": [[1.0, 0.0], [0.0, 1.0]]}]}"#;
        let cfg = Toy2dConfig::from_json(&format!("{{{model}, \"data\": {ok}}}"), "c").unwrap();
        assert_eq!(cfg.data.sample(5, 1).len(), 10);
    }

    #[test]
    fn a_wrong_shape_names_the_key() {
        let w = vec![0.0f32; 3 * 6];
        let b = vec![0.0f32; 3];
        let ow = vec![0.0f32; 2 * 4];
        let ob = vec![0.0f32; 2];
        let bytes = crate::io::write_tensors(&[
            ("hidden.0.weight", &[3, 6], &w),
            ("hidden.0.bias", &[3], &b),
            ("out.weight", &[2, 4], &ow),
            ("out.bias", &[2], &ob),
        ])
        .unwrap();
        let err = Mlp::from_safetensors(&bytes, &config(), "t").unwrap_err();
        assert!(err.to_string().contains("out.weight"), "{err}");
        assert!(err.to_string().contains("[2, 3]"), "{err}");
    }

    #[test]
    fn linear_matches_by_hand() {
        // y = W x + b with W = [[1, 2], [3, 4], [5, 6]], b = [0.5, -1, 2]
        let l = Linear {
            weight_t: vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0],
            bias: vec![0.5, -1.0, 2.0],
            inputs: 2,
            outputs: 3,
        };
        assert_eq!(l.forward(&[1.0, -1.0], 1), vec![-0.5, -2.0, 1.0]);
    }
}
