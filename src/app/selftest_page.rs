//! `?selftest`: runs the kernel self-test and the golden UNet fixtures (`?selftest&fixtures=URL`)
//! on this browser's WebGPU and shows the verdict, then a table of the checks; the results as
//! JSON stay in `#selftest-result` (under "Details"), for the end-to-end tests and bug reports.

use std::collections::HashMap;

use leptos::prelude::*;

use super::fetch::fetch_bytes;
use crate::backend::{Backend, Tensor};
use crate::gpu::GpuBackend;
use crate::io::{read_tensors, rel_l2};
use crate::model::loader::{load_unet_files, MemorySource};
use crate::model::UNet2DModel;
use crate::selftest::{run_all, Check};

const FILES: [&str; 6] = [
    "model_index.json",
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "input.safetensors",
];

fn param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// Golden parity of one fixture folder served at `base`.
async fn golden(g: &GpuBackend, base: &str) -> Result<Check, String> {
    let mut files = HashMap::new();
    for f in FILES.iter().chain(&["expected.safetensors"]) {
        if let Some(b) = fetch_bytes(&format!("{base}/{f}")).await? {
            files.insert(f.to_string(), b);
        }
    }
    let input = read_tensors(
        files
            .get("input.safetensors")
            .ok_or("no input.safetensors")?,
        "input",
    )
    .map_err(|e| e.to_string())?;
    let expected = read_tensors(
        files
            .get("expected.safetensors")
            .ok_or("no expected.safetensors")?,
        "expected",
    )
    .map_err(|e| e.to_string())?;
    let src = MemorySource {
        name: base.into(),
        files,
    };
    let unet_files = load_unet_files(&src).map_err(|e| e.to_string())?;
    let unet =
        UNet2DModel::load(g, unet_files.config, &unet_files.weights).map_err(|e| e.to_string())?;
    let sample = &input["sample"];
    let labels = input
        .get("class_labels")
        .map(|l| l.to_i64("class_labels"))
        .transpose()
        .map_err(|e| e.to_string())?;
    let x = g
        .upload(&sample.shape, &sample.to_f32())
        .map_err(|e| e.to_string())?;
    let y = unet
        .forward(g, &x, &input["timestep"].to_f32(), labels.as_deref())
        .map_err(|e| e.to_string())?;
    let got = g.download(&y).await.map_err(|e| e.to_string())?;
    let want = &expected["sample"];
    let err = if y.shape() == &want.shape[..] {
        rel_l2(&got, &want.to_f32())
    } else {
        f64::INFINITY
    };
    Ok(Check {
        name: format!("golden {base}"),
        rel_l2: err,
        tol: 1e-3,
    })
}

/// What the self-test found: the adapter, the seed that replays it, every check.
struct Report {
    adapter: String,
    seed: u64,
    checks: Vec<Check>,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        let passed = self.checks.iter().filter(|c| c.passed()).count();
        serde_json::json!({
            "adapter": self.adapter,
            "seed": self.seed,
            "passed": passed,
            "failed": self.checks.len() - passed,
            "checks": self.checks,
        })
    }

    /// "All 40 checks pass on <adapter>." or "2 of 40 checks fail on <adapter>: a, b."
    fn verdict(&self) -> String {
        let n = self.checks.len();
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name.as_str())
            .collect();
        match failed.len() {
            0 => format!("All {n} checks pass on {}.", self.adapter),
            k => format!(
                "{k} of {n} checks fail on {}: {}. The page may draw wrong images on this GPU; the CPU backend (?backend=cpu) is exact.",
                self.adapter,
                failed.join(", ")
            ),
        }
    }
}

/// Why the self-test did not finish.
enum Failure {
    /// No GPU device opened (no WebGPU, no adapter, device refused).
    NoGpu(String),
    /// A check or fixture failed to run.
    Broke(String),
}

async fn run() -> Result<Report, Failure> {
    let g = GpuBackend::new()
        .await
        .map_err(|e| Failure::NoGpu(e.to_string()))?;
    run_on(&g).await.map_err(Failure::Broke)
}

async fn run_on(g: &GpuBackend) -> Result<Report, String> {
    let seed = param("seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| js_sys::Date::now() as u64);
    let mut checks = run_all(g, seed).await.map_err(|e| e.to_string())?;
    if let Some(list) = param("fixtures") {
        for base in list.split(',').filter(|s| !s.is_empty()) {
            checks.push(golden(g, base).await?);
        }
    }
    let wgpu = g.ctx.describe();
    // As the main page's header names it: the browser's words, and wgpu's where they add any.
    let adapter = match super::browser_adapter_info().await {
        Some(b) => match wgpu.strip_prefix("unnamed adapter ") {
            Some(api) => format!("{b} {api}"),
            None => format!("{b} · {wgpu}"),
        },
        None => wgpu,
    };
    Ok(Report {
        adapter,
        seed,
        checks,
    })
}

/// The relative L2 error as the table shows it.
fn error_text(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.1e}")
    } else {
        "shape differs".into()
    }
}

#[component]
pub fn SelfTestPage() -> impl IntoView {
    let result = RwSignal::new(None::<Result<Report, Failure>>);
    leptos::task::spawn_local(async move {
        result.set(Some(run().await));
    });
    let body = move || {
        result.with(|r| match r {
            None => view! { <p id="selftest-status" aria-live="polite">"Running the checks… (a minute or two on a software GPU)"</p> }
            .into_any(),
            Some(Err(failure)) => {
                let (sentence, e) = match failure {
                    Failure::NoGpu(e) if !super::has_webgpu() => ("This browser has no WebGPU, so there is no GPU to test. The main page runs on the CPU instead, and everything works there.", e),
                    Failure::NoGpu(e) => ("WebGPU did not start in this browser, so there is no GPU to test. The main page runs on the CPU instead, and everything works there.", e),
                    Failure::Broke(e) => ("The self-test stopped with an error before it finished: the details below say where. Please report it with them.", e),
                };
                let json = serde_json::json!({ "error": e }).to_string();
                view! {
                    <p id="selftest-verdict" class="verdict">{sentence}</p>
                    <details class="more">
                        <summary>"Details"</summary>
                        <pre id="selftest-result">{json}</pre>
                    </details>
                }
                .into_any()
            }
            Some(Ok(report)) => {
                let json = serde_json::to_string_pretty(&report.json()).unwrap_or_default();
                let rows = report
                    .checks
                    .iter()
                    .map(|c| {
                        let ok = c.passed();
                        view! {
                            <tr class:fail=!ok>
                                <td>{c.name.clone()}</td>
                                <td>{if ok { "pass" } else { "FAIL" }}</td>
                                <td>{error_text(c.rel_l2)}</td>
                                <td>{format!("{:.0e}", c.tol)}</td>
                            </tr>
                        }
                    })
                    .collect_view();
                view! {
                    <p id="selftest-verdict" class="verdict">{report.verdict()}</p>
                    <p class="muted">{format!("Seed {} (add &seed={} to the address to replay these inputs).", report.seed, report.seed)}</p>
                    <table id="selftest-table">
                        <thead><tr><th>"check"</th><th>"result"</th><th>"error (relative L2)"</th><th>"tolerance"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                    <details class="more">
                        <summary>"Details (JSON)"</summary>
                        <pre id="selftest-result">{json}</pre>
                    </details>
                }
                .into_any()
            }
        })
    };
    view! {
        <header><h1>"stepwise self-test"</h1></header>
        <main>
            <p>"Every GPU kernel against the CPU reference on fresh random inputs, then the golden UNet fixtures."</p>
            {body}
            <p><a href="./">"Back to stepwise"</a></p>
        </main>
    }
}
