//! Dynamic thresholding of the predicted clean sample (Saharia et al. 2022, "Imagen"), as
//! diffusers' `_threshold_sample` does it in `DDPMScheduler`, `DDIMScheduler` and
//! `DPMSolverMultistepScheduler` when a scheduler config says `"thresholding": true`:
//!
//! per image, s = the `dynamic_thresholding_ratio` quantile of |x̂₀| over all its channels and
//! pixels, clamped to [1, `sample_max_value`]; then x̂₀ ← clamp(x̂₀, −s, s) / s.
//!
//! It is the one sampler operation that is not elementwise, so a sampler that thresholds needs to
//! know how many images its flat slices hold ([`super::Scheduler::set_num_images`]).

use super::{SamplerError, SchedulerConfig};

/// The thresholding parameters of a scheduler config (diffusers' defaults: 0.995 and 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicThresholding {
    /// The quantile of |x̂₀| taken as s (`dynamic_thresholding_ratio`), in [0, 1].
    pub ratio: f32,
    /// The largest s (`sample_max_value`).
    pub sample_max_value: f32,
}

impl DynamicThresholding {
    /// `Some` where the config turns thresholding on; an error names a ratio torch's `quantile`
    /// would refuse (outside [0, 1]) or a `sample_max_value` that is not a finite number > 0.
    pub fn from_config(
        scheduler: &'static str,
        c: &SchedulerConfig,
    ) -> Result<Option<Self>, SamplerError> {
        if c.thresholding != Some(true) {
            return Ok(None);
        }
        let ratio = c.dynamic_thresholding_ratio.unwrap_or(0.995);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(SamplerError::Unsupported {
                scheduler,
                feature: format!("dynamic_thresholding_ratio = {ratio} (a quantile: 0 to 1)"),
            });
        }
        let sample_max_value = c.sample_max_value.unwrap_or(1.0);
        if !(sample_max_value.is_finite() && sample_max_value > 0.0) {
            return Err(SamplerError::Unsupported {
                scheduler,
                feature: format!(
                    "sample_max_value = {sample_max_value} with thresholding (must be a finite number > 0)"
                ),
            });
        }
        Ok(Some(Self {
            ratio: ratio as f32,
            sample_max_value: sample_max_value as f32,
        }))
    }

    /// Thresholds `x0` (N×C×H×W, N = `images`) in place. `images` is what the caller passed to
    /// `set_num_images`; `None` (never set) is an error rather than a silent whole-batch quantile.
    pub fn apply(
        &self,
        scheduler: &'static str,
        x0: &mut [f32],
        images: Option<usize>,
    ) -> Result<(), SamplerError> {
        let images = images.ok_or(SamplerError::NumImagesNotSet { scheduler })?;
        if images == 0 || !x0.len().is_multiple_of(images) {
            return Err(SamplerError::ImagesMismatch {
                scheduler,
                len: x0.len(),
                images,
            });
        }
        let per_image = x0.len() / images;
        let mut sorted = Vec::with_capacity(per_image);
        for image in x0.chunks_exact_mut(per_image) {
            sorted.clear();
            sorted.extend(image.iter().map(|v| v.abs()));
            sorted.sort_unstable_by(f32::total_cmp);
            // torch.clamp(s, min=1, max=sample_max_value): max wins where max < 1.
            let s = torch_clamp(
                quantile_sorted(&sorted, self.ratio),
                1.0,
                self.sample_max_value,
            );
            for v in image.iter_mut() {
                *v = torch_clamp(*v, -s, s) / s;
            }
        }
        Ok(())
    }
}

/// torch.clamp: min(max(v, lo), hi), and NaN stays NaN (where `f32::clamp` would panic on a NaN
/// bound, and `f32::max` would drop a NaN value).
fn torch_clamp(v: f32, lo: f32, hi: f32) -> f32 {
    if v.is_nan() || lo.is_nan() || hi.is_nan() {
        f32::NAN
    } else {
        v.max(lo).min(hi)
    }
}

/// torch.quantile's default ("linear") interpolation on ascending values (NaN sorted last), in
/// f32 as torch does for an f32 tensor: NaN if any value is NaN, else rank q·(n−1) and `lerp`
/// between the values below and above it.
fn quantile_sorted(sorted: &[f32], q: f32) -> f32 {
    if sorted.last().is_some_and(|v| v.is_nan()) {
        return f32::NAN;
    }
    let rank = q * (sorted.len() - 1) as f32;
    let below = rank as usize; // truncation, as torch's cast to long
    let above = (rank.ceil() as usize).min(sorted.len() - 1);
    lerp(sorted[below], sorted[above], rank - below as f32)
}

/// torch's `lerp`: start + w·(end − start) for w < 0.5, end − (end − start)·(1 − w) otherwise.
fn lerp(start: f32, end: f32, w: f32) -> f32 {
    if w < 0.5 {
        start + w * (end - start)
    } else {
        end - (end - start) * (1.0 - w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Option<DynamicThresholding> {
        let c = SchedulerConfig::from_json_str(json).unwrap();
        DynamicThresholding::from_config("T", &c).unwrap()
    }

    #[test]
    fn quantile_interpolates_like_torch() {
        // torch.quantile(torch.tensor([0., 1., 2., 3., 4.]), q): 0.9 → 3.6, 0.5 → 2, 1 → 4, 0 → 0
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert!((quantile_sorted(&v, 0.9) - 3.6).abs() < 1e-6);
        assert_eq!(quantile_sorted(&v, 0.5), 2.0);
        assert_eq!(quantile_sorted(&v, 1.0), 4.0);
        assert_eq!(quantile_sorted(&v, 0.0), 0.0);
        assert_eq!(quantile_sorted(&[7.0], 0.995), 7.0);
        assert!(quantile_sorted(&[1.0, 2.0, f32::NAN], 0.1).is_nan());
    }

    #[test]
    fn non_finite_values_propagate_as_in_torch() {
        let th = config(r#"{"thresholding": true, "dynamic_thresholding_ratio": 0.5}"#).unwrap();
        // An image holding infinities: the quantile interpolates inf − inf = NaN, as torch's lerp.
        let mut x = vec![
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::INFINITY,
            0.5,
            0.25,
            0.0,
        ];
        th.apply("T", &mut x, Some(2)).unwrap();
        assert!(x[..3].iter().all(|v| v.is_nan()), "{x:?}");
        assert_eq!(&x[3..], &[0.5, 0.25, 0.0]);
        let mut x = vec![f32::NAN, 0.5];
        th.apply("T", &mut x, Some(1)).unwrap();
        assert!(x.iter().all(|v| v.is_nan()), "{x:?}");
    }

    #[test]
    fn each_image_gets_its_own_threshold() {
        let th = config(
            r#"{"thresholding": true, "dynamic_thresholding_ratio": 1.0, "sample_max_value": 3.0}"#,
        )
        .unwrap();
        // Image 0: max |x| 2 → s = 2. Image 1: max |x| 0.5 → s = 1 (plain clipping, no rescale).
        // Image 2: max |x| 10 → s = 3 (sample_max_value).
        let mut x = vec![2.0, -1.0, 0.5, -0.5, 0.25, 0.0, 10.0, -4.0, 1.5];
        th.apply("T", &mut x, Some(3)).unwrap();
        let want = [1.0, -0.5, 0.25, -0.5, 0.25, 0.0, 1.0, -1.0, 0.5];
        assert_eq!(x, want);
    }

    #[test]
    fn defaults_and_refusals() {
        assert_eq!(config(r#"{}"#), None);
        assert_eq!(config(r#"{"thresholding": false}"#), None);
        assert_eq!(
            config(r#"{"thresholding": true}"#),
            Some(DynamicThresholding {
                ratio: 0.995,
                sample_max_value: 1.0
            })
        );
        let c = SchedulerConfig::from_json_str(
            r#"{"thresholding": true, "dynamic_thresholding_ratio": 1.5}"#,
        )
        .unwrap();
        let err = DynamicThresholding::from_config("T", &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dynamic_thresholding_ratio = 1.5"), "{err}");
        let c = SchedulerConfig::from_json_str(r#"{"thresholding": true, "sample_max_value": -1}"#)
            .unwrap();
        let err = DynamicThresholding::from_config("T", &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sample_max_value = -1"), "{err}");
        let th = config(r#"{"thresholding": true}"#).unwrap();
        let err = th.apply("T", &mut [1.0; 6], None).unwrap_err().to_string();
        assert!(err.contains("set_num_images"), "{err}");
        let err = th
            .apply("T", &mut [1.0; 7], Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("7 values") && err.contains("2 images"),
            "{err}"
        );
    }
}
