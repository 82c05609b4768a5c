//! The compare view: two samplers (each with its own step count) from the same seeded noise,
//! shown side by side aligned by progress, with the per-pixel difference of what is on screen.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::canvas::draw_rgba;
use super::engine::{self, Frame, RunParams};
use super::settings::{CompareSide, Inputs};
use super::state::{ModelState, RunState};
use crate::device::clock::now_ms;
use crate::history::push_thinned;
use crate::sampler::SamplerKind;

/// One side of the comparison: its sampler, step count, frames and timing.
#[derive(Clone, Copy)]
struct Side {
    sampler: RwSignal<SamplerKind>,
    steps: RwSignal<usize>,
    frames: RwSignal<Vec<Frame>>,
    ms: RwSignal<f64>,
}

impl Side {
    /// A side whose settings are the URL-backed signals of `settings`.
    fn new(settings: CompareSide) -> Self {
        Self {
            sampler: settings.sampler,
            steps: settings.steps,
            frames: RwSignal::new(Vec::new()),
            ms: RwSignal::new(0.0),
        }
    }

    /// The kept frame nearest to `progress` (0 = x_T, 1 = the last step); while the run is in
    /// progress, at most its latest frame.
    fn at(&self, progress: f64) -> Option<Frame> {
        self.frames.with(|v| {
            let target = progress * v.last()?.total as f64;
            v.iter()
                .min_by(|a, b| {
                    let d = |f: &Frame| (f.index as f64 - target).abs();
                    d(a).total_cmp(&d(b))
                })
                .cloned()
        })
    }
}

/// |a − b| per channel, ×4 so small differences show; black where the two agree.
fn diff_rgba(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.chunks_exact(4)
        .zip(b.chunks_exact(4))
        .flat_map(|(p, q)| {
            let d = |i: usize| ((p[i] as i32 - q[i] as i32).unsigned_abs() * 4).min(255) as u8;
            [d(0), d(1), d(2), 255]
        })
        .collect()
}

/// Two runs from the same noise, side by side.
#[component]
pub fn CompareView() -> impl IntoView {
    let s = expect_context::<Inputs>();
    let models = expect_context::<ModelState>();
    let a = Side::new(s.cmp_a);
    let b = Side::new(s.cmp_b);
    // Each side keeps half the history budget (a 1000-step side at batch 16 is thinned).
    let budget = expect_context::<RunState>().budget / 2;
    let progress = RwSignal::new(1.0f64);
    let running = RwSignal::new(false);
    let stop = RwSignal::new(false);
    let done = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let refs = [(); 5].map(|_| NodeRef::<leptos::html::Canvas>::new());
    // The largest |A − B| on screen (None before both sides have a frame).
    let max_diff = RwSignal::new(None::<u8>);
    // Another model: the comparison on screen was of the old one.
    Effect::new(move |prev: Option<Option<String>>| {
        let now = models.entry.with(|e| e.as_ref().map(|e| e.path.clone()));
        if prev.is_some_and(|p| p != now) {
            if running.get_untracked() {
                stop.set(true);
            }
            for side in [a, b] {
                side.frames.set(Vec::new());
                side.ms.set(0.0);
            }
            error.set(None);
            done.set(false);
            progress.set(1.0);
        }
        now
    });
    Effect::new(move |_| {
        let p = progress.get();
        let (fa, fb) = (a.at(p), b.at(p));
        for (r, f) in [(refs[0], &fa), (refs[2], &fb)] {
            if let (Some(c), Some(f)) = (r.get(), f) {
                let _ = draw_rgba(&c, &f.xt.rgba, f.xt.width, f.xt.height);
            }
        }
        for (r, f) in [(refs[1], &fa), (refs[3], &fb)] {
            if let (Some(c), Some(f)) = (r.get(), f) {
                let _ = draw_rgba(&c, &f.x0.rgba, f.x0.width, f.x0.height);
            }
        }
        let diff = match (fa, fb) {
            (Some(fa), Some(fb)) => {
                let (pa, pb) = (fa.picture(), fb.picture());
                (pa.rgba.len() == pb.rgba.len())
                    .then(|| (diff_rgba(&pa.rgba, &pb.rgba), pa.width, pa.height))
            }
            _ => None,
        };
        max_diff.set(diff.as_ref().map(|(d, _, _)| {
            d.chunks_exact(4)
                .map(|p| p[0].max(p[1]).max(p[2]))
                .max()
                .unwrap_or(0)
        }));
        for (i, r) in refs.iter().enumerate() {
            let Some(c) = r.get() else { continue };
            let empty = match i {
                0 | 1 => a.frames.with(Vec::is_empty),
                2 | 3 => b.frames.with(Vec::is_empty),
                _ => diff.is_none(),
            };
            if empty {
                // Nothing to show: a blank canvas (the panel's dark background), never a stale one.
                c.set_width(16);
                c.set_height(16);
            }
        }
        if let (Some(c), Some((d, w, h))) = (refs[4].get(), diff) {
            let _ = draw_rgba(&c, &d, w, h);
        }
    });
    let start = move |_| {
        if running.get_untracked() {
            stop.set(true);
            return;
        }
        let Some(Ok(m)) = models.info.get_untracked() else {
            return;
        };
        let base = RunParams {
            sampler: SamplerKind::Ddpm,
            steps: 1,
            eta: s.eta.get_untracked(),
            seed: s.seed.get_untracked(),
            batch: s.batch.get_untracked(),
            class: s.class.get_untracked(),
            guidance: s.guidance.get_untracked(),
            edit: None,
            options: s.options_untracked(),
        };
        for side in [a, b] {
            side.frames.set(Vec::new());
            side.ms.set(0.0);
        }
        error.set(None);
        stop.set(false);
        done.set(false);
        running.set(true);
        spawn_local(async move {
            // One after the other on the one device; the display aligns them by progress.
            for side in [a, b] {
                let p = RunParams {
                    sampler: side.sampler.get_untracked(),
                    steps: side.steps.get_untracked().clamp(1, m.num_train_timesteps),
                    ..base.clone()
                };
                let t0 = now_ms();
                let mut stride = 1;
                let r = engine::run(&m.url, &m, &p, |f| {
                    let total = f.total.max(1) as f64;
                    progress.set(f.index as f64 / total);
                    side.frames.update(|v| {
                        push_thinned(v, f, &mut stride, budget, |f| f.index, Frame::bytes)
                    });
                    side.ms.set(now_ms() - t0);
                    !stop.get_untracked()
                })
                .await;
                if let Err(e) = r {
                    error.set(Some(e));
                    break;
                }
                if stop.get_untracked() {
                    break;
                }
            }
            progress.set(1.0);
            running.set(false);
            done.set(!stop.get_untracked() && error.with_untracked(Option::is_none));
        });
    };
    let side_controls = move |side: Side, name: &'static str| {
        let id = format!("cmp-{name}");
        view! {
            <fieldset class="side">
                <legend>{format!("Run {}", name.to_uppercase())}</legend>
                <label for=format!("{id}-sampler")>"Sampler"</label>
                <select id=format!("{id}-sampler") on:change=move |e| {
                    if let Ok(k) = event_target_value(&e).parse() { side.sampler.set(k) }
                }>
                    {SamplerKind::ALL.into_iter().map(|k| view! {
                        <option value=k.name() prop:selected=move || side.sampler.get() == k>{k.name()}</option>
                    }).collect_view()}
                </select>
                <label for=format!("{id}-steps")>"Steps"</label>
                <input id=format!("{id}-steps") type="number" min="1"
                    max=move || models.info.get().and_then(Result::ok).map(|m| m.num_train_timesteps).unwrap_or(1000)
                    prop:value=move || side.steps.get().to_string()
                    on:change=move |e| { if let Ok(v) = event_target_value(&e).parse() { side.steps.set(v) } } />
                <p class="muted" id=format!("{id}-stats")>{move || {
                    let n = side.frames.with(Vec::len).saturating_sub(1);
                    let ms = side.ms.get();
                    if n == 0 { "–".to_string() } else { format!("{n} steps in {:.2} s ({:.1} ms/step)", ms / 1000.0, ms / n as f64) }
                }}</p>
            </fieldset>
        }
    };
    let state = move || {
        if running.get() {
            "running"
        } else if error.with(Option::is_some) {
            "error"
        } else if done.get() {
            "done"
        } else {
            "idle"
        }
    };
    view! {
        <section class="panel compare" aria-label="Compare two samplers">
            <h2>"Compare two samplers from the same noise"</h2>
            <p class="muted" id="compare-what">"Same starting noise, two solvers of the same ODE: the difference map shows what fewer steps cost. Black is where the two agree; bright is where the cheaper run went elsewhere."</p>
            <div class="sides">
                {side_controls(a, "a")}
                {side_controls(b, "b")}
            </div>
            <button type="button" id="compare-run" disabled=move || models.info.with(|m| !matches!(m, Some(Ok(_))))
                on:click=start>{move || if running.get() { "Stop" } else { "Compare" }}</button>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="cmp-frames" id="compare-status" data-state=state>
                <figure><canvas id="cmp-a-xt" node_ref=refs[0] width="16" height="16" role="img" aria-label="Run A: x_t"></canvas><figcaption>"A: x_t"</figcaption></figure>
                <figure><canvas id="cmp-a-x0" node_ref=refs[1] width="16" height="16" role="img" aria-label="Run A: predicted x̂0"></canvas><figcaption>"A: x̂₀"</figcaption></figure>
                <figure><canvas id="cmp-b-xt" node_ref=refs[2] width="16" height="16" role="img" aria-label="Run B: x_t"></canvas><figcaption>"B: x_t"</figcaption></figure>
                <figure><canvas id="cmp-b-x0" node_ref=refs[3] width="16" height="16" role="img" aria-label="Run B: predicted x̂0"></canvas><figcaption>"B: x̂₀"</figcaption></figure>
                <figure><canvas id="cmp-diff" node_ref=refs[4] width="16" height="16" role="img" aria-label="Per-pixel difference of the two x_t, times 4"></canvas>
                    <figcaption id="cmp-diff-caption">{move || match max_diff.get() {
                        None => "|A − B| ×4: press Compare".to_string(),
                        Some(0) => "|A − B| ×4: identical (all black)".to_string(),
                        Some(_) => "|A − B| ×4".to_string(),
                    }}</figcaption></figure>
            </div>
            <label for="cmp-progress">"Progress: " <output>{move || format!("{:.0}%", progress.get() * 100.0)}</output></label>
            <input id="cmp-progress" type="range" min="0" max="1" step="0.001" disabled=move || running.get()
                prop:value=move || progress.get().to_string()
                on:input=move |e| { if let Ok(v) = event_target_value(&e).parse() { progress.set(v) } } />
        </section>
    }
}
