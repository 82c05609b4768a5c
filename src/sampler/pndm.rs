//! Pseudo numerical methods (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on
//! Manifolds"), diffusers' `PNDMScheduler`: a pseudo Runge–Kutta warm-up (PRK, 4 model calls per
//! step for the first 3 steps) then pseudo linear multistep (PLMS, one call per step), or PLMS
//! from the start with `skip_prk_steps` (the Stable Diffusion v1 setting).
//!
//! Notation: ᾱ_t as in DDPM; ε̂ the noise prediction; the transfer φ(x_t, ε̂, t → t′) of Liu et
//! al. eq. 11 moves x from t to t′ along the DDIM direction:
//! x_{t′} = √(ᾱ_{t′}/ᾱ_t)·x_t − (ᾱ_{t′} − ᾱ_t)·ε̂ / (ᾱ_t √(1−ᾱ_{t′}) + √(ᾱ_t (1−ᾱ_t) ᾱ_{t′})).
//! The step logic follows diffusers' counter (not the timestep): the PRK entries repeat each
//! half-step timestep, and with `skip_prk_steps` the second timestep is listed twice (an
//! averaged redo of the first step). Scalars are f32, as in diffusers.

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, np_arange, np_linspace, BetaConfig, PredictionType, TimestepSpacing,
};
use super::{
    alpha_cumprod_at, check_lengths, int_timestep, SamplerError, SamplerKind, Scheduler,
    SchedulerConfig, StepOutput,
};

const NAME: &str = "PNDMScheduler";

/// PRK's order: the number of warm-up steps' worth of timesteps it uses.
const PNDM_ORDER: usize = 4;

/// `PNDMScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PNDMSchedulerConfig {
    pub beta: BetaConfig,
    pub skip_prk_steps: bool,
    /// ᾱ after the last step: 1, or ᾱ_0 (`set_alpha_to_one`, default false).
    pub set_alpha_to_one: bool,
    /// epsilon or v_prediction (diffusers raises for `sample`).
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for PNDMSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl PNDMSchedulerConfig {
    /// The keys `PNDMScheduler` accepts, defaults for the absent ones (no `clip_sample`,
    /// `thresholding` or `rescale_betas_zero_snr`: ignored, as in diffusers).
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let prediction_type = c.prediction_type_or(d.prediction_type)?;
        if prediction_type == PredictionType::Sample {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "prediction_type = sample (diffusers raises ValueError too)".into(),
            });
        }
        let mut beta = c.beta_config()?;
        beta.rescale_betas_zero_snr = false;
        Ok(Self {
            beta,
            skip_prk_steps: c.skip_prk_steps.unwrap_or(d.skip_prk_steps),
            set_alpha_to_one: c.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            prediction_type,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
        })
    }
}

/// PNDM sampler.
#[derive(Debug, Clone)]
pub struct PNDMScheduler {
    pub config: PNDMSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    /// The PRK entries (empty with `skip_prk_steps`), then the PLMS entries.
    prk_timesteps: Vec<i64>,
    timesteps: Vec<f32>,
    /// Model calls so far (diffusers' `counter`): it decides what each call does.
    counter: usize,
    /// The ε̂'s of past PLMS steps (and of each PRK step's first call), oldest first.
    ets: Vec<Vec<f32>>,
    /// PRK's running 1/6, 1/3, 1/3 sum.
    cur_model_output: Option<Vec<f32>>,
    /// The sample a PRK step (or PLMS's first step) started from.
    cur_sample: Option<Vec<f32>>,
}

impl PNDMScheduler {
    pub fn new(config: PNDMSchedulerConfig) -> Result<Self, SamplerError> {
        if config.prediction_type == PredictionType::Sample {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "prediction_type = sample".into(),
            });
        }
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: 0,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        })
    }

    /// T // n: the spacing the transfers step by.
    fn step_ratio(&self) -> i64 {
        (self.config.beta.num_train_timesteps / self.num_inference_steps) as i64
    }

    /// Liu et al. 2022, eq. 11 (diffusers' `_get_prev_sample`): x from t to `prev_t` along ε̂
    /// (`prev_t` < 0 is the end, ᾱ = `final_alpha_cumprod`).
    fn transfer(
        &self,
        sample: &[f32],
        t: i64,
        prev_t: i64,
        model_output: &[f32],
    ) -> Result<Vec<f32>, SamplerError> {
        let a_t = alpha_cumprod_at(NAME, &self.alphas_cumprod, t)?;
        let a_prev = if prev_t >= 0 {
            alpha_cumprod_at(NAME, &self.alphas_cumprod, prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        // v → ε̂: ε = √ᾱ_t v + √(1−ᾱ_t) x_t
        let eps: Vec<f32> = match self.config.prediction_type {
            PredictionType::VPrediction => model_output
                .iter()
                .zip(sample)
                .map(|(&v, &x)| a_t.sqrt() * v + b_t.sqrt() * x)
                .collect(),
            _ => model_output.to_vec(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let diff = a_prev - a_t;
        Ok(sample
            .iter()
            .zip(&eps)
            .map(|(&x, &e)| sample_coeff * x - diff * e / denom)
            .collect())
    }

    /// diffusers' `step_prk`: the four calls of a Runge–Kutta step (Liu et al. 2022, eq. 13),
    /// at t, t − δ/2 (twice) and t − δ.
    fn step_prk(
        &mut self,
        model_output: &[f32],
        timestep: i64,
        sample: &[f32],
    ) -> Result<Vec<f32>, SamplerError> {
        let half = self.step_ratio() / 2;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_timestep = timestep - diff_to_prev;
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let sixth = (1.0f64 / 6.0) as f32;
        let third = (1.0f64 / 3.0) as f32;
        let add = |acc: Option<Vec<f32>>, w: f32| -> Vec<f32> {
            match acc {
                None => model_output.iter().map(|&m| w * m).collect(),
                Some(mut a) => {
                    for (a, &m) in a.iter_mut().zip(model_output) {
                        *a += w * m;
                    }
                    a
                }
            }
        };
        let effective: Vec<f32> = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(self.cur_model_output.take(), sixth));
                self.ets.push(model_output.to_vec());
                self.cur_sample = Some(sample.to_vec());
                model_output.to_vec()
            }
            1 | 2 => {
                self.cur_model_output = Some(add(self.cur_model_output.take(), third));
                model_output.to_vec()
            }
            _ => {
                // ε̂ = (k1 + 2 k2 + 2 k3 + k4)/6
                let acc = self.cur_model_output.take();
                match acc {
                    Some(acc) => acc
                        .iter()
                        .zip(model_output)
                        .map(|(&a, &m)| a + sixth * m)
                        .collect(),
                    None => model_output.iter().map(|&m| sixth * m).collect(),
                }
            }
        };
        let cur = self.cur_sample.clone().unwrap_or_else(|| sample.to_vec());
        let prev = self.transfer(&cur, t, prev_timestep, &effective)?;
        self.counter += 1;
        Ok(prev)
    }

    /// diffusers' `step_plms`: Adams–Bashforth combinations of the last ε̂'s (Liu et al. 2022,
    /// eq. 12), with a second-order averaged redo of the very first step.
    fn step_plms(
        &mut self,
        model_output: &[f32],
        timestep: i64,
        sample: &[f32],
    ) -> Result<Vec<f32>, SamplerError> {
        if !self.config.skip_prk_steps && self.ets.len() < 3 {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "a PLMS step before the 12 PRK warm-up calls (diffusers raises too)"
                    .into(),
            });
        }
        let mut t = timestep;
        let mut prev_timestep = timestep - self.step_ratio();
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.to_vec());
        } else {
            prev_timestep = timestep;
            t = timestep + self.step_ratio();
        }
        let e = &self.ets;
        let n = e.len();
        let mut from = sample.to_vec();
        let eps: Vec<f32> = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.to_vec());
            model_output.to_vec()
        } else if n == 1 && self.counter == 1 {
            if let Some(cur) = self.cur_sample.take() {
                from = cur;
            }
            model_output
                .iter()
                .zip(&e[n - 1])
                .map(|(&m, &e1)| (m + e1) / 2.0)
                .collect()
        } else if n == 2 {
            e[1].iter()
                .zip(&e[0])
                .map(|(&e1, &e2)| (3.0 * e1 - e2) / 2.0)
                .collect()
        } else if n == 3 {
            (0..from.len())
                .map(|j| (23.0 * e[2][j] - 16.0 * e[1][j] + 5.0 * e[0][j]) / 12.0)
                .collect()
        } else {
            let w = (1.0f64 / 24.0) as f32;
            (0..from.len())
                .map(|j| {
                    w * (55.0 * e[n - 1][j] - 59.0 * e[n - 2][j] + 37.0 * e[n - 3][j]
                        - 9.0 * e[n - 4][j])
                })
                .collect()
        };
        let prev = self.transfer(&from, t, prev_timestep, &eps)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for PNDMScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Pndm
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        let n = num_inference_steps;
        if !self.config.skip_prk_steps && n < PNDM_ORDER {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: format!(
                    "{n} steps without skip_prk_steps (the Runge–Kutta warm-up needs \
                     num_inference_steps >= {PNDM_ORDER})"
                ),
            });
        }
        // The spaced timesteps, ascending.
        let ts: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (big_t - 1) as f64, n)
                .into_iter()
                .map(|v| v.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => {
                let step_ratio = big_t / n;
                (0..n)
                    .map(|i| (i * step_ratio) as i64 + self.config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let step_ratio = big_t as f64 / n as f64;
                let mut v: Vec<i64> = np_arange(big_t as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|v| v.round_ties_even() as i64 - 1)
                    .collect();
                v.reverse();
                v
            }
        };
        self.num_inference_steps = n;
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.config.skip_prk_steps {
            // [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed: the second timestep twice.
            let len = ts.len();
            let mut v: Vec<i64> = ts[..len - 1].to_vec();
            v.extend_from_slice(&ts[len.saturating_sub(2)..len - 1]);
            v.push(ts[len - 1]);
            v.reverse();
            (Vec::new(), v)
        } else {
            // The top 4 timesteps and their half-steps: each of a_i, a_i + δ/2, then all but
            // the last doubled, the ends trimmed, reversed (diffusers' numpy expression).
            let half = (big_t / n / 2) as i64;
            let top = &ts[ts.len() - PNDM_ORDER..];
            let mut base: Vec<i64> = top.iter().flat_map(|&a| [a, a + half]).collect();
            base.pop();
            let doubled: Vec<i64> = base.iter().flat_map(|&a| [a, a]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = ts[..ts.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.timesteps = prk.iter().chain(&plms).map(|&t| t as f32).collect();
        self.prk_timesteps = prk;
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
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
        if self.timesteps.is_empty() {
            return Err(SamplerError::TimestepsNotSet { scheduler: NAME });
        }
        let t = int_timestep(timestep);
        // The preview: x̂₀ from the raw prediction at (x_t, t).
        let a_t = alpha_cumprod_at(NAME, &self.alphas_cumprod, t)?;
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let pred_original_sample: Vec<f32> = match self.config.prediction_type {
            PredictionType::VPrediction => model_output
                .iter()
                .zip(sample)
                .map(|(&v, &x)| sa * x - sb * v)
                .collect(),
            _ => model_output
                .iter()
                .zip(sample)
                .map(|(&e, &x)| (x - sb * e) / sa)
                .collect(),
        };
        let prev_sample = if self.counter < self.prk_timesteps.len() && !self.config.skip_prk_steps
        {
            self.step_prk(model_output, t, sample)?
        } else {
            self.step_plms(model_output, t, sample)?
        };
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// √ᾱ_t·x₀ + √(1−ᾱ_t)·ε at `timesteps[index]` (`PNDMScheduler.add_noise`); the end of the
    /// run is the clean sample.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        if index == self.timesteps.len() {
            return Ok(NoiseLevel::CLEAN);
        }
        let t = int_timestep(self.timesteps[index]);
        Ok(NoiseLevel::from_alpha_cumprod(alpha_cumprod_at(
            NAME,
            &self.alphas_cumprod,
            t,
        )?))
    }

    /// Restarts the counter and history, as diffusers' state after `set_timesteps` (PNDM follows
    /// its counter, not the timestep, so a late start runs the warm-up logic from there).
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        // The Runge–Kutta warm-up is four entries a step, chosen by the counter: a run that
        // starts part-way would take PRK steps on the PLMS timesteps and land far off (diffusers'
        // img2img does exactly that). Refused, by name.
        if index > 0 && !self.config.skip_prk_steps {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "starting part-way with the Runge–Kutta warm-up (skip_prk_steps = \
                          false; for img2img and inpainting pick DDIM, DPM-Solver++ or UniPC)"
                    .into(),
            });
        }
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_offset_timesteps_match_diffusers_test() {
        // diffusers tests/schedulers/test_scheduler_pndm.py::test_steps_offset
        let cfg = PNDMSchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        };
        let mut s = PNDMScheduler::new(cfg).unwrap();
        s.set_timesteps(10).unwrap();
        let want = [
            901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201,
            101, 1,
        ];
        assert_eq!(s.timesteps(), want.map(|t| t as f32));
        assert!(s.set_timesteps(3).is_err());
    }

    #[test]
    fn a_late_start_with_the_runge_kutta_warm_up_is_refused() {
        let mut s = PNDMScheduler::new(PNDMSchedulerConfig::default()).unwrap();
        s.set_timesteps(20).unwrap();
        assert!(s.set_begin_index(0).is_ok());
        let e = s.set_begin_index(8).unwrap_err().to_string();
        assert!(
            e.contains("part-way") && e.contains("skip_prk_steps"),
            "{e}"
        );
        let mut s = PNDMScheduler::new(PNDMSchedulerConfig {
            skip_prk_steps: true,
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(20).unwrap();
        assert!(s.set_begin_index(8).is_ok());
    }
}
