//! The schedule plot: ᾱ_t (linear, 0..1) and log₁₀ SNR(t) over the training timesteps as SVG,
//! with the timesteps the chosen sampler and step count visit marked, and the current step's.

use leptos::prelude::*;

use super::engine::ScheduleData;

const W: f64 = 400.0;
const H: f64 = 150.0;
const SNR_MIN: f64 = -5.0;
const SNR_MAX: f64 = 5.0;

fn polyline(values: &[f32], y: impl Fn(f64) -> f64) -> String {
    let n = values.len().max(2);
    // At most ~400 points: one per horizontal pixel is all the plot can show.
    let stride = (n / 400).max(1);
    values
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i + 1 == values.len())
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 / (n - 1) as f64 * W, y(*v as f64)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn y_abar(v: f64) -> f64 {
    H - v.clamp(0.0, 1.0) * H
}

fn y_snr(v: f64) -> f64 {
    let l = v.max(1e-12).log10().clamp(SNR_MIN, SNR_MAX);
    H - (l - SNR_MIN) / (SNR_MAX - SNR_MIN) * H
}

/// ᾱ_t and SNR over t with the visited timesteps marked.
#[component]
pub fn SchedulePlot(
    /// The schedule for the current model, sampler and step count (or why there is none).
    data: Signal<Option<Result<ScheduleData, String>>>,
    /// The timestep of the frame on screen, highlighted.
    current: Signal<Option<f32>>,
) -> impl IntoView {
    move || match data.get() {
        None => view! { <p class="muted">"Load a model to see its noise schedule."</p> }.into_any(),
        Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
        Some(Ok(d)) => {
            let t_max = d.alphas_cumprod.len().max(2) as f64 - 1.0;
            let x = move |t: f64| t / t_max * W;
            let ticks = d
                .visited
                .iter()
                .map(|&t| {
                    let xx = format!("{:.1}", x(t as f64));
                    view! { <line class="visit" x1=xx.clone() x2=xx y1=H - 8.0 y2=H /> }
                })
                .collect_view();
            let n = d.visited.len();
            let marker = move || {
                current.get().map(|t| {
                    let xx = format!("{:.1}", x(t as f64));
                    view! { <line class="now" x1=xx.clone() x2=xx y1="0" y2=H /> }
                })
            };
            view! {
                <svg id="schedule-plot" viewBox=format!("-4 -4 {} {}", W + 8.0, H + 24.0) role="img"
                     aria-label=format!("Noise schedule: alpha-bar and signal-to-noise ratio over {} training timesteps, {n} visited", t_max + 1.0)>
                    <rect class="frame" x="0" y="0" width=W height=H />
                    <polyline class="abar" points=polyline(&d.alphas_cumprod, y_abar) />
                    <polyline class="snr" points=polyline(&d.snr, y_snr) />
                    {ticks}
                    {marker}
                    <text x="0" y=H + 16.0>"t = 0"</text>
                    <text x=W y=H + 16.0 text-anchor="end">{format!("t = {}", t_max)}</text>
                </svg>
                <p class="legend">
                    <span class="key abar">"ᾱ_t (0 to 1)"</span>
                    <span class="key snr">"log₁₀ SNR (−5 to 5)"</span>
                    <span class="key visit">{format!("{n} visited timesteps")}</span>
                </p>
            }
            .into_any()
        }
    }
}
