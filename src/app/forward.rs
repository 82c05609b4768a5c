//! The forward process: q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I) (Ho et al. 2020, eq. 4) applied
//! to the image on screen in the generate view, with one fixed noise draw, as t is dragged: the
//! process the model learned to reverse. Pure CPU arithmetic on a few thousand pixels.

use leptos::prelude::*;

use super::canvas::draw_rgba;
use super::engine;
use super::generate::{ModelState, RunState};
use crate::noise;

/// The Philox stream of the fixed forward-process noise (far from the sampler's streams).
const FORWARD_STREAM: u64 = 0xF0F0;

/// x_t of the current frame's x_t image at a chosen t.
#[component]
pub fn ForwardView() -> impl IntoView {
    let run = expect_context::<RunState>();
    let models = expect_context::<ModelState>();
    let t = RwSignal::new(500usize);
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let abar = Memo::new(move |_| {
        let m = models.info.get()?.ok()?;
        engine::schedule(&m.scheduler, m.default_sampler, 1, 0.0)
            .ok()
            .map(|d| d.alphas_cumprod)
    });
    let t_max = move || {
        abar.with(|a| a.as_ref().map(|a| a.len().saturating_sub(1)))
            .unwrap_or(999)
    };
    Effect::new(move |_| {
        let frame = run.frames.with(|v| v.get(run.view.get()).cloned());
        let (Some(f), Some(c)) = (frame, canvas.get()) else {
            return;
        };
        let Some(ab) = abar.with(|a| a.as_ref().and_then(|a| a.get(t.get()).copied())) else {
            return;
        };
        let (sa, sn) = (ab.sqrt(), (1.0 - ab).sqrt());
        let img = f.picture();
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
                crate::pipeline::to_u8(sa * x0 + sn * e)
            })
            .collect();
        let _ = draw_rgba(&c, &px, img.width, img.height);
    });
    view! {
        <section class="panel forward" aria-label="Forward process">
            <h2>"Forward process: adding noise to the image on screen"</h2>
            <div class="forward-row">
                <canvas id="forward" node_ref=canvas width="16" height="16" aria-label="The image on screen after t steps of the forward process"></canvas>
                <div class="forward-controls">
                    <label for="forward-t">"t = " <output>{move || t.get()}</output>
                        {move || abar.with(|a| a.as_ref().and_then(|a| a.get(t.get()).copied())).map(|ab| format!(" (ᾱ_t = {ab:.4})"))}
                    </label>
                    <input id="forward-t" type="range" min="0" max=t_max
                        prop:value=move || t.get().to_string()
                        on:input=move |e| { if let Ok(v) = event_target_value(&e).parse() { t.set(v) } } />
                    <p class="muted">"x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε with one fixed ε. Generate an image first; this shows the frame selected in the history."</p>
                </div>
            </div>
        </section>
    }
}
