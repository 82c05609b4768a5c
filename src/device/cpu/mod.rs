//! The CPU's low-level parts: the thread pool, the scratch-buffer pool and the transposes the
//! CPU kernels use.

pub mod pool;
pub mod threads;
pub mod transpose;
