//! The GPU backend over wgpu: one long-lived [`GpuContext`] (device, queue, caches), pooled
//! buffers, batched command recording and async readback.
//!
//! Why it is built this way:
//! - Creating and first binding a buffer is expensive in WebGPU, so activations come from a pool
//!   keyed by size; a denoising step asks for the same sizes every time and allocates nothing.
//! - Every op records into one pending command encoder; it is submitted only when the host needs
//!   data (readback) or writes data (upload). Op parameters go into one uniform ring: each op's
//!   struct is appended to a host-side staging block at a 256-byte aligned offset, and the whole
//!   block is written with a single `write_buffer` right before the submit. (`write_buffer` runs
//!   before the commands of the next submit, so writing one small uniform buffer per op and
//!   reusing it within an encoder would give every op the last op's parameters.)
//! - Shapes reach shaders through those uniforms, never through generated WGSL text, so one
//!   pipeline per entry point serves every shape; pipelines are created lazily and cached.
//! - Validation errors and device loss are captured and returned as [`Error`]s instead of
//!   wgpu's default panic.

pub mod backend;

pub use backend::GpuBackend;
// The low-level parts live below the ops (`crate::device::gpu`); re-exported for the backend's
// users.
#[cfg(not(target_arch = "wasm32"))]
pub use crate::device::gpu::profile;
pub use crate::device::gpu::{
    context, grid_1d, tensor, weight_variant, DType, GpuContext, GpuTensor,
};
