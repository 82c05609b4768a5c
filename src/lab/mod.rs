//! The sampler lab: how each sampler converges as its step count grows. A sweep runs samplers ×
//! step counts from one initial noise and measures each final image's distance to a reference
//! run (`sweep`); the paths of several runs are projected onto their two principal directions
//! (`paths`); natively, samples are scored in a classifier's feature space (`eval`, FID). Shared
//! by the page's lab view and `diffuse sweep` / `diffuse eval`.

#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
pub mod paths;
pub mod sweep;

pub use paths::{project, Projection};
pub use sweep::{Cell, Final, SamplerChoice, Summary, Sweep, SweepEvent, SweepResult};
