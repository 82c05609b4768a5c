//! 2D toys ("Paths"): data distributions, their exact or learned ε-models, and particles sampled
//! with any sampler, every step's x_t and x̂₀ recorded per particle. Pure Rust on the CPU, no GPU.
//!
//! A particle is one 2D point, so N particles are a flat N×2 slice, which the samplers take as
//! they take N×C×H×W images (their updates are elementwise). The models are called exactly as the
//! image pipeline calls the UNet (`pipeline.rs`): with `scale_model_input`'s output and the
//! sampler's timestep `t`, a float. For σ-space samplers (Euler ancestral) the sample itself lives
//! on the variance-exploding scale x₀ + σε; the recorded x_t is the model's input, which is the
//! variance-preserving point √ᾱ x₀ + √(1−ᾱ) ε for every sampler, so paths of different samplers
//! share one picture.
//!
//! - [`distribution`]: Gaussian mixture (exact noised density and ε), two moons, swiss roll;
//! - [`mlp`]: the small trained ε-model (`assets/toy2d/<name>/`, `training/toy2d.py`);
//! - [`field`]: ε̂ or x̂₀ − x on a grid at one t, for the arrows.

pub mod distribution;
pub mod field;
pub mod mlp;

use crate::noise;
use crate::sampler::{SamplerError, Scheduler, SchedulerConfig};

pub use distribution::{Component, DataConfig, GaussianMixture};
pub use field::{vector_field, Field, Grid};
pub use mlp::{Mlp, MlpConfig, Toy2dConfig};

/// A model of ε on 2D points.
pub trait EpsModel {
    /// ε̂ for N points `x` (flat N×2, the model's variance-preserving input) at timestep `t`.
    fn eps(&self, x: &[f32], t: f32) -> Vec<f32>;
}

impl EpsModel for Mlp {
    fn eps(&self, x: &[f32], t: f32) -> Vec<f32> {
        self.forward(x, &[t])
    }
}

/// The perfect ε-model of a Gaussian mixture under a training schedule ᾱ.
#[derive(Debug, Clone)]
pub struct ExactEps {
    pub mixture: GaussianMixture,
    /// ᾱ_t for t = 0..T (the sampler's `alphas_cumprod`).
    pub alphas_cumprod: Vec<f32>,
}

impl EpsModel for ExactEps {
    fn eps(&self, x: &[f32], t: f32) -> Vec<f32> {
        self.mixture.eps(x, alpha_bar_at(&self.alphas_cumprod, t))
    }
}

/// ᾱ at a timestep that may be fractional. Whole t index the table; between two, σ = √((1−ᾱ)/ᾱ)
/// is interpolated linearly in t and ᾱ = 1/(1+σ²), which is how the σ-space samplers place a
/// fractional timestep (diffusers' `np.interp(timesteps, arange, sigmas)`), so the model is asked
/// about the noise level the sampler means. t is clamped to [0, T−1].
pub fn alpha_bar_at(alphas_cumprod: &[f32], t: f32) -> f64 {
    let last = alphas_cumprod.len().saturating_sub(1);
    let t = f64::from(t).clamp(0.0, last as f64);
    let (lo, frac) = (t.floor() as usize, t.fract());
    let at = |i: usize| f64::from(alphas_cumprod[i.min(last)]);
    if frac == 0.0 {
        return at(lo);
    }
    let sigma = |a: f64| ((1.0 - a) / a).sqrt();
    let s = sigma(at(lo)) * (1.0 - frac) + sigma(at(lo + 1)) * frac;
    1.0 / (1.0 + s * s)
}

/// The scheduler config of every toy: diffusers' `DDPMScheduler` defaults (linear β from 1e-4 to
/// 0.02 over 1000 steps) with `clip_sample` off, since the data leave [−1, 1]. The trained models
/// ship the same as `scheduler_config.json`.
pub fn default_scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        class_name: Some("DDPMScheduler".into()),
        num_train_timesteps: Some(1000),
        beta_start: Some(0.0001),
        beta_end: Some(0.02),
        beta_schedule: Some("linear".into()),
        clip_sample: Some(false),
        prediction_type: Some("epsilon".into()),
        ..SchedulerConfig::default()
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paths {
    /// N, the number of particles.
    pub particles: usize,
    /// The timesteps the model was called at, in order.
    pub timesteps: Vec<f32>,
    /// ᾱ at each of them (for the vector field of that step).
    pub alpha_bars: Vec<f32>,
    /// x_t on the variance-preserving scale before each step, then the final sample:
    /// `timesteps.len() + 1` frames of N×2 once the run is done.
    pub xs: Vec<Vec<f32>>,
    /// x̂₀ of each step (N×2 each).
    pub x0s: Vec<Vec<f32>>,
}

/// A run in progress, one [`Sampling::step`] at a time (the page yields to the browser between
/// steps).
pub struct Sampling {
    sched: Box<dyn Scheduler>,
    sample: Vec<f32>,
    seed: u64,
    pub paths: Paths,
}

impl Sampling {
    /// N particles from `seed`'s initial noise (the pipeline's `INIT_STREAM` × `init_noise_sigma`),
    /// ready to take `steps` steps; the same seed gives every sampler the same starting points.
    pub fn new(
        mut sched: Box<dyn Scheduler>,
        steps: usize,
        particles: usize,
        seed: u64,
    ) -> Result<Self, SamplerError> {
        sched.set_timesteps(steps)?;
        sched.set_num_images(particles);
        sched.set_begin_index(0)?;
        let sigma = sched.init_noise_sigma();
        let sample: Vec<f32> = noise::randn(seed, noise::INIT_STREAM, 2 * particles)
            .into_iter()
            .map(|v| v * sigma)
            .collect();
        let timesteps = sched.timesteps().to_vec();
        let alphas = sched.alphas_cumprod();
        let alpha_bars = timesteps
            .iter()
            .map(|&t| alpha_bar_at(alphas, t) as f32)
            .collect();
        let first = match timesteps.first() {
            Some(&t) => sched.scale_model_input(&sample, t)?,
            None => sample.clone(),
        };
        Ok(Self {
            sched,
            sample,
            seed,
            paths: Paths {
                particles,
                timesteps,
                alpha_bars,
                xs: vec![first],
                x0s: Vec::new(),
            },
        })
    }

    /// The number of steps (model calls) of the run.
    pub fn total(&self) -> usize {
        self.paths.timesteps.len()
    }

    /// Steps taken so far.
    pub fn done_steps(&self) -> usize {
        self.paths.x0s.len()
    }

    pub fn is_done(&self) -> bool {
        self.done_steps() >= self.total()
    }

    /// One step: the model at (`scale_model_input`(x), t), then the sampler's update with this
    /// step's seeded noise (`noise::step_stream`) if it draws any.
    pub fn step(&mut self, model: &dyn EpsModel) -> Result<(), SamplerError> {
        let i = self.done_steps();
        let Some(&t) = self.paths.timesteps.get(i) else {
            return Ok(());
        };
        let len = self.sample.len();
        let model_in = self.paths.xs[i].clone();
        let eps = model.eps(&model_in, t);
        let noise = self
            .sched
            .needs_step_noise()
            .then(|| noise::randn(self.seed, noise::step_stream(i), len));
        let out = self.sched.step(&eps, t, &self.sample, noise.as_deref())?;
        self.sample = out.prev_sample;
        self.paths.x0s.push(out.pred_original_sample);
        let next = match self.paths.timesteps.get(i + 1) {
            Some(&t) => self.sched.scale_model_input(&self.sample, t)?,
            None => self.sample.clone(),
        };
        self.paths.xs.push(next);
        Ok(())
    }

    /// The sample as the sampler holds it (σ-space samplers: x₀ + σε).
    pub fn sample(&self) -> &[f32] {
        &self.sample
    }

    pub fn into_paths(self) -> Paths {
        self.paths
    }
}

/// N particles from `seed`, sampled with `sched` in `steps` steps under `model`; every step
/// recorded.
pub fn run(
    model: &dyn EpsModel,
    sched: Box<dyn Scheduler>,
    steps: usize,
    particles: usize,
    seed: u64,
) -> Result<Paths, SamplerError> {
    let mut s = Sampling::new(sched, steps, particles, seed)?;
    while !s.is_done() {
        s.step(model)?;
    }
    Ok(s.into_paths())
}

/// The mean over the points of `a` of the distance to the nearest point of `b` (both flat N×2).
pub fn mean_nearest_distance(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() / 2;
    if n == 0 || b.len() < 2 {
        return f64::NAN;
    }
    let total: f64 = a
        .chunks_exact(2)
        .map(|p| {
            b.chunks_exact(2)
                .map(|q| {
                    let (dx, dy) = (p[0] - q[0], p[1] - q[1]);
                    dx * dx + dy * dy
                })
                .fold(f32::INFINITY, f32::min)
                .sqrt() as f64
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_bar_at_whole_and_fractional_timesteps() {
        let a = [0.9f32, 0.5, 0.1];
        assert_eq!(alpha_bar_at(&a, 1.0), 0.5);
        assert_eq!(alpha_bar_at(&a, 7.0), f64::from(0.1f32));
        let mid = alpha_bar_at(&a, 0.5);
        assert!(mid < 0.9 && mid > 0.5, "{mid}");
        // σ interpolates linearly: σ(0.5) is the mean of σ(0) and σ(1).
        let s = |a: f64| ((1.0 - a) / a).sqrt();
        let want = 0.5 * (s(f64::from(0.9f32)) + s(0.5));
        assert!((s(mid) - want).abs() < 1e-12);
    }
}
