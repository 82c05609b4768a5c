//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++"), diffusers' `DPMSolverMultistepScheduler`; 2M by default.
//!
//! Notation (diffusers): σ here is the VE noise level √((1−ᾱ)/ᾱ); α_t = 1/√(σ²+1) and
//! σ_t = σ·α_t are the VP coefficients; λ_t = log α_t − log σ_t is the half log-SNR; h = λ_t − λ_s.
//! The data-prediction (`dpmsolver++`) and noise-prediction (`dpmsolver`) forms and their SDE
//! variants are implemented, solver orders 1–3, midpoint and heun. The update coefficients are
//! computed in f64 from diffusers' f32 σ's and applied in f32.

use std::collections::VecDeque;

use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, dpm_solver_timesteps, np_interp_index, np_linspace, sigma_from_alpha_cumprod,
    BetaConfig, BetaSchedule, PredictionType, TimestepSpacing,
};
use super::sigmas::{alpha_sigma, eps_from_output, lambda, sigma_to_t, x0_from_output};
use super::threshold::DynamicThresholding;
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "DPMSolverMultistepScheduler";

/// Which DPM-Solver variant (diffusers' `algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmType {
    /// Data prediction, ODE (Lu et al. 2022b, algorithm 2).
    DpmSolverPlusPlus,
    /// Noise prediction, ODE (Lu et al. 2022a).
    DpmSolver,
    /// Data prediction, SDE (Lu et al. 2022b, appendix).
    SdeDpmSolverPlusPlus,
    /// Noise prediction, SDE.
    SdeDpmSolver,
}

/// How the second-order correction is formed (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// σ after the last step (diffusers' `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmasType {
    /// σ = 0: the last step returns the data prediction.
    Zero,
    /// σ = σ_0 of the training schedule.
    SigmaMin,
}

impl SolverType {
    /// A config's `solver_type` (`None`: `default`); diffusers maps UniPC's and DEIS's solver
    /// types to midpoint.
    pub fn from_config(value: Option<&str>, default: Self) -> Result<Self, SamplerError> {
        match value {
            None => Ok(default),
            Some("midpoint" | "logrho" | "bh1" | "bh2") => Ok(Self::Midpoint),
            Some("heun") => Ok(Self::Heun),
            Some(other) => Err(SamplerError::UnsupportedValue {
                field: "solver_type",
                value: other.into(),
                supported: "midpoint, heun",
            }),
        }
    }
}

impl FinalSigmasType {
    /// A config's `final_sigmas_type` (`None`: `default`).
    pub fn from_config(value: Option<&str>, default: Self) -> Result<Self, SamplerError> {
        match value {
            None => Ok(default),
            Some("zero") => Ok(Self::Zero),
            Some("sigma_min") => Ok(Self::SigmaMin),
            Some(other) => Err(SamplerError::UnsupportedValue {
                field: "final_sigmas_type",
                value: other.into(),
                supported: "zero, sigma_min",
            }),
        }
    }
}

/// How the σ's of a run are chosen (diffusers' `use_*_sigmas` / `use_lu_lambdas` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// σ of the training schedule at the spaced timesteps (the default).
    Discrete,
    /// ρ = 7 spacing of σ^(1/ρ) between σ_max and σ_min (Karras et al. 2022, eq. 5).
    Karras,
    /// σ evenly spaced in log σ.
    Exponential,
    /// log σ evenly spaced (diffusers' `use_lu_lambdas`, after Lu et al. 2022b).
    LuLambdas,
}

/// `DPMSolverMultistepScheduler.__init__` arguments, with diffusers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DPMSolverMultistepSchedulerConfig {
    pub beta: BetaConfig,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmasType,
    pub lambda_min_clipped: f64,
    pub sigma_schedule: SigmaSchedule,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// Dynamic thresholding of the data prediction (`thresholding`).
    pub thresholding: Option<DynamicThresholding>,
}

impl Default for DPMSolverMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            sigma_schedule: SigmaSchedule::Discrete,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            thresholding: None,
        }
    }
}

impl DPMSolverMultistepSchedulerConfig {
    /// The keys `DPMSolverMultistepScheduler` accepts, defaults for the absent ones; options this
    /// crate does not implement are errors naming them.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let karras = c.use_karras_sigmas == Some(true);
        let exponential = c.use_exponential_sigmas == Some(true);
        let beta_sigmas = c.use_beta_sigmas == Some(true);
        if [karras, exponential, beta_sigmas]
            .iter()
            .filter(|&&b| b)
            .count()
            > 1
        {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "more than one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas (diffusers rejects this too)".into(),
            });
        }
        // diffusers' precedence in set_timesteps: karras, lu, exponential, beta, flow.
        let sigma_schedule = if karras {
            SigmaSchedule::Karras
        } else if c.use_lu_lambdas == Some(true) {
            SigmaSchedule::LuLambdas
        } else if exponential {
            SigmaSchedule::Exponential
        } else {
            SigmaSchedule::Discrete
        };
        // Lower in that precedence and not implemented here. (`use_dynamic_shifting` only acts
        // through set_timesteps' `mu`, which image pipelines do not pass, so it is ignored.)
        for (flag, value) in [
            ("use_beta_sigmas", c.use_beta_sigmas),
            ("use_flow_sigmas", c.use_flow_sigmas),
        ] {
            if value == Some(true) && sigma_schedule == SigmaSchedule::Discrete {
                return Err(SamplerError::Unsupported {
                    scheduler: NAME,
                    feature: format!("{flag} = true"),
                });
            }
        }
        if let Some(v @ ("learned" | "learned_range")) = c.variance_type.as_deref() {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: format!("variance_type = {v}"),
            });
        }
        let d = Self::default();
        let algorithm_type = match c.algorithm_type.as_deref() {
            None => d.algorithm_type,
            // diffusers maps `deis` (a DEIS config) to dpmsolver++.
            Some("dpmsolver++" | "deis") => AlgorithmType::DpmSolverPlusPlus,
            Some("dpmsolver") => AlgorithmType::DpmSolver,
            Some("sde-dpmsolver++") => AlgorithmType::SdeDpmSolverPlusPlus,
            Some("sde-dpmsolver") => AlgorithmType::SdeDpmSolver,
            Some(other) => {
                return Err(SamplerError::UnsupportedValue {
                    field: "algorithm_type",
                    value: other.into(),
                    supported: "dpmsolver++, dpmsolver, sde-dpmsolver++, sde-dpmsolver",
                })
            }
        };
        let solver_type = SolverType::from_config(c.solver_type.as_deref(), d.solver_type)?;
        let final_sigmas_type =
            FinalSigmasType::from_config(c.final_sigmas_type.as_deref(), d.final_sigmas_type)?;
        if matches!(
            algorithm_type,
            AlgorithmType::DpmSolver | AlgorithmType::SdeDpmSolver
        ) && final_sigmas_type == FinalSigmasType::Zero
        {
            return Err(SamplerError::UnsupportedValue {
                field: "final_sigmas_type",
                value: "zero".into(),
                supported: "sigma_min, for algorithm_type dpmsolver and sde-dpmsolver",
            });
        }
        let solver_order = c.solver_order.unwrap_or(d.solver_order);
        if !(1..=3).contains(&solver_order) {
            return Err(SamplerError::UnsupportedValue {
                field: "solver_order",
                value: solver_order.to_string(),
                supported: "1, 2, 3",
            });
        }
        if solver_order == 3 && algorithm_type == AlgorithmType::SdeDpmSolver {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "solver_order = 3 with algorithm_type = sde-dpmsolver (diffusers has no such update)".into(),
            });
        }
        Ok(Self {
            beta: c.beta_config()?,
            solver_order,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            algorithm_type,
            solver_type,
            lower_order_final: c.lower_order_final.unwrap_or(d.lower_order_final),
            euler_at_final: c.euler_at_final.unwrap_or(d.euler_at_final),
            final_sigmas_type,
            lambda_min_clipped: c.lambda_min_clipped.unwrap_or(d.lambda_min_clipped),
            sigma_schedule,
            timestep_spacing: c.timestep_spacing_or(d.timestep_spacing)?,
            steps_offset: c.steps_offset.unwrap_or(d.steps_offset),
            thresholding: DynamicThresholding::from_config(NAME, c)?,
        })
    }

    fn data_prediction(&self) -> bool {
        matches!(
            self.algorithm_type,
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
        )
    }

    fn is_sde(&self) -> bool {
        matches!(
            self.algorithm_type,
            AlgorithmType::SdeDpmSolverPlusPlus | AlgorithmType::SdeDpmSolver
        )
    }
}

/// DPM-Solver multistep sampler.
#[derive(Debug, Clone)]
pub struct DPMSolverMultistepScheduler {
    pub config: DPMSolverMultistepSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then the final σ.
    sigmas: Vec<f32>,
    /// The last `solver_order` converted model outputs, oldest first.
    model_outputs: VecDeque<Vec<f32>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
    num_inference_steps: Option<usize>,
    /// N of the N×C×H×W slices `step` gets (only thresholding needs it).
    num_images: Option<usize>,
}

impl DPMSolverMultistepScheduler {
    pub fn new(config: DPMSolverMultistepSchedulerConfig) -> Result<Self, SamplerError> {
        let mut alphas_cumprod = config.beta.alphas_cumprod()?;
        if config.beta.rescale_betas_zero_snr {
            // diffusers: keep the final σ finite by making ᾱ_T tiny instead of exactly 0.
            let last = alphas_cumprod.len() - 1;
            alphas_cumprod[last] = 2f32.powi(-24);
        }
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: VecDeque::new(),
            lower_order_nums: 0,
            step_index: None,
            num_inference_steps: None,
            num_images: None,
        })
    }

    /// The VE σ's of this run (one per timestep, plus the final σ).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' `index_for_timestep`: the second match if the timestep repeats (so a restart
    /// in the middle does not skip a step), the last index if it is absent.
    fn index_for_timestep(&self, timestep: f32) -> usize {
        let hits: Vec<usize> = self
            .timesteps
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == timestep)
            .map(|(i, _)| i)
            .collect();
        match hits.len() {
            0 => self.timesteps.len() - 1,
            1 => hits[0],
            _ => hits[1],
        }
    }

    /// diffusers' `convert_model_output`: x̂_0 for the ++ forms (Lu et al. 2022b, eq. 9), ε̂ for
    /// the noise-prediction forms; with thresholding, x̂_0 is thresholded (and ε̂ re-derived from
    /// it for the noise-prediction forms).
    fn convert_model_output(
        &self,
        model_output: &[f32],
        sample: &[f32],
        sigma: f32,
    ) -> Result<Vec<f32>, SamplerError> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        if self.config.data_prediction() {
            let mut x0 = x0_from_output(self.config.prediction_type, model_output, sample, sigma);
            if let Some(th) = self.config.thresholding {
                th.apply(NAME, &mut x0, self.num_images)?;
            }
            Ok(x0)
        } else {
            let epsilon: Vec<f32> =
                eps_from_output(self.config.prediction_type, model_output, sample, sigma);
            let Some(th) = self.config.thresholding else {
                return Ok(epsilon);
            };
            let mut x0: Vec<f32> = epsilon
                .iter()
                .zip(sample)
                .map(|(&e, &x)| (x - sigma_t * e) / alpha_t)
                .collect();
            th.apply(NAME, &mut x0, self.num_images)?;
            Ok(x0
                .iter()
                .zip(sample)
                .map(|(&x0, &x)| (x - alpha_t * x0) / sigma_t)
                .collect())
        }
    }

    /// First-order update, i.e. DDIM in λ (Lu et al. 2022b, eq. 8 / Lu et al. 2022a, eq. 3.7).
    fn first_order_update(
        &self,
        idx: usize,
        m0: &[f32],
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[idx]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        let (a_t, s_t, a_s, s_s) = (
            f64::from(alpha_t),
            f64::from(sigma_t),
            f64::from(alpha_s),
            f64::from(sigma_s),
        );
        let em = libm::exp(-h);
        let ep = libm::exp(h);
        // x_t = c_x · x_s + c_d · D0 + c_z · z
        let (c_x, c_d, c_z) = match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => (s_t / s_s, -(a_t * (em - 1.0)), 0.0),
            AlgorithmType::DpmSolver => (a_t / a_s, -(s_t * (ep - 1.0)), 0.0),
            AlgorithmType::SdeDpmSolverPlusPlus => (
                s_t / s_s * em,
                a_t * (1.0 - libm::exp(-2.0 * h)),
                s_t * libm::sqrt(1.0 - libm::exp(-2.0 * h)),
            ),
            AlgorithmType::SdeDpmSolver => (
                a_t / a_s,
                -2.0 * (s_t * (ep - 1.0)),
                s_t * libm::sqrt(libm::exp(2.0 * h) - 1.0),
            ),
        };
        combine(sample, c_x, &[(c_d, m0)], noise.map(|z| (c_z, z)))
    }

    /// Second-order multistep update (Lu et al. 2022b, algorithm 2, "2M").
    fn second_order_update(
        &self,
        idx: usize,
        m0: &[f32],
        m1: &[f32],
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[idx]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[idx - 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        // D0 = m0, D1 = (m0 − m1)/r0: the backward difference of the data/noise prediction
        let inv_r0 = (1.0 / r0) as f32;
        let d1: Vec<f32> = m0.iter().zip(m1).map(|(&a, &b)| inv_r0 * (a - b)).collect();
        let (a_t, s_t, a_s0, s_s0) = (
            f64::from(alpha_t),
            f64::from(sigma_t),
            f64::from(alpha_s0),
            f64::from(sigma_s0),
        );
        let em = libm::exp(-h);
        let ep = libm::exp(h);
        let em2 = libm::exp(-2.0 * h);
        use AlgorithmType as A;
        use SolverType as S;
        let (c_x, c_d0, c_d1, c_z) = match (self.config.algorithm_type, self.config.solver_type) {
            (A::DpmSolverPlusPlus, S::Midpoint) => (
                s_t / s_s0,
                -(a_t * (em - 1.0)),
                -0.5 * (a_t * (em - 1.0)),
                0.0,
            ),
            (A::DpmSolverPlusPlus, S::Heun) => (
                s_t / s_s0,
                -(a_t * (em - 1.0)),
                a_t * ((em - 1.0) / h + 1.0),
                0.0,
            ),
            (A::DpmSolver, S::Midpoint) => (
                a_t / a_s0,
                -(s_t * (ep - 1.0)),
                -0.5 * (s_t * (ep - 1.0)),
                0.0,
            ),
            (A::DpmSolver, S::Heun) => (
                a_t / a_s0,
                -(s_t * (ep - 1.0)),
                -(s_t * ((ep - 1.0) / h - 1.0)),
                0.0,
            ),
            (A::SdeDpmSolverPlusPlus, S::Midpoint) => (
                s_t / s_s0 * em,
                a_t * (1.0 - em2),
                0.5 * (a_t * (1.0 - em2)),
                s_t * libm::sqrt(1.0 - em2),
            ),
            (A::SdeDpmSolverPlusPlus, S::Heun) => (
                s_t / s_s0 * em,
                a_t * (1.0 - em2),
                a_t * ((1.0 - em2) / (-2.0 * h) + 1.0),
                s_t * libm::sqrt(1.0 - em2),
            ),
            (A::SdeDpmSolver, S::Midpoint) => (
                a_t / a_s0,
                -2.0 * (s_t * (ep - 1.0)),
                -(s_t * (ep - 1.0)),
                s_t * libm::sqrt(libm::exp(2.0 * h) - 1.0),
            ),
            (A::SdeDpmSolver, S::Heun) => (
                a_t / a_s0,
                -2.0 * (s_t * (ep - 1.0)),
                -2.0 * (s_t * ((ep - 1.0) / h - 1.0)),
                s_t * libm::sqrt(libm::exp(2.0 * h) - 1.0),
            ),
        };
        combine(
            sample,
            c_x,
            &[(c_d0, m0), (c_d1, &d1)],
            noise.map(|z| (c_z, z)),
        )
    }

    /// Third-order multistep update (Lu et al. 2022b, appendix; Lu et al. 2022a, algorithm 5).
    fn third_order_update(
        &self,
        idx: usize,
        m: [&[f32]; 3],
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Vec<f32> {
        let [m0, m1, m2] = m;
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[idx]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[idx - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[idx - 2]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let lambda_s2 = lambda(alpha_s2, sigma_s2);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let h_1 = lambda_s1 - lambda_s2;
        let r0 = h_0 / h;
        let r1 = h_1 / h;
        let (inv_r0, inv_r1) = ((1.0 / r0) as f32, (1.0 / r1) as f32);
        let w = (r0 / (r0 + r1)) as f32;
        let inv_sum = (1.0 / (r0 + r1)) as f32;
        let mut d1 = Vec::with_capacity(m0.len());
        let mut d2 = Vec::with_capacity(m0.len());
        for i in 0..m0.len() {
            let d1_0 = inv_r0 * (m0[i] - m1[i]);
            let d1_1 = inv_r1 * (m1[i] - m2[i]);
            d1.push(d1_0 + w * (d1_0 - d1_1));
            d2.push(inv_sum * (d1_0 - d1_1));
        }
        let (a_t, s_t, a_s0, s_s0) = (
            f64::from(alpha_t),
            f64::from(sigma_t),
            f64::from(alpha_s0),
            f64::from(sigma_s0),
        );
        let em = libm::exp(-h);
        let ep = libm::exp(h);
        let em2 = libm::exp(-2.0 * h);
        let (c_x, c_d0, c_d1, c_d2, c_z) = match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => (
                s_t / s_s0,
                -(a_t * (em - 1.0)),
                a_t * ((em - 1.0) / h + 1.0),
                -(a_t * ((em - 1.0 + h) / (h * h) - 0.5)),
                0.0,
            ),
            AlgorithmType::DpmSolver => (
                a_t / a_s0,
                -(s_t * (ep - 1.0)),
                -(s_t * ((ep - 1.0) / h - 1.0)),
                -(s_t * ((ep - 1.0 - h) / (h * h) - 0.5)),
                0.0,
            ),
            AlgorithmType::SdeDpmSolverPlusPlus => (
                s_t / s_s0 * em,
                a_t * (1.0 - em2),
                a_t * ((1.0 - em2) / (-2.0 * h) + 1.0),
                a_t * ((1.0 - em2 - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5),
                s_t * libm::sqrt(1.0 - em2),
            ),
            // diffusers has no third-order sde-dpmsolver update (it fails there); from_config
            // rejects that combination, so this arm is never taken.
            AlgorithmType::SdeDpmSolver => {
                return self.second_order_update(idx, m0, m1, sample, noise);
            }
        };
        combine(
            sample,
            c_x,
            &[(c_d0, m0), (c_d1, &d1), (c_d2, &d2)],
            noise.map(|z| (c_z, z)),
        )
    }
}

/// c_x·x + Σ c_k·D_k + c_z·z elementwise in f32, left to right as diffusers' expression.
fn combine(
    sample: &[f32],
    c_x: f64,
    terms: &[(f64, &[f32])],
    noise: Option<(f64, &[f32])>,
) -> Vec<f32> {
    let c_x = c_x as f32;
    let mut out: Vec<f32> = sample.iter().map(|&x| c_x * x).collect();
    for &(c, d) in terms {
        let c = c as f32;
        for (o, &v) in out.iter_mut().zip(d) {
            *o += c * v;
        }
    }
    if let Some((c, z)) = noise {
        let c = c as f32;
        for (o, &v) in out.iter_mut().zip(z) {
            *o += c * v;
        }
    }
    out
}

impl Scheduler for DPMSolverMultistepScheduler {
    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    /// `dpm++2m-sde` for the `sde-dpmsolver++` algorithm (however it was chosen: that kind, or a
    /// model config that says so), else `dpm++2m`.
    fn kind(&self) -> SamplerKind {
        if self.config.algorithm_type == AlgorithmType::SdeDpmSolverPlusPlus {
            SamplerKind::DpmSolverSde
        } else {
            SamplerKind::DpmSolverMultistep
        }
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        // Clip the high-noise end where λ falls below lambda_min_clipped (for cosine schedules):
        // count the λ's, ascending from t = T−1, that are < the bound (torch.searchsorted).
        let clipped_idx = self
            .alphas_cumprod
            .iter()
            .rev()
            .map(|&a| lambda(a.sqrt(), (1.0 - a).sqrt()))
            .take_while(|&l| l < self.config.lambda_min_clipped)
            .count();
        let last_timestep = big_t - clipped_idx;
        let timesteps = dpm_solver_timesteps(
            self.config.timestep_spacing,
            big_t,
            last_timestep,
            num_inference_steps,
            self.config.steps_offset,
        );
        let full_sigmas: Vec<f32> = self
            .alphas_cumprod
            .iter()
            .map(|&a| sigma_from_alpha_cumprod(a))
            .collect();
        let (timesteps, mut sigmas) = match self.config.sigma_schedule {
            SigmaSchedule::Discrete => {
                let sigmas: Vec<f32> = timesteps
                    .iter()
                    .map(|&t| np_interp_index(t as f64, &full_sigmas) as f32)
                    .collect();
                (timesteps, sigmas)
            }
            schedule => {
                let n = num_inference_steps;
                let ramp = np_linspace(0.0, 1.0, n);
                // numpy's log of diffusers' f32 σ array stays f32.
                let log_sigmas: Vec<f32> = full_sigmas
                    .iter()
                    .map(|&s| libm::log(f64::from(s)) as f32)
                    .collect();
                let sigma_min = f64::from(full_sigmas[0]);
                let sigma_max = f64::from(full_sigmas[full_sigmas.len() - 1]);
                let new_sigmas: Vec<f64> = match schedule {
                    SigmaSchedule::Karras => {
                        // Karras et al. 2022, eq. 5 with ρ = 7
                        let rho = 7.0;
                        let min_inv_rho = libm::pow(sigma_min, 1.0 / rho);
                        let max_inv_rho = libm::pow(sigma_max, 1.0 / rho);
                        ramp.iter()
                            .map(|&r| libm::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho))
                            .collect()
                    }
                    SigmaSchedule::Exponential => {
                        np_linspace(libm::log(sigma_max), libm::log(sigma_min), n)
                            .into_iter()
                            .map(libm::exp)
                            .collect()
                    }
                    _ => {
                        // log σ linear between its extremes (diffusers' _convert_to_lu, ρ = 1)
                        let lambda_min = f64::from(log_sigmas[0]);
                        let lambda_max = f64::from(log_sigmas[log_sigmas.len() - 1]);
                        ramp.iter()
                            .map(|&r| libm::exp(lambda_max + r * (lambda_min - lambda_max)))
                            .collect()
                    }
                };
                // Karras and Lu round the fractional timesteps (except for the cosine schedule);
                // torch's int64 cast then truncates whatever is left.
                let round = schedule != SigmaSchedule::Exponential
                    && self.config.beta.beta_schedule != BetaSchedule::SquaredcosCapV2;
                let timesteps = new_sigmas
                    .iter()
                    .map(|&s| {
                        let t = sigma_to_t(s, &log_sigmas);
                        (if round { t.round_ties_even() } else { t }) as i64
                    })
                    .collect();
                (timesteps, new_sigmas.iter().map(|&s| s as f32).collect())
            }
        };
        sigmas.push(match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => full_sigmas[0],
        });
        self.sigmas = sigmas;
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.num_inference_steps = Some(self.timesteps.len());
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
        self.config.is_sde()
    }

    fn step(
        &mut self,
        model_output: &[f32],
        timestep: f32,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput, SamplerError> {
        check_lengths(model_output, sample, noise)?;
        let num_steps = self
            .num_inference_steps
            .ok_or(SamplerError::TimestepsNotSet { scheduler: NAME })?;
        let idx = match self.step_index {
            Some(i) => i,
            None => self.index_for_timestep(timestep),
        };
        if idx >= num_steps {
            return Err(SamplerError::StepPastEnd {
                scheduler: NAME,
                step_index: idx,
                num_steps,
            });
        }
        let cfg = &self.config;
        // Improve stability for few steps: drop to lower order at the end (diffusers' rule).
        let lower_order_final = idx == num_steps - 1
            && (cfg.euler_at_final
                || (cfg.lower_order_final && num_steps < 15)
                || cfg.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = idx + 2 == num_steps && cfg.lower_order_final && num_steps < 15;

        let converted = self.convert_model_output(model_output, sample, self.sigmas[idx])?;
        // The preview: x̂_0 directly, or from ε̂ via x̂_0 = (x − σ_t ε̂)/α_t.
        let pred_original_sample = if cfg.data_prediction() {
            converted.clone()
        } else {
            let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx]);
            converted
                .iter()
                .zip(sample)
                .map(|(&e, &x)| (x - sigma_t * e) / alpha_t)
                .collect()
        };
        if self.model_outputs.len() == cfg.solver_order {
            self.model_outputs.pop_front();
        }
        self.model_outputs.push_back(converted);

        let noise = if cfg.is_sde() {
            Some(noise.ok_or(SamplerError::MissingNoise {
                scheduler: NAME,
                timestep,
            })?)
        } else {
            None
        };

        let order = cfg.solver_order;
        let n = self.model_outputs.len();
        let m0 = &self.model_outputs[n - 1];
        let prev_sample = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(idx, m0, sample, noise)
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(idx, m0, &self.model_outputs[n - 2], sample, noise)
        } else {
            let m = [
                m0.as_slice(),
                self.model_outputs[n - 2].as_slice(),
                self.model_outputs[n - 3].as_slice(),
            ];
            self.third_order_update(idx, m, sample, noise)
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

    /// (α_t, σ_t) of `sigmas[index]`: `DPMSolverMultistepScheduler.add_noise` once a pipeline
    /// set a begin index. The end of the run is clean whatever `final_sigmas_type` says, since
    /// the last step returns x̂₀ there.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError> {
        NoiseLevel::vp_at(NAME, &self.sigmas, self.timesteps.len(), index)
    }

    /// Starts the history afresh (diffusers' `set_timesteps` state, then `set_begin_index`): the
    /// first step from here is first order, as in an img2img run that begins at `index`.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.step_index = Some(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_dpmsolver_plus_plus_2m() {
        let c =
            DPMSolverMultistepSchedulerConfig::from_config(&SchedulerConfig::default()).unwrap();
        assert_eq!(c, DPMSolverMultistepSchedulerConfig::default());
        assert_eq!(c.solver_order, 2);
        assert_eq!(c.algorithm_type, AlgorithmType::DpmSolverPlusPlus);
        assert_eq!(c.timestep_spacing, TimestepSpacing::Linspace);
    }

    #[test]
    fn beta_sigmas_are_rejected_by_name() {
        let cfg = SchedulerConfig {
            use_beta_sigmas: Some(true),
            ..Default::default()
        };
        let err = DPMSolverMultistepSchedulerConfig::from_config(&cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use_beta_sigmas"), "{err}");
    }
}
