//! Why latent diffusion is faster, measured on the visitor's own device: one UNet step of the
//! latent model against one step of a pixel model at the same output size, and the one decode a
//! latent image needs.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::engine::{self, SpeedReport};
use super::settings::Inputs;
use super::state::ModelState;

#[component]
pub fn LatentSpeed() -> impl IntoView {
    let s = expect_context::<Inputs>();
    let models = expect_context::<ModelState>();
    let report = RwSignal::new(None::<Result<SpeedReport, String>>);
    let busy = RwSignal::new(false);
    let peer = move || {
        let name = models.entry.get()?.pixel_peer?;
        models.entries.get().into_iter().find(|e| e.name == name)
    };
    let measure = move |_| {
        let (Some(Ok(info)), Some(peer)) = (models.info.get_untracked(), peer()) else {
            report.set(Some(Err(
                "no pixel model to compare with (pixel_peer in models/index.json)".into(),
            )));
            return;
        };
        busy.set(true);
        report.set(None);
        spawn_local(async move {
            let r = match engine::load_model(&peer.path, true).await {
                Ok(p) => engine::measure_speed(&info.url, &info, &p.url).await,
                Err(e) => Err(format!("loading {}: {e}", peer.title)),
            };
            report.set(Some(r));
            busy.set(false);
        });
    };
    let steps = move || s.steps.get();
    view! {
        <div class="panel speed" id="latent-speed">
            <h2>"Latent vs pixel diffusion on this device"</h2>
            <button type="button" class="secondary" id="measure-speed" on:click=measure
                disabled=move || busy.get()>
                {move || if busy.get() { "Measuring…" } else { "Measure" }}
            </button>
            {move || match report.get() {
                None => None,
                Some(Err(e)) => Some(view! { <p class="error" role="alert">{e}</p> }.into_any()),
                Some(Ok(r)) => {
                    let n = steps() as f64;
                    let [lc, lh, lw] = r.latent_shape;
                    let [ic, ih, iw] = r.image_shape;
                    let ratio = (ih * iw) as f64 / (lh * lw) as f64;
                    let pixel_image = n * r.pixel_step_ms;
                    let latent_image = n * r.latent_step_ms + r.decode_ms;
                    Some(view! {
                        <table id="speed-table">
                            <thead><tr><th>""</th><th>"ms / step"</th><th>{format!("ms / image ({n:.0} steps)")}</th></tr></thead>
                            <tbody>
                                <tr><td>{format!("pixel UNet on {ic}×{ih}×{iw}")}</td>
                                    <td>{format!("{:.1}", r.pixel_step_ms)}</td><td>{format!("{pixel_image:.0}")}</td></tr>
                                <tr><td>{format!("latent UNet on {lc}×{lh}×{lw} + one decode ({:.1} ms)", r.decode_ms)}</td>
                                    <td>{format!("{:.1}", r.latent_step_ms)}</td><td>{format!("{latent_image:.0}")}</td></tr>
                            </tbody>
                        </table>
                        <p id="speed-why">{format!(
                            "Latent diffusion is {:.1}× faster per image here: its UNet works on {lc}×{lh}×{lw} latents, {ratio:.0}× fewer positions than {ic}×{ih}×{iw} pixels, and the decoder runs once per image, not once per step.",
                            pixel_image / latent_image.max(1e-9)
                        )}</p>
                    }.into_any())
                }
            }}
            <p class="muted">"The pixel model is the shipped pixel UNet run at this model's output size (timing only); medians of 5 runs after a warm-up."</p>
        </div>
    }
}
