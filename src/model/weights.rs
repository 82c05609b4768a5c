//! Weights from `.safetensors` (f32, f16 or bf16), looked up by full diffusers key with a
//! candle-style prefix view; every tensor must be used exactly once, so a missing, misshapen or
//! extra tensor is an error naming the key and both shapes.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// A parsed `.safetensors` file. Data stays in its original dtype until a tensor is taken.
pub struct Weights {
    bytes: Vec<u8>,
    entries: HashMap<String, Entry>,
    used: RefCell<BTreeSet<String>>,
}

impl Weights {
    /// Parses a safetensors buffer; `source` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, source: &str) -> Result<Self> {
        let bad = |message: String| Error::Safetensors {
            path: source.into(),
            message,
        };
        let mut entries = HashMap::new();
        {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
            let base = bytes.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let start = view.data().as_ptr() as usize - base;
                let dtype = view.dtype();
                if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    return Err(Error::BadDtype {
                        key: name,
                        dtype: format!("{dtype:?}"),
                    });
                }
                entries.insert(
                    name,
                    Entry {
                        dtype,
                        shape: view.shape().to_vec(),
                        range: start..start + view.data().len(),
                    },
                );
            }
        }
        Ok(Self {
            bytes,
            entries,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Takes tensor `key`, which must have `shape`, converted to f32.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.entries.get(key).ok_or_else(|| Error::MissingTensor {
            key: key.into(),
            expected: shape.to_vec(),
        })?;
        if e.shape != shape {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                expected: shape.to_vec(),
                found: e.shape.clone(),
            });
        }
        let raw = &self.bytes[e.range.clone()];
        let data: Vec<f32> = match e.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::BadDtype {
                    key: key.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { key: key.into() });
        }
        self.used.borrow_mut().insert(key.into());
        Ok(data)
    }

    /// Fails with every tensor of the file that no layer took.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut extra: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        Err(Error::UnexpectedTensors { keys: extra })
    }
}

/// A prefix into [`Weights`], as candle's `VarBuilder::pp`: `vs.pp("down_blocks").pp(0)`.
#[derive(Clone)]
pub struct WeightView<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> WeightView<'a> {
    pub fn root(weights: &'a Weights) -> Self {
        Self {
            weights,
            prefix: String::new(),
        }
    }

    pub fn pp(&self, name: impl std::fmt::Display) -> WeightView<'a> {
        WeightView {
            weights: self.weights,
            prefix: self.key(&name.to_string()),
        }
    }
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.into()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.weights.get(&self.key(name), shape)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.key(name))
    }

    /// Takes the first of `names` present (current diffusers name first, then legacy ones); a
    /// missing tensor is reported under the first (current) name.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        for n in names {
            if self.contains(n) {
                return self.get(n, shape);
            }
        }
        self.get(names[0], shape)
    }
}
