//! The user's inputs, one signal each, and their round trip through the URL query
//! (`?model=…&sampler=…&steps=…&eta=…&seed=…&class=…&guidance=…&batch=…`, and the compare
//! view's `a_sampler`, `a_steps`, `b_sampler`, `b_steps`), so a link reproduces a run exactly.

use leptos::prelude::*;

use crate::sampler::{SamplerKind, SamplerOptions, TimestepSpacing};

/// The controls' values, shared through context (every control reads and writes one field).
#[derive(Clone, Copy)]
pub struct Inputs {
    /// Shipped model name from the manifest, or `url` for `model_url`.
    pub model: RwSignal<String>,
    /// A diffusers folder URL given with `?model_url=` (tests, or your own served folder).
    pub model_url: RwSignal<Option<String>>,
    pub sampler: RwSignal<SamplerKind>,
    pub steps: RwSignal<usize>,
    pub eta: RwSignal<f32>,
    pub seed: RwSignal<u64>,
    /// −1: one class per sample, spread over the batch.
    pub class: RwSignal<i64>,
    pub guidance: RwSignal<f32>,
    pub batch: RwSignal<usize>,
    /// Sampler options on top of the model's scheduler config (`?spacing=`, `?karras=1`,
    /// `?zero_snr=1`); `None`/false keep the config's.
    pub spacing: RwSignal<Option<TimestepSpacing>>,
    pub karras: RwSignal<bool>,
    pub zero_snr: RwSignal<bool>,
    /// The compare view's two runs: sampler and step count each.
    pub cmp_a: CompareSide,
    pub cmp_b: CompareSide,
}

/// One side of the compare view's settings.
#[derive(Clone, Copy)]
pub struct CompareSide {
    pub sampler: RwSignal<SamplerKind>,
    pub steps: RwSignal<usize>,
}

impl CompareSide {
    /// From `?{prefix}_sampler=…&{prefix}_steps=…`, else the defaults given.
    fn from_url(prefix: &str, sampler: SamplerKind, steps: usize) -> Self {
        let get = |k: &str| param(&format!("{prefix}_{k}")).filter(|v| !v.is_empty());
        Self {
            sampler: RwSignal::new(
                get("sampler")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(sampler),
            ),
            steps: RwSignal::new(
                get("steps")
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s >= 1)
                    .unwrap_or(steps),
            ),
        }
    }

    fn append(&self, q: &web_sys::UrlSearchParams, prefix: &str) {
        q.append(&format!("{prefix}_sampler"), self.sampler.get().name());
        q.append(&format!("{prefix}_steps"), &self.steps.get().to_string());
    }
}

/// The history's memory budget in bytes: `?history_mb=` (a test hook to see the cap on a short
/// run), else 64 MB, which keeps every frame of a 1000-step run at batch 4 and thins larger ones.
pub fn history_budget() -> usize {
    param("history_mb")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|mb| (mb * 1e6) as usize)
        .unwrap_or(64_000_000)
}

/// The name the model picker uses for `?model_url=`.
pub const URL_MODEL: &str = "url";
/// The name the model picker uses for a folder the user opened from their own files.
pub const LOCAL_MODEL: &str = "files";

fn params() -> Option<web_sys::UrlSearchParams> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()
}

/// One query parameter of the page's URL.
pub fn param(name: &str) -> Option<String> {
    params()?.get(name)
}

/// A fresh random seed (53 bits, so it survives a round trip through a JS number).
pub fn random_seed() -> u64 {
    (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64
}

impl Inputs {
    /// The inputs from the page's URL, defaults for what it does not say.
    pub fn from_url() -> Self {
        let get = |k: &str| param(k).filter(|v| !v.is_empty());
        let model_url = get("model_url");
        let model = get("model").unwrap_or_else(|| {
            if model_url.is_some() {
                URL_MODEL.into()
            } else {
                String::new()
            }
        });
        Self {
            model: RwSignal::new(model),
            model_url: RwSignal::new(model_url),
            sampler: RwSignal::new(
                get("sampler")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(SamplerKind::Ddim),
            ),
            steps: RwSignal::new(
                get("steps")
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s >= 1)
                    .unwrap_or(50),
            ),
            eta: RwSignal::new(
                get("eta")
                    .and_then(|s| s.parse().ok())
                    .filter(|e: &f32| (0.0..=1.0).contains(e))
                    .unwrap_or(0.0),
            ),
            seed: RwSignal::new(
                get("seed")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(random_seed),
            ),
            class: RwSignal::new(get("class").and_then(|s| s.parse().ok()).unwrap_or(-1)),
            guidance: RwSignal::new(
                get("guidance")
                    .and_then(|s| s.parse().ok())
                    .filter(|g: &f32| g.is_finite())
                    .unwrap_or(1.0),
            ),
            batch: RwSignal::new(
                get("batch")
                    .and_then(|s| s.parse().ok())
                    .map(|b: usize| b.clamp(1, 16))
                    .unwrap_or(1),
            ),
            spacing: RwSignal::new(get("spacing").and_then(|s| s.parse().ok())),
            karras: RwSignal::new(get("karras").is_some_and(|v| v == "1" || v == "true")),
            zero_snr: RwSignal::new(get("zero_snr").is_some_and(|v| v == "1" || v == "true")),
            // Two solvers of the same probability-flow ODE from the same x_T, both converged
            // (MODEL_CARD.md tables): DDIM (at the page's η, 0 by default) at 50 steps and
            // DPM-Solver++ 2M at 20 land on nearly the same image, so the difference panel shows
            // what fewer steps cost. (DDPM against DDIM compares two different samples: DDPM's
            // fresh noise at every step takes it elsewhere from the same x_T.)
            cmp_a: CompareSide::from_url("a", SamplerKind::Ddim, 50),
            cmp_b: CompareSide::from_url("b", SamplerKind::DpmSolverMultistep, 20),
        }
    }

    /// The sampler options as set now (untracked).
    pub fn options_untracked(&self) -> SamplerOptions {
        SamplerOptions {
            spacing: self.spacing.get_untracked(),
            karras: self.karras.get_untracked(),
            zero_snr: self.zero_snr.get_untracked(),
            ..SamplerOptions::default()
        }
    }

    /// The query string for the current inputs (tracked: call it inside an effect).
    pub fn query(&self) -> String {
        let q = web_sys::UrlSearchParams::new().expect("URLSearchParams");
        if let Some(u) = self.model_url.get() {
            q.append("model_url", &u);
        }
        let model = self.model.get();
        if !model.is_empty() {
            q.append("model", &model);
        }
        q.append("sampler", self.sampler.get().name());
        q.append("steps", &self.steps.get().to_string());
        q.append("eta", &self.eta.get().to_string());
        q.append("seed", &self.seed.get().to_string());
        q.append("class", &self.class.get().to_string());
        q.append("guidance", &self.guidance.get().to_string());
        q.append("batch", &self.batch.get().to_string());
        if let Some(sp) = self.spacing.get() {
            q.append("spacing", spacing_name(sp));
        }
        if self.karras.get() {
            q.append("karras", "1");
        }
        if self.zero_snr.get() {
            q.append("zero_snr", "1");
        }
        self.cmp_a.append(&q, "a");
        self.cmp_b.append(&q, "b");
        // The backend and weight precision asked for stay with the page (a reload, a shared
        // link, a device lost).
        for key in ["backend", "precision"] {
            if let Some(v) = param(key) {
                q.append(key, &v);
            }
        }
        String::from(q.to_string())
    }

    /// Keeps the address bar in step with the inputs (replaceState: no history entry per drag).
    pub fn sync_to_url(self) {
        Effect::new(move |_| {
            let query = self.query();
            let Some(w) = web_sys::window() else { return };
            let path = w.location().pathname().unwrap_or_default();
            if let Ok(h) = w.history() {
                let _ = h.replace_state_with_url(
                    &wasm_bindgen::JsValue::NULL,
                    "",
                    Some(&format!("{path}?{query}")),
                );
            }
        });
    }
}

/// diffusers' name of a timestep spacing.
pub fn spacing_name(s: TimestepSpacing) -> &'static str {
    match s {
        TimestepSpacing::Leading => "leading",
        TimestepSpacing::Trailing => "trailing",
        TimestepSpacing::Linspace => "linspace",
    }
}
