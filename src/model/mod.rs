//! The diffusers model family, one file per diffusers module with the same names. Written once
//! against the [`crate::backend::Backend`] trait.

pub mod attention;
pub mod autoencoder_kl;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod layers;
pub mod limits;
pub mod loader;
pub mod resnet;
pub mod unet_2d;
pub mod vae;
pub mod weights;
/// The CPU backend's Web Workers in the browser: batch shares of a UNet forward.
#[cfg(target_arch = "wasm32")]
pub mod workers;

pub use autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
pub use config::UNet2DConfig;
pub use unet_2d::UNet2DModel;
pub use weights::Weights;
