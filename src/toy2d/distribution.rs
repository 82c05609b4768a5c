//! The 2D data distributions: a Gaussian mixture (with its exact noised density and ε), two moons
//! and a swiss roll, each sampled from seeded Philox noise.
//!
//! The moons and swiss roll use the formulas and parameters of `training/toy2d.py` (which keeps
//! them in each model's `config.json`, the [`DataConfig`] here), so the points the page draws
//! faintly are the distribution the MLP was trained on. The random numbers differ (Philox here,
//! torch's generator there); the distribution does not.
//!
//! The mixture needs no training: under the variance-preserving forward process
//! x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, each component stays Gaussian, so
//! p_t(x) = Σ_k w_k N(x; √ᾱ_t μ_k, ᾱ_t Σ_k + (1−ᾱ_t) I), and the ε-prediction a perfect model
//! would make is ε̂(x, t) = E[ε | x_t = x] = −√(1−ᾱ_t) ∇ log p_t(x) (Tweedie's formula; Song et
//! al. 2021, "Score-based generative modeling through SDEs", eq. 7 and appendix B). Everything
//! is in f64, with the responsibilities through log-sum-exp, so far-away points (x_T ≈ ±4, tight
//! components at t ≈ 0) neither underflow nor divide 0 by 0.

use serde::Deserialize;

use crate::noise;

/// A symmetric 2×2 matrix [[a, b], [b, c]] (a covariance).
pub type Cov = [[f64; 2]; 2];

/// One Gaussian of a mixture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Component {
    /// Mixing weight w_k (the weights are normalised, so any positive numbers do).
    pub weight: f64,
    pub mean: [f64; 2],
    /// Σ_k, symmetric positive definite.
    pub cov: Cov,
}

/// Σ_k w_k N(μ_k, Σ_k).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GaussianMixture {
    pub components: Vec<Component>,
}

/// A 2×2 Gaussian ready to evaluate: its mean, inverse covariance and log normaliser.
struct Gauss {
    log_w: f64,
    mean: [f64; 2],
    inv: Cov,
    /// −½ ln((2π)² det Σ)
    log_norm: f64,
}

impl Gauss {
    fn new(log_w: f64, mean: [f64; 2], cov: Cov) -> Self {
        let [[a, b], [_, c]] = cov;
        let det = a * c - b * b;
        Self {
            log_w,
            mean,
            inv: [[c / det, -b / det], [-b / det, a / det]],
            log_norm: -(2.0 * std::f64::consts::PI).ln() - 0.5 * det.ln(),
        }
    }

    /// (ln w + ln N(x), Σ⁻¹ (x − μ))
    fn eval(&self, x: [f64; 2]) -> (f64, [f64; 2]) {
        let d = [x[0] - self.mean[0], x[1] - self.mean[1]];
        let p = [
            self.inv[0][0] * d[0] + self.inv[0][1] * d[1],
            self.inv[1][0] * d[0] + self.inv[1][1] * d[1],
        ];
        let maha = d[0] * p[0] + d[1] * p[1];
        (self.log_w + self.log_norm - 0.5 * maha, p)
    }
}

impl GaussianMixture {
    /// The page's mixture: six anisotropic components of unequal weight, means within ±2.
    pub fn page_default() -> Self {
        let c = |weight, mean, cov| Component { weight, mean, cov };
        Self {
            components: vec![
                c(0.22, [-1.5, 1.1], [[0.09, 0.05], [0.05, 0.06]]),
                c(0.14, [1.4, 1.3], [[0.03, 0.0], [0.0, 0.14]]),
                c(0.20, [0.1, -1.5], [[0.22, -0.07], [-0.07, 0.05]]),
                c(0.10, [1.8, -0.9], [[0.02, 0.0], [0.0, 0.02]]),
                c(0.24, [-1.5, -1.0], [[0.05, 0.03], [0.03, 0.09]]),
                c(0.10, [0.2, 0.5], [[0.03, -0.01], [-0.01, 0.04]]),
            ],
        }
    }

    /// The weights, normalised to sum to 1.
    pub fn weights(&self) -> Vec<f64> {
        let total: f64 = self.components.iter().map(|c| c.weight).sum();
        self.components.iter().map(|c| c.weight / total).collect()
    }

    /// E[x₀] = Σ w_k μ_k.
    pub fn mean(&self) -> [f64; 2] {
        let mut m = [0.0; 2];
        for (w, c) in self.weights().into_iter().zip(&self.components) {
            m[0] += w * c.mean[0];
            m[1] += w * c.mean[1];
        }
        m
    }

    /// Cov[x₀] = Σ w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ (the law of total covariance).
    pub fn covariance(&self) -> Cov {
        let m = self.mean();
        let mut s = [[0.0; 2]; 2];
        for (w, c) in self.weights().into_iter().zip(&self.components) {
            for (i, row) in s.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v += w * (c.cov[i][j] + c.mean[i] * c.mean[j]);
                }
            }
        }
        for (i, row) in s.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v -= m[i] * m[j];
            }
        }
        s
    }

    /// The components of p_t: N(√ᾱ μ_k, ᾱ Σ_k + (1−ᾱ) I).
    fn noised(&self, alpha_bar: f64) -> Vec<Gauss> {
        let (sa, var) = (alpha_bar.sqrt(), 1.0 - alpha_bar);
        self.weights()
            .into_iter()
            .zip(&self.components)
            .map(|(w, c)| {
                let cov = [
                    [alpha_bar * c.cov[0][0] + var, alpha_bar * c.cov[0][1]],
                    [alpha_bar * c.cov[1][0], alpha_bar * c.cov[1][1] + var],
                ];
                Gauss::new(w.ln(), [sa * c.mean[0], sa * c.mean[1]], cov)
            })
            .collect()
    }

    /// ln p_t(x) under the forward process at ᾱ (ᾱ = 1: the data density).
    pub fn log_density(&self, x: [f64; 2], alpha_bar: f64) -> f64 {
        let logs: Vec<f64> = self.noised(alpha_bar).iter().map(|g| g.eval(x).0).collect();
        log_sum_exp(&logs)
    }

    /// ∇ ln p_t(x) = −Σ_k r_k(x) C_k⁻¹ (x − m_k), with r_k the responsibilities (softmax of the
    /// components' log densities).
    pub fn score(&self, x: [f64; 2], alpha_bar: f64) -> [f64; 2] {
        score_of(&self.noised(alpha_bar), x)
    }

    /// The exact ε-prediction for N×2 points `x` (flat, the model's VP-scale input) at ᾱ:
    /// ε̂ = −√(1−ᾱ) ∇ ln p_t(x).
    pub fn eps(&self, x: &[f32], alpha_bar: f64) -> Vec<f32> {
        let gs = self.noised(alpha_bar);
        let s = (1.0 - alpha_bar).sqrt();
        x.chunks_exact(2)
            .flat_map(|p| {
                let g = score_of(&gs, [f64::from(p[0]), f64::from(p[1])]);
                [(-s * g[0]) as f32, (-s * g[1]) as f32]
            })
            .collect()
    }

    /// The component most likely to have produced each clean point (the argmax of w_k N(x; μ_k,
    /// Σ_k)).
    pub fn assign(&self, x: &[f32]) -> Vec<usize> {
        let gs = self.noised(1.0);
        x.chunks_exact(2)
            .map(|p| {
                let x = [f64::from(p[0]), f64::from(p[1])];
                gs.iter()
                    .map(|g| g.eval(x).0)
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(k, _)| k)
            })
            .collect()
    }

    /// `n` points (flat N×2): a component by weight, then μ_k + L_k z with L_k L_kᵀ = Σ_k.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let u = uniforms(seed, DATA_UNIFORM_STREAM, n);
        let z = noise::randn(seed, DATA_NORMAL_STREAM, 2 * n);
        let weights = self.weights();
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            let mut acc = 0.0;
            let k = weights
                .iter()
                .position(|w| {
                    acc += w;
                    u[i] < acc
                })
                .unwrap_or(weights.len() - 1);
            let c = &self.components[k];
            let l = cholesky(c.cov);
            let (z0, z1) = (f64::from(z[2 * i]), f64::from(z[2 * i + 1]));
            out.push((c.mean[0] + l[0][0] * z0) as f32);
            out.push((c.mean[1] + l[1][0] * z0 + l[1][1] * z1) as f32);
        }
        out
    }

    /// Refuses weights ≤ 0 and covariances that are not symmetric positive definite.
    pub fn check(&self) -> Result<(), String> {
        if self.components.is_empty() {
            return Err("a mixture needs at least one component".into());
        }
        for (k, c) in self.components.iter().enumerate() {
            let [[a, b], [b2, d]] = c.cov;
            if !(c.weight > 0.0 && c.weight.is_finite()) {
                return Err(format!("component {k}: weight {} must be > 0", c.weight));
            }
            if b != b2 || !(a > 0.0 && a * d - b * b > 0.0) {
                return Err(format!(
                    "component {k}: covariance {:?} is not symmetric positive definite",
                    c.cov
                ));
            }
        }
        Ok(())
    }
}

fn score_of(gs: &[Gauss], x: [f64; 2]) -> [f64; 2] {
    let evals: Vec<(f64, [f64; 2])> = gs.iter().map(|g| g.eval(x)).collect();
    let logs: Vec<f64> = evals.iter().map(|e| e.0).collect();
    let lse = log_sum_exp(&logs);
    let mut s = [0.0; 2];
    for (l, p) in evals {
        let r = (l - lse).exp();
        s[0] -= r * p[0];
        s[1] -= r * p[1];
    }
    s
}

/// ln Σ exp(v_i), shifted by the maximum so that nothing overflows or underflows to 0.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// L with L Lᵀ = Σ (lower triangular).
fn cholesky(c: Cov) -> Cov {
    let l00 = c[0][0].sqrt();
    let l10 = c[1][0] / l00;
    let l11 = (c[1][1] - l10 * l10).max(0.0).sqrt();
    [[l00, 0.0], [l10, l11]]
}

// The data streams: a tag in the top 16 bits keeps them away from the sampler's streams
// (0 and step + 1) and the image editor's (tags 1 to 3), so a data seed equal to a run's seed
// still draws independent numbers.
const DATA_NORMAL_STREAM: u64 = 0xDA7A << 48;
const DATA_UNIFORM_STREAM: u64 = 0xDA7A << 48 | 1;

/// `n` uniforms in (0, 1) from the Philox words of `stream` under `seed`.
fn uniforms(seed: u64, stream: u64, n: usize) -> Vec<f64> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n.div_ceil(4) as u64)
        .flat_map(|block| {
            let counter = [
                block as u32,
                (block >> 32) as u32,
                stream as u32,
                (stream >> 32) as u32,
            ];
            noise::philox4x32_10(counter, key)
        })
        .take(n)
        .map(|w| (f64::from(w) + 0.5) / 4_294_967_296.0)
        .collect()
}

/// What a 2D data set is, as `training/toy2d.py` writes it into `config.json`'s `data`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// sklearn's `make_moons` with θ ~ U(0, π): outer (cos θ, sin θ), inner
    /// (1 − cos θ, 0.5 − sin θ), each with probability ½, plus `noise`·z, then
    /// (p − `center`)·`scale`.
    Moons {
        noise: f64,
        center: [f64; 2],
        scale: f64,
    },
    /// sklearn's `make_swiss_roll` in 2D: τ = 1.5π(1 + 2u), p = (τ cos τ, τ sin τ) + `noise`·z,
    /// then p·`scale`.
    SwissRoll { noise: f64, scale: f64 },
    /// A Gaussian mixture (exact ε available).
    Mixture(GaussianMixture),
}

impl DataConfig {
    /// `n` data points (flat N×2) from `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let u = uniforms(seed, DATA_UNIFORM_STREAM, 2 * n);
        let z = noise::randn(seed, DATA_NORMAL_STREAM, 2 * n);
        let z = |i: usize| f64::from(z[i]);
        let pi = std::f64::consts::PI;
        match self {
            Self::Moons {
                noise,
                center,
                scale,
            } => (0..n)
                .flat_map(|i| {
                    let theta = u[2 * i] * pi;
                    let inner = u[2 * i + 1] < 0.5;
                    let (x, y) = if inner {
                        (1.0 - theta.cos(), 0.5 - theta.sin())
                    } else {
                        (theta.cos(), theta.sin())
                    };
                    [
                        ((x + noise * z(2 * i) - center[0]) * scale) as f32,
                        ((y + noise * z(2 * i + 1) - center[1]) * scale) as f32,
                    ]
                })
                .collect(),
            Self::SwissRoll { noise, scale } => (0..n)
                .flat_map(|i| {
                    let tau = 1.5 * pi * (1.0 + 2.0 * u[2 * i]);
                    [
                        ((tau * tau.cos() + noise * z(2 * i)) * scale) as f32,
                        ((tau * tau.sin() + noise * z(2 * i + 1)) * scale) as f32,
                    ]
                })
                .collect(),
            Self::Mixture(m) => m.sample(n, seed),
        }
    }

    /// A short name for labels: "mixture", "moons", "swiss roll".
    pub fn label(&self) -> &'static str {
        match self {
            Self::Moons { .. } => "moons",
            Self::SwissRoll { .. } => "swiss roll",
            Self::Mixture(_) => "mixture",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        assert_eq!(log_sum_exp(&[-1e4, -1e4]), -1e4 + 2f64.ln());
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }

    #[test]
    fn score_far_away_is_finite() {
        let m = GaussianMixture::page_default();
        let s = m.score([40.0, -35.0], 0.9999);
        assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
    }

    #[test]
    fn uniforms_are_in_the_open_unit_interval() {
        let u = uniforms(3, DATA_UNIFORM_STREAM, 10_001);
        assert_eq!(u.len(), 10_001);
        assert!(u.iter().all(|&v| v > 0.0 && v < 1.0));
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn page_mixture_is_valid() {
        GaussianMixture::page_default().check().unwrap();
    }
}
