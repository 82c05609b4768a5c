//! The torch.nn layers diffusers builds its blocks from (`Conv2d`, `GroupNorm`, `Linear`),
//! holding backend tensors and loaded through a [`WeightView`].

use crate::backend::{
    Backend, BiasMode, Conv2dParams, ConvEpilogue, InputNorm, MatmulSpec, Strides, Tensor,
};
use crate::error::Result;
use crate::model::weights::WeightView;

/// `nn.Conv2d` with bias.
pub struct Conv2d<B: Backend> {
    pub weight: B::Tensor,
    pub bias: B::Tensor,
    pub params: Conv2dParams,
}

impl<B: Backend> Conv2d<B> {
    pub fn load(
        b: &B,
        vs: &WeightView,
        cin: usize,
        cout: usize,
        kernel: usize,
        params: Conv2dParams,
    ) -> Result<Self> {
        let wshape = [cout, cin, kernel, kernel];
        Ok(Self {
            weight: b.upload_weight(&wshape, &vs.get("weight", &wshape)?)?,
            bias: b.upload(&[cout], &vs.get("bias", &[cout])?)?,
            params,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.conv2d(x, &self.weight, Some(&self.bias), self.params)
    }

    /// The convolution with `epilogue` fused into its store ([`ConvEpilogue`]).
    pub fn forward_epilogue(
        &self,
        b: &B,
        x: &B::Tensor,
        epilogue: ConvEpilogue<'_, B::Tensor>,
    ) -> Result<B::Tensor> {
        b.conv2d_epilogue(x, &self.weight, Some(&self.bias), self.params, epilogue)
    }

    /// `norm` (then SiLU if `silu`) followed by the convolution with `epilogue`, fused where the
    /// backend can ([`Backend::group_norm_conv2d`]).
    pub fn forward_normed(
        &self,
        b: &B,
        x: &B::Tensor,
        norm: &GroupNorm<B>,
        silu: bool,
        epilogue: ConvEpilogue<'_, B::Tensor>,
    ) -> Result<B::Tensor> {
        let norm = InputNorm {
            gamma: &norm.weight,
            beta: &norm.bias,
            groups: norm.groups,
            eps: norm.eps,
            silu,
        };
        b.group_norm_conv2d(
            x,
            norm,
            &self.weight,
            Some(&self.bias),
            self.params,
            epilogue,
        )
    }
}

/// `nn.GroupNorm` with affine weights; `forward_silu` fuses the activation that follows it.
pub struct GroupNorm<B: Backend> {
    pub weight: B::Tensor,
    pub bias: B::Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl<B: Backend> GroupNorm<B> {
    pub fn load(b: &B, vs: &WeightView, groups: usize, channels: usize, eps: f32) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::error::Error::config(
                "norm_num_groups",
                format!(
                    "GroupNorm `{}`: num_groups ({groups}) must divide num_channels ({channels})",
                    vs.key("weight")
                ),
            ));
        }
        Ok(Self {
            weight: b.upload(&[channels], &vs.get("weight", &[channels])?)?,
            bias: b.upload(&[channels], &vs.get("bias", &[channels])?)?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor, silu: bool) -> Result<B::Tensor> {
        b.group_norm(x, &self.weight, &self.bias, self.groups, self.eps, silu)
    }
}

/// `nn.Linear`: `y = x Wᵀ + b` on `[M, in]` rows.
pub struct Linear<B: Backend> {
    pub weight: B::Tensor,
    pub bias: B::Tensor,
    pub in_features: usize,
    pub out_features: usize,
}

impl<B: Backend> Linear<B> {
    pub fn load(b: &B, vs: &WeightView, in_features: usize, out_features: usize) -> Result<Self> {
        Self::from_host(
            b,
            &vs.get("weight", &[out_features, in_features])?,
            &vs.get("bias", &[out_features])?,
            in_features,
            out_features,
        )
    }

    pub fn from_host(
        b: &B,
        weight: &[f32],
        bias: &[f32],
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: b.upload_weight(&[out_features, in_features], weight)?,
            bias: b.upload(&[out_features], bias)?,
            in_features,
            out_features,
        })
    }

    /// The matmul reading `Wᵀ` in place: `B[k][n] = W[n][k]`.
    pub fn weight_t(&self) -> Strides {
        Strides {
            offset: 0,
            row: 1,
            col: self.in_features,
            outer: 0,
            inner: 0,
        }
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let m = x.numel() / self.in_features;
        let spec = MatmulSpec {
            m,
            n: self.out_features,
            k: self.in_features,
            batch: 1,
            batch_inner: 1,
            a: Strides::row_major(m, self.in_features),
            b: self.weight_t(),
            c: Strides::row_major(m, self.out_features),
            alpha: 1.0,
            out_scale: 1.0,
            bias: BiasMode::PerCol,
        };
        b.matmul(
            x,
            &self.weight,
            Some(&self.bias),
            None,
            &[m, self.out_features],
            &spec,
        )
    }
}
