//! The Leptos app (wasm only). Components hold signals and send commands; GPU objects live in
//! [`engine`], never in components.

mod canvas;
mod compare;
mod edit;
mod engine;
mod export;
mod fetch;
mod generate;
mod lab;
mod latent_speed;
mod noising;
mod open_model;
mod plot;
mod problem;
mod selftest_page;
mod settings;
mod state;
mod toy2d;

use leptos::prelude::*;

/// Mounts the app on `<body>`: the self-test page with `?selftest`, the main view otherwise.
/// The page's "Loading the app…" placeholder (`#boot` in index.html) goes first.
pub fn mount() {
    if let Some(boot) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("boot"))
    {
        boot.remove();
    }
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    if search.contains("selftest") {
        leptos::mount::mount_to_body(selftest_page::SelfTestPage);
    } else {
        leptos::mount::mount_to_body(App);
    }
}

/// Whether the browser exposes WebGPU at all (`navigator.gpu`).
pub fn has_webgpu() -> bool {
    let Some(w) = web_sys::window() else {
        return false;
    };
    js_sys::Reflect::get(&w.navigator(), &"gpu".into())
        .map(|v| !v.is_undefined() && !v.is_null())
        .unwrap_or(false)
}

/// What the browser says about its WebGPU adapter (`GPUAdapterInfo`'s vendor, architecture,
/// device and description, whichever are non-empty): wgpu passes on only the description, which
/// SwiftShader leaves empty. Asks for a second adapter handle, which costs next to nothing.
pub async fn browser_adapter_info() -> Option<String> {
    use js_sys::Reflect;
    use wasm_bindgen::JsCast;
    let gpu = Reflect::get(&web_sys::window()?.navigator(), &"gpu".into()).ok()?;
    let request: js_sys::Function = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return None;
    }
    let info = Reflect::get(&adapter, &"info".into()).ok()?;
    let parts: Vec<String> = ["vendor", "architecture", "device", "description"]
        .into_iter()
        .filter_map(|k| Reflect::get(&info, &k.into()).ok()?.as_string())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// `window.stepwiseLoseDevice()` destroys the GPU device, as a driver reset would, and
/// `window.stepwiseStats()` counts GPU buffers and the CPU backend's split forwards: the
/// reliability tests' hooks (only with `?debug=gpu`).
fn expose_lose_device() {
    use wasm_bindgen::prelude::*;
    let f = Closure::<dyn Fn() -> bool>::new(engine::lose_device);
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"stepwiseLoseDevice".into(), f.as_ref());
    }
    f.forget();
    let stats = Closure::<dyn Fn() -> JsValue>::new(|| {
        let o = js_sys::Object::new();
        let (split, by_workers) = crate::model::workers::splits();
        let _ = js_sys::Reflect::set(
            &o,
            &"cpuThreads".into(),
            &(crate::model::workers::threads() as f64).into(),
        );
        let _ = js_sys::Reflect::set(&o, &"cpuSplitForwards".into(), &(split as f64).into());
        let _ = js_sys::Reflect::set(&o, &"cpuSimd".into(), &crate::cpu::WASM_SIMD.into());
        let _ = js_sys::Reflect::set(&o, &"cpuWorkerShares".into(), &(by_workers as f64).into());
        if let Some(g) = engine::gpu_stats() {
            let set = |k: &str, v: f64| js_sys::Reflect::set(&o, &k.into(), &v.into());
            let _ = set("buffersCreated", g.created as f64);
            let _ = set("buffersPooled", g.pooled as f64);
            let _ = set("bytesHeld", g.bytes_held as f64);
            let by_size = js_sys::Object::new();
            for (size, n) in g.pooled_by_size {
                let _ =
                    js_sys::Reflect::set(&by_size, &size.to_string().into(), &(n as f64).into());
            }
            let _ = js_sys::Reflect::set(&o, &"pooledBySize".into(), &by_size);
        }
        o.into()
    });
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"stepwiseStats".into(), stats.as_ref());
    }
    stats.forget();
}

/// `window.stepwiseBench(modelUrl, sample, shape, timesteps, labels, runs)`: the in-browser
/// benchmark's hook (`bench/browser.mjs`; only with `?debug=bench`). Times `runs` UNet forwards
/// after one warm-up on the page's backend ([`engine::bench_forward`]) and resolves to
/// `{ backend, output: Float32Array (the first forward's), ms: number[] }`.
fn expose_bench() {
    use js_sys::{Array, Float32Array, Object, Reflect};
    use wasm_bindgen::prelude::*;
    type BenchFn =
        dyn Fn(String, Float32Array, JsValue, Float32Array, JsValue, u32) -> js_sys::Promise;
    let f = Closure::<BenchFn>::new(
        |url: String,
         sample: Float32Array,
         shape: JsValue,
         timesteps: Float32Array,
         labels: JsValue,
         runs: u32| {
            // Plain or typed arrays, BigInts for labels; anything else is an error, not a 0.
            let numbers = |v: &JsValue, what: &str| -> Result<Vec<f64>, String> {
                Array::from(v)
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .or_else(|| {
                                let b = x.dyn_into::<js_sys::BigInt>().ok()?;
                                i64::try_from(b).ok().map(|v| v as f64)
                            })
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| format!("stepwiseBench: {what} holds a non-number"))
                    })
                    .collect()
            };
            let parsed = numbers(&shape, "shape").and_then(|shape| {
                let labels = if labels.is_null() || labels.is_undefined() {
                    None
                } else {
                    Some(numbers(&labels, "labels")?)
                };
                Ok((shape, labels))
            });
            let (shape, labels) = match parsed {
                Ok((s, l)) => (
                    s.into_iter().map(|x| x as usize).collect::<Vec<_>>(),
                    l.map(|l| l.into_iter().map(|x| x as i64).collect::<Vec<_>>()),
                ),
                Err(e) => return js_sys::Promise::reject(&js_sys::Error::new(&e)),
            };
            let (sample, timesteps) = (sample.to_vec(), timesteps.to_vec());
            wasm_bindgen_futures::future_to_promise(async move {
                let r =
                    engine::bench_forward(&url, sample, shape, timesteps, labels, runs as usize)
                        .await
                        .map_err(|e| JsValue::from(js_sys::Error::new(&e)))?;
                let o = Object::new();
                let ms: Array = r.ms.iter().map(|&t| JsValue::from(t)).collect();
                let record: Array = r.record_ms.iter().map(|&t| JsValue::from(t)).collect();
                Reflect::set(&o, &"backend".into(), &r.backend.into())?;
                Reflect::set(&o, &"threads".into(), &(r.threads as f64).into())?;
                Reflect::set(&o, &"output".into(), &Float32Array::from(&r.output[..]))?;
                Reflect::set(&o, &"ms".into(), &ms)?;
                Reflect::set(&o, &"recordMs".into(), &record)?;
                Ok(o.into())
            })
        },
    );
    if let Some(w) = web_sys::window() {
        let _ = Reflect::set(&w, &"stepwiseBench".into(), f.as_ref());
    }
    f.forget();
}

#[component]
fn App() -> impl IntoView {
    let backend = RwSignal::new(None::<engine::BackendInfo>);
    let choice = engine::Choice::from_url();
    // `?threads=N`: the CPU backend's threads, the page's included (default: the cores, at most
    // four); 1 starts no worker.
    if let Some(n) = settings::param("threads").and_then(|v| v.parse::<usize>().ok()) {
        crate::model::workers::init(n);
    }
    match settings::param("debug").as_deref() {
        Some("gpu") => expose_lose_device(),
        Some("bench") => expose_bench(),
        _ => {}
    }
    leptos::task::spawn_local(async move {
        backend.set(Some(engine::init_backend(choice).await));
    });
    view! {
        <header>
            <h1>"stepwise"</h1>
            <span class="tagline">"watch a diffusion model turn noise into an image, step by step"</span>
            <span class="adapter" id="adapter"
                title=move || backend.get().map(|b| b.description)>
                {move || backend.get().map(|b| b.summary).unwrap_or_else(|| "detecting GPU…".into())}
            </span>
        </header>
        <main>
            <CpuNote backend=backend />
            <generate::GenerateView backend=backend />
            <footer>
                <a href="?selftest">"Kernel self-test"</a>
                " checks this GPU against the CPU reference."
            </footer>
        </main>
    }
}

/// The note shown when the CPU computes although the user did not ask for it: one sentence on
/// why and what it means, the technical line behind "Details", and a button that hides it.
#[component]
fn CpuNote(
    /// The backend once chosen (None while detecting).
    backend: RwSignal<Option<engine::BackendInfo>>,
) -> impl IntoView {
    use engine::CpuReason;
    let dismissed = RwSignal::new(false);
    move || {
        let b = backend.get()?;
        let text = match b.cpu_reason? {
            CpuReason::Requested => return None,
            CpuReason::NoWebGpu => {
                "Your browser has no WebGPU, so stepwise runs on the CPU: slower, but everything works."
            }
            CpuReason::SoftwareGpu => {
                "Your browser's WebGPU has no GPU behind it, so stepwise runs on the CPU directly, which is faster there."
            }
            CpuReason::Failed => {
                "WebGPU did not start in your browser, so stepwise runs on the CPU: slower, but everything works."
            }
        };
        (!dismissed.get()).then(|| {
            view! {
                <div class="banner note" role="status" id="cpu-note">
                    <span>{text}</span>
                    <button type="button" class="close" aria-label="Dismiss this note"
                        on:click=move |_| dismissed.set(true)>"×"</button>
                    <problem::Details text=b.description />
                </div>
            }
        })
    }
}
