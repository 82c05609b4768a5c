//! The GPU's low-level parts: the context (device, queue, caches, pool, readback), the tensor
//! type and dispatch helpers, and the timestamp profiler.

pub mod context;
#[cfg(not(target_arch = "wasm32"))]
pub mod profile;
pub mod tensor;

pub use context::GpuContext;
pub use tensor::{grid_1d, weight_variant, DType, GpuTensor};
