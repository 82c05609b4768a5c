//! Bicubic resampling with PyTorch's `F.interpolate(mode="bicubic", align_corners=False)`
//! semantics: the super-resolution model's conditioning and the baseline it is measured against.
//!
//! PyTorch (aten/src/ATen/native/UpSample.h and cpu/UpSampleKernel.cpp, in f32 for f32 input):
//! the source coordinate of output pixel i is `scale·(i + ½) − ½` with `scale = in/out`, *not*
//! clamped at 0 for cubic; `floor` gives the base index (at most `in − 1`) and the fraction t
//! (clamped to [0, 1]); the four taps at base−1..base+2 are clamped to the edge; the weights are
//! Keys' cubic convolution with A = −0.75. The output is not clamped, so it overshoots [-1, 1]
//! near sharp edges, as PyTorch's does. Each output is Σ_rows w_h·(Σ_cols w_w·x), summed in
//! PyTorch's order so that f32 results agree to the last bits.

/// Keys' cubic convolution constant PyTorch uses.
const A: f32 = -0.75;

/// |x| ≤ 1.
fn cubic_convolution1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

/// 1 < |x| < 2.
fn cubic_convolution2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// Per output index along one axis: the four clamped source indices and their weights.
fn taps(in_size: usize, out_size: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let base = (real.floor() as i64).min(in_size as i64 - 1);
            let t = (real - base as f32).clamp(0.0, 1.0);
            let w = [
                cubic_convolution2(t + 1.0),
                cubic_convolution1(t),
                cubic_convolution1(1.0 - t),
                cubic_convolution2(2.0 - t),
            ];
            let idx = [0i64, 1, 2, 3].map(|j| (base - 1 + j).clamp(0, in_size as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// Resamples every H×W plane of an N×C×H×W batch to `out_h`×`out_w`.
pub fn resize_bicubic(data: &[f32], shape: [usize; 4], out_h: usize, out_w: usize) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(
        data.len(),
        n * c * h * w,
        "bicubic: data does not match {shape:?}"
    );
    let rows = taps(h, out_h);
    let cols = taps(w, out_w);
    let mut out = Vec::with_capacity(n * c * out_h * out_w);
    for plane in data.chunks_exact(h * w) {
        for (ri, rw) in &rows {
            for (ci, cw) in &cols {
                let row = |r: usize| {
                    let src = &plane[r * w..(r + 1) * w];
                    let mut acc = src[ci[0]] * cw[0];
                    for k in 1..4 {
                        acc += src[ci[k]] * cw[k];
                    }
                    acc
                };
                let mut acc = row(ri[0]) * rw[0];
                for j in 1..4 {
                    acc += row(ri[j]) * rw[j];
                }
                out.push(acc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_interpolate() {
        for (i, o) in [(4, 8), (5, 7), (3, 9), (8, 8)] {
            for (_, w) in taps(i, o) {
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{w:?}");
            }
        }
        // Same size: the identity (t = 0 gives weights 0, 1, 0, 0).
        let x: Vec<f32> = (0..12).map(|v| v as f32 * 0.37 - 1.0).collect();
        assert_eq!(resize_bicubic(&x, [1, 1, 3, 4], 3, 4), x);
        // Constants stay constant.
        let y = resize_bicubic(&[0.25; 9], [1, 1, 3, 3], 7, 6);
        assert!(y.iter().all(|&v| (v - 0.25).abs() < 1e-6), "{y:?}");
    }

    #[test]
    fn overshoots_like_pytorch() {
        // A step edge rings past its levels (Keys' kernel has negative lobes); no clamping.
        let x = [-1.0, -1.0, 1.0, 1.0];
        let y = resize_bicubic(&x, [1, 1, 1, 4], 1, 16);
        assert!(
            y.iter().any(|&v| v > 1.0) && y.iter().any(|&v| v < -1.0),
            "{y:?}"
        );
    }
}
