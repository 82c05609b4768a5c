//! diffusers `Attention` as used by the UNet's attention blocks (`_from_deprecated_attn_block`):
//! group norm → q, k, v over pixels → multi-head softmax(q kᵀ/√d) v → `to_out.0` → + residual,
//! divided by `rescale_output_factor`. Loads current (`to_q`, `to_out.0`) and legacy (`query`,
//! `proj_attn`) weight names.

use crate::backend::{Backend, BiasMode, MatmulSpec, Strides, Tensor};
use crate::error::{Error, Result};
use crate::model::layers::{GroupNorm, Linear};
use crate::model::weights::WeightView;

/// Scores of one attention call are kept under WebGPU's default 128 MiB storage binding.
const MAX_SCORE_ELEMENTS: usize = (128 << 20) / 4;

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
        let &[n, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "attention",
                format!("expected [N,C,H,W], got {:?}", x.shape()),
            ));
        };
        let p = h * w;
        let hd = c / self.heads;
        let heads = self.heads;
        let normed = match &self.group_norm {
            Some(gn) => gn.forward(b, x, false)?,
            None => x.clone(),
        };
        // 1. qkv[n, i, :] = W_qkv · x[n, :, i] + b — reads NCHW as a [pixels, channels] matrix.
        let qkv = b.matmul(
            &normed,
            &self.to_qkv.weight,
            Some(&self.to_qkv.bias),
            None,
            &[n, p, 3 * c],
            &MatmulSpec {
                m: p,
                n: 3 * c,
                k: c,
                batch: n,
                batch_inner: 1,
                a: Strides {
                    offset: 0,
                    row: 1,
                    col: p,
                    outer: c * p,
                    inner: 0,
                },
                b: self.to_qkv.weight_t(),
                c: Strides {
                    offset: 0,
                    row: 3 * c,
                    col: 1,
                    outer: p * 3 * c,
                    inner: 0,
                },
                alpha: 1.0,
                out_scale: 1.0,
                bias: BiasMode::PerCol,
            },
        )?;
        let per_sample = heads * p * p;
        if per_sample > MAX_SCORE_ELEMENTS {
            return Err(Error::unsupported(
                "attention size",
                format!("{heads} heads over {h}×{w} pixels ({per_sample} scores per sample)"),
                "at most 32M attention scores per sample (128 MiB)",
            ));
        }
        let chunk = (MAX_SCORE_ELEMENTS / per_sample).clamp(1, n);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut outs = Vec::new();
        for n0 in (0..n).step_by(chunk) {
            let nc = chunk.min(n - n0);
            let base = n0 * p * 3 * c;
            let qkv_s = |col: usize| Strides {
                offset: base + col,
                row: 3 * c,
                col: 1,
                outer: p * 3 * c,
                inner: hd,
            };
            // 2. scores[z, i, j] = q_i · k_j / √d for z = (sample, head).
            let mut kt = qkv_s(c);
            (kt.row, kt.col) = (1, 3 * c);
            let scores = b.matmul(
                &qkv,
                &qkv,
                None,
                None,
                &[nc * heads, p, p],
                &MatmulSpec {
                    m: p,
                    n: p,
                    k: hd,
                    batch: nc * heads,
                    batch_inner: heads,
                    a: qkv_s(0),
                    b: kt,
                    c: Strides {
                        offset: 0,
                        row: p,
                        col: 1,
                        outer: heads * p * p,
                        inner: p * p,
                    },
                    alpha: scale,
                    out_scale: 1.0,
                    bias: BiasMode::None,
                },
            )?;
            // 3. softmax over keys (max-subtracted: safe for any score range).
            let probs = b.softmax_rows(&scores, p)?;
            // 4. out[n, i, head·d + e] = Σ_j probs[z, i, j] v[n, j, head·d + e].
            let attn = b.matmul(
                &probs,
                &qkv,
                None,
                None,
                &[nc, p, c],
                &MatmulSpec {
                    m: p,
                    n: hd,
                    k: p,
                    batch: nc * heads,
                    batch_inner: heads,
                    a: Strides {
                        offset: 0,
                        row: p,
                        col: 1,
                        outer: heads * p * p,
                        inner: p * p,
                    },
                    b: qkv_s(2 * c),
                    c: Strides {
                        offset: 0,
                        row: c,
                        col: 1,
                        outer: p * c,
                        inner: hd,
                    },
                    alpha: 1.0,
                    out_scale: 1.0,
                    bias: BiasMode::None,
                },
            )?;
            outs.push(attn);
        }
        // 5. to_out, written straight back to NCHW, + residual, / rescale_output_factor.
        let attn = if outs.len() == 1 {
            outs.pop().expect("one chunk")
        } else {
            b.concat_batch(&outs)?
        };
        b.matmul(
            &attn,
            &self.to_out.weight,
            Some(&self.to_out.bias),
            Some(x),
            &[n, c, h, w],
            &MatmulSpec {
                m: p,
                n: c,
                k: c,
                batch: n,
                batch_inner: 1,
                a: Strides::row_major(p, c),
                b: self.to_out.weight_t(),
                c: Strides {
                    offset: 0,
                    row: 1,
                    col: p,
                    outer: c * p,
                    inner: 0,
                },
                alpha: 1.0,
                out_scale: 1.0 / self.rescale_output_factor,
                bias: BiasMode::PerCol,
            },
        )
    }
}
