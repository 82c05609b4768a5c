//! Latent diffusion: the UNet denoises `(z − shift) · scaling_factor` and the `AutoencoderKL`
//! decodes the result. This module turns latents into images (decoded, and as per-channel panels
//! for the animation).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::image::to_u8;
use crate::model::loader::{load_vae_files, FileSource};
use crate::model::{AutoencoderKL, UNet2DConfig};

/// The `AutoencoderKL` of a latent model folder (`vae/`), checked against its UNet; `None` for a
/// pixel model.
pub fn load_vae<B: Backend>(
    b: &B,
    src: &dyn FileSource,
    unet: &UNet2DConfig,
) -> Result<Option<AutoencoderKL<B>>> {
    let Some(files) = load_vae_files(src)? else {
        return Ok(None);
    };
    if files.config.latent_channels != unet.in_channels
        || files.config.latent_channels != unet.out_channels
    {
        return Err(Error::config(
            "vae latent_channels",
            format!(
                "{}: the VAE has {} latent channels but the UNet takes {} and returns {}",
                src.describe(),
                files.config.latent_channels,
                unet.in_channels,
                unet.out_channels
            ),
        ));
    }
    AutoencoderKL::load(b, files.config, &files.weights).map(Some)
}

/// Decodes scaled latents `[N, L, h, w]` to images `[N, C, h·f, w·f]` in model space ([-1, 1]).
pub async fn decode<B: Backend>(
    b: &B,
    vae: &AutoencoderKL<B>,
    latents: &[f32],
    shape: [usize; 4],
) -> Result<(Vec<f32>, [usize; 4])> {
    use crate::backend::Tensor;
    let x = b.upload(&shape, latents)?;
    let y = vae.decode_latents(b, &x)?;
    let s = y.shape();
    let out_shape = [s[0], s[1], s[2], s[3]];
    Ok((b.download(&y).await?, out_shape))
}

/// Encodes images `[N, C, H, W]` in model space ([-1, 1]) to the scaled latents the UNet works
/// on, `[N, L, H/f, W/f]`: the posterior mean (diffusers' `retrieve_latents(...,
/// sample_mode="argmax")`), then `(z − shift) · scaling_factor`. What image editing with a latent
/// model starts from.
pub async fn encode<B: Backend>(
    b: &B,
    vae: &AutoencoderKL<B>,
    images: &[f32],
    shape: [usize; 4],
) -> Result<(Vec<f32>, [usize; 4])> {
    use crate::backend::Tensor;
    let x = b.upload(&shape, images)?;
    let moments = vae.encode(b, &x)?;
    let s = moments.shape();
    let (n, l2, h, w) = (s[0], s[1], s[2], s[3]);
    let m = b.download(&moments).await?;
    let l = l2 / 2;
    let mean: Vec<f32> = (0..n)
        .flat_map(|i| m[i * l2 * h * w..(i * l2 + l) * h * w].iter().copied())
        .collect();
    Ok((vae.scale_latents(&mean), [n, l, h, w]))
}

/// An image-space inpainting mask (`[H, W]`, ≥ 0.5 = regenerate) at latent resolution
/// `[H/f, W/f]`: a latent pixel is regenerated when any image pixel of its f×f block is, so the
/// whole painted region is redrawn (the known region's latents stay exactly the encoder's).
pub fn downsample_mask(mask: &[f32], h: usize, w: usize, factor: usize) -> Vec<f32> {
    let (lh, lw) = (h / factor, w / factor);
    let mut out = vec![0.0; lh * lw];
    for y in 0..lh * factor {
        for x in 0..lw * factor {
            if mask[y * w + x] >= 0.5 {
                out[(y / factor) * lw + x / factor] = 1.0;
            }
        }
    }
    out
}

/// Scaled latents have about unit variance: ±`LATENT_RANGE` maps to black and white, fixed
/// across steps so that the panels do not flicker.
pub const LATENT_RANGE: f32 = 2.5;

/// The channels of sample `index` of a latent batch side by side as grey panels, 1 pixel apart:
/// (width, height, RGBA).
pub fn channel_panels_rgba(
    latents: &[f32],
    shape: [usize; 4],
    index: usize,
) -> (usize, usize, Vec<u8>) {
    let [_, c, h, w] = shape;
    let gap = 1;
    let width = c * w + (c - 1) * gap;
    let mut out = vec![0u8; width * h * 4];
    let base = index * c * h * w;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let v = latents[base + (ch * h + y) * w + x] / LATENT_RANGE;
                let g = to_u8(v);
                let dst = (y * width + ch * (w + gap) + x) * 4;
                out[dst..dst + 4].copy_from_slice(&[g, g, g, 255]);
            }
        }
    }
    (width, h, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_downsampling_keeps_any_painted_block() {
        // 4×4 image mask, factor 2: one painted pixel in the top-right block, a full bottom-left one.
        #[rustfmt::skip]
        let m = [
            0.0, 0.0, 0.0, 1.0,
            0.0, 0.0, 0.0, 0.0,
            1.0, 1.0, 0.0, 0.0,
            1.0, 1.0, 0.0, 0.4,
        ];
        assert_eq!(downsample_mask(&m, 4, 4, 2), vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn panels_place_each_channel() {
        // 2 channels of 1×2: channel 0 = [-LATENT_RANGE, 0], channel 1 = [LATENT_RANGE, 0].
        let lat = [-LATENT_RANGE, 0.0, LATENT_RANGE, 0.0];
        let (w, h, px) = channel_panels_rgba(&lat, [1, 2, 1, 2], 0);
        assert_eq!((w, h), (5, 1));
        let grey: Vec<u8> = px.chunks(4).map(|p| p[0]).collect();
        assert_eq!(grey, vec![0, 128, 0, 255, 128]);
    }
}
