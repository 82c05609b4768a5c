//! Samplers (diffusers "schedulers"): the reverse-process update rules, pure Rust on CPU slices, no GPU types.
//!
//! Every sampler implements [`Scheduler`], mirroring diffusers' contract: `set_timesteps(n)`,
//! then for each `t` in `timesteps()`: scale the model input, call the model, and `step()`, which
//! returns both the next sample x_{t−1} and the predicted clean sample x̂_0 (the preview the UI
//! draws). Stochastic samplers take their per-step noise as an argument, so the caller decides
//! whether it is seeded ([`crate::noise`]) or injected from a file; tests inject diffusers' noise.
//!
//! Configs come from diffusers' `scheduler_config.json` ([`SchedulerConfig`]); any sampler can be
//! built from any model's config with [`build`], which follows `Scheduler.from_config`: keys
//! present in the file win, absent keys take the *target* class's defaults.

pub mod ddim;
pub mod ddpm;
pub mod deis;
pub mod dpm_solver;
pub mod dpm_solver_singlestep;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod noising;
pub mod pndm;
pub mod schedule;
pub mod sigmas;
pub mod threshold;
pub mod unipc;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

pub use ddim::{DDIMScheduler, DDIMSchedulerConfig};
pub use ddpm::{DDPMScheduler, DDPMSchedulerConfig, VarianceType};
pub use deis::{DEISMultistepScheduler, DEISMultistepSchedulerConfig};
pub use dpm_solver::{
    AlgorithmType, DPMSolverMultistepScheduler, DPMSolverMultistepSchedulerConfig, FinalSigmasType,
    SolverType,
};
pub use dpm_solver_singlestep::{DPMSolverSinglestepScheduler, DPMSolverSinglestepSchedulerConfig};
pub use euler_ancestral::{EulerAncestralDiscreteScheduler, EulerAncestralDiscreteSchedulerConfig};
pub use heun::{HeunDiscreteScheduler, HeunDiscreteSchedulerConfig};
pub use lms::{LMSDiscreteScheduler, LMSDiscreteSchedulerConfig};
pub use noising::NoiseLevel;
pub use pndm::{PNDMScheduler, PNDMSchedulerConfig};
pub use schedule::{BetaConfig, BetaSchedule, PredictionType, TimestepSpacing};
pub use sigmas::SigmaSpacing;
pub use threshold::DynamicThresholding;
pub use unipc::{UniPCMultistepScheduler, UniPCMultistepSchedulerConfig, UniPCSolverType};

/// Everything that can go wrong configuring or stepping a sampler; messages name the values.
#[derive(Debug, Error)]
pub enum SamplerError {
    #[error("cannot read scheduler config {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid scheduler config JSON: {0}")]
    Json(String),
    #[error(
        "scheduler config field `{field}` = {value} is not supported (supported: {supported})"
    )]
    UnsupportedValue {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("{scheduler}: {feature} is not supported")]
    Unsupported {
        scheduler: &'static str,
        feature: String,
    },
    #[error("{scheduler}: num_inference_steps ({steps}) must be between 1 and num_train_timesteps ({num_train_timesteps})")]
    InvalidSteps {
        scheduler: &'static str,
        steps: usize,
        num_train_timesteps: usize,
    },
    #[error("{scheduler}: call set_timesteps before step")]
    TimestepsNotSet { scheduler: &'static str },
    #[error("{scheduler}: timestep {timestep} is not in the schedule {timesteps:?}")]
    UnknownTimestep {
        scheduler: &'static str,
        timestep: f32,
        timesteps: Vec<f32>,
    },
    #[error("{scheduler}: timestep {timestep} is outside the {num_train_timesteps} training timesteps (check steps_offset)")]
    TimestepOutOfRange {
        scheduler: &'static str,
        timestep: i64,
        num_train_timesteps: usize,
    },
    #[error("{scheduler}: step {step_index} is past the last of {num_steps} steps; call set_timesteps again")]
    StepPastEnd {
        scheduler: &'static str,
        step_index: usize,
        num_steps: usize,
    },
    #[error("{what} has {len} elements, expected {expected}")]
    LengthMismatch {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{scheduler}: dynamic thresholding works per image: call set_num_images before step")]
    NumImagesNotSet { scheduler: &'static str },
    #[error("{scheduler}: {len} values do not split into {images} images (set_num_images)")]
    ImagesMismatch {
        scheduler: &'static str,
        len: usize,
        images: usize,
    },
    #[error("{scheduler}: step at timestep {timestep} needs noise, but none was given")]
    MissingNoise {
        scheduler: &'static str,
        timestep: f32,
    },
    #[error(
        "scheduler class `{0}` is not a DDPM-family scheduler: its model was trained for another \
         noise process (variance-exploding, EDM, consistency, flow matching or discrete tokens) \
         and the samplers here run a β schedule, so they would only draw noise"
    )]
    OtherFamily(String),
    #[error("unknown sampler `{0}` (known: {known})", known = SamplerKind::known_names())]
    UnknownSampler(String),
    #[error("scheduler class `{0}` has no sampler here (known: {known})", known = SamplerKind::known_classes())]
    UnknownClass(String),
    #[error("{sampler} does not take {option}: {class} has no `{key}`")]
    OptionUnsupported {
        sampler: &'static str,
        option: &'static str,
        class: &'static str,
        key: &'static str,
    },
}

/// What `step()` returns: diffusers' `prev_sample` and `pred_original_sample`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// x_{t−1}: the sample to feed to the next step.
    pub prev_sample: Vec<f32>,
    /// x̂_0: the model's current guess of the clean sample (the preview).
    pub pred_original_sample: Vec<f32>,
}

/// A reverse-process sampler. All slices are flat N×C×H×W f32 in model space; samplers are
/// elementwise, so the batch size never matters to them.
pub trait Scheduler: Send {
    /// Which algorithm this is.
    fn kind(&self) -> SamplerKind;
    /// What the model predicts (ε, x₀ or v), from the scheduler config.
    fn prediction_type(&self) -> PredictionType;
    /// Choose `num_inference_steps` timesteps and reset any multistep state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SamplerError>;
    /// The timesteps to visit, in order (the values the model is called with).
    fn timesteps(&self) -> &[f32];
    /// ᾱ_t for t = 0..num_train_timesteps (for the schedule and SNR plots).
    fn alphas_cumprod(&self) -> &[f32];
    /// SNR(t) = ᾱ_t / (1 − ᾱ_t) for t = 0..num_train_timesteps.
    fn snr(&self) -> Vec<f32> {
        schedule::snr(self.alphas_cumprod())
    }
    /// The standard deviation of the initial noise x_T: 1 (diffusers' default) except for the
    /// σ-space samplers, which override it.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    /// The model's input at `timestep`: the sample itself (diffusers' default), except for the
    /// σ-space samplers, which divide by √(σ² + 1) and refuse a `timestep` not in their schedule.
    fn scale_model_input(&self, sample: &[f32], _timestep: f32) -> Result<Vec<f32>, SamplerError> {
        Ok(sample.to_vec())
    }
    /// The number of images N in the N×C×H×W slices `step` gets. Every update is elementwise
    /// except dynamic thresholding (`"thresholding": true`), whose quantile is per image: a
    /// sampler with it refuses to step until this is set. The others ignore it.
    fn set_num_images(&mut self, _images: usize) {}
    /// diffusers' `step(..., use_clipped_model_output=True)`: where the sampler clips x̂0
    /// (`clip_sample`, thresholding), rebuild ε from the clipped x̂0 so the next sample is made
    /// of one consistent pair. Only DDIM has the option (DDPM's posterior mean mixes x̂0 with
    /// x_t and never reuses ε; DPM-Solver++ and Euler-a do not clip), so the others ignore it.
    fn set_use_clipped_model_output(&mut self, _on: bool) {}
    /// Whether `step` draws on fresh noise (then pass noise to every step; a step that does not
    /// need it, like DDPM at t = 0, ignores it, as diffusers does not draw there).
    fn needs_step_noise(&self) -> bool;
    /// One reverse step from `sample` at `timestep` given the model's output there.
    fn step(
        &mut self,
        model_output: &[f32],
        timestep: f32,
        sample: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput, SamplerError>;
    /// The forward-process marginal x = signal·x₀ + noise·ε in this sampler's own sample space
    /// at step `index` of `timesteps()` (what diffusers' `add_noise` uses once a pipeline called
    /// `set_begin_index`); `index == timesteps().len()` is the end of the run, the clean sample.
    fn noise_level(&self, index: usize) -> Result<NoiseLevel, SamplerError>;
    /// diffusers' `add_noise(original, noise, timesteps[index])` after `set_begin_index(index)`:
    /// the sample a run starting at step `index` begins from (SDEdit, RePaint's known region).
    fn add_noise(
        &self,
        original: &[f32],
        noise: &[f32],
        index: usize,
    ) -> Result<Vec<f32>, SamplerError> {
        noising::add_noise(self.noise_level(index)?, original, noise)
    }
    /// diffusers' `set_begin_index`: the next `step` is step `index` of `timesteps()`. Multistep
    /// history is dropped, so a run that starts part-way (or redoes a step) starts it fresh.
    fn set_begin_index(&mut self, index: usize) -> Result<(), SamplerError>;
    /// diffusers' `scheduler.order`: how many entries of `timesteps()` make one step (model
    /// evaluations per step). 2 for Heun, whose timesteps hold each inner timestep twice; 1 for
    /// the others. An img2img run of `steps` steps that starts at step k starts at index k·order.
    fn order(&self) -> usize {
        1
    }
}

/// The samplers this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// `DDPMScheduler` (Ho et al. 2020).
    Ddpm,
    /// `DDIMScheduler` (Song et al. 2021) with η.
    Ddim,
    /// `DPMSolverMultistepScheduler`, DPM-Solver++(2M) by default (Lu et al. 2022).
    DpmSolverMultistep,
    /// `EulerAncestralDiscreteScheduler` (Karras et al. 2022 / k-diffusion).
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` with `algorithm_type = "sde-dpmsolver++"` (Lu et al. 2022b,
    /// appendix): DPM-Solver++(2M) SDE, fresh noise at every step.
    DpmSolverSde,
    /// `UniPCMultistepScheduler`: a predictor plus a corrector that reuses the next model call
    /// (Zhao et al. 2023).
    UniPc,
    /// `HeunDiscreteScheduler`: Heun's second-order method in σ (Karras et al. 2022, algorithm
    /// 1), two model calls per step.
    Heun,
    /// `DEISMultistepScheduler`: exponential integrator with polynomial extrapolation in log ρ
    /// (Zhang & Chen 2023).
    Deis,
    /// `DPMSolverSinglestepScheduler`: DPM-Solver++(2S) by default, singlestep (Lu et al. 2022).
    DpmSolverSinglestep,
    /// `LMSDiscreteScheduler`: linear multistep in σ (Karras et al. 2022; k-diffusion).
    Lms,
    /// `PNDMScheduler`: pseudo Runge–Kutta warm-up then pseudo linear multistep (Liu et al. 2022).
    Pndm,
}

impl SamplerKind {
    /// All kinds, in CLI (and menu) order: the original four, then the other DPM-Solver forms,
    /// then the other diffusers classes from newest to oldest.
    pub const ALL: [SamplerKind; 11] = [
        Self::Ddpm,
        Self::Ddim,
        Self::DpmSolverMultistep,
        Self::EulerAncestral,
        Self::DpmSolverSde,
        Self::UniPc,
        Self::DpmSolverSinglestep,
        Self::Deis,
        Self::Heun,
        Self::Lms,
        Self::Pndm,
    ];

    /// The CLI name: ddpm, ddim, dpm++2m, euler-a, dpm++2m-sde, unipc, dpm++2s, deis, heun, lms,
    /// pndm.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::DpmSolverMultistep => "dpm++2m",
            Self::EulerAncestral => "euler-a",
            Self::DpmSolverSde => "dpm++2m-sde",
            Self::UniPc => "unipc",
            Self::Heun => "heun",
            Self::Deis => "deis",
            Self::DpmSolverSinglestep => "dpm++2s",
            Self::Lms => "lms",
            Self::Pndm => "pndm",
        }
    }

    /// A human title for menus.
    pub fn title(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPM",
            Self::Ddim => "DDIM",
            Self::DpmSolverMultistep => "DPM-Solver++ 2M",
            Self::EulerAncestral => "Euler ancestral",
            Self::DpmSolverSde => "DPM-Solver++ 2M SDE",
            Self::UniPc => "UniPC",
            Self::Heun => "Heun",
            Self::Deis => "DEIS",
            Self::DpmSolverSinglestep => "DPM-Solver++ 2S",
            Self::Lms => "LMS",
            Self::Pndm => "PNDM",
        }
    }

    /// diffusers' class name (`dpm++2m-sde` is `DPMSolverMultistepScheduler` too).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::DpmSolverMultistep | Self::DpmSolverSde => "DPMSolverMultistepScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::UniPc => "UniPCMultistepScheduler",
            Self::Heun => "HeunDiscreteScheduler",
            Self::Deis => "DEISMultistepScheduler",
            Self::DpmSolverSinglestep => "DPMSolverSinglestepScheduler",
            Self::Lms => "LMSDiscreteScheduler",
            Self::Pndm => "PNDMScheduler",
        }
    }

    /// The kind for a diffusers class name, if implemented (the first kind of that class).
    pub fn from_class_name(class_name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == class_name)
    }

    /// "ddpm, ddim, …": every CLI name, for messages.
    pub fn known_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Every implemented diffusers class, once each, for messages.
    pub fn known_classes() -> String {
        let mut v: Vec<&str> = Vec::new();
        for k in Self::ALL {
            if !v.contains(&k.class_name()) {
                v.push(k.class_name());
            }
        }
        v.join(", ")
    }

    /// Whether the class clips x̂₀ with `clip_sample` (DDPM, DDIM and Heun have the key; the
    /// others ignore it, as diffusers does).
    pub fn has_clip_sample(self) -> bool {
        matches!(self, Self::Ddpm | Self::Ddim | Self::Heun)
    }

    /// Whether a run can take a step again after `set_begin_index` (RePaint's resampling).
    /// Heun's two halves and PNDM's counter-driven warm-up and redo span several model calls,
    /// so a restart in the middle of them is not the step it was.
    pub fn supports_resampling(self) -> bool {
        !matches!(self, Self::Heun | Self::Pndm)
    }

    /// Whether the class applies dynamic thresholding when the config says `thresholding`.
    pub fn has_thresholding(self) -> bool {
        matches!(
            self,
            Self::Ddpm
                | Self::Ddim
                | Self::DpmSolverMultistep
                | Self::DpmSolverSde
                | Self::UniPc
                | Self::Deis
                | Self::DpmSolverSinglestep
        )
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = SamplerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            "dpm++2m" | "dpmpp2m" | "dpm++" | "dpm-solver++" | "dpmsolver++" => {
                Ok(Self::DpmSolverMultistep)
            }
            "euler-a" | "euler_a" | "euler-ancestral" | "euler_ancestral" => {
                Ok(Self::EulerAncestral)
            }
            "dpm++2m-sde" | "dpmpp2m-sde" | "dpm++2m_sde" | "dpmpp_2m_sde" | "dpm++-sde"
            | "sde-dpmsolver++" => Ok(Self::DpmSolverSde),
            "unipc" | "uni-pc" | "unipc-multistep" => Ok(Self::UniPc),
            "heun" | "heun-discrete" => Ok(Self::Heun),
            "deis" | "deis-multistep" => Ok(Self::Deis),
            "dpm++2s"
            | "dpmpp2s"
            | "dpm++-single"
            | "dpm-solver++-single"
            | "dpmsolver++-single" => Ok(Self::DpmSolverSinglestep),
            "lms" | "lms-discrete" | "k-lms" => Ok(Self::Lms),
            "pndm" => Ok(Self::Pndm),
            _ => Self::from_class_name(s.trim())
                .ok_or_else(|| SamplerError::UnknownSampler(s.into())),
        }
    }
}

/// A diffusers `scheduler_config.json`, every field optional: an absent field takes the default
/// of whichever scheduler class is built from it (as `from_config` does). Unknown keys are
/// ignored, as diffusers ignores keys a class does not accept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    #[serde(rename = "_diffusers_version")]
    pub diffusers_version: Option<String>,
    pub num_train_timesteps: Option<usize>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub beta_start: Option<f64>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: Option<String>,
    pub clip_sample: Option<bool>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub steps_offset: Option<i64>,
    pub prediction_type: Option<String>,
    pub thresholding: Option<bool>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub dynamic_thresholding_ratio: Option<f64>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub sample_max_value: Option<f64>,
    pub timestep_spacing: Option<String>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub final_sigmas_type: Option<String>,
    #[serde(deserialize_with = "de_opt_f64")]
    pub lambda_min_clipped: Option<f64>,
    pub use_dynamic_shifting: Option<bool>,
    /// UniPC: the data-prediction form (`true`, the default) or the noise-prediction form.
    pub predict_x0: Option<bool>,
    /// UniPC: the step indices whose corrector is skipped.
    pub disable_corrector: Option<Vec<i64>>,
    /// PNDM: start with linear multistep (PLMS) instead of the Runge–Kutta warm-up.
    pub skip_prk_steps: Option<bool>,
}

/// Accepts a number, null, or the strings Python's json writes for non-finite floats
/// (`Infinity`, `-Infinity`, `NaN`; see [`SchedulerConfig::from_json_str`]).
fn de_opt_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(v)) => Ok(Some(v)),
        Some(NumOrStr::Str(s)) => match s.as_str() {
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" => Ok(Some(f64::NAN)),
            other => other.parse().map(Some).map_err(serde::de::Error::custom),
        },
    }
}

/// Python's `json.dumps` writes `-Infinity`, `Infinity` and `NaN` bare (diffusers saves
/// `"lambda_min_clipped": -Infinity`); quote them outside strings so strict JSON parsers accept them.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

impl SchedulerConfig {
    /// Parse a scheduler_config.json. Legacy names are mapped: `timesteps` →
    /// `num_train_timesteps`, `predict_epsilon: false` → `prediction_type: "sample"`; keys listed in
    /// `_use_default_values` are treated as absent (as `from_config` does).
    pub fn from_json_str(text: &str) -> Result<Self, SamplerError> {
        let mut map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&quote_non_finite(text))
                .map_err(|e| SamplerError::Json(e.to_string()))?;
        if let Some(serde_json::Value::Array(defaults)) = map.remove("_use_default_values") {
            for key in defaults.iter().filter_map(|k| k.as_str()) {
                map.remove(key);
            }
        }
        if !map.contains_key("num_train_timesteps") {
            if let Some(v) = map.get("timesteps").cloned() {
                map.insert("num_train_timesteps".into(), v);
            }
        }
        if !map.contains_key("prediction_type") {
            if let Some(serde_json::Value::Bool(eps)) = map.get("predict_epsilon") {
                let p = if *eps { "epsilon" } else { "sample" };
                map.insert("prediction_type".into(), p.into());
            }
        }
        let object: serde_json::Map<String, serde_json::Value> = map.into_iter().collect();
        let config: Self = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| SamplerError::Json(e.to_string()))?;
        config.check_family()?;
        Ok(config)
    }

    /// Refuses a config written for a scheduler of another noise process. Any DDPM-family class
    /// (a β schedule over discrete timesteps: PNDM, LMS, UniPC, …) is read the way `from_config`
    /// reads another class's config; a known class of another family, or an unknown class whose
    /// config has no β schedule at all, would silently get the default βs instead.
    fn check_family(&self) -> Result<(), SamplerError> {
        /// diffusers' schedulers for other processes (their configs carry σ ranges, shifts or
        /// token counts, not βs).
        const OTHER: &[&str] = &[
            "ScoreSdeVeScheduler",
            "ScoreSdeVpScheduler",
            "KarrasVeScheduler",
            "CMStochasticIterativeScheduler",
            "EDMEulerScheduler",
            "EDMDPMSolverMultistepScheduler",
            "FlowMatchEulerDiscreteScheduler",
            "FlowMatchHeunDiscreteScheduler",
            "FlowMatchLCMScheduler",
            "IPNDMScheduler",
            "VQDiffusionScheduler",
            "AmusedScheduler",
            "DDPMWuerstchenScheduler",
        ];
        /// diffusers' other DDPM-family schedulers, without a sampler here: their defaults are
        /// the β schedule here.
        const DDPM_FAMILY: &[&str] = &[
            "EulerDiscreteScheduler",
            "KDPM2DiscreteScheduler",
            "KDPM2AncestralDiscreteScheduler",
            "DPMSolverSDEScheduler",
            "LCMScheduler",
            "TCDScheduler",
            "SASolverScheduler",
            "DDIMInverseScheduler",
            "DDIMParallelScheduler",
            "DDPMParallelScheduler",
            "RePaintScheduler",
            "UnCLIPScheduler",
        ];
        let Some(class) = self.class_name.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        let has_betas = self.beta_start.is_some()
            || self.beta_end.is_some()
            || self.beta_schedule.is_some()
            || self.trained_betas.is_some();
        let ours = SamplerKind::from_class_name(class).is_some() || DDPM_FAMILY.contains(&class);
        if OTHER.contains(&class) || (!ours && !has_betas) {
            return Err(SamplerError::OtherFamily(class.into()));
        }
        Ok(())
    }

    /// Read and parse a scheduler_config.json file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SamplerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SamplerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// The sampler named by `_class_name`, the model's own default (a DPM-Solver config whose
    /// `algorithm_type` is `sde-dpmsolver++` is `dpm++2m-sde`).
    pub fn default_kind(&self) -> Result<SamplerKind, SamplerError> {
        let name = self.class_name.as_deref().unwrap_or("");
        let kind = SamplerKind::from_class_name(name)
            .ok_or_else(|| SamplerError::UnknownClass(name.into()))?;
        Ok(
            if kind == SamplerKind::DpmSolverMultistep
                && self.algorithm_type.as_deref() == Some("sde-dpmsolver++")
            {
                SamplerKind::DpmSolverSde
            } else {
                kind
            },
        )
    }

    /// The training schedule (β, ᾱ), with diffusers' defaults for absent keys (the same for
    /// every class here except Heun's β range, which `heun` sets itself).
    pub fn beta_config(&self) -> Result<BetaConfig, SamplerError> {
        let d = BetaConfig::default();
        Ok(BetaConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(d.num_train_timesteps),
            beta_start: self.beta_start.unwrap_or(d.beta_start),
            beta_end: self.beta_end.unwrap_or(d.beta_end),
            beta_schedule: match &self.beta_schedule {
                Some(s) => s.parse()?,
                None => d.beta_schedule,
            },
            trained_betas: self.trained_betas.clone(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr.unwrap_or(false),
        })
    }

    pub(crate) fn prediction_type_or(
        &self,
        default: PredictionType,
    ) -> Result<PredictionType, SamplerError> {
        self.prediction_type
            .as_deref()
            .map_or(Ok(default), str::parse)
    }

    /// `clip_sample_range`: x̂₀ is clamped to [−r, r], so r must be a number ≥ 0.
    pub(crate) fn clip_sample_range_or(&self, default: f32) -> Result<f32, SamplerError> {
        match self.clip_sample_range {
            None => Ok(default),
            Some(r) if r.is_finite() && r >= 0.0 => Ok(r as f32),
            Some(r) => Err(SamplerError::UnsupportedValue {
                field: "clip_sample_range",
                value: r.to_string(),
                supported: "a finite number ≥ 0",
            }),
        }
    }

    pub(crate) fn timestep_spacing_or(
        &self,
        default: TimestepSpacing,
    ) -> Result<TimestepSpacing, SamplerError> {
        self.timestep_spacing
            .as_deref()
            .map_or(Ok(default), str::parse)
    }
}

/// Build any sampler from any model's scheduler config, like diffusers'
/// `XScheduler.from_config(model_scheduler.config)`. `eta` is DDIM's η and is ignored by the
/// others, as diffusers' pipelines pass `eta` only to schedulers whose `step` accepts it.
pub fn build(
    kind: SamplerKind,
    config: &SchedulerConfig,
    eta: f32,
) -> Result<Box<dyn Scheduler>, SamplerError> {
    Ok(match kind {
        SamplerKind::Ddpm => Box::new(DDPMScheduler::new(DDPMSchedulerConfig::from_config(
            config,
        )?)?),
        SamplerKind::Ddim => {
            let mut s = DDIMScheduler::new(DDIMSchedulerConfig::from_config(config)?)?;
            s.eta = eta;
            Box::new(s)
        }
        SamplerKind::DpmSolverMultistep => Box::new(DPMSolverMultistepScheduler::new(
            DPMSolverMultistepSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(
            EulerAncestralDiscreteSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::DpmSolverSde => {
            // The model's DPM-Solver settings, with the algorithm overridden (diffusers:
            // `DPMSolverMultistepScheduler.from_config(config, algorithm_type="sde-dpmsolver++")`).
            let mut c = config.clone();
            c.algorithm_type = Some("sde-dpmsolver++".into());
            Box::new(DPMSolverMultistepScheduler::new(
                DPMSolverMultistepSchedulerConfig::from_config(&c)?,
            )?)
        }
        SamplerKind::UniPc => Box::new(UniPCMultistepScheduler::new(
            UniPCMultistepSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::Heun => Box::new(HeunDiscreteScheduler::new(
            HeunDiscreteSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::Deis => Box::new(DEISMultistepScheduler::new(
            DEISMultistepSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::DpmSolverSinglestep => Box::new(DPMSolverSinglestepScheduler::new(
            DPMSolverSinglestepSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::Lms => Box::new(LMSDiscreteScheduler::new(
            LMSDiscreteSchedulerConfig::from_config(config)?,
        )?),
        SamplerKind::Pndm => Box::new(PNDMScheduler::new(PNDMSchedulerConfig::from_config(
            config,
        )?)?),
    })
}

/// Settings a user picks for a run on top of the model's scheduler config (the CLI's
/// `--spacing`, `--karras`, `--zero-snr`, `--solver-order`, `--solver-type`). [`apply`](Self::apply)
/// writes them into the config before [`build`], and refuses an option the chosen sampler's
/// diffusers class does not have (where a config key it lacks would be silently ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplerOptions {
    /// `timestep_spacing`.
    pub spacing: Option<TimestepSpacing>,
    /// `use_karras_sigmas = true` (the other σ spacings are switched off).
    pub karras: bool,
    /// `rescale_betas_zero_snr = true` (Lin et al. 2023).
    pub zero_snr: bool,
    /// `solver_order`.
    pub solver_order: Option<usize>,
    /// `solver_type`: midpoint/heun (DPM-Solver), bh1/bh2 (UniPC), logrho (DEIS).
    pub solver_type: Option<String>,
}

impl SamplerOptions {
    /// `true` when no option is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `config` with these options written in, for `kind`; an option `kind`'s class lacks is an
    /// error naming it.
    pub fn apply(
        &self,
        kind: SamplerKind,
        config: &SchedulerConfig,
    ) -> Result<SchedulerConfig, SamplerError> {
        use SamplerKind as K;
        let refuse = |option: &'static str, key: &'static str| SamplerError::OptionUnsupported {
            sampler: kind.name(),
            option,
            class: kind.class_name(),
            key,
        };
        let mut c = config.clone();
        if let Some(spacing) = self.spacing {
            if kind == K::DpmSolverSinglestep {
                return Err(refuse("--spacing", "timestep_spacing"));
            }
            c.timestep_spacing = Some(
                match spacing {
                    TimestepSpacing::Linspace => "linspace",
                    TimestepSpacing::Leading => "leading",
                    TimestepSpacing::Trailing => "trailing",
                }
                .into(),
            );
        }
        if self.karras {
            if matches!(kind, K::Ddpm | K::Ddim | K::EulerAncestral | K::Pndm) {
                return Err(refuse("--karras", "use_karras_sigmas"));
            }
            c.use_karras_sigmas = Some(true);
            c.use_exponential_sigmas = None;
            c.use_beta_sigmas = None;
            c.use_lu_lambdas = None;
        }
        if self.zero_snr {
            if !matches!(
                kind,
                K::Ddpm
                    | K::Ddim
                    | K::DpmSolverMultistep
                    | K::EulerAncestral
                    | K::DpmSolverSde
                    | K::UniPc
            ) {
                return Err(refuse("--zero-snr", "rescale_betas_zero_snr"));
            }
            c.rescale_betas_zero_snr = Some(true);
        }
        let multistep = matches!(
            kind,
            K::DpmSolverMultistep | K::DpmSolverSde | K::UniPc | K::Deis | K::DpmSolverSinglestep
        );
        if let Some(order) = self.solver_order {
            if !multistep {
                return Err(refuse("--solver-order", "solver_order"));
            }
            c.solver_order = Some(order);
        }
        if let Some(t) = &self.solver_type {
            let supported = match kind {
                K::DpmSolverMultistep | K::DpmSolverSde | K::DpmSolverSinglestep => {
                    "midpoint, heun"
                }
                K::UniPc => "bh1, bh2",
                K::Deis => "logrho",
                _ => return Err(refuse("--solver-type", "solver_type")),
            };
            if !supported.split(", ").any(|s| s == t) {
                return Err(SamplerError::UnsupportedValue {
                    field: "solver_type",
                    value: format!("{t} (for {})", kind.name()),
                    supported,
                });
            }
            c.solver_type = Some(t.clone());
            if kind == K::UniPc && t == "bh1" && c.final_sigmas_type.is_none() {
                // diffusers' bh1 update is NaN at a final σ of zero (its default): asking for
                // bh1 without a config that chooses the final σ means σ_min.
                c.final_sigmas_type = Some("sigma_min".into());
            }
        }
        Ok(c)
    }
}

/// The common arguments check of every `step`.
pub(crate) fn check_lengths(
    model_output: &[f32],
    sample: &[f32],
    noise: Option<&[f32]>,
) -> Result<(), SamplerError> {
    if model_output.len() != sample.len() {
        return Err(SamplerError::LengthMismatch {
            what: "model_output",
            len: model_output.len(),
            expected: sample.len(),
        });
    }
    if let Some(noise) = noise {
        if noise.len() != sample.len() {
            return Err(SamplerError::LengthMismatch {
                what: "noise",
                len: noise.len(),
                expected: sample.len(),
            });
        }
    }
    Ok(())
}

/// ᾱ at a timestep with Python's negative indexing (diffusers indexes `alphas_cumprod[t]` with
/// whatever integer it computed, and numpy's trailing spacing can produce t = −1); out of range is
/// an error, as torch's IndexError is.
pub(crate) fn alpha_cumprod_at(
    scheduler: &'static str,
    alphas_cumprod: &[f32],
    t: i64,
) -> Result<f32, SamplerError> {
    let n = alphas_cumprod.len() as i64;
    let i = if t < 0 { t + n } else { t };
    if !(0..n).contains(&i) {
        return Err(SamplerError::TimestepOutOfRange {
            scheduler,
            timestep: t,
            num_train_timesteps: alphas_cumprod.len(),
        });
    }
    Ok(alphas_cumprod[i as usize])
}

/// The timestep value as diffusers' integer timestep.
pub(crate) fn int_timestep(t: f32) -> i64 {
    t.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_legacy_and_python_json() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDPMScheduler", "timesteps": 4000, "predict_epsilon": false,
                "lambda_min_clipped": -Infinity, "note": "-Infinity stays a string", "trained_betas": null}"#,
        )
        .unwrap();
        assert_eq!(cfg.num_train_timesteps, Some(4000));
        assert_eq!(cfg.prediction_type.as_deref(), Some("sample"));
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(cfg.default_kind().unwrap(), SamplerKind::Ddpm);
    }

    #[test]
    fn use_default_values_are_absent() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"timestep_spacing": "leading", "_use_default_values": ["timestep_spacing"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.timestep_spacing, None);
    }

    #[test]
    fn sampler_kind_round_trips() {
        for kind in SamplerKind::ALL {
            assert_eq!(kind.name().parse::<SamplerKind>().unwrap(), kind);
            let by_class = kind.class_name().parse::<SamplerKind>().unwrap();
            assert_eq!(by_class.class_name(), kind.class_name());
            let built = build(kind, &SchedulerConfig::default(), 0.0).unwrap();
            assert_eq!(built.kind(), kind, "build({kind}) reports another kind");
        }
        for alias in ["dpm++-single", "dpm-solver++-single"] {
            assert_eq!(
                alias.parse::<SamplerKind>().unwrap(),
                SamplerKind::DpmSolverSinglestep
            );
        }
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#,
        )
        .unwrap();
        assert_eq!(cfg.default_kind().unwrap(), SamplerKind::DpmSolverSde);
        let err = "plms".parse::<SamplerKind>().unwrap_err().to_string();
        assert!(err.contains("plms"), "{err}");
        for kind in SamplerKind::ALL {
            assert!(err.contains(kind.name()), "{err} does not list {kind}");
        }
        let err = SchedulerConfig::from_json_str(r#"{"_class_name": "EulerDiscreteScheduler"}"#)
            .unwrap()
            .default_kind()
            .unwrap_err()
            .to_string();
        for kind in SamplerKind::ALL {
            assert!(err.contains(kind.class_name()), "{err}");
        }
    }

    #[test]
    fn options_are_applied_or_refused_by_name() {
        let opts = SamplerOptions {
            spacing: Some(TimestepSpacing::Trailing),
            karras: true,
            zero_snr: true,
            solver_order: Some(3),
            solver_type: Some("bh1".into()),
        };
        let c = opts
            .apply(SamplerKind::UniPc, &SchedulerConfig::default())
            .unwrap();
        assert_eq!(c.timestep_spacing.as_deref(), Some("trailing"));
        assert_eq!(c.use_karras_sigmas, Some(true));
        assert_eq!(c.rescale_betas_zero_snr, Some(true));
        assert_eq!(c.solver_order, Some(3));
        assert_eq!(c.solver_type.as_deref(), Some("bh1"));
        let refused = |kind: SamplerKind, o: SamplerOptions| {
            o.apply(kind, &SchedulerConfig::default())
                .unwrap_err()
                .to_string()
        };
        let e = refused(
            SamplerKind::Heun,
            SamplerOptions {
                zero_snr: true,
                ..Default::default()
            },
        );
        assert!(
            e.contains("--zero-snr") && e.contains("rescale_betas_zero_snr"),
            "{e}"
        );
        let e = refused(
            SamplerKind::DpmSolverSinglestep,
            SamplerOptions {
                spacing: Some(TimestepSpacing::Leading),
                ..Default::default()
            },
        );
        assert!(
            e.contains("--spacing") && e.contains("timestep_spacing"),
            "{e}"
        );
        let e = refused(
            SamplerKind::Pndm,
            SamplerOptions {
                karras: true,
                ..Default::default()
            },
        );
        assert!(e.contains("--karras"), "{e}");
        let e = refused(
            SamplerKind::Ddim,
            SamplerOptions {
                solver_order: Some(2),
                ..Default::default()
            },
        );
        assert!(e.contains("--solver-order"), "{e}");
        let e = refused(
            SamplerKind::DpmSolverMultistep,
            SamplerOptions {
                solver_type: Some("bh2".into()),
                ..Default::default()
            },
        );
        assert!(e.contains("bh2") && e.contains("midpoint, heun"), "{e}");
    }

    #[test]
    fn unsupported_values_are_named() {
        let cfg = SchedulerConfig::from_json_str(r#"{"beta_schedule": "sigmoid"}"#).unwrap();
        let err = build(SamplerKind::Ddim, &cfg, 0.0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("sigmoid") && err.contains("beta_schedule"),
            "{err}"
        );
        let cfg = SchedulerConfig::from_json_str(
            r#"{"thresholding": true, "dynamic_thresholding_ratio": -0.1}"#,
        )
        .unwrap();
        let err = build(SamplerKind::Ddpm, &cfg, 0.0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("dynamic_thresholding_ratio"), "{err}");
    }
}
