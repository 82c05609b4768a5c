//! The generate view: the controls, the x_t / x̂0 canvases drawn at every step, the run
//! statistics, the history replay (scrub, step, play) and the schedule plot.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use super::canvas::{download_png, draw_rgba};
use super::engine::{self, BackendInfo, EditMode, Frame, ModelEntry, ModelInfo, RunParams};
use super::plot::SchedulePlot;
use super::settings::{random_seed, Inputs, LOCAL_MODEL, URL_MODEL};
use super::state::{LocalModel, ModelState, RunState};
use crate::device::clock::now_ms;
use crate::history::push_thinned;
use crate::sampler::SamplerKind;

/// Fits the inputs to a loaded model: more steps than it was trained with, or a class it does not
/// have, become what runs, with a note naming the parameter when the URL asked for it.
fn check_against_model(inputs: Inputs, m: &ModelInfo) {
    let steps = inputs.steps.get_untracked();
    if steps > m.num_train_timesteps {
        if inputs.is_touched("steps") {
            inputs.note(format!(
                "steps={steps}: this model has {} training steps: using {}",
                m.num_train_timesteps, m.num_train_timesteps
            ));
        }
        inputs.steps.set(m.num_train_timesteps);
    }
    let class = inputs.class.get_untracked();
    if let Some(k) = m.num_class_embeds.filter(|&k| class >= k as i64) {
        let real = k.max(2) - 1;
        inputs.note(format!(
            "class={class}: this model has {real} classes (0–{}): using one of each",
            real - 1
        ));
        inputs.class.set(-1);
    }
}

/// The whole generate view; owns the run and model state and provides them as context.
#[component]
pub fn GenerateView(
    /// The backend once chosen (None while detecting).
    backend: RwSignal<Option<BackendInfo>>,
) -> impl IntoView {
    let inputs = Inputs::from_url();
    inputs.sync_to_url();
    let run = RunState::new();
    let manifest = RwSignal::new(None::<Result<Vec<ModelEntry>, String>>);
    let local = RwSignal::new(None::<LocalModel>);
    spawn_local(async move { manifest.set(Some(engine::load_manifest().await)) });
    let entries = Memo::new(move |_| {
        let mut list = match manifest.get() {
            Some(Ok(l)) => l,
            _ => Vec::new(),
        };
        if let Some(u) = inputs.model_url.get() {
            list.insert(
                0,
                ModelEntry {
                    name: URL_MODEL.into(),
                    title: format!("{u} (from the URL)"),
                    path: u,
                    classes: vec![],
                    pixel_peer: None,
                },
            );
        }
        if let Some(l) = local.get() {
            list.push(l.entry);
        }
        list
    });
    let entry = Memo::new(move |_| {
        let list = entries.get();
        let want = inputs.model.get();
        list.iter()
            .find(|e| e.name == want)
            .or(list.first())
            .cloned()
    });
    let info = RwSignal::new(None::<Result<ModelInfo, String>>);
    // A model's defaults fill in what the user has not set: the URL's values and what the user
    // changed since the page loaded or the model was picked (`inputs.touched`) are kept.
    // Bumped after the backend is rebuilt (a lost GPU device): loads the model again.
    let reload = RwSignal::new(0u32);
    let last_loaded = StoredValue::new(None::<String>);
    // Load the selected model once the backend is up; a load that finishes after the user has
    // picked another model is dropped.
    Effect::new(move |_| {
        reload.track();
        let ready = backend.with(Option::is_some);
        let Some(e) = entry.get() else { return };
        if !ready {
            return;
        }
        if e.name == LOCAL_MODEL {
            // Loaded from the user's files by OpenModel; only mirror its state.
            let r = local.with(|l| l.as_ref().and_then(|l| l.info.clone()));
            if let Some(Ok(m)) = &r {
                check_against_model(inputs, m);
            }
            info.set(r);
            return;
        }
        info.set(None);
        let path = e.path.clone();
        spawn_local(async move {
            let r = engine::load_model(&path, e.name != URL_MODEL).await.map_err(|err| {
                super::problem::with_details(
                    &format!("Could not load the model “{}”: {}.", e.title, err.reason()),
                    &format!("{}: {err}\nThe shipped models are built by the training pipeline (training/); a folder of your own can be served and named with ?model_url=, or opened with “Open your own model”.", e.path),
                )
            });
            if entry.get_untracked().map(|x| x.path) == Some(path.clone()) {
                // Reloading the same model (a new device after a loss) keeps the user's settings.
                let same_model = last_loaded.get_value().as_deref() == Some(path.as_str());
                last_loaded.set_value(Some(path));
                if let Some(m) = r.as_ref().ok().filter(|_| !same_model) {
                    let keep = |k: &str| inputs.is_touched(k);
                    let d = &m.defaults;
                    if let Some(k) = d
                        .sampler
                        .as_deref()
                        .and_then(|v| v.parse().ok())
                        .filter(|_| !keep("sampler"))
                    {
                        inputs.sampler.set(k);
                    }
                    if let Some(v) = d.steps.filter(|_| !keep("steps")) {
                        inputs.steps.set(v);
                    }
                    if let Some(v) = d.eta.filter(|_| !keep("eta")) {
                        inputs.eta.set(v);
                    }
                    if let Some(v) = d.guidance.filter(|_| !keep("guidance")) {
                        inputs.guidance.set(v);
                    }
                    check_against_model(inputs, m);
                }
                info.set(Some(r));
            }
        });
    });
    let models = ModelState {
        local,
        entries,
        entry,
        info,
    };
    let edit = super::edit::EditState::new(models);
    // `?model=` naming no model of the manifest: say which one runs instead.
    Effect::new(move |_| {
        let Some(Ok(list)) = manifest.get() else {
            return;
        };
        let want = inputs.model.get_untracked();
        if want.is_empty() || want == URL_MODEL || want == LOCAL_MODEL {
            return;
        }
        if !list.iter().any(|e| e.name == want) {
            if let Some(e) = entry.get_untracked() {
                inputs.note(format!(
                    "model={want} is not a shipped model: using {}",
                    e.title
                ));
            }
        }
    });
    // Another model: the run on screen belongs to the old one (its frames, captions, summary,
    // error), so it goes.
    Effect::new(move |prev: Option<Option<String>>| {
        let now = entry.with(|e| e.as_ref().map(|e| e.path.clone()));
        if prev.is_some_and(|p| p != now) {
            run.clear();
        }
        now
    });
    // Another mode: the old mode's complaint goes; the frames stay (they are what "Use the
    // result" takes into the edit).
    Effect::new(move |prev: Option<super::edit::Mode>| {
        let now = edit.mode.get();
        if prev.is_some_and(|p| p != now) {
            run.error.set(None);
            edit.error.set(None);
        }
        now
    });
    provide_context(inputs);
    provide_context(run);
    provide_context(models);
    provide_context(edit);

    let generate = move || {
        if run.running.get_untracked() {
            run.stop.set(true);
            return;
        }
        let Some(Ok(m)) = info.get_untracked() else {
            return;
        };
        let job = match edit.job() {
            Ok(j) => j,
            Err(e) => {
                run.error.set(Some(e));
                return;
            }
        };
        let upscale = job.as_ref().is_some_and(|j| j.mode == EditMode::Upscale);
        let params = RunParams {
            sampler: inputs.sampler.get_untracked(),
            steps: inputs.steps.get_untracked(),
            eta: inputs.eta.get_untracked(),
            seed: inputs.seed.get_untracked(),
            batch: inputs.batch.get_untracked(),
            class: inputs.class.get_untracked(),
            guidance: inputs.guidance.get_untracked(),
            edit: job,
            options: inputs.options_untracked(),
        };
        run.clear();
        run.stop.set(false);
        run.running.set(true);
        // A run whose epoch has passed (the model was switched) stops and leaves no trace.
        let epoch = run.epoch.get_untracked();
        let current = move || run.epoch.get_untracked() == epoch;
        spawn_local(async move {
            // Upscaling runs the super-resolution model on the picture, not the picked model.
            let (m, params) = if upscale {
                match engine::load_model(super::edit::UPSCALER_PATH, true).await {
                    Ok(sr) => {
                        let steps = params.steps.min(sr.num_train_timesteps);
                        (sr, RunParams { steps, ..params })
                    }
                    Err(e) => {
                        if current() {
                            run.error.set(Some(format!(
                                "Could not load the upscaler from {}: {e}",
                                super::edit::UPSCALER_PATH
                            )));
                        }
                        run.running.set(false);
                        return;
                    }
                }
            } else {
                (m, params)
            };
            let start = now_ms();
            let mut stride = 1;
            let r = engine::run(&m.url, &m, &params, |f| {
                if !current() {
                    return false;
                }
                run.frames.update(|v| {
                    push_thinned(v, f, &mut stride, run.budget, |f| f.index, Frame::bytes)
                });
                run.stride.set(stride);
                run.view.set(run.frames.with_untracked(Vec::len) - 1);
                run.elapsed_ms.set(now_ms() - start);
                !run.stop.get_untracked()
            })
            .await;
            if current() {
                run.elapsed_ms.set(now_ms() - start);
            }
            match r {
                Ok(_) if !current() => {}
                Ok(s) => run.summary.set(Some(s)),
                Err(e) => match engine::device_lost_after_error().await {
                    // The GPU went away (driver reset, unplugged, destroyed): set up a new device
                    // (or the CPU backend), reload the model, keep the settings and the frames.
                    Some(why) => {
                        run.error.set(Some(format!(
                            "The GPU device was lost ({why}) during the run. Setting up a new one…"
                        )));
                        let info = engine::init_backend(engine::Choice::from_url()).await;
                        let msg = format!(
                            "The GPU device was lost ({why}) during the run; the frames so far are kept. Now running on {} — press {} to run again.",
                            info.description,
                            edit.mode.get_untracked().verb(),
                        );
                        backend.set(Some(info));
                        reload.update(|n| *n += 1);
                        run.error.set(Some(msg));
                    }
                    None if current() => run.error.set(Some(e)),
                    None => {}
                },
            }
            run.running.set(false);
        });
    };

    provide_context(super::lab::RunTrigger(Callback::new(move |_: ()| {
        if !run.running.get_untracked() {
            generate()
        }
    })));

    // A bare first visit runs the model's default settings once it is ready, so the page shows
    // what it is for before anything is read (`?autorun=` and reduced motion decide otherwise).
    let pending = StoredValue::new(inputs.autorun);
    Effect::new(move |_| {
        if !pending.get_value() {
            return;
        }
        match info.get() {
            Some(Ok(_)) => {
                pending.set_value(false);
                if !run.running.get_untracked() && run.frames.with_untracked(Vec::is_empty) {
                    generate();
                }
            }
            Some(Err(_)) => pending.set_value(false),
            None => {}
        }
    });

    // Keyboard: arrows, Home and End step through the history (not while typing in a field,
    // where those keys already mean something). Space is left to the browser: it scrolls the
    // page, and a run started by a stray Space on a long page surprised more than it helped.
    let handle = window_event_listener(leptos::ev::keydown, move |e| {
        let tag = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .map(|el| el.tag_name().to_ascii_lowercase())
            .unwrap_or_default();
        if matches!(tag.as_str(), "input" | "select" | "textarea" | "button") {
            return;
        }
        if e.alt_key() || e.ctrl_key() || e.meta_key() {
            return;
        }
        match e.key().as_str() {
            "ArrowLeft" => run.step_view(-1),
            "ArrowRight" => run.step_view(1),
            "Home" => run.step_view(i64::MIN / 2),
            "End" => run.step_view(i64::MAX / 2),
            _ => {}
        }
    });
    on_cleanup(move || handle.remove());

    view! {
        <div class="layout">
            <Controls />
            <div class="stack">
                <RunBar generate=generate />
                <super::edit::EditPanel />
                <Viewer />
            </div>
        </div>
        <super::compare::CompareView />
        <super::lab::LabView />
        <super::noising::NoisingView />
        <super::toy2d::Toy2dView />
    }
}

fn range_value<T: std::str::FromStr>(ev: &leptos::ev::Event) -> Option<T> {
    event_target_value(ev).trim().parse().ok()
}

/// A "?" button next to a term that explains it on hover and on keyboard focus (the text is
/// also the button's description for screen readers).
#[component]
pub fn Tip(
    /// The id of the explanation (referenced by `aria-describedby`).
    id: &'static str,
    /// The term explained, for the button's name ("What is η?").
    term: &'static str,
    /// The explanation, one or two sentences.
    text: &'static str,
) -> impl IntoView {
    view! {
        <span class="tip-wrap">
            <button type="button" class="tip" aria-label=format!("What is {term}?") aria-describedby=id>"?"</button>
            <span role="tooltip" class="tip-text" id=id>{text}</span>
        </span>
    }
}

pub const TIP_XT: &str = "x_t is the sample at step t: it starts as pure noise x_T, and every step of the sampler makes it a little less noisy, until it is the image.";
pub const TIP_X0: &str = "x̂₀ is the model's guess of the clean image from x_t at this step (x_t minus the noise the model sees in it, rescaled): a blur early on, sharp near the end.";
pub const TIP_ETA: &str = "η sets how much fresh noise DDIM adds at every step: 0 follows the deterministic ODE (same seed, same image at any step count), 1 adds as much as DDPM.";
pub const TIP_GUIDANCE: &str = "Classifier-free guidance pushes the model's prediction away from its unconditional one, towards the chosen class: 1 is no push, more follows the class more closely and varies less.";
pub const TIP_TIMESTEP: &str = "The timestep t places the step in the training schedule (0 to 999 here): large t is nearly pure noise, t = 0 is the clean image. A sampler with fewer steps visits fewer, spaced timesteps.";

/// The form on the left: the notes about the URL, model, sampler, steps, η, class, guidance,
/// seed, batch and the edit mode (the run button is in the run bar above the frames).
#[component]
fn Controls() -> impl IntoView {
    let s = expect_context::<Inputs>();
    let models = expect_context::<ModelState>();
    let info = move || models.info.get().and_then(Result::ok);
    let max_steps = move || info().map(|m| m.num_train_timesteps).unwrap_or(1000);
    let classes = move || info().and_then(|m| m.num_class_embeds);
    let class_names = move || models.entry.get().map(|e| e.classes).unwrap_or_default();
    let ready = move || info().is_some();
    // Set when a typed seed was refused: the field goes back to the seed that will run.
    let seed_note = RwSignal::new(None::<String>);
    view! {
        <form class="panel controls" on:submit=|e| e.prevent_default() aria-label="Generation settings">
            {move || {
                let notes = s.notes.get();
                (!notes.is_empty()).then(|| view! {
                    <div class="note" id="url-note" role="status">
                        <p class="note-title">"From the link:"</p>
                        <ul>{notes.into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
                    </div>
                })
            }}
            <label for="model">"Model"</label>
            <select id="model" on:change=move |e| {
                // A model picked by hand starts from its own defaults.
                s.touched.set(Vec::new());
                s.model.set(event_target_value(&e))
            }>
                // Keyed rows: a re-rendered closure here kept its first list (the `?model_url=`
                // folder alone) when the manifest arrived after it.
                <For
                    each=move || models.entries.get()
                    key=|e| (e.name.clone(), e.path.clone())
                    children=move |e| {
                        let name = e.name.clone();
                        let sel = move || models.entry.with(|c| c.as_ref().is_some_and(|c| c.name == name));
                        view! { <option value=e.name.clone() prop:selected=sel>{e.title.clone()}</option> }
                    }
                />
            </select>
            <super::open_model::OpenModel />
            <p class="status" id="model-status" aria-live="polite">
                {move || match models.info.get() {
                    None => match engine::download_progress().get() {
                        Some(d) if d.received > 0 => format!("loading… {}", d.describe()),
                        _ => "loading…".to_string(),
                    },
                    Some(Err(_)) => "not available".to_string(),
                    Some(Ok(m)) => format!(
                        "{}{}×{}×{}{}, {} training steps, {:.1} MB of weights",
                        m.latent.as_ref().map(|l| format!("latent model: {}×{}×{} images from ", l.image_channels, l.image_height, l.image_width)).unwrap_or_default(),
                        m.channels, m.height, m.width,
                        m.num_class_embeds.map(|n| format!(", {} classes", n - 1)).unwrap_or_default(),
                        m.num_train_timesteps, m.weight_bytes as f64 / 1e6,
                    ),
                }}
            </p>

            <label for="sampler">"Sampler"</label>
            <select id="sampler" on:change=move |e| {
                if let Ok(k) = event_target_value(&e).parse() {
                    s.touch("sampler");
                    s.sampler.set(k)
                }
            }>
                {SamplerKind::ALL.into_iter().map(|k| view! {
                    <option value=k.name() prop:selected=move || s.sampler.get() == k>{sampler_title(k)}</option>
                }).collect_view()}
            </select>

            <label for="steps">"Steps: " <output>{move || s.steps.get()}</output></label>
            <input id="steps" type="range" min="1" max=max_steps
                prop:value=move || s.steps.get().to_string()
                on:input=move |e| if let Some(v) = range_value(&e) {
                    s.touch("steps");
                    s.steps.set(v)
                } />

            <div class="label-row">
                // Until the model is known its default η is not: say so rather than show a value
                // that is about to change.
                <label for="eta">"η (DDIM noise): " <output>{move || {
                    if ready() || s.is_touched("eta") { format!("{:.2}", s.eta.get()) } else { "…".to_string() }
                }}</output></label>
                <Tip id="tip-eta" term="η" text=TIP_ETA />
            </div>
            <input id="eta" type="range" min="0" max="1" step="0.05"
                disabled=move || s.sampler.get() != SamplerKind::Ddim || !ready()
                prop:value=move || s.eta.get().to_string()
                on:input=move |e| if let Some(v) = range_value(&e) {
                    s.touch("eta");
                    s.eta.set(v)
                } />
            <p class="hint" id="x0-clipping">{move || match models.info.get() {
                Some(Ok(m)) => crate::defaults::x0_clipping_note(&m.scheduler, s.sampler.get(), &m.defaults),
                _ => String::new(),
            }}</p>
            <details class="sampler-options" id="sampler-options">
                <summary>"Sampler options"</summary>
                <label for="spacing">"Timestep spacing"</label>
                <select id="spacing" on:change=move |e| s.spacing.set(event_target_value(&e).parse().ok())>
                    <option value="" prop:selected=move || s.spacing.get().is_none()>"the model's"</option>
                    {[crate::sampler::TimestepSpacing::Leading, crate::sampler::TimestepSpacing::Trailing, crate::sampler::TimestepSpacing::Linspace]
                        .into_iter().map(|sp| {
                            let name = super::settings::spacing_name(sp);
                            view! { <option value=name prop:selected=move || s.spacing.get() == Some(sp)>{name}</option> }
                        }).collect_view()}
                </select>
                <label class="check" for="karras">
                    <input type="checkbox" id="karras" prop:checked=move || s.karras.get()
                        on:change=move |e| s.karras.set(event_target_checked(&e)) />
                    "Karras σs"
                </label>
                <label class="check" for="zero-snr">
                    <input type="checkbox" id="zero-snr" prop:checked=move || s.zero_snr.get()
                        on:change=move |e| s.zero_snr.set(event_target_checked(&e)) />
                    "Zero terminal SNR (rescaled βs)"
                </label>
                <p class="hint" id="options-note">{move || {
                    let opts = crate::sampler::SamplerOptions {
                        spacing: s.spacing.get(),
                        karras: s.karras.get(),
                        zero_snr: s.zero_snr.get(),
                        ..Default::default()
                    };
                    match models.info.get() {
                        Some(Ok(m)) => match opts.apply(s.sampler.get(), &m.scheduler) {
                            Ok(_) => "Karras σs: the σ-space and DPM-Solver, UniPC, DEIS samplers. Zero terminal SNR makes the last step pure noise; it is for models trained that way (v-prediction): an ε-model cannot say what x̂0 is from pure noise.".to_string(),
                            Err(e) => format!("Not for this sampler: {e}"),
                        },
                        _ => String::new(),
                    }
                }}</p>
            </details>

            {move || classes().map(|n| {
                let names = class_names();
                view! {
                    <label for="class">"Class"</label>
                    <select id="class" on:change=move |e| if let Some(v) = range_value(&e) {
                        s.touch("class");
                        s.class.set(v)
                    }>
                        <option value="-1" prop:selected=move || s.class.get() < 0>"one of each (by seed at batch 1)"</option>
                        {(0..n as i64).map(|c| {
                            let name = if c as usize + 1 == n {
                                "null class (unconditional)".to_string()
                            } else {
                                names.get(c as usize).cloned().unwrap_or_else(|| format!("class {c}"))
                            };
                            view! { <option value=c.to_string() prop:selected=move || s.class.get() == c>{format!("{c}: {name}")}</option> }
                        }).collect_view()}
                    </select>
                    <div class="label-row">
                        <label for="guidance">"Guidance: " <output>{move || format!("{:.1}", s.guidance.get())}</output></label>
                        <Tip id="tip-guidance" term="guidance" text=TIP_GUIDANCE />
                    </div>
                    <input id="guidance" type="range" min="0" max=super::settings::GUIDANCE_MAX step="0.5"
                        prop:value=move || s.guidance.get().to_string()
                        on:input=move |e| if let Some(v) = range_value(&e) {
                            s.touch("guidance");
                            s.guidance.set(v)
                        } />
                }
            })}

            <label for="seed">"Seed"</label>
            <div class="row">
                <input id="seed" type="number" min="0" step="1" inputmode="numeric"
                    aria-describedby="seed-note"
                    prop:value=move || s.seed.get().to_string()
                    on:change=move |e| {
                        let raw = event_target_value(&e);
                        match raw.trim().parse::<u64>() {
                            Ok(v) => {
                                seed_note.set(None);
                                s.touch("seed");
                                s.seed.set(v)
                            }
                            Err(_) => {
                                // The field shows the seed that runs, never a refused one.
                                let keep = s.seed.get_untracked();
                                event_target::<web_sys::HtmlInputElement>(&e).set_value(&keep.to_string());
                                let shown = if raw.trim().is_empty() { "an empty seed".to_string() } else { format!("“{}”", raw.trim()) };
                                seed_note.set(Some(format!("{shown} is not a seed (a whole number from 0): keeping {keep}")));
                            }
                        }
                    } />
                <button type="button" id="new-seed" class="secondary" on:click=move |_| {
                    seed_note.set(None);
                    s.touch("seed");
                    s.seed.set(random_seed())
                }>"New seed"</button>
            </div>
            <p class="hint" id="seed-note" role="status">{move || seed_note.get()}</p>

            <label for="batch">"Batch: " <output>{move || s.batch.get()}</output></label>
            <input id="batch" type="range" min="1" max=super::settings::BATCH_MAX
                prop:value=move || s.batch.get().to_string()
                on:input=move |e| if let Some(v) = range_value(&e) {
                    s.touch("batch");
                    s.batch.set(v)
                } />

            <super::edit::EditControls />
            <p class="hint kbd-hint">"← → step through the history, Home and End jump to x_T and the end (when no field has focus)."</p>
        </form>
    }
}

fn sampler_title(k: SamplerKind) -> &'static str {
    k.title()
}

/// The run's state as the page reports it (`#run-status`'s `data-state`; tracked).
fn run_state(run: RunState) -> &'static str {
    if run.running.get() {
        "running"
    } else if run.error.with(Option::is_some) {
        "error"
    } else {
        match run.summary.get() {
            Some(x) if x.cancelled => "stopped",
            Some(_) => "done",
            None => "idle",
        }
    }
}

/// The run button with a one-line state, above the frames (sticky on a laptop, fixed at the
/// bottom of a phone's screen), and the polite live region that announces the run.
#[component]
fn RunBar<G>(
    /// Starts a run, or stops the one in progress.
    generate: G,
) -> impl IntoView
where
    G: Fn() + Copy + 'static,
{
    let s = expect_context::<Inputs>();
    let run = expect_context::<RunState>();
    let models = expect_context::<ModelState>();
    let edit = expect_context::<super::edit::EditState>();
    let ready = move || models.info.with(|m| matches!(m, Some(Ok(_))));
    let total = move || run.frames.with(|v| v.last().map(|f| f.total)).unwrap_or(0);
    let done = move || run.frames.with(|v| v.last().map(|f| f.index)).unwrap_or(0);
    let line = move || {
        let secs = run.elapsed_ms.get() / 1000.0;
        match (
            models.info.with(|m| m.as_ref().map(Result::is_ok)),
            run_state(run),
        ) {
            (_, "running") if done() == 0 => "starting…".to_string(),
            (_, "running") => format!("step {} / {} · {secs:.1} s", done(), total()),
            (_, "done") => format!("done: {} steps in {secs:.2} s", total()),
            (_, "stopped") => format!("stopped at step {} / {}", done(), total()),
            (_, "error") => "the run failed: see the message below".to_string(),
            (None, _) => "loading the model…".to_string(),
            (Some(false), _) => "the model could not be loaded".to_string(),
            (Some(true), _) => match edit.mode.get() {
                super::edit::Mode::Generate => {
                    "Press Generate to watch noise become an image".to_string()
                }
                m => format!("Press {} to run it on the picture", m.verb()),
            },
        }
    };
    // Announced politely: the start, every quarter, and how the run ended (a memo, so the live
    // region changes only when the sentence does).
    let live = Memo::new(move |_| {
        let (i, n) = (done(), total());
        let quarter = (i * 4).checked_div(n).unwrap_or(0);
        match run_state(run) {
            "running" if quarter == 0 => format!(
                "Started: {} steps of {}.",
                s.steps.get_untracked(),
                s.sampler.get_untracked().title()
            ),
            "running" => format!("{} % done.", quarter * 25),
            "done" => format!(
                "Done: {n} steps in {:.1} s.",
                run.elapsed_ms.get_untracked() / 1000.0
            ),
            "stopped" => format!("Stopped at step {i} of {n}."),
            "error" => format!("The run failed: {}", run.error.get().unwrap_or_default()),
            _ => String::new(),
        }
    });
    view! {
        <div class="runbar panel" id="run-bar" role="group" aria-label="Run">
            <button type="button" id="generate" class="primary" disabled=move || !ready()
                on:click=move |_| generate()>
                {move || if run.running.get() { "Stop" } else { edit.mode.get().verb() }}
            </button>
            <div class="run-now">
                <span class="run-line" id="run-line">{line}</span>
                <progress class="mini" aria-hidden="true" max=move || total().max(1) value=done
                    hidden=move || run.frames.with(Vec::is_empty)></progress>
            </div>
            <div class="sr" id="run-live" aria-live="polite" aria-atomic="true">{move || live.get()}</div>
        </div>
    }
}

/// The canvases, the statistics, the history bar and the schedule plot.
#[component]
fn Viewer() -> impl IntoView {
    let s = expect_context::<Inputs>();
    let edit = expect_context::<super::edit::EditState>();
    let run = expect_context::<RunState>();
    let models = expect_context::<ModelState>();
    let xt_ref = NodeRef::<leptos::html::Canvas>::new();
    let x0_ref = NodeRef::<leptos::html::Canvas>::new();
    let current = move || run.frames.with(|v| v.get(run.view.get()).cloned());
    let is_latent = move || {
        models
            .info
            .get()
            .and_then(Result::ok)
            .is_some_and(|m| m.latent.is_some())
    };
    Effect::new(move |_| {
        let Some(f) = current() else {
            // No run (or it was cleared for another model): blank canvases under the placeholder.
            for r in [xt_ref, x0_ref] {
                if let Some(c) = r.get() {
                    c.set_width(16);
                    c.set_height(16);
                }
            }
            return;
        };
        for (r, img) in [(xt_ref, &f.xt), (x0_ref, &f.x0)] {
            if let Some(c) = r.get() {
                if let Err(e) = draw_rgba(&c, &img.rgba, img.width, img.height) {
                    log::warn!("draw: {e}");
                }
            }
        }
    });
    let schedule = Signal::derive(move || {
        let m = models.info.get()?.ok()?;
        Some(engine::schedule(
            &m.scheduler,
            s.sampler.get(),
            s.steps.get(),
            s.eta.get(),
            &crate::sampler::SamplerOptions {
                spacing: s.spacing.get(),
                karras: s.karras.get(),
                zero_snr: s.zero_snr.get(),
                ..Default::default()
            },
        ))
    });
    let current_t = Signal::derive(move || current().and_then(|f| f.timestep));
    let state = move || run_state(run);
    let idle = move || run.frames.with(Vec::is_empty) && !run.running.get();
    // What the canvases show now, for screen readers: the step and timestep, or that they wait.
    let describe = move |what: &str| match current() {
        None => format!("{what}: empty until a run starts"),
        Some(f) if f.index == 0 => format!("{what}: the starting noise x_T"),
        Some(f) => match f.timestep {
            Some(t) => format!("{what} at step {} of {}, t = {t:.0}", f.index, f.total),
            None => format!("{what} at step {} of {}", f.index, f.total),
        },
    };
    let total_steps = move || run.frames.with(|v| v.last().map(|f| f.total)).unwrap_or(0);
    let done_steps = move || run.frames.with(|v| v.last().map(|f| f.index)).unwrap_or(0);
    let model_ms = move || run.frames.with(|v| v.iter().map(|f| f.ms).sum::<f64>());
    // The run's settings in every exported file name.
    let stem = move |total: usize| {
        format!(
            "stepwise-{}-{}-{}steps-seed{}",
            models
                .entry
                .get_untracked()
                .map(|e| e.name)
                .unwrap_or_default(),
            s.sampler.get_untracked().name(),
            total,
            s.seed.get_untracked(),
        )
    };
    let export = move |what: &'static str| {
        let r = run.frames.with_untracked(|v| {
            let stem = stem(v.last().map(|f| f.total).unwrap_or(0));
            match what {
                "strip" => super::export::download_strip(v, &stem),
                _ => super::export::download_gif(v, &stem),
            }
        });
        if let Err(e) = r {
            run.error.set(Some(format!("export failed: {e}")));
        }
    };
    let download = move |_| {
        let Some(f) = current() else { return };
        let name = format!("{}-step{}.png", stem(f.total), f.index);
        let img = f.picture();
        if let Err(e) = download_png(&img.rgba, img.width, img.height, &name) {
            run.error.set(Some(format!("download failed: {e}")));
        }
    };
    let play = move |_| {
        if run.playing.get_untracked() {
            run.playing.set(false);
            return;
        }
        let n = run.frames.with_untracked(Vec::len);
        if n == 0 {
            return;
        }
        if run.view.get_untracked() + 1 >= n {
            run.view.set(0);
        }
        run.playing.set(true);
        run.play_gen.update(|g| *g += 1);
        let gen = run.play_gen.get_untracked();
        spawn_local(async move {
            loop {
                let fps = run.fps.get_untracked().max(1);
                engine::yield_to_browser(1000 / fps as i32).await;
                if !run.playing.get_untracked() || run.play_gen.get_untracked() != gen {
                    break;
                }
                let n = run.frames.with_untracked(Vec::len);
                let v = run.view.get_untracked() + 1;
                if v >= n {
                    run.playing.set(false);
                    break;
                }
                run.view.set(v);
            }
        });
    };
    view! {
        <section class="viewer" id="viewer" aria-label="Denoising">
            {move || models.info.get().and_then(Result::err).map(|e| {
                // Said once there are others to pick (the list may arrive after the error).
                let others = move || models.entries.with(|l| l.len() > 1)
                    .then_some(" The other models still work: pick one in the Model list.");
                view! {
                    <div class="error panel" role="alert" id="model-error">
                        <super::problem::Message text=e tail=Signal::derive(move || others().unwrap_or_default().to_string()) />
                    </div>
                }
            })}
            {move || run.error.get().map(|e| view! { <div class="error panel" role="alert" id="run-error">{e}</div> })}
            <div class="frames">
                <figure class:latent=is_latent>
                    <div class="canvas-box">
                        <canvas id="xt" node_ref=xt_ref width="16" height="16" role="img"
                            aria-label=move || describe(if is_latent() { "x_t, the latent channels," } else { "x_t, the sample," })></canvas>
                        <span class="placeholder" aria-hidden="true" hidden=move || !idle()>"x_T, pure noise, appears here"</span>
                    </div>
                    <figcaption>{move || if is_latent() {
                        "x_t: the latent channels now (sample 1)"
                    } else {
                        "x_t: the sample now"
                    }}<Tip id="tip-xt" term="x_t" text=TIP_XT /></figcaption>
                </figure>
                <figure>
                    <div class="canvas-box">
                        <canvas id="x0" node_ref=x0_ref width="16" height="16" role="img"
                            aria-label=move || describe("x̂0, the model's guess of the final image,")></canvas>
                        <span class="placeholder" aria-hidden="true" hidden=move || !idle()>"the model's guess of the image appears here"</span>
                    </div>
                    <figcaption>{move || if is_latent() {
                        "x̂₀ decoded by the VAE: the model's guess of the final image"
                    } else {
                        "x̂₀: the model's guess of the final image"
                    }}<Tip id="tip-x0" term="x̂₀" text=TIP_X0 /></figcaption>
                </figure>
            </div>
            {move || is_latent().then(|| view! {
                <p class="muted" id="decode-note">{move || {
                    let f = current();
                    let every = f.as_ref().map(|f| f.decode_every).unwrap_or(1);
                    let dms = run.frames.with(|v| v.iter().rev().find_map(|f| f.decode_ms));
                    let sms = f.as_ref().filter(|f| f.index > 0).map(|f| f.ms);
                    match (dms, sms) {
                        (Some(d), Some(s)) if every > 1 => format!("x̂₀ is decoded every {every} steps: a decode takes {d:.1} ms, a step {s:.1} ms."),
                        (Some(d), Some(s)) => format!("x̂₀ is decoded at every step (decode {d:.1} ms, step {s:.1} ms)."),
                        _ => "x̂₀ is decoded at every step, or every k steps when decoding costs more than a step.".to_string(),
                    }
                }}</p>
                <super::latent_speed::LatentSpeed />
            })}
            <div class="stats panel" id="run-status" data-state=state
                data-hash=move || run.summary.get().map(|x| x.hash).unwrap_or_default()
                data-frames=move || run.frames.with(Vec::len).to_string()
                aria-live="off">
                <p class="muted invite" id="run-invite" hidden=move || !idle()>
                    {move || match edit.mode.get() {
                        super::edit::Mode::Generate => "Press Generate to watch noise become an image.".to_string(),
                        m => format!("Press {} to run it on the picture.", m.verb()),
                    }}
                </p>
                <progress id="progress" max=move || total_steps().max(1) value=done_steps aria-label="Progress" hidden=idle></progress>
                <dl hidden=idle>
                    <div><dt>"step"</dt><dd id="step">{move || current().map(|f| if f.index == 0 { "x_T".to_string() } else { format!("{} / {}", f.index, f.total) }).unwrap_or_else(|| "–".into())}</dd></div>
                    <div><dt>"timestep t"<Tip id="tip-timestep" term="the timestep t" text=TIP_TIMESTEP /></dt><dd id="timestep">{move || current_t.get().map(|t| format!("{t:.0}")).unwrap_or_else(|| "–".into())}</dd></div>
                    <div><dt>"ms / step"</dt><dd>{move || current().filter(|f| f.index > 0).map(|f| format!("{:.1}", f.ms)).unwrap_or_else(|| "–".into())}</dd></div>
                    <div><dt>"steps / s"</dt><dd>{move || { let ms = model_ms(); if ms > 0.0 { format!("{:.1}", done_steps() as f64 / ms * 1000.0) } else { "–".into() } }}</dd></div>
                    <div><dt>"total"</dt><dd id="total-time">{move || format!("{:.2} s", run.elapsed_ms.get() / 1000.0)}</dd></div>
                    <div><dt>"state"</dt><dd>{state}</dd></div>
                </dl>
            </div>
            <div class="history panel" role="group" aria-label="History">
                <button type="button" class="secondary" aria-label="Previous frame" on:click=move |_| run.step_view(-1)>"◀"</button>
                <button type="button" class="secondary" id="play" on:click=play disabled=move || run.running.get()
                    aria-label="Play the history">{move || if run.playing.get() { "❚❚" } else { "▶" }}</button>
                <button type="button" class="secondary" aria-label="Next frame" on:click=move |_| run.step_view(1)>"▶|"</button>
                <input id="scrub" type="range" min="0" aria-label="Scrub through the history"
                    max=move || run.frames.with(Vec::len).saturating_sub(1).to_string()
                    prop:value=move || run.view.get().to_string()
                    on:input=move |e| if let Some(v) = range_value(&e) { run.playing.set(false); run.view.set(v) } />
                <label for="speed" class="sr">"Replay speed"</label>
                <select id="speed" on:change=move |e| { if let Some(v) = range_value(&e) { run.fps.set(v) } }>
                    <option value="5">"5 fps"</option>
                    <option value="15">"15 fps"</option>
                    <option value="30" selected>"30 fps"</option>
                    <option value="60">"60 fps"</option>
                </select>
                <button type="button" id="download" class="secondary" on:click=download
                    disabled=move || run.frames.with(Vec::is_empty)>"Download PNG"</button>
                <button type="button" id="download-strip" class="secondary" on:click=move |_| export("strip")
                    disabled=move || run.frames.with(Vec::is_empty) || run.running.get()
                    title="10 evenly spaced steps, x_t above x̂₀">"Step strip"</button>
                <button type="button" id="download-gif" class="secondary" on:click=move |_| export("gif")
                    disabled=move || run.frames.with(Vec::is_empty) || run.running.get()
                    title="The whole run as a looping GIF, x_t beside x̂₀">"GIF"</button>
            </div>
            {move || (run.stride.get() > 1).then(|| view! {
                <p class="muted" id="history-note">{move || format!(
                    "Long run: to stay under {} the history keeps every {}th step (x_T and the latest step always); replay and exports use those frames.",
                    if run.budget >= 1_000_000 { format!("{:.0} MB", run.budget as f64 / 1e6) } else { format!("{:.0} kB", run.budget as f64 / 1e3) },
                    run.stride.get()
                )}</p>
            })}
            <div class="panel plot">
                <h2>"Noise schedule"</h2>
                <SchedulePlot data=schedule current=current_t />
            </div>
        </section>
    }
}
