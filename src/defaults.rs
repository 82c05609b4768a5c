//! A model folder's run defaults: the `defaults` object of its `stepwise.json`, the one place
//! the page and `diffuse sample` both read, so what the page shows first and what the CLI runs
//! without flags cannot drift apart. A folder without `stepwise.json` (any user's diffusers
//! folder) runs as diffusers' pipelines run it: the scheduler config's own class, 50 steps (1000
//! for DDPM, as `DDPMPipeline`), η 0, no guidance, ε as the model gave it.

use serde::Deserialize;

use crate::sampler::{SamplerKind, SchedulerConfig};
use crate::{Error, Result};

/// The settings a shipped model was measured best with (see its `MODEL_CARD.md`). Every field is
/// optional; [`ModelDefaults::resolve`] fills the rest.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// A sampler name (`ddim`, `ddpm`, `dpm++2m`, `euler-a`).
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    /// DDIM's η.
    pub eta: Option<f32>,
    /// The classifier-free guidance scale (class-conditional models).
    pub guidance: Option<f32>,
    /// DDIM recomputes ε from the clipped x̂0 (diffusers' `use_clipped_model_output`).
    pub use_clipped_model_output: Option<bool>,
}

/// What one run uses, every field decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSettings {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub eta: f32,
    pub guidance: f32,
    pub use_clipped_model_output: bool,
}

/// What a caller (the CLI's flags, the page's controls) says explicitly; `None` takes the model's
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requested {
    pub sampler: Option<SamplerKind>,
    pub steps: Option<usize>,
    pub eta: Option<f32>,
    pub guidance: Option<f32>,
    pub use_clipped_model_output: Option<bool>,
}

impl ModelDefaults {
    /// The `defaults` of a `stepwise.json` (`path` names it in errors); a file without the key
    /// has none.
    pub fn from_stepwise_json(text: &str, path: &str) -> Result<Self> {
        let json = |message: String| Error::Json {
            path: path.to_string(),
            message,
        };
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| json(e.to_string()))?;
        let Some(d) = v.get("defaults") else {
            return Ok(Self::default());
        };
        let d: Self =
            serde_json::from_value(d.clone()).map_err(|e| json(format!("`defaults`: {e}")))?;
        if let Some(s) = &d.sampler {
            s.parse::<SamplerKind>()
                .map_err(|e| json(format!("`defaults.sampler`: {e}")))?;
        }
        if d.steps == Some(0) {
            return Err(json("`defaults.steps` is 0".into()));
        }
        for (name, v) in [("eta", d.eta), ("guidance", d.guidance)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(json(format!("`defaults.{name}` is not a finite number")));
            }
        }
        Ok(d)
    }

    /// The run's settings: what is requested, else this model's default, else diffusers'
    /// (`scheduler_default` gives the scheduler config's own class, asked only when needed).
    pub fn resolve(
        &self,
        req: Requested,
        scheduler_default: impl FnOnce() -> Result<SamplerKind>,
    ) -> Result<RunSettings> {
        let sampler = match req
            .sampler
            .or_else(|| self.sampler.as_deref().and_then(|s| s.parse().ok()))
        {
            Some(s) => s,
            None => scheduler_default()?,
        };
        let pipeline_steps = if sampler == SamplerKind::Ddpm {
            1000
        } else {
            50
        };
        Ok(RunSettings {
            sampler,
            steps: req.steps.or(self.steps).unwrap_or(pipeline_steps),
            eta: req.eta.or(self.eta).unwrap_or(0.0),
            guidance: req.guidance.or(self.guidance).unwrap_or(1.0),
            use_clipped_model_output: req
                .use_clipped_model_output
                .or(self.use_clipped_model_output)
                .unwrap_or(false),
        })
    }
}

/// What a run does to x̂0 before the sampler uses it, in a sentence (plain text) the page shows
/// under the sampler controls: the folder's scheduler config (`clip_sample`, `thresholding`) and its
/// `use_clipped_model_output` default, for the sampler picked.
pub fn x0_clipping_note(
    config: &SchedulerConfig,
    sampler: SamplerKind,
    defaults: &ModelDefaults,
) -> String {
    if !sampler.has_clip_sample() {
        return if config.thresholding == Some(true) && sampler.has_thresholding() {
            "x̂0: dynamic thresholding (the scheduler config's thresholding).".into()
        } else {
            "x̂0: not clipped (this sampler ignores clip_sample, as in diffusers).".into()
        };
    }
    if sampler == SamplerKind::Heun {
        // Heun has clip_sample (off by default) and no thresholding.
        return if config.clip_sample == Some(true) {
            let r = config.clip_sample_range.unwrap_or(1.0);
            format!("x̂0: clipped to [−{r}, {r}] (the scheduler config's clip_sample).")
        } else {
            "x̂0: not clipped (Heun clips only with clip_sample: true).".into()
        };
    }
    if config.thresholding == Some(true) {
        return "x̂0: dynamic thresholding (the scheduler config's thresholding).".into();
    }
    if config.clip_sample == Some(false) {
        return "x̂0: not clipped (the scheduler config's clip_sample: false).".into();
    }
    let r = config.clip_sample_range.unwrap_or(1.0);
    match (sampler, defaults.use_clipped_model_output == Some(true)) {
        (SamplerKind::Ddim, true) => format!(
            "x̂0: clipped to [−{r}, {r}], and DDIM rebuilds ε from the clipped x̂0 \
             (this model's use_clipped_model_output)."
        ),
        (SamplerKind::Ddim, false) => format!(
            "x̂0: clipped to [−{r}, {r}] while DDIM keeps the model's ε, as diffusers does by \
             default; with guidance and many steps that mismatch can drift."
        ),
        _ => format!("x̂0: clipped to [−{r}, {r}] (the scheduler config's clip_sample)."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_resolves() {
        let d = ModelDefaults::from_stepwise_json(
            r#"{"name": "m", "defaults": {"sampler": "ddim", "steps": 20, "eta": 0.0, "guidance": 2.5}}"#,
            "m/stepwise.json",
        )
        .unwrap();
        let r = d
            .resolve(Requested::default(), || Ok(SamplerKind::Ddpm))
            .unwrap();
        assert_eq!(
            (r.sampler, r.steps, r.eta, r.guidance),
            (SamplerKind::Ddim, 20, 0.0, 2.5)
        );
        let r = d
            .resolve(
                Requested {
                    sampler: Some(SamplerKind::Ddpm),
                    steps: Some(7),
                    ..Default::default()
                },
                || Ok(SamplerKind::Ddim),
            )
            .unwrap();
        assert_eq!(
            (r.sampler, r.steps, r.guidance),
            (SamplerKind::Ddpm, 7, 2.5)
        );
        // No stepwise.json defaults: diffusers' pipelines' own.
        let none = ModelDefaults::default();
        let r = none
            .resolve(Requested::default(), || Ok(SamplerKind::Ddpm))
            .unwrap();
        assert_eq!(
            (r.sampler, r.steps, r.eta, r.guidance),
            (SamplerKind::Ddpm, 1000, 0.0, 1.0)
        );
        assert!(!r.use_clipped_model_output);
        let r = none
            .resolve(Requested::default(), || Ok(SamplerKind::Ddim))
            .unwrap();
        assert_eq!(r.steps, 50);
    }

    #[test]
    fn clipping_note_follows_config_and_defaults() {
        let cfg = |json: &str| SchedulerConfig::from_json_str(json).unwrap();
        let clipped = ModelDefaults {
            use_clipped_model_output: Some(true),
            ..Default::default()
        };
        let none = ModelDefaults::default();
        let ddim = SamplerKind::Ddim;
        let note = x0_clipping_note(&cfg("{}"), ddim, &clipped);
        assert!(note.contains("rebuilds ε"), "{note}");
        let note = x0_clipping_note(&cfg("{}"), ddim, &none);
        assert!(note.contains("keeps the model's ε"), "{note}");
        let note = x0_clipping_note(&cfg(r#"{"clip_sample": false}"#), ddim, &clipped);
        assert!(note.contains("not clipped"), "{note}");
        let note = x0_clipping_note(&cfg(r#"{"thresholding": true}"#), SamplerKind::Ddpm, &none);
        assert!(note.contains("thresholding"), "{note}");
        let note = x0_clipping_note(&cfg("{}"), SamplerKind::EulerAncestral, &clipped);
        assert!(note.contains("ignores"), "{note}");
        let note = x0_clipping_note(
            &cfg(r#"{"clip_sample_range": 2.0}"#),
            SamplerKind::Ddpm,
            &none,
        );
        assert!(note.contains("[−2, 2]"), "{note}");
    }

    #[test]
    fn every_shipped_model_has_defaults() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
        let mut n = 0;
        for dir in std::fs::read_dir(&models).unwrap() {
            let path = dir.unwrap().path().join("stepwise.json");
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let d = ModelDefaults::from_stepwise_json(&text, &path.display().to_string()).unwrap();
            assert!(
                d.sampler.is_some() && d.steps.is_some(),
                "{}: {d:?}",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 4, "{n} shipped models with a stepwise.json");
    }

    #[test]
    fn bad_defaults_are_named() {
        for (text, what) in [
            (r#"{"defaults": {"sampler": "plms"}}"#, "defaults.sampler"),
            (r#"{"defaults": {"steps": 0}}"#, "defaults.steps"),
            (r#"{"defaults": {"stpes": 10}}"#, "stpes"),
            (r#"{"defaults": {"eta": "one"}}"#, "defaults"),
            (r#"{"defaults": "#, "stepwise.json"),
        ] {
            let err = ModelDefaults::from_stepwise_json(text, "m/stepwise.json")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(what) && err.contains("m/stepwise.json"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            ModelDefaults::from_stepwise_json(r#"{"name": "m"}"#, "x").unwrap(),
            ModelDefaults::default()
        );
    }
}
