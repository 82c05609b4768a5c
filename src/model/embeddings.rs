//! Time and class embeddings: diffusers' `Timesteps` (sinusoidal), learned time tables and
//! `TimestepEmbedding` (linear → SiLU → linear).

use crate::backend::Backend;
use crate::error::Result;
use crate::model::layers::Linear;
use crate::model::weights::WeightView;

/// diffusers `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn load(b: &B, vs: &WeightView, in_dim: usize, time_embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(b, &vs.pp("linear_1"), in_dim, time_embed_dim)?,
            linear_2: Linear::load(b, &vs.pp("linear_2"), time_embed_dim, time_embed_dim)?,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let h = self.linear_1.forward(b, x)?;
        let h = b.silu(&h)?;
        self.linear_2.forward(b, &h)
    }
}

/// How timesteps become vectors (`UNet2DModel.time_proj`).
pub enum TimeProj<B: Backend> {
    /// `Timesteps(dim, flip_sin_to_cos, freq_shift)`.
    Positional {
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    },
    /// `nn.Embedding(num_train_timesteps, dim)`.
    Learned { table: B::Tensor },
}

impl<B: Backend> TimeProj<B> {
    pub fn forward(&self, b: &B, t: &B::Tensor) -> Result<B::Tensor> {
        match self {
            TimeProj::Positional {
                dim,
                flip_sin_to_cos,
                freq_shift,
            } => b.timestep_embedding(t, *dim, *flip_sin_to_cos, *freq_shift),
            TimeProj::Learned { table } => b.embedding(table, t),
        }
    }
}
