//! The σ-space helpers diffusers repeats in every DPM-family and k-diffusion scheduler: the VE
//! noise level σ and its VP pair (α_t, σ_t), the half log-SNR λ, `_sigma_to_t`, and the
//! Karras / exponential / beta spacings of σ that `use_karras_sigmas`, `use_exponential_sigmas`
//! and `use_beta_sigmas` select.
//!
//! Notation (diffusers): σ = √((1−ᾱ)/ᾱ) is the variance-exploding noise level; α_t = 1/√(σ²+1)
//! and σ_t = σ·α_t are the variance-preserving coefficients; λ = log α_t − log σ_t.

use super::schedule::PredictionType;
use super::{SamplerError, SchedulerConfig};

/// Which σ spacing a run uses (diffusers' `use_*_sigmas` flags; at most one may be set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSpacing {
    /// σ of the training schedule at the spaced timesteps (the default).
    Discrete,
    /// ρ = 7 spacing of σ^(1/ρ) between σ_max and σ_min (Karras et al. 2022, eq. 5).
    Karras,
    /// σ evenly spaced in log σ.
    Exponential,
    /// σ at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al. 2024, "Beta Sampling is
    /// All You Need").
    Beta,
}

impl SigmaSpacing {
    /// The spacing a config asks for; more than one flag is an error (diffusers raises too), and
    /// `use_flow_sigmas` (flow-matching models) is refused by name.
    pub fn from_config(scheduler: &'static str, c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let karras = c.use_karras_sigmas == Some(true);
        let exponential = c.use_exponential_sigmas == Some(true);
        let beta = c.use_beta_sigmas == Some(true);
        if [karras, exponential, beta].iter().filter(|&&b| b).count() > 1 {
            return Err(SamplerError::Unsupported {
                scheduler,
                feature: "more than one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas (diffusers rejects this too)".into(),
            });
        }
        if c.use_flow_sigmas == Some(true) {
            return Err(SamplerError::Unsupported {
                scheduler,
                feature: "use_flow_sigmas = true (a flow-matching schedule)".into(),
            });
        }
        Ok(if karras {
            Self::Karras
        } else if exponential {
            Self::Exponential
        } else if beta {
            Self::Beta
        } else {
            Self::Discrete
        })
    }

    /// `n` σ's from `sigma_max` down to `sigma_min` (f64, as numpy computes them); `Discrete`
    /// has no formula and returns an empty list.
    pub fn spaced(self, sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
        match self {
            Self::Discrete => Vec::new(),
            Self::Karras => karras(sigma_min, sigma_max, n),
            Self::Exponential => exponential(sigma_min, sigma_max, n),
            Self::Beta => beta(sigma_min, sigma_max, n),
        }
    }
}

/// The timesteps and σ's of a σ-spaced scheduler's `set_timesteps` (DEIS, UniPC, single-step
/// DPM-Solver++), before the final σ: with `Discrete`, the `discrete` timesteps with σ read off
/// the training table; otherwise `n` σ's spaced between the table's ends, each mapped back to a
/// timestep (Karras rounds; the others are truncated, as torch's int64 cast). The third value is
/// the σ diffusers appends for `final_sigmas_type = "sigma_min"`: the table's σ_min with discrete
/// timesteps, the spaced list's last σ otherwise.
pub fn spaced_schedule(
    spacing: SigmaSpacing,
    alphas_cumprod: &[f32],
    n: usize,
    discrete: impl FnOnce() -> Vec<i64>,
) -> (Vec<i64>, Vec<f32>, f32) {
    let full = training_sigmas(alphas_cumprod);
    if spacing == SigmaSpacing::Discrete {
        let ts = discrete();
        let sig = ts
            .iter()
            .map(|&t| super::schedule::np_interp_index(t as f64, &full) as f32)
            .collect();
        return (ts, sig, full[0]);
    }
    let logs = log_sigmas(&full);
    let new = spacing.spaced(f64::from(full[0]), f64::from(full[full.len() - 1]), n);
    let round = spacing == SigmaSpacing::Karras;
    let ts = new
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &logs);
            (if round { t.round_ties_even() } else { t }) as i64
        })
        .collect();
    let sig: Vec<f32> = new.iter().map(|&s| s as f32).collect();
    let last = sig[sig.len() - 1];
    (ts, sig, last)
}

/// `init_noise_sigma` of the σ-space (k-diffusion) schedulers, diffusers' rule: σ_max for
/// linspace or trailing spacing, √(σ_max² + 1) for leading; before `set_timesteps` (`sigmas`
/// empty) σ_max of the training table.
pub fn k_init_noise_sigma(
    sigmas: &[f32],
    alphas_cumprod: &[f32],
    spacing: super::TimestepSpacing,
) -> f32 {
    let max = if sigmas.is_empty() {
        training_sigmas(alphas_cumprod)
            .into_iter()
            .fold(0.0f32, f32::max)
    } else {
        sigmas.iter().copied().fold(0.0f32, f32::max)
    };
    match spacing {
        super::TimestepSpacing::Linspace | super::TimestepSpacing::Trailing => max,
        super::TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// c_in = 1/√(σ² + 1): the σ-space sample back on the model's VP scale (Karras et al. 2022,
/// table 1), the `scale_model_input` of the σ-space schedulers.
pub fn k_scale_model_input(sample: &[f32], sigma: f32) -> Vec<f32> {
    let denom = (sigma * sigma + 1.0).sqrt();
    sample.iter().map(|&x| x / denom).collect()
}

/// σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep (f32, as diffusers' tensor).
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| super::schedule::sigma_from_alpha_cumprod(a))
        .collect()
}

/// `np.log` of the f32 σ table (numpy keeps the f32 dtype).
pub fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas
        .iter()
        .map(|&s| libm::log(f64::from(s)) as f32)
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log σ matches, by linear
/// interpolation in log σ (numpy mixed precision: f32 table, f64 query).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    if log_sigmas.len() < 2 {
        return 0.0; // one training timestep: every σ is at t = 0
    }
    let log_sigma = libm::log(sigma.max(1e-10));
    let last_at_or_below = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - f64::from(l) >= 0.0)
        .unwrap_or(0);
    let low_idx = last_at_or_below.min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. 2022, eq. 5 with ρ = 7: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ.
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = libm::pow(sigma_min, 1.0 / rho);
    let max_inv_rho = libm::pow(sigma_max, 1.0 / rho);
    super::schedule::np_linspace(0.0, 1.0, n)
        .iter()
        .map(|&r| libm::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho))
        .collect()
}

/// σ evenly spaced in log σ from σ_max to σ_min.
pub fn exponential(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    super::schedule::np_linspace(libm::log(sigma_max), libm::log(sigma_min), n)
        .into_iter()
        .map(libm::exp)
        .collect()
}

/// diffusers' `_convert_to_beta` with α = β = 0.6: σ_min + ppf(1 − i/(n−1))·(σ_max − σ_min), ppf
/// the Beta(0.6, 0.6) quantile function (scipy's `beta.ppf`).
pub fn beta(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    super::schedule::np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| sigma_min + beta_ppf(1.0 - r, 0.6, 0.6) * (sigma_max - sigma_min))
        .collect()
}

/// The regularised incomplete beta function I_x(a, b) by its continued fraction (modified
/// Lentz), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - inc_beta(1.0 - x, b, a);
    }
    let ln_front = libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b)
        + a * libm::log(x)
        + b * libm::log1p(-x);
    let tiny = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        // even term
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < tiny {
            c = tiny;
        }
        f *= d * c;
        // odd term
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < tiny {
            c = tiny;
        }
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    libm::exp(ln_front) * f / a
}

/// The Beta(a, b) quantile: the x with I_x(a, b) = q, by bisection to the last bit (I is
/// monotone; Newton steps misbehave at the endpoints, where the density is infinite for a, b < 1).
fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..2000 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if inc_beta(mid, a, b) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// (α_t, σ_t) from the VE σ: α_t = 1/√(σ²+1), σ_t = σ α_t (f32, as diffusers).
pub fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha_t, sigma * alpha_t)
}

/// x̂₀ from the model's output at the VE σ (the data-prediction form of the DPM-Solver family,
/// Lu et al. 2022b, eq. 9): (x − σ_t ε̂)/α_t for ε, the output for `sample`, α_t x − σ_t v for v.
pub fn x0_from_output(
    prediction_type: PredictionType,
    model_output: &[f32],
    sample: &[f32],
    sigma: f32,
) -> Vec<f32> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    let zip = model_output.iter().zip(sample);
    match prediction_type {
        PredictionType::Epsilon => zip.map(|(&m, &x)| (x - sigma_t * m) / alpha_t).collect(),
        PredictionType::Sample => model_output.to_vec(),
        PredictionType::VPrediction => zip.map(|(&m, &x)| alpha_t * x - sigma_t * m).collect(),
    }
}

/// ε̂ from the model's output at the VE σ (the noise-prediction form): the output for ε,
/// (x − α_t x̂₀)/σ_t for `sample`, α_t v + σ_t x for v.
pub fn eps_from_output(
    prediction_type: PredictionType,
    model_output: &[f32],
    sample: &[f32],
    sigma: f32,
) -> Vec<f32> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    let zip = model_output.iter().zip(sample);
    match prediction_type {
        PredictionType::Epsilon => model_output.to_vec(),
        PredictionType::Sample => zip.map(|(&m, &x)| (x - alpha_t * m) / sigma_t).collect(),
        PredictionType::VPrediction => zip.map(|(&m, &x)| alpha_t * m + sigma_t * x).collect(),
    }
}

/// λ = log α − log σ in f64 (+∞ at σ = 0).
pub fn lambda(alpha: f32, sigma: f32) -> f64 {
    libm::log(f64::from(alpha)) - libm::log(f64::from(sigma))
}

/// diffusers' `index_for_timestep` of the multistep solvers: the second match if the timestep
/// repeats (so a restart in the middle does not skip a step), the last index if it is absent.
pub fn multistep_index_for_timestep(timesteps: &[f32], timestep: f32) -> usize {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (None, _) => timesteps.len().saturating_sub(1),
        (Some(i), None) => i,
        (Some(_), Some(i)) => i,
    }
}

/// The index a multistep solver's `step` is at: its own count once started (`step_index`),
/// else where `timestep` is in `timesteps` ([`multistep_index_for_timestep`]); an error before
/// `set_timesteps` or past the last step.
pub fn multistep_step_index(
    scheduler: &'static str,
    timesteps: &[f32],
    step_index: Option<usize>,
    timestep: f32,
) -> Result<usize, SamplerError> {
    if timesteps.is_empty() {
        return Err(SamplerError::TimestepsNotSet { scheduler });
    }
    let idx = step_index.unwrap_or_else(|| multistep_index_for_timestep(timesteps, timestep));
    if idx >= timesteps.len() {
        return Err(SamplerError::StepPastEnd {
            scheduler,
            step_index: idx,
            num_steps: timesteps.len(),
        });
    }
    Ok(idx)
}

/// diffusers' `index_for_timestep` of the σ-space samplers (Euler, Heun, LMS): the second match
/// if the timestep repeats; absent is an error (torch's IndexError there).
pub fn discrete_index_for_timestep(
    scheduler: &'static str,
    timesteps: &[f32],
    timestep: f32,
) -> Result<usize, SamplerError> {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (None, _) => Err(SamplerError::UnknownTimestep {
            scheduler,
            timestep,
            timesteps: timesteps.to_vec(),
        }),
        (Some(i), None) => Ok(i),
        (Some(_), Some(i)) => Ok(i),
    }
}

/// The entry of `sigmas` a σ-space sampler (Euler-a, Heun, LMS) is at: its own count once
/// started (`step_index`), else where `timestep` is ([`discrete_index_for_timestep`]); an error
/// before `set_timesteps`.
pub fn sigma_index(
    scheduler: &'static str,
    sigmas: &[f32],
    timesteps: &[f32],
    step_index: Option<usize>,
    timestep: f32,
) -> Result<usize, SamplerError> {
    if sigmas.is_empty() {
        return Err(SamplerError::TimestepsNotSet { scheduler });
    }
    match step_index {
        Some(i) => Ok(i),
        None => discrete_index_for_timestep(scheduler, timesteps, timestep),
    }
}

/// [`sigma_index`] for `step`, which also needs σ_{i+1}: an error past the last step.
pub fn sigma_step_index(
    scheduler: &'static str,
    sigmas: &[f32],
    timesteps: &[f32],
    step_index: Option<usize>,
    timestep: f32,
) -> Result<usize, SamplerError> {
    let idx = sigma_index(scheduler, sigmas, timesteps, step_index, timestep)?;
    if idx + 1 >= sigmas.len() {
        return Err(SamplerError::StepPastEnd {
            scheduler,
            step_index: idx,
            num_steps: timesteps.len(),
        });
    }
    Ok(idx)
}

/// A·x elementwise plus Σ c_k·v_k, in f32, left to right (diffusers' tensor expressions with
/// scalar coefficients computed once).
pub fn combine(sample: &[f32], c_x: f64, terms: &[(f64, &[f32])]) -> Vec<f32> {
    let c_x = c_x as f32;
    let mut out: Vec<f32> = sample.iter().map(|&x| c_x * x).collect();
    for &(c, d) in terms {
        let c = c as f32;
        for (o, &v) in out.iter_mut().zip(d) {
            *o += c * v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_ppf_matches_scipy() {
        // scipy.stats.beta.ppf(q, 0.6, 0.6) (scipy 1.17.1)
        for (q, want) in [
            (0.5, 0.500_000_000_000_000_1),
            (0.9, 0.960_415_594_411_219_2),
            (0.1, 0.039_584_405_588_780_85),
            (0.999, 0.999_981_441_261_482_6),
        ] {
            let got = beta_ppf(q, 0.6, 0.6);
            assert!((got - want).abs() < 1e-12, "ppf({q}) = {got}, scipy {want}");
        }
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let sig: Vec<f32> = (1..=10).map(|i| i as f32 * 0.5).collect();
        let logs = log_sigmas(&sig);
        assert!((sigma_to_t(f64::from(sig[3]), &logs) - 3.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &logs), 9.0);
        assert_eq!(sigma_to_t(0.0, &logs), 0.0);
    }
}
