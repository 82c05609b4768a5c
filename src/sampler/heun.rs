//! Heun's second-order method in σ space (Karras et al. 2022, "Elucidating the Design Space of
//! Diffusion-Based Generative Models", algorithm 1 without churn), diffusers'
//! `HeunDiscreteScheduler`.
//!
//! The sample lives in the variance-exploding parameterisation x = x₀ + σ ε (as in
//! [`super::euler_ancestral`]): the initial noise has standard deviation `init_noise_sigma` and
//! the model input is divided by √(σ² + 1). A step from σ_i to σ_{i+1} takes two model calls: an
//! Euler step to σ_{i+1}, then a second call there and the average of the two slopes. diffusers
//! lists every inner timestep twice (2n − 1 timesteps for n steps) and `step` is called once per
//! entry, alternating between the two halves; [`Scheduler::order`] is 2. Scalars are f32, as in
//! diffusers.
//!
//! Notation: σ̂ = σ_i (γ = 0, no churn); d = (x − x̂₀)/σ is the slope dx/dσ of the probability-flow
//! ODE (Karras et al. eq. 5); Δσ = σ_{i+1} − σ̂.

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, euler_timesteps, np_interp_index, BetaConfig, PredictionType, TimestepSpacing,
};
use super::sigmas::{
    k_init_noise_sigma, k_scale_model_input, log_sigmas, sigma_index, sigma_step_index, sigma_to_t,
    training_sigmas, SigmaSpacing,
};
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "HeunDiscreteScheduler";

/// `HeunDiscreteScheduler.__init__` arguments, with diffusers' defaults (note its β range,
/// 0.00085 to 0.012, differs from the other classes').
#[derive(Debug, Clone, PartialEq)]
pub struct HeunDiscreteSchedulerConfig {
    pub beta: BetaConfig,
    pub prediction_type: PredictionType,
    pub sigma_spacing: SigmaSpacing,
    /// Clamp x̂₀ to [−r, r] (`clip_sample`, `clip_sample_range`).
    pub clip_sample: Option<f32>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for HeunDiscreteSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig {
                beta_start: 0.00085,
                beta_end: 0.012,
                ..BetaConfig::default()
            },
            prediction_type: PredictionType::Epsilon,
            sigma_spacing: SigmaSpacing::Discrete,
            clip_sample: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl HeunDiscreteSchedulerConfig {
    /// The keys `HeunDiscreteScheduler` accepts, defaults for the absent ones. It has no
    /// `rescale_betas_zero_snr` or `thresholding`, so those keys are ignored, as in diffusers.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let mut beta = c.beta_config()?;
        beta.beta_start = c.beta_start.unwrap_or(d.beta.beta_start);
        beta.beta_end = c.beta_end.unwrap_or(d.beta.beta_end);
        beta.rescale_betas_zero_snr = false;
        let clip_sample = if c.clip_sample == Some(true) {
            Some(c.clip_sample_range_or(1.0)?)
        } else {
            None
        };
        Ok(Self {
            beta,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            sigma_spacing: SigmaSpacing::from_config(NAME, c)?,
            clip_sample,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// What the first half of a step leaves for the second.
#[derive(Debug, Clone)]
struct FirstHalf {
    /// d at σ_i.
    derivative: Vec<f32>,
    /// Δσ = σ_{i+1} − σ_i.
    dt: f32,
    /// x at σ_i.
    sample: Vec<f32>,
}

/// Heun sampler.
#[derive(Debug, Clone)]
pub struct HeunDiscreteScheduler {
    pub config: HeunDiscreteSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    /// t_0, t_1, t_1, …, t_{n−1}, t_{n−1}.
    timesteps: Vec<f32>,
    /// σ_0, σ_1, σ_1, …, σ_{n−1}, σ_{n−1}, 0 (one more than the timesteps).
    sigmas: Vec<f32>,
    /// `Some` between the two halves of a step (diffusers' `state_in_first_order` is `None`).
    first_half: Option<FirstHalf>,
    step_index: Option<usize>,
}

impl HeunDiscreteScheduler {
    pub fn new(config: HeunDiscreteSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            first_half: None,
            step_index: None,
        })
    }

    /// The σ's of this run, interleaved like the timesteps, then 0.
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

impl Scheduler for HeunDiscreteScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Heun
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
            // The spaced σ's run between the σ's of the first and last spaced timesteps, and the
            // timesteps become their fractional preimages.
            let logs = log_sigmas(&full);
            sigmas = self
                .config
                .sigma_spacing
                .spaced(sigmas[n - 1], sigmas[0], n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &logs)).collect();
        }
        let mut s: Vec<f32> = sigmas.iter().map(|&v| v as f32).collect();
        s.push(0.0);
        // σ_0, then σ_1 … σ_{n−1} twice each, then 0; t_0, then t_1 … t_{n−1} twice each.
        let mut interleaved = vec![s[0]];
        for &v in &s[1..n] {
            interleaved.extend([v, v]);
        }
        interleaved.push(0.0);
        let mut ts = vec![timesteps[0] as f32];
        for &t in &timesteps[1..] {
            ts.extend([t as f32, t as f32]);
        }
        self.sigmas = interleaved;
        self.timesteps = ts;
        self.first_half = None;
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

    /// x / √(σ² + 1) with the σ of this entry (Karras et al. 2022, table 1, c_in).
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
        let first_order = self.first_half.is_none();
        // 1. the σ's of this half: σ̂ = σ_i, and σ_{i+1} where the model was called (second half)
        let (sigma, sigma_next) = if first_order {
            (self.sigmas[idx], self.sigmas[idx + 1])
        } else {
            (self.sigmas[idx - 1], self.sigmas[idx])
        };
        let sigma_hat = sigma;
        let sigma_input = if first_order { sigma_hat } else { sigma_next };

        // 2. x̂₀ from the σ-scaled prediction at the σ the model saw
        let mut pred_original_sample: Vec<f32> = match self.config.prediction_type {
            PredictionType::Epsilon => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| x - sigma_input * m)
                .collect(),
            PredictionType::VPrediction => {
                let s2p1 = sigma_input * sigma_input + 1.0;
                let c_out = -sigma_input / s2p1.sqrt();
                model_output
                    .iter()
                    .zip(sample)
                    .map(|(&m, &x)| m * c_out + x / s2p1)
                    .collect()
            }
            PredictionType::Sample => model_output.to_vec(),
        };
        if let Some(r) = self.config.clip_sample {
            for v in &mut pred_original_sample {
                *v = v.clamp(-r, r);
            }
        }

        // 3. first half: Euler to σ_{i+1}, keeping d_i; second half: the average slope
        //    (d_i + d_{i+1})/2 from x_i (Karras et al. 2022, algorithm 1, lines 5–8)
        let prev_sample: Vec<f32> = match self.first_half.take() {
            None => {
                let derivative: Vec<f32> = sample
                    .iter()
                    .zip(&pred_original_sample)
                    .map(|(&x, &x0)| (x - x0) / sigma_hat)
                    .collect();
                let dt = sigma_next - sigma_hat;
                let prev = sample
                    .iter()
                    .zip(&derivative)
                    .map(|(&x, &d)| x + d * dt)
                    .collect();
                self.first_half = Some(FirstHalf {
                    derivative,
                    dt,
                    sample: sample.to_vec(),
                });
                prev
            }
            Some(first) => first
                .sample
                .iter()
                .zip(sample)
                .zip(&pred_original_sample)
                .zip(&first.derivative)
                .map(|(((&x_i, &x), &x0), &d_i)| {
                    let d = (x - x0) / sigma_next;
                    let d = (d_i + d) / 2.0;
                    x_i + d * first.dt
                })
                .collect(),
        };
        self.step_index = Some(idx + 1);
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// x₀ + σ·ε with σ = `sigmas[index]` (`add_noise` after `set_begin_index`); the σ after the
    /// last entry is 0, the clean end.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        NoiseLevel::ve_at(NAME, &self.sigmas, self.timesteps.len(), index)
    }

    /// The next entry is `index`, taken as a first half (diffusers' state is fresh after
    /// `set_timesteps`; an img2img run starts at an even index, k·`order`).
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.first_half = None;
        self.step_index = Some(index);
        Ok(())
    }

    fn order(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_are_interleaved() {
        let mut s = HeunDiscreteScheduler::new(HeunDiscreteSchedulerConfig::default()).unwrap();
        s.set_timesteps(4).unwrap();
        assert_eq!(
            s.timesteps(),
            &[999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0]
        );
        assert_eq!(s.sigmas().len(), 8);
        assert_eq!(s.sigmas()[7], 0.0);
        assert_eq!(s.sigmas()[1], s.sigmas()[2]);
        assert_eq!(s.order(), 2);
    }
}
