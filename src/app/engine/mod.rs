//! The page's adapter to the engine: one backend per page (WebGPU when it works, else the CPU;
//! `backend`), models loaded once per URL (`models`), runs as [`crate::job`] jobs whose events
//! become drawable frames (`run`), and the in-page speed measurements (`bench`). Components call
//! these functions and receive plain data ([`ModelInfo`], [`Frame`]); the GPU objects stay in
//! this module's thread-local caches, never in a component or a signal.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::cpu::CpuBackend;
use crate::gpu::GpuBackend;
use crate::job::Model;

mod backend;
mod bench;
mod lab;
mod models;
mod run;

pub use backend::*;
pub use bench::*;
pub use lab::*;
pub use models::*;
pub use run::*;
// Models download through `fetch`; the status line shows how far.
pub use super::fetch::download_progress;

enum Compute {
    Gpu(GpuBackend),
    Cpu(CpuBackend),
}

/// A loaded model: its UNet, for a latent model the VAE that decodes its latents, and its
/// scheduler config.
type Loaded<B> = Model<B>;

enum Net {
    Gpu(Loaded<GpuBackend>),
    Cpu(Loaded<CpuBackend>),
}

thread_local! {
    // wasm is single-threaded: the backend and the loaded models live here, built once.
    static COMPUTE: RefCell<Option<Rc<Compute>>> = const { RefCell::new(None) };
    static MODELS: RefCell<HashMap<String, Rc<Net>>> = RefCell::new(HashMap::new());
    // What `load_model` returned for each cached model, so that selecting it again costs
    // nothing (no refetch, no second copy of its weights on the GPU).
    static INFOS: RefCell<HashMap<String, ModelInfo>> = RefCell::new(HashMap::new());
    // What `init_backend` reported (the adapter or why the CPU runs), for `bench_forward`.
    static DESCRIPTION: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The backend and the model loaded from `url` on it, for a run.
fn loaded(url: &str) -> Result<(Rc<Compute>, Rc<Net>), String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let net = MODELS
        .with(|m| m.borrow().get(url.trim_end_matches('/')).cloned())
        .ok_or_else(|| format!("model {url} is not loaded"))?;
    Ok((compute, net))
}
