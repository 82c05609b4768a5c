//! One run from the page's controls: a [`Job`] whose events become drawable [`Frame`]s, and the
//! sampler schedule the plots draw.

use std::cell::RefCell;
use std::sync::Arc;

use super::*;
use crate::backend::Backend;
use crate::edit;
use crate::job::{self, Decode, Event, Job, Labels, MaskValues, Mode, Picture};
use crate::pipeline::{Control, NoiseSource};
use crate::sampler::{self, SamplerKind, SchedulerConfig};

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
    /// Spacing, Karras σs, zero-SNR on top of the model's scheduler config.
    pub options: crate::sampler::SamplerOptions,
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
    pub(super) fn grid(data: &[f32], shape: [usize; 4]) -> Self {
        let (width, height, rgba) = crate::image::grid_rgba(data, shape);
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

/// Runs the reverse process of the model loaded from `url`, calling `on_frame` with x_T and then
/// every step; `on_frame` returns false to stop the run.
pub async fn run(
    url: &str,
    info: &ModelInfo,
    p: &RunParams,
    on_frame: impl FnMut(Frame) -> bool,
) -> Result<RunSummary, String> {
    let (compute, net) = loaded(url)?;
    match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(l)) => run_on(b, l, info, p, on_frame).await,
        (Compute::Cpu(b), Net::Cpu(l)) => run_on(b, l, info, p, on_frame).await,
        _ => Err("the model was loaded on another backend; reload the page".into()),
    }
}

/// The page's run as a [`Job`]: the controls, the model's `use_clipped_model_output` default
/// (as `diffuse sample` reads it), seeded noise, and the edit's picture.
fn job_of(info: &ModelInfo, p: &RunParams) -> Result<Job, String> {
    let mode = match &p.edit {
        None => Mode::Generate { batch: p.batch },
        Some(e) => edit_mode(info, p.batch, e)?,
    };
    Ok(Job {
        sampler: p.sampler,
        steps: p.steps,
        eta: p.eta,
        use_clipped_model_output: info.defaults.use_clipped_model_output.unwrap_or(false),
        noise: NoiseSource::Seeded(p.seed),
        seed: p.seed,
        labels: info.num_class_embeds.map(|_| {
            if p.class < 0 {
                Labels::Spread
            } else {
                Labels::Same(p.class)
            }
        }),
        guidance: p.guidance,
        mode,
        decode: Decode::Adaptive,
        options: p.options.clone(),
    })
}

/// An [`EditJob`]'s RGBA as the job's input: model channels and range, repeated over the batch
/// (each sample gets its own noise), with the mask (white = regenerate).
fn edit_mode(info: &ModelInfo, batch: usize, job: &EditJob) -> Result<Mode, String> {
    let pic = &job.picture;
    let (c, h, w) = match &info.latent {
        Some(l) => (l.image_channels, l.image_height, l.image_width),
        None => (info.channels, info.height, info.width),
    };
    let one =
        edit::rgba_to_image(&pic.rgba, pic.width, pic.height, c).map_err(|e| e.to_string())?;
    if job.mode == EditMode::Upscale {
        return Ok(Mode::Upscale {
            image: Picture {
                data: one.repeat(batch),
                shape: [batch, c, pic.height, pic.width],
            },
            consistency: true,
        });
    }
    if (pic.height, pic.width) != (h, w) {
        return Err(format!(
            "the picture is {}×{}, the model makes {w}×{h} images",
            pic.width, pic.height
        ));
    }
    let image = Picture {
        data: one.repeat(batch),
        shape: [batch, c, h, w],
    };
    Ok(match job.mode {
        EditMode::Img2Img { strength } => Mode::SdEdit {
            image,
            strength: strength as f64,
        },
        EditMode::Inpaint { resample } => {
            let m = job
                .mask
                .as_ref()
                .ok_or("inpainting needs a mask: paint one")?;
            let values =
                edit::rgba_to_mask_values(&m.rgba, m.width, m.height).map_err(|e| e.to_string())?;
            if (m.height, m.width) != (h, w) {
                return Err(format!(
                    "the mask is {}×{}, the picture {w}×{h}",
                    m.width, m.height
                ));
            }
            if !values.iter().any(|&v| v >= 0.5) {
                return Err("the mask is empty: paint the region to regenerate".into());
            }
            Mode::Inpaint {
                image,
                mask: MaskValues {
                    values,
                    shape: vec![1, 1, h, w],
                },
                resample,
            }
        }
        EditMode::Upscale => unreachable!("handled above"),
    })
}

/// x_t as drawn: a grid of the batch, or a latent model's channel panels of sample 0.
fn draw_sample(x: &[f32], shape: [usize; 4], latent: bool) -> Image {
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
}

/// The x̂0 panel before anything is predicted: a black image grid for latent models, the grid of
/// zeros (mid-grey) for pixel models.
fn blank_x0(info: &ModelInfo, shape: [usize; 4]) -> Image {
    match &info.latent {
        Some(l) => {
            let s = [shape[0], l.image_channels, l.image_height, l.image_width];
            let (w, h, _) = crate::image::grid_rgba(&vec![0.0; s.iter().product()], s);
            Image::blank(w, h)
        }
        None => Image::grid(&vec![0.0; shape.iter().product()], shape),
    }
}

/// The page's adapter over [`crate::job::run`]: its events become drawable [`Frame`]s (x_t as a
/// grid, or a latent model's channel panels; x̂0 as a grid, or decoded, repeating the last decode
/// on steps that skip it), with a yield to the browser after each.
async fn run_on<B: Backend, F: FnMut(Frame) -> bool>(
    b: &B,
    net: &Loaded<B>,
    info: &ModelInfo,
    p: &RunParams,
    on_frame: F,
) -> Result<RunSummary, String> {
    if matches!(&p.edit, Some(e) if e.mode == EditMode::Upscale)
        && !edit::is_super_resolution(&net.unet.config)
    {
        return Err("upscaling needs a super-resolution model".into());
    }
    let job = job_of(info, p)?;
    let latent = net.vae.is_some();
    let upscale = matches!(job.mode, Mode::Upscale { .. });
    // State the job's callback shares with the futures it returns.
    let on_frame = RefCell::new(on_frame);
    let last_x0 = RefCell::new(None::<Image>);
    let start_hash = RefCell::new(None::<String>);
    let sample_shape = std::cell::Cell::new([0usize; 4]);
    let (on_frame, last_x0, start_hash, sample_shape) =
        (&on_frame, &last_x0, &start_hash, &sample_shape);
    let out = job::run(b, net, &job, |ev| async move {
        let frame = match ev {
            Event::Start(st) => {
                let shape = st.shape;
                sample_shape.set(shape);
                let draw_xt = |x: &[f32]| draw_sample(x, shape, latent);
                let shown = st
                    .picture
                    .as_ref()
                    .map(|pic| Image::grid(&pic.data, pic.shape));
                if let Some(x) = &st.sample {
                    *start_hash.borrow_mut() = Some(fnv1a(x));
                }
                let (xt, x0) = match (&st.sample, shown) {
                    // Upscaling starts from the low-resolution picture: upsampled in both panels.
                    (_, Some(pic)) if upscale => (pic.clone(), pic),
                    // An edit starts from its picture: shown in both panels until the first step.
                    (Some(x), Some(pic)) => (draw_xt(x), pic),
                    (Some(x), None) => (draw_xt(x), blank_x0(info, shape)),
                    (None, _) => (blank_x0(info, shape), blank_x0(info, shape)),
                };
                Frame {
                    index: 0,
                    total: p.steps,
                    timestep: None,
                    ms: 0.0,
                    xt,
                    x0,
                    latent,
                    decode_ms: None,
                    decode_every: 1,
                }
            }
            Event::Step(st) => {
                let ev = &st.event;
                let shape = sample_shape.get();
                let x0 = match (&st.decoded, latent) {
                    (Some(d), _) => {
                        let img = Image::grid(&d.picture.data, d.picture.shape);
                        *last_x0.borrow_mut() = Some(img.clone());
                        img
                    }
                    (None, true) => last_x0
                        .borrow()
                        .clone()
                        .unwrap_or_else(|| blank_x0(info, shape)),
                    (None, false) => Image::grid(&ev.pred_original, shape),
                };
                Frame {
                    index: ev.index + 1,
                    total: ev.total,
                    timestep: Some(ev.timestep),
                    ms: ev.elapsed_ms,
                    xt: draw_sample(&ev.sample, shape, latent),
                    x0,
                    latent,
                    decode_ms: st.decoded.as_ref().map(|d| d.ms),
                    decode_every: st.decode_every,
                }
            }
        };
        let keep = (on_frame.borrow_mut())(frame);
        yield_to_browser(0).await;
        if keep {
            Control::Continue
        } else {
            Control::Stop
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    if out.completed_steps == 0 && out.cancelled {
        if let Some(h) = start_hash.borrow_mut().take() {
            return Ok(RunSummary {
                completed: 0,
                cancelled: true,
                hash: h,
            });
        }
    }
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
    options: &crate::sampler::SamplerOptions,
) -> Result<ScheduleData, String> {
    let config = options.apply(kind, config).map_err(|e| e.to_string())?;
    let mut s = sampler::build(kind, &config, eta).map_err(|e| e.to_string())?;
    s.set_timesteps(steps).map_err(|e| e.to_string())?;
    Ok(ScheduleData {
        alphas_cumprod: s.alphas_cumprod().to_vec(),
        snr: s.snr(),
        visited: s.timesteps().to_vec(),
    })
}
