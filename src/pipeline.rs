//! The reverse (denoising) loop over any backend: initial noise → for each timestep: model →
//! sampler step → one [`StepEvent`] → next. Cancellable between steps; classifier-free guidance
//! for class-conditional models; batches of N samples; seeded or injected noise.

use crate::backend::Backend;
use crate::device::clock::now_ms;
use crate::error::{Error, Result};
use crate::model::UNet2DModel;
use crate::noise;
use crate::sampler::noising::guide_x0;
use crate::sampler::Scheduler;

/// Where the noise comes from.
#[derive(Clone, Debug)]
pub enum NoiseSource {
    /// Philox streams of this seed: stream 0 is x_T, stream i+1 is step i's noise. Element `j`
    /// of a stream does not depend on the batch size, so sample 0 of a batch equals a batch of one.
    Seeded(u64),
    /// x_T from `init`'s stream 0 and the step noise from `steps`' step streams: the same start
    /// with another noise path (the sampler lab's spread of a stochastic sampler). With
    /// `init == steps` it is `Seeded(init)`.
    Split { init: u64, steps: u64 },
    /// Exact tensors, as diffusers drew them: `init` (N×C×H×W) and, for stochastic samplers,
    /// `step_noise` (K×N×C×H×W, step i at index i).
    Injected {
        init: Vec<f32>,
        step_noise: Option<Vec<f32>>,
    },
}

/// Class conditioning: the label per sample, and classifier-free guidance
/// `ε = ε_uncond + g · (ε_cond − ε_uncond)` with the model's null class when `guidance != 1`.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub labels: Vec<i64>,
    pub guidance: f32,
    pub null_class: i64,
}

/// One reverse step, as the UI draws it.
#[derive(Clone, Debug)]
pub struct StepEvent {
    /// 0-based step index.
    pub index: usize,
    pub total: usize,
    /// The timestep the model was called at.
    pub timestep: f32,
    /// x_{t−1}, the sample after this step (model space, N×C×H×W).
    pub sample: Vec<f32>,
    /// x̂₀, the sampler's prediction of the clean sample.
    pub pred_original: Vec<f32>,
    /// Milliseconds this step took (model + sampler + readback).
    pub elapsed_ms: f64,
}

/// What the step callback tells the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// The result of a run: the final sample (model space, before any clamping) and whether it ran
/// to the end.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub sample: Vec<f32>,
    pub shape: [usize; 4],
    pub completed_steps: usize,
    pub cancelled: bool,
}

/// The initial noise x_T (before scaling by `init_noise_sigma`).
pub fn initial_noise(source: &NoiseSource, len: usize) -> Result<Vec<f32>> {
    match source {
        NoiseSource::Seeded(seed) | NoiseSource::Split { init: seed, .. } => {
            Ok(noise::randn(*seed, noise::INIT_STREAM, len))
        }
        NoiseSource::Injected { init, .. } => {
            if init.len() != len {
                return Err(Error::input(
                    "init",
                    format!("has {} values, the sample needs {len}", init.len()),
                ));
            }
            Ok(init.clone())
        }
    }
}

fn step_noise(source: &NoiseSource, step: usize, len: usize) -> Result<Vec<f32>> {
    match source {
        NoiseSource::Seeded(seed) | NoiseSource::Split { steps: seed, .. } => {
            Ok(noise::randn(*seed, noise::step_stream(step), len))
        }
        NoiseSource::Injected {
            step_noise: Some(all),
            ..
        } => all
            .get(step * len..(step + 1) * len)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| {
                Error::input(
                    "step_noise",
                    format!(
                        "has no noise for step {step} ({} values, {len} per step)",
                        all.len()
                    ),
                )
            }),
        NoiseSource::Injected {
            step_noise: None, ..
        } => Err(Error::input(
            "step_noise",
            "required: this sampler draws fresh noise at every step",
        )),
    }
}

/// Runs the reverse process for `shape` = [N, C, H, W]. `on_step` sees every step and may stop
/// the run; it is async so that a browser can yield to draw the frame.
pub async fn run<B, F, Fut>(
    b: &B,
    unet: &UNet2DModel<B>,
    sched: &mut dyn Scheduler,
    shape: [usize; 4],
    noise_source: &NoiseSource,
    cond: Option<&Conditioning>,
    on_step: F,
) -> Result<RunOutput>
where
    B: Backend,
    F: FnMut(StepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    run_with(
        b,
        unet,
        sched,
        shape,
        noise_source,
        cond,
        RunPlan::default(),
        on_step,
    )
    .await
}

/// A run that starts part-way through the schedule from a given sample (SDEdit).
#[derive(Clone, Debug)]
pub struct Start {
    /// The index in `sched.timesteps()` of the first step; the scheduler gets
    /// `set_begin_index(begin_index)`, as diffusers' img2img and inpainting pipelines do.
    pub begin_index: usize,
    /// x at `timesteps[begin_index]`, in the sampler's space (e.g. from `add_noise`), N×C×H×W.
    pub sample: Vec<f32>,
}

/// Where in the run a [`StepHook`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookAt {
    /// The step of this run (0-based; the event index and the `step_noise` index).
    pub step: usize,
    /// Its index in `sched.timesteps()` (`begin_index + step`).
    pub index: usize,
    /// 0 for the first pass over this step, u for its u-th redo.
    pub attempt: usize,
}

/// What a [`StepHook`] asks of the loop.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterStep {
    /// Go on to the next step.
    Next,
    /// Take this step again from the sample the hook left (which it moved back to the step's
    /// noise level); `step_noise` is the stochastic sampler's noise for the redo.
    Redo { step_noise: Option<Vec<f32>> },
}

/// Called after every sampler step with the new sample, which it may rewrite (inpainting puts
/// the forward-noised known region back) or send back for a redo (RePaint's resampling).
pub trait StepHook {
    fn after_step(
        &mut self,
        sched: &dyn Scheduler,
        at: HookAt,
        sample: &mut [f32],
    ) -> Result<AfterStep>;
}

/// Edits a prediction of x₀ in place (see [`RunPlan::x0_guide`]).
pub type X0Guide<'a> = dyn Fn(&mut [f32]) + 'a;

/// How a run differs from plain sampling. `RunPlan::default()` is plain sampling from noise.
#[derive(Default)]
pub struct RunPlan<'a> {
    /// Start part-way from a given sample instead of from `init_noise_sigma` × noise.
    pub start: Option<Start>,
    /// Channels appended to the (scaled) sample to form the model input, as a conditional
    /// super-resolution UNet expects: (channels C', data N×C'×H×W).
    pub concat: Option<(usize, &'a [f32])>,
    /// Called after every sampler step.
    pub hook: Option<&'a mut dyn StepHook>,
    /// Rewrites the model's x₀ prediction before every sampler step
    /// ([`crate::sampler::noising::guide_x0`]); super-resolution's consistency with its input.
    pub x0_guide: Option<&'a X0Guide<'a>>,
}

/// `[a (ca channels); b (cb channels)]` per sample along the channel axis.
fn concat_channels(a: &[f32], ca: usize, b: &[f32], cb: usize, n: usize, plane: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for i in 0..n {
        out.extend_from_slice(&a[i * ca * plane..(i + 1) * ca * plane]);
        out.extend_from_slice(&b[i * cb * plane..(i + 1) * cb * plane]);
    }
    out
}

/// [`run`] with a [`RunPlan`]: the loop image editing is built on (`crate::edit`). The sample
/// has `shape`; the model sees `shape` plus the plan's concatenated channels.
#[allow(clippy::too_many_arguments)]
pub async fn run_with<B, F, Fut>(
    b: &B,
    unet: &UNet2DModel<B>,
    sched: &mut dyn Scheduler,
    shape: [usize; 4],
    noise_source: &NoiseSource,
    cond: Option<&Conditioning>,
    mut plan: RunPlan<'_>,
    mut on_step: F,
) -> Result<RunOutput>
where
    B: Backend,
    F: FnMut(StepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    let [n, c, h, w] = shape;
    let len = n * c * h * w;
    if let Some(cd) = cond {
        if cd.labels.len() != n {
            return Err(Error::input(
                "class_labels",
                format!("{} labels for a batch of {n}", cd.labels.len()),
            ));
        }
    }
    let extra = plan.concat.map_or(0, |(ce, _)| ce);
    if let Some((ce, data)) = plan.concat {
        if data.len() != n * ce * h * w {
            return Err(Error::input(
                "conditioning",
                format!(
                    "has {} values, {n}×{ce}×{h}×{w} = {} expected",
                    data.len(),
                    n * ce * h * w
                ),
            ));
        }
    }
    let model_shape = [n, c + extra, h, w];
    unet.check_inputs(&model_shape, &[0.0], cond.map(|cd| cd.labels.as_slice()))?;
    let all_timesteps = sched.timesteps().to_vec();
    sched.set_num_images(n);
    let (begin, mut sample) = match plan.start.take() {
        Some(start) => {
            if start.sample.len() != len {
                return Err(Error::input(
                    "sample",
                    format!(
                        "the start sample has {} values, {shape:?} needs {len}",
                        start.sample.len()
                    ),
                ));
            }
            sched.set_begin_index(start.begin_index)?;
            (start.begin_index, start.sample)
        }
        None => {
            // Step i is timesteps[i]. (diffusers finds the first step's index from its timestep,
            // which picks the second of a repeated timestep, as Karras σ's on a cosine schedule
            // give, and then runs past the end; an explicit start index is what it means.)
            sched.set_begin_index(0)?;
            // diffusers: latents = randn(shape) * scheduler.init_noise_sigma
            let sigma = sched.init_noise_sigma();
            let x = initial_noise(noise_source, len)?
                .iter()
                .map(|v| v * sigma)
                .collect();
            (0, x)
        }
    };
    let timesteps = &all_timesteps[begin.min(all_timesteps.len())..];
    let needs_noise = sched.needs_step_noise();
    let guided = cond.filter(|cd| cd.guidance != 1.0);
    let mut completed = 0;
    for (i, &t) in timesteps.iter().enumerate() {
        let start = now_ms();
        let mut noise = if needs_noise {
            Some(step_noise(noise_source, i, len)?)
        } else {
            None
        };
        let mut attempt = 0;
        let pred_original = loop {
            let mut model_in = sched.scale_model_input(&sample, t)?;
            if let Some((ce, data)) = plan.concat {
                model_in = concat_channels(&model_in, c, data, ce, n, h * w);
            }
            let mut model_output = match (cond, guided) {
                (_, Some(cd)) => {
                    // Classifier-free guidance: one batch of [conditional; unconditional].
                    let mut doubled = model_in.clone();
                    doubled.extend_from_slice(&model_in);
                    let mut labels = cd.labels.clone();
                    labels.extend(std::iter::repeat_n(cd.null_class, n));
                    let x = b.upload(&[2 * n, c + extra, h, w], &doubled)?;
                    let y = unet.forward_host(b, &x, &[t], Some(&labels)).await?;
                    let (eps_c, eps_u) = y.split_at(len);
                    eps_u
                        .iter()
                        .zip(eps_c)
                        .map(|(&u, &cc)| u + cd.guidance * (cc - u))
                        .collect()
                }
                (Some(cd), None) => {
                    let x = b.upload(&model_shape, &model_in)?;
                    unet.forward_host(b, &x, &[t], Some(&cd.labels)).await?
                }
                (None, _) => {
                    let x = b.upload(&model_shape, &model_in)?;
                    unet.forward_host(b, &x, &[t], None).await?
                }
            };
            if model_output.iter().any(|v| !v.is_finite()) {
                // Numerical guard: say where, instead of drawing garbage. Re-run this step's
                // forward pass stage by stage (conditional, then the null class) to find it.
                let x = b.upload(&model_shape, &model_in)?;
                let mut label_sets = vec![cond.map(|cd| cd.labels.clone())];
                if let Some(cd) = guided {
                    label_sets.push(Some(vec![cd.null_class; n]));
                }
                let mut stage = None;
                for labels in &label_sets {
                    stage = unet
                        .first_non_finite_stage(b, &x, &[t], labels.as_deref())
                        .await?;
                    if stage.is_some() {
                        break;
                    }
                }
                return Err(Error::NonFiniteStep {
                    step: i + 1,
                    timestep: t,
                    location: match stage {
                        Some(s) => format!("the UNet stage `{s}`"),
                        None => "the UNet output".into(),
                    },
                });
            }
            if let Some(guide) = plan.x0_guide {
                let level = sched.noise_level(begin + i)?;
                guide_x0(
                    level,
                    sched.prediction_type(),
                    &sample,
                    &mut model_output,
                    guide,
                )?;
            }
            let out = sched.step(&model_output, t, &sample, noise.as_deref())?;
            if out.prev_sample.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFiniteStep {
                    step: i + 1,
                    timestep: t,
                    location: format!("the {} update (the model output was finite)", sched.kind()),
                });
            }
            sample = out.prev_sample;
            let Some(hook) = plan.hook.as_deref_mut() else {
                break out.pred_original_sample;
            };
            let at = HookAt {
                step: i,
                index: begin + i,
                attempt,
            };
            match hook.after_step(&*sched, at, &mut sample)? {
                AfterStep::Next => break out.pred_original_sample,
                AfterStep::Redo { step_noise } => {
                    sched.set_begin_index(begin + i)?;
                    noise = step_noise;
                    attempt += 1;
                }
            }
        };
        completed = i + 1;
        let event = StepEvent {
            index: i,
            total: timesteps.len(),
            timestep: t,
            sample: sample.clone(),
            pred_original,
            elapsed_ms: now_ms() - start,
        };
        if on_step(event).await == Control::Stop && i + 1 < timesteps.len() {
            return Ok(RunOutput {
                sample,
                shape,
                completed_steps: completed,
                cancelled: true,
            });
        }
    }
    Ok(RunOutput {
        sample,
        shape,
        completed_steps: completed,
        cancelled: false,
    })
}
