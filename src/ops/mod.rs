//! One module per op family: shape checks, the CPU reference, and the GPU wrapper of the WGSL
//! file of the same name in `shaders/`.

pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod matmul;
pub mod resample;
