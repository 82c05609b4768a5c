//! The compute side of the app: one backend per page (WebGPU when it works, else the CPU), models
//! loaded once per URL, and the run loop that turns pipeline step events into drawable frames.
//! Components call these functions and receive plain data ([`ModelInfo`], [`Frame`]); the GPU
//! objects stay in this module's thread-local caches, never in a component or a signal.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;

use super::fetch::fetch_bytes;
use crate::cpu::CpuBackend;
use crate::gpu::GpuBackend;
use crate::model::loader::{load_unet_files, MemorySource};
use crate::model::UNet2DModel;
use crate::pipeline::{self, Conditioning, Control, NoiseSource, StepEvent};
use crate::sampler::{self, SamplerKind, SchedulerConfig};

enum Compute {
    Gpu(GpuBackend),
    Cpu(CpuBackend),
}

enum Net {
    Gpu(UNet2DModel<GpuBackend>),
    Cpu(UNet2DModel<CpuBackend>),
}

thread_local! {
    // wasm is single-threaded: the backend and the loaded models live here, built once.
    static COMPUTE: RefCell<Option<Rc<Compute>>> = const { RefCell::new(None) };
    static MODELS: RefCell<HashMap<String, Rc<Net>>> = RefCell::new(HashMap::new());
}

/// Which backend runs, for the header and the CPU banner.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    pub gpu: bool,
    /// "GPU: adapter (api, type)" or "CPU backend (why)".
    pub description: String,
}

/// Picks the backend once per page: WebGPU when the browser has it and an adapter opens,
/// otherwise the CPU reference backend. `force_cpu` is the `?backend=cpu` URL switch.
pub async fn init_backend(force_cpu: bool) -> BackendInfo {
    let (compute, info) = if force_cpu {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("requested with ?backend=cpu".into()),
        )
    } else if !super::has_webgpu() {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("this browser has no WebGPU".into()),
        )
    } else {
        match GpuBackend::new().await {
            Ok(g) => {
                let description = format!("GPU: {}", g.ctx.describe());
                (
                    Compute::Gpu(g),
                    BackendInfo {
                        gpu: true,
                        description,
                    },
                )
            }
            Err(e) => (
                Compute::Cpu(CpuBackend),
                cpu_info(format!("WebGPU failed: {e}")),
            ),
        }
    };
    COMPUTE.with(|c| *c.borrow_mut() = Some(Rc::new(compute)));
    MODELS.with(|m| m.borrow_mut().clear());
    info
}

fn cpu_info(why: String) -> BackendInfo {
    BackendInfo {
        gpu: false,
        description: format!("CPU backend ({why})"),
    }
}

/// One entry of `models/index.json`, the manifest of shipped models.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ModelEntry {
    /// Short name, used in the URL (`?model=fashion`).
    pub name: String,
    /// What the picker shows.
    pub title: String,
    /// The diffusers folder, relative to the page or absolute.
    pub path: String,
    /// Class names for class-conditional models (index = label).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Settings this model works best with, applied when it is picked.
    #[serde(default)]
    pub defaults: ModelDefaults,
}

/// A shipped model's preferred settings (from its training run's evaluation).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ModelDefaults {
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub eta: Option<f32>,
    pub guidance: Option<f32>,
}

#[derive(Deserialize)]
struct Manifest {
    models: Vec<ModelEntry>,
}

/// The shipped models listed in `models/index.json`.
pub async fn load_manifest() -> Result<Vec<ModelEntry>, String> {
    let bytes = fetch_bytes("models/index.json")
        .await?
        .ok_or("models/index.json is missing from this build")?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("models/index.json: {e}"))?;
    Ok(m.models)
}

/// What the controls need to know about a loaded model (plain data, no GPU handles).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub url: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `num_class_embeds` of a class-conditional model (the last one is the null class).
    pub num_class_embeds: Option<usize>,
    pub num_train_timesteps: usize,
    pub scheduler: SchedulerConfig,
    /// The sampler the folder's scheduler config names.
    pub default_sampler: SamplerKind,
    /// Size of the weights file in bytes, for the status line.
    pub weight_bytes: usize,
}

const PIPELINE_FILES: [&str; 4] = [
    "unet/config.json",
    "model_index.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
];
const BARE_FILES: [&str; 3] = [
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "scheduler_config.json",
];

/// Fetches a diffusers folder served at `url` (pipeline layout first, then a bare UNet folder)
/// and builds the UNet on the page's backend. Cached: a second call is free.
pub async fn load_model(url: &str) -> Result<ModelInfo, String> {
    let base = url.trim_end_matches('/').to_string();
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let mut files = HashMap::new();
    // A pipeline folder has unet/config.json; only if it is absent try the bare layout (each
    // miss is a 404 the browser logs, so ask for as little as possible).
    let list: &[&str] = match fetch_bytes(&format!("{base}/unet/config.json")).await? {
        Some(b) => {
            files.insert(PIPELINE_FILES[0].to_string(), b);
            &PIPELINE_FILES[1..]
        }
        None => &BARE_FILES,
    };
    for f in list {
        if let Some(b) = fetch_bytes(&format!("{base}/{f}")).await? {
            files.insert(f.to_string(), b);
        }
    }
    if !files.contains_key("config.json") && !files.contains_key("unet/config.json") {
        return Err(format!(
            "no model at {base}: neither {base}/unet/config.json nor {base}/config.json exists"
        ));
    }
    let weight_bytes = files
        .iter()
        .filter(|(k, _)| k.ends_with(".safetensors"))
        .map(|(_, v)| v.len())
        .sum();
    let src = MemorySource {
        name: base.clone(),
        files,
    };
    let unet_files = load_unet_files(&src).map_err(|e| e.to_string())?;
    let scheduler = match &unet_files.scheduler_config {
        Some(text) => SchedulerConfig::from_json_str(text).map_err(|e| format!("{base}: {e}"))?,
        None => SchedulerConfig::default(),
    };
    let cfg = unet_files.config.clone();
    let (height, width) = cfg.sample_size.map(|s| s.hw()).unwrap_or((32, 32));
    let net = match &*compute {
        Compute::Gpu(g) => Net::Gpu(
            UNet2DModel::load(g, cfg.clone(), &unet_files.weights).map_err(|e| e.to_string())?,
        ),
        Compute::Cpu(c) => Net::Cpu(
            UNet2DModel::load(c, cfg.clone(), &unet_files.weights).map_err(|e| e.to_string())?,
        ),
    };
    MODELS.with(|m| m.borrow_mut().insert(base.clone(), Rc::new(net)));
    Ok(ModelInfo {
        url: base,
        channels: cfg.in_channels,
        height,
        width,
        num_class_embeds: cfg.num_class_embeds,
        num_train_timesteps: scheduler.num_train_timesteps.unwrap_or(1000),
        default_sampler: scheduler.default_kind().unwrap_or(SamplerKind::Ddpm),
        scheduler,
        weight_bytes,
    })
}

/// Everything one run needs, read from the controls when Generate is pressed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunParams {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub eta: f32,
    pub seed: u64,
    pub batch: usize,
    /// The label for every sample; −1 spreads the classes over the batch.
    pub class: i64,
    pub guidance: f32,
}

/// One drawable step: x_t and x̂0 as RGBA grids. Frame 0 is the initial noise x_T.
#[derive(Clone, Debug)]
pub struct Frame {
    /// 0 for x_T, then 1..=total for the steps.
    pub index: usize,
    pub total: usize,
    /// The timestep the model was called at (none for x_T).
    pub timestep: Option<f32>,
    pub ms: f64,
    pub width: usize,
    pub height: usize,
    pub xt: Arc<Vec<u8>>,
    pub x0: Arc<Vec<u8>>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub completed: usize,
    pub cancelled: bool,
    /// FNV-1a of the final sample's f32 bits: equal hashes mean bit-identical samples.
    pub hash: String,
}

/// Lets the browser paint and handle input (the Stop button) between steps.
pub async fn yield_to_browser(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
}

fn fnv1a(data: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in data {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn frame(
    index: usize,
    total: usize,
    timestep: Option<f32>,
    ms: f64,
    xt: &[f32],
    x0: &[f32],
    shape: [usize; 4],
) -> Frame {
    let (width, height, xt) = pipeline::grid_rgba(xt, shape);
    let (_, _, x0) = pipeline::grid_rgba(x0, shape);
    Frame {
        index,
        total,
        timestep,
        ms,
        width,
        height,
        xt: Arc::new(xt),
        x0: Arc::new(x0),
    }
}

/// Runs the reverse process of the model loaded from `url`, calling `on_frame` with x_T and then
/// every step; `on_frame` returns false to stop the run.
pub async fn run(
    url: &str,
    info: &ModelInfo,
    p: &RunParams,
    mut on_frame: impl FnMut(Frame) -> bool,
) -> Result<RunSummary, String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let net = MODELS
        .with(|m| m.borrow().get(url.trim_end_matches('/')).cloned())
        .ok_or_else(|| format!("model {url} is not loaded"))?;
    let mut sched = sampler::build(p.sampler, &info.scheduler, p.eta).map_err(|e| e.to_string())?;
    sched.set_timesteps(p.steps).map_err(|e| e.to_string())?;
    let shape = [p.batch, info.channels, info.height, info.width];
    let cond = info.num_class_embeds.map(|n| {
        let real = (n.max(2) - 1) as i64;
        let labels = (0..p.batch as i64)
            .map(|i| if p.class < 0 { i % real } else { p.class })
            .collect();
        Conditioning {
            labels,
            guidance: p.guidance,
            null_class: n as i64 - 1,
        }
    });
    let noise = NoiseSource::Seeded(p.seed);
    let len = shape.iter().product();
    let sigma = sched.init_noise_sigma();
    let x_t: Vec<f32> = pipeline::initial_noise(&noise, len)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v * sigma)
        .collect();
    let total = p.steps;
    if !on_frame(frame(0, total, None, 0.0, &x_t, &vec![0.0; len], shape)) {
        return Ok(RunSummary {
            completed: 0,
            cancelled: true,
            hash: fnv1a(&x_t),
        });
    }
    yield_to_browser(0).await;
    let cb = |ev: StepEvent| {
        let keep = on_frame(frame(
            ev.index + 1,
            ev.total,
            Some(ev.timestep),
            ev.elapsed_ms,
            &ev.sample,
            &ev.pred_original,
            shape,
        ));
        async move {
            yield_to_browser(0).await;
            if keep {
                Control::Continue
            } else {
                Control::Stop
            }
        }
    };
    let out = match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(u)) => {
            pipeline::run(b, u, sched.as_mut(), shape, &noise, cond.as_ref(), cb).await
        }
        (Compute::Cpu(b), Net::Cpu(u)) => {
            pipeline::run(b, u, sched.as_mut(), shape, &noise, cond.as_ref(), cb).await
        }
        _ => return Err("the model was loaded on another backend; reload the page".into()),
    }
    .map_err(|e| e.to_string())?;
    Ok(RunSummary {
        completed: out.completed_steps,
        cancelled: out.cancelled,
        hash: fnv1a(&out.sample),
    })
}

/// What the schedule plot draws: ᾱ_t and SNR over the training timesteps, and the timesteps
/// this sampler visits with this step count.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleData {
    pub alphas_cumprod: Vec<f32>,
    pub snr: Vec<f32>,
    pub visited: Vec<f32>,
}

/// Builds the sampler on the CPU (samplers are pure Rust) just to read its schedule.
pub fn schedule(
    config: &SchedulerConfig,
    kind: SamplerKind,
    steps: usize,
    eta: f32,
) -> Result<ScheduleData, String> {
    let mut s = sampler::build(kind, config, eta).map_err(|e| e.to_string())?;
    s.set_timesteps(steps).map_err(|e| e.to_string())?;
    Ok(ScheduleData {
        alphas_cumprod: s.alphas_cumprod().to_vec(),
        snr: s.snr(),
        visited: s.timesteps().to_vec(),
    })
}
