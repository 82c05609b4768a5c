//! diffusers `AutoencoderKL`, config-driven: `encoder` → `quant_conv` → latent distribution, and
//! `post_quant_conv` → `decoder`. A latent diffusion model's UNet works on
//! `(z − shift_factor) · scaling_factor`; [`AutoencoderKL::decode_latents`] undoes that first.

use serde::Deserialize;

use crate::backend::{Backend, Conv2dParams, Tensor};
use crate::error::{Error, Result};
use crate::model::config::SampleSize;
use crate::model::layers::Conv2d;
use crate::model::limits;
use crate::model::vae::{CoderConfig, Decoder, Encoder};
use crate::model::weights::{WeightView, Weights};

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn groups() -> usize {
    32
}
fn silu() -> String {
    "silu".into()
}
fn down_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn up_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn channels() -> Vec<usize> {
    vec![64]
}
fn scaling() -> f32 {
    0.18215
}

/// The fields of diffusers' `AutoencoderKL.__init__`, with its defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AutoencoderKLConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "up_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "scaling")]
    pub scaling_factor: f32,
    #[serde(default)]
    pub shift_factor: Option<f32>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    pub fn from_json(text: &str, path: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Spatial factor between image and latents: 2^(blocks − 1).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return Err(Error::config(
                "vae block_out_channels",
                format!(
                    "must be non-empty and positive, got {:?}",
                    self.block_out_channels
                ),
            ));
        }
        limits::check_blocks(
            "vae block_out_channels",
            &self.block_out_channels,
            self.layers_per_block,
        )?;
        for (field, v) in [
            ("vae in_channels", self.in_channels),
            ("vae out_channels", self.out_channels),
            ("vae latent_channels", self.latent_channels),
        ] {
            limits::at_most(field, v, limits::MAX_CHANNELS)?;
        }
        for (field, types, want) in [
            (
                "vae down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            (
                "vae up_block_types",
                &self.up_block_types,
                "UpDecoderBlock2D",
            ),
        ] {
            if types.len() != n {
                return Err(Error::config(
                    field,
                    format!(
                        "{} entries but block_out_channels has {n} (diffusers requires the same number)",
                        types.len()
                    ),
                ));
            }
            if let Some(t) = types.iter().find(|t| t.as_str() != want) {
                return Err(Error::unsupported(
                    &format!("block type in `{field}`"),
                    t,
                    want,
                ));
            }
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(Error::unsupported(
                "vae `act_fn`",
                &self.act_fn,
                "silu (swish)",
            ));
        }
        if self.in_channels == 0
            || self.out_channels == 0
            || self.latent_channels == 0
            || self.layers_per_block == 0
        {
            return Err(Error::config(
                "vae in_channels/out_channels/latent_channels/layers_per_block",
                "must be positive",
            ));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return Err(Error::config(
                "vae norm_num_groups",
                format!(
                    "{g} must divide every entry of block_out_channels {:?}",
                    self.block_out_channels
                ),
            ));
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return Err(Error::config(
                "vae scaling_factor",
                format!("must be finite and non-zero, got {}", self.scaling_factor),
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err(Error::config("vae shift_factor", "must be finite"));
        }
        Ok(())
    }

    fn coder(&self) -> CoderConfig {
        CoderConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            mid_block_add_attention: self.mid_block_add_attention,
        }
    }
}

pub struct AutoencoderKL<B: Backend> {
    pub config: AutoencoderKLConfig,
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Builds the model from its config and weights; every tensor of `weights` must be used.
    pub fn load(b: &B, config: AutoencoderKLConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        let vs = WeightView::root(weights);
        let coder = config.coder();
        let l = config.latent_channels;
        let one = Conv2dParams::same(1);
        let encoder = Encoder::load(b, &vs.pp("encoder"), &coder, config.in_channels, l)?;
        let decoder = Decoder::load(b, &vs.pp("decoder"), &coder, l, config.out_channels)?;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(b, &vs.pp("quant_conv"), 2 * l, 2 * l, 1, one)?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::load(b, &vs.pp("post_quant_conv"), l, l, 1, one)?)
        } else {
            None
        };
        weights.check_all_used()?;
        Ok(Self {
            config,
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
        })
    }

    fn check_input(&self, x: &B::Tensor, channels: usize, what: &str) -> Result<()> {
        let f = self.config.downscale_factor();
        match x.shape() {
            &[n, c, h, w] if n > 0 && c == channels && h > 0 && w > 0 => {
                if what == "image" && (h % f != 0 || w % f != 0) {
                    return Err(Error::input(
                        what,
                        format!("{h}×{w} is not a multiple of the VAE's downscale factor {f}"),
                    ));
                }
                Ok(())
            }
            s => Err(Error::input(
                what,
                format!("expected [N, {channels}, H, W], got {s:?}"),
            )),
        }
    }

    /// `vae.encode(x).latent_dist` as its moments `[N, 2·latent, H/f, W/f]` (mean, log-variance);
    /// see [`crate::model::vae::DiagonalGaussian`].
    pub fn encode(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.check_input(x, self.config.in_channels, "image")?;
        let h = self.encoder.forward(b, x)?;
        match &self.quant_conv {
            Some(q) => q.forward(b, &h),
            None => Ok(h),
        }
    }

    /// `vae.decode(z).sample` for unscaled latents `z`.
    pub fn decode(&self, b: &B, z: &B::Tensor) -> Result<B::Tensor> {
        self.check_input(z, self.config.latent_channels, "latents")?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(b, z)?,
            None => z.clone(),
        };
        self.decoder.forward(b, &z)
    }

    /// Decodes the diffusion model's latents: `decode(latents / scaling_factor + shift_factor)`.
    pub fn decode_latents(&self, b: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        let z = b.affine(
            latents,
            1.0 / self.config.scaling_factor,
            self.config.shift_factor.unwrap_or(0.0),
        )?;
        self.decode(b, &z)
    }

    /// Host-side inverse of [`Self::decode_latents`]'s scaling: `(z − shift) · scaling_factor`.
    pub fn scale_latents(&self, z: &[f32]) -> Vec<f32> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        z.iter()
            .map(|v| (v - shift) * self.config.scaling_factor)
            .collect()
    }
}
