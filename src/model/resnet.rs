//! diffusers `ResnetBlock2D` (pre-norm, SiLU, time embedding added (`default`) or as
//! scale-and-shift after the second norm (`scale_shift`), 1×1 `conv_shortcut` when channels change),
//! and its `down=True` / `up=True` form, the downsampler and upsampler of `ResnetDownsampleBlock2D`,
//! `ResnetUpsampleBlock2D` and of attention blocks with `downsample_type` / `upsample_type`
//! `"resnet"`.

use crate::backend::{Backend, Conv2dParams, ConvEpilogue};
use crate::error::Result;
use crate::model::config::TimeScaleShift;
use crate::model::layers::{Conv2d, GroupNorm, Linear};
use crate::model::weights::WeightView;

pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    /// `None` where diffusers builds the block with `temb_channels=None` (the VAE).
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    pub time_embedding_norm: TimeScaleShift,
    pub out_channels: usize,
    pub output_scale_factor: f32,
    /// `down=True` / `up=True`: both the input and `silu(norm1(x))` are resampled before `conv1`.
    pub resample: Option<Resample>,
}

/// How a resampling `ResnetBlock2D` changes the size (diffusers' `Downsample2D` / `Upsample2D`
/// without a conv).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// 2×2 average pooling.
    Down,
    /// Nearest-neighbour 2× upsampling.
    Up,
}

/// Settings shared by every resnet of a UNet.
#[derive(Clone, Copy, Debug)]
pub struct ResnetConfig {
    /// `None`: no time embedding (the VAE's encoder and decoder).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
    pub time_embedding_norm: TimeScaleShift,
    pub output_scale_factor: f32,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        in_channels: usize,
        out_channels: usize,
        cfg: ResnetConfig,
    ) -> Result<Self> {
        let temb_out = match cfg.time_embedding_norm {
            TimeScaleShift::Default => out_channels,
            TimeScaleShift::ScaleShift => 2 * out_channels,
        };
        let same = Conv2dParams::same(3);
        Ok(Self {
            norm1: GroupNorm::load(b, &vs.pp("norm1"), cfg.groups, in_channels, cfg.eps)?,
            conv1: Conv2d::load(b, &vs.pp("conv1"), in_channels, out_channels, 3, same)?,
            time_emb_proj: match cfg.temb_channels {
                Some(t) => Some(Linear::load(b, &vs.pp("time_emb_proj"), t, temb_out)?),
                None => None,
            },
            norm2: GroupNorm::load(b, &vs.pp("norm2"), cfg.groups, out_channels, cfg.eps)?,
            conv2: Conv2d::load(b, &vs.pp("conv2"), out_channels, out_channels, 3, same)?,
            conv_shortcut: if in_channels != out_channels {
                Some(Conv2d::load(
                    b,
                    &vs.pp("conv_shortcut"),
                    in_channels,
                    out_channels,
                    1,
                    Conv2dParams::same(1),
                )?)
            } else {
                None
            },
            time_embedding_norm: cfg.time_embedding_norm,
            out_channels,
            output_scale_factor: cfg.output_scale_factor,
            resample: None,
        })
    }

    /// A `ResnetBlock2D(channels, channels, down=True)` (or `up=True`): a block's resampler.
    pub fn load_resampling(
        b: &B,
        vs: &WeightView,
        channels: usize,
        cfg: ResnetConfig,
        resample: Resample,
    ) -> Result<Self> {
        Ok(Self {
            resample: Some(resample),
            ..Self::load(b, vs, channels, channels, cfg)?
        })
    }

    /// `temb_act` is `silu(emb)`: every resnet applies the same activation to the same embedding,
    /// so the UNet computes it once per forward. `None` for blocks without a time embedding.
    pub fn forward(
        &self,
        b: &B,
        input: &B::Tensor,
        temb_act: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let temb = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(t)) => Some(proj.forward(b, t)?),
            (None, _) => None,
            (Some(_), None) => {
                return Err(crate::error::Error::Other(
                    "ResnetBlock2D with time_emb_proj called without a time embedding".into(),
                ))
            }
        };
        // Each norm → SiLU → conv runs as one op, fused where the backend can
        // ([`Conv2d::forward_normed`]). `h = conv1(silu(norm1(x)))`, with the `default` time
        // embedding `temb[:, :, None, None]` added as the convolution stores.
        let channel_add = match (self.time_embedding_norm, &temb) {
            (TimeScaleShift::Default, Some(temb)) => Some(temb),
            _ => None,
        };
        let add = ConvEpilogue {
            channel_add,
            ..ConvEpilogue::none()
        };
        let (h, input) = match self.resample {
            None => (
                self.conv1
                    .forward_normed(b, input, &self.norm1, true, add)?,
                input.clone(),
            ),
            Some(r) => {
                let resample = |x: &B::Tensor| match r {
                    Resample::Down => b.avg_pool2x2(x),
                    Resample::Up => b.upsample_nearest2x(x),
                };
                let h = resample(&self.norm1.forward(b, input, true)?)?;
                (self.conv1.forward_epilogue(b, &h, add)?, resample(input)?)
            }
        };
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(b, &input)?,
            None => input,
        };
        // `(shortcut + conv2(h)) / output_scale_factor`, as the convolution stores.
        let out = ConvEpilogue {
            channel_add: None,
            residual: Some(&shortcut),
            scale: 1.0 / self.output_scale_factor,
        };
        match (self.time_embedding_norm, &temb) {
            (TimeScaleShift::ScaleShift, Some(temb)) => {
                // `scale, shift = temb.chunk(2, dim=1)`; `h = norm2(h) * (1 + scale) + shift`
                let h = self.norm2.forward(b, &h, false)?;
                let h = b.channel_modulate(&h, temb, self.out_channels, Some(0))?;
                self.conv2.forward_epilogue(b, &b.silu(&h)?, out)
            }
            _ => self.conv2.forward_normed(b, &h, &self.norm2, true, out),
        }
    }
}
