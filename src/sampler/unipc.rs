//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
//! Diffusion Models"), diffusers' `UniPCMultistepScheduler`.
//!
//! Notation (diffusers, as in [`super::dpm_solver`]): σ is the VE noise level √((1−ᾱ)/ᾱ);
//! α_t = 1/√(σ²+1), σ_t = σ·α_t; λ = log α_t − log σ_t; h = λ_t − λ_s0 and hh = −h for the data
//! prediction form (x̂₀, `predict_x0`), h for the noise prediction form (ε̂); m_i are the
//! converted model outputs, newest last; r_k = (λ_{s_k} − λ_{s0})/h; D1_k = (m_k − m0)/r_k.
//! B(h) = hh (`bh1`) or e^hh − 1 (`bh2`).
//!
//! Each `step` (1) converts the model output, (2) corrects the previous step's result with it
//! (UniC: the model output at x_t is free information about the step just taken), then (3)
//! predicts the next sample (UniP). The coefficients are computed in f64 from diffusers' f32 σ's
//! and applied in f32.

use std::collections::VecDeque;

use super::dpm_solver::FinalSigmasType;
use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, dpm_solver_timesteps, BetaConfig, PredictionType, TimestepSpacing,
};
use super::sigmas::{
    alpha_sigma, eps_from_output, lambda, multistep_step_index, spaced_schedule, x0_from_output,
    SigmaSpacing,
};
use super::threshold::DynamicThresholding;
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "UniPCMultistepScheduler";

/// UniPC's B(h) (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPCSolverType {
    /// B(h) = h (recommended for unconditional sampling with few steps).
    Bh1,
    /// B(h) = e^h − 1 (the default).
    Bh2,
}

/// `UniPCMultistepScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPCMultistepSchedulerConfig {
    pub beta: BetaConfig,
    /// 1 to 3 (the corrector makes the effective order one higher).
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    /// Dynamic thresholding of x̂₀ (data prediction form only, as diffusers).
    pub thresholding: Option<DynamicThresholding>,
    /// The data-prediction form (x̂₀) rather than the noise-prediction form (ε̂).
    pub predict_x0: bool,
    pub solver_type: UniPCSolverType,
    /// Drop to lower orders over the last steps (`min(order, steps left)`).
    pub lower_order_final: bool,
    /// Step indices whose corrector is skipped (`disable_corrector`).
    pub disable_corrector: Vec<i64>,
    pub sigma_spacing: SigmaSpacing,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for UniPCMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: None,
            predict_x0: true,
            solver_type: UniPCSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            sigma_spacing: SigmaSpacing::Discrete,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl UniPCMultistepSchedulerConfig {
    /// The keys `UniPCMultistepScheduler` accepts, defaults for the absent ones; options this
    /// crate does not implement, and combinations for which diffusers' last step is NaN or ∞,
    /// are errors naming them.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let solver_type = match c.solver_type.as_deref() {
            None => d.solver_type,
            Some("bh1") => UniPCSolverType::Bh1,
            // diffusers maps the other solvers' types to bh2.
            Some("bh2" | "midpoint" | "heun" | "logrho") => UniPCSolverType::Bh2,
            Some(other) => {
                return Err(SamplerError::UnsupportedValue {
                    field: "solver_type",
                    value: other.into(),
                    supported: "bh1, bh2",
                })
            }
        };
        let solver_order = c.solver_order.unwrap_or(d.solver_order);
        if !(1..=3).contains(&solver_order) {
            return Err(SamplerError::UnsupportedValue {
                field: "solver_order",
                value: solver_order.to_string(),
                supported: "1, 2, 3",
            });
        }
        let final_sigmas_type =
            FinalSigmasType::from_config(c.final_sigmas_type.as_deref(), d.final_sigmas_type)?;
        let predict_x0 = c.predict_x0.unwrap_or(d.predict_x0);
        let lower_order_final = c.lower_order_final.unwrap_or(d.lower_order_final);
        if final_sigmas_type == FinalSigmasType::Zero {
            // At σ = 0, h = ∞: diffusers' last update multiplies ∞ by 0 in these cases.
            let why = if !predict_x0 {
                Some("predict_x0 = false")
            } else if solver_type == UniPCSolverType::Bh1 {
                Some("solver_type = bh1")
            } else if !lower_order_final && solver_order > 1 {
                Some("lower_order_final = false with solver_order > 1")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SamplerError::Unsupported {
                    scheduler: NAME,
                    feature: format!(
                        "{why} with final_sigmas_type = zero (diffusers' last step is NaN or ∞ \
                         there; use final_sigmas_type = sigma_min)"
                    ),
                });
            }
        }
        let mut beta = c.beta_config()?;
        beta.rescale_betas_zero_snr = c.rescale_betas_zero_snr.unwrap_or(false);
        Ok(Self {
            beta,
            solver_order,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            thresholding: DynamicThresholding::from_config(NAME, c)?,
            predict_x0,
            solver_type,
            lower_order_final,
            disable_corrector: c.disable_corrector.clone().unwrap_or_default(),
            sigma_spacing: SigmaSpacing::from_config(NAME, c)?,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
            final_sigmas_type,
        })
    }
}

/// Solves the small dense system A·x = b (Gaussian elimination with partial pivoting, as LAPACK's
/// `getrf`/`getrs` behind `torch.linalg.solve`).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (i, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, &p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + i] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// UniPC sampler.
#[derive(Debug, Clone)]
pub struct UniPCMultistepScheduler {
    pub config: UniPCMultistepSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then the final σ.
    sigmas: Vec<f32>,
    /// The last `solver_order` converted model outputs, oldest first.
    model_outputs: VecDeque<Vec<f32>>,
    /// The sample the last predictor started from (what the corrector corrects).
    last_sample: Option<Vec<f32>>,
    /// The order of the last predictor (the corrector's order).
    this_order: usize,
    lower_order_nums: usize,
    step_index: Option<usize>,
    /// N of the N×C×H×W slices `step` gets (only thresholding needs it).
    num_images: Option<usize>,
}

impl UniPCMultistepScheduler {
    pub fn new(config: UniPCMultistepSchedulerConfig) -> Result<Self, SamplerError> {
        let mut alphas_cumprod = config.beta.alphas_cumprod()?;
        if config.beta.rescale_betas_zero_snr {
            // diffusers: keep the first σ finite by making ᾱ_T tiny instead of exactly 0.
            let last = alphas_cumprod.len() - 1;
            alphas_cumprod[last] = 2f32.powi(-24);
        }
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: VecDeque::new(),
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
            step_index: None,
            num_images: None,
        })
    }

    /// The VE σ's of this run (one per timestep, plus the final σ).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' `convert_model_output`: x̂₀ (thresholded if configured) for the data-prediction
    /// form, ε̂ for the noise-prediction form.
    fn convert_model_output(
        &self,
        model_output: &[f32],
        sample: &[f32],
        sigma: f32,
    ) -> Result<Vec<f32>, SamplerError> {
        if self.config.predict_x0 {
            let mut x0 = x0_from_output(self.config.prediction_type, model_output, sample, sigma);
            if let Some(th) = self.config.thresholding {
                th.apply(NAME, &mut x0, self.num_images)?;
            }
            Ok(x0)
        } else {
            Ok(eps_from_output(
                self.config.prediction_type,
                model_output,
                sample,
                sigma,
            ))
        }
    }

    /// The coefficients shared by UniP and UniC (Zhao et al. 2023, algorithms 1–2 with B(h)):
    /// returns (hh, h·φ₁(hh) = e^hh − 1, B(h), R, b) where R_{ik} = r_k^i and
    /// b_i = h·φ_{i+1}(hh)·i!/B(h) for i = 0..order.
    fn coefficients(&self, h: f64, rks: &[f64]) -> (f64, f64, Vec<Vec<f64>>, Vec<f64>) {
        let order = rks.len();
        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = libm::expm1(hh);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial_i = 1.0;
        let b_h = match self.config.solver_type {
            UniPCSolverType::Bh1 => hh,
            UniPCSolverType::Bh2 => libm::expm1(hh),
        };
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|&rk| libm::pow(rk, (i - 1) as f64))
                    .collect(),
            );
            b.push(h_phi_k * factorial_i / b_h);
            factorial_i *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i;
        }
        (h_phi_1, b_h, r, b)
    }

    /// x_t_ = (σ_t/σ_s0)·x − α_t·hφ₁·m0 (x̂₀ form) or (α_t/α_s0)·x − σ_t·hφ₁·m0 (ε̂ form), the
    /// first-order part of both updates, and the factor α_t·B(h) (σ_t·B(h)) of the rest.
    fn base(&self, t: (f32, f32), s0: (f32, f32), h_phi_1: f64, b_h: f64) -> (f32, f32, f32) {
        let ((alpha_t, sigma_t), (alpha_s0, sigma_s0)) = (t, s0);
        if self.config.predict_x0 {
            (
                sigma_t / sigma_s0,
                (f64::from(alpha_t) * h_phi_1) as f32,
                (f64::from(alpha_t) * b_h) as f32,
            )
        } else {
            (
                alpha_t / alpha_s0,
                (f64::from(sigma_t) * h_phi_1) as f32,
                (f64::from(sigma_t) * b_h) as f32,
            )
        }
    }

    /// UniP-p with B(h) (diffusers' `multistep_uni_p_bh_update`): from `x` at step `idx` to
    /// the next σ, using the last `order` converted outputs.
    fn predictor(&self, idx: usize, x: &[f32], order: usize) -> Vec<f32> {
        let n = self.model_outputs.len();
        let m0 = &self.model_outputs[n - 1];
        let t = alpha_sigma(self.sigmas[idx + 1]);
        let s0 = alpha_sigma(self.sigmas[idx]);
        // 1. h and the ratios r_k of the earlier steps' λ's
        let lambda_s0 = lambda(s0.0, s0.1);
        let h = lambda(t.0, t.1) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s: Vec<Vec<f32>> = Vec::with_capacity(order);
        for i in 1..order {
            let (a, s) = alpha_sigma(self.sigmas[idx - i]);
            let rk = (lambda(a, s) - lambda_s0) / h;
            let mi = &self.model_outputs[n - 1 - i];
            let rk32 = rk as f32;
            d1s.push(mi.iter().zip(m0).map(|(&a, &b)| (a - b) / rk32).collect());
            rks.push(rk);
        }
        rks.push(1.0);
        // 2. ρ^p: 1/2 for order 2, else R[:−1, :−1] ρ = b[:−1]
        let (h_phi_1, b_h, r, b) = self.coefficients(h, &rks);
        let rhos_p: Vec<f32> = match order {
            1 => Vec::new(),
            2 => vec![0.5],
            _ => {
                let k = order - 1;
                let a: Vec<Vec<f64>> = r[..k].iter().map(|row| row[..k].to_vec()).collect();
                solve(a, b[..k].to_vec())
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            }
        };
        // 3. x_t = x_t_ − α_t B(h) Σ ρ_k D1_k
        let (c_x, c_m0, c_res) = self.base(t, s0, h_phi_1, b_h);
        (0..x.len())
            .map(|j| {
                let x_t_ = c_x * x[j] - c_m0 * m0[j];
                if d1s.is_empty() {
                    // diffusers multiplies by a literal 0 here (∞·0 is NaN; from_config refuses
                    // the configurations where c_res is infinite).
                    x_t_ - c_res * 0.0
                } else {
                    let res: f32 = rhos_p.iter().zip(&d1s).map(|(&r, d)| r * d[j]).sum();
                    x_t_ - c_res * res
                }
            })
            .collect()
    }

    /// UniC-p with B(h) (diffusers' `multistep_uni_c_bh_update`): corrects `this_sample` (the
    /// previous predictor's result, now at step `idx`) with the model output there,
    /// `this_model_output`; `last_sample` is where that predictor started.
    fn corrector(
        &self,
        idx: usize,
        this_model_output: &[f32],
        last_sample: &[f32],
        order: usize,
    ) -> Vec<f32> {
        let n = self.model_outputs.len();
        let m0 = &self.model_outputs[n - 1];
        let t = alpha_sigma(self.sigmas[idx]);
        let s0 = alpha_sigma(self.sigmas[idx - 1]);
        let lambda_s0 = lambda(s0.0, s0.1);
        let h = lambda(t.0, t.1) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s: Vec<Vec<f32>> = Vec::with_capacity(order);
        for i in 1..order {
            let (a, s) = alpha_sigma(self.sigmas[idx - (i + 1)]);
            let rk = (lambda(a, s) - lambda_s0) / h;
            let mi = &self.model_outputs[n - 1 - i];
            let rk32 = rk as f32;
            d1s.push(mi.iter().zip(m0).map(|(&a, &b)| (a - b) / rk32).collect());
            rks.push(rk);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, r, b) = self.coefficients(h, &rks);
        // ρ^c: 1/2 for order 1, else R ρ = b
        let rhos_c: Vec<f32> = if order == 1 {
            vec![0.5]
        } else {
            solve(r, b).into_iter().map(|v| v as f32).collect()
        };
        let (c_x, c_m0, c_res) = self.base(t, s0, h_phi_1, b_h);
        let last = rhos_c[rhos_c.len() - 1];
        (0..last_sample.len())
            .map(|j| {
                let x_t_ = c_x * last_sample[j] - c_m0 * m0[j];
                let corr: f32 = rhos_c.iter().zip(&d1s).map(|(&r, d)| r * d[j]).sum();
                let d1_t = this_model_output[j] - m0[j];
                x_t_ - c_res * (corr + last * d1_t)
            })
            .collect()
    }
}

impl Scheduler for UniPCMultistepScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::UniPc
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        let (timesteps, mut sigmas, sigma_last) = spaced_schedule(
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
        sigmas.push(match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => sigma_last,
        });
        self.sigmas = sigmas;
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.model_outputs.clear();
        self.last_sample = None;
        self.lower_order_nums = 0;
        self.this_order = 1;
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
        // 1. the model output in the solver's form (x̂₀ or ε̂), and the preview x̂₀
        let converted = self.convert_model_output(model_output, sample, self.sigmas[idx])?;
        let pred_original_sample = if self.config.predict_x0 {
            converted.clone()
        } else {
            let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx]);
            converted
                .iter()
                .zip(sample)
                .map(|(&e, &x)| (x - sigma_t * e) / alpha_t)
                .collect()
        };
        // 2. UniC: correct the last predictor's result with this model output
        let use_corrector = idx > 0
            && !self.config.disable_corrector.contains(&(idx as i64 - 1))
            && self.last_sample.is_some();
        let corrected = match (&self.last_sample, use_corrector) {
            (Some(last), true) => Some(self.corrector(idx, &converted, last, self.this_order)),
            _ => None,
        };
        let x = corrected.unwrap_or_else(|| sample.to_vec());
        if self.model_outputs.len() == self.config.solver_order {
            self.model_outputs.pop_front();
        }
        self.model_outputs.push_back(converted);
        // 3. UniP: predict the next sample, lower order for the warm-up and the last steps
        let order = if self.config.lower_order_final {
            self.config.solver_order.min(num_steps - idx)
        } else {
            self.config.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev_sample = self.predictor(idx, &x, self.this_order);
        self.last_sample = Some(x);
        if self.lower_order_nums < self.config.solver_order {
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

    /// Starts the history afresh: no corrector and first order at `index`, as in an img2img run
    /// that begins there.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.model_outputs.clear();
        self.last_sample = None;
        self.lower_order_nums = 0;
        self.this_order = 1;
        self.step_index = Some(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_matches_a_hand_solution() {
        let x = solve(
            vec![
                vec![1.0, 1.0, 1.0],
                vec![-0.5, 0.25, 1.0],
                vec![0.25, 0.0625, 1.0],
            ],
            vec![3.0, 0.75, 1.3125],
        );
        for (g, w) in x.iter().zip([1.0, 1.0, 1.0]) {
            assert!((g - w).abs() < 1e-12, "{x:?}");
        }
    }

    #[test]
    fn nan_configurations_are_refused_by_name() {
        for (json, word) in [
            (r#"{"solver_type": "bh1"}"#, "bh1"),
            (r#"{"predict_x0": false}"#, "predict_x0"),
            (r#"{"lower_order_final": false}"#, "lower_order_final"),
        ] {
            let c = SchedulerConfig::from_json_str(json).unwrap();
            let err = UniPCMultistepSchedulerConfig::from_config(&c)
                .unwrap_err()
                .to_string();
            assert!(err.contains(word) && err.contains("sigma_min"), "{err}");
        }
        let c = SchedulerConfig::from_json_str(
            r#"{"solver_type": "bh1", "final_sigmas_type": "sigma_min"}"#,
        )
        .unwrap();
        assert!(UniPCMultistepSchedulerConfig::from_config(&c).is_ok());
    }
}
