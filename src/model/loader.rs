//! Finding a model in a diffusers folder as users download it: a pipeline folder
//! (`model_index.json`, `unet/`, `scheduler/`, optionally `vae/`) or a bare UNet folder
//! (`config.json` + `diffusion_pytorch_model.safetensors`, optionally `scheduler_config.json`).
//! Files come through [`FileSource`], so the same code reads a directory natively and the files
//! a user dropped on the page in the browser.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::autoencoder_kl::AutoencoderKLConfig;
use crate::model::config::UNet2DConfig;
use crate::model::weights::Weights;

/// Where a model's files come from, by path relative to the model folder.
pub trait FileSource {
    /// The file's bytes, `None` if it does not exist.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>>;
    /// A name for messages (the folder path).
    fn describe(&self) -> String;
}

/// A folder on disk.
#[cfg(not(target_arch = "wasm32"))]
pub struct DirSource(pub std::path::PathBuf);

#[cfg(not(target_arch = "wasm32"))]
impl FileSource for DirSource {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.0.join(rel);
        // Refuse what no limit admits before reading it into memory.
        if let Ok(meta) = std::fs::metadata(&path) {
            let max = crate::model::limits::MAX_WEIGHTS_BYTES as u64;
            if meta.len() > max {
                return Err(Error::Safetensors {
                    path: path.display().to_string(),
                    message: format!(
                        "{} bytes exceeds the limit of {max} bytes (see RELIABILITY.md: size limits)",
                        meta.len()
                    ),
                });
            }
        }
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                path: path.display().to_string(),
                source: e,
            }),
        }
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// Files held in memory (the browser's file picker, embedded assets, tests).
pub struct MemorySource {
    pub name: String,
    pub files: HashMap<String, Vec<u8>>,
}

impl FileSource for MemorySource {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.files.get(rel).cloned())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The UNet part of a model folder, parsed but not yet on a backend.
pub struct UNetFiles {
    pub config: UNet2DConfig,
    pub weights: Weights,
    /// The scheduler config JSON, if the folder has one.
    pub scheduler_config: Option<String>,
    /// Whether the folder also has a `vae/` (a latent model).
    pub has_vae: bool,
    /// The run defaults of the folder's `stepwise.json` (none without one).
    pub defaults: crate::defaults::ModelDefaults,
}

const WEIGHT_NAMES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

fn text(src: &dyn FileSource, rel: &str) -> Result<Option<String>> {
    match src.read(rel)? {
        None => Ok(None),
        Some(b) if b.len() > crate::model::limits::MAX_CONFIG_BYTES => Err(Error::Json {
            path: format!("{}/{rel}", src.describe()),
            message: format!(
                "{} bytes exceeds the limit of {} bytes for a JSON file",
                b.len(),
                crate::model::limits::MAX_CONFIG_BYTES
            ),
        }),
        Some(b) => String::from_utf8(b).map(Some).map_err(|_| Error::Json {
            path: format!("{}/{rel}", src.describe()),
            message: "not UTF-8 text".into(),
        }),
    }
}

/// What a pipeline's `model_index.json` may list: the engine runs a `UNet2DModel` with a
/// scheduler, and decodes with an `AutoencoderKL` `vae` where there is one. Any other component
/// (a VQ-VAE, a text encoder, ...) changes what the UNet's samples mean, so a pipeline that lists
/// one is refused by name rather than run as if it were not there. Returns whether the folder
/// has a `model_index.json`.
fn check_model_index(src: &dyn FileSource) -> Result<bool> {
    let path = format!("{}/model_index.json", src.describe());
    let Some(text) = text(src, "model_index.json")? else {
        return Ok(false);
    };
    let index: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
    for (name, entry) in index.iter().filter(|(k, _)| !k.starts_with('_')) {
        // ["library", "Class"], or [null, null] for an optional component left out.
        let class = match entry.as_array().map(Vec::as_slice) {
            Some([_, serde_json::Value::String(class)]) => class.as_str(),
            Some([serde_json::Value::Null, serde_json::Value::Null]) => continue,
            _ => {
                return Err(Error::config(
                    "model_index.json",
                    format!("{path}: component `{name}` is {entry}, not [library, class]"),
                ))
            }
        };
        let expected =
            match name.as_str() {
                "unet" => "UNet2DModel",
                "vae" => "AutoencoderKL",
                "scheduler" => continue, // the sampler is chosen by name; the class only sets the default
                _ => return Err(Error::unsupported(
                    "pipeline component in model_index.json",
                    format!("{name}: {class}"),
                    "unet (UNet2DModel), scheduler, and vae (AutoencoderKL) for latent models; \
                     a VQ-VAE, text encoder or other component would change what the samples mean",
                )),
            };
        if class != expected {
            return Err(Error::unsupported(
                &format!("`{name}` class in model_index.json"),
                class,
                expected,
            ));
        }
    }
    Ok(true)
}

/// Reads the UNet config, weights and scheduler config from either folder layout.
pub fn load_unet_files(src: &dyn FileSource) -> Result<UNetFiles> {
    let root = src.describe();
    let pipeline = check_model_index(src)? || src.read("unet/config.json")?.is_some();
    let (unet_dir, sched_path) = if pipeline {
        ("unet/", "scheduler/scheduler_config.json")
    } else {
        ("", "scheduler_config.json")
    };
    let cfg_rel = format!("{unet_dir}config.json");
    let cfg_text = text(src, &cfg_rel)?.ok_or_else(|| {
        Error::config(
            "config.json",
            format!(
                "{root}: no {cfg_rel} (expected a diffusers pipeline folder with model_index.json and unet/, \
                 or a UNet folder with config.json and diffusion_pytorch_model.safetensors)"
            ),
        )
    })?;
    let config = UNet2DConfig::from_json(&cfg_text, &format!("{root}/{cfg_rel}"))?;
    let weights = read_weights(src, unet_dir)?;
    Ok(UNetFiles {
        config,
        weights,
        scheduler_config: text(src, sched_path)?,
        has_vae: pipeline && src.read("vae/config.json")?.is_some(),
        defaults: match text(src, "stepwise.json")? {
            Some(t) => crate::defaults::ModelDefaults::from_stepwise_json(
                &t,
                &format!("{root}/stepwise.json"),
            )?,
            None => Default::default(),
        },
    })
}

/// The weights file of the model in `dir` (`""` or `"unet/"`, `"vae/"`).
fn read_weights(src: &dyn FileSource, dir: &str) -> Result<Weights> {
    let root = src.describe();
    for name in WEIGHT_NAMES {
        let rel = format!("{dir}{name}");
        if let Some(bytes) = src.read(&rel)? {
            return Weights::from_bytes(bytes, &format!("{root}/{rel}"));
        }
    }
    let bin = src
        .read(&format!("{dir}diffusion_pytorch_model.bin"))?
        .is_some();
    Err(Error::config(
        "weights",
        format!(
            "{root}: no {dir}{}{}",
            WEIGHT_NAMES[0],
            if bin {
                " (only a PyTorch .bin was found; convert it to .safetensors)"
            } else {
                ""
            }
        ),
    ))
}

/// The `AutoencoderKL` of a latent model, parsed but not yet on a backend.
pub struct VaeFiles {
    pub config: AutoencoderKLConfig,
    pub weights: Weights,
}

/// The VAE of a pipeline folder (`vae/`), or a bare `AutoencoderKL` folder (its `config.json`
/// has `"_class_name": "AutoencoderKL"`); `None` when the folder has neither (a pixel model).
pub fn load_vae_files(src: &dyn FileSource) -> Result<Option<VaeFiles>> {
    let root = src.describe();
    let dir = if src.read("vae/config.json")?.is_some() {
        "vae/"
    } else {
        match text(src, "config.json")? {
            Some(t) if t.contains("\"AutoencoderKL\"") => "",
            _ => return Ok(None),
        }
    };
    let rel = format!("{dir}config.json");
    let cfg_text = text(src, &rel)?.unwrap_or_default();
    let config = AutoencoderKLConfig::from_json(&cfg_text, &format!("{root}/{rel}"))?;
    let weights = read_weights(src, dir)?;
    Ok(Some(VaeFiles { config, weights }))
}

/// The paths of a picked or dropped folder made relative to the model folder, as a
/// [`MemorySource`] wants them. A picked folder's paths start with its name
/// (`my-model/unet/config.json`); a top folder shared by every path is stripped, as often as it
/// is shared, so picking the model folder, the folder above it, or selecting its loose files all
/// work. Backslashes and leading slashes are normalised away.
pub fn model_relative_paths(paths: &[String]) -> Vec<String> {
    let mut parts: Vec<Vec<&str>> = paths
        .iter()
        .map(|p| p.split(['/', '\\']).filter(|s| !s.is_empty()).collect())
        .collect();
    while let Some(top) = parts.first().and_then(|p| p.first().copied()) {
        if parts.iter().all(|p| p.len() > 1 && p[0] == top) {
            parts.iter_mut().for_each(|p| {
                p.remove(0);
            });
        } else {
            break;
        }
    }
    parts.into_iter().map(|p| p.join("/")).collect()
}

/// Whether the loader may read the file at this model-relative path (configs and weights in the
/// folder or one level down), so the rest of a picked folder is never read into memory.
pub fn is_model_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel.matches('/').count() <= 1
        && (matches!(
            name,
            "model_index.json" | "config.json" | "scheduler_config.json"
        ) || rel == "stepwise.json"
            || WEIGHT_NAMES.contains(&name))
}

#[cfg(test)]
mod picked_paths_tests {
    use super::*;

    fn rel(paths: &[&str]) -> Vec<String> {
        model_relative_paths(&paths.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn strips_the_picked_folder_name() {
        assert_eq!(
            rel(&[
                "m/model_index.json",
                "m/unet/config.json",
                "m/scheduler/scheduler_config.json"
            ]),
            [
                "model_index.json",
                "unet/config.json",
                "scheduler/scheduler_config.json"
            ]
        );
        // The folder above the model folder, and a dropped folder's absolute entry paths.
        assert_eq!(
            rel(&[
                "/models/m/config.json",
                "/models/m/diffusion_pytorch_model.safetensors"
            ]),
            ["config.json", "diffusion_pytorch_model.safetensors"]
        );
        // Loose files, and one file: nothing to strip.
        assert_eq!(
            rel(&["config.json", "x.safetensors"]),
            ["config.json", "x.safetensors"]
        );
        assert_eq!(rel(&["m\\config.json"]), ["config.json"]);
        assert!(rel(&[]).is_empty());
    }

    #[test]
    fn reads_only_configs_and_weights() {
        for p in [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "scheduler/scheduler_config.json",
            "config.json",
        ] {
            assert!(is_model_file(p), "{p}");
        }
        for p in [
            "README.md",
            "unet/model.ckpt",
            "a/b/config.json",
            "samples.png",
        ] {
            assert!(!is_model_file(p), "{p}");
        }
    }
}
