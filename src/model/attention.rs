//! diffusers `Attention` as used by the UNet's attention blocks (`_from_deprecated_attn_block`):
//! group norm → q, k, v over pixels → multi-head softmax(q kᵀ/√d) v → `to_out.0` → + residual,
//! divided by `rescale_output_factor`. Loads current (`to_q`, `to_out.0`) and legacy (`query`,
//! `proj_attn`) weight names.

use crate::backend::{AttentionWeights, Backend};
use crate::error::{Error, Result};
use crate::model::layers::{GroupNorm, Linear};
use crate::model::weights::WeightView;

pub struct Attention<B: Backend> {
    pub group_norm: Option<GroupNorm<B>>,
    /// `to_q`, `to_k` and `to_v` stacked into one `[3C, C]` projection: one matmul instead of three.
    pub to_qkv: Linear<B>,
    pub to_out: Linear<B>,
    pub channels: usize,
    pub heads: usize,
    pub rescale_output_factor: f32,
}

impl<B: Backend> Attention<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        channels: usize,
        head_dim: usize,
        norm_groups: Option<usize>,
        eps: f32,
        rescale_output_factor: f32,
    ) -> Result<Self> {
        // diffusers: heads = channels // attention_head_dim, inner dim = heads * head_dim.
        let heads = channels / head_dim.max(1);
        if heads == 0 || heads * head_dim != channels {
            return Err(Error::unsupported(
                "attention layout",
                format!("{channels} channels with attention_head_dim {head_dim}"),
                "attention_head_dim dividing the block's channels",
            ));
        }
        let c = channels;
        let mut w = Vec::with_capacity(3 * c * c);
        let mut bias = Vec::with_capacity(3 * c);
        for (new, legacy) in [("to_q", "query"), ("to_k", "key"), ("to_v", "value")] {
            let (nw, lw) = (format!("{new}.weight"), format!("{legacy}.weight"));
            let (nb, lb) = (format!("{new}.bias"), format!("{legacy}.bias"));
            w.extend(vs.get_any(&[&nw, &lw], &[c, c])?);
            bias.extend(vs.get_any(&[&nb, &lb], &[c])?);
        }
        let to_out = Linear::from_host(
            b,
            &vs.get_any(&["to_out.0.weight", "proj_attn.weight"], &[c, c])?,
            &vs.get_any(&["to_out.0.bias", "proj_attn.bias"], &[c])?,
            c,
            c,
        )?;
        Ok(Self {
            group_norm: match norm_groups {
                Some(g) => Some(GroupNorm::load(b, &vs.pp("group_norm"), g, c, eps)?),
                None => None,
            },
            to_qkv: Linear::from_host(b, &w, &bias, c, 3 * c)?,
            to_out,
            channels,
            heads,
            rescale_output_factor,
        })
    }

    /// `x: [N, C, H, W]` → same shape.
    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let normed = match &self.group_norm {
            Some(gn) => gn.forward(b, x, false)?,
            None => x.clone(),
        };
        b.attention(
            &normed,
            x,
            AttentionWeights {
                qkv: &self.to_qkv.weight,
                qkv_bias: &self.to_qkv.bias,
                out: &self.to_out.weight,
                out_bias: &self.to_out.bias,
            },
            self.heads,
            self.rescale_output_factor,
        )
    }
}
