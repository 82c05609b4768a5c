//! The one error type of the engine: every message names the field, key, shape or value at fault.

use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {message}")]
    Json { path: String, message: String },

    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },

    #[error("unsupported {what} `{value}` (supported: {supported})")]
    Unsupported {
        what: String,
        value: String,
        supported: String,
    },

    #[error("{path}: not a valid .safetensors file: {message}")]
    Safetensors { path: String, message: String },

    #[error("missing tensor `{key}` (expected shape {expected:?})")]
    MissingTensor { key: String, expected: Vec<usize> },

    #[error("tensor `{key}` has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tensor `{key}` has dtype {dtype}; supported: F32, F16, BF16")]
    BadDtype { key: String, dtype: String },

    #[error("unexpected tensor{} not used by this config: {}", if keys.len() > 1 { "s" } else { "" }, keys.join(", "))]
    UnexpectedTensors { keys: Vec<String> },

    #[error("tensor `{key}` contains a non-finite value ({value} at element {index})")]
    NonFinite {
        key: String,
        value: String,
        index: usize,
    },

    #[error(
        "non-finite values (NaN or infinity) at step {step} (t = {timestep}): first in {location}"
    )]
    NonFiniteStep {
        /// 1-based step of the run.
        step: usize,
        timestep: f32,
        /// The model stage (`up_blocks.1`, …), or the sampler's update.
        location: String,
    },

    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },

    #[error("shape error in {op}: {message}")]
    Shape { op: String, message: String },

    #[error("no WebGPU/GPU adapter available: {0}")]
    NoAdapter(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            message: message.into(),
        }
    }

    pub fn input(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input {
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn unsupported(what: &str, value: impl Into<String>, supported: &str) -> Self {
        Error::Unsupported {
            what: what.into(),
            value: value.into(),
            supported: supported.into(),
        }
    }
}
