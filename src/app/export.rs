//! The export buttons' work: the step strip (PNG) and the animated GIF of the run's history, laid
//! out and encoded by [`crate::export`] (pure Rust) and saved as downloads.

use super::canvas::{save_bytes, save_png};
use super::engine::{Frame, Image};
use crate::export::{self, Rgba};

/// Frames in the step strip.
pub const STRIP_FRAMES: usize = 10;

fn rgba(i: &Image) -> Rgba<'_> {
    Rgba {
        width: i.width,
        height: i.height,
        data: &i.rgba,
    }
}

fn pair(f: &Frame) -> (Rgba<'_>, Rgba<'_>) {
    (rgba(&f.xt), rgba(&f.x0))
}

/// Saves `STRIP_FRAMES` evenly spaced frames of the history (x_t over x̂0) as `{stem}-strip.png`.
pub fn download_strip(frames: &[Frame], stem: &str) -> Result<(), String> {
    let picks: Vec<_> = export::evenly_spaced(frames.len(), STRIP_FRAMES)
        .into_iter()
        .map(|i| pair(&frames[i]))
        .collect();
    if picks.is_empty() {
        return Err("no frames to export yet".into());
    }
    let (w, h, px) = export::step_strip(&picks);
    save_png(&px, w, h, &format!("{stem}-strip.png"))
}

/// Saves the history as a looping animated GIF, x_t beside x̂0, as `{stem}.gif`.
pub fn download_gif(frames: &[Frame], stem: &str) -> Result<(), String> {
    let all: Vec<_> = frames.iter().map(pair).collect();
    let bytes = export::animated_gif(&all)?;
    save_bytes(&bytes, "image/gif", &format!("{stem}.gif"))
}
