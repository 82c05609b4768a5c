//! The "Paths" view: samplers in 2D. A few hundred particles sampled from a 2D distribution (a
//! Gaussian mixture with its exact ε, or the small MLPs trained on two moons and a swiss roll),
//! drawn on a 2D canvas with their trajectories and the vector field at the step on screen; the
//! "ODE vs SDE" toggle overlays DDIM η = 0 and DDPM from the same starting points.
//!
//! Everything runs on the CPU in the page ([`crate::toy2d`]; a 50-step run of 500 particles is a
//! few million multiply-adds). The run yields to the browser between steps so the page stays
//! responsive. Signals hold the inputs and the finished run; no GPU objects.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::CanvasRenderingContext2d;

use super::engine::yield_to_browser;
use super::fetch::fetch_bytes;
use crate::device::clock::now_ms;
use crate::sampler::{build, SamplerKind, SchedulerConfig};
use crate::toy2d::{
    alpha_bar_at, default_scheduler_config, mean_nearest_distance, vector_field, DataConfig,
    EpsModel, ExactEps, Field, GaussianMixture, Grid, Mlp, Paths, Sampling, Toy2dConfig,
};

/// The distributions on offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dist {
    Mixture,
    Moons,
    SwissRoll,
}

impl Dist {
    const ALL: [Dist; 3] = [Dist::Mixture, Dist::Moons, Dist::SwissRoll];

    /// The `<option>` value and the asset folder name.
    fn name(self) -> &'static str {
        match self {
            Dist::Mixture => "mixture",
            Dist::Moons => "moons",
            Dist::SwissRoll => "swiss_roll",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Dist::Mixture => "Gaussian mixture (exact ε)",
            Dist::Moons => "Two moons (trained MLP)",
            Dist::SwissRoll => "Swiss roll (trained MLP)",
        }
    }

    fn parse(s: &str) -> Option<Dist> {
        Dist::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// A model ready to sample: its ε, its scheduler config and its data.
struct Loaded {
    model: Arc<dyn EpsModel + Send + Sync>,
    scheduler: SchedulerConfig,
    data: DataConfig,
}

/// The mixture is built in; the trained models come from `toy2d/<name>/` (copied from
/// `assets/toy2d` by Trunk).
async fn load(dist: Dist) -> Result<Loaded, String> {
    if dist == Dist::Mixture {
        let scheduler = default_scheduler_config();
        let alphas = build(SamplerKind::Ddpm, &scheduler, 0.0)
            .map_err(|e| e.to_string())?
            .alphas_cumprod()
            .to_vec();
        let mixture = GaussianMixture::page_default();
        return Ok(Loaded {
            model: Arc::new(ExactEps {
                mixture: mixture.clone(),
                alphas_cumprod: alphas,
            }),
            scheduler,
            data: DataConfig::Mixture(mixture),
        });
    }
    let dir = format!("toy2d/{}", dist.name());
    let get = |file: &'static str| {
        let url = format!("{dir}/{file}");
        async move {
            fetch_bytes(&url)
                .await?
                .ok_or_else(|| format!("{url} is not on the server"))
        }
    };
    let config_bytes = get("config.json").await?;
    let config = Toy2dConfig::from_json(&String::from_utf8_lossy(&config_bytes), "config.json")
        .map_err(|e| e.to_string())?;
    let weights = get("model.safetensors").await?;
    let mlp = Mlp::from_safetensors(&weights, &config.model, &format!("{dir}/model.safetensors"))
        .map_err(|e| e.to_string())?;
    let sched_bytes = get("scheduler_config.json").await?;
    let scheduler = SchedulerConfig::from_json_str(&String::from_utf8_lossy(&sched_bytes))
        .map_err(|e| e.to_string())?;
    Ok(Loaded {
        model: Arc::new(mlp),
        scheduler,
        data: config.data,
    })
}

/// One sampler's recorded run, with its colour and legend label.
struct Track {
    label: String,
    colour: &'static str,
    paths: Paths,
}

/// A finished run: what the canvas draws.
struct RunResult {
    model: Arc<dyn EpsModel + Send + Sync>,
    /// Real data points, drawn faintly.
    data: Vec<f32>,
    tracks: Vec<Track>,
    /// (t, ᾱ) of each frame: the step's timestep, then t = 0 for the final sample.
    frame_t: Vec<(f32, f32)>,
    summary: String,
}

impl RunResult {
    fn frames(&self) -> usize {
        self.frame_t.len()
    }
}

/// The world square the canvas shows: the variance-preserving scale, where x_T ~ N(0, I).
const VIEW: f32 = 3.2;
const DATA_POINTS: usize = 2000;
const DATA_SEED: u64 = 0x70D2;
const ODE_COLOUR: &str = "#7aa2ff";
const SDE_COLOUR: &str = "#ffb36b";

fn ctx2d(canvas: &web_sys::HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok()??.dyn_into().ok()
}

/// Draws data, field, trajectories and particles at `frame`; returns the particles drawn.
fn draw(
    canvas: &web_sys::HtmlCanvasElement,
    r: Option<&RunResult>,
    frame: usize,
    field: Option<Field>,
    show_x0: bool,
) -> usize {
    // Size the backing store to the CSS size × devicePixelRatio, so lines stay sharp on
    // high-density screens.
    let dpr = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio());
    let css = f64::from(canvas.client_width().max(64));
    let px = (css * dpr).round() as u32;
    if canvas.width() != px {
        canvas.set_width(px);
        canvas.set_height(px);
    }
    let Some(ctx) = ctx2d(canvas) else {
        return 0;
    };
    let size = f64::from(px);
    let to_px = |x: f32, y: f32| {
        (
            (f64::from(x) + f64::from(VIEW)) / (2.0 * f64::from(VIEW)) * size,
            (f64::from(VIEW) - f64::from(y)) / (2.0 * f64::from(VIEW)) * size,
        )
    };
    ctx.set_global_alpha(1.0);
    ctx.set_fill_style_str("#07080a");
    ctx.fill_rect(0.0, 0.0, size, size);
    // Axes through the origin.
    ctx.set_stroke_style_str("#262a33");
    ctx.set_line_width(dpr);
    ctx.begin_path();
    let (ox, oy) = to_px(0.0, 0.0);
    ctx.move_to(ox, 0.0);
    ctx.line_to(ox, size);
    ctx.move_to(0.0, oy);
    ctx.line_to(size, oy);
    ctx.stroke();
    let Some(r) = r else {
        return 0;
    };
    let frame = frame.min(r.frames().saturating_sub(1));
    // 1. the data, faintly
    ctx.set_fill_style_str("rgba(232, 234, 240, 0.18)");
    let d = 1.5 * dpr;
    for p in r.data.chunks_exact(2) {
        let (x, y) = to_px(p[0], p[1]);
        ctx.fill_rect(x - d / 2.0, y - d / 2.0, d, d);
    }
    // 2. the vector field at this frame's t, arrows scaled so the longest is one cell
    if let (Some(field), Some(&(t, ab))) = (field, r.frame_t.get(frame)) {
        let n = 21;
        let grid = Grid {
            min: [-VIEW, -VIEW],
            max: [VIEW, VIEW],
            nx: n,
            ny: n,
        };
        let v = vector_field(r.model.as_ref(), field, t, ab, &grid);
        let pts = grid.points();
        let longest = v
            .chunks_exact(2)
            .map(|a| a[0].hypot(a[1]))
            .fold(0.0f32, f32::max)
            .max(1e-6);
        let cell = 2.0 * VIEW / n as f32 * 0.9;
        ctx.set_stroke_style_str("rgba(122, 255, 162, 0.45)");
        ctx.set_line_width(dpr);
        ctx.begin_path();
        for (p, a) in pts.chunks_exact(2).zip(v.chunks_exact(2)) {
            let k = cell / longest;
            let (x0, y0) = to_px(p[0], p[1]);
            let (x1, y1) = to_px(p[0] + a[0] * k, p[1] + a[1] * k);
            ctx.move_to(x0, y0);
            ctx.line_to(x1, y1);
            // A small head: two strokes back from the tip.
            let (dx, dy) = (x1 - x0, y1 - y0);
            let len = dx.hypot(dy);
            if len > 2.0 * dpr {
                let (ux, uy) = (dx / len, dy / len);
                let h = (3.0 * dpr).min(len * 0.4);
                ctx.move_to(x1, y1);
                ctx.line_to(x1 - h * (ux - 0.5 * uy), y1 - h * (uy + 0.5 * ux));
                ctx.move_to(x1, y1);
                ctx.line_to(x1 - h * (ux + 0.5 * uy), y1 - h * (uy - 0.5 * ux));
            }
        }
        ctx.stroke();
    }
    // 3. each run's trajectories up to this frame (and its x̂₀ there)
    let mut drawn = 0;
    // In reverse, so the first run's (the ODE's smooth) paths lie on top of the SDE's jagged ones,
    // which are fainter.
    for (k, tr) in r.tracks.iter().enumerate().rev() {
        let xs = &tr.paths.xs;
        let n = tr.paths.particles;
        ctx.set_stroke_style_str(tr.colour);
        ctx.set_global_alpha(if k == 0 { 0.2 } else { 0.1 });
        ctx.set_line_width(dpr);
        ctx.begin_path();
        for i in 0..n {
            for (f, x) in xs.iter().take(frame + 1).enumerate() {
                let (px, py) = to_px(x[2 * i], x[2 * i + 1]);
                if f == 0 {
                    ctx.move_to(px, py);
                } else {
                    ctx.line_to(px, py);
                }
            }
        }
        ctx.stroke();
        ctx.set_global_alpha(1.0);
        if show_x0 {
            if let Some(x0) = tr.paths.x0s.get(frame) {
                ctx.set_stroke_style_str(tr.colour);
                ctx.begin_path();
                let s = 2.0 * dpr;
                for p in x0.chunks_exact(2) {
                    let (x, y) = to_px(p[0], p[1]);
                    ctx.move_to(x - s, y - s);
                    ctx.line_to(x + s, y + s);
                    ctx.move_to(x - s, y + s);
                    ctx.line_to(x + s, y - s);
                }
                ctx.stroke();
            }
        }
    }
    // 4. the particles last, interleaved across runs (particle i of each run in turn), so that where
    // two runs' clouds overlap neither hides the other; at step 0 they coincide and the last run
    // is on top.
    let d = 2.5 * dpr;
    let current: Vec<(&str, &[f32])> = r
        .tracks
        .iter()
        .filter_map(|tr| Some((tr.colour, tr.paths.xs.get(frame)?.as_slice())))
        .collect();
    let n = current.iter().map(|(_, x)| x.len() / 2).max().unwrap_or(0);
    let mut colour = "";
    for i in 0..n {
        for &(c, x) in &current {
            let Some(p) = x.get(2 * i..2 * i + 2) else {
                continue;
            };
            if c != colour {
                ctx.set_fill_style_str(c);
                colour = c;
            }
            let (px, py) = to_px(p[0], p[1]);
            ctx.fill_rect(px - d / 2.0, py - d / 2.0, d, d);
            drawn += 1;
        }
    }
    drawn
}

/// "Paths: samplers in 2D".
#[component]
pub fn Toy2dView() -> impl IntoView {
    let dist = RwSignal::new(Dist::Mixture);
    let sampler = RwSignal::new(SamplerKind::Ddim);
    let steps = RwSignal::new(50usize);
    let eta = RwSignal::new(0.0f32);
    let particles = RwSignal::new(500usize);
    let seed = RwSignal::new(0u64);
    let ode_sde = RwSignal::new(false);
    let field = RwSignal::new(Some(Field::X0MinusX));
    let show_x0 = RwSignal::new(false);
    let frame = RwSignal::new(0usize);
    let playing = RwSignal::new(false);
    let play_gen = RwSignal::new(0u32);
    let running = RwSignal::new(false);
    let progress = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let result = RwSignal::new(None::<Arc<RunResult>>);
    let drawn = RwSignal::new(0usize);
    let resized = RwSignal::new(0u32);
    let canvas = NodeRef::<leptos::html::Canvas>::new();

    let handle = window_event_listener(leptos::ev::resize, move |_| resized.update(|n| *n += 1));
    on_cleanup(move || handle.remove());

    Effect::new(move |_| {
        let _ = resized.get();
        let (f, fl, x0) = (frame.get(), field.get(), show_x0.get());
        let Some(c) = canvas.get() else {
            return;
        };
        let n = result.with(|r| draw(&c, r.as_deref(), f, fl, x0));
        drawn.set(n);
    });

    let frames = move || result.with(|r| r.as_ref().map_or(0, |r| r.frames()));

    let play = move |from_start: bool| {
        let gen = play_gen.get_untracked().wrapping_add(1);
        play_gen.set(gen);
        if from_start || frame.get_untracked() + 1 >= frames() {
            frame.set(0);
        }
        playing.set(true);
        spawn_local(async move {
            // 20 frames a second; a newer play (or pause) changes `play_gen` and ends this loop.
            loop {
                yield_to_browser(50).await;
                if play_gen.get_untracked() != gen || !playing.get_untracked() {
                    break;
                }
                let f = frame.get_untracked();
                if f + 1 >= frames() {
                    playing.set(false);
                    break;
                }
                frame.set(f + 1);
            }
        });
    };

    let start = move |_| {
        if running.get_untracked() {
            return;
        }
        playing.set(false);
        error.set(None);
        running.set(true);
        let (d, kind, n_steps, e, n, s, both) = (
            dist.get_untracked(),
            sampler.get_untracked(),
            steps.get_untracked().clamp(1, 1000),
            eta.get_untracked(),
            particles.get_untracked().clamp(1, 5000),
            seed.get_untracked(),
            ode_sde.get_untracked(),
        );
        spawn_local(async move {
            let t0 = now_ms();
            let r = async {
                progress.set("loading…".into());
                let loaded = load(d).await?;
                let runs: Vec<(SamplerKind, f32, String, &'static str)> = if both {
                    vec![
                        (
                            SamplerKind::Ddim,
                            0.0,
                            "DDIM η = 0 (ODE)".into(),
                            ODE_COLOUR,
                        ),
                        (SamplerKind::Ddpm, 1.0, "DDPM (SDE)".into(), SDE_COLOUR),
                    ]
                } else {
                    let label = if kind == SamplerKind::Ddim {
                        format!("{kind}, η = {e}")
                    } else {
                        kind.to_string()
                    };
                    vec![(kind, e, label, ODE_COLOUR)]
                };
                let mut tracks = Vec::new();
                for (k, eta, label, colour) in runs {
                    let sched = build(k, &loaded.scheduler, eta).map_err(|e| e.to_string())?;
                    let mut run = Sampling::new(sched, n_steps, n, s).map_err(|e| e.to_string())?;
                    let mut last_yield = now_ms();
                    while !run.is_done() {
                        run.step(loaded.model.as_ref())
                            .map_err(|e| format!("{label}: {e}"))?;
                        if now_ms() - last_yield > 30.0 {
                            progress.set(format!(
                                "{label}: step {} of {}",
                                run.done_steps(),
                                run.total()
                            ));
                            yield_to_browser(0).await;
                            last_yield = now_ms();
                        }
                    }
                    tracks.push(Track {
                        label,
                        colour,
                        paths: run.into_paths(),
                    });
                }
                let data = loaded.data.sample(DATA_POINTS, DATA_SEED);
                let first = &tracks[0].paths;
                let alphas = build(SamplerKind::Ddpm, &loaded.scheduler, 0.0)
                    .map(|s| s.alphas_cumprod().to_vec())
                    .unwrap_or_default();
                let mut frame_t: Vec<(f32, f32)> = first
                    .timesteps
                    .iter()
                    .copied()
                    .zip(first.alpha_bars.iter().copied())
                    .collect();
                let end_ab = if alphas.is_empty() {
                    1.0
                } else {
                    alpha_bar_at(&alphas, 0.0) as f32
                };
                frame_t.push((0.0, end_ab));
                let ms = now_ms() - t0;
                let distances = tracks
                    .iter()
                    .map(|t| {
                        let end = t.paths.xs.last().map_or(&[][..], |v| &v[..]);
                        format!("{} {:.3}", t.label, mean_nearest_distance(end, &data))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok::<_, String>(RunResult {
                    model: loaded.model,
                    data,
                    tracks,
                    frame_t,
                    summary: format!(
                        "{n} particles, {n_steps} steps in {:.2} s. Mean distance from a particle \
                         to the nearest data point: {distances}.",
                        ms / 1000.0
                    ),
                })
            }
            .await;
            match r {
                Ok(r) => {
                    result.set(Some(Arc::new(r)));
                    running.set(false);
                    play(true);
                }
                Err(e) => {
                    error.set(Some(e));
                    running.set(false);
                }
            }
            progress.set(String::new());
        });
    };

    let frame_label = move || {
        result.with(|r| {
            let r = r.as_ref()?;
            let f = frame.get().min(r.frames().saturating_sub(1));
            let (t, ab) = r.frame_t.get(f).copied()?;
            Some(if f + 1 == r.frames() {
                format!("end: the samples (step {f} of {})", r.frames() - 1)
            } else {
                format!("step {f} of {}: t = {t}, ᾱ_t = {ab:.4}", r.frames() - 1)
            })
        })
    };

    view! {
        <section class="panel toy2d" id="toy2d" aria-label="Paths: samplers in 2D">
            <h2>"Paths: samplers in 2D"</h2>
            <p class="muted">
                "Each dot is one sample: a 2D point instead of an image, so a sampler's whole run fits on one picture. \
                 The dots start as Gaussian noise and follow the sampler towards the data (grey). Arrows are the model's field at the step on screen."
            </p>
            <div class="toy2d-row">
                <div class="toy2d-controls">
                    <label for="toy2d-dist">"Distribution"</label>
                    <select id="toy2d-dist" on:change=move |e| {
                        if let Some(d) = Dist::parse(&event_target_value(&e)) { dist.set(d) }
                    }>
                        {Dist::ALL.into_iter().map(|d| view! {
                            <option value=d.name() prop:selected=move || dist.get() == d>{d.label()}</option>
                        }).collect_view()}
                    </select>
                    <label for="toy2d-sampler">"Sampler"</label>
                    <select id="toy2d-sampler" prop:disabled=move || ode_sde.get() on:change=move |e| {
                        if let Ok(k) = event_target_value(&e).parse() { sampler.set(k) }
                    }>
                        {SamplerKind::ALL.into_iter().map(|k| view! {
                            <option value=k.name() prop:selected=move || sampler.get() == k>{k.name()}</option>
                        }).collect_view()}
                    </select>
                    <label for="toy2d-steps">"Steps"</label>
                    <input id="toy2d-steps" type="number" min="1" max="1000"
                        prop:value=move || steps.get().to_string()
                        on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { steps.set(v) } } />
                    <label for="toy2d-eta">"η (DDIM)"</label>
                    <input id="toy2d-eta" type="number" min="0" max="1" step="0.1"
                        prop:disabled=move || ode_sde.get() || sampler.get() != SamplerKind::Ddim
                        prop:value=move || eta.get().to_string()
                        on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse::<f32>() { eta.set(v.clamp(0.0, 1.0)) } } />
                    <label for="toy2d-particles">"Particles"</label>
                    <input id="toy2d-particles" type="number" min="1" max="5000"
                        prop:value=move || particles.get().to_string()
                        on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { particles.set(v) } } />
                    <label for="toy2d-seed">"Seed"</label>
                    <input id="toy2d-seed" type="number" min="0"
                        prop:value=move || seed.get().to_string()
                        on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { seed.set(v) } } />
                    <label class="check">
                        <input id="toy2d-ode-sde" type="checkbox" prop:checked=move || ode_sde.get()
                            on:change=move |e| ode_sde.set(event_target_checked(&e)) />
                        " ODE vs SDE (DDIM η = 0 and DDPM from the same noise)"
                    </label>
                    <label for="toy2d-field">"Arrows"</label>
                    <select id="toy2d-field" on:change=move |e| field.set(match event_target_value(&e).as_str() {
                        "eps" => Some(Field::Eps),
                        "x0" => Some(Field::X0MinusX),
                        _ => None,
                    })>
                        <option value="x0" prop:selected=move || field.get() == Some(Field::X0MinusX)>"x̂₀ − x (towards the guess)"</option>
                        <option value="eps" prop:selected=move || field.get() == Some(Field::Eps)>"ε̂ (the predicted noise)"</option>
                        <option value="none" prop:selected=move || field.get().is_none()>"none"</option>
                    </select>
                    <label class="check">
                        <input id="toy2d-x0" type="checkbox" prop:checked=move || show_x0.get()
                            on:change=move |e| show_x0.set(event_target_checked(&e)) />
                        " show x̂₀ (×)"
                    </label>
                    <button type="button" id="toy2d-run" prop:disabled=move || running.get() on:click=start>
                        {move || if running.get() { "Running…" } else { "Run" }}
                    </button>
                    <p class="muted" id="toy2d-progress">{move || progress.get()}</p>
                    {move || error.get().map(|e| view! { <p class="error" role="alert" id="toy2d-error">{e}</p> })}
                </div>
                <div class="toy2d-stage">
                    <canvas id="toy2d-canvas" node_ref=canvas width="480" height="480"
                        data-drawn=move || drawn.get().to_string()
                        aria-label="Particles, their paths and the model's vector field in 2D"></canvas>
                    <div class="toy2d-scrub">
                        <button type="button" class="secondary" id="toy2d-play"
                            prop:disabled=move || frames() == 0
                            on:click=move |_| if playing.get_untracked() { playing.set(false) } else { play(false) }>
                            {move || if playing.get() { "Pause" } else { "Play" }}
                        </button>
                        <input id="toy2d-step" type="range" min="0"
                            max=move || frames().saturating_sub(1).to_string()
                            prop:value=move || frame.get().to_string()
                            prop:disabled=move || frames() == 0
                            aria-label="Step"
                            on:input=move |e| {
                                playing.set(false);
                                if let Ok(v) = event_target_value(&e).parse() { frame.set(v) }
                            } />
                    </div>
                    <p class="muted" id="toy2d-frame">{frame_label}</p>
                    <p class="legend" id="toy2d-legend">
                        {move || result.with(|r| r.as_ref().map(|r| r.tracks.iter().map(|t| {
                            let style = format!("--key: {}", t.colour);
                            view! { <span class="key track" style=style>{t.label.clone()}</span> }
                        }).collect_view()))}
                        <span class="key data">"data"</span>
                        <span class="key field">"vector field"</span>
                    </p>
                    <p class="muted" id="toy2d-status">{move || result.with(|r| r.as_ref().map(|r| r.summary.clone()))}</p>
                </div>
            </div>
        </section>
    }
}
