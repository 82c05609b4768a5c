//! Pixels: model-space values ([-1, 1], N×C×H×W) to 8-bit RGBA, one sample or a batch grid, as
//! the page's canvases, the CLI's PNGs and the exports draw them.

/// Model-space values in [-1, 1] to 8-bit, as diffusers' `(x / 2 + 0.5).clamp(0, 1)` then
/// `round(x · 255)`.
pub fn to_u8(v: f32) -> u8 {
    ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// RGBA pixels of sample `index` of an N×C×H×W batch (1 channel: grey; 3: RGB; other counts:
/// the first channel as grey).
pub fn sample_rgba(data: &[f32], shape: [usize; 4], index: usize) -> Vec<u8> {
    let [_, c, h, w] = shape;
    let plane = h * w;
    let base = index * c * plane;
    let mut out = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        let (r, g, bl) = if c == 3 {
            (
                data[base + p],
                data[base + plane + p],
                data[base + 2 * plane + p],
            )
        } else {
            let v = data[base + p];
            (v, v, v)
        };
        out.extend_from_slice(&[to_u8(r), to_u8(g), to_u8(bl), 255]);
    }
    out
}

/// A grid of all samples of a batch (as square as possible, 2-pixel gaps): (width, height, RGBA).
pub fn grid_rgba(data: &[f32], shape: [usize; 4]) -> (usize, usize, Vec<u8>) {
    let [n, _, h, w] = shape;
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let gap = if n > 1 { 2 } else { 0 };
    let (gw, gh) = (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap);
    let mut out = vec![0u8; gw * gh * 4];
    for i in 0..n {
        let img = sample_rgba(data, shape, i);
        let (ox, oy) = ((i % cols) * (w + gap), (i / cols) * (h + gap));
        for y in 0..h {
            let dst = ((oy + y) * gw + ox) * 4;
            out[dst..dst + w * 4].copy_from_slice(&img[y * w * 4..(y + 1) * w * 4]);
        }
    }
    (gw, gh, out)
}

/// A grid (as [`grid_rgba`]) of |a − b| per pixel, the channels' mean in pixel units (0..1),
/// as a heat map: black where the two agree, through red and yellow to white at `full` apart.
/// What the sampler lab draws under each run.
pub fn difference_grid_rgba(
    a: &[f32],
    b: &[f32],
    shape: [usize; 4],
    full: f32,
) -> (usize, usize, Vec<u8>) {
    let [n, c, h, w] = shape;
    let plane = h * w;
    // Encode the heat value as a one-channel "image" in [-1, 1] and reuse the grid layout.
    let mut heat = vec![-1.0f32; n * plane];
    for i in 0..n {
        for p in 0..plane {
            let mut d = 0.0;
            for ch in 0..c {
                let k = (i * c + ch) * plane + p;
                d += (a[k].clamp(-1.0, 1.0) - b[k].clamp(-1.0, 1.0)).abs() / 2.0;
            }
            heat[i * plane + p] = (d / c as f32 / full.max(1e-6)).clamp(0.0, 1.0) * 2.0 - 1.0;
        }
    }
    let (gw, gh, mut rgba) = grid_rgba(&heat, [n, 1, h, w]);
    for px in rgba.chunks_exact_mut(4) {
        let v = px[0] as f32 / 255.0;
        // black → red → yellow → white
        let r = (v * 3.0).min(1.0);
        let g = (v * 3.0 - 1.0).clamp(0.0, 1.0);
        let bl = (v * 3.0 - 2.0).clamp(0.0, 1.0);
        px[0] = (r * 255.0).round() as u8;
        px[1] = (g * 255.0).round() as u8;
        px[2] = (bl * 255.0).round() as u8;
    }
    (gw, gh, rgba)
}

/// Root-mean-square distance of two images in pixel units (0..1: model space clamped to [−1, 1]
/// and halved), i.e. as a viewer sees them.
pub fn pixel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (x.clamp(-1.0, 1.0) - y.clamp(-1.0, 1.0)) as f64 / 2.0;
            d * d
        })
        .sum();
    (sum / n as f64).sqrt()
}
