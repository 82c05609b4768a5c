//! DPM-Solver singlestep (Lu et al. 2022a, "DPM-Solver", algorithms 1–3; Lu et al. 2022b,
//! "DPM-Solver++", algorithm 1), diffusers' `DPMSolverSinglestepScheduler`: DPM-Solver++(2S) by
//! default, orders 1–3.
//!
//! Notation as in [`super::dpm_solver`]: σ is the VE noise level, α_t = 1/√(σ²+1), σ_t = σ·α_t,
//! λ = log α_t − log σ_t. A "singlestep" solver of order k spends k consecutive timesteps on one
//! update: the first model call is a first-order step to an intermediate point (diffusers lists
//! the intermediate points as ordinary timesteps), the k-th combines the k outputs into one step
//! of size h = λ_t − λ_{s_k} from the sample where the group began. `order_list` says which
//! order each timestep takes. The coefficients are computed in f64 from diffusers' f32 σ's and
//! applied in f32.

use super::dpm_solver::{AlgorithmType, FinalSigmasType, SolverType};
use super::noising::{check_index, NoiseLevel};
use super::schedule::{
    check_steps, dpm_solver_timesteps, BetaConfig, PredictionType, TimestepSpacing,
};
use super::sigmas::{
    alpha_sigma, combine, eps_from_output, lambda, multistep_step_index, spaced_schedule,
    training_sigmas, x0_from_output, SigmaSpacing,
};
use super::threshold::DynamicThresholding;
use super::{check_lengths, SamplerError, SamplerKind, Scheduler, SchedulerConfig, StepOutput};

const NAME: &str = "DPMSolverSinglestepScheduler";

/// `DPMSolverSinglestepScheduler.__init__` arguments, with diffusers' defaults. (It has no
/// `timestep_spacing`, `steps_offset` or `rescale_betas_zero_snr`: its timesteps are always
/// linspace, and those keys are ignored, as in diffusers.)
#[derive(Debug, Clone, PartialEq)]
pub struct DPMSolverSinglestepSchedulerConfig {
    pub beta: BetaConfig,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    /// `dpmsolver++`, `dpmsolver` or `sde-dpmsolver++` (diffusers has no singlestep
    /// `sde-dpmsolver`).
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    /// Lower orders at the end. diffusers switches it on for good in `set_timesteps` when the
    /// step count is not a multiple of the order, or the final σ is zero.
    pub lower_order_final: bool,
    pub sigma_spacing: SigmaSpacing,
    pub final_sigmas_type: FinalSigmasType,
    pub lambda_min_clipped: f64,
    pub thresholding: Option<DynamicThresholding>,
}

impl Default for DPMSolverSinglestepSchedulerConfig {
    fn default() -> Self {
        Self {
            beta: BetaConfig::default(),
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: false,
            sigma_spacing: SigmaSpacing::Discrete,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            thresholding: None,
        }
    }
}

impl DPMSolverSinglestepSchedulerConfig {
    /// The keys `DPMSolverSinglestepScheduler` accepts, defaults for the absent ones; options
    /// this crate does not implement are errors naming them.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SamplerError> {
        let d = Self::default();
        let algorithm_type = match c.algorithm_type.as_deref() {
            None => d.algorithm_type,
            Some("dpmsolver++" | "deis") => AlgorithmType::DpmSolverPlusPlus,
            Some("dpmsolver") => AlgorithmType::DpmSolver,
            Some("sde-dpmsolver++") => AlgorithmType::SdeDpmSolverPlusPlus,
            Some(other) => {
                return Err(SamplerError::UnsupportedValue {
                    field: "algorithm_type",
                    value: other.into(),
                    supported: "dpmsolver++, dpmsolver, sde-dpmsolver++",
                })
            }
        };
        let solver_type = SolverType::from_config(c.solver_type.as_deref(), d.solver_type)?;
        let final_sigmas_type =
            FinalSigmasType::from_config(c.final_sigmas_type.as_deref(), d.final_sigmas_type)?;
        if algorithm_type == AlgorithmType::DpmSolver && final_sigmas_type == FinalSigmasType::Zero
        {
            return Err(SamplerError::UnsupportedValue {
                field: "final_sigmas_type",
                value: "zero".into(),
                supported: "sigma_min, for algorithm_type dpmsolver",
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
        if let Some(v @ ("learned" | "learned_range")) = c.variance_type.as_deref() {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: format!("variance_type = {v}"),
            });
        }
        let thresholding = DynamicThresholding::from_config(NAME, c)?;
        if thresholding.is_some() && algorithm_type == AlgorithmType::DpmSolver {
            return Err(SamplerError::Unsupported {
                scheduler: NAME,
                feature: "thresholding with algorithm_type = dpmsolver (diffusers indexes ᾱ with \
                          a timestep it is not given and fails)"
                    .into(),
            });
        }
        let mut beta = c.beta_config()?;
        beta.rescale_betas_zero_snr = false;
        Ok(Self {
            beta,
            solver_order,
            prediction_type: c.prediction_type_or(d.prediction_type)?,
            algorithm_type,
            solver_type,
            lower_order_final: c.lower_order_final.unwrap_or(d.lower_order_final),
            sigma_spacing: SigmaSpacing::from_config(NAME, c)?,
            final_sigmas_type,
            lambda_min_clipped: c.lambda_min_clipped.unwrap_or(d.lambda_min_clipped),
            thresholding,
        })
    }

    fn data_prediction(&self) -> bool {
        self.algorithm_type != AlgorithmType::DpmSolver
    }

    /// diffusers' `get_order_list`: the order of each of `steps` timesteps.
    pub fn order_list(&self, steps: usize) -> Vec<usize> {
        let order = self.solver_order;
        let mut orders: Vec<usize> = if self.lower_order_final {
            match order {
                3 => match steps % 3 {
                    0 => [1, 2, 3]
                        .repeat((steps / 3).saturating_sub(1))
                        .into_iter()
                        .chain([1, 2, 1])
                        .collect(),
                    1 => [1, 2, 3].repeat(steps / 3).into_iter().chain([1]).collect(),
                    _ => [1, 2, 3]
                        .repeat(steps / 3)
                        .into_iter()
                        .chain([1, 2])
                        .collect(),
                },
                2 => {
                    if steps.is_multiple_of(2) {
                        [1, 2]
                            .repeat((steps / 2).saturating_sub(1))
                            .into_iter()
                            .chain([1, 1])
                            .collect()
                    } else {
                        [1, 2].repeat(steps / 2).into_iter().chain([1]).collect()
                    }
                }
                _ => vec![1; steps],
            }
        } else {
            match order {
                3 => [1, 2, 3].repeat(steps / 3),
                2 => [1, 2].repeat(steps / 2),
                _ => vec![1; steps],
            }
        };
        if self.final_sigmas_type == FinalSigmasType::Zero {
            if let Some(last) = orders.last_mut() {
                *last = 1;
            }
        }
        orders
    }
}

/// DPM-Solver singlestep sampler.
#[derive(Debug, Clone)]
pub struct DPMSolverSinglestepScheduler {
    pub config: DPMSolverSinglestepSchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f32>,
    /// σ at each visited timestep, then the final σ.
    sigmas: Vec<f32>,
    /// The converted outputs of the current group, newest last (`None` before the history
    /// fills, as diffusers' list of `solver_order` slots).
    model_outputs: Vec<Option<Vec<f32>>>,
    /// Where the current group began (diffusers' `self.sample`).
    group_sample: Option<Vec<f32>>,
    order_list: Vec<usize>,
    step_index: Option<usize>,
    num_images: Option<usize>,
}

impl DPMSolverSinglestepScheduler {
    pub fn new(config: DPMSolverSinglestepSchedulerConfig) -> Result<Self, SamplerError> {
        let alphas_cumprod = config.beta.alphas_cumprod()?;
        let order = config.solver_order;
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: vec![None; order],
            group_sample: None,
            order_list: Vec::new(),
            step_index: None,
            num_images: None,
        })
    }

    /// The VE σ's of this run (one per timestep, plus the final σ).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The order each timestep of this run takes.
    pub fn orders(&self) -> &[usize] {
        &self.order_list
    }

    /// diffusers' `convert_model_output`: x̂₀ for the ++ forms (thresholded if configured), ε̂
    /// for `dpmsolver`.
    fn convert_model_output(
        &self,
        model_output: &[f32],
        sample: &[f32],
        sigma: f32,
    ) -> Result<Vec<f32>, SamplerError> {
        if self.config.data_prediction() {
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

    /// The update of `order` from the group's first sample `x` at step `idx` to σ_{idx+1}
    /// (Lu et al. 2022b, algorithm 1 (2S) and appendix (3S); Lu et al. 2022a, algorithms 1–2).
    fn update(&self, idx: usize, order: usize, x: &[f32], noise: Option<&[f32]>) -> Vec<f32> {
        let m = |k: usize| -> &[f32] {
            self.model_outputs[self.model_outputs.len() - 1 - k]
                .as_deref()
                .unwrap_or_default()
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx + 1]);
        // The group began at s_{order−1} = idx − order + 1.
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[idx + 1 - order]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s = lambda(alpha_s, sigma_s);
        let h = lambda_t - lambda_s;
        let (a_t, s_t) = (f64::from(alpha_t), f64::from(sigma_t));
        let em = libm::exp(-h);
        let ep = libm::exp(h);
        let em2 = libm::exp(-2.0 * h);
        use AlgorithmType as A;
        use SolverType as S;
        let alg = self.config.algorithm_type;
        // x_t = c_x·x + Σ c_k·D_k (+ c_z·z): the coefficient of x and of the noise
        let (c_x, c_z) = match alg {
            A::DpmSolverPlusPlus => (f64::from(sigma_t / sigma_s), 0.0),
            A::DpmSolver => (f64::from(alpha_t / alpha_s), 0.0),
            _ => (
                f64::from(sigma_t / sigma_s) * em,
                s_t * libm::sqrt(1.0 - em2),
            ),
        };
        // ∫ terms: D0 always; φ_2-type (`c1`) and φ_3-type (`c2`) coefficients
        let c0 = match alg {
            A::DpmSolverPlusPlus => -(a_t * (em - 1.0)),
            A::DpmSolver => -(s_t * (ep - 1.0)),
            _ => a_t * (1.0 - em2),
        };
        let phi2 = match alg {
            A::DpmSolverPlusPlus => a_t * ((em - 1.0) / h + 1.0),
            A::DpmSolver => -(s_t * ((ep - 1.0) / h - 1.0)),
            _ => a_t * ((1.0 - em2) / (-2.0 * h) + 1.0),
        };
        let mut terms: Vec<(f64, Vec<f32>)> = Vec::new();
        match order {
            1 => terms.push((c0, m(0).to_vec())),
            2 => {
                // Lu et al. 2022b, algorithm 1: D0 = m1, D1 = (m0 − m1)/r0, r0 = h_0/h
                let (a1, s1) = alpha_sigma(self.sigmas[idx]);
                let h_0 = lambda(a1, s1) - lambda_s;
                let inv_r0 = (1.0 / (h_0 / h)) as f32;
                let (m0, m1) = (m(0), m(1));
                let d1: Vec<f32> = m0.iter().zip(m1).map(|(&a, &b)| inv_r0 * (a - b)).collect();
                let c1 = match (alg, self.config.solver_type) {
                    (A::DpmSolverPlusPlus, S::Midpoint) => -0.5 * (a_t * (em - 1.0)),
                    (A::DpmSolver, S::Midpoint) => -0.5 * (s_t * (ep - 1.0)),
                    (_, S::Midpoint) => 0.5 * (a_t * (1.0 - em2)),
                    (_, S::Heun) => phi2,
                };
                terms.push((c0, m1.to_vec()));
                terms.push((c1, d1));
            }
            _ => {
                // third order: D0 = m2; D1_0 = (m1 − m2)/r1, D1_1 = (m0 − m2)/r0;
                // D1 = (r0 D1_0 − r1 D1_1)/(r0 − r1); D2 = 2 (D1_1 − D1_0)/(r0 − r1)
                let (a0, s0) = alpha_sigma(self.sigmas[idx]);
                let (a1, s1) = alpha_sigma(self.sigmas[idx - 1]);
                let r0 = (lambda(a0, s0) - lambda_s) / h;
                let r1 = (lambda(a1, s1) - lambda_s) / h;
                let (m0, m1, m2) = (m(0), m(1), m(2));
                let (inv_r0, inv_r1) = ((1.0 / r0) as f32, (1.0 / r1) as f32);
                let d1_0: Vec<f32> = m1.iter().zip(m2).map(|(&a, &b)| inv_r1 * (a - b)).collect();
                let d1_1: Vec<f32> = m0.iter().zip(m2).map(|(&a, &b)| inv_r0 * (a - b)).collect();
                terms.push((c0, m2.to_vec()));
                match self.config.solver_type {
                    S::Midpoint => terms.push((phi2, d1_1)),
                    S::Heun => {
                        let (r0f, r1f) = (r0 as f32, r1 as f32);
                        let diff = r0f - r1f;
                        let d1: Vec<f32> = d1_0
                            .iter()
                            .zip(&d1_1)
                            .map(|(&a, &b)| (r0f * a - r1f * b) / diff)
                            .collect();
                        let d2: Vec<f32> = d1_0
                            .iter()
                            .zip(&d1_1)
                            .map(|(&a, &b)| 2.0 * (b - a) / diff)
                            .collect();
                        let c2 = match alg {
                            A::DpmSolverPlusPlus => -(a_t * ((em - 1.0 + h) / (h * h) - 0.5)),
                            A::DpmSolver => -(s_t * ((ep - 1.0 - h) / (h * h) - 0.5)),
                            _ => a_t * ((1.0 - em2 - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5),
                        };
                        terms.push((phi2, d1));
                        terms.push((c2, d2));
                    }
                }
            }
        }
        let refs: Vec<(f64, &[f32])> = terms.iter().map(|(c, v)| (*c, v.as_slice())).collect();
        let mut out = combine(x, c_x, &refs);
        if let Some(z) = noise {
            let c_z = c_z as f32;
            for (o, &v) in out.iter_mut().zip(z) {
                *o += c_z * v;
            }
        }
        out
    }
}

impl Scheduler for DPMSolverSinglestepScheduler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::DpmSolverSinglestep
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError> {
        let big_t = self.config.beta.num_train_timesteps;
        check_steps(NAME, num_inference_steps, big_t)?;
        let n = num_inference_steps;
        // Clip the high-noise end where λ falls below lambda_min_clipped (torch.searchsorted
        // over the ascending λ's from t = T−1).
        let clipped_idx = self
            .alphas_cumprod
            .iter()
            .rev()
            .map(|&a| lambda(a.sqrt(), (1.0 - a).sqrt()))
            .take_while(|&l| l < self.config.lambda_min_clipped)
            .count();
        let (timesteps, mut sigmas, _) =
            spaced_schedule(self.config.sigma_spacing, &self.alphas_cumprod, n, || {
                dpm_solver_timesteps(TimestepSpacing::Linspace, big_t, big_t - clipped_idx, n, 0)
            });
        let full = training_sigmas(&self.alphas_cumprod);
        sigmas.push(match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => full[0],
        });
        // diffusers' set_timesteps turns lower_order_final on (and keeps it on) when the steps
        // do not split into whole groups, or when the last σ is zero.
        if !self.config.lower_order_final
            && (!n.is_multiple_of(self.config.solver_order)
                || self.config.final_sigmas_type == FinalSigmasType::Zero)
        {
            self.config.lower_order_final = true;
        }
        self.order_list = self.config.order_list(n);
        self.sigmas = sigmas;
        self.timesteps = timesteps.iter().map(|&t| t as f32).collect();
        self.model_outputs = vec![None; self.config.solver_order];
        self.group_sample = None;
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
        self.config.algorithm_type == AlgorithmType::SdeDpmSolverPlusPlus
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
        if idx >= self.order_list.len() {
            return Err(SamplerError::StepPastEnd {
                scheduler: NAME,
                step_index: idx,
                num_steps,
            });
        }
        let noise = if self.needs_step_noise() {
            Some(noise.ok_or(SamplerError::MissingNoise {
                scheduler: NAME,
                timestep,
            })?)
        } else {
            None
        };
        // 1. convert and remember the model output; the preview x̂₀
        let converted = self.convert_model_output(model_output, sample, self.sigmas[idx])?;
        let pred_original_sample = if self.config.data_prediction() {
            converted.clone()
        } else {
            let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[idx]);
            converted
                .iter()
                .zip(sample)
                .map(|(&e, &x)| (x - sigma_t * e) / alpha_t)
                .collect()
        };
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(converted));
        // 2. this timestep's order, lowered while the group's history is missing
        let slots = self.model_outputs.len();
        let mut order = self.order_list[idx];
        while order > 1 && self.model_outputs[slots - order].is_none() {
            order -= 1;
        }
        if order == 1 {
            self.group_sample = Some(sample.to_vec());
        }
        let start = self.group_sample.clone().unwrap_or_else(|| sample.to_vec());
        // 3. one update from the group's first sample
        let prev_sample = self.update(idx, order, &start, noise);
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

    /// Starts afresh at `index`: the history is empty, so its first update is first order.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError> {
        check_index(NAME, index, self.timesteps.len())?;
        self.model_outputs = vec![None; self.config.solver_order];
        self.group_sample = None;
        self.step_index = Some(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_lists_match_diffusers() {
        let cfg = |order, lof, zero| DPMSolverSinglestepSchedulerConfig {
            solver_order: order,
            lower_order_final: lof,
            final_sigmas_type: if zero {
                FinalSigmasType::Zero
            } else {
                FinalSigmasType::SigmaMin
            },
            ..Default::default()
        };
        assert_eq!(cfg(2, true, true).order_list(5), vec![1, 2, 1, 2, 1]);
        assert_eq!(cfg(2, true, true).order_list(6), vec![1, 2, 1, 2, 1, 1]);
        assert_eq!(cfg(3, true, false).order_list(6), vec![1, 2, 3, 1, 2, 1]);
        assert_eq!(cfg(3, true, false).order_list(7), vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(
            cfg(3, true, false).order_list(8),
            vec![1, 2, 3, 1, 2, 3, 1, 2]
        );
        assert_eq!(cfg(3, false, false).order_list(6), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(cfg(2, false, true).order_list(4), vec![1, 2, 1, 1]);
    }
}
