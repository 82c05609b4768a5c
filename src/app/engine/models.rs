//! The shipped models' manifest, and loading a diffusers folder (served, or the user's own files)
//! onto the page's backend, once per URL.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;

use super::*;
use crate::app::fetch::{fetch_bytes, track_progress, FetchError};
use crate::backend::Backend;
pub use crate::model::loader::{is_model_file, model_relative_paths};
use crate::model::loader::{load_unet_files, load_vae_files, MemorySource};
use crate::model::{AutoencoderKL, UNet2DModel};
use crate::sampler::{SamplerKind, SchedulerConfig};

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

/// Why a served model did not load: the network, the server, or the files themselves.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadError {
    /// A file could not be downloaded.
    Fetch(FetchError),
    /// Neither `unet/config.json` nor `config.json` is there (the server answered 404).
    Missing { base: String },
    /// The files are there but are not a model this page can run (the loader's message).
    Invalid(String),
    /// The backend is not chosen yet.
    NotReady,
}

impl LoadError {
    /// What went wrong, for a sentence that starts "Could not load the model …: ".
    pub fn reason(&self) -> String {
        match self {
            LoadError::Fetch(e) => e.reason(),
            LoadError::Missing { .. } => {
                "there is no model at that address (the server answered 404)".into()
            }
            LoadError::Invalid(why) => {
                format!("the files are not a diffusers model this page can run ({why})")
            }
            LoadError::NotReady => "the page was still starting: try again".into(),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Fetch(e) => write!(f, "{e}"),
            LoadError::Missing { base } => write!(
                f,
                "no model at {base}: neither {base}/unet/config.json nor {base}/config.json exists"
            ),
            LoadError::Invalid(why) => f.write_str(why),
            LoadError::NotReady => f.write_str("the backend is not ready yet"),
        }
    }
}

impl From<FetchError> for LoadError {
    fn from(e: FetchError) -> Self {
        LoadError::Fetch(e)
    }
}

impl From<String> for LoadError {
    fn from(e: String) -> Self {
        LoadError::Invalid(e)
    }
}

impl From<LoadError> for String {
    fn from(e: LoadError) -> String {
        e.to_string()
    }
}

/// Fetches a diffusers folder served at `url` (pipeline layout first, then a bare UNet folder)
/// and builds the UNet on the page's backend. Cached: a second call is free. `shipped` folders
/// (listed in `models/index.json`) also have a `stepwise.json` with their run defaults; others
/// are not asked for one (each miss is a 404 the browser logs). The download counts into
/// [`crate::app::fetch::download_progress`].
pub async fn load_model(url: &str, shipped: bool) -> Result<ModelInfo, LoadError> {
    let base = url.trim_end_matches('/').to_string();
    if COMPUTE.with(|c| c.borrow().is_none()) {
        return Err(LoadError::NotReady);
    }
    if let Some(info) = INFOS.with(|m| m.borrow().get(&base).cloned()) {
        return Ok(info);
    }
    let _progress = track_progress();
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
        return Err(LoadError::Missing { base });
    }
    Ok(build_model(base.clone(), &base, files)?)
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
        scheduler: &SchedulerConfig,
    ) -> Result<Loaded<B>, String> {
        Ok(Loaded {
            scheduler: scheduler.clone(),
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
                .loading(|| build(g, &cfg, &unet_files.weights, vae_files.as_ref(), &scheduler))?,
        ),
        Compute::Cpu(c) => {
            let mut loaded = build(c, &cfg, &unet_files.weights, vae_files.as_ref(), &scheduler)?;
            // Batches split among the CPU workers, each with its copy of the UNet.
            loaded.unet.workers = crate::model::workers::share(&src.files);
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
pub(super) fn forget_models(matches: impl Fn(&str) -> bool) {
    MODELS.with(|m| m.borrow_mut().retain(|k, _| !matches(k)));
    INFOS.with(|m| m.borrow_mut().retain(|k, _| !matches(k)));
    COMPUTE.with(|c| {
        if let Some(Compute::Gpu(g)) = c.borrow().as_deref() {
            g.ctx.trim_pool();
        }
    });
}
