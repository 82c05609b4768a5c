//! The noising (forward) process: q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I) (Ho et al. 2020, eq. 4) applied
//! to an image (the one on screen in the generate view, a shipped dataset example, or the user's
//! own, decoded and resized in the browser) with one fixed noise draw, as t is dragged: the
//! process the model learned to reverse. Pure CPU arithmetic on a few thousand pixels.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::JsCast;

use super::canvas::{decode_image, draw_rgba};
use super::engine::{self, Image};
use super::fetch::fetch_bytes;
use super::state::{ModelState, RunState};
use crate::noise;

/// One entry of `examples/index.json` (written by `training/make_examples.py`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct Example {
    file: String,
    title: String,
}

#[derive(Deserialize)]
struct Examples {
    examples: Vec<Example>,
}

/// The image x_0 comes from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// The frame selected in the generate view's history.
    Screen,
    /// A shipped example (index into the manifest).
    Example(usize),
    /// The user's own image, by its `blob:` URL.
    Upload(String),
}

/// The Philox stream of the fixed forward-process noise (far from the sampler's streams).
const FORWARD_STREAM: u64 = 0xF0F0;

/// x_t of the chosen image at a chosen t.
#[component]
pub fn NoisingView() -> impl IntoView {
    let run = expect_context::<RunState>();
    let models = expect_context::<ModelState>();
    let t = RwSignal::new(500usize);
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let source = RwSignal::new(Source::Screen);
    let examples = RwSignal::new(Vec::<Example>::new());
    spawn_local(async move {
        let list = match fetch_bytes("examples/index.json").await {
            Ok(Some(b)) => serde_json::from_slice::<Examples>(&b).map(|e| e.examples),
            _ => Ok(Vec::new()),
        };
        match list {
            Ok(l) => examples.set(l),
            Err(e) => log::warn!("examples/index.json: {e}"),
        }
    });
    // The model's image size (C, H, W): what a chosen image is resized to.
    let image_size = Memo::new(move |_| match models.info.get().and_then(Result::ok) {
        Some(m) => match m.latent {
            Some(l) => (l.image_channels, l.image_height, l.image_width),
            None => (m.channels, m.height, m.width),
        },
        None => (3, 32, 32),
    });
    // The decoded example or upload (None for the screen, or while decoding).
    let picked = RwSignal::new(None::<Result<Image, String>>);
    Effect::new(move |_| {
        let src = source.get();
        let (c, h, w) = image_size.get();
        let url = match &src {
            Source::Screen => return picked.set(None),
            Source::Example(i) => match examples.with(|e| e.get(*i).cloned()) {
                Some(e) => format!("examples/{}", e.file),
                None => return,
            },
            Source::Upload(u) => u.clone(),
        };
        spawn_local(async move {
            // Fashion-MNIST is white on black, the emoji were composited on white.
            let bg = if c == 1 { "black" } else { "white" };
            let r = decode_image(&url, w, h, bg, c == 1).await;
            if source.get_untracked() == src && image_size.get_untracked() == (c, h, w) {
                picked.set(Some(r.map(|rgba| Image {
                    width: w,
                    height: h,
                    rgba: Arc::new(rgba),
                })));
            }
        });
    });
    let on_upload = move |e: leptos::ev::Event| {
        let Some(input) = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        else {
            return;
        };
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        match web_sys::Url::create_object_url_with_blob(&file) {
            Ok(url) => {
                if let Source::Upload(old) = source.get_untracked() {
                    let _ = web_sys::Url::revoke_object_url(&old);
                }
                source.set(Source::Upload(url));
            }
            Err(e) => picked.set(Some(Err(format!("{e:?}")))),
        }
    };
    let abar = Memo::new(move |_| {
        let m = models.info.get()?.ok()?;
        engine::schedule(&m.scheduler, m.default_sampler, 1, 0.0, &Default::default())
            .ok()
            .map(|d| d.alphas_cumprod)
    });
    let t_max = move || {
        abar.with(|a| a.as_ref().map(|a| a.len().saturating_sub(1)))
            .unwrap_or(999)
    };
    Effect::new(move |_| {
        let img = match source.get() {
            Source::Screen => run
                .frames
                .with(|v| v.get(run.view.get()).map(|f| f.picture().clone())),
            _ => picked.get().and_then(Result::ok),
        };
        let (Some(img), Some(c)) = (img, canvas.get()) else {
            return;
        };
        let Some(ab) = abar.with(|a| a.as_ref().and_then(|a| a.get(t.get()).copied())) else {
            return;
        };
        let (sa, sn) = (ab.sqrt(), (1.0 - ab).sqrt());
        let eps = noise::randn(0, FORWARD_STREAM, img.rgba.len());
        // A one-channel model's image is grey (r = g = b): give it grey noise, one draw per pixel.
        let grey = img
            .rgba
            .chunks_exact(4)
            .all(|p| p[0] == p[1] && p[1] == p[2]);
        let px: Vec<u8> = (0..img.rgba.len())
            .map(|i| {
                if i % 4 == 3 {
                    return 255;
                }
                let e = if grey { eps[i / 4 * 4] } else { eps[i] };
                let x0 = img.rgba[i] as f32 / 127.5 - 1.0;
                crate::image::to_u8(sa * x0 + sn * e)
            })
            .collect();
        let _ = draw_rgba(&c, &px, img.width, img.height);
    });
    view! {
        <section class="panel forward" aria-label="Noising an image">
            <h2>"Noising: the forward process on an image"</h2>
            <div class="forward-source">
                <label for="forward-source">"Image"</label>
                <select id="forward-source" on:change=move |e| {
                    let v = event_target_value(&e);
                    source.set(match v.strip_prefix("ex:").and_then(|i| i.parse().ok()) {
                        Some(i) => Source::Example(i),
                        None => Source::Screen,
                    });
                }>
                    <option value="screen" prop:selected=move || source.get() == Source::Screen>"The image on screen (generate view)"</option>
                    {move || examples.get().into_iter().enumerate().map(|(i, e)| view! {
                        <option value=format!("ex:{i}") prop:selected=move || source.get() == Source::Example(i)>{e.title}</option>
                    }).collect_view()}
                    {move || matches!(source.get(), Source::Upload(_)).then(|| view! {
                        <option value="upload" selected>"Your image"</option>
                    })}
                </select>
                // The input first: its keyboard focus shows as the ring of the label after it.
                <input type="file" id="forward-upload" class="sr" accept="image/*" on:change=on_upload />
                <label for="forward-upload" class="file-button">"Upload your own…"</label>
            </div>
            {move || picked.get().and_then(Result::err).map(|e| view! { <p class="error" role="alert" id="forward-error">{e}</p> })}
            <div class="forward-row">
                <canvas id="forward" node_ref=canvas width="16" height="16" role="img"
                    aria-label=move || format!("The image after noising to t = {}", t.get())></canvas>
                <div class="forward-controls">
                    <label for="forward-t">"t = " <output>{move || t.get()}</output>
                        {move || abar.with(|a| a.as_ref().and_then(|a| a.get(t.get()).copied())).map(|ab| format!(" (ᾱ_t = {ab:.4})"))}
                    </label>
                    <input id="forward-t" type="range" min="0" max=t_max
                        prop:value=move || t.get().to_string()
                        on:input=move |e| { if let Ok(v) = event_target_value(&e).parse() { t.set(v) } } />
                    {move || (source.get() == Source::Screen && run.frames.with(Vec::is_empty)).then(|| view! {
                        <p class="muted" id="forward-empty">"No image on screen yet: generate one, or pick an example above."</p>
                    })}
                    <p class="muted">"x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε with one fixed ε. Pick an example, upload an image (it stays in this browser, resized to the model's size), or generate one and pick a frame in the history."</p>
                </div>
            </div>
        </section>
    }
}
