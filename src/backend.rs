//! The `Backend` trait: the op set the model code is written against, once, for the CPU and the GPU.
//!
//! Each op validates shapes through the shared `ops::*::check` functions, so a wrong shape is an
//! error naming the op and the shapes on both backends, never an out-of-bounds read on the GPU.

use std::future::Future;

use crate::error::Result;

/// A tensor handle: dense, row-major (NCHW for images), f32.
pub trait Tensor: Clone {
    fn shape(&self) -> &[usize];
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// What a convolution adds to its output before it is stored: `(residual + (conv + bias +
/// channel_add[n, c])) · scale`, the steps a ResnetBlock2D takes around its two convolutions (the
/// `default` time embedding after the first; the shortcut and `output_scale_factor` after the
/// second), fused so that they cost no pass of their own.
pub struct ConvEpilogue<'a, T> {
    /// `[N, Co]`, added to every pixel of channel `c` of image `n`.
    pub channel_add: Option<&'a T>,
    /// The output's shape; added after the channel term, before the scale.
    pub residual: Option<&'a T>,
    pub scale: f32,
}

// By hand: a derive would ask `T: Copy`, and only references are copied.
impl<T> Clone for ConvEpilogue<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ConvEpilogue<'_, T> {}

impl<T> ConvEpilogue<'_, T> {
    /// Adds nothing, scales by 1.
    pub fn none() -> Self {
        Self {
            channel_add: None,
            residual: None,
            scale: 1.0,
        }
    }
}

/// The group normalisation (optionally followed by SiLU) that precedes a convolution, for
/// [`Backend::group_norm_conv2d`]: `gamma`, `beta` are `[Ci]`.
pub struct InputNorm<'a, T> {
    pub gamma: &'a T,
    pub beta: &'a T,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// An attention layer's projections, for [`Backend::attention`]: `qkv` is `[3C, C]` (`to_q`,
/// `to_k` and `to_v` stacked), `qkv_bias` `[3C]`, `out` `[C, C]` (`to_out.0`), `out_bias` `[C]`.
pub struct AttentionWeights<'a, T> {
    pub qkv: &'a T,
    pub qkv_bias: &'a T,
    pub out: &'a T,
    pub out_bias: &'a T,
}

/// 2-D convolution settings: `pad` is `[top, left, bottom, right]` (diffusers' `downsample_padding=0`
/// pads only bottom and right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl Conv2dParams {
    pub fn same(kernel: usize) -> Self {
        let p = kernel / 2;
        Self {
            stride: 1,
            pad: [p, p, p, p],
        }
    }
}

/// Element strides of one operand of a batched matmul. Batch index `z` splits into
/// `outer = z / batch_inner`, `inner = z % batch_inner` so that `[batch, heads]` views need no copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strides {
    pub offset: usize,
    pub row: usize,
    pub col: usize,
    pub outer: usize,
    pub inner: usize,
}

impl Strides {
    /// A dense row-major `rows × cols` matrix per batch entry.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self {
            offset: 0,
            row: cols,
            col: 1,
            outer: rows * cols,
            inner: 0,
        }
    }
}

/// Where a matmul bias is broadcast: one value per output row or per output column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BiasMode {
    #[default]
    None,
    PerRow,
    PerCol,
}

/// `C[z] = (alpha · A[z]·B[z] + bias + residual[z]) · out_scale` for `z < batch`, with `A` `m×k`,
/// `B` `k×n` and every operand addressed through its own strides; `residual` uses `C`'s strides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub batch_inner: usize,
    pub a: Strides,
    pub b: Strides,
    pub c: Strides,
    pub alpha: f32,
    pub out_scale: f32,
    pub bias: BiasMode,
}

/// The ops a diffusers UNet needs. Implemented by [`crate::cpu::CpuBackend`] and
/// [`crate::gpu::GpuBackend`].
pub trait Backend: 'static {
    type Tensor: Tensor + 'static;

    /// A short human-readable name ("cpu", or the GPU adapter's name and API).
    fn name(&self) -> String;

    /// Copies host data into a new tensor.
    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor>;

    /// Copies a layer's weights into a new tensor, in the precision the backend keeps weights
    /// in (the GPU's f16 weights, [`crate::gpu::GpuContext::f16_weights`]). Only a convolution's
    /// `w` and a matmul's `b` (a linear layer's weights) receive such a tensor.
    fn upload_weight(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor> {
        self.upload(shape, data)
    }

    /// Reads a tensor back to the host. Async because WebGPU can only map buffers asynchronously.
    fn download(&self, t: &Self::Tensor) -> impl Future<Output = Result<Vec<f32>>>;

    /// `x: [N,Ci,H,W]`, `w: [Co,Ci,kh,kw]`, `bias: [Co]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        p: Conv2dParams,
    ) -> Result<Self::Tensor>;

    /// [`Self::conv2d`] followed by `epilogue` ([`ConvEpilogue`]). This default runs it as
    /// separate ops; backends fuse it into the convolution's store.
    fn conv2d_epilogue(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        p: Conv2dParams,
        epilogue: ConvEpilogue<'_, Self::Tensor>,
    ) -> Result<Self::Tensor> {
        let mut y = self.conv2d(x, w, bias, p)?;
        if let Some(t) = epilogue.channel_add {
            y = self.channel_modulate(&y, t, 0, None)?;
        }
        match epilogue.residual {
            Some(r) => self.add(r, &y, epilogue.scale),
            None if epilogue.scale != 1.0 => self.affine(&y, epilogue.scale, 0.0),
            None => Ok(y),
        }
    }

    /// `conv2d_epilogue(group_norm(x))`: a ResnetBlock2D's norm → SiLU → convolution. This
    /// default runs it as two ops; the CPU backend normalises the input as its convolution copies
    /// it, so that the normalised tensor is never written.
    fn group_norm_conv2d(
        &self,
        x: &Self::Tensor,
        norm: InputNorm<'_, Self::Tensor>,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        p: Conv2dParams,
        epilogue: ConvEpilogue<'_, Self::Tensor>,
    ) -> Result<Self::Tensor> {
        let h = self.group_norm(x, norm.gamma, norm.beta, norm.groups, norm.eps, norm.silu)?;
        self.conv2d_epilogue(&h, w, bias, p, epilogue)
    }

    /// Group normalisation over `[N,C,...]` with per-channel affine, optionally followed by SiLU.
    fn group_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<Self::Tensor>;

    /// Batched strided matmul, see [`MatmulSpec`]; the result is a new dense tensor of `out_shape`.
    fn matmul(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        residual: Option<&Self::Tensor>,
        out_shape: &[usize],
        spec: &MatmulSpec,
    ) -> Result<Self::Tensor>;

    /// Softmax over the last `cols` elements of each row, numerically safe (max subtracted).
    fn softmax_rows(&self, x: &Self::Tensor, cols: usize) -> Result<Self::Tensor>;

    /// diffusers' `Attention` over the pixels of `normed` (`[N, C, H, W]`, after the block's
    /// group norm): q, k, v projections, `heads` heads of softmax(q kᵀ/√d) v, `to_out`, plus
    /// `residual` (`[N, C, H, W]`), divided by `rescale`; NCHW out. This default composes
    /// `matmul` and `softmax_rows` ([`crate::ops::attention::composed`]); the CPU backend runs
    /// it fused, per head and block of query rows on its threads.
    fn attention(
        &self,
        normed: &Self::Tensor,
        residual: &Self::Tensor,
        w: AttentionWeights<'_, Self::Tensor>,
        heads: usize,
        rescale: f32,
    ) -> Result<Self::Tensor>
    where
        Self: Sized,
    {
        crate::ops::attention::composed(self, normed, residual, w, heads, rescale)
    }

    /// `x · sigmoid(x)`.
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// `(a + b) · scale`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor, scale: f32) -> Result<Self::Tensor>;

    /// `x · mul + add`.
    fn affine(&self, x: &Self::Tensor, mul: f32, add: f32) -> Result<Self::Tensor>;

    /// `x[n,c,..] · (1 + emb[n, scale_col + c]) + emb[n, shift_col + c]` (scale optional): how a
    /// ResnetBlock2D adds its time embedding, in both `default` and `scale_shift` modes.
    fn channel_modulate(
        &self,
        x: &Self::Tensor,
        emb: &Self::Tensor,
        shift_col: usize,
        scale_col: Option<usize>,
    ) -> Result<Self::Tensor>;

    /// Concatenates `[N,Ca,H,W]` and `[N,Cb,H,W]` along channels.
    fn concat_channels(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Concatenates tensors along their first dimension.
    fn concat_batch(&self, parts: &[Self::Tensor]) -> Result<Self::Tensor>;

    /// Nearest-neighbour 2× upsampling of `[N,C,H,W]`.
    fn upsample_nearest2x(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// 2×2 average pooling at stride 2 of `[N,C,H,W]` (torch's `AvgPool2d(2, 2)`: an odd last
    /// row or column is dropped).
    fn avg_pool2x2(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// diffusers' `get_timestep_embedding` of `t: [N]` → `[N, dim]`.
    fn timestep_embedding(
        &self,
        t: &Self::Tensor,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<Self::Tensor>;

    /// Row lookup `table[ids[i]]` of `table: [V, D]` with integer-valued `ids: [N]` → `[N, D]`.
    fn embedding(&self, table: &Self::Tensor, ids: &Self::Tensor) -> Result<Self::Tensor>;
}
