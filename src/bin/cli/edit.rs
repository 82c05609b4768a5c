//! `diffuse edit`, `diffuse inpaint` and `diffuse upscale`: image editing (stepwise::edit) from the
//! command line, with `diffuse sample`'s options where they apply.

use std::path::{Path, PathBuf};

use stepwise::edit;
use stepwise::io::{read_tensors, write_tensors};
use stepwise::job::{self, Decode, Event, Job, MaskValues, Mode, Model, Picture};
use stepwise::model::loader::{load_unet_files, DirSource};
use stepwise::model::UNet2DModel;
use stepwise::pipeline::{Control, NoiseSource};
use stepwise::sampler::{SamplerKind, SchedulerConfig};
use stepwise::{Backend, Error, Result};

use super::{frames_dir, labels, noise_source, pixel_frame, read, save_png, write, Device};

/// The options every editing command shares with `diffuse sample`.
#[derive(clap::Args)]
pub struct EditCommon {
    /// A diffusers pipeline folder (model_index.json, unet/) or a bare UNet folder.
    #[arg(long)]
    model: PathBuf,
    /// The image: a PNG (grey or RGB, converted to the model's channel count) or a
    /// .safetensors with `image` (N×C×H×W in [-1, 1]). For upscale, the low-resolution image.
    #[arg(long)]
    input: PathBuf,
    /// ddpm, ddim, dpm++2m or euler-a.
    #[arg(long)]
    sampler: SamplerKind,
    /// Number of denoising steps of the full schedule (edit runs the last `strength` of them).
    #[arg(long)]
    steps: usize,
    /// DDIM's η: 0 is deterministic, 1 is DDPM-like.
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    /// Classifier-free guidance scale for class-conditional models (1 = no guidance).
    #[arg(long, default_value_t = 1.0)]
    guidance: f32,
    /// The class, for class-conditional models.
    #[arg(long)]
    class: Option<i64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// .safetensors with `init` (N×C×H×W: SDEdit's ε, else x_T) and, for stochastic samplers,
    /// `step_noise` (K×N×C×H×W for the K steps this run takes).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// OUT.png (image grid) or OUT.safetensors (`sample`, model space, before clamping).
    #[arg(long)]
    output: PathBuf,
    /// Writes one PNG per step (x_t beside x̂0) into this folder.
    #[arg(long)]
    frames: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
}

#[derive(clap::Args)]
pub struct EditArgs {
    #[command(flatten)]
    common: EditCommon,
    /// How much of the schedule to run: 0 returns the input, 1 starts from (nearly) pure noise.
    #[arg(long, default_value_t = 0.6, allow_negative_numbers = true)]
    strength: f64,
}

#[derive(clap::Args)]
pub struct InpaintArgs {
    #[command(flatten)]
    common: EditCommon,
    /// The region to regenerate: a PNG (white = regenerate, black = keep, thresholded at 0.5)
    /// or a .safetensors with `mask` ([N or 1, 1 or C, H, W], 1 = regenerate).
    #[arg(long)]
    mask: PathBuf,
    /// RePaint's resampling count: each step is taken this many times (1 = no resampling).
    #[arg(long, default_value_t = 1)]
    resample: usize,
}

#[derive(clap::Args)]
pub struct UpscaleArgs {
    #[command(flatten)]
    common: EditCommon,
    /// Also writes the bicubic upscaling of the input here (.png or .safetensors `sample`).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Run the model alone, without making its prediction average down to the input at every
    /// step (the consistency projection, on by default).
    #[arg(long)]
    no_consistency: bool,
}

/// Which editing command to run.
pub enum Task {
    Edit(EditArgs),
    Inpaint(InpaintArgs),
    Upscale(UpscaleArgs),
}

impl Task {
    fn common(&self) -> &EditCommon {
        match self {
            Task::Edit(a) => &a.common,
            Task::Inpaint(a) => &a.common,
            Task::Upscale(a) => &a.common,
        }
    }
}

/// Runs the task on the device it names.
pub fn main(task: Task) -> Result<()> {
    match task.common().device {
        Device::Cpu => run(&stepwise::cpu::CpuBackend, &task),
        Device::Gpu => {
            pollster::block_on(stepwise::gpu::GpuBackend::new()).and_then(|g| run(&g, &task))
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// An image file as N×C×H×W model-space values, `channels` per pixel.
fn read_image(path: &Path, channels: usize) -> Result<(Vec<f32>, [usize; 4])> {
    match extension(path).as_str() {
        "safetensors" => {
            let t = read_tensors(&read(path)?, &path.display().to_string())?;
            let image = t
                .get("image")
                .ok_or_else(|| Error::input("image", format!("missing from {}", path.display())))?;
            let &[n, c, h, w] = image.shape.as_slice() else {
                return Err(Error::input(
                    "image",
                    format!("shape {:?}, expected [N,C,H,W]", image.shape),
                ));
            };
            if c != channels {
                return Err(Error::input(
                    "image",
                    format!("has {c} channels, the model samples {channels}"),
                ));
            }
            if n == 0 || h == 0 || w == 0 {
                return Err(Error::input(
                    "image",
                    format!("empty shape {:?}", image.shape),
                ));
            }
            Ok((image.to_f32(), [n, c, h, w]))
        }
        "png" => {
            let (w, h, rgba) = read_png(path)?;
            let data = edit::rgba_to_image(&rgba, w, h, channels)?;
            Ok((data, [1, channels, h, w]))
        }
        _ => Err(Error::input(
            "--input",
            format!("{} must end in .png or .safetensors", path.display()),
        )),
    }
}

fn read_png(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bytes = read(path)?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| Error::Other(format!("cannot decode {}: {e}", path.display())))?;
    let rgba = img.to_rgba8();
    Ok((
        rgba.width() as usize,
        rgba.height() as usize,
        rgba.into_raw(),
    ))
}

/// A mask file's values (1 = regenerate) and shape [N or 1, 1 or C, H, W].
fn read_mask_values(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    match extension(path).as_str() {
        "safetensors" => {
            let t = read_tensors(&read(path)?, &path.display().to_string())?;
            let mask = t
                .get("mask")
                .ok_or_else(|| Error::input("mask", format!("missing from {}", path.display())))?;
            Ok((mask.to_f32(), mask.shape.clone()))
        }
        "png" => {
            let (w, h, rgba) = read_png(path)?;
            Ok((edit::rgba_to_mask_values(&rgba, w, h)?, vec![1, 1, h, w]))
        }
        _ => Err(Error::input(
            "--mask",
            format!("{} must end in .png or .safetensors", path.display()),
        )),
    }
}

/// `sample` (model space) to OUT.safetensors or a PNG grid.
fn write_sample(path: &Path, data: &[f32], shape: [usize; 4], flag: &str) -> Result<()> {
    match extension(path).as_str() {
        "safetensors" => write(path, &write_tensors(&[("sample", &shape, data)])?),
        "png" => {
            let (gw, gh, rgba) = stepwise::image::grid_rgba(data, shape);
            save_png(path, gw, gh, rgba)
        }
        _ => Err(Error::input(
            flag,
            format!("{} must end in .png or .safetensors", path.display()),
        )),
    }
}

fn run<B: Backend>(b: &B, task: &Task) -> Result<()> {
    let a = task.common();
    // Check what can be checked before loading weights and running anything.
    for (path, flag) in [(&a.output, "--output")].into_iter().chain(match task {
        Task::Upscale(u) => u.baseline.as_ref().map(|p| (p, "--baseline")),
        _ => None,
    }) {
        if !matches!(extension(path).as_str(), "png" | "safetensors") {
            return Err(Error::input(
                flag,
                format!("{} must end in .png or .safetensors", path.display()),
            ));
        }
    }
    if let Task::Edit(e) = task {
        edit::sdedit_begin(a.steps, e.strength)?;
    }
    let files = load_unet_files(&DirSource(a.model.clone()))?;
    let cfg = &files.config;
    let sr = edit::is_super_resolution(cfg);
    match (task, sr) {
        (Task::Upscale(_), false) => {
            return Err(Error::input(
                "--model",
                format!(
                    "{}: in_channels {} is not 2 × out_channels {}, so it is not a \
                     super-resolution UNet",
                    a.model.display(),
                    cfg.in_channels,
                    cfg.out_channels
                ),
            ))
        }
        (Task::Edit(_) | Task::Inpaint(_), true) => {
            return Err(Error::input(
                "--model",
                format!(
                    "{} is a super-resolution UNet (in_channels = 2 × out_channels); use upscale",
                    a.model.display()
                ),
            ))
        }
        _ => {}
    }
    if let Task::Inpaint(i) = task {
        if i.resample == 0 {
            return Err(Error::input("--resample", "must be at least 1"));
        }
    }
    // A latent model (a `vae/` beside the UNet) edits the VAE's latents of the image.
    let vae = stepwise::latent::load_vae(b, &DirSource(a.model.clone()), cfg)?;
    let factor = vae.as_ref().map_or(1, |v| v.config.downscale_factor());
    let channels = match &vae {
        Some(v) => v.config.out_channels,
        None if sr => cfg.out_channels,
        None => cfg.in_channels,
    };
    let (image, in_shape) = read_image(&a.input, channels)?;
    let [n, _, ih, iw] = in_shape;
    let (h, w) = edit::sample_hw(cfg)?;
    let (h, w) = (h * factor, w * factor);
    match task {
        Task::Upscale(_) => {
            edit::sr_factor(cfg, ih, iw)?;
        }
        _ if (ih, iw) != (h, w) => {
            return Err(Error::input(
                "image",
                format!(
                    "{} is {ih}×{iw}, the model's sample_size is {h}×{w}",
                    a.input.display()
                ),
            ));
        }
        _ => {}
    }
    // The run's sample: the latents of the image for a latent model, else its pixels (for
    // upscale, the model's output size).
    let shape = match &vae {
        Some(_) => [n, cfg.in_channels, h / factor, w / factor],
        None => [n, channels, h, w],
    };
    let picture = Picture {
        data: image,
        shape: in_shape,
    };
    let mode = match task {
        Task::Edit(e) => Mode::SdEdit {
            image: picture,
            strength: e.strength,
        },
        Task::Inpaint(i) => {
            let (values, mshape) = read_mask_values(&i.mask)?;
            let mask = MaskValues {
                values,
                shape: mshape,
            };
            // Checked before any weight is loaded.
            job::sample_mask(&mask, shape, factor)?;
            Mode::Inpaint {
                image: picture,
                mask,
                resample: i.resample,
            }
        }
        Task::Upscale(u) => Mode::Upscale {
            image: picture,
            consistency: !u.no_consistency,
        },
    };
    let sched_cfg = match &files.scheduler_config {
        Some(text) => SchedulerConfig::from_json_str(text)?,
        None => SchedulerConfig::default(),
    };
    let mut job = Job {
        sampler: a.sampler,
        steps: a.steps,
        eta: a.eta,
        // The model's choice (its stepwise.json), as `diffuse sample` and the page make it.
        use_clipped_model_output: files.defaults.use_clipped_model_output.unwrap_or(false),
        noise: NoiseSource::Seeded(a.seed),
        seed: a.seed,
        labels: labels(cfg, a.class)?,
        guidance: a.guidance,
        mode,
        decode: if a.frames.is_some() {
            Decode::Every
        } else {
            Decode::Never
        },
        options: Default::default(),
    };
    job.scheduler(&sched_cfg)?;
    job.noise = noise_source(a.noise.as_deref(), a.seed, shape, job.steps_taken()?)?;
    if let Task::Upscale(u) = task {
        if let (Some(path), Mode::Upscale { image, .. }) = (&u.baseline, &job.mode) {
            let (base, base_shape) = edit::upscale_baseline(cfg, &image.data, image.shape)?;
            write_sample(path, &base, base_shape, "--baseline")?;
        }
    }
    frames_dir(a.frames.as_deref())?;
    let model = Model {
        unet: UNet2DModel::load(b, files.config.clone(), &files.weights)?,
        vae,
        scheduler: sched_cfg,
    };
    let mut frame_error = None;
    let out = pollster::block_on(job::run(b, &model, &job, |ev| {
        if let (Some(dir), Event::Step(st)) = (&a.frames, ev) {
            let (fw, fh, rgba) = match &st.decoded {
                // A latent model's frame: its x̂0, decoded.
                Some(d) => stepwise::image::grid_rgba(&d.picture.data, d.picture.shape),
                None => pixel_frame(&st.event.sample, &st.event.pred_original, shape),
            };
            let path = dir.join(format!("step_{:04}.png", st.event.index));
            if let Err(e) = save_png(&path, fw, fh, rgba) {
                frame_error = Some(e);
            }
        }
        let stop = if frame_error.is_some() {
            Control::Stop
        } else {
            Control::Continue
        };
        std::future::ready(stop)
    }))?;
    if let Some(e) = frame_error {
        return Err(e);
    }
    match &out.image {
        Some(img) if extension(&a.output) == "safetensors" => write(
            &a.output,
            &write_tensors(&[
                ("latents", &out.shape, &out.sample),
                ("sample", &out.shape, &out.sample),
                ("image", &img.shape, &img.data),
            ])?,
        ),
        Some(img) => write_sample(&a.output, &img.data, img.shape, "--output"),
        None => write_sample(&a.output, &out.sample, out.shape, "--output"),
    }
}
