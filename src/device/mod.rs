//! Below the ops: what kernels run on. The CPU's threads, scratch-buffer pool and transposes
//! (`cpu`), the GPU's context (device, queue, pipeline cache, buffer pool, readback), tensors and
//! profiler (`gpu`), and a monotonic clock. Nothing here knows an op, a model or a sampler; the
//! backends (`crate::cpu`, `crate::gpu`) sit above the ops that sit above this.

pub mod clock;
pub mod cpu;
pub mod gpu;
