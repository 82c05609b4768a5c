//! Linear multistep in σ (Karras et al. 2022, section 3; k-diffusion's `sample_lms`), diffusers'
//! `LMSDiscreteScheduler`.
//!
//! The sample lives in the variance-exploding parameterisation x = x₀ + σ ε (as in
//! [`super::euler_ancestral`]). Each step integrates the probability-flow ODE dx/dσ = d with
//! d = (x − x̂₀)/σ, using the Lagrange polynomial through the last (up to 4) slopes:
//! x_{i+1} = x_i + Σ_j c_j d_{i−j}, c_j = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ with ℓ_j the Lagrange basis
//! on σ_i, σ_{i−1}, …. diffusers integrates ℓ_j numerically (scipy's `quad`); ℓ_j has degree
//! ≤ 3, so three-point Gauss–Legendre integrates it exactly here.

use std::collections::VecDeque;

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, euler_timesteps, np_interp_index, BetaConfig, PredictionType, TimestepSpacing,
};
use super::sigmas::{
    k_init_noise_sigma, k_scale_model_input, log_sigmas, sigma_index, sigma_step_index, sigma_to_t,
    training_sigmas, SigmaSpacing,
};
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "LMSDiscreteScheduler";

/// The order diffusers' pipelines use (`step(..., order=4)`).
const LMS_ORDER: usize = 4;

/// `LMSDiscreteScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LMSDiscreteSchedulerConfig {
    pub beta: BetaConfig,
    pub prediction_type: PredictionType,
    pub sigma_spacing: SigmaSpacing,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for LMSDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            prediction_type: PredictionType::Epsilon,
            sigma_spacing: SigmaSpacing::Discrete,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl LMSDiscreteSchedulerConfig {
    /// The keys `LMSDiscreteScheduler` accepts, defaults for the absent ones (no
    /// `rescale_betas_zero_snr`, `clip_sample` or `thresholding`: ignored, as in diffusers).
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let mut beta = c.beta_config()?;
        beta.rescale_betas_zero_snr = false;
        Ok(Self {
            beta,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            sigma_spacing: SigmaSpacing::from_config(NAME, c)?,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// LMS sampler.
#[derive(Debug, Clone)]
pub struct LMSDiscreteScheduler {
    pub config: LMSDiscreteSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then 0.
    sigmas: Vec<f32>,
    /// The last (up to 4) slopes d, oldest first.
    derivatives: VecDeque<Vec<f32>>,
    step_index: Option<usize>,
}

impl LMSDiscreteScheduler {
    pub fn new(config: LMSDiscreteSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            derivatives: VecDeque::new(),
            step_index: None,
        })
    }

    /// The σ's of this run (one per timestep, then 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn current_index(&self, timestep: f32) -> Result<usize, SamplerError> {
        sigma_index(
            NAME,
            &self.sigmas,
            &self.timesteps,
            self.step_index,
            timestep,
        )
    }

    /// diffusers' `get_lms_coefficient(order, t, current_order)`: ∫_{σ_t}^{σ_{t+1}} of the
    /// Lagrange basis polynomial that is 1 at σ_{t−j} and 0 at the other σ_{t−k}, k < order.
    pub fn lms_coefficient(&self, order: usize, t: usize, j: usize) -> f64 {
        let s = |i: usize| f64::from(self.sigmas[i]);
        let basis = |tau: f64| {
            let mut prod = 1.0;
            for k in (0..order).filter(|&k| k != j) {
                prod *= (tau - s(t - k)) / (s(t - j) - s(t - k));
            }
            prod
        };
        // Three-point Gauss–Legendre: exact for polynomials of degree ≤ 5.
        let (a, b) = (s(t), s(t + 1));
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        let node = libm::sqrt(3.0 / 5.0);
        half * (5.0 / 9.0 * basis(mid - half * node)
            + 8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * basis(mid + half * node))
    }
}

impl Scheduler for LMSDiscreteScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Lms
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        let n = num_inference_steps;
        let mut timesteps: Vec<f64> = euler_timesteps(
            self.config.timestep_spacing,
            big_t,
            n,
            self.config.steps_offset,
        )
        .into_iter()
        .map(f64::from)
        .collect();
        let full = training_sigmas(&self.alphas_cumprod);
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| np_interp_index(t, &full))
            .collect();
        if self.config.sigma_spacing != SigmaSpacing::Discrete {
            // Between the σ's of the last and first spaced timesteps; the timesteps become
            // their fractional preimages.
            let logs = log_sigmas(&full);
            sigmas = self
                .config
                .sigma_spacing
                .spaced(sigmas[n - 1], sigmas[0], n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &logs)).collect();
        }
        let mut s: Vec<f32> = sigmas.iter().map(|&v| v as f32).collect();
        s.push(0.0);
        self.sigmas = s;
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.derivatives.clear();
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// σ_max for linspace/trailing spacing, else √(σ_max² + 1) (diffusers' rule).
    fn init_noise_sigma(&self) -> f32 {
        k_init_noise_sigma(
            &self.sigmas,
            &self.alphas_cumprod,
            self.config.timestep_spacing,
        )
    }

    /// x / √(σ² + 1) (Karras et al. 2022, table 1, c_in).
    fn scale_model_input(&self, sample: &[f32], timestep: f32) -> Result<Vec<f32>, SamplerError> {
        let sigma = self.sigmas[self.current_index(timestep)?];
        Ok(k_scale_model_input(sample, sigma))
    }

    fn needs_step_noise(&self) -> bool {
        false
    }

    fn step(
        &mut self,
        model_output: &[f32],
        timestep: f32,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput, SamplerError> {
        check_lengths(model_output, sample, noise)?;
        let idx = sigma_step_index(
            NAME,
            &self.sigmas,
            &self.timesteps,
            self.step_index,
            timestep,
        )?;
        let sigma = self.sigmas[idx];
        // 1. x̂₀ from the σ-scaled prediction
        let pred_original_sample: Vec<f32> = match self.config.prediction_type {
            PredictionType::Epsilon => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| x - sigma * m)
                .collect(),
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                let c_out = -sigma / s2p1.sqrt();
                model_output
                    .iter()
                    .zip(sample)
                    .map(|(&m, &x)| m * c_out + x / s2p1)
                    .collect()
            }
            PredictionType::Sample => model_output.to_vec(),
        };
        // 2. the ODE's slope d = (x − x̂₀)/σ, kept for the next steps
        let derivative: Vec<f32> = sample
            .iter()
            .zip(&pred_original_sample)
            .map(|(&x, &x0)| (x - x0) / sigma)
            .collect();
        self.derivatives.push_back(derivative);
        if self.derivatives.len() > LMS_ORDER {
            self.derivatives.pop_front();
        }
        // 3. x_{i+1} = x_i + Σ_j c_j d_{i−j}: the order grows with the step index (as diffusers,
        //    also after a late start, where only the stored slopes are summed)
        let order = (idx + 1).min(LMS_ORDER);
        let coeffs: Vec<f32> = (0..order)
            .map(|j| self.lms_coefficient(order, idx, j) as f32)
            .collect();
        let prev_sample: Vec<f32> = (0..sample.len())
            .map(|e| {
                let mut sum = 0.0f32;
                for (c, d) in coeffs.iter().zip(self.derivatives.iter().rev()) {
                    sum += c * d[e];
                }
                sample[e] + sum
            })
            .collect();
        self.step_index = Some(idx + 1);
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// x₀ + σ·ε with σ = `sigmas[index]`; the σ after the last step is 0, the clean end.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        NoiseLevel::ve_at(NAME, &self.sigmas, self.timesteps.len(), index)
    }

    /// The next step is `index`, with no stored slopes.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.derivatives.clear();
        self.step_index = Some(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_the_step() {
        // Σ_j ℓ_j = 1, so the coefficients of one step sum to σ_{t+1} − σ_t.
        let mut s = LMSDiscreteScheduler::new(LMSDiscreteSchedulerConfig::default()).unwrap();
        s.set_timesteps(10).unwrap();
        for t in [0, 1, 5, 9] {
            let order = (t + 1).min(4);
            let sum: f64 = (0..order).map(|j| s.lms_coefficient(order, t, j)).sum();
            let want = f64::from(s.sigmas()[t + 1]) - f64::from(s.sigmas()[t]);
            assert!(
                (sum - want).abs() < 1e-9 * want.abs().max(1.0),
                "{t}: {sum} vs {want}"
            );
        }
    }
}
