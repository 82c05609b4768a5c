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

/// Saves an RGBA image as a PNG download named `filename`, scaled up to at least 256 pixels.
pub fn download_png(rgba: &[u8], w: usize, h: usize, filename: &str) -> Result<(), String> {
    let k = crate::export::scale_for(w.max(h), 256);
    save_png(
        &crate::export::upscale(rgba, w, h, k, 4),
        w * k,
        h * k,
        filename,
    )
}

fn document() -> Result<web_sys::Document, String> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| "no document".to_string())
}

fn new_canvas() -> Result<HtmlCanvasElement, String> {
    document()?
        .create_element("canvas")
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not a canvas".to_string())
}

fn click_download(href: &str, filename: &str) -> Result<(), String> {
    let a: web_sys::HtmlAnchorElement = document()?
        .create_element("a")
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not an anchor")?;
    a.set_href(href);
    a.set_download(filename);
    a.click();
    Ok(())
}

/// Saves an RGBA image as a PNG download, pixel for pixel. The browser's own PNG encoder does
/// the work (through an off-screen canvas).
pub fn save_png(rgba: &[u8], w: usize, h: usize, filename: &str) -> Result<(), String> {
    let canvas = new_canvas()?;
    draw_rgba(&canvas, rgba, w, h)?;
    let url = canvas
        .to_data_url_with_type("image/png")
        .map_err(|e| format!("{e:?}"))?;
    click_download(&url, filename)
}

/// Saves bytes (a GIF) as a download through a Blob URL, released a while after the click.
pub fn save_bytes(bytes: &[u8], mime: &str, filename: &str) -> Result<(), String> {
    let arr = js_sys::Uint8Array::new_with_length(bytes.len() as u32);
    arr.copy_from(bytes);
    let parts = js_sys::Array::of1(&arr);
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
        .map_err(|e| format!("{e:?}"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))?;
    click_download(&url, filename)?;
    leptos::task::spawn_local(async move {
        super::engine::yield_to_browser(30_000).await;
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    Ok(())
}

/// Decodes the image at `url` (a served file or a `blob:` URL of the user's file) with the
/// browser's decoder, scaled to `w × h` on a background of `bg` (for transparent images; the
/// emoji model learned emoji on white, Fashion-MNIST is on black), as RGBA. `grey` turns it into
/// luminance for one-channel models.
pub async fn decode_image(
    url: &str,
    w: usize,
    h: usize,
    bg: &str,
    grey: bool,
) -> Result<Vec<u8>, String> {
    let img = web_sys::HtmlImageElement::new().map_err(|e| format!("{e:?}"))?;
    img.set_src(url);
    wasm_bindgen_futures::JsFuture::from(img.decode())
        .await
        .map_err(|_| "the browser could not decode this file as an image".to_string())?;
    let canvas = new_canvas()?;
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("no 2d context")?
        .dyn_into()
        .map_err(|_| "not a 2d context")?;
    ctx.set_fill_style_str(bg);
    ctx.fill_rect(0.0, 0.0, w as f64, h as f64);
    ctx.set_image_smoothing_enabled(true);
    ctx.draw_image_with_html_image_element_and_dw_and_dh(&img, 0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("{e:?}"))?;
    let mut rgba = ctx
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("{e:?}"))?
        .data()
        .0;
    if grey {
        for p in rgba.chunks_exact_mut(4) {
            // Rec. 601 luma, as PIL's convert("L").
            let y = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round();
            p[..3].fill(y as u8);
        }
    }
    rgba.chunks_exact_mut(4).for_each(|p| p[3] = 255);
    Ok(rgba)
}
