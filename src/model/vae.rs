//! diffusers' `autoencoders/vae.py`: the VAE `Encoder` (conv_in → `DownEncoderBlock2D`s → mid
//! block → norm, SiLU, conv_out to the distribution's moments) and `Decoder` (conv_in → mid block →
//! `UpDecoderBlock2D`s → norm, SiLU, conv_out), and `DiagonalGaussianDistribution`.
//! Neither takes a time embedding; every norm uses eps 1e-6 and the mid attention has one head.

use crate::backend::{Backend, Conv2dParams, ConvEpilogue};
use crate::error::Result;
use crate::model::blocks::{
    AttnConfig, BlockResample, DownBlock2D, UNetMidBlock2D, UpDecoderBlock2D,
};
use crate::model::config::TimeScaleShift;
use crate::model::layers::{Conv2d, GroupNorm};
use crate::model::resnet::ResnetConfig;
use crate::model::weights::WeightView;

/// diffusers hard-codes `resnet_eps=1e-6` in both halves of the VAE.
pub const VAE_EPS: f32 = 1e-6;

/// The shared shape of an encoder or decoder (from `AutoencoderKL`'s config).
#[derive(Clone, Debug)]
pub struct CoderConfig {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub mid_block_add_attention: bool,
}

impl CoderConfig {
    fn resnet(&self) -> ResnetConfig {
        ResnetConfig {
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: VAE_EPS,
            time_embedding_norm: TimeScaleShift::Default,
            output_scale_factor: 1.0,
        }
    }

    /// `UNetMidBlock2D(attention_head_dim=channels)` with group-normed attention.
    fn mid<B: Backend>(&self, b: &B, vs: &WeightView, c: usize) -> Result<UNetMidBlock2D<B>> {
        let attn = AttnConfig {
            head_dim: c,
            norm_groups: Some(self.norm_num_groups),
            eps: VAE_EPS,
            rescale_output_factor: 1.0,
        };
        UNetMidBlock2D::load(
            b,
            vs,
            c,
            self.resnet(),
            self.mid_block_add_attention.then_some(attn),
        )
    }
}

pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownBlock2D<B>>,
    pub mid_block: UNetMidBlock2D<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// `out_channels` is the latent channel count; the encoder writes twice that (`double_z`).
    pub fn load(
        b: &B,
        vs: &WeightView,
        cfg: &CoderConfig,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let same = Conv2dParams::same(3);
        let conv_in = Conv2d::load(b, &vs.pp("conv_in"), in_channels, ch[0], 3, same)?;
        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channel = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = c;
            // `DownEncoderBlock2D(downsample_padding=0)`: pad (0, 1, 0, 1), stride-2 conv.
            down_blocks.push(DownBlock2D::load(
                b,
                &vs.pp("down_blocks").pp(i),
                input_channel,
                output_channel,
                cfg.layers_per_block,
                (i + 1 != n).then_some(BlockResample::Conv { padding: 0 }),
                cfg.resnet(),
                None,
            )?);
        }
        let last = ch[n - 1];
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: cfg.mid(b, &vs.pp("mid_block"), last)?,
            conv_norm_out: GroupNorm::load(
                b,
                &vs.pp("conv_norm_out"),
                cfg.norm_num_groups,
                last,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load(b, &vs.pp("conv_out"), last, 2 * out_channels, 3, same)?,
        })
    }

    /// `x: [N, C, H, W]` → moments `[N, 2·latent, H/f, W/f]` (mean, then log-variance).
    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut h = self.conv_in.forward(b, x)?;
        for block in &self.down_blocks {
            h = block.forward(b, &h, None)?.0;
        }
        h = self.mid_block.forward(b, &h, None)?;
        self.conv_out
            .forward_normed(b, &h, &self.conv_norm_out, true, ConvEpilogue::none())
    }
}

pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: UNetMidBlock2D<B>,
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        cfg: &CoderConfig,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let same = Conv2dParams::same(3);
        let conv_in = Conv2d::load(b, &vs.pp("conv_in"), in_channels, rev[0], 3, same)?;
        let mid_block = cfg.mid(b, &vs.pp("mid_block"), rev[0])?;
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channel = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = c;
            up_blocks.push(UpDecoderBlock2D::load(
                b,
                &vs.pp("up_blocks").pp(i),
                prev_output_channel,
                output_channel,
                cfg.layers_per_block + 1,
                i + 1 != n,
                cfg.resnet(),
            )?);
        }
        let first = cfg.block_out_channels[0];
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                b,
                &vs.pp("conv_norm_out"),
                cfg.norm_num_groups,
                first,
                VAE_EPS,
            )?,
            conv_out: Conv2d::load(b, &vs.pp("conv_out"), first, out_channels, 3, same)?,
        })
    }

    /// `z: [N, latent, h, w]` → image `[N, C, h·f, w·f]`.
    pub fn forward(&self, b: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let mut h = self.conv_in.forward(b, z)?;
        h = self.mid_block.forward(b, &h, None)?;
        for block in &self.up_blocks {
            h = block.forward(b, &h)?;
        }
        self.conv_out
            .forward_normed(b, &h, &self.conv_norm_out, true, ConvEpilogue::none())
    }
}

/// `DiagonalGaussianDistribution` of the encoder's moments, on the host (latents are small).
#[derive(Clone, Debug)]
pub struct DiagonalGaussian {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// `[N, latent, h, w]`.
    pub shape: [usize; 4],
}

impl DiagonalGaussian {
    /// Splits moments `[N, 2L, h, w]` into mean and `exp(0.5 · clamp(logvar, −30, 20))`.
    pub fn from_moments(moments: &[f32], shape: [usize; 4]) -> Self {
        let [n, c2, h, w] = shape;
        let l = c2 / 2;
        let plane = l * h * w;
        let mut mean = Vec::with_capacity(n * plane);
        let mut std = Vec::with_capacity(n * plane);
        for i in 0..n {
            let base = i * 2 * plane;
            mean.extend_from_slice(&moments[base..base + plane]);
            std.extend(
                moments[base + plane..base + 2 * plane]
                    .iter()
                    .map(|&lv| (0.5 * lv.clamp(-30.0, 20.0)).exp()),
            );
        }
        Self {
            mean,
            std,
            shape: [n, l, h, w],
        }
    }

    /// `mean + std · ε` for standard-normal `eps` of the same length (`.sample()`).
    pub fn sample(&self, eps: &[f32]) -> Vec<f32> {
        self.mean
            .iter()
            .zip(&self.std)
            .zip(eps)
            .map(|((m, s), e)| m + s * e)
            .collect()
    }
}
