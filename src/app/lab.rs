//! The sampler lab view: how each sampler converges as its step count grows. From one noise,
//! a fine reference run and each chosen sampler at each step count; a log–log plot of each final
//! image's distance to the reference, the samplers × steps grid with difference maps (a click
//! replays that run in the main view), the DDIM η sweep (DDIM turning into DDPM on one noise
//! path), and the x_t / x̂0 paths of the runs seen along their two principal directions.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::canvas::draw_rgba;
use super::engine::{self, Image, LabCell, LabEvent, LabParams, LabPaths};
use super::settings::Inputs;
use super::state::ModelState;
use crate::lab::SamplerChoice;
use crate::sampler::{SamplerKind, TimestepSpacing};

/// Starts a run in the main view with the current inputs (provided by the generate view).
#[derive(Clone, Copy)]
pub struct RunTrigger(pub Callback<()>);

/// A canvas that shows one RGBA image.
#[component]
fn Picture(
    /// The pixels.
    image: Image,
    /// What the image shows, for screen readers.
    label: String,
) -> impl IntoView {
    let r = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        if let Some(c) = r.get() {
            let _ = draw_rgba(&c, &image.rgba, image.width, image.height);
        }
    });
    view! { <canvas node_ref=r width="16" height="16" aria-label=label></canvas> }
}

/// Colours of the plot's lines, by sampler order.
const COLOURS: [&str; 8] = [
    "#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7",
];

/// Per sampler (in first-seen order): (steps, median, min, max) over its noise paths.
type Series = Vec<(SamplerChoice, Vec<(usize, f64, f64, f64)>)>;

fn series(cells: &[LabCell]) -> Series {
    let mut out: Series = Vec::new();
    for c in cells {
        if !out.iter().any(|(s, _)| *s == c.sampler) {
            out.push((c.sampler, Vec::new()));
        }
    }
    for (s, pts) in out.iter_mut() {
        let mut steps: Vec<usize> = cells
            .iter()
            .filter(|c| c.sampler == *s)
            .map(|c| c.steps)
            .collect();
        steps.sort_unstable();
        steps.dedup();
        for k in steps {
            let mut v: Vec<f64> = cells
                .iter()
                .filter(|c| c.sampler == *s && c.steps == k)
                .map(|c| c.rmse)
                .collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let med = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            pts.push((k, med, v[0], v[n - 1]));
        }
    }
    out
}

const PW: f64 = 520.0;
const PH: f64 = 300.0;
const ML: f64 = 56.0;
const MB: f64 = 34.0;
const MT: f64 = 10.0;
const MR: f64 = 150.0;

/// The log–log convergence plot: one line per sampler through its medians, each path's point
/// and its min–max range for stochastic samplers.
#[component]
fn ConvergencePlot(
    /// The finished cells.
    cells: Signal<Vec<LabCell>>,
) -> impl IntoView {
    let body = move || {
        let cells = cells.get();
        let s = series(&cells);
        let ks: Vec<usize> = cells.iter().map(|c| c.steps).collect();
        let rs: Vec<f64> = cells.iter().map(|c| c.rmse).filter(|r| *r > 0.0).collect();
        if ks.is_empty() || rs.is_empty() {
            return view! {
                <text x=PW / 2.0 y=PH / 2.0 text-anchor="middle" class="lab-empty">
                    "Run the sweep to plot each sampler's distance to the reference."
                </text>
            }
            .into_any();
        }
        let (kmin, kmax) = (
            *ks.iter().min().unwrap() as f64,
            *ks.iter().max().unwrap() as f64,
        );
        let (lk0, lk1) = (kmin.log10(), kmax.log10().max(kmin.log10() + 0.3));
        let rmin = rs.iter().copied().fold(f64::INFINITY, f64::min);
        let rmax = rs.iter().copied().fold(0.0, f64::max);
        let (lr0, lr1) = (
            (rmin.log10() - 0.1).floor(),
            (rmax.log10() + 0.1).ceil().max(rmin.log10().floor() + 1.0),
        );
        let x = move |k: f64| ML + (k.log10() - lk0) / (lk1 - lk0) * (PW - ML - MR);
        let y = move |r: f64| MT + (lr1 - r.max(1e-12).log10()) / (lr1 - lr0) * (PH - MT - MB);
        let mut steps: Vec<usize> = ks.clone();
        steps.sort_unstable();
        steps.dedup();
        let xticks = steps
            .into_iter()
            .map(|k| {
                let xx = x(k as f64);
                view! {
                    <line x1=xx x2=xx y1=MT y2=PH - MB class="lab-grid-line" />
                    <text x=xx y=PH - MB + 16.0 text-anchor="middle" class="lab-tick">{k.to_string()}</text>
                }
            })
            .collect_view();
        let yticks = ((lr0 as i32)..=(lr1 as i32))
            .map(|e| {
                let yy = y(10f64.powi(e));
                view! {
                    <line x1=ML x2=PW - MR y1=yy y2=yy class="lab-grid-line" />
                    <text x=ML - 6.0 y=yy + 4.0 text-anchor="end" class="lab-tick">{format!("1e{e}")}</text>
                }
            })
            .collect_view();
        let lines = s
            .iter()
            .enumerate()
            .map(|(i, (sampler, pts))| {
                let colour = COLOURS[i % COLOURS.len()];
                let points = pts
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", x(p.0 as f64), y(p.1)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let ranges = pts
                    .iter()
                    .filter(|p| p.3 > p.2)
                    .map(|p| {
                        let xx = x(p.0 as f64);
                        view! { <line x1=xx x2=xx y1=y(p.2) y2=y(p.3) stroke=colour class="lab-range" /> }
                    })
                    .collect_view();
                let dots = cells
                    .iter()
                    .filter(|c| c.sampler == *sampler)
                    .map(|c| {
                        view! { <circle cx=x(c.steps as f64) cy=y(c.rmse) r="2.5" fill=colour class="lab-dot" /> }
                    })
                    .collect_view();
                let ly = MT + 14.0 + i as f64 * 18.0;
                view! {
                    <polyline class="lab-line" data-sampler=sampler.name() points=points stroke=colour fill="none" />
                    {ranges}
                    {dots}
                    <line x1=PW - MR + 12.0 x2=PW - MR + 32.0 y1=ly - 4.0 y2=ly - 4.0 stroke=colour stroke-width="2" />
                    <text x=PW - MR + 36.0 y=ly class="lab-legend">{sampler.label()}</text>
                }
            })
            .collect_view();
        view! {
            <g>
                {xticks}
                {yticks}
                <text x=(ML + PW - MR) / 2.0 y=PH - 4.0 text-anchor="middle" class="lab-axis">"steps (log)"</text>
                <text x="12" y=(MT + PH - MB) / 2.0 text-anchor="middle" class="lab-axis"
                    transform=format!("rotate(-90 12 {})", (MT + PH - MB) / 2.0)>"RMSE to the reference (log)"</text>
                {lines}
            </g>
        }
        .into_any()
    };
    view! {
        <svg id="lab-plot" class="lab-plot" viewBox=format!("0 0 {PW} {PH}") role="img"
            aria-label="Distance of each sampler's final image to the reference against the step count, log–log">
            {body}
        </svg>
    }
}

/// The x_t (solid) and x̂0 (dashed) paths in the plane of their two principal directions.
#[component]
fn PathsPlot(
    /// The projected paths, once a sweep recorded them.
    paths: Signal<Option<LabPaths>>,
) -> impl IntoView {
    let body = move || {
        let Some(p) = paths.get() else {
            return view! {
                <text x=PW / 2.0 y=PH / 2.0 text-anchor="middle" class="lab-empty">
                    "The paths of the runs at the chosen step count appear here after a sweep."
                </text>
            }
            .into_any();
        };
        let all: Vec<[f64; 2]> = p
            .paths
            .iter()
            .flat_map(|q| q.xt.iter().chain(&q.x0).copied())
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for q in &all {
            x0 = x0.min(q[0]);
            x1 = x1.max(q[0]);
            y0 = y0.min(q[1]);
            y1 = y1.max(q[1]);
        }
        let (sx, sy) = ((x1 - x0).max(1e-9), (y1 - y0).max(1e-9));
        let fx = move |v: f64| 12.0 + (v - x0) / sx * (PW - MR - 24.0);
        let fy = move |v: f64| PH - 12.0 - (v - y0) / sy * (PH - 24.0);
        let line = move |pts: &[[f64; 2]]| {
            pts.iter()
                .map(|q| format!("{:.1},{:.1}", fx(q[0]), fy(q[1])))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let runs = p
            .paths
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let colour = if i == 0 { "#cccccc" } else { COLOURS[(i - 1) % COLOURS.len()] };
                let ly = MT + 14.0 + i as f64 * 18.0;
                let start = q.xt.first().copied().unwrap_or([0.0, 0.0]);
                view! {
                    <polyline class="lab-path-xt" points=line(&q.xt) stroke=colour fill="none" />
                    <polyline class="lab-path-x0" points=line(&q.x0) stroke=colour fill="none" stroke-dasharray="4 3" />
                    <circle cx=fx(start[0]) cy=fy(start[1]) r="3" fill=colour />
                    <line x1=PW - MR + 12.0 x2=PW - MR + 32.0 y1=ly - 4.0 y2=ly - 4.0 stroke=colour stroke-width="2" />
                    <text x=PW - MR + 36.0 y=ly class="lab-legend">{q.label.clone()}</text>
                }
            })
            .collect_view();
        let ex = p.explained;
        view! {
            <g>
                {runs}
                <text x="12" y=PH - 2.0 class="lab-tick">
                    {format!("PC1 {:.0} % · PC2 {:.0} % of the variance · solid x_t, dashed x̂0, dot x_T",
                        ex[0] * 100.0, ex[1] * 100.0)}
                </text>
            </g>
        }
        .into_any()
    };
    view! {
        <svg id="lab-paths" class="lab-plot" viewBox=format!("0 0 {PW} {PH}") role="img"
            aria-label="The runs' x_t and predicted x̂0 paths projected on their two principal directions">
            {body}
        </svg>
    }
}

/// Parses "5, 10,20" into ascending unique step counts within 1..=max.
fn parse_steps(text: &str, max: usize) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in text.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
        match part.trim().parse::<usize>() {
            Ok(k) if (1..=max).contains(&k) => v.push(k),
            _ => {
                return Err(format!(
                    "“{}” is not a step count from 1 to {max}",
                    part.trim()
                ))
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return Err("give at least one step count".into());
    }
    Ok(v)
}

/// The lab section.
#[component]
pub fn LabView() -> impl IntoView {
    let s = expect_context::<Inputs>();
    let models = expect_context::<ModelState>();
    let trigger = use_context::<RunTrigger>();
    let chosen = RwSignal::new(vec![
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::DpmSolverMultistep,
        SamplerKind::EulerAncestral,
    ]);
    let steps_text = RwSignal::new("5,10,20,50,100".to_string());
    let ref_steps = RwSignal::new(1000usize);
    let ref_sampler = RwSignal::new(SamplerKind::Ddim);
    // Trailing spacing starts every sampler at every step count from t = T − 1. The configs'
    // usual "leading" does not: DPM-Solver's starts at t = 800 for 200 steps (diffusers' integer
    // step ratio), so its runs drift away from the reference as steps grow.
    let spacing = RwSignal::new(Some(TimestepSpacing::Trailing));
    let paths_n = RwSignal::new(3usize);
    let eta_steps = RwSignal::new(50usize);
    let running = RwSignal::new(false);
    let stop = RwSignal::new(false);
    let progress = RwSignal::new((0usize, 0usize, 0usize, 0usize));
    let error = RwSignal::new(None::<String>);
    let reference = RwSignal::new(None::<(Image, f64)>);
    let cells = RwSignal::new(Vec::<LabCell>::new());
    let paths = RwSignal::new(None::<LabPaths>);
    let eta_ref = RwSignal::new(None::<Image>);
    let eta_cells = RwSignal::new(Vec::<LabCell>::new());
    let done = RwSignal::new(false);

    // Start a sweep: `eta` runs the η sweep (DDIM η 0..1 against DDPM on one noise path).
    let start = move |eta: bool| {
        if running.get_untracked() {
            stop.set(true);
            return;
        }
        let Some(Ok(m)) = models.info.get_untracked() else {
            return;
        };
        let t = m.num_train_timesteps;
        let params = if eta {
            let k = eta_steps.get_untracked().clamp(1, t);
            LabParams {
                samplers: [0.0, 0.25, 0.5, 0.75, 1.0]
                    .into_iter()
                    .map(SamplerChoice::ddim)
                    .collect(),
                steps: vec![k],
                reference: SamplerChoice::new(SamplerKind::Ddpm),
                reference_steps: k,
                paths: 1,
                seed: s.seed.get_untracked(),
                class: s.class.get_untracked(),
                guidance: s.guidance.get_untracked(),
                record_paths: None,
                spacing: None,
            }
        } else {
            let steps = match parse_steps(&steps_text.get_untracked(), t) {
                Ok(v) => v,
                Err(e) => {
                    error.set(Some(format!("Steps: {e}.")));
                    return;
                }
            };
            let samplers: Vec<SamplerChoice> = chosen
                .get_untracked()
                .into_iter()
                .map(SamplerChoice::new)
                .collect();
            if samplers.is_empty() {
                error.set(Some("Choose at least one sampler.".into()));
                return;
            }
            // Paths are drawn for the step count nearest 20.
            let record = steps.iter().copied().min_by_key(|k| (*k as i64 - 20).abs());
            LabParams {
                samplers,
                steps,
                reference: SamplerChoice::new(ref_sampler.get_untracked()),
                reference_steps: ref_steps.get_untracked().clamp(1, t),
                paths: paths_n.get_untracked().clamp(1, 8),
                seed: s.seed.get_untracked(),
                class: s.class.get_untracked(),
                guidance: s.guidance.get_untracked(),
                record_paths: record,
                spacing: spacing.get_untracked(),
            }
        };
        error.set(None);
        stop.set(false);
        done.set(false);
        running.set(true);
        progress.set((0, 0, 0, 0));
        if eta {
            eta_ref.set(None);
            eta_cells.set(Vec::new());
        } else {
            reference.set(None);
            cells.set(Vec::new());
            paths.set(None);
        }
        spawn_local(async move {
            let r = engine::lab_sweep(&m.url, &m, &params, |ev| {
                match ev {
                    LabEvent::Progress {
                        done,
                        total,
                        run,
                        runs,
                    } => progress.set((done, total, run, runs)),
                    LabEvent::Reference { image, ms } => {
                        if eta {
                            eta_ref.set(Some(image));
                        } else {
                            reference.set(Some((image, ms)));
                        }
                    }
                    LabEvent::Cell(c) => {
                        if eta {
                            eta_cells.update(|v| v.push(c));
                        } else {
                            cells.update(|v| v.push(c));
                        }
                    }
                }
                !stop.get_untracked()
            })
            .await;
            match r {
                Ok(sum) => {
                    if !eta {
                        paths.set(sum.paths);
                    }
                    done.set(sum.complete);
                }
                Err(e) => error.set(Some(format!("The sweep stopped: {e}"))),
            }
            running.set(false);
        });
    };

    // A grid cell replays its run (noise path 0 is the main view's run for the same seed).
    let replay = move |c: &LabCell| {
        s.sampler.set(c.sampler.kind);
        s.steps.set(c.steps);
        // The same schedule as the cell.
        s.spacing.set(spacing.get_untracked());
        if c.sampler.kind == SamplerKind::Ddim {
            s.eta.set(c.sampler.eta);
        }
        if let Some(RunTrigger(cb)) = trigger {
            cb.run(());
        }
        if let Some(el) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("viewer"))
        {
            el.scroll_into_view();
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
    let grid = move || {
        let cells = cells.get();
        let s = series(&cells);
        let mut steps: Vec<usize> = cells.iter().map(|c| c.steps).collect();
        steps.sort_unstable();
        steps.dedup();
        if cells.is_empty() {
            return None;
        }
        let head = steps
            .iter()
            .map(|k| view! { <th scope="col">{format!("{k} steps")}</th> })
            .collect_view();
        let rows = s
            .into_iter()
            .map(|(sampler, _)| {
                let tds = steps
                    .iter()
                    .map(|k| {
                        let c = cells
                            .iter()
                            .find(|c| c.sampler == sampler && c.steps == *k && c.path == 0)
                            .cloned();
                        match c {
                            None => view! { <td></td> }.into_any(),
                            Some(c) => {
                                let title = format!(
                                    "{} at {} steps ({} model evaluations, {:.1} s): RMSE {:.4} to the reference. Click to replay in the main view.",
                                    c.sampler.label(), c.steps, c.evaluations, c.ms / 1000.0, c.rmse
                                );
                                let cc = c.clone();
                                view! {
                                    <td>
                                        <button type="button" class="lab-cell" title=title.clone() aria-label=title
                                            data-sampler=c.sampler.name() data-steps=c.steps
                                            on:click=move |_| replay(&cc)>
                                            <Picture image=c.image.clone() label=format!("{} {} steps", c.sampler.label(), c.steps) />
                                            <Picture image=c.diff.clone() label="difference from the reference".to_string() />
                                            <span class="lab-rmse">{format!("{:.3}", c.rmse)}</span>
                                        </button>
                                    </td>
                                }
                                .into_any()
                            }
                        }
                    })
                    .collect_view();
                view! { <tr><th scope="row">{sampler.label()}</th>{tds}</tr> }
            })
            .collect_view();
        Some(view! {
            <table id="lab-grid" class="lab-grid">
                <thead><tr><th scope="col">"sampler"</th>{head}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        })
    };
    let eta_row = move || {
        let cells = eta_cells.get();
        let r = eta_ref.get()?;
        let items = cells
            .into_iter()
            .map(|c| {
                view! {
                    <figure class="lab-eta-cell" data-eta=c.sampler.eta.to_string()>
                        <Picture image=c.image.clone() label=format!("DDIM η={}", c.sampler.eta) />
                        <Picture image=c.diff.clone() label="difference from DDPM".to_string() />
                        <figcaption>{format!("η={} · {:.3}", c.sampler.eta, c.rmse)}</figcaption>
                    </figure>
                }
            })
            .collect_view();
        Some(view! {
            <div class="lab-eta-row" id="lab-eta-row">
                {items}
                <figure class="lab-eta-cell">
                    <Picture image=r label="DDPM".to_string() />
                    <figcaption>"DDPM (the reference)"</figcaption>
                </figure>
            </div>
        })
    };
    let ready = move || models.info.with(|m| matches!(m, Some(Ok(_))));
    view! {
        <section class="panel lab" id="lab" aria-labelledby="lab-title">
            <h2 id="lab-title">"Sampler lab: how fast does each sampler converge?"</h2>
            <p class="muted">
                "From one noise x_T (the main view's seed), a fine reference run (by default DDIM η=0 at 1000 steps: the probability-flow ODE, solved finely) and each sampler at each step count. "
                "The plot shows how far each final image is from the reference. Deterministic samplers approach it as steps grow; "
                "stochastic ones (DDPM, Euler-a, SDE solvers) add fresh noise at every step, so each noise path lands on another image: their spread is drawn as a bar."
            </p>
            <fieldset class="lab-samplers">
                <legend>"Samplers"</legend>
                {SamplerKind::ALL.into_iter().map(|k| {
                    let id = format!("lab-s-{}", k.name().replace('+', "p"));
                    view! {
                        <label class="check" for=id.clone()>
                            <input type="checkbox" id=id.clone() data-sampler=k.name()
                                prop:checked=move || chosen.with(|v| v.contains(&k))
                                on:change=move |e| {
                                    let on = event_target_checked(&e);
                                    chosen.update(|v| { v.retain(|x| *x != k); if on { v.push(k) } });
                                } />
                            {if k == SamplerKind::Ddim { "ddim (η=0)".to_string() } else { k.name().to_string() }}
                        </label>
                    }
                }).collect_view()}
            </fieldset>
            <div class="lab-settings">
                <label for="lab-steps">"Step counts"</label>
                <input id="lab-steps" type="text" inputmode="numeric" prop:value=move || steps_text.get()
                    on:change=move |e| steps_text.set(event_target_value(&e)) />
                <label for="lab-ref-sampler">"Reference sampler"</label>
                <select id="lab-ref-sampler" on:change=move |e| {
                    if let Ok(k) = event_target_value(&e).parse() { ref_sampler.set(k) }
                }>
                    // Deterministic solvers only: a stochastic reference is one sample, not a limit.
                    {SamplerKind::ALL.into_iter()
                        .filter(|k| SamplerChoice::new(*k).is_stochastic(&crate::sampler::SchedulerConfig::default()).ok() == Some(false))
                        .map(|k| view! {
                            <option value=k.name() prop:selected=move || ref_sampler.get() == k>
                                {if k == SamplerKind::Ddim { "ddim (η=0)".to_string() } else { k.name().to_string() }}
                            </option>
                        }).collect_view()}
                </select>
                <label for="lab-spacing">"Timestep spacing"</label>
                <select id="lab-spacing" title="Trailing starts every run at t = T−1; the model's own spacing (often leading) starts some samplers later as steps grow"
                    on:change=move |e| spacing.set(event_target_value(&e).parse().ok())>
                    <option value="trailing" prop:selected=move || spacing.get() == Some(TimestepSpacing::Trailing)>"trailing (every run starts at T)"</option>
                    <option value="" prop:selected=move || spacing.get().is_none()>"the model's"</option>
                    <option value="leading" prop:selected=move || spacing.get() == Some(TimestepSpacing::Leading)>"leading"</option>
                    <option value="linspace" prop:selected=move || spacing.get() == Some(TimestepSpacing::Linspace)>"linspace"</option>
                </select>
                <label for="lab-ref-steps">"Reference steps"</label>
                <input id="lab-ref-steps" type="number" min="10" max="1000" prop:value=move || ref_steps.get().to_string()
                    on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { ref_steps.set(v) } } />
                <label for="lab-paths-n">"Noise paths (stochastic samplers)"</label>
                <input id="lab-paths-n" type="number" min="1" max="8" prop:value=move || paths_n.get().to_string()
                    on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { paths_n.set(v) } } />
            </div>
            <button type="button" id="lab-run" disabled=move || !ready()
                on:click=move |_| start(false)>{move || if running.get() { "Stop" } else { "Run the sweep" }}</button>
            <div id="lab-status" data-state=state role="status" aria-live="polite" class="muted">
                {move || {
                    let (d, t, run, runs) = progress.get();
                    if running.get() && t > 0 {
                        let what = if run == 0 { "the reference".to_string() } else { format!("run {run} of {}", runs - 1) };
                        format!("{d} of {t} model evaluations ({:.0} %): {what}", d as f64 / t as f64 * 100.0)
                    } else if let Some((_, ms)) = reference.get() {
                        format!("Reference: {:.1} s. {} runs finished.", ms / 1000.0, cells.with(Vec::len))
                    } else {
                        String::new()
                    }
                }}
            </div>
            <progress id="lab-progress" max="1" value=move || {
                let (d, t, _, _) = progress.get();
                if t == 0 { 0.0 } else { d as f64 / t as f64 }
            }></progress>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="lab-figures">
                <ConvergencePlot cells=cells.into() />
                {move || reference.get().map(|(img, _)| view! {
                    <figure class="lab-ref">
                        <Picture image=img label="the reference run's final image".to_string() />
                        <figcaption>"reference"</figcaption>
                    </figure>
                })}
            </div>
            {grid}
            <h3>"Paths through sample space"</h3>
            <p class="muted">"Each run's x_t (solid) and x̂0 (dashed) at the step count nearest 20, seen along the two directions in which all of them vary most. ODE solvers follow nearly one curve; stochastic samplers wander off it."</p>
            <PathsPlot paths=paths.into() />
            <h3>"η: DDIM turning into DDPM"</h3>
            <p class="muted">"DDIM at η = 0, ¼, ½, ¾ and 1 on one noise path, against DDPM on the same path: at η = 1 DDIM takes DDPM's steps, so the difference vanishes."</p>
            <label for="lab-eta-steps">"Steps"</label>
            <input id="lab-eta-steps" type="number" min="1" max="1000" prop:value=move || eta_steps.get().to_string()
                on:change=move |e| { if let Ok(v) = event_target_value(&e).trim().parse() { eta_steps.set(v) } } />
            <button type="button" id="lab-eta-run" disabled=move || !ready()
                on:click=move |_| start(true)>{move || if running.get() { "Stop" } else { "Run the η sweep" }}</button>
            {eta_row}
        </section>
    }
}
