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
