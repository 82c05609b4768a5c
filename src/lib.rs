//! stepwise: watch a diffusion model work. The diffusers `UNet2DModel` family as WGSL compute
//! shaders through wgpu, a CPU reference backend, samplers with diffusers' semantics, the
//! denoising pipeline, and (on wasm) the Leptos app.

#[cfg(target_arch = "wasm32")]
pub mod app;
pub mod backend;
pub mod cpu;
pub mod defaults;
pub mod device;
pub mod edit;
pub mod error;
pub mod export;
pub mod gpu;
pub mod history;
pub mod image;
pub mod io;
pub mod job;
pub mod lab;
pub mod latent;
pub mod model;
pub mod noise;
pub mod ops;
pub mod pipeline;
pub mod sampler;
pub mod selftest;
pub mod toy2d;

pub use backend::{Backend, Tensor};
pub use error::{Error, Result};
