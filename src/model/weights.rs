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
        if bytes.len() > crate::model::limits::MAX_WEIGHTS_BYTES {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {} bytes (see RELIABILITY.md: size limits)",
                bytes.len(),
                crate::model::limits::MAX_WEIGHTS_BYTES
            )));
        }
        let mut entries = HashMap::new();
        {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(explain(&e, &bytes)))?;
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

    /// The stored shape of tensor `key`.
    pub fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        self.entries.get(key).map(|e| e.shape.clone())
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
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                key: key.into(),
                value: data[i].to_string(),
                index: i,
            });
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

/// A sentence for each way `SafeTensors::deserialize` refuses a file. Offsets errors are
/// re-examined from the header to say which tensor is at fault and how.
fn explain(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!(
            "the file has {} bytes, fewer than the 8-byte header length (empty or truncated)",
            bytes.len()
        ),
        E::HeaderTooLarge => format!(
            "the header length field says {} bytes, more than the 100 MB safetensors allows",
            header_len(bytes).unwrap_or(0)
        ),
        E::InvalidHeaderLength => format!(
            "the header length field says {} bytes but the file has only {}",
            header_len(bytes).unwrap_or(0),
            bytes.len()
        ),
        E::InvalidHeader(_) => "the header is not UTF-8 text".into(),
        E::ValidationOverflow => "a tensor's declared size overflows".into(),
        // On 32-bit targets (wasm) serde refuses offsets past usize::MAX before the offsets are
        // checked: read the header with 64-bit offsets to name the tensor, as natively.
        E::InvalidHeaderDeserialization(err) => offsets_problem(bytes, "")
            .unwrap_or_else(|| format!("the header is not valid JSON: {err}")),
        E::MetadataIncompleteBuffer => {
            format!(
            "the file is truncated: its header declares {} bytes of tensor data but {} follow it",
            data_extent(bytes).unwrap_or(0),
            bytes.len().saturating_sub(8 + header_len(bytes).unwrap_or(0) as usize)
        )
        }
        E::InvalidOffset(key) => offsets_problem(bytes, key)
            .unwrap_or_else(|| format!("tensor `{key}` has invalid data offsets")),
        E::TensorInvalidInfo => {
            "a tensor's shape and dtype do not match the size of its data".into()
        }
        other => format!("{other}"),
    }
}

fn header_len(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// (name, dtype, shape, begin, end) of a tensor as its header declares it.
type HeaderEntry = (String, String, Vec<u64>, u64, u64);

/// Every tensor in the header, sorted by begin.
fn header_entries(bytes: &[u8]) -> Option<Vec<HeaderEntry>> {
    let n = usize::try_from(header_len(bytes)?).ok()?;
    let json: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let mut v = Vec::new();
    for (k, t) in json.as_object()? {
        if k == "__metadata__" {
            continue;
        }
        let off = t.get("data_offsets")?.as_array()?;
        let shape = t
            .get("shape")?
            .as_array()?
            .iter()
            .filter_map(|d| d.as_u64())
            .collect();
        let dtype = t.get("dtype")?.as_str()?.to_string();
        v.push((
            k.clone(),
            dtype,
            shape,
            off.first()?.as_u64()?,
            off.get(1)?.as_u64()?,
        ));
    }
    v.sort_by_key(|e| (e.3, e.4));
    Some(v)
}

fn data_extent(bytes: &[u8]) -> Option<u64> {
    header_entries(bytes)?.iter().map(|e| e.4).max()
}

fn offsets_problem(bytes: &[u8], key: &str) -> Option<String> {
    let entries = header_entries(bytes)?;
    let data_len = bytes.len() as u64 - 8 - header_len(bytes)?;
    let size = |dtype: &str| match dtype {
        "F64" | "I64" | "U64" => Some(8u64),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
        _ => None,
    };
    let mut prev: Option<(&str, u64)> = None;
    for (name, dtype, shape, b, e) in &entries {
        let declared = shape
            .iter()
            .try_fold(size(dtype)?, |acc, &d| acc.checked_mul(d));
        if e < b {
            return Some(format!(
                "tensor `{name}`: data offsets [{b}, {e}) end before they begin"
            ));
        }
        if *e > data_len {
            return Some(format!(
                "tensor `{name}` (shape {shape:?}, {dtype}) declares data at bytes [{b}, {e}), past the end of the file's {data_len} data bytes"
            ));
        }
        if declared != Some(e - b) {
            return Some(format!(
                "tensor `{name}`: shape {shape:?} of {dtype} needs {} bytes but its offsets [{b}, {e}) span {}",
                declared.map_or("too many".to_string(), |d| d.to_string()),
                e - b
            ));
        }
        if let Some((pname, pend)) = prev {
            if *b < pend {
                return Some(format!(
                    "tensor `{name}`'s data [{b}, {e}) overlaps tensor `{pname}`'s (which ends at {pend})"
                ));
            }
            if *b > pend {
                return Some(format!(
                    "tensor `{name}`'s data starts at {b}, leaving a gap after tensor `{pname}` (ends at {pend})"
                ));
            }
        }
        prev = Some((name, *e));
    }
    let _ = key;
    None
}
