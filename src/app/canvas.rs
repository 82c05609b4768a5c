//! Pixels onto 2D canvases and into PNG downloads. A 2D canvas with `putImageData` (rather than a
//! WebGPU canvas surface) because it presents everywhere, headless Chromium included, and the
//! frames are tiny; CSS `image-rendering: pixelated` scales them up with crisp pixels.

use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

/// Draws an RGBA image of `w × h` pixels, resizing the canvas's backing store to match.
pub fn draw_rgba(
    canvas: &HtmlCanvasElement,
    rgba: &[u8],
    w: usize,
    h: usize,
) -> Result<(), String> {
    if canvas.width() != w as u32 {
        canvas.set_width(w as u32);
    }
    if canvas.height() != h as u32 {
        canvas.set_height(h as u32);
    }
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("no 2d context")?
        .dyn_into()
        .map_err(|_| "not a 2d context")?;
    // Copy out of wasm memory first: an ImageData over a view of wasm memory would be detached
    // as soon as the memory grows.
    let arr = js_sys::Uint8ClampedArray::new_with_length(rgba.len() as u32);
    arr.copy_from(rgba);
    let img = web_sys::ImageData::new_with_js_u8_clamped_array_and_sh(&arr, w as u32, h as u32)
        .map_err(|e| format!("{e:?}"))?;
    ctx.put_image_data(&img, 0.0, 0.0)
        .map_err(|e| format!("{e:?}"))
}

/// Nearest-neighbour upscaling by an integer factor (exported images keep their crisp pixels).
pub fn upscale(rgba: &[u8], w: usize, h: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() * k * k);
    for y in 0..h * k {
        for x in 0..w * k {
            let i = ((y / k) * w + x / k) * 4;
            out.extend_from_slice(&rgba[i..i + 4]);
        }
    }
    out
}

/// Saves an RGBA image as a PNG download named `filename`, scaled up to at least 256 pixels.
/// The browser's own PNG encoder does the work (through an off-screen canvas).
pub fn download_png(rgba: &[u8], w: usize, h: usize, filename: &str) -> Result<(), String> {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let k = (256 / w.max(h)).max(1);
    let canvas: HtmlCanvasElement = doc
        .create_element("canvas")
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not a canvas")?;
    draw_rgba(&canvas, &upscale(rgba, w, h, k), w * k, h * k)?;
    let url = canvas
        .to_data_url_with_type("image/png")
        .map_err(|e| format!("{e:?}"))?;
    let a: web_sys::HtmlAnchorElement = doc
        .create_element("a")
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not an anchor")?;
    a.set_href(&url);
    a.set_download(filename);
    a.click();
    Ok(())
}
