//! Image editing on the reverse loop, for pixel-space models: SDEdit (image to image), RePaint
//! inpainting and conditional super-resolution, each a [`RunPlan`] for
//! [`pipeline::run_with`](crate::pipeline::run_with).
//!
//! Everything here works in the UNet's sample space ("model space"): for a pixel model that is
//! the image in [-1, 1], N×C×H×W. A latent model would encode the image (and downsample the
//! mask) before these functions and decode their output after; that seam is the only place it
//! would touch, and it is not implemented yet.
//!
//! Noise is reproducible by seed: SDEdit's ε is the run's initial noise ([`NoiseSource`], stream
//! 0 when seeded) and its steps use the step streams, as sampling does; inpainting's extra noise
//! (the known region's ε, RePaint's jumps, redone steps) comes from the tagged streams of
//! [`crate::noise`] under the inpainting seed.

pub mod bicubic;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{UNet2DConfig, UNet2DModel};
use crate::noise;
use crate::pipeline::{
    initial_noise, run_with, AfterStep, Conditioning, Control, HookAt, NoiseSource, RunOutput,
    RunPlan, Start, StepEvent, StepHook,
};
use crate::sampler::noising::{add_noise, renoise};
use crate::sampler::{NoiseLevel, Scheduler};

pub use bicubic::resize_bicubic;

/// The first step of an SDEdit run, diffusers' `StableDiffusionImg2ImgPipeline.get_timesteps`:
/// `init_timestep = min(int(steps · strength), steps)`, `t_start = max(steps − init_timestep, 0)`.
/// Strength 1 runs every step from (nearly) pure noise; strength 0 runs none.
pub fn sdedit_begin(steps: usize, strength: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::input(
            "strength",
            format!("{strength} is outside 0..=1"),
        ));
    }
    let init_timestep = ((steps as f64 * strength) as usize).min(steps);
    Ok(steps.saturating_sub(init_timestep))
}

/// A conditional super-resolution UNet (diffusers' `LDMSuperResolutionPipeline` layout): its
/// input is the sample concatenated with the upsampled low-resolution image, so
/// `in_channels == 2 × out_channels`.
pub fn is_super_resolution(cfg: &UNet2DConfig) -> bool {
    cfg.in_channels == 2 * cfg.out_channels
}

/// The model's sample size, or an error naming what is missing.
pub fn sample_hw(cfg: &UNet2DConfig) -> Result<(usize, usize)> {
    cfg.sample_size.map(|s| s.hw()).ok_or_else(|| {
        Error::config(
            "sample_size",
            "the UNet config has no sample_size, so the image size is unknown",
        )
    })
}

/// The integer upscaling factor from a `low_h`×`low_w` input to the model's sample size.
pub fn sr_factor(cfg: &UNet2DConfig, low_h: usize, low_w: usize) -> Result<usize> {
    let (h, w) = sample_hw(cfg)?;
    let bad = || {
        Error::input(
            "image",
            format!(
                "a {low_h}×{low_w} input does not scale to the model's sample_size {h}×{w} by \
                 an integer factor ≥ 1"
            ),
        )
    };
    if low_h == 0 || low_w == 0 || !h.is_multiple_of(low_h) || !w.is_multiple_of(low_w) {
        return Err(bad());
    }
    let (fh, fw) = (h / low_h, w / low_w);
    if fh != fw || fh == 0 {
        return Err(bad());
    }
    Ok(fh)
}

/// Editing (SDEdit, inpainting) runs the sample at the model's own channel count.
fn check_editable(cfg: &UNet2DConfig, shape: [usize; 4], image_len: usize) -> Result<()> {
    if cfg.in_channels != cfg.out_channels {
        return Err(Error::input(
            "model",
            format!(
                "in_channels {} ≠ out_channels {}: {}; only upscale runs it",
                cfg.in_channels,
                cfg.out_channels,
                if is_super_resolution(cfg) {
                    "a super-resolution UNet"
                } else {
                    "not an image-to-image UNet"
                }
            ),
        ));
    }
    if shape[1] != cfg.in_channels {
        return Err(Error::input(
            "image",
            format!(
                "has {} channels, the model's in_channels is {}",
                shape[1], cfg.in_channels
            ),
        ));
    }
    let len: usize = shape.iter().product();
    if image_len != len {
        return Err(Error::input(
            "image",
            format!("has {image_len} values, {shape:?} needs {len}"),
        ));
    }
    Ok(())
}

/// SDEdit (Meng et al. 2022) with `StableDiffusionImg2ImgPipeline` semantics: the scheduler
/// (with `set_timesteps` called) runs only `timesteps[t_start..]` (see [`sdedit_begin`]) from
/// `add_noise(image, ε, timesteps[t_start])`, where ε is the run's initial noise. Strength 0
/// returns `image` unchanged without calling the model.
#[allow(clippy::too_many_arguments)]
pub async fn img2img<B, F, Fut>(
    b: &B,
    unet: &UNet2DModel<B>,
    sched: &mut dyn Scheduler,
    image: &[f32],
    shape: [usize; 4],
    strength: f64,
    noise_source: &NoiseSource,
    cond: Option<&Conditioning>,
    on_step: F,
) -> Result<RunOutput>
where
    B: Backend,
    F: FnMut(StepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    check_editable(&unet.config, shape, image.len())?;
    // diffusers counts steps, not timesteps: Heun lists 2n − 1 timesteps for n steps
    // (`scheduler.order` = 2), and a run from step k starts at index k·order.
    let order = sched.order().max(1);
    let steps = sched.timesteps().len().div_ceil(order);
    let begin = sdedit_begin(steps, strength)?;
    if begin >= steps {
        return Ok(RunOutput {
            sample: image.to_vec(),
            shape,
            completed_steps: 0,
            cancelled: false,
        });
    }
    let begin = begin * order;
    let eps = initial_noise(noise_source, image.len())?;
    let sample = sched.add_noise(image, &eps, begin)?;
    let plan = RunPlan {
        start: Some(Start {
            begin_index: begin,
            sample,
        }),
        ..RunPlan::default()
    };
    run_with(b, unet, sched, shape, noise_source, cond, plan, on_step).await
}

/// A binary inpainting mask, one flag per sample element: `true` = regenerate.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask(pub Vec<bool>);

impl Mask {
    /// From values (1 = regenerate, 0 = keep, thresholded at 0.5) of shape [N or 1, 1 or C, H, W],
    /// broadcast to the sample's N×C×H×W.
    pub fn from_values(values: &[f32], mask_shape: &[usize], sample: [usize; 4]) -> Result<Self> {
        let [n, c, h, w] = sample;
        let &[mn, mc, mh, mw] = mask_shape else {
            return Err(Error::input(
                "mask",
                format!("expected shape [N,1,H,W], got {mask_shape:?}"),
            ));
        };
        if (mh, mw) != (h, w) {
            return Err(Error::input(
                "mask",
                format!("is {mh}×{mw}, the image is {h}×{w}"),
            ));
        }
        if !(mn == n || mn == 1) || !(mc == c || mc == 1) {
            return Err(Error::input(
                "mask",
                format!("shape {mask_shape:?} does not broadcast to the image's {sample:?}"),
            ));
        }
        if values.len() != mn * mc * mh * mw {
            return Err(Error::input(
                "mask",
                format!("has {} values for shape {mask_shape:?}", values.len()),
            ));
        }
        let plane = h * w;
        let mut out = Vec::with_capacity(n * c * plane);
        for i in 0..n {
            for ch in 0..c {
                let base = ((i % mn) * mc + ch % mc) * plane;
                out.extend(values[base..base + plane].iter().map(|&v| v >= 0.5));
            }
        }
        Ok(Self(out))
    }
}

/// RePaint's known-region replacement and resampling as a [`StepHook`].
struct RePaint<'a> {
    original: &'a [f32],
    mask: &'a Mask,
    resample: usize,
    seed: u64,
}

impl RePaint<'_> {
    /// x = m·x + (1 − m)·(a·x₀ + s·ε) at `level`; exactly x₀ in the known region at the end.
    fn blend(&self, sample: &mut [f32], level: NoiseLevel, stream: u64) -> Result<()> {
        if level == NoiseLevel::CLEAN {
            for ((x, &x0), &m) in sample.iter_mut().zip(self.original).zip(&self.mask.0) {
                if !m {
                    *x = x0;
                }
            }
            return Ok(());
        }
        let eps = noise::randn(self.seed, stream, sample.len());
        let known = add_noise(level, self.original, &eps)?;
        for ((x, k), &m) in sample.iter_mut().zip(known).zip(&self.mask.0) {
            if !m {
                *x = k;
            }
        }
        Ok(())
    }
}

impl StepHook for RePaint<'_> {
    fn after_step(
        &mut self,
        sched: &dyn Scheduler,
        at: HookAt,
        sample: &mut [f32],
    ) -> Result<AfterStep> {
        // The sample is now at the level of the next model call (or clean after the last step).
        let level = sched.noise_level(at.index + 1)?;
        self.blend(
            sample,
            level,
            noise::known_region_stream(at.step, at.attempt),
        )?;
        if at.attempt + 1 >= self.resample {
            return Ok(AfterStep::Next);
        }
        // RePaint's jump: back to this step's level with q(x_t | x_{t_prev}), then redo it.
        let redo = at.attempt + 1;
        let z = noise::randn(
            self.seed,
            noise::resample_jump_stream(at.step, redo),
            sample.len(),
        );
        let back = renoise(sample, level, sched.noise_level(at.index)?, &z)?;
        sample.copy_from_slice(&back);
        let step_noise = sched.needs_step_noise().then(|| {
            noise::randn(
                self.seed,
                noise::resample_step_stream(at.step, redo),
                sample.len(),
            )
        });
        Ok(AfterStep::Redo { step_noise })
    }
}

/// The settings of an inpainting run.
#[derive(Clone, Debug)]
pub struct Inpaint<'a> {
    /// `true` = regenerate (white in a mask image), `false` = keep.
    pub mask: &'a Mask,
    /// RePaint's resampling count r ≥ 1: each step is taken r times, jumping back with
    /// q(x_t | x_{t_prev}) between (1 = no resampling). A redo restarts multistep history
    /// (`set_begin_index`), so with DPM-Solver++ the redone passes are first order.
    pub resample: usize,
    /// Seed of the known region's ε, the jumps and the redone steps' noise.
    pub seed: u64,
}

/// Inpainting, RePaint-style (Lugmayr et al. 2022): sampling from noise over the whole schedule;
/// after every step to t_prev the known region (mask `false`) is replaced by the original noised
/// to t_prev with fresh noise, so the model only fills the masked region, and the final known
/// region equals `image` exactly.
#[allow(clippy::too_many_arguments)]
pub async fn inpaint<B, F, Fut>(
    b: &B,
    unet: &UNet2DModel<B>,
    sched: &mut dyn Scheduler,
    image: &[f32],
    shape: [usize; 4],
    settings: &Inpaint<'_>,
    noise_source: &NoiseSource,
    cond: Option<&Conditioning>,
    on_step: F,
) -> Result<RunOutput>
where
    B: Backend,
    F: FnMut(StepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    check_editable(&unet.config, shape, image.len())?;
    if settings.mask.0.len() != image.len() {
        return Err(Error::input(
            "mask",
            format!(
                "has {} values, the image {}",
                settings.mask.0.len(),
                image.len()
            ),
        ));
    }
    if settings.resample == 0 {
        return Err(Error::input("resample", "must be at least 1"));
    }
    if settings.resample > 1 && !sched.kind().supports_resampling() {
        return Err(Error::input(
            "resample",
            format!(
                "{} cannot redo a step (its state spans several model calls); use resample 1",
                sched.kind()
            ),
        ));
    }
    let mut hook = RePaint {
        original: image,
        mask: settings.mask,
        resample: settings.resample,
        seed: settings.seed,
    };
    let plan = RunPlan {
        hook: Some(&mut hook),
        ..RunPlan::default()
    };
    run_with(b, unet, sched, shape, noise_source, cond, plan, on_step).await
}

/// The low-resolution image (N×C×h×w, [-1, 1]) upsampled bicubically to the model's sample size:
/// the super-resolution model's conditioning, and the baseline it is compared with.
pub fn upscale_baseline(
    cfg: &UNet2DConfig,
    lowres: &[f32],
    low_shape: [usize; 4],
) -> Result<(Vec<f32>, [usize; 4])> {
    let [n, c, lh, lw] = low_shape;
    if lowres.len() != n * c * lh * lw {
        return Err(Error::input(
            "image",
            format!(
                "has {} values, {low_shape:?} needs {}",
                lowres.len(),
                n * c * lh * lw
            ),
        ));
    }
    let factor = sr_factor(cfg, lh, lw)?;
    let (h, w) = (lh * factor, lw * factor);
    Ok((resize_bicubic(lowres, low_shape, h, w), [n, c, h, w]))
}

/// Makes `x` (N×C×(f·h)×(f·w)) agree with `lowres` (N×C×h×w) under f×f box averaging, the
/// degradation the super-resolution model was trained to invert: each block gets the
/// difference between its low-resolution pixel and its mean. This is the orthogonal projection
/// onto the images that average down to `lowres` (A⁺y + (I − A⁺A)x for A the box average,
/// whose pseudo-inverse A⁺ is nearest-neighbour upsampling; DDNM, Wang et al. 2023).
pub fn box_consistency(x: &mut [f32], lowres: &[f32], low_shape: [usize; 4], factor: usize) {
    let [n, c, lh, lw] = low_shape;
    let (h, w) = (lh * factor, lw * factor);
    let inv = 1.0 / (factor * factor) as f32;
    for p in 0..n * c {
        let (img, low) = (&mut x[p * h * w..(p + 1) * h * w], &lowres[p * lh * lw..]);
        for i in 0..lh {
            for j in 0..lw {
                let rows = i * factor..(i + 1) * factor;
                let cols = j * factor..(j + 1) * factor;
                let sum: f32 = rows
                    .clone()
                    .flat_map(|y| img[y * w + cols.start..y * w + cols.end].iter())
                    .sum();
                let delta = low[i * lw + j] - sum * inv;
                for y in rows {
                    for v in &mut img[y * w + cols.start..y * w + cols.end] {
                        *v += delta;
                    }
                }
            }
        }
    }
}

/// Conditional super-resolution: a UNet with `in_channels = 2 × out_channels` denoises an
/// `out_channels` sample whose model input at every step is `[scaled x_t, bicubic(lowres)]`
/// along the channels (diffusers' `LDMSuperResolutionPipeline`, except that only x_t goes
/// through `scale_model_input`, so σ-space samplers see the conditioning unscaled).
///
/// With `consistency`, the model's x₀ prediction is made to average down to `lowres`
/// ([`box_consistency`]) before every step: the model supplies the detail, the input fixes the
/// colours. Without it, this small model drifts in overall brightness (training/README.md).
#[allow(clippy::too_many_arguments)]
pub async fn upscale<B, F, Fut>(
    b: &B,
    unet: &UNet2DModel<B>,
    sched: &mut dyn Scheduler,
    lowres: &[f32],
    low_shape: [usize; 4],
    consistency: bool,
    noise_source: &NoiseSource,
    cond: Option<&Conditioning>,
    on_step: F,
) -> Result<RunOutput>
where
    B: Backend,
    F: FnMut(StepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    let cfg = &unet.config;
    if !is_super_resolution(cfg) {
        return Err(Error::input(
            "model",
            format!(
                "in_channels {} is not 2 × out_channels {}: not a super-resolution UNet",
                cfg.in_channels, cfg.out_channels
            ),
        ));
    }
    if low_shape[1] != cfg.out_channels {
        return Err(Error::input(
            "image",
            format!(
                "has {} channels, the model's out_channels is {}",
                low_shape[1], cfg.out_channels
            ),
        ));
    }
    let (up, shape) = upscale_baseline(cfg, lowres, low_shape)?;
    let factor = shape[2] / low_shape[2];
    let project = |x0: &mut [f32]| box_consistency(x0, lowres, low_shape, factor);
    let plan = RunPlan {
        concat: Some((shape[1], &up)),
        x0_guide: consistency.then_some(&project as &crate::pipeline::X0Guide),
        ..RunPlan::default()
    };
    run_with(b, unet, sched, shape, noise_source, cond, plan, on_step).await
}

/// An 8-bit value to model space, the inverse of [`crate::image::to_u8`]: v/127.5 − 1.
pub fn from_u8(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// Luma of an 8-bit RGB pixel (Rec. 709 weights, as the `image` crate's grey conversion),
/// exact for grey pixels.
fn luma(r: u8, g: u8, b: u8) -> f32 {
    if r == g && g == b {
        return f32::from(r);
    }
    0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b)
}

/// RGBA pixels (row-major, `w`×`h`) to a 1×C×H×W model-space image: RGB for 3 channels, luma
/// for 1.
pub fn rgba_to_image(rgba: &[u8], w: usize, h: usize, channels: usize) -> Result<Vec<f32>> {
    if rgba.len() != w * h * 4 {
        return Err(Error::input(
            "image",
            format!("{} bytes for {w}×{h} RGBA pixels", rgba.len()),
        ));
    }
    let px = rgba.chunks_exact(4);
    match channels {
        3 => {
            let mut out = vec![0.0; 3 * w * h];
            for (p, v) in px.enumerate() {
                for ch in 0..3 {
                    out[ch * w * h + p] = from_u8(v[ch]);
                }
            }
            Ok(out)
        }
        1 => Ok(px.map(|v| luma(v[0], v[1], v[2]) / 127.5 - 1.0).collect()),
        _ => Err(Error::input(
            "image",
            format!(
                "an 8-bit image has 1 (grey) or 3 (RGB) channels, the model has {channels}; \
                 give a .safetensors `image` instead"
            ),
        )),
    }
}

/// A mask image (RGBA, `w`×`h`) to values in [0, 1] (luma / 255; white = regenerate), shape
/// 1×1×H×W, for [`Mask::from_values`].
pub fn rgba_to_mask_values(rgba: &[u8], w: usize, h: usize) -> Result<Vec<f32>> {
    if rgba.len() != w * h * 4 {
        return Err(Error::input(
            "mask",
            format!("{} bytes for {w}×{h} RGBA pixels", rgba.len()),
        ));
    }
    Ok(rgba
        .chunks_exact(4)
        .map(|v| luma(v[0], v[1], v[2]) / 255.0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdedit_begin_follows_diffusers_get_timesteps() {
        assert_eq!(sdedit_begin(10, 0.0).unwrap(), 10);
        assert_eq!(sdedit_begin(10, 1.0).unwrap(), 0);
        assert_eq!(sdedit_begin(10, 0.6).unwrap(), 4);
        assert_eq!(sdedit_begin(10, 0.55).unwrap(), 5, "int() truncates");
        // Python: int(100 * 0.29) == 28
        assert_eq!(sdedit_begin(100, 0.29).unwrap(), 72);
        assert_eq!(sdedit_begin(7, 0.05).unwrap(), 7);
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = sdedit_begin(10, bad).unwrap_err().to_string();
            assert!(e.contains("strength"), "{e}");
        }
    }

    #[test]
    fn masks_broadcast_and_threshold() {
        let m = Mask::from_values(&[0.0, 0.49, 0.5, 1.0], &[1, 1, 2, 2], [2, 3, 2, 2]).unwrap();
        assert_eq!(m.0.len(), 24);
        assert_eq!(&m.0[..4], &[false, false, true, true]);
        assert_eq!(&m.0[20..], &[false, false, true, true]);
        let e = Mask::from_values(&[0.0; 9], &[1, 1, 3, 3], [1, 3, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3×3") && e.contains("2×2"), "{e}");
        let e = Mask::from_values(&[0.0; 8], &[2, 1, 2, 2], [3, 1, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("broadcast"), "{e}");
    }

    #[test]
    fn pixels_round_trip_through_model_space() {
        for v in 0..=255u8 {
            assert_eq!(crate::image::to_u8(from_u8(v)), v);
        }
        let rgba = [10, 20, 30, 255, 7, 7, 7, 0];
        let rgb = rgba_to_image(&rgba, 2, 1, 3).unwrap();
        assert_eq!(
            rgb,
            vec![
                from_u8(10),
                from_u8(7),
                from_u8(20),
                from_u8(7),
                from_u8(30),
                from_u8(7)
            ]
        );
        let grey = rgba_to_image(&rgba, 2, 1, 1).unwrap();
        assert_eq!(grey[1], from_u8(7));
        assert!(rgba_to_image(&rgba, 2, 1, 4).is_err());
        assert_eq!(
            rgba_to_mask_values(&[255, 255, 255, 255], 1, 1).unwrap(),
            vec![1.0]
        );
    }
}
