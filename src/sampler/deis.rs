//! DEIS multistep (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
//! Integrator"), diffusers' `DEISMultistepScheduler`, orders 1–3 with the `logrho` solver.
//!
//! Notation (diffusers): σ is the VE noise level √((1−ᾱ)/ᾱ); α_t = 1/√(σ²+1), σ_t = σ·α_t;
//! ρ = σ_t/α_t (= σ) is the time variable the noise prediction ε̂ is extrapolated in (a
//! Lagrange polynomial in log ρ through the last k outputs); λ = log α_t − log σ_t. The
//! first-order step is DDIM: x_t = (α_t/α_s)·x_s − σ_t (e^h − 1)·ε̂_s with h = λ_t − λ_s. The
//! coefficients are computed in f64 from diffusers' f32 σ's and applied in f32.

use std::collections::VecDeque;

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, dpm_solver_timesteps, BetaConfig, PredictionType, TimestepSpacing,
};
use super::sigmas::{
    alpha_sigma, multistep_step_index, spaced_schedule, x0_from_output, SigmaSpacing,
};
use super::threshold::DynamicThresholding;
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "DEISMultistepScheduler";

/// `DEISMultistepScheduler.__init__` arguments, with diffusers' defaults. (`algorithm_type` is
/// always `deis` and `solver_type` always `logrho`; diffusers maps the other solvers' values to
/// them.)
#[derive(Debug, Clone, PartialEq)]
pub struct DEISMultistepSchedulerConfig {
    pub beta: BetaConfig,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    /// Dynamic thresholding of x̂₀ before it is turned back into ε̂.
    pub thresholding: Option<DynamicThresholding>,
    pub lower_order_final: bool,
    pub sigma_spacing: SigmaSpacing,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for DEISMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: None,
            lower_order_final: true,
            sigma_spacing: SigmaSpacing::Discrete,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl DEISMultistepSchedulerConfig {
    /// The keys `DEISMultistepScheduler` accepts, defaults for the absent ones (it has no
    /// `rescale_betas_zero_snr` or `final_sigmas_type`: those keys are ignored, as in diffusers).
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        match c.algorithm_type.as_deref() {
            None | Some("deis" | "dpmsolver" | "dpmsolver++") => {}
            Some(other) => {
                return Err(SamplerError::UnsupportedValue {
                    field: "algorithm_type",
                    value: other.into(),
                    supported: "deis (dpmsolver and dpmsolver++ are read as deis)",
                })
            }
        }
        match c.solver_type.as_deref() {
            None | Some("logrho" | "midpoint" | "heun" | "bh1" | "bh2") => {}
            Some(other) => {
                return Err(SamplerError::UnsupportedValue {
                    field: "solver_type",
                    value: other.into(),
                    supported: "logrho",
                })
            }
        }
        let solver_order = c.solver_order.unwrap_or(d.solver_order);
        if !(1..=3).contains(&solver_order) {
            return Err(SamplerError::UnsupportedValue {
                field: "solver_order",
                value: solver_order.to_string(),
                supported: "1, 2, 3",
            });
        }
        let mut beta = c.beta_config()?;
        beta.rescale_betas_zero_snr = false;
        Ok(Self {
            beta,
            solver_order,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            thresholding: DynamicThresholding::from_config(NAME, c)?,
            lower_order_final: c.lower_order_final.unwrap_or(d.lower_order_final),
            sigma_spacing: SigmaSpacing::from_config(NAME, c)?,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// DEIS sampler.
#[derive(Debug, Clone)]
pub struct DEISMultistepScheduler {
    pub config: DEISMultistepSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then the final σ (σ_min, or the last spaced σ again).
    sigmas: Vec<f32>,
    /// The last `solver_order` noise predictions ε̂, oldest first.
    model_outputs: VecDeque<Vec<f32>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
    num_images: Option<usize>,
}

// DEIS is a noise-prediction solver: x_t = α_t (x/α_s + Σ c_k ε̂_k) subtracts two terms of size
// α_t/α_s, which reaches 10⁵ at the start of a cosine schedule. diffusers computes its
// coefficients in f32 (torch and numpy scalars), so they are computed in f32 here too, with the
// same operations in the same order: the rounding of the coefficients, not of the data, decides
// those steps.

/// ∫ of the order-2 Lagrange basis in log ρ (diffusers' `ind_fn`):
/// t·(−log c + log t − 1)/(log b − log c), in f32.
fn ind2(t: f32, b: f32, c: f32) -> f32 {
    let (lt, lb, lc) = (libm::logf(t), libm::logf(b), libm::logf(c));
    t * (-lc + lt - 1.0) / (lb - lc)
}

/// The order-3 counterpart (diffusers' `ind_fn` of the third-order update), in f32.
fn ind3(t: f32, b: f32, c: f32, d: f32) -> f32 {
    let (lt, lb, lc, ld) = (libm::logf(t), libm::logf(b), libm::logf(c), libm::logf(d));
    let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    let denominator = (lb - lc) * (lb - ld);
    numerator / denominator
}

/// λ = log α_t − log σ_t in f32, as torch computes it.
fn lambda_f32(alpha: f32, sigma: f32) -> f32 {
    libm::logf(alpha) - libm::logf(sigma)
}

impl DEISMultistepScheduler {
    pub fn new(config: DEISMultistepSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: VecDeque::new(),
            lower_order_nums: 0,
            step_index: None,
            num_images: None,
        })
    }

    /// The VE σ's of this run (one per timestep, plus the final σ).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' `convert_model_output`: x̂₀ (thresholded if configured), then ε̂ from it.
    /// Returns (ε̂, x̂₀).
    fn convert_model_output(
        &self,
        model_output: &[f32],
        sample: &[f32],
        sigma: f32,
    ) -> Result<(Vec<f32>, Vec<f32>), SamplerError> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        let mut x0 = x0_from_output(self.config.prediction_type, model_output, sample, sigma);
        if let Some(th) = self.config.thresholding {
            th.apply(NAME, &mut x0, self.num_images)?;
        }
        let eps = sample
            .iter()
            .zip(&x0)
            .map(|(&x, &x0)| (x - alpha_t * x0) / sigma_t)
            .collect();
        Ok((eps, x0))
    }

    /// First order (DDIM in λ): x_t = (α_t/α_s)·x − σ_t (e^h − 1)·ε̂_s.
    fn first_order_update(&self, idx: usize, m0: &[f32], sample: &[f32]) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[idx]);
        let h = lambda_f32(alpha_t, sigma_t) - lambda_f32(alpha_s, sigma_s);
        let c_x = alpha_t / alpha_s;
        let c_m = sigma_t * (libm::expf(h) - 1.0);
        sample
            .iter()
            .zip(m0)
            .map(|(&x, &m)| c_x * x - c_m * m)
            .collect()
    }

    /// Multistep update of order 2 or 3: x_t = α_t (x/α_s0 + Σ_k c_k ε̂_k), c_k the integral
    /// of the k-th Lagrange basis polynomial in log ρ over [ρ_s0, ρ_t] (Zhang & Chen 2023,
    /// eq. 15 with the ρ parameterisation of its appendix).
    fn multistep_update(&self, idx: usize, order: usize, sample: &[f32]) -> Vec<f32> {
        let n = self.model_outputs.len();
        let rho = |i: usize| {
            let (a, s) = alpha_sigma(self.sigmas[i]);
            (s / a, a)
        };
        let (rho_t, alpha_t) = rho(idx + 1);
        let (rho_s0, alpha_s0) = rho(idx);
        let (rho_s1, _) = rho(idx - 1);
        let coefs: Vec<f32> = if order == 2 {
            vec![
                ind2(rho_t, rho_s0, rho_s1) - ind2(rho_s0, rho_s0, rho_s1),
                ind2(rho_t, rho_s1, rho_s0) - ind2(rho_s0, rho_s1, rho_s0),
            ]
        } else {
            let (rho_s2, _) = rho(idx - 2);
            vec![
                ind3(rho_t, rho_s0, rho_s1, rho_s2) - ind3(rho_s0, rho_s0, rho_s1, rho_s2),
                ind3(rho_t, rho_s1, rho_s2, rho_s0) - ind3(rho_s0, rho_s1, rho_s2, rho_s0),
                ind3(rho_t, rho_s2, rho_s0, rho_s1) - ind3(rho_s0, rho_s2, rho_s0, rho_s1),
            ]
        };
        (0..sample.len())
            .map(|j| {
                let mut acc = sample[j] / alpha_s0;
                for (k, &c) in coefs.iter().enumerate() {
                    acc += c * self.model_outputs[n - 1 - k][j];
                }
                alpha_t * acc
            })
            .collect()
    }
}

impl Scheduler for DEISMultistepScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Deis
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        // The final σ is σ_min of the training schedule for discrete timesteps; with the other
        // spacings diffusers repeats the last σ (so the last step stays where it is).
        let (timesteps, mut sigmas, last) = spaced_schedule(
            self.config.sigma_spacing,
            &self.alphas_cumprod,
            num_inference_steps,
            || {
                dpm_solver_timesteps(
                    self.config.timestep_spacing,
                    big_t,
                    big_t,
                    num_inference_steps,
                    self.config.steps_offset,
                )
            },
        );
        sigmas.push(last);
        self.sigmas = sigmas;
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    fn set_num_images(&mut self, images: usize) {
        self.num_images = Some(images);
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
        let idx = multistep_step_index(NAME, &self.timesteps, self.step_index, timestep)?;
        let num_steps = self.timesteps.len();
        // Lower orders over the last two steps of short runs (diffusers' rule).
        let short = self.config.lower_order_final && num_steps < 15;
        let lower_order_final = idx == num_steps - 1 && short;
        let lower_order_second = idx + 2 == num_steps && short;

        // 1. ε̂ (through x̂₀, which is the preview)
        let (eps, pred_original_sample) =
            self.convert_model_output(model_output, sample, self.sigmas[idx])?;
        if self.model_outputs.len() == self.config.solver_order {
            self.model_outputs.pop_front();
        }
        self.model_outputs.push_back(eps);

        // 2. the update of the order the history allows
        let order = self.config.solver_order;
        let prev_sample = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            let m0 = &self.model_outputs[self.model_outputs.len() - 1];
            self.first_order_update(idx, m0, sample)
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.multistep_update(idx, 2, sample)
        } else {
            self.multistep_update(idx, 3, sample)
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(idx + 1);
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// (α_t, σ_t) of `sigmas[index]`, as `add_noise` after `set_begin_index`; the end of the run
    /// is the clean sample.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        NoiseLevel::vp_at(NAME, &self.sigmas, self.timesteps.len(), index)
    }

    /// Starts the history afresh (first order at `index`).
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.step_index = Some(index);
        Ok(())
    }
}
