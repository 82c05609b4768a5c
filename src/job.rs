//! One run of a model, in any mode (generate, SDEdit, inpaint, upscale) on any backend: the
//! sampler built from the model's scheduler config, the conditioning, the noise, the edit's input
//! brought into the UNet's sample space (encoded by the VAE for a latent model, the mask
//! downsampled to the latents), the reverse loop, and the latent x̂0 previews decoded at a
//! cadence. The page (`app::engine`), `diffuse sample` and `diffuse edit|inpaint|upscale` are
//! adapters over [`run`]: they turn their controls or flags into a [`Job`] and the [`Event`]s
//! into frames, PNG files or a canvas.

use std::cell::{Cell, RefCell};

use crate::backend::Backend;
use crate::device::clock::now_ms;
use crate::edit::{self, Inpaint, Mask};
use crate::error::{Error, Result};
use crate::model::{AutoencoderKL, UNet2DModel};
use crate::pipeline::{self, Conditioning, Control, NoiseSource, StepEvent};
use crate::sampler::{self, SamplerKind, SamplerOptions, Scheduler, SchedulerConfig};

/// A model ready to run: its UNet, the VAE that decodes its latents (latent models), and the
/// scheduler config every sampler reads its training schedule from.
pub struct Model<B: Backend> {
    pub unet: UNet2DModel<B>,
    pub vae: Option<AutoencoderKL<B>>,
    pub scheduler: SchedulerConfig,
}

/// Images in model space ([-1, 1]), N×C×H×W.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
}

/// An inpainting mask in image space: values (≥ 0.5 = regenerate) of shape [N or 1, 1 or C, H, W].
#[derive(Clone, Debug, PartialEq)]
pub struct MaskValues {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

/// What the run does.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Sampling from noise, `batch` images.
    Generate { batch: usize },
    /// SDEdit: `image` noised to the level `strength` picks (0..=1), then denoised.
    SdEdit { image: Picture, strength: f64 },
    /// RePaint: regenerate the masked part of `image`, each step taken `resample` times.
    Inpaint {
        image: Picture,
        mask: MaskValues,
        resample: usize,
    },
    /// A super-resolution UNet on the low-resolution `image`; `consistency` shifts x̂0 to average
    /// down to the input at every step.
    Upscale { image: Picture, consistency: bool },
}

/// The class of each sample, for class-conditional models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// Every sample of the batch.
    Same(i64),
    /// One class per sample, cycling through the real classes over the batch (sample i: i mod K);
    /// a batch of one draws the seed's class (seed mod K), so "one of each" shows every class as
    /// the seed changes instead of always the first.
    Spread,
}

impl Labels {
    /// The class of each of `n` samples for a model with `num_class_embeds` embeddings (the last
    /// one the null class, so `num_class_embeds - 1` real ones) and the run's `seed`.
    pub fn resolve(self, num_class_embeds: usize, n: usize, seed: u64) -> Vec<i64> {
        let real = (num_class_embeds.max(2) - 1) as i64;
        (0..n as i64)
            .map(|i| match self {
                Labels::Same(c) => c,
                Labels::Spread if n == 1 => (seed % real as u64) as i64,
                Labels::Spread => i % real,
            })
            .collect()
    }
}

/// How often a latent model's x̂0 preview is decoded (the final image always is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// Never before the end.
    Never,
    /// At every step.
    Every,
    /// Every k steps, k = ⌈decode time / step time⌉, so an animation keeps the sampler's pace.
    Adaptive,
}

/// Everything one run needs besides the model.
#[derive(Clone, Debug)]
pub struct Job {
    pub sampler: SamplerKind,
    pub steps: usize,
    /// DDIM's η.
    pub eta: f32,
    /// DDIM rebuilds ε from the clipped x̂0 (diffusers' `use_clipped_model_output`).
    pub use_clipped_model_output: bool,
    pub noise: NoiseSource,
    /// The seed of inpainting's extra noise (the known region's ε, the jumps, redone steps).
    pub seed: u64,
    /// `None` for unconditional models.
    pub labels: Option<Labels>,
    /// Classifier-free guidance scale (1 = none).
    pub guidance: f32,
    pub mode: Mode,
    pub decode: Decode,
    /// Spacing, Karras σs, zero-SNR rescaling, solver order / type on top of the model's
    /// scheduler config (refused by name where the sampler's class lacks one).
    pub options: SamplerOptions,
}

impl Job {
    /// The sampler, built from the model's scheduler config like diffusers'
    /// `XScheduler.from_config`, with its timesteps set.
    pub fn scheduler(&self, config: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
        let config = self.options.apply(self.sampler, config)?;
        let mut s = sampler::build(self.sampler, &config, self.eta)?;
        s.set_use_clipped_model_output(self.use_clipped_model_output);
        s.set_timesteps(self.steps)?;
        Ok(s)
    }

    /// How many steps the run takes: all of them, or SDEdit's last `strength` of them (what
    /// injected `step_noise` must cover).
    pub fn steps_taken(&self) -> Result<usize> {
        Ok(match &self.mode {
            Mode::SdEdit { strength, .. } => {
                self.steps - edit::sdedit_begin(self.steps, *strength)?
            }
            _ => self.steps,
        })
    }
}

/// What a run reports, in order: one [`Start`], then one [`Step`] per step.
#[derive(Clone, Debug)]
pub enum Event {
    Start(Start),
    Step(Step),
}

/// Before the first step.
#[derive(Clone, Debug)]
pub struct Start {
    /// The run's sample shape (latents for a latent model).
    pub shape: [usize; 4],
    /// What the run starts from in sample space: x_T · init_noise_sigma, or an edit's input
    /// (the picture's latents for a latent model) before it is noised. `None` for upscaling,
    /// whose input has another size.
    pub sample: Option<Vec<f32>>,
    /// An edit's picture in image space, its first image only (upscaling: bicubic to the
    /// output size).
    pub picture: Option<Picture>,
}

/// One reverse step.
#[derive(Clone, Debug)]
pub struct Step {
    /// x_t and x̂0 in sample space, the timestep and the step's milliseconds.
    pub event: StepEvent,
    /// Latent models, where due: x̂0 decoded (at the last step, the final sample: the image).
    pub decoded: Option<Decoded>,
    /// Latent models: x̂0 is decoded every this many steps.
    pub decode_every: usize,
}

/// A decoded latent sample.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub picture: Picture,
    pub ms: f64,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Output {
    /// The final sample (model space, before any clamping).
    pub sample: Vec<f32>,
    pub shape: [usize; 4],
    /// A latent model's final sample decoded (`None` when the run was cancelled).
    pub image: Option<Picture>,
    pub completed_steps: usize,
    pub cancelled: bool,
}

/// A latent model's image-space mask at the latents' resolution (a latent pixel is regenerated
/// when any image pixel of its f×f block is), broadcast to the sample's shape; `factor` 1 for
/// pixel models.
pub fn sample_mask(mask: &MaskValues, sample: [usize; 4], factor: usize) -> Result<Mask> {
    if factor == 1 {
        return Mask::from_values(&mask.values, &mask.shape, sample);
    }
    let &[mn, mc, mh, mw] = mask.shape.as_slice() else {
        return Err(Error::input(
            "mask",
            format!("expected shape [N,1,H,W], got {:?}", mask.shape),
        ));
    };
    if mask.values.len() != mn * mc * mh * mw || mh % factor != 0 || mw % factor != 0 {
        return Err(Error::input(
            "mask",
            format!(
                "shape {:?} is not the image's size (a multiple of {factor})",
                mask.shape
            ),
        ));
    }
    let small: Vec<f32> = mask
        .values
        .chunks_exact(mh * mw)
        .flat_map(|plane| crate::latent::downsample_mask(plane, mh, mw, factor))
        .collect();
    Mask::from_values(&small, &[mn, mc, mh / factor, mw / factor], sample)
}

fn conditioning<B: Backend>(
    model: &Model<B>,
    labels: Option<Labels>,
    guidance: f32,
    n: usize,
    seed: u64,
) -> Result<Option<Conditioning>> {
    match (model.unet.config.num_class_embeds, labels) {
        (Some(k), Some(l)) => Ok(Some(Conditioning {
            labels: l.resolve(k, n, seed),
            guidance,
            null_class: k as i64 - 1,
        })),
        (Some(_), None) => Err(Error::input(
            "class_labels",
            "required: the model is class-conditional",
        )),
        (None, Some(_)) => Err(Error::input(
            "class_labels",
            "the model is not class-conditional",
        )),
        (None, None) => Ok(None),
    }
}

/// The first image of a batch.
fn first(p: &Picture) -> Picture {
    let [_, c, h, w] = p.shape;
    Picture {
        data: p.data[..c * h * w].to_vec(),
        shape: [1, c, h, w],
    }
}

/// Runs `job` on `model`. `on_event` sees the [`Start`] and every [`Step`] and may stop the run
/// (a stop at the start runs nothing); it is async so that a browser can draw between steps.
pub async fn run<B, F, Fut>(b: &B, model: &Model<B>, job: &Job, mut on_event: F) -> Result<Output>
where
    B: Backend,
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    let mut sched = job.scheduler(&model.scheduler)?;
    let unet = &model.unet;
    let factor = model
        .vae
        .as_ref()
        .map_or(1, |v| v.config.downscale_factor());

    // The edit's input in sample space: a latent model edits the VAE's latents of the picture.
    let (start, shape) = match &job.mode {
        Mode::Generate { batch } => {
            let (h, w) = edit::sample_hw(&unet.config)?;
            (None, [*batch, unet.config.in_channels, h, w])
        }
        Mode::Upscale { image, .. } => {
            let factor = edit::sr_factor(&unet.config, image.shape[2], image.shape[3])?;
            let [n, c, h, w] = image.shape;
            (None, [n, c, h * factor, w * factor])
        }
        Mode::SdEdit { image, .. } | Mode::Inpaint { image, .. } => match &model.vae {
            Some(vae) => {
                let (z, s) = crate::latent::encode(b, vae, &image.data, image.shape).await?;
                (Some(z), s)
            }
            None => (Some(image.data.clone()), image.shape),
        },
    };
    let cond = conditioning(model, job.labels, job.guidance, shape[0], job.seed)?;
    let first_event = Start {
        shape,
        sample: match (&job.mode, &start) {
            (Mode::Generate { .. }, _) => {
                let sigma = sched.init_noise_sigma();
                let x = pipeline::initial_noise(&job.noise, shape.iter().product())?;
                Some(x.iter().map(|v| v * sigma).collect())
            }
            (_, s) => s.clone(),
        },
        picture: match &job.mode {
            Mode::Generate { .. } => None,
            Mode::SdEdit { image, .. } | Mode::Inpaint { image, .. } => Some(first(image)),
            Mode::Upscale { image, .. } => {
                let one = first(image);
                let c = one.shape[1];
                let (oh, ow) = (shape[2], shape[3]);
                Some(Picture {
                    data: edit::resize_bicubic(&one.data, one.shape, oh, ow),
                    shape: [1, c, oh, ow],
                })
            }
        },
    };
    if on_event(Event::Start(first_event)).await == Control::Stop {
        return Ok(Output {
            sample: start.unwrap_or_default(),
            shape,
            image: None,
            completed_steps: 0,
            cancelled: true,
        });
    }

    // Latent x̂0 previews: decoded when due; the last step decodes the final sample. State the
    // loop's callback shares with the futures it returns (hence cells: a future cannot borrow
    // from the closure that made it).
    let every = Cell::new(1usize);
    let final_image = RefCell::new(None::<Picture>);
    let error = RefCell::new(None::<Error>);
    let on_event = RefCell::new(on_event);
    let vae = model.vae.as_ref();
    let decode = job.decode;
    let (every, final_image, error, on_event) = (&every, &final_image, &error, &on_event);
    let cb = move |ev: StepEvent| async move {
        let last_step = ev.index + 1 == ev.total;
        let due = match decode {
            Decode::Never => false,
            Decode::Every => true,
            Decode::Adaptive => {
                ev.index == 0 || last_step || (ev.index + 1).is_multiple_of(every.get())
            }
        };
        let mut decoded = None;
        if let Some(vae) = vae.filter(|_| due) {
            let src = if last_step {
                &ev.sample
            } else {
                &ev.pred_original
            };
            let t0 = now_ms();
            match crate::latent::decode(b, vae, src, shape).await {
                Ok((data, s)) => {
                    let ms = now_ms() - t0;
                    if decode == Decode::Adaptive {
                        // Decoding costs more than a step: decode every k steps.
                        every.set((ms / ev.elapsed_ms.max(1e-3)).ceil().max(1.0) as usize);
                    }
                    let picture = Picture { data, shape: s };
                    if last_step {
                        *final_image.borrow_mut() = Some(picture.clone());
                    }
                    decoded = Some(Decoded { picture, ms });
                }
                Err(e) => {
                    // The loop's callback cannot fail: stop, and return the error after it.
                    *error.borrow_mut() = Some(e);
                    return Control::Stop;
                }
            }
        }
        let step = Step {
            event: ev,
            decoded,
            decode_every: every.get(),
        };
        let fut = (on_event.borrow_mut())(Event::Step(step));
        fut.await
    };
    let c = cond.as_ref();
    let s = sched.as_mut();
    let out = match &job.mode {
        Mode::Generate { .. } => pipeline::run(b, unet, s, shape, &job.noise, c, cb).await?,
        Mode::SdEdit { strength, .. } => {
            let start = start.as_deref().unwrap_or_default();
            edit::img2img(b, unet, s, start, shape, *strength, &job.noise, c, cb).await?
        }
        Mode::Inpaint { mask, resample, .. } => {
            let mask = sample_mask(mask, shape, factor)?;
            let settings = Inpaint {
                mask: &mask,
                resample: *resample,
                seed: job.seed,
            };
            let start = start.as_deref().unwrap_or_default();
            edit::inpaint(b, unet, s, start, shape, &settings, &job.noise, c, cb).await?
        }
        Mode::Upscale { image, consistency } => {
            edit::upscale(
                b,
                unet,
                s,
                &image.data,
                image.shape,
                *consistency,
                &job.noise,
                c,
                cb,
            )
            .await?
        }
    };
    if let Some(e) = error.borrow_mut().take() {
        return Err(e);
    }
    let image = match (vae, out.cancelled, final_image.take()) {
        (Some(_), false, Some(img)) => Some(img),
        (Some(vae), false, None) => {
            let (data, s) = crate::latent::decode(b, vae, &out.sample, out.shape).await?;
            Some(Picture { data, shape: s })
        }
        _ => None,
    };
    Ok(Output {
        sample: out.sample,
        shape: out.shape,
        image,
        completed_steps: out.completed_steps,
        cancelled: out.cancelled,
    })
}

#[cfg(test)]
mod tests {
    use super::Labels;

    #[test]
    fn one_of_each_at_batch_one_is_the_seeds_class() {
        // 11 embeddings: 10 real classes and the null class.
        assert_eq!(Labels::Spread.resolve(11, 1, 0), vec![0]);
        assert_eq!(Labels::Spread.resolve(11, 1, 7), vec![7]);
        assert_eq!(Labels::Spread.resolve(11, 1, 23), vec![3]);
        // A batch still cycles from class 0, whatever the seed.
        assert_eq!(Labels::Spread.resolve(11, 4, 23), vec![0, 1, 2, 3]);
        assert_eq!(Labels::Spread.resolve(3, 5, 9), vec![0, 1, 0, 1, 0]);
        assert_eq!(Labels::Same(5).resolve(11, 2, 9), vec![5, 5]);
    }
}
