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
    /// −1: one class per sample, spread over the batch (at batch 1: the seed's class).
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
    /// What the URL asked for that does not run as asked, one sentence each naming the
    /// parameter and the value used instead (shown above the controls).
    pub notes: RwSignal<Vec<String>>,
    /// The inputs the model's defaults must not overwrite: those the URL set, and those the user
    /// changed since the page loaded or the model was picked.
    pub touched: RwSignal<Vec<&'static str>>,
    /// Start a run once the model is ready: a bare first visit (no run parameters in the URL)
    /// unless the browser asks for reduced motion; `?autorun=0|1` decides otherwise.
    pub autorun: bool,
}

/// The sampler and step count of a run when the URL does not say.
pub const DEFAULT_SAMPLER: SamplerKind = SamplerKind::Ddim;
pub const DEFAULT_STEPS: usize = 50;
/// Classifier-free guidance's range on the page (1 = none).
pub const GUIDANCE_MAX: f32 = 20.0;
/// The batch's range (samples per run).
pub const BATCH_MAX: usize = 16;

/// One side of the compare view's settings.
#[derive(Clone, Copy)]
pub struct CompareSide {
    pub sampler: RwSignal<SamplerKind>,
    pub steps: RwSignal<usize>,
}

impl CompareSide {
    /// From `?{prefix}_sampler=…&{prefix}_steps=…`, else the defaults given.
    fn from_url(url: &mut UrlReader, prefix: &str, sampler: SamplerKind, steps: usize) -> Self {
        Self {
            sampler: RwSignal::new(url.sampler(&format!("{prefix}_sampler"), sampler)),
            steps: RwSignal::new(url.steps(&format!("{prefix}_steps"), steps)),
        }
    }

    fn append(&self, q: &web_sys::UrlSearchParams, prefix: &str) {
        q.append(&format!("{prefix}_sampler"), self.sampler.get().name());
        q.append(&format!("{prefix}_steps"), &self.steps.get().to_string());
    }
}

/// Reads the page's query parameters once each, keeping a note for every value it refuses or
/// clamps, so bad input is named where it enters instead of running as something else silently.
struct UrlReader {
    notes: Vec<String>,
}

impl UrlReader {
    /// The parameter's value, trimmed; an empty one counts as absent.
    fn get(&self, k: &str) -> Option<String> {
        param(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn sampler(&mut self, k: &str, default: SamplerKind) -> SamplerKind {
        let Some(v) = self.get(k) else { return default };
        v.parse().unwrap_or_else(|_| {
            self.notes.push(format!(
                "{k}={v} is not a sampler: using {}",
                default.title()
            ));
            default
        })
    }

    fn steps(&mut self, k: &str, default: usize) -> usize {
        let Some(v) = self.get(k) else { return default };
        match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                self.notes
                    .push(format!("{k}={v} is not a step count: using {default}"));
                default
            }
        }
    }

    /// A number in `lo..=hi`: a value outside is clamped, one that is not a number refused.
    fn number(&mut self, k: &str, default: f32, lo: f32, hi: f32) -> f32 {
        let Some(v) = self.get(k) else { return default };
        match v.parse::<f64>() {
            Ok(x) if !x.is_nan() => {
                let c = x.clamp(lo as f64, hi as f64) as f32;
                if (c as f64) != x {
                    self.notes
                        .push(format!("{k}={v} is out of {lo}–{hi}: using {c}"));
                }
                c
            }
            _ => {
                self.notes
                    .push(format!("{k}={v} is not a number: using {default}"));
                default
            }
        }
    }

    fn flag(&mut self, k: &str) -> bool {
        match self.get(k).as_deref() {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(v) => {
                self.notes.push(format!("{k}={v} is not 1 or 0: off"));
                false
            }
        }
    }
}

/// Whether the query holds anything that sets up a run: every parameter but the backend, the
/// CPU threads, the weight precision, the debug hooks and `autorun` itself.
fn has_run_parameters() -> bool {
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    search
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split('=').next())
        .filter(|k| !k.is_empty())
        .any(|k| !matches!(k, "backend" | "threads" | "precision" | "debug" | "autorun"))
}

/// Whether the browser asks for reduced motion (`prefers-reduced-motion: reduce`).
pub fn prefers_reduced_motion() -> bool {
    media_matches("(prefers-reduced-motion: reduce)")
}

/// `window.matchMedia(query).matches`, false where it cannot be asked.
fn media_matches(query: &str) -> bool {
    use js_sys::{Function, Reflect};
    use wasm_bindgen::JsCast;
    let Some(w) = web_sys::window() else {
        return false;
    };
    let Some(f) = Reflect::get(&w, &"matchMedia".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    else {
        return false;
    };
    f.call1(&w, &query.into())
        .ok()
        .and_then(|m| Reflect::get(&m, &"matches".into()).ok())
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
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
    /// The inputs from the page's URL, defaults for what it does not say; every value is checked
    /// here, and what is refused or clamped is named in [`Inputs::notes`].
    pub fn from_url() -> Self {
        let mut url = UrlReader { notes: Vec::new() };
        let model_url = url.get("model_url");
        let model = url.get("model").unwrap_or_else(|| {
            if model_url.is_some() {
                URL_MODEL.into()
            } else {
                String::new()
            }
        });
        let sampler = url.sampler("sampler", DEFAULT_SAMPLER);
        let steps = url.steps("steps", DEFAULT_STEPS);
        let eta = url.number("eta", 0.0, 0.0, 1.0);
        let seed = match url.get("seed") {
            None => random_seed(),
            Some(v) => v.parse().unwrap_or_else(|_| {
                let s = random_seed();
                url.notes.push(format!(
                    "seed={v} is not a seed (a whole number from 0): using {s}"
                ));
                s
            }),
        };
        let class = match url.get("class") {
            None => -1,
            Some(v) => match v.parse::<i64>() {
                Ok(c) if c >= -1 => c,
                _ => {
                    url.notes
                        .push(format!("class={v} is not a class: using one of each"));
                    -1
                }
            },
        };
        let guidance = url.number("guidance", 1.0, 0.0, GUIDANCE_MAX);
        let batch = match url.get("batch") {
            None => 1,
            Some(v) => match v.parse::<f64>() {
                Ok(b) if b.fract() == 0.0 && !b.is_nan() => {
                    let c = b.clamp(1.0, BATCH_MAX as f64) as usize;
                    if c as f64 != b {
                        url.notes
                            .push(format!("batch={v} is out of 1–{BATCH_MAX}: using {c}"));
                    }
                    c
                }
                _ => {
                    url.notes
                        .push(format!("batch={v} is not a batch size: using 1"));
                    1
                }
            },
        };
        let spacing = url.get("spacing").and_then(|v| {
            v.parse().ok().or_else(|| {
                url.notes.push(format!(
                    "spacing={v} is not a timestep spacing (leading, trailing, linspace): using the model's"
                ));
                None
            })
        });
        let karras = url.flag("karras");
        let zero_snr = url.flag("zero_snr");
        // Two solvers of the same probability-flow ODE from the same x_T, both converged
        // (MODEL_CARD.md tables): DDIM (at the page's η, 0 by default) at 50 steps and
        // DPM-Solver++ 2M at 20 land on nearly the same image, so the difference panel shows
        // what fewer steps cost. (DDPM against DDIM compares two different samples: DDPM's
        // fresh noise at every step takes it elsewhere from the same x_T.)
        let cmp_a = CompareSide::from_url(&mut url, "a", SamplerKind::Ddim, 50);
        let cmp_b = CompareSide::from_url(&mut url, "b", SamplerKind::DpmSolverMultistep, 20);
        // A bare first visit shows a run; the benchmark hook's page is a harness, not a visit.
        let bare = !has_run_parameters() && param("debug").as_deref() != Some("bench");
        let autorun = match url.get("autorun").as_deref() {
            None => bare && !prefers_reduced_motion(),
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(v) => {
                url.notes
                    .push(format!("autorun={v} is not 1 or 0: not running by itself"));
                false
            }
        };
        let touched = [
            "sampler", "steps", "eta", "guidance", "class", "seed", "batch",
        ]
        .into_iter()
        .filter(|k| url.get(k).is_some())
        .collect();
        Self {
            model: RwSignal::new(model),
            model_url: RwSignal::new(model_url),
            sampler: RwSignal::new(sampler),
            steps: RwSignal::new(steps),
            eta: RwSignal::new(eta),
            seed: RwSignal::new(seed),
            class: RwSignal::new(class),
            guidance: RwSignal::new(guidance),
            batch: RwSignal::new(batch),
            spacing: RwSignal::new(spacing),
            karras: RwSignal::new(karras),
            zero_snr: RwSignal::new(zero_snr),
            cmp_a,
            cmp_b,
            notes: RwSignal::new(url.notes),
            touched: RwSignal::new(touched),
            autorun,
        }
    }

    /// Marks an input as set by the user: the next model's defaults leave it alone.
    pub fn touch(&self, key: &'static str) {
        if !self.touched.with_untracked(|t| t.contains(&key)) {
            self.touched.update(|t| t.push(key));
        }
    }

    /// Whether the user (or the URL) set this input (untracked).
    pub fn is_touched(&self, key: &str) -> bool {
        self.touched.with_untracked(|t| t.contains(&key))
    }

    /// Adds a note about an input that does not run as asked (shown above the controls).
    pub fn note(&self, text: String) {
        self.notes.update(|n| {
            if !n.contains(&text) {
                n.push(text)
            }
        });
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
