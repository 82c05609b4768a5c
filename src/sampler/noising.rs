//! The noising (forward) process in each sampler's own sample space: diffusers' `add_noise`, and
//! RePaint's jump q(x_t | x_s) from a less noisy level s back to a noisier t.
//!
//! Every sampler here has marginals of the form x_t = a_t·x₀ + s_t·ε: variance preserving
//! (DDPM, DDIM, DPM-Solver: a = √ᾱ_t, s = √(1−ᾱ_t)) or variance exploding (Euler ancestral:
//! a = 1, s = σ_t). [`NoiseLevel`] is that pair, so image editing is written once for all four.

use super::{PredictionType, SamplerError};

/// x_t = `signal`·x₀ + `noise`·ε, ε ~ N(0, I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    pub signal: f32,
    pub noise: f32,
}

impl NoiseLevel {
    /// The clean sample (the end of every run).
    pub const CLEAN: NoiseLevel = NoiseLevel {
        signal: 1.0,
        noise: 0.0,
    };

    /// A variance-preserving level from ᾱ_t, computed as diffusers' `add_noise` does in f32:
    /// `ᾱ ** 0.5` and `(1 − ᾱ) ** 0.5`.
    pub fn from_alpha_cumprod(alpha_cumprod: f32) -> Self {
        Self {
            signal: alpha_cumprod.sqrt(),
            noise: (1.0 - alpha_cumprod).sqrt(),
        }
    }

    /// The level at step `index` of a run over the VE table `sigmas` (one entry per step, then
    /// the final σ) for a sampler whose samples are variance preserving (the DPM-Solver family):
    /// α_t = 1/√(σ²+1), σ_t = σ·α_t; the end of the run (`index == num_steps`) is clean, since
    /// the last step returns x̂₀ whatever the final σ says.
    pub(crate) fn vp_at(
        scheduler: &'static str,
        sigmas: &[f32],
        num_steps: usize,
        index: usize,
    ) -> Result<Self, SamplerError> {
        check_index(scheduler, index, num_steps)?;
        if index == num_steps {
            return Ok(Self::CLEAN);
        }
        let (signal, noise) = super::sigmas::alpha_sigma(sigmas[index]);
        Ok(Self { signal, noise })
    }

    /// The level at step `index` of a run over `sigmas` for a σ-space sampler (Euler-a, Heun,
    /// LMS), whose samples are x₀ + σ·ε.
    pub(crate) fn ve_at(
        scheduler: &'static str,
        sigmas: &[f32],
        num_steps: usize,
        index: usize,
    ) -> Result<Self, SamplerError> {
        check_index(scheduler, index, num_steps)?;
        Ok(Self {
            signal: 1.0,
            noise: sigmas[index],
        })
    }
}

/// `signal · original + noise · ε` (diffusers' `add_noise`, elementwise in f32).
pub fn add_noise(
    level: NoiseLevel,
    original: &[f32],
    noise: &[f32],
) -> Result<Vec<f32>, SamplerError> {
    if noise.len() != original.len() {
        return Err(SamplerError::LengthMismatch {
            what: "noise",
            len: noise.len(),
            expected: original.len(),
        });
    }
    Ok(original
        .iter()
        .zip(noise)
        .map(|(&x, &e)| level.signal * x + level.noise * e)
        .collect())
}

/// The forward transition from level `from` (less noisy) to `to` (noisier), sampled with `z`:
/// x_to = (a_to/a_from)·x + √(s_to² − (a_to/a_from)²·s_from²)·z. For VP levels this is
/// q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s)·x_s, (1 − ᾱ_t/ᾱ_s)·I) (Lugmayr et al. 2022, RePaint, eq. 8's
/// jump); for VE levels x_s + √(σ_t² − σ_s²)·z. Composing it with the marginal at `from` gives
/// the marginal at `to`.
pub fn renoise(
    sample: &[f32],
    from: NoiseLevel,
    to: NoiseLevel,
    z: &[f32],
) -> Result<Vec<f32>, SamplerError> {
    if z.len() != sample.len() {
        return Err(SamplerError::LengthMismatch {
            what: "noise",
            len: z.len(),
            expected: sample.len(),
        });
    }
    let ratio = to.signal / from.signal;
    let std = (to.noise * to.noise - ratio * ratio * from.noise * from.noise)
        .max(0.0)
        .sqrt();
    Ok(sample
        .iter()
        .zip(z)
        .map(|(&x, &e)| ratio * x + std * e)
        .collect())
}

/// Rewrites a model output so that the x₀ it implies becomes `guide(x₀)`, leaving x_t alone:
/// the model's prediction is turned into x₀ at `level` (x = a·x₀ + s·ε, in the sampler's own
/// space), `guide` edits it, and the output is turned back. Any sampler then steps from the
/// guided prediction, as DDNM (Wang et al. 2023) does for a known degradation.
///
/// ε: x₀ = (x − s·ε)/a, ε′ = (x − a·x₀′)/s. x₀ (`sample`): the output is x₀. v: on the
/// normalised x̃ = x/k, k = √(a² + s²) (k = 1 for VP levels; σ-space samplers scale the model
/// input by 1/k), x₀ = ã·x̃ − s̃·v and v′ = (ã·x̃ − x₀′)/s̃ with ã = a/k, s̃ = s/k.
pub fn guide_x0(
    level: NoiseLevel,
    prediction: PredictionType,
    sample: &[f32],
    model_output: &mut [f32],
    guide: &dyn Fn(&mut [f32]),
) -> Result<(), SamplerError> {
    super::check_lengths(model_output, sample, None)?;
    let (a, s) = (level.signal, level.noise);
    match prediction {
        PredictionType::Sample => guide(model_output),
        PredictionType::Epsilon => {
            let mut x0: Vec<f32> = sample
                .iter()
                .zip(model_output.iter())
                .map(|(&x, &e)| (x - s * e) / a)
                .collect();
            guide(&mut x0);
            for ((o, &x), &x0) in model_output.iter_mut().zip(sample).zip(&x0) {
                *o = (x - a * x0) / s;
            }
        }
        PredictionType::VPrediction => {
            let k = (a * a + s * s).sqrt();
            let (a, s) = (a / k, s / k);
            let mut x0: Vec<f32> = sample
                .iter()
                .zip(model_output.iter())
                .map(|(&x, &v)| a * (x / k) - s * v)
                .collect();
            guide(&mut x0);
            for ((o, &x), &x0) in model_output.iter_mut().zip(sample).zip(&x0) {
                *o = (a * (x / k) - x0) / s;
            }
        }
    }
    Ok(())
}

/// `index` must name a step of a run of `len` steps, or its end (`len`).
pub(crate) fn check_index(
    scheduler: &'static str,
    index: usize,
    len: usize,
) -> Result<(), SamplerError> {
    if len == 0 {
        return Err(SamplerError::TimestepsNotSet { scheduler });
    }
    if index > len {
        return Err(SamplerError::StepPastEnd {
            scheduler,
            step_index: index,
            num_steps: len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{build, SamplerKind, Scheduler, SchedulerConfig};
    use super::*;

    fn built(kind: SamplerKind, steps: usize) -> Box<dyn Scheduler> {
        let mut s = build(kind, &SchedulerConfig::default(), 0.0).unwrap();
        s.set_timesteps(steps).unwrap();
        s
    }

    const X0: [f32; 4] = [0.5, -1.0, 0.25, 0.0];
    const EPS: [f32; 4] = [1.0, 0.5, -2.0, 0.75];

    #[test]
    fn vp_samplers_add_noise_with_alpha_cumprod() {
        for kind in [
            SamplerKind::Ddpm,
            SamplerKind::Ddim,
            SamplerKind::DpmSolverMultistep,
        ] {
            let s = built(kind, 10);
            for index in [0, 3, 9] {
                let t = s.timesteps()[index] as usize;
                let a = f64::from(s.alphas_cumprod()[t]);
                let got = s.add_noise(&X0, &EPS, index).unwrap();
                for ((g, &x), &e) in got.iter().zip(&X0).zip(&EPS) {
                    let want = a.sqrt() * f64::from(x) + (1.0 - a).sqrt() * f64::from(e);
                    // DPM-Solver goes through σ = √((1−ᾱ)/ᾱ) and back, so allow f32 rounding.
                    assert!(
                        (f64::from(*g) - want).abs() < 2e-6,
                        "{kind} index {index}: {g} vs {want}"
                    );
                }
            }
            assert_eq!(
                s.add_noise(&X0, &EPS, 10).unwrap(),
                X0.to_vec(),
                "{kind}: the end of the run is clean"
            );
        }
    }

    #[test]
    fn ddpm_add_noise_is_bit_exact_in_f32() {
        // diffusers computes alphas_cumprod[t] ** 0.5 in f32 and one multiply-add per element.
        let s = built(SamplerKind::Ddpm, 4);
        let a = s.alphas_cumprod()[s.timesteps()[1] as usize];
        let got = s.add_noise(&X0, &EPS, 1).unwrap();
        let want: Vec<f32> = X0
            .iter()
            .zip(&EPS)
            .map(|(&x, &e)| a.sqrt() * x + (1.0 - a).sqrt() * e)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn euler_ancestral_adds_sigma_noise() {
        let s = built(SamplerKind::EulerAncestral, 8);
        for index in [0, 5] {
            let t = s.timesteps()[index];
            // σ_t = √((1 − ᾱ_t)/ᾱ_t), interpolated at fractional timesteps.
            let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
            let sig = |i: usize| {
                let a = f64::from(s.alphas_cumprod()[i]);
                ((1.0 - a) / a).sqrt()
            };
            let f = f64::from(t) - lo as f64;
            let sigma = sig(lo) * (1.0 - f) + sig(hi) * f;
            let got = s.add_noise(&X0, &EPS, index).unwrap();
            for ((g, &x), &e) in got.iter().zip(&X0).zip(&EPS) {
                let want = f64::from(x) + sigma * f64::from(e);
                assert!(
                    (f64::from(*g) - want).abs() < 1e-4 * sigma.max(1.0),
                    "index {index}: {g} vs {want}"
                );
            }
        }
        assert_eq!(s.add_noise(&X0, &EPS, 8).unwrap(), X0.to_vec());
    }

    #[test]
    fn indices_past_the_end_are_errors() {
        for kind in SamplerKind::ALL {
            let s = built(kind, 5);
            // Heun lists 2n − 1 timesteps and PNDM's warm-up n + 9: past the end of the list.
            let len = s.timesteps().len();
            assert!(s.noise_level(len).is_ok(), "{kind}: the end of the run");
            let err = s.noise_level(len + 1).unwrap_err().to_string();
            assert!(
                err.contains(&(len + 1).to_string()) && err.contains(&len.to_string()),
                "{kind}: {err}"
            );
        }
    }

    #[test]
    fn renoise_matches_repaint_jump() {
        let (ab_s, ab_t) = (0.8f32, 0.3f32);
        let from = NoiseLevel::from_alpha_cumprod(ab_s);
        let to = NoiseLevel::from_alpha_cumprod(ab_t);
        let got = renoise(&X0, from, to, &EPS).unwrap();
        let (r, v) = (f64::from(ab_t / ab_s), 1.0 - f64::from(ab_t / ab_s));
        for ((g, &x), &e) in got.iter().zip(&X0).zip(&EPS) {
            let want = r.sqrt() * f64::from(x) + v.sqrt() * f64::from(e);
            assert!((f64::from(*g) - want).abs() < 1e-6, "{g} vs {want}");
        }
        // VE: x + √(σ_t² − σ_s²) z
        let got = renoise(
            &X0,
            NoiseLevel {
                signal: 1.0,
                noise: 3.0,
            },
            NoiseLevel {
                signal: 1.0,
                noise: 5.0,
            },
            &EPS,
        )
        .unwrap();
        let want: Vec<f32> = X0.iter().zip(&EPS).map(|(&x, &e)| x + 4.0 * e).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn renoise_composes_with_the_marginal() {
        // Var and mean of a·x0 + s·ε after the jump: the marginal at the target level.
        let from = NoiseLevel::from_alpha_cumprod(0.6);
        let to = NoiseLevel::from_alpha_cumprod(0.1);
        let ratio = f64::from(to.signal / from.signal);
        let std = f64::from(
            (to.noise.powi(2) - (to.signal / from.signal).powi(2) * from.noise.powi(2)).sqrt(),
        );
        let total = (ratio * f64::from(from.noise)).hypot(std);
        assert!((ratio * f64::from(from.signal) - f64::from(to.signal)).abs() < 1e-6);
        assert!((total - f64::from(to.noise)).abs() < 1e-6, "{total}");
    }

    #[test]
    fn begin_index_restarts_multistep_history() {
        // DPM-Solver++(2M) run to step 3, then told to begin at 3 again, takes the same
        // (first-order) step as a fresh scheduler that begins there.
        use super::super::{DPMSolverMultistepScheduler, DPMSolverMultistepSchedulerConfig};
        let fresh_dpm = || {
            let mut s =
                DPMSolverMultistepScheduler::new(DPMSolverMultistepSchedulerConfig::default())
                    .unwrap();
            s.set_timesteps(6).unwrap();
            s
        };
        let mut used = fresh_dpm();
        let ts = used.timesteps().to_vec();
        let mut sample = vec![0.3f32, -0.2, 0.9, 0.0];
        for (i, &t) in ts[..3].iter().enumerate() {
            let eps = vec![0.1 * i as f32 - 0.3; 4];
            sample = used.step(&eps, t, &sample, None).unwrap().prev_sample;
        }
        let eps = vec![0.4f32; 4];
        let second_order = used.clone().step(&eps, ts[3], &sample, None).unwrap();
        used.set_begin_index(3).unwrap();
        let restarted = used.step(&eps, ts[3], &sample, None).unwrap();
        let mut fresh = fresh_dpm();
        fresh.set_begin_index(3).unwrap();
        let first = fresh.step(&eps, ts[3], &sample, None).unwrap();
        assert_eq!(restarted, first);
        assert_ne!(second_order, first, "the history must have mattered");
    }

    #[test]
    fn begin_index_sets_euler_ancestral_position() {
        let mut s = built(SamplerKind::EulerAncestral, 6);
        let ts = s.timesteps().to_vec();
        s.set_begin_index(2).unwrap();
        let sigma = s.noise_level(2).unwrap().noise;
        let scaled = s.scale_model_input(&[1.0], ts[2]).unwrap();
        assert_eq!(scaled, vec![1.0 / (sigma * sigma + 1.0).sqrt()]);
        // Redo step 2 after taking it: the same σ's, the same result.
        let a = s.step(&[0.5], ts[2], &[1.0], Some(&[0.2])).unwrap();
        s.set_begin_index(2).unwrap();
        let b = s.step(&[0.5], ts[2], &[1.0], Some(&[0.2])).unwrap();
        assert_eq!(a, b);
        assert!(s.set_begin_index(7).is_err());
    }

    /// A guide that sets x₀ makes every sampler step from exactly that x₀, for every
    /// prediction type it supports, at every step of the run (VP and σ-space levels alike).
    #[test]
    fn guided_output_implies_the_guided_x0() {
        let target = [0.3f32, -0.6, 0.9, -0.1];
        let set = |x0: &mut [f32]| x0.copy_from_slice(&target);
        for kind in SamplerKind::ALL {
            for pred in ["epsilon", "v_prediction", "sample"] {
                let cfg = SchedulerConfig {
                    prediction_type: Some(pred.into()),
                    ..SchedulerConfig::default()
                };
                let Ok(mut s) = build(kind, &cfg, 0.0) else {
                    assert!(
                        matches!(kind, SamplerKind::EulerAncestral | SamplerKind::Pndm)
                            && pred == "sample",
                        "{kind} {pred}"
                    );
                    continue;
                };
                s.set_timesteps(5).unwrap();
                let ts = s.timesteps().to_vec();
                let mut x: Vec<f32> = X0.to_vec();
                for (i, &t) in ts.iter().enumerate() {
                    let mut out = EPS.to_vec();
                    guide_x0(
                        s.noise_level(i).unwrap(),
                        s.prediction_type(),
                        &x,
                        &mut out,
                        &set,
                    )
                    .unwrap();
                    let step = s.step(&out, t, &x, Some(&[0.1; 4])).unwrap();
                    for (got, want) in step.pred_original_sample.iter().zip(target) {
                        assert!(
                            (got - want).abs() < 2e-3 * (1.0 + want.abs()),
                            "{kind:?} {pred} step {i}: x0 {:?}, wanted {target:?}",
                            step.pred_original_sample
                        );
                    }
                    x = step.prev_sample;
                }
            }
        }
    }
}
