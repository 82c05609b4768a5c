//! diffusers' UNet blocks: `DownBlock2D` / `AttnDownBlock2D` / `ResnetDownsampleBlock2D`,
//! `UNetMidBlock2D` (with or without attention) and `UpBlock2D` / `AttnUpBlock2D` /
//! `ResnetUpsampleBlock2D`, with their `Downsample2D` / `Upsample2D` or resampling
//! `ResnetBlock2D`; and the VAE's `DownEncoderBlock2D` (a [`DownBlock2D`] without time embedding
//! or skips) and [`UpDecoderBlock2D`].

use crate::backend::{Backend, Conv2dParams};
use crate::error::{Error, Result};
use crate::model::attention::Attention;
use crate::model::layers::Conv2d;
use crate::model::resnet::{Resample, ResnetBlock2D, ResnetConfig};
use crate::model::weights::WeightView;

/// Attention settings of a block: heads from `attention_head_dim`, norm groups, eps.
#[derive(Clone, Copy, Debug)]
pub struct AttnConfig {
    pub head_dim: usize,
    pub norm_groups: Option<usize>,
    pub eps: f32,
    pub rescale_output_factor: f32,
}

impl AttnConfig {
    /// The block's `Attention` over `channels` at `vs`.
    pub fn load<B: Backend>(
        &self,
        b: &B,
        vs: &WeightView,
        channels: usize,
    ) -> Result<Attention<B>> {
        Attention::load(
            b,
            vs,
            channels,
            self.head_dim,
            self.norm_groups,
            self.eps,
            self.rescale_output_factor,
        )
    }
}

/// How a block changes the size at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockResample {
    /// `Downsample2D(use_conv=True)` with this `downsample_padding` (a stride-2 3×3 conv), or
    /// `Upsample2D(use_conv=True)` (nearest 2×, then a 3×3 conv; the padding is unused).
    Conv { padding: usize },
    /// A `ResnetBlock2D` with `down=True` / `up=True` (`ResnetDownsampleBlock2D`,
    /// `ResnetUpsampleBlock2D`, `downsample_type` / `upsample_type` `"resnet"`).
    Resnet,
}

/// A block's downsampler or upsampler.
pub enum Resampler<B: Backend> {
    /// The conv of a `Downsample2D` / `Upsample2D`.
    Conv(Conv2d<B>),
    Resnet(ResnetBlock2D<B>),
}

/// `DownBlock2D` (no attention), `AttnDownBlock2D` or `ResnetDownsampleBlock2D`.
pub struct DownBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Attention<B>>,
    pub downsampler: Option<Resampler<B>>,
}

#[allow(clippy::too_many_arguments)]
impl<B: Backend> DownBlock2D<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        downsample: Option<BlockResample>,
        resnet: ResnetConfig,
        attn: Option<AttnConfig>,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            let cin = if i == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::load(
                b,
                &vs.pp("resnets").pp(i),
                cin,
                out_channels,
                resnet,
            )?);
            if let Some(a) = attn {
                attentions.push(a.load(b, &vs.pp("attentions").pp(i), out_channels)?);
            }
        }
        let dvs = vs.pp("downsamplers").pp(0);
        let downsampler =
            match downsample {
                None => None,
                // `Downsample2D`: padding 0 means F.pad(x, (0, 1, 0, 1)) then a stride-2 conv.
                Some(BlockResample::Conv { padding: p }) => {
                    let params = Conv2dParams {
                        stride: 2,
                        pad: if p == 0 { [0, 0, 1, 1] } else { [p, p, p, p] },
                    };
                    let conv =
                        Conv2d::load(b, &dvs.pp("conv"), out_channels, out_channels, 3, params)?;
                    Some(Resampler::Conv(conv))
                }
                Some(BlockResample::Resnet) => Some(Resampler::Resnet(
                    ResnetBlock2D::load_resampling(b, &dvs, out_channels, resnet, Resample::Down)?,
                )),
            };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and the skip states (one per resnet, plus the downsampled one).
    pub fn forward(
        &self,
        b: &B,
        x: &B::Tensor,
        temb: Option<&B::Tensor>,
    ) -> Result<(B::Tensor, Vec<B::Tensor>)> {
        let mut h = x.clone();
        let mut states = Vec::new();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(b, &h, temb)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(b, &h)?;
            }
            states.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = match d {
                Resampler::Conv(conv) => conv.forward(b, &h)?,
                Resampler::Resnet(resnet) => resnet.forward(b, &h, temb)?,
            };
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// `UNetMidBlock2D`: resnet, then (attention, resnet) once.
pub struct UNetMidBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attention: Option<Attention<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        channels: usize,
        resnet: ResnetConfig,
        attn: Option<AttnConfig>,
    ) -> Result<Self> {
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::load(b, &vs.pp("resnets").pp(i), channels, channels, resnet))
            .collect::<Result<Vec<_>>>()?;
        let attention = match attn {
            Some(a) => Some(a.load(b, &vs.pp("attentions").pp(0), channels)?),
            None => None,
        };
        Ok(Self { resnets, attention })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor, temb: Option<&B::Tensor>) -> Result<B::Tensor> {
        let mut h = self.resnets[0].forward(b, x, temb)?;
        if let Some(a) = &self.attention {
            h = a.forward(b, &h)?;
        }
        self.resnets[1].forward(b, &h, temb)
    }
}

/// `UpBlock2D` (no attention), `AttnUpBlock2D` or `ResnetUpsampleBlock2D`.
pub struct UpBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Attention<B>>,
    pub upsampler: Option<Resampler<B>>,
}

#[allow(clippy::too_many_arguments)]
impl<B: Backend> UpBlock2D<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        in_channels: usize,
        prev_output_channel: usize,
        out_channels: usize,
        num_layers: usize,
        upsample: Option<BlockResample>,
        resnet: ResnetConfig,
        attn: Option<AttnConfig>,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            let res_skip = if i == num_layers - 1 {
                in_channels
            } else {
                out_channels
            };
            let resnet_in = if i == 0 {
                prev_output_channel
            } else {
                out_channels
            };
            resnets.push(ResnetBlock2D::load(
                b,
                &vs.pp("resnets").pp(i),
                resnet_in + res_skip,
                out_channels,
                resnet,
            )?);
            if let Some(a) = attn {
                attentions.push(a.load(b, &vs.pp("attentions").pp(i), out_channels)?);
            }
        }
        let uvs = vs.pp("upsamplers").pp(0);
        let upsampler =
            match upsample {
                None => None,
                Some(BlockResample::Conv { .. }) => Some(Resampler::Conv(Conv2d::load(
                    b,
                    &uvs.pp("conv"),
                    out_channels,
                    out_channels,
                    3,
                    Conv2dParams::same(3),
                )?)),
                Some(BlockResample::Resnet) => Some(Resampler::Resnet(
                    ResnetBlock2D::load_resampling(b, &uvs, out_channels, resnet, Resample::Up)?,
                )),
            };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Consumes skip states from the end of `skips`, as diffusers' `res_hidden_states_tuple[-1]`.
    pub fn forward(
        &self,
        b: &B,
        x: &B::Tensor,
        skips: &mut Vec<B::Tensor>,
        temb: &B::Tensor,
    ) -> Result<B::Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                Error::Other("UNet skip connections ran out (inconsistent block layout)".into())
            })?;
            h = b.concat_channels(&h, &skip)?;
            h = resnet.forward(b, &h, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(b, &h)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = match u {
                Resampler::Conv(conv) => conv.forward(b, &b.upsample_nearest2x(&h)?)?,
                Resampler::Resnet(resnet) => resnet.forward(b, &h, Some(temb))?,
            };
        }
        Ok(h)
    }
}

/// `UpDecoderBlock2D`: resnets without skip connections or time embedding, then `Upsample2D`.
pub struct UpDecoderBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsampler: Option<Conv2d<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        add_upsample: bool,
        resnet: ResnetConfig,
    ) -> Result<Self> {
        let resnets = (0..num_layers)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { out_channels };
                ResnetBlock2D::load(b, &vs.pp("resnets").pp(i), cin, out_channels, resnet)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Conv2d::load(
                b,
                &vs.pp("upsamplers").pp(0).pp("conv"),
                out_channels,
                out_channels,
                3,
                Conv2dParams::same(3),
            )?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut h = x.clone();
        for resnet in &self.resnets {
            h = resnet.forward(b, &h, None)?;
        }
        if let Some(u) = &self.upsampler {
            h = b.upsample_nearest2x(&h)?;
            h = u.forward(b, &h)?;
        }
        Ok(h)
    }
}
