//! DDIM (Song et al. 2021), diffusers' `DDIMScheduler`: η = 0 deterministic, η = 1 DDPM-like.
//!
//! Notation (diffusers' `step` table): ᾱ_t = `alpha_prod_t`, ᾱ_{t−Δ} = `alpha_prod_t_prev` with
//! Δ = T // n (diffusers uses this Δ for every spacing), σ_t = η·√variance. Scalars are f32, as in
//! diffusers.

use super::noising::{check_index, NoiseLevel};
use super::schedule::{check_steps, ddpm_timesteps, BetaConfig, PredictionType, TimestepSpacing};
use super::threshold::DynamicThresholding;
use super::{
    alpha_cumprod_at, check_lengths, int_timestep, SamplerError, SamplerKind, Scheduler,
    SchedulerConfig, StepOutput,
};

const NAME: &str = "DDIMScheduler";

/// `DDIMScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DDIMSchedulerConfig {
    pub beta: BetaConfig,
    pub clip_sample: bool,
    pub clip_sample_range: f32,
    /// Dynamic thresholding of x̂_0 (`thresholding`); where set, it replaces `clip_sample`.
    pub thresholding: Option<DynamicThresholding>,
    /// Use ᾱ = 1 past the last step (else ᾱ_0).
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
}

impl Default for DDIMSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            clip_sample: true,
            clip_sample_range: 1.0,
            thresholding: None,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }
}

impl DDIMSchedulerConfig {
    /// The keys `DDIMScheduler` accepts, defaults for the absent ones.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        Ok(Self {
            beta: c.beta_config()?,
            clip_sample: c.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range: c.clip_sample_range_or(d.clip_sample_range)?,
            thresholding: DynamicThresholding::from_config(NAME, c)?,
            set_alpha_to_one: c.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
        })
    }
}

/// Denoising diffusion implicit model sampler.
#[derive(Debug, Clone)]
pub struct DDIMScheduler {
    pub config: DDIMSchedulerConfig,
    /// η of Song et al. eq. 16: 0 is deterministic DDIM, 1 is the DDPM posterior variance.
    pub eta: f32,
    /// Recompute ε from the clipped x̂_0 (diffusers' `use_clipped_model_output`).
    pub use_clipped_model_output: bool,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: Option<usize>,
    /// N of the N×C×H×W slices `step` gets (only thresholding needs it).
    num_images: Option<usize>,
    timesteps: Vec<f32>,
}

impl DDIMScheduler {
    pub fn new(config: DDIMSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            timesteps: (0..config.beta.num_train_timesteps)
                .rev()
                .map(|t| t as f32)
                .collect(),
            config,
            eta: 0.0,
            use_clipped_model_output: false,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: None,
            num_images: None,
        })
    }

    /// Song et al. eq. 16 without η: σ_t²/η² = (1 − ᾱ_{t−Δ})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t−Δ}).
    fn variance(&self, alpha_prod_t: f32, alpha_prod_t_prev: f32) -> f32 {
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev)
    }
}

impl Scheduler for DDIMScheduler {
    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddim
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        self.num_inference_steps = Some(num_inference_steps);
        self.timesteps = ddpm_timesteps(
            self.config.timestep_spacing,
            big_t,
            num_inference_steps,
            self.config.steps_offset,
        )
        .into_iter()
        .map(|t| t as f32)
        .collect();
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

    fn set_use_clipped_model_output(&mut self, on: bool) {
        self.use_clipped_model_output = on;
    }

    fn needs_step_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &[f32],
        timestep: f32,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput, SamplerError> {
        check_lengths(model_output, sample, noise)?;
        let n = self
            .num_inference_steps
            .ok_or(SamplerError::TimestepsNotSet { scheduler: NAME })?;
        let t = int_timestep(timestep);

        // 1. get previous step value t − Δ
        let prev_timestep = t - (self.config.beta.num_train_timesteps / n) as i64;

        // 2. compute alphas, betas
        let alpha_prod_t = alpha_cumprod_at(NAME, &self.alphas_cumprod, t)?;
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            alpha_cumprod_at(NAME, &self.alphas_cumprod, prev_timestep)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let sqrt_a = alpha_prod_t.sqrt();
        let sqrt_b = beta_prod_t.sqrt();

        // 3. predicted x_0 ("predicted x_0" of Song et al. eq. 12) and ε
        let (mut pred_original_sample, mut pred_epsilon): (Vec<f32>, Vec<f32>) =
            match self.config.prediction_type {
                PredictionType::Epsilon => (
                    model_output
                        .iter()
                        .zip(sample)
                        .map(|(&m, &x)| (x - sqrt_b * m) / sqrt_a)
                        .collect(),
                    model_output.to_vec(),
                ),
                PredictionType::Sample => (
                    model_output.to_vec(),
                    model_output
                        .iter()
                        .zip(sample)
                        .map(|(&x0, &x)| (x - sqrt_a * x0) / sqrt_b)
                        .collect(),
                ),
                // Salimans & Ho 2022, section 4: x̂_0 = √ᾱ x − √(1−ᾱ) v, ε̂ = √ᾱ v + √(1−ᾱ) x
                PredictionType::VPrediction => (
                    model_output
                        .iter()
                        .zip(sample)
                        .map(|(&m, &x)| sqrt_a * x - sqrt_b * m)
                        .collect(),
                    model_output
                        .iter()
                        .zip(sample)
                        .map(|(&m, &x)| sqrt_a * m + sqrt_b * x)
                        .collect(),
                ),
            };

        // 4. threshold or clip "predicted x_0"
        if let Some(th) = self.config.thresholding {
            th.apply(NAME, &mut pred_original_sample, self.num_images)?;
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            for v in &mut pred_original_sample {
                *v = v.clamp(-r, r);
            }
        }

        // 5. σ_t(η) of Song et al. eq. 16
        let variance = self.variance(alpha_prod_t, alpha_prod_t_prev);
        let std_dev_t = self.eta * variance.sqrt();

        if self.use_clipped_model_output {
            // ε re-derived from the clipped x̂_0 (Glide's choice)
            pred_epsilon = pred_original_sample
                .iter()
                .zip(sample)
                .map(|(&x0, &x)| (x - sqrt_a * x0) / sqrt_b)
                .collect();
        }

        // 6. "direction pointing to x_t" of eq. 12: √(1 − ᾱ_{t−Δ} − σ_t²) ε̂
        // For η ≤ 1 the radicand is ≥ 0 (σ_t² ≤ η²(1 − ᾱ_{t−Δ})), and exactly 0 at η = 1 where
        // ᾱ_t = 0 (a zero-SNR schedule's first step): there f32 rounding can take it just below 0,
        // where diffusers' sqrt returns NaN. Clamp that rounding; η > 1 keeps diffusers' NaN.
        let radicand = 1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t;
        let dir_coeff = if self.eta <= 1.0 {
            radicand.max(0.0).sqrt()
        } else {
            radicand.sqrt()
        };
        // 7. x_{t−Δ} without the random noise, eq. 12
        let sqrt_a_prev = alpha_prod_t_prev.sqrt();
        let mut prev_sample: Vec<f32> = pred_original_sample
            .iter()
            .zip(&pred_epsilon)
            .map(|(&x0, &e)| sqrt_a_prev * x0 + dir_coeff * e)
            .collect();

        // 8. + σ_t z (eq. 12's "random noise"); diffusers draws it at every step when η > 0
        if self.eta > 0.0 {
            let noise = noise.ok_or(SamplerError::MissingNoise {
                scheduler: NAME,
                timestep,
            })?;
            for (p, &z) in prev_sample.iter_mut().zip(noise) {
                *p += std_dev_t * z;
            }
        }

        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// √ᾱ_t and √(1 − ᾱ_t) at `timesteps[index]`, as `DDIMScheduler.add_noise`.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        match self.timesteps.get(index) {
            Some(&t) => Ok(NoiseLevel::from_alpha_cumprod(alpha_cumprod_at(
                NAME,
                &self.alphas_cumprod,
                int_timestep(t),
            )?)),
            None => Ok(NoiseLevel::CLEAN),
        }
    }

    /// Stateless: every step finds its place from its timestep.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variance_matches_diffusers_test_values() {
        // diffusers tests/schedulers/test_scheduler_ddim.py::test_variance
        let s = DDIMScheduler::new(DDIMSchedulerConfig::default()).unwrap();
        let v = |t: i64, p: i64| {
            let a = alpha_cumprod_at(NAME, &s.alphas_cumprod, t).unwrap();
            let ap = if p >= 0 {
                alpha_cumprod_at(NAME, &s.alphas_cumprod, p).unwrap()
            } else {
                s.final_alpha_cumprod
            };
            s.variance(a, ap)
        };
        assert!((v(0, 0) - 0.0).abs() < 1e-5);
        assert!((v(420, 400) - 0.14771).abs() < 1e-5);
        assert!((v(980, 960) - 0.32460).abs() < 1e-5);
        assert!((v(487, 486) - 0.00979).abs() < 1e-5);
        assert!((v(999, 998) - 0.02).abs() < 1e-5);
    }

    #[test]
    fn eta_one_on_a_zero_snr_schedule_stays_finite() {
        // At η = 1 the direction coefficient √(1 − ᾱ_{t−Δ} − σ_t²) is exactly 0 where ᾱ_t = 0
        // (the first step of a zero-SNR schedule, with v prediction as such models use); f32
        // rounding can take the radicand just below, where diffusers' sqrt gives NaN.
        for big_t in [100, 250, 500, 777, 1000] {
            for steps in 1..=40 {
                let config = SchedulerConfig::from_json_str(&format!(
                    r#"{{"num_train_timesteps": {big_t}, "rescale_betas_zero_snr": true,
                        "timestep_spacing": "trailing", "prediction_type": "v_prediction"}}"#
                ))
                .unwrap();
                let mut s =
                    DDIMScheduler::new(DDIMSchedulerConfig::from_config(&config).unwrap()).unwrap();
                s.eta = 1.0;
                s.set_timesteps(steps).unwrap();
                let t = s.timesteps()[0];
                let x = [0.3f32, -1.2, 0.8];
                let out = s
                    .step(&[0.5, 0.1, -0.7], t, &x, Some(&[1.0, -0.5, 0.2]))
                    .unwrap();
                assert!(
                    out.prev_sample.iter().all(|v| v.is_finite()),
                    "T = {big_t}, {steps} steps, t = {t}: {:?}",
                    out.prev_sample
                );
            }
        }
    }

    #[test]
    fn timestep_past_the_schedule_is_an_error_not_a_clamp() {
        // leading spacing with steps_offset = 1 and n = T visits t = T, which diffusers cannot
        // index either.
        let mut s = DDIMScheduler::new(DDIMSchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(1000).unwrap();
        assert_eq!(s.timesteps()[0], 1000.0);
        let err = s
            .step(&[0.0], 1000.0, &[0.0], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1000") && err.contains("steps_offset"),
            "{err}"
        );
    }

    #[test]
    fn step_before_set_timesteps_is_an_error() {
        let mut s = DDIMScheduler::new(DDIMSchedulerConfig::default()).unwrap();
        let err = s.step(&[0.0], 999.0, &[0.0], None).unwrap_err();
        assert!(err.to_string().contains("set_timesteps"));
    }
}
