//! Samples scored as the model cards score them (training/evaluate.py): a small CNN classifier
//! trained once on the real training set gives each image 128 features and 10 logits; FID is the
//! Fréchet distance between Gaussians fitted to the samples' features and to the held-out
//! split's (Heusel et al. 2017), and a class-conditional model is also scored by how often the
//! classifier recognises the class it was asked for.
//!
//! The classifier runs on the CPU through the engine's own conv2d ([`crate::ops::conv2d::cpu`]),
//! with each BatchNorm folded into the convolution before it (eval mode: running statistics).
//! The held-out side is precomputed (training/heldout_stats.py: features' mean and covariance,
//! and the FID floor at each sample count), so evaluating needs neither PyTorch nor the dataset.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use safetensors::{Dtype, SafeTensors};

use crate::backend::Conv2dParams;
use crate::error::{Error, Result};
use crate::ops::conv2d;

/// One stage of the classifier's body.
#[derive(Debug)]
enum Layer {
    /// 3×3 'same' convolution (BatchNorm folded in), then ReLU.
    ConvRelu {
        w: Vec<f32>,
        ws: [usize; 4],
        b: Vec<f32>,
    },
    /// 2×2 max pooling, stride 2.
    MaxPool,
}

/// training/evaluate.py's `Classifier`: three stages of (conv, BN, ReLU) × 2 + max-pool, a
/// 64→128 conv + ReLU, global average pooling (the features), and a linear head.
#[derive(Debug)]
pub struct Classifier {
    body: Vec<Layer>,
    head_w: Vec<f32>,
    head_b: Vec<f32>,
    /// Input channels (1 for Fashion-MNIST, 3 for emoji).
    pub in_channels: usize,
    /// Class names, from the classifier's `.json`.
    pub classes: Vec<String>,
    /// The input size it was trained at (square).
    pub image_size: usize,
    pub features: usize,
}

/// BatchNorm's ε in PyTorch's default.
const BN_EPS: f32 = 1e-5;

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A tensor's shape and values.
type Values = (Vec<usize>, Vec<f64>);

/// f32, f64 or i64 tensors of a safetensors file as f64, by name.
fn tensors(bytes: &[u8], source: &str) -> Result<HashMap<String, Values>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: source.into(),
        message: format!("{e:?}"),
    })?;
    let mut out = HashMap::new();
    for (name, v) in st.tensors() {
        let raw = v.data();
        let data: Vec<f64> = match v.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
                .collect(),
            _ => continue,
        };
        out.insert(name, (v.shape().to_vec(), data));
    }
    Ok(out)
}

/// The `.json` beside a `.safetensors`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    path.with_file_name(format!("{stem}{suffix}"))
}

impl Classifier {
    /// Loads `<name>.safetensors` (PyTorch's state dict) and the class names from `<name>.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let source = path.display().to_string();
        let t = tensors(&read_file(path)?, &source)?;
        let get = |key: &str| -> Result<&Values> {
            t.get(key).ok_or_else(|| Error::MissingTensor {
                key: format!("{source}: {key}"),
                expected: vec![],
            })
        };
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mut body = Vec::new();
        // A conv `c` followed by BatchNorm `bn`: w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β.
        let conv = |c: &str, bn: Option<&str>| -> Result<Layer> {
            let (ws, w) = get(&format!("{c}.weight"))?;
            let (_, b) = get(&format!("{c}.bias"))?;
            let &[co, ci, kh, kw] = ws.as_slice() else {
                return Err(Error::input(c, format!("weight shape {ws:?} is not 4-D")));
            };
            let (mut w, mut b) = (f32s(w), f32s(b));
            if let Some(bn) = bn {
                let (_, g) = get(&format!("{bn}.weight"))?;
                let (_, beta) = get(&format!("{bn}.bias"))?;
                let (_, mu) = get(&format!("{bn}.running_mean"))?;
                let (_, var) = get(&format!("{bn}.running_var"))?;
                for o in 0..co {
                    let s = g[o] as f32 / (var[o] as f32 + BN_EPS).sqrt();
                    w[o * ci * kh * kw..(o + 1) * ci * kh * kw]
                        .iter_mut()
                        .for_each(|x| *x *= s);
                    b[o] = (b[o] - mu[o] as f32) * s + beta[o] as f32;
                }
            }
            Ok(Layer::ConvRelu {
                // The order conv2d::cpu reads.
                w: conv2d::weight_rows(&w, ws),
                ws: [co, ci, kh, kw],
                b,
            })
        };
        for stage in 0..3 {
            body.push(conv(
                &format!("body.{stage}.0"),
                Some(&format!("body.{stage}.1")),
            )?);
            body.push(conv(
                &format!("body.{stage}.3"),
                Some(&format!("body.{stage}.4")),
            )?);
            body.push(Layer::MaxPool);
        }
        body.push(conv("body.3", None)?);
        let (hs, hw) = get("head.weight")?;
        let (_, hb) = get("head.bias")?;
        let in_channels = match &body[0] {
            Layer::ConvRelu { ws, .. } => ws[1],
            Layer::MaxPool => unreachable!("the body starts with a conv"),
        };
        let meta_path = sibling(path, ".json");
        let meta: serde_json::Value =
            serde_json::from_slice(&read_file(&meta_path)?).map_err(|e| Error::Json {
                path: meta_path.display().to_string(),
                message: e.to_string(),
            })?;
        let classes = meta["classes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            body,
            head_w: f32s(hw),
            head_b: f32s(hb),
            in_channels,
            classes,
            image_size: 32,
            features: hs[1],
        })
    }

    /// The 128 features of each image of an N×C×H×W batch in [-1, 1] (N×128).
    pub fn features(&self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let [n, c, mut h, mut w] = shape;
        if c != self.in_channels {
            return Err(Error::input(
                "images",
                format!(
                    "{c} channels, the classifier takes {} (is it the right dataset's?)",
                    self.in_channels
                ),
            ));
        }
        if images.len() != n * c * h * w {
            return Err(Error::input("images", "length does not match the shape"));
        }
        let mut x = images.to_vec();
        let mut ch = c;
        for layer in &self.body {
            match layer {
                Layer::ConvRelu { w: wt, ws, b } => {
                    let mut out = vec![0f32; n * ws[0] * h * w];
                    conv2d::cpu(
                        &x,
                        &[n, ch, h, w],
                        wt,
                        ws,
                        Some(b),
                        Conv2dParams::same(3),
                        &mut out,
                    );
                    out.iter_mut().for_each(|v| *v = v.max(0.0));
                    x = out;
                    ch = ws[0];
                }
                Layer::MaxPool => {
                    let (ho, wo) = (h / 2, w / 2);
                    let mut out = vec![0f32; n * ch * ho * wo];
                    for p in 0..n * ch {
                        let src = &x[p * h * w..(p + 1) * h * w];
                        for i in 0..ho {
                            for j in 0..wo {
                                let at = |di: usize, dj: usize| src[(2 * i + di) * w + 2 * j + dj];
                                out[(p * ho + i) * wo + j] =
                                    at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                            }
                        }
                    }
                    x = out;
                    (h, w) = (ho, wo);
                }
            }
        }
        // Global average pooling.
        let plane = h * w;
        Ok(x.chunks_exact(plane)
            .map(|p| p.iter().sum::<f32>() / plane as f32)
            .collect())
    }

    /// The head's logits (N×classes) from [`Classifier::features`].
    pub fn logits(&self, features: &[f32]) -> Vec<f32> {
        let k = self.head_b.len();
        features
            .chunks_exact(self.features)
            .flat_map(|f| {
                (0..k).map(move |o| {
                    self.head_b[o]
                        + f.iter()
                            .zip(&self.head_w[o * self.features..(o + 1) * self.features])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                })
            })
            .collect()
    }
}

/// The held-out split in feature space, and the FID floor per sample count.
#[derive(Debug, Clone)]
pub struct HeldOut {
    pub mean: Vec<f64>,
    /// d×d, row-major.
    pub cov: Vec<f64>,
    pub count: usize,
    /// FID of n real training images against the held-out split, by n.
    pub floors: BTreeMap<usize, f64>,
}

impl HeldOut {
    /// `<name>.heldout.safetensors` and `<name>.heldout.json` beside the classifier `<name>.safetensors`.
    pub fn load(classifier: &Path) -> Result<Self> {
        let path = sibling(classifier, ".heldout.safetensors");
        let source = path.display().to_string();
        let t = tensors(&read_file(&path)?, &source)?;
        let get = |k: &str| {
            t.get(k).cloned().ok_or_else(|| Error::MissingTensor {
                key: format!("{source}: {k}"),
                expected: vec![],
            })
        };
        let (_, mean) = get("mean")?;
        let (cs, cov) = get("cov")?;
        if cs != [mean.len(), mean.len()] {
            return Err(Error::input(
                "cov",
                format!("shape {cs:?}, the mean has {}", mean.len()),
            ));
        }
        let count = get("count")?.1.first().copied().unwrap_or(0.0) as usize;
        let jpath = sibling(classifier, ".heldout.json");
        let meta: serde_json::Value =
            serde_json::from_slice(&read_file(&jpath)?).map_err(|e| Error::Json {
                path: jpath.display().to_string(),
                message: e.to_string(),
            })?;
        let floors = meta["floor_fid"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            mean,
            cov,
            count,
            floors,
        })
    }

    /// FID of `features` (N×d) against the held-out split.
    pub fn fid(&self, features: &[f32]) -> Result<f64> {
        let d = self.mean.len();
        let f: Vec<f64> = features.iter().map(|&x| f64::from(x)).collect();
        let (m, c) = mean_cov(&f, d)?;
        Ok(frechet(&m, &c, &self.mean, &self.cov))
    }
}

/// Mean and unbiased covariance (as `torch.cov`) of N×d rows.
pub fn mean_cov(rows: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = rows.len() / d.max(1);
    if n < 2 || rows.len() != n * d {
        return Err(Error::input(
            "features",
            format!(
                "FID needs at least 2 samples of {d} features, got {} values",
                rows.len()
            ),
        ));
    }
    let mut mean = vec![0f64; d];
    for r in rows.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; d * d];
    for r in rows.chunks_exact(d) {
        for i in 0..d {
            let a = r[i] - mean[i];
            for j in 0..d {
                cov[i * d + j] += a * (r[j] - mean[j]);
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
    Ok((mean, cov))
}

/// |μ₁ − μ₂|² + Tr(S₁ + S₂ − 2 (S₁ S₂)^½), with Tr (S₁S₂)^½ = Σ √λ(S₁^½ S₂ S₁^½) (symmetric, so a
/// symmetric eigensolver is exact), as training/evaluate.py's `fid`.
pub fn frechet(m1: &[f64], s1: &[f64], m2: &[f64], s2: &[f64]) -> f64 {
    let d = m1.len();
    let s1 = DMatrix::from_row_slice(d, d, s1);
    let s2 = DMatrix::from_row_slice(d, d, s2);
    let e = SymmetricEigen::new(s1.clone());
    let sqrt_w = DVector::from_iterator(d, e.eigenvalues.iter().map(|&w| w.max(0.0).sqrt()));
    let r1 = &e.eigenvectors * DMatrix::from_diagonal(&sqrt_w) * e.eigenvectors.transpose();
    let inner = &r1 * &s2 * &r1;
    // Symmetrise against rounding before the symmetric solver.
    let inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|&w| w.max(0.0).sqrt())
        .sum();
    let dm: f64 = m1.iter().zip(m2).map(|(a, b)| (a - b).powi(2)).sum();
    dm + s1.trace() + s2.trace() - 2.0 * tr_sqrt
}

/// Area-average an N×C×H×W batch down by an integer factor (a 64×64 sample scored by a 32×32
/// classifier). training/evaluate.py resizes with PIL's Lanczos through 8-bit pixels instead, so
/// FIDs of resized samples are close to, not equal to, the cards'.
pub fn downsample(images: &[f32], shape: [usize; 4], factor: usize) -> (Vec<f32>, [usize; 4]) {
    let [n, c, h, w] = shape;
    let (ho, wo) = (h / factor, w / factor);
    let mut out = vec![0f32; n * c * ho * wo];
    for p in 0..n * c {
        for i in 0..ho {
            for j in 0..wo {
                let mut s = 0.0;
                for di in 0..factor {
                    for dj in 0..factor {
                        s += images[(p * h + i * factor + di) * w + j * factor + dj];
                    }
                }
                out[(p * ho + i) * wo + j] = s / (factor * factor) as f32;
            }
        }
    }
    (out, [n, c, ho, wo])
}
