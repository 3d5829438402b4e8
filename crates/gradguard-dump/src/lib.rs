//! # gradguard-dump: gradient dumps on disk (safetensors): read, measure, cure, write
//!
//! Behind `gradguard grads`. Kept apart from the remedies, so that a training loop using the
//! remedies pulls no file format.
//!
//! A PyTorch or JAX user dumps gradients (and optionally the weights) with the safetensors
//! package; [`GradDump::load`] reads them, converting F16, BF16 and F64 to f32 (gradguard's
//! kernels work on f32), [`report`] measures them with [`StepStats`] (global L2 and inf norms,
//! per-tensor L2, max |g| and non-finite count, weight norms), and [`apply`] runs one remedy
//! on them. [`GradDump::write`] writes every tensor back with its name, shape and dtype
//! (tensors the remedy left unchanged are copied byte for byte; changed ones are rounded back
//! to their dtype) and keeps the file's `__metadata__`.
//!
//! Every bad input is a [`DumpError`] naming the file and the tensor: missing or unreadable
//! file, truncated file or bad header, unsupported dtype (integers, bool), F64 values outside
//! the f32 range, grads and params that disagree (missing tensor, shape or dtype), a spec that
//! does not parse, a remedy that needs weights without `--params`, and a remedy that withholds
//! the update (nothing is written then).
//!
//! Roles are inferred from names and ranks by [`Role::from_name`], the rule `gradguard
//! diagnose` applies to events logs: a name whose last component contains `bias` is a bias
//! (`fc1.bias`, `dense/bias:0`), `weight_hh`/`W_hh`/`recurrent` a recurrent weight, other
//! tensors of rank >= 2 weights, the rest "other". They matter to `l1`/`l2` (biases are not
//! penalised unless asked).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gradguard_core::float::{lossy, lossy_opt};
use gradguard_core::{Action, ParamView, Remedy, RemedyContext, RemedyError, Role, StepStats};
use safetensors::tensor::{Dtype, SafeTensorError, TensorView};
use safetensors::SafeTensors;
use serde::Serialize;

/// A gradient-dump error. Every message names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor has a dtype gradguard does not convert.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; gradguard reads F32, F16, BF16 and F64 gradients")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// An F64 value does not fit in f32.
    #[error("{path}: tensor `{tensor}` holds {value:e}, outside the f32 range (gradguard computes in f32)")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The value.
        value: f64,
    },
    /// Grads and params disagree.
    #[error("{params} does not match {grads}: {message}")]
    Mismatch {
        /// The gradients file.
        grads: PathBuf,
        /// The weights file.
        params: PathBuf,
        /// What differs, naming the tensor.
        message: String,
    },
    /// The remedy spec does not parse.
    #[error("remedy spec {source_name}: {message}")]
    Spec {
        /// `inline JSON` or the spec file.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The remedy needs the weights.
    #[error("remedy `{kind}` needs the weights: pass them with --params")]
    NeedsParams {
        /// The remedy's kind.
        kind: String,
    },
    /// The remedy failed.
    #[error(transparent)]
    Remedy(#[from] RemedyError),
    /// The remedy withheld the update, so there is no cured gradient to write.
    #[error("remedy `{kind}` withholds the update ({action}: {reason}); no output written")]
    Withheld {
        /// The remedy's kind.
        kind: String,
        /// The action's name.
        action: String,
        /// Its reason.
        reason: String,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The floating-point dtypes a dump may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpDtype {
    /// 32-bit float (native).
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
}

impl DumpDtype {
    /// The safetensors name.
    pub fn as_str(self) -> &'static str {
        match self {
            DumpDtype::F32 => "F32",
            DumpDtype::F16 => "F16",
            DumpDtype::BF16 => "BF16",
            DumpDtype::F64 => "F64",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            DumpDtype::F32 => Dtype::F32,
            DumpDtype::F16 => Dtype::F16,
            DumpDtype::BF16 => Dtype::BF16,
            DumpDtype::F64 => Dtype::F64,
        }
    }
}

/// One tensor of a dump, as f32, with its original bytes.
#[derive(Clone, Debug)]
pub struct DumpTensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype in the file.
    pub dtype: DumpDtype,
    /// The values, converted to f32.
    pub data: Vec<f32>,
    raw: Vec<u8>,
}

fn decode(dtype: DumpDtype, raw: &[u8]) -> impl Iterator<Item = f64> + '_ {
    let width = match dtype {
        DumpDtype::F16 | DumpDtype::BF16 => 2,
        DumpDtype::F32 => 4,
        DumpDtype::F64 => 8,
    };
    raw.chunks_exact(width).map(move |c| match dtype {
        DumpDtype::F16 => half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64(),
        DumpDtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64(),
        DumpDtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
        DumpDtype::F64 => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
    })
}

impl DumpTensor {
    /// The role gradguard gives this tensor: [`Role::from_name`] with its name and rank (see
    /// the module doc).
    pub fn role(&self) -> Role {
        Role::from_name(&self.name, Some(self.shape.len()))
    }

    /// Whether the f32 values still equal what was read.
    pub fn unchanged(&self) -> bool {
        decode(self.dtype, &self.raw)
            .zip(&self.data)
            .all(|(a, &b)| (a as f32).to_bits() == b.to_bits())
    }

    /// The bytes to write: the original ones when unchanged, else the values rounded to the
    /// tensor's dtype. Errors when a finite value does not fit the dtype (e.g. above 65504 in F16).
    pub fn encode(&self) -> Result<Cow<'_, [u8]>, String> {
        if self.unchanged() {
            return Ok(Cow::Borrowed(&self.raw));
        }
        let mut out = Vec::with_capacity(self.raw.len());
        for &v in &self.data {
            match self.dtype {
                DumpDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
                DumpDtype::F64 => out.extend_from_slice(&(v as f64).to_le_bytes()),
                DumpDtype::F16 => {
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        return Err(format!(
                            "value {v} of tensor `{}` does not fit in F16",
                            self.name
                        ));
                    }
                    out.extend_from_slice(&h.to_bits().to_le_bytes());
                }
                DumpDtype::BF16 => {
                    let h = half::bf16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        return Err(format!(
                            "value {v} of tensor `{}` does not fit in BF16",
                            self.name
                        ));
                    }
                    out.extend_from_slice(&h.to_bits().to_le_bytes());
                }
            }
        }
        Ok(Cow::Owned(out))
    }
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            "shorter than the 8-byte header length (empty or truncated file)".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length points past the end of the file (truncated file?)".into()
        }
        SafeTensorError::HeaderTooLarge => {
            "the header length is larger than 100 MB (not a safetensors file?)".into()
        }
        SafeTensorError::InvalidHeader | SafeTensorError::InvalidHeaderStart => {
            "the header is not UTF-8 JSON starting with '{'".into()
        }
        SafeTensorError::InvalidHeaderDeserialization => {
            "the header is not a valid safetensors JSON header".into()
        }
        SafeTensorError::JsonError(j) => format!("the header is not valid JSON: {j}"),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the data section does not match the header's offsets (truncated or padded file)".into()
        }
        SafeTensorError::InvalidOffset(t) => {
            format!("the data offsets of tensor `{t}` are invalid")
        }
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow => {
            "a tensor's shape and dtype disagree with its data size".into()
        }
        other => format!("{other:?}"),
    }
}

/// A safetensors file of gradients (or weights), as f32 tensors in file order.
#[derive(Clone, Debug)]
pub struct GradDump {
    /// Where it was read from.
    pub path: PathBuf,
    /// The tensors, in the order of their data in the file.
    pub tensors: Vec<DumpTensor>,
    /// The file's `__metadata__`, kept on write.
    pub metadata: Option<HashMap<String, String>>,
}

impl GradDump {
    /// Reads and converts a safetensors file (see the module doc for the errors).
    pub fn load(path: impl AsRef<Path>) -> Result<GradDump, DumpError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| DumpError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Reads and converts the bytes of a safetensors file, as [`GradDump::load`] does;
    /// `path` only names the source in errors. Any bytes give a dump or a [`DumpError`].
    pub fn from_bytes(path: PathBuf, bytes: &[u8]) -> Result<GradDump, DumpError> {
        let fmt = |e: SafeTensorError| DumpError::Format {
            path: path.clone(),
            message: describe(&e),
        };
        let st = SafeTensors::deserialize(bytes).map_err(fmt)?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(fmt)?;
        let mut order: Vec<(usize, String)> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| (info.data_offsets.0, name))
            .collect();
        order.sort();
        let mut tensors = Vec::with_capacity(order.len());
        for (_, name) in order {
            let view = st.tensor(&name).map_err(fmt)?;
            let dtype = match view.dtype() {
                Dtype::F32 => DumpDtype::F32,
                Dtype::F16 => DumpDtype::F16,
                Dtype::BF16 => DumpDtype::BF16,
                Dtype::F64 => DumpDtype::F64,
                other => {
                    return Err(DumpError::Dtype {
                        path: path.clone(),
                        tensor: name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            let raw = view.data().to_vec();
            let mut data = Vec::with_capacity(view.shape().iter().product());
            for v in decode(dtype, &raw) {
                if v.is_finite() && v.abs() > f32::MAX as f64 {
                    return Err(DumpError::OutOfRange {
                        path: path.clone(),
                        tensor: name,
                        value: v,
                    });
                }
                data.push(v as f32);
            }
            tensors.push(DumpTensor {
                name,
                shape: view.shape().to_vec(),
                dtype,
                data,
                raw,
            });
        }
        Ok(GradDump {
            path,
            tensors,
            metadata: meta.metadata().clone(),
        })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&DumpTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Errors unless every tensor here has a tensor of the same name, shape and dtype in
    /// `params` (extra tensors in `params` are ignored).
    pub fn check_params(&self, params: &GradDump) -> Result<(), DumpError> {
        let mismatch = |message: String| DumpError::Mismatch {
            grads: self.path.clone(),
            params: params.path.clone(),
            message,
        };
        for t in &self.tensors {
            let Some(p) = params.get(&t.name) else {
                return Err(mismatch(format!("tensor `{}` is missing", t.name)));
            };
            if p.shape != t.shape {
                return Err(mismatch(format!(
                    "tensor `{}` has shape {:?} in the params but {:?} in the grads",
                    t.name, p.shape, t.shape
                )));
            }
            if p.dtype != t.dtype {
                return Err(mismatch(format!(
                    "tensor `{}` has dtype {} in the params but {} in the grads",
                    t.name,
                    p.dtype.as_str(),
                    t.dtype.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Writes every tensor with its name, shape and dtype, and the metadata, to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), DumpError> {
        let path = path.as_ref();
        let werr = |message: String| DumpError::Write {
            path: path.to_path_buf(),
            message,
        };
        let mut encoded = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            encoded.push((t, t.encode().map_err(werr)?));
        }
        let mut views = Vec::with_capacity(encoded.len());
        for (t, bytes) in &encoded {
            let v = TensorView::new(t.dtype.safetensors(), t.shape.clone(), bytes)
                .map_err(|e| werr(describe(&e)))?;
            views.push((t.name.clone(), v));
        }
        // Atomically: a temporary file unique to this process beside `path`, synced, then
        // renamed over it, so an interrupted write never leaves a torn or empty file (even
        // when `path` is the input being rewritten in place).
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{name}.{}.{nth}.tmp", std::process::id()));
        let result = safetensors::serialize_to_file(views, &self.metadata, &tmp)
            .map_err(|e| match e {
                SafeTensorError::IoError(io) => werr(io.to_string()),
                other => werr(describe(&other)),
            })
            .and_then(|()| canonical_header(&tmp).map_err(werr))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| werr(e.to_string())))
            .map(|()| {
                // make the rename itself durable (best effort: not every filesystem allows it)
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                if let Ok(d) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
                    let _ = d.sync_all();
                }
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Rewrites the JSON header of the safetensors file at `path` in place with every object's keys
/// sorted (the same length: the same tokens in another order, padded with spaces as before),
/// then syncs the file. So the same dump always gives the same bytes: safetensors writes
/// `__metadata__` from a `HashMap`, whose order changes from process to process. Reads and
/// writes only the header.
fn canonical_header(path: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let bad = || "the serialized header is malformed".to_string();
    let io = |e: std::io::Error| e.to_string();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(|_| bad())?;
    let file_len = f.metadata().map_err(io)?.len();
    if 8 + n as u64 > file_len {
        return Err(bad());
    }
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(io)?;
    let value: serde_json::Value = serde_json::from_slice(&header).map_err(|_| bad())?;
    let mut text = String::with_capacity(n);
    write(&value, &mut text);
    if text.len() > n {
        return Err(bad());
    }
    header[..text.len()].copy_from_slice(text.as_bytes());
    header[text.len()..].fill(b' ');
    f.seek(SeekFrom::Start(8)).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Builds a view over `grads` (weights from `params`, or `zeros` sized alike) and runs `f`.
fn with_view<T>(
    grads: &mut GradDump,
    params: Option<&GradDump>,
    f: impl FnOnce(&mut ParamView<'_>) -> T,
) -> Result<T, DumpError> {
    if let Some(p) = params {
        grads.check_params(p)?;
    }
    let zeros: Vec<Vec<f32>> = match params {
        Some(_) => Vec::new(),
        None => grads
            .tensors
            .iter()
            .map(|t| vec![0.0; t.data.len()])
            .collect(),
    };
    let path = grads.path.clone();
    let mut view = ParamView::with_capacity(grads.tensors.len());
    for (i, t) in grads.tensors.iter_mut().enumerate() {
        let weights: &[f32] = match params.and_then(|p| p.get(&t.name)) {
            Some(p) => &p.data,
            None => &zeros[i],
        };
        let role = t.role();
        view.push(&t.name, &t.shape, role, weights, &mut t.data)
            .map_err(|e| DumpError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(f(&mut view))
}

/// Statistics of one dumped tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorReport {
    /// Its name.
    pub name: String,
    /// Its dtype in the file.
    pub dtype: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// L2 norm of its gradient.
    #[serde(with = "lossy")]
    pub l2: f64,
    /// Largest |g| (ignoring NaN).
    #[serde(with = "lossy")]
    pub max_abs: f64,
    /// Number of NaN/±inf gradient values.
    pub nonfinite: usize,
    /// L2 norm of its weights, when params were given.
    #[serde(with = "lossy_opt", skip_serializing_if = "Option::is_none")]
    pub weight_norm: Option<f64>,
}

/// Statistics of a dump: what `gradguard grads stats` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DumpReport {
    /// The gradients file.
    pub grads: String,
    /// The weights file, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Number of values.
    pub numel: usize,
    /// Global L2 norm (NaN when a value is NaN, inf when one is infinite).
    #[serde(with = "lossy")]
    pub global_l2: f64,
    /// Global inf norm, max |g| (ignoring NaN).
    #[serde(with = "lossy")]
    pub global_inf: f64,
    /// Number of non-finite gradient values.
    pub nonfinite: usize,
    /// Per tensor, in file order.
    pub tensors: Vec<TensorReport>,
}

impl DumpReport {
    /// A plain-text table.
    pub fn to_text(&self) -> String {
        let mut s = format!("grads: {}\n", self.grads);
        if let Some(p) = &self.params {
            s.push_str(&format!("params: {p}\n"));
        }
        s.push_str(&format!(
            "{} tensors, {} values; global L2 norm {:.6e}, inf norm {:.6e}, {} non-finite\n",
            self.tensors.len(),
            self.numel,
            self.global_l2,
            self.global_inf,
            self.nonfinite
        ));
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(6);
        s.push_str(&format!(
            "{:<w$}  {:<5} {:<14} {:>13} {:>13} {:>9}",
            "tensor", "dtype", "shape", "L2 norm", "max |g|", "nonfinite"
        ));
        if self.params.is_some() {
            s.push_str(&format!(" {:>13}", "weight norm"));
        }
        s.push('\n');
        for t in &self.tensors {
            s.push_str(&format!(
                "{:<w$}  {:<5} {:<14} {:>13.6e} {:>13.6e} {:>9}",
                t.name,
                t.dtype,
                format!("{:?}", t.shape),
                t.l2,
                t.max_abs,
                t.nonfinite
            ));
            if let Some(n) = t.weight_norm {
                s.push_str(&format!(" {n:>13.6e}"));
            }
            s.push('\n');
        }
        s
    }
}

/// Measures a dump (with its weights when given) in one pass with [`StepStats`].
pub fn report(grads: &mut GradDump, params: Option<&GradDump>) -> Result<DumpReport, DumpError> {
    let stats = with_view(grads, params, |v| StepStats::measure(v))?;
    let tensors = grads
        .tensors
        .iter()
        .zip(&stats.params)
        .map(|(t, s)| TensorReport {
            name: t.name.clone(),
            dtype: t.dtype.as_str(),
            shape: t.shape.clone(),
            l2: s.grad_norm,
            max_abs: s.grad_max_abs,
            nonfinite: s.grad_nonfinite,
            weight_norm: params.map(|_| s.weight_norm()),
        })
        .collect();
    Ok(DumpReport {
        grads: grads.path.display().to_string(),
        params: params.map(|p| p.path.display().to_string()),
        numel: stats.params.iter().map(|p| p.numel).sum(),
        global_l2: stats.grad_norm,
        global_inf: stats.grad_max_abs,
        nonfinite: stats.grad_nonfinite,
        tensors,
    })
}

/// Parses a remedy spec: inline JSON (starting with `{`), or the path of a JSON or TOML file
/// (TOML when it ends in `.toml`). Returns the kind and the remedy.
pub fn parse_remedy(spec: &str) -> Result<(String, Box<dyn Remedy>), DumpError> {
    let (source_name, mut value): (String, serde_json::Value) =
        if spec.trim_start().starts_with('{') {
            let v = serde_json::from_str(spec).map_err(|e| DumpError::Spec {
                source_name: "(inline JSON)".into(),
                message: e.to_string(),
            })?;
            ("(inline JSON)".into(), v)
        } else {
            let path = Path::new(spec);
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| DumpError::Spec {
                source_name: name.clone(),
                message: format!(
                    "not inline JSON (which starts with '{{') and not a readable file: {e}"
                ),
            })?;
            let v = if path.extension().is_some_and(|e| e == "toml") {
                let t: toml::Value = toml::from_str(&text).map_err(|e| DumpError::Spec {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?;
                serde_json::to_value(t).map_err(|e| DumpError::Spec {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?
            } else {
                serde_json::from_str(&text).map_err(|e| DumpError::Spec {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?
            };
            (name, v)
        };
    let kind = value.get("kind").and_then(|k| k.as_str()).map(str::to_string).ok_or_else(|| DumpError::Spec {
        source_name: source_name.clone(),
        message: "expected a table with a string `kind`, e.g. {\"kind\":\"clip_global_norm\",\"max_norm\":1.0}".into(),
    })?;
    // Another framework's name for a kind (e.g. PyTorch's `clip_grad_norm`) reads as the kind.
    let kind = match gradguard_core::alias::resolve_alias(gradguard_core::Family::Remedy, &kind) {
        Some(alias) => {
            value["kind"] = serde_json::Value::from(alias.kind);
            alias.kind.to_string()
        }
        None => kind,
    };
    let remedy: Box<dyn Remedy> = serde_json::from_value(value).map_err(|e| DumpError::Spec {
        source_name,
        message: e.to_string(),
    })?;
    Ok((kind, remedy))
}

/// What applying a remedy to a dump did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApplyReport {
    /// The remedy's kind.
    pub kind: String,
    /// Whether any gradient changed.
    pub changed: bool,
    /// The penalty value the remedy reported (L1/L2).
    pub penalty: f64,
    /// Global L2 norm before.
    #[serde(with = "lossy")]
    pub norm_before: f64,
    /// Global L2 norm after (from the statistics the remedy kept true).
    #[serde(with = "lossy")]
    pub norm_after: f64,
    /// The action the remedy asked for (`continue` or `scale_lr`; others are errors).
    pub action: Action,
}

/// Runs `remedy` (of `kind`) once on the dump, as step 1 with loss 0. Errors when the remedy
/// needs weights ([`RemedyCapabilities::needs_weights`](gradguard_core::RemedyCapabilities))
/// and `params` is `None`, when it fails, or when it withholds the update.
pub fn apply(
    kind: &str,
    remedy: &mut dyn Remedy,
    grads: &mut GradDump,
    params: Option<&GradDump>,
) -> Result<ApplyReport, DumpError> {
    if params.is_none() && remedy.capabilities().needs_weights {
        return Err(DumpError::NeedsParams {
            kind: kind.to_string(),
        });
    }
    let outcome = with_view(grads, params, |view| {
        let mut stats = StepStats::measure(view);
        let before = stats.grad_norm;
        let mut ctx = RemedyContext::new(1, 0.0, view, &mut stats);
        let r = remedy.apply(&mut ctx);
        let (changed, penalty) = (ctx.changed(), ctx.penalty());
        r.map(|action| (action, changed, penalty, before, stats.grad_norm))
    })??;
    let (action, changed, penalty, norm_before, norm_after) = outcome;
    let reason = match &action {
        Action::SkipStep { reason } | Action::Rollback { reason } | Action::Stop { reason } => {
            Some(reason.clone())
        }
        _ => None,
    };
    if let Some(reason) = reason {
        return Err(DumpError::Withheld {
            kind: kind.to_string(),
            action: action.name().to_string(),
            reason,
        });
    }
    Ok(ApplyReport {
        kind: kind.to_string(),
        changed,
        penalty,
        norm_before,
        norm_after,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    const NORM: f64 = 13.009611831257688; // sqrt(9 + 16 + 144 + 0.25)

    #[test]
    fn reads_every_float_dtype_written_by_python() {
        for dt in ["f32", "f16", "bf16", "f64"] {
            let mut g = GradDump::load(fixture(&format!("grads_{dt}.safetensors"))).unwrap();
            let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names.len(), 4, "{dt}");
            assert_eq!(g.get("layers.0.weight").unwrap().shape, vec![3, 4]);
            assert_eq!(g.get("layers.0.bias").unwrap().data, vec![0.0, 0.0, 12.0]);
            assert_eq!(
                g.metadata
                    .as_ref()
                    .and_then(|m| m.get("format"))
                    .map(String::as_str),
                Some("pt")
            );
            let p = GradDump::load(fixture(&format!("params_{dt}.safetensors"))).unwrap();
            let r = report(&mut g, Some(&p)).unwrap();
            assert!((r.global_l2 - NORM).abs() < 1e-12, "{dt}: {}", r.global_l2);
            assert_eq!(r.global_inf, 12.0);
            assert_eq!(r.nonfinite, 0);
            assert_eq!(r.numel, 12 + 3 + 6 + 2);
            let w = r
                .tensors
                .iter()
                .find(|t| t.name == "layers.0.weight")
                .unwrap();
            assert_eq!(
                (w.l2, w.max_abs, w.weight_norm),
                (5.0, 4.0, Some(12f64.sqrt()))
            );
            assert_eq!(w.dtype, dt.to_uppercase());
        }
    }

    #[test]
    fn report_json_and_text() {
        let mut g = GradDump::load(fixture("grads_nonfinite_f32.safetensors")).unwrap();
        let r = report(&mut g, None).unwrap();
        assert_eq!(r.nonfinite, 2);
        assert!(r.global_l2.is_nan());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"global_l2\":\"NaN\""), "{json}");
        assert!(!json.contains("weight_norm"));
        let text = r.to_text();
        assert!(text.contains("2 non-finite"), "{text}");
        assert!(text.contains("layers.0.bias"), "{text}");
    }

    #[test]
    fn apply_clip_keeps_names_shapes_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        for dt in ["f32", "f16", "bf16", "f64"] {
            let mut g = GradDump::load(fixture(&format!("grads_{dt}.safetensors"))).unwrap();
            let (kind, mut r) =
                parse_remedy(r#"{"kind":"clip_global_norm","max_norm":1.0}"#).unwrap();
            let rep = apply(&kind, r.as_mut(), &mut g, None).unwrap();
            assert!(rep.changed);
            assert!((rep.norm_before - NORM).abs() < 1e-12);
            assert!((rep.norm_after - 1.0).abs() < 1e-6);
            let out = dir.path().join(format!("out_{dt}.safetensors"));
            g.write(&out).unwrap();
            let mut back = GradDump::load(&out).unwrap();
            assert_eq!(back.metadata, g.metadata);
            for (a, b) in back.tensors.iter().zip(&g.tensors) {
                assert_eq!((&a.name, &a.shape, a.dtype), (&b.name, &b.shape, b.dtype));
            }
            // head.weight was all zeros: unchanged, copied byte for byte.
            assert_eq!(
                back.get("head.weight").unwrap().raw,
                g.get("head.weight").unwrap().raw
            );
            let n = report(&mut back, None).unwrap().global_l2;
            let tol = if dt == "f16" || dt == "bf16" {
                1e-2
            } else {
                1e-6
            };
            assert!((n - 1.0).abs() < tol, "{dt}: {n}");
        }
    }

    #[test]
    fn apply_needs_params_for_weight_remedies() {
        let mut g = GradDump::load(fixture("grads_f32.safetensors")).unwrap();
        let (kind, mut r) = parse_remedy(r#"{"kind":"agc"}"#).unwrap();
        let e = apply(&kind, r.as_mut(), &mut g, None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "remedy `agc` needs the weights: pass them with --params");
        // AGC with weights all 1: rows of layers.0.weight have ||w|| = 2, bound 0.02.
        let p = GradDump::load(fixture("params_f32.safetensors")).unwrap();
        let rep = apply(&kind, r.as_mut(), &mut g, Some(&p)).unwrap();
        assert!(rep.changed);
        let w = &g.get("layers.0.weight").unwrap().data;
        assert!(
            (w[0] - 0.02).abs() < 1e-7 && (w[5] - 0.02).abs() < 1e-7,
            "{w:?}"
        );
        // L2 with penalty value: 0.01 * sum w^2 over weights (layers.0.weight 12, head.weight 6).
        let mut g = GradDump::load(fixture("grads_f32.safetensors")).unwrap();
        let (kind, mut r) = parse_remedy(r#"{"kind":"l2"}"#).unwrap();
        let rep = apply(&kind, r.as_mut(), &mut g, Some(&p)).unwrap();
        assert!((rep.penalty - 0.18).abs() < 1e-9, "{}", rep.penalty);
    }

    #[test]
    fn nonfinite_grads_are_refused_under_skip_step() {
        let mut g = GradDump::load(fixture("grads_nonfinite_f32.safetensors")).unwrap();
        let (kind, mut r) = parse_remedy(r#"{"kind":"clip_value","clip_value":1}"#).unwrap();
        let e = apply(&kind, r.as_mut(), &mut g, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "remedy `clip_value` withholds the update (skip_step: clip_value: 2 non-finite"
            ),
            "{e}"
        );
        assert!(e.contains("no output written"), "{e}");
        let (kind, mut r) =
            parse_remedy(r#"{"kind":"clip_value","clip_value":1,"on_nonfinite":"zero"}"#).unwrap();
        apply(&kind, r.as_mut(), &mut g, None).unwrap();
        assert_eq!(g.get("head.bias").unwrap().data, vec![0.0, -0.5]);
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let e = GradDump::load(fixture("nope.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("nope.safetensors"),
            "{e}"
        );
        let e = GradDump::load(fixture("grads_i32.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has dtype I32; gradguard reads F32, F16, BF16 and F64"),
            "{e}"
        );
        let e = GradDump::load(fixture("grads_f64_out_of_range.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor `head.weight` holds 1e300, outside the f32 range"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("grads_f32.safetensors")).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let e = GradDump::load(&cut).unwrap_err().to_string();
        assert!(
            e.contains("cut.safetensors: not a valid safetensors file") && e.contains("truncated"),
            "{e}"
        );
        std::fs::write(&cut, &bytes[..5]).unwrap();
        let e = GradDump::load(&cut).unwrap_err().to_string();
        assert!(e.contains("empty or truncated"), "{e}");
        let mut bad = bytes.clone();
        bad[8] = b'[';
        std::fs::write(&cut, &bad).unwrap();
        let e = GradDump::load(&cut).unwrap_err().to_string();
        assert!(
            e.contains("not a valid safetensors file") && e.contains("header"),
            "{e}"
        );
    }

    #[test]
    fn grads_and_params_must_agree() {
        let mut g = GradDump::load(fixture("grads_f32.safetensors")).unwrap();
        for (file, expect) in [
            (
                "params_bad_shape_f32.safetensors",
                "tensor `layers.0.weight` has shape [4, 3] in the params but [3, 4] in the grads",
            ),
            (
                "params_missing_f32.safetensors",
                "tensor `head.bias` is missing",
            ),
            (
                "params_f16.safetensors",
                "has dtype F16 in the params but F32 in the grads",
            ),
        ] {
            let p = GradDump::load(fixture(file)).unwrap();
            let e = report(&mut g, Some(&p)).unwrap_err().to_string();
            assert!(e.contains(file) && e.contains(expect), "{e}");
        }
    }

    #[test]
    fn spec_errors() {
        let e = parse_remedy(r#"{"kind":"clip_global_norm","max_nrm":1}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("remedy spec (inline JSON): unknown field `max_nrm`"),
            "{e}"
        );
        let e = parse_remedy(r#"{"max_norm":1}"#).err().unwrap().to_string();
        assert!(e.contains("string `kind`"), "{e}");
        let e = parse_remedy("missing.json").err().unwrap().to_string();
        assert!(
            e.contains("missing.json") && e.contains("not inline JSON"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(&f, "kind = \"clip_norm\"\nmax_norm = 2.0\n").unwrap();
        let (kind, _) = parse_remedy(f.to_str().unwrap()).unwrap();
        assert_eq!(kind, "clip_norm");
    }

    #[test]
    fn f16_overflow_on_write_is_an_error() {
        let mut g = GradDump::load(fixture("grads_f16.safetensors")).unwrap();
        g.tensors[0].data[0] = 1e6;
        let dir = tempfile::tempdir().unwrap();
        let e = g
            .write(dir.path().join("o.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit in F16"), "{e}");
    }

    #[test]
    fn roles_from_names() {
        assert_eq!(Role::from_name("layers.0.bias", Some(1)), Role::Bias);
        assert_eq!(
            Role::from_name("rnn.weight_hh_l0", Some(2)),
            Role::RecurrentWeight
        );
        assert_eq!(Role::from_name("fc.weight", Some(2)), Role::Weight);
        assert_eq!(Role::from_name("norm.weight", Some(1)), Role::Other);
    }
}

#[cfg(test)]
mod alias_tests {
    use super::*;

    #[test]
    fn pytorch_names_read_as_the_remedy_kinds() {
        let _ = gradguard_remedies::builtin_kinds();
        let (kind, remedy) =
            parse_remedy(r#"{"kind":"clip_grad_norm","max_norm":1.0}"#).expect("alias");
        assert_eq!(kind, "clip_global_norm");
        assert_eq!(remedy.typetag_name(), "clip_global_norm");
    }
}
