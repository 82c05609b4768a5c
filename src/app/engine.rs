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
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::edit;
use crate::gpu::GpuBackend;
pub use crate::model::loader::{is_model_file, model_relative_paths};
use crate::model::loader::{load_unet_files, load_vae_files, MemorySource};
use crate::model::{AutoencoderKL, UNet2DModel};
use crate::pipeline::{self, now_ms, Conditioning, Control, NoiseSource, RunOutput, StepEvent};
use crate::sampler::{self, SamplerKind, Scheduler, SchedulerConfig};

enum Compute {
    Gpu(GpuBackend),
    Cpu(CpuBackend),
}

/// A loaded model: its UNet and, for a latent model, the VAE that decodes its latents.
struct Loaded<B: Backend> {
    unet: UNet2DModel<B>,
    vae: Option<AutoencoderKL<B>>,
}

enum Net {
    Gpu(Loaded<GpuBackend>),
    Cpu(Loaded<CpuBackend>),
}

thread_local! {
    // wasm is single-threaded: the backend and the loaded models live here, built once.
    static COMPUTE: RefCell<Option<Rc<Compute>>> = const { RefCell::new(None) };
    static MODELS: RefCell<HashMap<String, Rc<Net>>> = RefCell::new(HashMap::new());
    // What `load_model` returned for each cached model, so that selecting it again costs
    // nothing (no refetch, no second copy of its weights on the GPU).
    static INFOS: RefCell<HashMap<String, ModelInfo>> = RefCell::new(HashMap::new());
    // What `init_backend` reported (the adapter or why the CPU runs), for `bench_forward`.
    static DESCRIPTION: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Which backend runs, for the header and the CPU banner.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    pub gpu: bool,
    /// "GPU: adapter (api, type)" or "CPU backend on N threads, SIMD (why)".
    pub description: String,
    /// The CPU runs although WebGPU opened: its adapter is itself a CPU implementation.
    pub software_gpu: bool,
}

/// Which backend the page asked for (`?backend=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// WebGPU where an adapter opens on a real GPU, else the CPU backend.
    Auto,
    /// `?backend=cpu`.
    Cpu,
    /// `?backend=gpu`: WebGPU on any adapter, software ones included.
    Gpu,
}

impl Choice {
    /// The page URL's `?backend=cpu|gpu`; anything else is [`Choice::Auto`].
    pub fn from_url() -> Self {
        match super::settings::param("backend").as_deref() {
            Some("cpu") => Choice::Cpu,
            Some("gpu") => Choice::Gpu,
            _ => Choice::Auto,
        }
    }
}

/// Picks the backend once per page: WebGPU when the browser has it and an adapter opens on a
/// GPU, otherwise the CPU backend. A CPU adapter (SwiftShader, a browser's fallback where
/// it has no usable GPU) gives way to the CPU backend unless `?backend=gpu` asks for it: there
/// a drawn fashion step (guidance's pair) took 2.1 s through WebGPU and 44–52 ms on the CPU
/// backend (BENCHMARKS.md).
pub async fn init_backend(choice: Choice) -> BackendInfo {
    let (compute, info) = if choice == Choice::Cpu {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("requested with ?backend=cpu".into(), false),
        )
    } else if !super::has_webgpu() {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("this browser has no WebGPU".into(), false),
        )
    } else {
        match GpuBackend::new().await {
            Ok(g) => {
                // wgpu passes on only GPUAdapterInfo's description (empty on SwiftShader); ask
                // the browser for the vendor and architecture too.
                let wgpu = g.ctx.describe();
                let adapter = match super::browser_adapter_info().await {
                    // SwiftShader: "google swiftshader (BrowserWebGpu, Cpu)".
                    Some(b) => match wgpu.strip_prefix("unnamed adapter ") {
                        Some(api) => format!("{b} {api}"),
                        None => format!("{b} · {wgpu}"),
                    },
                    None => wgpu,
                };
                let software = g.ctx.adapter_info.device_type == wgpu::DeviceType::Cpu;
                if software && choice == Choice::Auto {
                    drop(g);
                    (
                        Compute::Cpu(CpuBackend),
                        cpu_info(
                            format!(
                                "WebGPU's adapter, {adapter}, runs on the CPU; ?backend=gpu uses it"
                            ),
                            true,
                        ),
                    )
                } else {
                    let precision = precision(&g);
                    (
                        Compute::Gpu(g),
                        BackendInfo {
                            gpu: true,
                            description: format!("GPU: {adapter}{precision}"),
                            software_gpu: false,
                        },
                    )
                }
            }
            Err(e) => (
                Compute::Cpu(CpuBackend),
                cpu_info(format!("WebGPU failed: {e}"), false),
            ),
        }
    };
    COMPUTE.with(|c| *c.borrow_mut() = Some(Rc::new(compute)));
    forget_models(|_| true);
    DESCRIPTION.with(|d| d.borrow_mut().clone_from(&info.description));
    info
}

/// `?precision=f16`: the GPU keeps weights as f16 where the adapter has `shader-f16` (half the
/// memory; exact for the shipped models, which are stored as f16; ARCHITECTURE.md);
/// `?precision=f16-arith` also multiplies and sums in f16 in real GPUs' convolutions (about 1e-3
/// per forward, BENCHMARKS.md). Returns what the adapter line adds: what is on, or why not.
fn precision(g: &GpuBackend) -> &'static str {
    let arith = match super::settings::param("precision").as_deref() {
        Some("f16") => false,
        Some("f16-arith") => true,
        _ => return "",
    };
    if !g.ctx.shader_f16 {
        return if arith {
            " (f32 weights: ?precision=f16-arith needs shader-f16, which this adapter lacks)"
        } else {
            " (f32 weights: ?precision=f16 needs shader-f16, which this adapter lacks)"
        };
    }
    g.ctx.f16_weights.set(true);
    g.ctx.f16_arith.set(arith);
    if arith && g.ctx.tiled.get() {
        ", f16 weights and convolution arithmetic"
    } else {
        ", f16 weights"
    }
}

/// Why the page's GPU device was lost, if it was (a run then fails with "GPU device lost").
pub fn device_lost() -> Option<String> {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => g.ctx.lost_reason(),
        _ => None,
    })
}

/// Buffers created, buffers pooled, and the pool's (size in bytes, count) pairs.
pub struct GpuStats {
    pub created: u64,
    pub pooled: usize,
    pub pooled_by_size: Vec<(u64, usize)>,
    /// Bytes in every storage and readback buffer that exists (in use or pooled).
    pub bytes_held: u64,
}

/// GPU buffers created so far and those idle in the pool (the soak test's leak check; only
/// with `?debug=gpu`, as `window.stepwiseStats()`).
pub fn gpu_stats() -> Option<GpuStats> {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => Some(GpuStats {
            created: g.ctx.buffers_created(),
            pooled: g.ctx.pooled_buffers(),
            pooled_by_size: g.ctx.pooled_sizes(),
            bytes_held: g.ctx.bytes_held(),
        }),
        _ => None,
    })
}

/// Loses the GPU device on purpose (`device.destroy()`), for the reliability tests: exposed as
/// `window.stepwiseLoseDevice()` only with `?debug=gpu`.
pub fn lose_device() -> bool {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => {
            g.ctx.destroy();
            true
        }
        _ => false,
    })
}

/// Starts the CPU backend's workers and says how many threads it has.
fn cpu_info(why: String, software_gpu: bool) -> BackendInfo {
    let threads = crate::cpu::workers::start();
    let on = if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    };
    BackendInfo {
        gpu: false,
        description: format!("CPU backend on {on}, {} ({why})", crate::cpu::WASM_SIMD),
        software_gpu,
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
    /// For a latent model: the `name` of a pixel model to time it against.
    #[serde(default)]
    pub pixel_peer: Option<String>,
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

/// The image side of a latent model (its UNet's sample is the latents).
#[derive(Clone, Debug, PartialEq)]
pub struct LatentInfo {
    pub image_channels: usize,
    pub image_height: usize,
    pub image_width: usize,
    /// Image pixels per latent pixel along each side.
    pub factor: usize,
}

/// What the controls need to know about a loaded model (plain data, no GPU handles).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub url: String,
    /// The UNet's sample: C×H×W (latents for a latent model).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Some for a latent model (a pipeline folder with `vae/`).
    pub latent: Option<LatentInfo>,
    /// `num_class_embeds` of a class-conditional model (the last one is the null class).
    pub num_class_embeds: Option<usize>,
    pub num_train_timesteps: usize,
    pub scheduler: SchedulerConfig,
    /// The sampler the folder's scheduler config names.
    pub default_sampler: SamplerKind,
    /// Size of the weights file in bytes, for the status line.
    pub weight_bytes: usize,
    /// The folder's run defaults (its `stepwise.json`), applied when the model is picked.
    pub defaults: crate::defaults::ModelDefaults,
}

const PIPELINE_FILES: [&str; 4] = [
    "unet/config.json",
    "model_index.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
];
/// Fetched only when `model_index.json` names a `vae` (no 404s for pixel models).
const VAE_FILES: [&str; 2] = ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"];
const BARE_FILES: [&str; 3] = [
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "scheduler_config.json",
];

/// Fetches a diffusers folder served at `url` (pipeline layout first, then a bare UNet folder)
/// and builds the UNet on the page's backend. Cached: a second call is free. `shipped` folders
/// (listed in `models/index.json`) also have a `stepwise.json` with their run defaults; others
/// are not asked for one (each miss is a 404 the browser logs).
pub async fn load_model(url: &str, shipped: bool) -> Result<ModelInfo, String> {
    let base = url.trim_end_matches('/').to_string();
    if COMPUTE.with(|c| c.borrow().is_none()) {
        return Err("the backend is not ready yet".into());
    }
    if let Some(info) = INFOS.with(|m| m.borrow().get(&base).cloned()) {
        return Ok(info);
    }
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
    let defaults: &[&str] = if shipped { &["stepwise.json"] } else { &[] };
    for f in list.iter().chain(defaults) {
        if let Some(b) = fetch_bytes(&format!("{base}/{f}")).await? {
            files.insert(f.to_string(), b);
        }
    }
    if names_vae(&files) {
        for f in VAE_FILES {
            if let Some(b) = fetch_bytes(&format!("{base}/{f}")).await? {
                files.insert(f.to_string(), b);
            }
        }
    }
    if !files.contains_key("config.json") && !files.contains_key("unet/config.json") {
        return Err(format!(
            "no model at {base}: neither {base}/unet/config.json nor {base}/config.json exists"
        ));
    }
    build_model(base.clone(), &base, files)
}

/// Whether `model_index.json` names a `vae` (a latent model).
fn names_vae(files: &HashMap<String, Vec<u8>>) -> bool {
    files
        .get("model_index.json")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .is_some_and(|v| v.get("vae").is_some())
}

/// The prefix of the cache key of a model opened from the user's files.
pub const FILES_PREFIX: &str = "files:";

/// Builds a model from files the user picked or dropped (paths relative to the model folder, see
/// [`model_relative_paths`]); nothing leaves the browser. `name` (the folder's name) goes into
/// messages and into the returned [`ModelInfo::url`], the key [`run`] finds the model by. A
/// previously opened folder is dropped first, so its weights do not stay on the GPU.
pub fn load_model_from_files(
    name: &str,
    files: HashMap<String, Vec<u8>>,
) -> Result<ModelInfo, String> {
    if COMPUTE.with(|c| c.borrow().is_none()) {
        return Err("the backend is not ready yet".into());
    }
    if !files.contains_key("config.json") && !files.contains_key("unet/config.json") {
        let mut seen: Vec<&str> = files.keys().map(String::as_str).collect();
        seen.sort_unstable();
        return Err(format!(
            "{name} is not a diffusers model folder: it needs unet/config.json (a pipeline folder with model_index.json, unet/, scheduler/) or config.json (a bare UNet folder){}",
            if seen.is_empty() {
                ", and has neither configs nor weights".to_string()
            } else {
                format!("; found {}", seen.join(", "))
            }
        ));
    }
    forget_models(|k| k.starts_with(FILES_PREFIX));
    build_model(format!("{FILES_PREFIX}{name}"), name, files)
}

/// The common part of loading: parse the configs, load the weights onto the page's backend, and
/// cache the model under `key`; `label` names the folder in messages.
fn build_model(
    key: String,
    label: &str,
    files: HashMap<String, Vec<u8>>,
) -> Result<ModelInfo, String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let names_vae = names_vae(&files);
    let weight_bytes = files
        .iter()
        .filter(|(k, _)| k.ends_with(".safetensors"))
        .map(|(_, v)| v.len())
        .sum();
    let src = MemorySource {
        name: label.to_string(),
        files,
    };
    let unet_files = load_unet_files(&src).map_err(|e| e.to_string())?;
    let scheduler = match &unet_files.scheduler_config {
        Some(text) => SchedulerConfig::from_json_str(text).map_err(|e| format!("{label}: {e}"))?,
        None => SchedulerConfig::default(),
    };
    let cfg = unet_files.config.clone();
    let (height, width) = cfg.sample_size.map(|s| s.hw()).unwrap_or((32, 32));
    let vae_files = load_vae_files(&src).map_err(|e| e.to_string())?;
    if names_vae && vae_files.is_none() {
        return Err(format!(
            "{label}: model_index.json names a vae but {label}/vae/config.json is missing"
        ));
    }
    let latent = match &vae_files {
        None => None,
        Some(v) => {
            if v.config.latent_channels != cfg.in_channels
                || v.config.latent_channels != cfg.out_channels
            {
                return Err(format!(
                    "{label}: the VAE has {} latent channels but the UNet takes {} and returns {}",
                    v.config.latent_channels, cfg.in_channels, cfg.out_channels
                ));
            }
            let f = v.config.downscale_factor();
            Some(LatentInfo {
                image_channels: v.config.out_channels,
                image_height: height * f,
                image_width: width * f,
                factor: f,
            })
        }
    };
    fn build<B: Backend>(
        b: &B,
        cfg: &crate::model::UNet2DConfig,
        unet: &crate::model::Weights,
        vae: Option<&crate::model::loader::VaeFiles>,
    ) -> Result<Loaded<B>, String> {
        Ok(Loaded {
            unet: UNet2DModel::load(b, cfg.clone(), unet).map_err(|e| e.to_string())?,
            vae: match vae {
                Some(v) => Some(
                    AutoencoderKL::load(b, v.config.clone(), &v.weights)
                        .map_err(|e| format!("vae: {e}"))?,
                ),
                None => None,
            },
        })
    }
    let net = match &*compute {
        Compute::Gpu(g) => Net::Gpu(
            g.ctx
                .loading(|| build(g, &cfg, &unet_files.weights, vae_files.as_ref()))?,
        ),
        Compute::Cpu(c) => {
            let mut loaded = build(c, &cfg, &unet_files.weights, vae_files.as_ref())?;
            // Batches split among the CPU workers, each with its copy of the UNet.
            loaded.unet.workers = crate::cpu::workers::share(&src.files);
            Net::Cpu(loaded)
        }
    };
    let info = ModelInfo {
        url: key.clone(),
        channels: cfg.out_channels,
        height,
        width,
        latent,
        num_class_embeds: cfg.num_class_embeds,
        num_train_timesteps: scheduler.num_train_timesteps.unwrap_or(1000),
        default_sampler: scheduler.default_kind().unwrap_or(SamplerKind::Ddpm),
        scheduler,
        weight_bytes,
        defaults: unet_files.defaults.clone(),
    };
    MODELS.with(|m| m.borrow_mut().insert(key.clone(), Rc::new(net)));
    INFOS.with(|m| m.borrow_mut().insert(key, info.clone()));
    Ok(info)
}

/// Drops the cached models whose key matches, and hands their weights' GPU memory back to the
/// driver (otherwise the freed buffers would wait in the pool for tensors of the same sizes).
fn forget_models(matches: impl Fn(&str) -> bool) {
    MODELS.with(|m| m.borrow_mut().retain(|k, _| !matches(k)));
    INFOS.with(|m| m.borrow_mut().retain(|k, _| !matches(k)));
    COMPUTE.with(|c| {
        if let Some(Compute::Gpu(g)) = c.borrow().as_deref() {
            g.ctx.trim_pool();
        }
    });
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
    /// Edit a picture instead of generating from noise.
    pub edit: Option<EditJob>,
}

/// Which edit a run does (`crate::edit`).
#[derive(Clone, Debug, PartialEq)]
pub enum EditMode {
    /// SDEdit: noise the picture to the level `strength` picks, then denoise it.
    Img2Img { strength: f32 },
    /// RePaint: regenerate the masked region, `resample` passes per step.
    Inpaint { resample: usize },
    /// The super-resolution model on the picture (the run's model must be one).
    Upscale,
}

/// An edit: the mode and its input picture (RGBA, the model's image size; for `Upscale` the
/// low-resolution input), with the mask for inpainting (RGBA, white = regenerate).
#[derive(Clone, Debug, PartialEq)]
pub struct EditJob {
    pub mode: EditMode,
    pub picture: Image,
    pub mask: Option<Image>,
}

/// An RGBA picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgba: Arc<Vec<u8>>,
}

impl Image {
    fn grid(data: &[f32], shape: [usize; 4]) -> Self {
        let (width, height, rgba) = pipeline::grid_rgba(data, shape);
        Self {
            width,
            height,
            rgba: Arc::new(rgba),
        }
    }

    fn blank(width: usize, height: usize) -> Self {
        let mut rgba = vec![0u8; width * height * 4];
        rgba.chunks_exact_mut(4).for_each(|p| p[3] = 255);
        Self {
            width,
            height,
            rgba: Arc::new(rgba),
        }
    }
}

/// One drawable step. Frame 0 is the initial noise x_T.
#[derive(Clone, Debug)]
pub struct Frame {
    /// 0 for x_T, then 1..=total for the steps.
    pub index: usize,
    pub total: usize,
    /// The timestep the model was called at (none for x_T).
    pub timestep: Option<f32>,
    /// Model + sampler milliseconds of this step (decoding excluded).
    pub ms: f64,
    /// x_t: the batch grid (pixel models), or the latent channels of sample 0 (latent models).
    pub xt: Image,
    /// x̂0: the predicted clean image grid; for latent models decoded by the VAE (at the last
    /// step: the final latents), repeating the last decode on steps that skip it.
    pub x0: Image,
    pub latent: bool,
    /// Latent models: milliseconds of the decode done at this step, `None` when skipped.
    pub decode_ms: Option<f64>,
    /// Latent models: x̂0 is decoded every this many steps (1 while decoding is cheaper than a
    /// step).
    pub decode_every: usize,
}

impl Frame {
    /// Bytes of pixels this frame holds (for the history's memory cap).
    pub fn bytes(&self) -> usize {
        self.xt.rgba.len() + self.x0.rgba.len()
    }

    /// The image this frame stands for: x_t for pixel models (the final sample at the last
    /// step), the decoded x̂0 for latent models.
    pub fn picture(&self) -> &Image {
        if self.latent {
            &self.x0
        } else {
            &self.xt
        }
    }
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

/// The latent decode cadence and the last decoded x̂0, shared by the step callbacks.
struct DecodeState {
    every: usize,
    last: Option<Image>,
    error: Option<String>,
}

/// Runs the reverse process of the model loaded from `url`, calling `on_frame` with x_T and then
/// every step; `on_frame` returns false to stop the run.
pub async fn run(
    url: &str,
    info: &ModelInfo,
    p: &RunParams,
    on_frame: impl FnMut(Frame) -> bool,
) -> Result<RunSummary, String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let net = MODELS
        .with(|m| m.borrow().get(url.trim_end_matches('/')).cloned())
        .ok_or_else(|| format!("model {url} is not loaded"))?;
    let mut sched = sampler::build(p.sampler, &info.scheduler, p.eta).map_err(|e| e.to_string())?;
    // The model's choice (its stepwise.json), as `diffuse sample` makes it.
    sched.set_use_clipped_model_output(info.defaults.use_clipped_model_output.unwrap_or(false));
    sched.set_timesteps(p.steps).map_err(|e| e.to_string())?;
    let on_frame = Rc::new(RefCell::new(on_frame));
    match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(l)) => run_on(b, l, info, p, sched.as_mut(), on_frame).await,
        (Compute::Cpu(b), Net::Cpu(l)) => run_on(b, l, info, p, sched.as_mut(), on_frame).await,
        _ => Err("the model was loaded on another backend; reload the page".into()),
    }
}

async fn run_on<B: Backend, F: FnMut(Frame) -> bool>(
    b: &B,
    net: &Loaded<B>,
    info: &ModelInfo,
    p: &RunParams,
    sched: &mut dyn Scheduler,
    on_frame: Rc<RefCell<F>>,
) -> Result<RunSummary, String> {
    let input = match &p.edit {
        Some(job) => Some(edit_input(b, net, info, p.batch, job).await?),
        None => None,
    };
    let shape = input
        .as_ref()
        .map_or([p.batch, info.channels, info.height, info.width], |i| {
            i.shape
        });
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
    let latent = net.vae.is_some();
    let draw_xt = |x: &[f32]| {
        if latent {
            let (width, height, rgba) = crate::latent::channel_panels_rgba(x, shape, 0);
            Image {
                width,
                height,
                rgba: Arc::new(rgba),
            }
        } else {
            Image::grid(x, shape)
        }
    };
    let x0_blank = match &info.latent {
        Some(l) => {
            let (w, h, _) = pipeline::grid_rgba(
                &vec![0.0; p.batch * l.image_channels * l.image_height * l.image_width],
                [p.batch, l.image_channels, l.image_height, l.image_width],
            );
            Image::blank(w, h)
        }
        None => Image::grid(&vec![0.0; len], shape),
    };
    // An edit starts from its picture: show it in both panels until the first step.
    let (xt0, x0_first) = match &input {
        // Upscaling starts from the low-resolution picture: show it upsampled in both panels.
        Some(i) if i.low_shape != shape => (i.shown.clone(), i.shown.clone()),
        Some(i) => (draw_xt(&i.start), i.shown.clone()),
        None => (draw_xt(&x_t), x0_blank),
    };
    let first = Frame {
        index: 0,
        total: p.steps,
        timestep: None,
        ms: 0.0,
        xt: xt0,
        x0: x0_first,
        latent,
        decode_ms: None,
        decode_every: 1,
    };
    if !(on_frame.borrow_mut())(first) {
        return Ok(RunSummary {
            completed: 0,
            cancelled: true,
            hash: fnv1a(&x_t),
        });
    }
    yield_to_browser(0).await;
    let state = Rc::new(RefCell::new(DecodeState {
        every: 1,
        last: None,
        error: None,
    }));
    let cb = |ev: StepEvent| {
        let on_frame = on_frame.clone();
        let state = state.clone();
        let xt = draw_xt(&ev.sample);
        async move {
            let last_step = ev.index + 1 == ev.total;
            let (x0, decode_ms) = match &net.vae {
                None => (Image::grid(&ev.pred_original, shape), None),
                Some(vae) => {
                    let every = state.borrow().every;
                    let due = ev.index == 0 || last_step || (ev.index + 1).is_multiple_of(every);
                    let previous = state.borrow().last.clone();
                    match previous.filter(|_| !due) {
                        Some(img) => (img, None),
                        None => {
                            // The final frame decodes the final latents: that is the image.
                            let src = if last_step {
                                &ev.sample
                            } else {
                                &ev.pred_original
                            };
                            let t0 = now_ms();
                            match crate::latent::decode(b, vae, src, shape).await {
                                Ok((img, ishape)) => {
                                    let ms = now_ms() - t0;
                                    let img = Image::grid(&img, ishape);
                                    let mut st = state.borrow_mut();
                                    // Decoding costs more than a step: decode every k steps so
                                    // the animation keeps the sampler's pace.
                                    st.every =
                                        (ms / ev.elapsed_ms.max(1e-3)).ceil().max(1.0) as usize;
                                    st.last = Some(img.clone());
                                    (img, Some(ms))
                                }
                                Err(e) => {
                                    state.borrow_mut().error = Some(format!("decoding: {e}"));
                                    return Control::Stop;
                                }
                            }
                        }
                    }
                }
            };
            let frame = Frame {
                index: ev.index + 1,
                total: ev.total,
                timestep: Some(ev.timestep),
                ms: ev.elapsed_ms,
                xt,
                x0,
                latent,
                decode_ms,
                decode_every: state.borrow().every,
            };
            let keep = (on_frame.borrow_mut())(frame);
            yield_to_browser(0).await;
            if keep {
                Control::Continue
            } else {
                Control::Stop
            }
        }
    };
    let c = cond.as_ref();
    let unet = &net.unet;
    let out: RunOutput = match (&p.edit, &input) {
        (Some(job), Some(i)) => match job.mode {
            EditMode::Img2Img { strength } => {
                edit::img2img(
                    b,
                    unet,
                    sched,
                    &i.start,
                    shape,
                    strength as f64,
                    &noise,
                    c,
                    cb,
                )
                .await
            }
            EditMode::Inpaint { resample } => {
                let mask = i
                    .mask
                    .as_ref()
                    .ok_or("inpainting needs a mask: paint one")?;
                let settings = edit::Inpaint {
                    mask,
                    resample,
                    seed: p.seed,
                };
                edit::inpaint(b, unet, sched, &i.start, shape, &settings, &noise, c, cb).await
            }
            EditMode::Upscale => {
                edit::upscale(b, unet, sched, &i.start, i.low_shape, true, &noise, c, cb).await
            }
        },
        _ => pipeline::run(b, unet, sched, shape, &noise, c, cb).await,
    }
    .map_err(|e| e.to_string())?;
    if let Some(e) = state.borrow_mut().error.take() {
        return Err(e);
    }
    Ok(RunSummary {
        completed: out.completed_steps,
        cancelled: out.cancelled,
        hash: fnv1a(&out.sample),
    })
}

/// An edit's prepared input, in the UNet's sample space.
struct EditInput {
    /// The sample shape of the run.
    shape: [usize; 4],
    /// The picture in the sampler's space, batch-repeated: pixels, or the VAE's scaled latents
    /// (for `Upscale`: the low-resolution picture, shaped `low_shape`).
    start: Vec<f32>,
    low_shape: [usize; 4],
    mask: Option<edit::Mask>,
    /// What frame 0's x̂0 panel shows: the picture.
    shown: Image,
}

/// Turns an [`EditJob`]'s RGBA into the run's input: model channels and range, repeated over the
/// batch (each sample gets its own noise), encoded by the VAE for a latent model, with the mask
/// at the sample's resolution (downsampled for latents).
async fn edit_input<B: Backend>(
    b: &B,
    net: &Loaded<B>,
    info: &ModelInfo,
    batch: usize,
    job: &EditJob,
) -> Result<EditInput, String> {
    let pic = &job.picture;
    let (c, h, w) = match &info.latent {
        Some(l) => (l.image_channels, l.image_height, l.image_width),
        None => (info.channels, info.height, info.width),
    };
    let one =
        edit::rgba_to_image(&pic.rgba, pic.width, pic.height, c).map_err(|e| e.to_string())?;
    let repeat = |v: &[f32]| v.repeat(batch);
    if job.mode == EditMode::Upscale {
        if !edit::is_super_resolution(&net.unet.config) {
            return Err("upscaling needs a super-resolution model".into());
        }
        let (low_shape, low) = ([batch, c, pic.height, pic.width], repeat(&one));
        let factor =
            edit::sr_factor(&net.unet.config, pic.height, pic.width).map_err(|e| e.to_string())?;
        return Ok(EditInput {
            shape: [batch, c, pic.height * factor, pic.width * factor],
            start: low,
            low_shape,
            mask: None,
            shown: Image::grid(
                &edit::resize_bicubic(
                    &one,
                    [1, c, pic.height, pic.width],
                    pic.height * factor,
                    pic.width * factor,
                ),
                [1, c, pic.height * factor, pic.width * factor],
            ),
        });
    }
    if (pic.height, pic.width) != (h, w) {
        return Err(format!(
            "the picture is {}×{}, the model makes {w}×{h} images",
            pic.width, pic.height
        ));
    }
    let image_shape = [batch, c, h, w];
    let (start, shape) = match &net.vae {
        Some(vae) => crate::latent::encode(b, vae, &repeat(&one), image_shape)
            .await
            .map_err(|e| format!("encoding the picture: {e}"))?,
        None => (repeat(&one), image_shape),
    };
    let mask = match (&job.mode, &job.mask) {
        (EditMode::Inpaint { .. }, Some(m)) => {
            let values =
                edit::rgba_to_mask_values(&m.rgba, m.width, m.height).map_err(|e| e.to_string())?;
            if (m.height, m.width) != (h, w) {
                return Err(format!(
                    "the mask is {}×{}, the picture {w}×{h}",
                    m.width, m.height
                ));
            }
            let (mh, mw) = (shape[2], shape[3]);
            let values = match &info.latent {
                Some(l) => crate::latent::downsample_mask(&values, h, w, l.factor),
                None => values,
            };
            if !values.iter().any(|&v| v >= 0.5) {
                return Err("the mask is empty: paint the region to regenerate".into());
            }
            Some(
                edit::Mask::from_values(&values, &[1, 1, mh, mw], shape)
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => None,
    };
    Ok(EditInput {
        shape,
        start,
        low_shape: shape,
        mask,
        shown: Image::grid(&one, [1, c, h, w]),
    })
}

/// Latent against pixel diffusion on this device: median milliseconds of one UNet step of each
/// at the same output size, and of one decode.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedReport {
    /// The latent UNet's sample `[C, h, w]` and the image size `[C, H, W]`.
    pub latent_shape: [usize; 3],
    pub image_shape: [usize; 3],
    pub latent_step_ms: f64,
    pub decode_ms: f64,
    pub pixel_step_ms: f64,
}

/// Median of `runs` timed calls of `f` after one warm-up (each call reads its result back, so
/// the GPU work is finished).
async fn median_ms<Fut: std::future::Future<Output = Result<(), String>>>(
    runs: usize,
    mut f: impl FnMut() -> Fut,
) -> Result<f64, String> {
    f().await?;
    let mut t = time_runs(runs, f).await?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// The wall time in ms of each of `runs` calls of `f` (no warm-up), yielding to the browser
/// between calls, outside the timed part.
async fn time_runs<T, Fut: std::future::Future<Output = Result<T, String>>>(
    runs: usize,
    mut f: impl FnMut() -> Fut,
) -> Result<Vec<f64>, String> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = now_ms();
        f().await?;
        t.push(now_ms() - t0);
        yield_to_browser(0).await;
    }
    Ok(t)
}

async fn speed_on<B: Backend>(
    b: &B,
    latent: &Loaded<B>,
    pixel: &Loaded<B>,
    info: &ModelInfo,
) -> Result<SpeedReport, String> {
    let l = info.latent.as_ref().ok_or("not a latent model")?;
    let vae = latent.vae.as_ref().ok_or("not a latent model")?;
    let err = |e: crate::Error| e.to_string();
    let lshape = [1, info.channels, info.height, info.width];
    let ishape = [1, l.image_channels, l.image_height, l.image_width];
    let pix_c = pixel.unet.config.in_channels;
    let pshape = [1, pix_c, l.image_height, l.image_width];
    let labels = |u: &UNet2DModel<B>| u.config.num_class_embeds.map(|_| vec![0i64]);
    let z = b
        .upload(&lshape, &crate::noise::randn(1, 0, lshape.iter().product()))
        .map_err(err)?;
    let x = b
        .upload(&pshape, &crate::noise::randn(2, 0, pshape.iter().product()))
        .map_err(err)?;
    let runs = 5;
    let latent_step_ms = median_ms(runs, || async {
        let y = latent
            .unet
            .forward(b, &z, &[500.0], labels(&latent.unet).as_deref())
            .map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    let decode_ms = median_ms(runs, || async {
        let y = vae.decode_latents(b, &z).map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    let pixel_step_ms = median_ms(runs, || async {
        let y = pixel
            .unet
            .forward(b, &x, &[500.0], labels(&pixel.unet).as_deref())
            .map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    Ok(SpeedReport {
        latent_shape: [lshape[1], lshape[2], lshape[3]],
        image_shape: [ishape[1], ishape[2], ishape[3]],
        latent_step_ms,
        decode_ms,
        pixel_step_ms,
    })
}

/// Times the latent model at `latent_url` against the pixel model at `pixel_url` (both already
/// loaded), the pixel UNet run at the latent model's output size.
pub async fn measure_speed(
    latent_url: &str,
    info: &ModelInfo,
    pixel_url: &str,
) -> Result<SpeedReport, String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let get = |u: &str| {
        MODELS
            .with(|m| m.borrow().get(u.trim_end_matches('/')).cloned())
            .ok_or_else(|| format!("model {u} is not loaded"))
    };
    let (lat, pix) = (get(latent_url)?, get(pixel_url)?);
    match (&*compute, &*lat, &*pix) {
        (Compute::Gpu(b), Net::Gpu(l), Net::Gpu(p)) => speed_on(b, l, p, info).await,
        (Compute::Cpu(b), Net::Cpu(l), Net::Cpu(p)) => speed_on(b, l, p, info).await,
        _ => Err("the models were loaded on another backend; reload the page".into()),
    }
}

/// What one [`bench_forward`] call measured.
pub struct BenchResult {
    /// The page's backend as the header shows it (the adapter, or why the CPU runs).
    pub backend: String,
    /// The first (warm-up) forward's output, for checking against a reference.
    pub output: Vec<f32>,
    /// Wall time of each timed forward after the warm-up, in ms.
    pub ms: Vec<f64>,
    /// The threads the batch was split over: 1 on WebGPU and for one image; on the CPU, the
    /// page's and its workers' that still worked after the last forward (at most one per image).
    pub threads: usize,
    /// The part of each before the download: recording and submitting the commands on WebGPU
    /// (the page's own overhead, which a faster GPU does not shrink), all of it on the CPU.
    pub record_ms: Vec<f64>,
}

/// The issue 8 benchmark (`window.stepwiseBench`, only with `?debug=bench`): loads the model
/// at `model_url` on the page's backend (once; cached like any model), then runs its UNet on
/// `sample` (`shape` = N×C×H×W) `1 + runs` times. Each forward uploads the sample, runs the
/// UNet and reads the output back, as an onnxruntime `session.run` with host tensors does.
pub async fn bench_forward(
    model_url: &str,
    sample: Vec<f32>,
    shape: Vec<usize>,
    timesteps: Vec<f32>,
    labels: Option<Vec<i64>>,
    runs: usize,
) -> Result<BenchResult, String> {
    // The page picks its backend asynchronously at start; wait for it (up to a minute).
    for _ in 0..600 {
        if COMPUTE.with(|c| c.borrow().is_some()) {
            break;
        }
        yield_to_browser(100).await;
    }
    // Cached after the first call, like any model the page loads.
    load_model(model_url, false).await?;
    let key = model_url.trim_end_matches('/');
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let net = MODELS
        .with(|m| m.borrow().get(key).cloned())
        .ok_or_else(|| format!("model {model_url} is not loaded"))?;
    let labels = labels.as_deref();
    let ((output, ms, record_ms), threads) = match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(l)) => (
            forward_timed(b, &l.unet, &shape, &sample, &timesteps, labels, runs).await?,
            1,
        ),
        (Compute::Cpu(b), Net::Cpu(l)) => (
            forward_timed(b, &l.unet, &shape, &sample, &timesteps, labels, runs).await?,
            if shape.first().is_some_and(|&n| n > 1) && l.unet.workers.is_some() {
                crate::cpu::workers::threads().min(shape[0])
            } else {
                1
            },
        ),
        _ => return Err("the model was loaded on another backend; reload the page".into()),
    };
    Ok(BenchResult {
        backend: DESCRIPTION.with(|d| d.borrow().clone()),
        threads,
        output,
        ms,
        record_ms,
    })
}

/// One warm-up forward (its output returned) and `runs` timed ones, each read back.
async fn forward_timed<B: Backend>(
    b: &B,
    unet: &UNet2DModel<B>,
    shape: &[usize],
    sample: &[f32],
    timesteps: &[f32],
    labels: Option<&[i64]>,
    runs: usize,
) -> Result<(Vec<f32>, Vec<f64>, Vec<f64>), String> {
    let err = |e: crate::Error| e.to_string();
    let record = std::cell::RefCell::new(Vec::with_capacity(runs + 1));
    // The CPU's forward is all recording; in the browser it may split among the CPU workers.
    let cpu = (b as &dyn std::any::Any).is::<CpuBackend>();
    let once = || async {
        let t0 = now_ms();
        let x = b.upload(shape, sample).map_err(err)?;
        if cpu {
            let y = unet
                .forward_host(b, &x, timesteps, labels)
                .await
                .map_err(err)?;
            record.borrow_mut().push(now_ms() - t0);
            return Ok(y);
        }
        let y = unet.forward(b, &x, timesteps, labels).map_err(err)?;
        record.borrow_mut().push(now_ms() - t0);
        b.download(&y).await.map_err(err)
    };
    let output = once().await?;
    let ms = time_runs(runs, once).await?;
    let record_ms = record.into_inner().split_off(1);
    Ok((output, ms, record_ms))
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
