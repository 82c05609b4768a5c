//! Euler ancestral sampling in σ space (Karras et al. 2022; k-diffusion's `sample_euler_ancestral`), diffusers' `EulerAncestralDiscreteScheduler`.
//!
//! The sample lives in the variance-exploding parameterisation x = x_0 + σ ε with
//! σ_t = √((1−ᾱ_t)/ᾱ_t), so the initial noise has standard deviation `init_noise_sigma` and the
//! model input is divided by √(σ² + 1) to return to the VP scale the model was trained on. Each
//! step moves deterministically to σ_down and adds fresh noise of size σ_up, with
//! σ_down² + σ_up² = σ_to². Scalars are f32, as in diffusers.

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, euler_timesteps, np_interp_index, sigma_from_alpha_cumprod, BetaConfig,
    PredictionType, TimestepSpacing,
};
use super::sigmas::{k_init_noise_sigma, k_scale_model_input, sigma_index, sigma_step_index};
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// `EulerAncestralDiscreteScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerAncestralDiscreteSchedulerConfig {
    pub beta: BetaConfig,
    /// epsilon or v_prediction (diffusers does not implement `sample` here).
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for EulerAncestralDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl EulerAncestralDiscreteSchedulerConfig {
    /// The keys `EulerAncestralDiscreteScheduler` accepts, defaults for the absent ones.
    /// (It has no `clip_sample` or `thresholding`, so those keys are ignored, as in diffusers.)
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let prediction_type = c.prediction_type_or(d.prediction_type)?;
        if prediction_type == PredictionType::Sample {
            return Err(sample_unsupported());
        }
        Ok(Self {
            beta: c.beta_config()?,
            prediction_type,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// Euler ancestral sampler.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    pub config: EulerAncestralDiscreteSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then 0.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: EulerAncestralDiscreteSchedulerConfig) -> Result<Self, SamplerError> {
        if config.prediction_type == PredictionType::Sample {
            return Err(sample_unsupported());
        }
        let mut alphas_cumprod = config.beta.alphas_cumprod()?;
        if config.beta.rescale_betas_zero_snr {
            // diffusers: keep σ_max finite by making ᾱ_T tiny instead of exactly 0.
            let last = alphas_cumprod.len() - 1;
            alphas_cumprod[last] = 2f32.powi(-24);
        }
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
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
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::EulerAncestral
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        let timesteps = euler_timesteps(
            self.config.timestep_spacing,
            big_t,
            num_inference_steps,
            self.config.steps_offset,
        );
        let full_sigmas: Vec<f32> = self
            .alphas_cumprod
            .iter()
            .map(|&a| sigma_from_alpha_cumprod(a))
            .collect();
        // σ at fractional timesteps by linear interpolation in t (numpy.interp).
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| np_interp_index(f64::from(t), &full_sigmas) as f32)
            .collect();
        sigmas.push(0.0);
        self.sigmas = sigmas;
        self.timesteps = timesteps;
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

    /// x / √(σ² + 1): the VE sample back on the model's VP scale (Karras et al. 2022, table 1,
    /// c_in).
    fn scale_model_input(&self, sample: &[f32], timestep: f32) -> Result<Vec<f32>, SamplerError> {
        let sigma = self.sigmas[self.current_index(timestep)?];
        Ok(k_scale_model_input(sample, sigma))
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
        let idx = sigma_step_index(
            NAME,
            &self.sigmas,
            &self.timesteps,
            self.step_index,
            timestep,
        )?;
        // diffusers draws noise at every step, the last (σ_up = 0) included.
        let noise = noise.ok_or(SamplerError::MissingNoise {
            scheduler: NAME,
            timestep,
        })?;
        let sigma = self.sigmas[idx];

        // 1. compute predicted original sample x̂_0 from the σ-scaled prediction
        let pred_original_sample: Vec<f32> = match self.config.prediction_type {
            // x = x_0 + σ ε  ⇒  x̂_0 = x − σ ε̂
            PredictionType::Epsilon => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| x - sigma * m)
                .collect(),
            // v in VE form: x̂_0 = −σ/√(σ²+1) · v + x/(σ²+1)
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                let c_out = -sigma / s2p1.sqrt();
                model_output
                    .iter()
                    .zip(sample)
                    .map(|(&m, &x)| m * c_out + x / s2p1)
                    .collect()
            }
            // Rejected by from_config and new; kept total for hand-built configs.
            PredictionType::Sample => return Err(sample_unsupported()),
        };

        // 2. ancestral split of the next σ (k-diffusion's get_ancestral_step, η = 1):
        //    σ_up = √(σ_to² (σ_from² − σ_to²)/σ_from²), σ_down = √(σ_to² − σ_up²)
        let sigma_from = sigma;
        let sigma_to = self.sigmas[idx + 1];
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();

        // 3. Euler step of the probability-flow ODE dx/dσ = (x − x̂_0)/σ (Karras et al. eq. 5)
        //    to σ_down, then + σ_up z
        let dt = sigma_down - sigma;
        let prev_sample: Vec<f32> = sample
            .iter()
            .zip(&pred_original_sample)
            .zip(noise)
            .map(|((&x, &x0), &z)| {
                let derivative = (x - x0) / sigma;
                (x + derivative * dt) + z * sigma_up
            })
            .collect();

        self.step_index = Some(idx + 1);
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// x₀ + σ·ε with σ = `sigmas[index]`: `EulerAncestralDiscreteScheduler.add_noise` once a
    /// pipeline set a begin index (the σ of that index, not a search for the timestep); the
    /// final σ is 0, the clean end.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        NoiseLevel::ve_at(NAME, &self.sigmas, self.timesteps.len(), index)
    }

    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.step_index = Some(index);
        Ok(())
    }
}

fn sample_unsupported() -> SamplerError {
    SamplerError::Unsupported {
        scheduler: NAME,
        feature: "prediction_type = sample (diffusers raises NotImplementedError too)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_prediction_is_rejected_by_name() {
        let cfg = SchedulerConfig {
            prediction_type: Some("sample".into()),
            ..Default::default()
        };
        let err = EulerAncestralDiscreteSchedulerConfig::from_config(&cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prediction_type = sample"), "{err}");
    }

    #[test]
    fn missing_noise_is_an_error() {
        let mut s =
            EulerAncestralDiscreteScheduler::new(EulerAncestralDiscreteSchedulerConfig::default())
                .unwrap();
        s.set_timesteps(4).unwrap();
        let t = s.timesteps()[0];
        let err = s.step(&[0.0], t, &[0.0], None).unwrap_err().to_string();
        assert!(err.contains("noise"), "{err}");
    }
}
