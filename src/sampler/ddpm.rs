//! DDPM ancestral sampling (Ho et al. 2020), diffusers' `DDPMScheduler`, with any number of steps.
//!
//! Notation (diffusers' `step` table): ᾱ_t = `alpha_prod_t`, ᾱ_{t'} = `alpha_prod_t_prev` for the
//! previous visited timestep t' (1 past the end), α_t = ᾱ_t/ᾱ_{t'}, β_t = 1 − α_t. With fewer steps
//! than training timesteps the same formulas run on the respaced chain (Nichol & Dhariwal 2021,
//! section 4). Scalars are f32, as in diffusers, so results agree to rounding.

use super::noising::{check_index, NoiseLevel};
use super::schedule::{check_steps, ddpm_timesteps, BetaConfig, PredictionType, TimestepSpacing};
use super::threshold::DynamicThresholding;
use super::{
    alpha_cumprod_at, check_lengths, int_timestep, SamplerError, SamplerKind, Scheduler,
    SchedulerConfig, StepOutput,
};

const NAME: &str = "DDPMScheduler";

/// The variance σ_t² of the reverse step (Ho et al. 2020, section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceType {
    /// σ_t² = β̃_t = (1 − ᾱ_{t'})/(1 − ᾱ_t) · β_t, the posterior variance (eq. 7).
    FixedSmall,
    /// The same, computed as exp(½ log β̃_t) (diffusers' `fixed_small_log`).
    FixedSmallLog,
    /// σ_t² = β_t.
    FixedLarge,
}

impl VarianceType {
    fn parse(s: Option<&str>) -> Result<Self, SamplerError> {
        // A JSON null is treated by diffusers exactly like fixed_small.
        match s {
            None | Some("fixed_small") => Ok(Self::FixedSmall),
            Some("fixed_small_log") => Ok(Self::FixedSmallLog),
            Some("fixed_large") => Ok(Self::FixedLarge),
            Some(other) => Err(SamplerError::UnsupportedValue {
                field: "variance_type",
                value: other.to_string(),
                supported: "fixed_small, fixed_small_log, fixed_large",
            }),
        }
    }
}

/// `DDPMScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DDPMSchedulerConfig {
    pub beta: BetaConfig,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub clip_sample_range: f32,
    /// Dynamic thresholding of x̂_0 (`thresholding`); where set, it replaces `clip_sample`.
    pub thresholding: Option<DynamicThresholding>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for DDPMSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            thresholding: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl DDPMSchedulerConfig {
    /// The keys `DDPMScheduler` accepts, defaults for the absent ones.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        Ok(Self {
            beta: c.beta_config()?,
            variance_type: VarianceType::parse(c.variance_type.as_deref())?,
            clip_sample: c.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range: c.clip_sample_range_or(d.clip_sample_range)?,
            thresholding: DynamicThresholding::from_config(NAME, c)?,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// Denoising diffusion probabilistic model sampler.
#[derive(Debug, Clone)]
pub struct DDPMScheduler {
    pub config: DDPMSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    timesteps_int: Vec<i64>,
    /// N of the N×C×H×W slices `step` gets (only thresholding needs it).
    num_images: Option<usize>,
}

impl DDPMScheduler {
    /// A scheduler whose timesteps, until `set_timesteps`, are all T training steps (as diffusers).
    pub fn new(config: DDPMSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        let timesteps_int: Vec<i64> = (0..config.beta.num_train_timesteps as i64).rev().collect();
        Ok(Self {
            timesteps: timesteps_int.iter().map(|&t| t as f32).collect(),
            timesteps_int,
            num_images: None,
            alphas_cumprod,
            config,
        })
    }

    /// The timestep visited after `t` (−1 after the last), diffusers' `previous_timestep`.
    fn previous_timestep(&self, t: i64) -> Result<i64, SamplerError> {
        let index = self
            .timesteps_int
            .iter()
            .position(|&s| s == t)
            .ok_or_else(|| SamplerError::UnknownTimestep {
                scheduler: NAME,
                timestep: t as f32,
                timesteps: self.timesteps.clone(),
            })?;
        Ok(self.timesteps_int.get(index + 1).copied().unwrap_or(-1))
    }
}

impl Scheduler for DDPMScheduler {
    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddpm
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        self.timesteps_int = ddpm_timesteps(
            self.config.timestep_spacing,
            big_t,
            num_inference_steps,
            self.config.steps_offset,
        );
        self.timesteps = self.timesteps_int.iter().map(|&t| t as f32).collect();
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
        true
    }

    fn step(
        &mut self,
        model_output: &[f32],
        timestep: f32,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput, SamplerError> {
        check_lengths(model_output, sample, noise)?;
        let t = int_timestep(timestep);
        let prev_t = self.previous_timestep(t)?;

        // 1. compute alphas, betas
        let alpha_prod_t = alpha_cumprod_at(NAME, &self.alphas_cumprod, t)?;
        let alpha_prod_t_prev = if prev_t >= 0 {
            alpha_cumprod_at(NAME, &self.alphas_cumprod, prev_t)?
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        // 2. compute predicted original sample x̂_0 from the model output (Ho et al. eq. 15)
        let sqrt_a = alpha_prod_t.sqrt();
        let sqrt_b = beta_prod_t.sqrt();
        let mut pred_original_sample: Vec<f32> = match self.config.prediction_type {
            PredictionType::Epsilon => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| (x - sqrt_b * m) / sqrt_a)
                .collect(),
            PredictionType::Sample => model_output.to_vec(),
            // x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v (Salimans & Ho 2022, section 4)
            PredictionType::VPrediction => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| sqrt_a * x - sqrt_b * m)
                .collect(),
        };

        // 3. threshold or clip x̂_0 to the data range
        if let Some(th) = self.config.thresholding {
            th.apply(NAME, &mut pred_original_sample, self.num_images)?;
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            for v in &mut pred_original_sample {
                *v = v.clamp(-r, r);
            }
        }

        // 4. coefficients of x̂_0 and x_t in the posterior mean μ̃_t (Ho et al. eq. 7)
        let pred_original_sample_coeff = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let current_sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;

        // 5. μ̃_t(x_t, x̂_0)
        let mut prev_sample: Vec<f32> = pred_original_sample
            .iter()
            .zip(sample)
            .map(|(&x0, &x)| pred_original_sample_coeff * x0 + current_sample_coeff * x)
            .collect();

        // 6. add noise σ_t z (Ho et al. algorithm 2, line 4); diffusers draws none at t = 0
        if t > 0 {
            let noise = noise.ok_or(SamplerError::MissingNoise {
                scheduler: NAME,
                timestep,
            })?;
            // β̃_t of eq. 7, clamped as diffusers does so that log and sqrt stay finite
            let posterior =
                ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
            let std_dev = match self.config.variance_type {
                VarianceType::FixedSmall => posterior.sqrt(),
                VarianceType::FixedSmallLog => libm::expf(0.5 * libm::logf(posterior)),
                VarianceType::FixedLarge => current_beta_t.sqrt(),
            };
            for (p, &z) in prev_sample.iter_mut().zip(noise) {
                *p += std_dev * z;
            }
        }

        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// √ᾱ_t and √(1 − ᾱ_t) at `timesteps[index]`, as `DDPMScheduler.add_noise`.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        check_index(NAME, index, self.timesteps_int.len())?;
        match self.timesteps_int.get(index) {
            Some(&t) => Ok(NoiseLevel::from_alpha_cumprod(alpha_cumprod_at(
                NAME,
                &self.alphas_cumprod,
                t,
            )?)),
            None => Ok(NoiseLevel::CLEAN),
        }
    }

    /// Stateless: every step finds its place from its timestep.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps_int.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variance_matches_diffusers_test_values() {
        // diffusers tests/schedulers/test_scheduler_ddpm.py::test_variance (full 1000-step chain)
        let s = DDPMScheduler::new(DDPMSchedulerConfig::default()).unwrap();
        let var = |t: i64| {
            let a = alpha_cumprod_at(NAME, &s.alphas_cumprod, t).unwrap();
            let ap = if t > 0 {
                alpha_cumprod_at(NAME, &s.alphas_cumprod, t - 1).unwrap()
            } else {
                1.0
            };
            ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).max(1e-20)
        };
        assert!((var(0) - 0.0).abs() < 1e-5);
        assert!((var(487) - 0.00979).abs() < 1e-5);
        assert!((var(999) - 0.02).abs() < 1e-5);
    }

    #[test]
    fn any_step_count_is_accepted() {
        let mut s = DDPMScheduler::new(DDPMSchedulerConfig::default()).unwrap();
        for n in [1, 2, 7, 999, 1000] {
            s.set_timesteps(n).unwrap();
            assert_eq!(s.timesteps().len(), n);
        }
        assert!(s.set_timesteps(0).is_err());
        let err = s.set_timesteps(1001).unwrap_err().to_string();
        assert!(err.contains("1001") && err.contains("1000"), "{err}");
    }
}
