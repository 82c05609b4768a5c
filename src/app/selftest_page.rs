//! `?selftest`: runs the kernel self-test and the golden UNet fixtures (`?selftest&fixtures=URL`)
//! on this browser's WebGPU and prints the results as JSON in `#selftest-result`, for the
//! end-to-end tests and for anyone who wants to check their GPU.

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

async fn run() -> Result<serde_json::Value, String> {
    let g = GpuBackend::new().await.map_err(|e| e.to_string())?;
    let seed = param("seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| js_sys::Date::now() as u64);
    let mut checks = run_all(&g, seed).await.map_err(|e| e.to_string())?;
    if let Some(list) = param("fixtures") {
        for base in list.split(',').filter(|s| !s.is_empty()) {
            checks.push(golden(&g, base).await?);
        }
    }
    let passed = checks.iter().filter(|c| c.passed()).count();
    Ok(serde_json::json!({
        "adapter": g.ctx.describe(),
        "seed": seed,
        "passed": passed,
        "failed": checks.len() - passed,
        "checks": checks,
    }))
}

#[component]
pub fn SelfTestPage() -> impl IntoView {
    let (result, set_result) = signal(None::<String>);
    leptos::task::spawn_local(async move {
        let text = match run().await {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        };
        set_result.set(Some(text));
    });
    view! {
        <header><h1>"stepwise self-test"</h1></header>
        <main>
            <p>"Every GPU kernel against the CPU reference on fresh random inputs, then the golden UNet fixtures."</p>
            {move || match result.get() {
                None => view! { <p id="selftest-status">"running…"</p> }.into_any(),
                Some(r) => view! { <pre id="selftest-result">{r}</pre> }.into_any(),
            }}
        </main>
    }
}
