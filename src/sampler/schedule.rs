//! Noise schedules: β_t, ᾱ_t and the inference timestep spacings, computed exactly as diffusers (torch f32 + numpy f64) does.
//!
//! Precision notes, so that golden tests against diffusers agree to the last bit where possible:
//! - torch builds β in f32 (`torch.linspace(..., dtype=float32)`), so [`torch_linspace_f32`]
//!   reproduces its two-sided f32 formula;
//! - `torch.cumprod` on the CPU accumulates in f64 and rounds each output to f32, so
//!   [`alphas_cumprod`] does the same;
//! - the timestep spacings use numpy's `linspace`/`arange` in f64 and round half to even
//!   (`np.round`), reproduced by [`np_linspace`], [`np_arange`] and `f64::round_ties_even`.

use super::SamplerError;

/// How β_t grows over the training timesteps (`beta_schedule` in scheduler_config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β linear in t from `beta_start` to `beta_end` (Ho et al. 2020, section 4).
    Linear,
    /// √β linear in t, then squared (the latent-diffusion / Stable Diffusion schedule).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal 2021, eq. 17, with β capped at 0.999.
    SquaredcosCapV2,
}

impl std::str::FromStr for BetaSchedule {
    type Err = SamplerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredcosCapV2),
            other => Err(SamplerError::UnsupportedValue {
                field: "beta_schedule",
                value: other.to_string(),
                supported: "linear, scaled_linear, squaredcos_cap_v2",
            }),
        }
    }
}

/// How the inference timesteps are spread over the training ones (Lin et al. 2023, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// Evenly spaced from 0 to T−1, both ends included, rounded.
    Linspace,
    /// Multiples of T / n from 0, plus `steps_offset` (the original DDIM choice).
    Leading,
    /// Multiples of T / n counted down from T, minus 1 (always includes t = T−1).
    Trailing,
}

impl std::str::FromStr for TimestepSpacing {
    type Err = SamplerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linspace" => Ok(Self::Linspace),
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            other => Err(SamplerError::UnsupportedValue {
                field: "timestep_spacing",
                value: other.to_string(),
                supported: "linspace, leading, trailing",
            }),
        }
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise ε (Ho et al. 2020, eq. 11).
    Epsilon,
    /// The clean sample x_0.
    Sample,
    /// The velocity v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022, section 4).
    VPrediction,
}

impl std::str::FromStr for PredictionType {
    type Err = SamplerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "epsilon" => Ok(Self::Epsilon),
            "sample" => Ok(Self::Sample),
            "v_prediction" => Ok(Self::VPrediction),
            other => Err(SamplerError::UnsupportedValue {
                field: "prediction_type",
                value: other.to_string(),
                supported: "epsilon, sample, v_prediction",
            }),
        }
    }
}

impl std::fmt::Display for PredictionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Epsilon => "epsilon",
            Self::Sample => "sample",
            Self::VPrediction => "v_prediction",
        })
    }
}

/// The training noise schedule shared by every scheduler class.
#[derive(Debug, Clone, PartialEq)]
pub struct BetaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit β_t, overriding `beta_schedule` (diffusers' `trained_betas`).
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

impl Default for BetaConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
        }
    }
}

impl BetaConfig {
    /// β_t for t = 0..T, in f32 as diffusers stores them.
    pub fn betas(&self) -> Result<Vec<f32>, SamplerError> {
        let n = self.num_train_timesteps;
        // The same bound as `model::limits::MAX_TRAIN_TIMESTEPS` (samplers stay independent).
        if n == 0 || n > 100_000 {
            return Err(SamplerError::UnsupportedValue {
                field: "num_train_timesteps",
                value: n.to_string(),
                supported: "1 to 100000",
            });
        }
        // β_t is a variance: a number in [0, 1]. NaN, ±∞, negative values or values above 1 (a
        // hostile or broken config) would turn every sample into NaN a few steps in.
        const RANGE: &str = "a number between 0 and 1 (β is a variance)";
        let betas: Vec<f32> = if let Some(trained) = &self.trained_betas {
            if trained.len() != n {
                return Err(SamplerError::LengthMismatch {
                    what: "trained_betas",
                    len: trained.len(),
                    expected: n,
                });
            }
            if let Some((i, b)) = trained
                .iter()
                .enumerate()
                .find(|(_, b)| !(0.0..=1.0).contains(*b))
            {
                return Err(SamplerError::UnsupportedValue {
                    field: "trained_betas",
                    value: format!("{b} (at index {i})"),
                    supported: RANGE,
                });
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            if self.beta_schedule != BetaSchedule::SquaredcosCapV2 {
                for (field, v) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                    if !(0.0..=1.0).contains(&v) {
                        return Err(SamplerError::UnsupportedValue {
                            field,
                            value: v.to_string(),
                            supported: RANGE,
                        });
                    }
                }
            }
            match self.beta_schedule {
                BetaSchedule::Linear => torch_linspace_f32(self.beta_start, self.beta_end, n),
                BetaSchedule::ScaledLinear => {
                    torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect()
                }
                BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n, 0.999),
            }
        };
        // The first training step must add noise: with ᾱ_0 = 1 in f32 (β_0 below about 6e-8)
        // every sampler divides 0 by 0 at t = 0 (diffusers too).
        if 1.0 - betas[0] == 1.0 {
            return Err(SamplerError::UnsupportedValue {
                field: if self.trained_betas.is_some() {
                    "trained_betas"
                } else {
                    "beta_start"
                },
                value: betas[0].to_string(),
                supported: "a β_0 that adds noise at t = 0 in f32 (at least 6e-8)",
            });
        }
        Ok(if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        })
    }

    /// ᾱ_t = ∏_{s≤t} (1 − β_s) (Ho et al. 2020, notation above eq. 4).
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>, SamplerError> {
        let a = alphas_cumprod(&self.betas()?);
        // Only the last ᾱ may be 0 (a zero terminal SNR, `rescale_betas_zero_snr`), and not
        // when it is also the first: a β of 1 earlier leaves no signal from there on, and every
        // sampler divides by ᾱ.
        if let Some(t) = a[..(a.len() - 1).max(1)]
            .iter()
            .position(|&x| x <= 0.0 || x.is_nan())
        {
            return Err(SamplerError::UnsupportedValue {
                field: if self.trained_betas.is_some() {
                    "trained_betas"
                } else {
                    "beta_end"
                },
                value: format!("a schedule whose ᾱ reaches 0 at t = {t}"),
                supported: "a schedule with ᾱ_t > 0 before the last training timestep",
            });
        }
        Ok(a)
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: f32 start, end and step, the
/// first half stepped forward from `start` and the second half backward from `end` so both ends
/// are exact, each value rounded once (torch's kernel compiles `start + step * i` to a fused
/// multiply-add; f64 reproduces that here, as step · i is exact in f64).
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let start = start as f32;
    let end = end as f32;
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    let (start, end, step) = (f64::from(start), f64::from(end), f64::from(step));
    (0..steps)
        .map(|i| {
            if i < halfway {
                (start + step * i as f64) as f32
            } else {
                (end - step * (steps - i - 1) as f64) as f32
            }
        })
        .collect()
}

/// β_t from a continuous ᾱ(t) (Nichol & Dhariwal 2021, eq. 17):
/// ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) with s = 0.008, β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta).
pub fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = libm::cos((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0);
        c * c
    };
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// Rescale β so that the terminal SNR is exactly zero (Lin et al. 2023, algorithm 1), in f32 as
/// diffusers' `rescale_zero_terminal_snr` does.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_ab: Vec<f32> = alphas_cumprod_from_alphas(&alphas)
        .iter()
        .map(|a| a.sqrt())
        .collect();
    let first = sqrt_ab[0];
    let last = sqrt_ab[sqrt_ab.len() - 1];
    // Shift so the last √ᾱ is zero, then scale so the first is unchanged.
    let scale = first / (first - last);
    for v in &mut sqrt_ab {
        *v -= last;
        *v *= scale;
    }
    let alphas_bar: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    // Undo the cumulative product: α_t = ᾱ_t / ᾱ_{t−1}, α_0 = ᾱ_0.
    let mut out = Vec::with_capacity(alphas_bar.len());
    out.push(1.0 - alphas_bar[0]);
    for w in alphas_bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

fn alphas_cumprod_from_alphas(alphas: &[f32]) -> Vec<f32> {
    // torch.cumprod on the CPU accumulates in double and stores each partial product as f32.
    let mut acc = 1.0f64;
    alphas
        .iter()
        .map(|&a| {
            acc *= f64::from(a);
            acc as f32
        })
        .collect()
}

/// ᾱ_t from β_t: α_t = 1 − β_t in f32, then the running product.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    alphas_cumprod_from_alphas(&alphas)
}

/// The signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021, eq. 2), for plots.
pub fn snr(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| a / (1.0 - a)).collect()
}

/// √((1 − ᾱ_t)/ᾱ_t), the noise level σ_t of the variance-exploding view (Karras et al. 2022,
/// table 1), in f32 as diffusers computes it.
pub fn sigma_from_alpha_cumprod(alpha_cumprod: f32) -> f32 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}

/// `numpy.linspace(start, stop, num)` in f64 (endpoint included).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            if step == 0.0 {
                i as f64 / div * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    y[num - 1] = stop;
    y
}

/// `numpy.arange(start, stop, step)` in f64: length ⌈(stop − start)/step⌉, values start + i·Δ
/// with Δ = (start + step) − start, as numpy's fill loop computes them.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `numpy.interp(x, arange(len(fp)), fp)`: piecewise-linear lookup of `fp` at fractional index x,
/// clamped at both ends.
pub fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return f64::from(fp[j]);
    }
    let slope = (f64::from(fp[j + 1]) - f64::from(fp[j])) / 1.0;
    slope * (x - j as f64) + f64::from(fp[j])
}

pub(crate) fn check_steps(
    scheduler: &'static str,
    num_inference_steps: usize,
    num_train_timesteps: usize,
) -> Result<(), SamplerError> {
    if num_inference_steps == 0 || num_inference_steps > num_train_timesteps {
        return Err(SamplerError::InvalidSteps {
            scheduler,
            steps: num_inference_steps,
            num_train_timesteps,
        });
    }
    Ok(())
}

/// The spacing of `DDPMScheduler.set_timesteps` and `DDIMScheduler.set_timesteps`
/// (Lin et al. 2023, table 2): integer timesteps, descending.
pub fn ddpm_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    let big_t = num_train_timesteps;
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (big_t - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let step_ratio = big_t / n;
            (0..n)
                .rev()
                .map(|i| (i * step_ratio) as i64 + steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = big_t as f64 / n as f64;
            np_arange(big_t as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

/// The spacing of `DPMSolverMultistepScheduler.set_timesteps`: n + 1 points with the final
/// (t = 0) one dropped, ending at `last_timestep` (T unless `lambda_min_clipped` cuts it).
pub fn dpm_solver_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    last_timestep: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<i64> = np_linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .rev()
                .map(|v| v.round_ties_even() as i64)
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let step_ratio = last_timestep / (n + 1);
            (1..=n)
                .rev()
                .map(|i| (i * step_ratio) as i64 + steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = num_train_timesteps as f64 / n as f64;
            np_arange(last_timestep as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

/// The spacing of `EulerAncestralDiscreteScheduler.set_timesteps`: f32 timesteps, which for
/// `linspace` are fractional (the model is called at t = 999, 888.0, …).
pub fn euler_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<f32> {
    let big_t = num_train_timesteps;
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (big_t - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v as f32)
            .collect(),
        TimestepSpacing::Leading => {
            let step_ratio = big_t / n;
            (0..n)
                .rev()
                .map(|i| (i * step_ratio) as f32 + steps_offset as f32)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = big_t as f64 / n as f64;
            np_arange(big_t as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|v| v.round_ties_even() as f32 - 1.0)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_steps_offset_one_visits_documented_timesteps() {
        // diffusers tests/schedulers/test_scheduler_ddim.py::test_steps_offset
        assert_eq!(
            ddpm_timesteps(TimestepSpacing::Leading, 1000, 5, 1),
            vec![801, 601, 401, 201, 1]
        );
    }

    #[test]
    fn spacings_match_lin_et_al_table_2() {
        // Lin et al. 2023, table 2 (T = 1000, 10 steps).
        assert_eq!(
            ddpm_timesteps(TimestepSpacing::Linspace, 1000, 10, 0),
            vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        assert_eq!(
            ddpm_timesteps(TimestepSpacing::Leading, 1000, 10, 1),
            vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        assert_eq!(
            ddpm_timesteps(TimestepSpacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let cfg = BetaConfig {
            rescale_betas_zero_snr: true,
            ..Default::default()
        };
        let ac = cfg.alphas_cumprod().unwrap();
        assert_eq!(ac[ac.len() - 1], 0.0);
        let plain = BetaConfig::default().alphas_cumprod().unwrap();
        assert!((ac[0] - plain[0]).abs() < 1e-6);
    }

    #[test]
    fn np_arange_matches_numpy_lengths() {
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 7.0).len(), 7);
        assert_eq!(np_arange(0.0, 0.0, 1.0).len(), 0);
    }
}
