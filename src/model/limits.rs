//! Explicit size limits on what a model folder and a run may ask for. Files come from anywhere
//! (a user's drop on the page, a script's argument); these bounds turn a hostile or mistaken
//! config into a clear error before anything is allocated. Documented in RELIABILITY.md.
//!
//! Every limit is far above the models the project targets (google/ddpm-cifar10-32 has 256
//! channels at most and 35.7 M parameters; Stable Diffusion's VAE 512 channels, 83 M).

use crate::error::{Error, Result};

/// A `.safetensors` file (and so a model's weights): 2 GiB.
pub const MAX_WEIGHTS_BYTES: usize = 2 << 30;
/// A `config.json`, `model_index.json` or `scheduler_config.json`: 1 MiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Channels of any block, input, output or latent: 4096.
pub const MAX_CHANNELS: usize = 4096;
/// Entries of `block_out_channels` (down/up blocks): 8.
pub const MAX_BLOCKS: usize = 8;
/// `layers_per_block`: 16.
pub const MAX_LAYERS_PER_BLOCK: usize = 16;
/// Each side of a sample (pixels or latents): 1024.
pub const MAX_SAMPLE_SIDE: usize = 1024;
/// `num_class_embeds`: 100 000.
pub const MAX_CLASSES: usize = 100_000;
/// Samples in one batch (before classifier-free guidance doubles it): 64.
pub const MAX_BATCH: usize = 64;
/// `num_train_timesteps` of a learned time embedding: 100 000.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// `Err` naming `field` when `value` exceeds `max`.
pub fn at_most(field: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::config(
            field,
            format!("{value} exceeds the limit of {max} (see RELIABILITY.md: size limits)"),
        ));
    }
    Ok(())
}

/// Checks a channel list (`block_out_channels`) and the block count.
pub fn check_blocks(field: &str, channels: &[usize], layers_per_block: usize) -> Result<()> {
    at_most(
        &format!("{field} (number of blocks)"),
        channels.len(),
        MAX_BLOCKS,
    )?;
    for &c in channels {
        at_most(field, c, MAX_CHANNELS)?;
    }
    at_most("layers_per_block", layers_per_block, MAX_LAYERS_PER_BLOCK)
}
