//! # gradguard for Python: the Guard in your own training loop
//!
//! A PyO3 extension, imported as `gradguard`, over the framework-free
//! [`gradguard_engine::Guard`]: the same detectors, remedies, diagnosis and reports as
//! `gradguard run`, driven step by step from a Python loop.
//!
//! ```python
//! import gradguard
//! guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": 1.0}], out_dir="runs/x")
//! for step in range(1, n + 1):
//!     loss = ...; loss.backward()
//!     d = guard.step(model, loss)      # model.named_parameters(), (name, obj) pairs, or {name: (w, g)}
//!     if d.apply: opt.step()           # the gradients were edited in place by the remedies
//!     guard.after_update(model)        # measures ||dw|| per tensor ("the weights change a lot")
//!     if d.stop: break
//! summary = guard.finish()             # summary.json's keys; events.jsonl, summary.json, report.html
//! ```
//!
//! ## How arrays are read (and why rust-numpy, under abi3)
//!
//! The wheel is built for the stable ABI, `abi3-py39`: one wheel for every CPython >= 3.9.
//! Python's buffer protocol is only part of the limited API from 3.11, so it cannot be used
//! under `abi3-py39`. Arrays are read through rust-numpy's `PyReadonlyArray` /
//! `PyReadwriteArray` instead, which use NumPy's own C API (a capsule NumPy exports) and
//! build under abi3. They borrow the array's memory with NumPy's aliasing checks: the same
//! array passed as a weight and as a gradient is refused rather than read while written.
//!
//! - A **float32, C-contiguous** gradient is edited **in place**, with no copy.
//! - A gradient of another **float dtype** (float16, float64) is converted to a float32 copy
//!   for the step and written back with NumPy's cast afterwards: one read, one float32
//!   allocation of the tensor's size, one write back, per tensor and per step. The values a
//!   remedy wrote are then rounded to the tensor's dtype.
//! - A float32 gradient that is not C-contiguous is an error (a silent copy would hide the
//!   cost); weights are only read, so any layout and float dtype is accepted (non-float32 or
//!   non-contiguous weights are copied).
//! - Objects that are not NumPy arrays are read through `.numpy()` (after `.detach()` when
//!   present): CPU PyTorch tensors then share their memory with the array, so the remedies
//!   edit `param.grad` itself.
//!
//! ## PyTorch tensors: two roads
//!
//! Which road a step takes is decided per step by `gradguard._torch.classify` (and the
//! Guard's `torch_stats` option: `None` decides, `True` always takes the second road, `False`
//! never uses torch ops):
//!
//! 1. **CPU float32 contiguous tensors** (the default road for them) are read in place as
//!    above: one fused statistics pass in Rust, remedies edit the memory the tensors share.
//!    The one exception is the global-norm clip (`clip_global_norm`, and `autoclip`/`zclip`,
//!    which clip to a norm they compute): PyTorch computes its coefficient with
//!    `clip_grad_norm_`'s own arithmetic (`torch._foreach_norm`, the norm of the stack, `max_norm
//!    / (total + 1e-6)` clamped at 1, all float32), and gradguard multiplies by it, so the
//!    gradients are bit-identical to `clip_grad_norm_`'s (gradguard's own total, summed in
//!    f64, can differ from PyTorch's float32 one by an ulp). That costs one `_foreach_norm`
//!    pass, only when gradguard's total is within 0.1% of `max_norm` or above it.
//! 2. **Every other tensor** (CUDA, bfloat16/float16/float64, non-contiguous, or
//!    `torch_stats=True`) is kept by PyTorch and never copied to the host
//!    ([`gradguard_core::GradientFramework`], implemented in `src/torch.rs`): the per-tensor
//!    statistics are computed with torch ops on the tensors' device (`_foreach_norm` of the
//!    gradients and of the weights, the largest |g|, non-finite counts only for tensors whose
//!    norm is not finite) and only those numbers (5 per tensor) cross to Rust; the remedies'
//!    edits come back as typed edits applied there with foreach ops (`_foreach_mul_` for one
//!    scale or per-tensor scales, `_foreach_clamp_min_/max_` for value clipping, exactly what
//!    `clip_grad_value_` runs, `nan_to_num_` for zeroing). bfloat16 and float16 are handled in
//!    their own dtype, as PyTorch's clipping does. `agc` runs as timm's `adaptive_clip_grad`
//!    with torch ops, the `l1`/`l2` penalties as `add_` of the weights' sign and the weights:
//!    every built-in remedy runs on the device. A user's remedy that edits the values
//!    through `edit_each` stops the step with an error naming it on this road.
//!    `after_update` keeps one copy of the weights on their device (allocated once) to measure
//!    ||dw||; `measure_updates=False` saves it.
//!
//! A step watches the tensors of one device; the loss is read with `float()` (one number, a
//! synchronisation on a GPU that the loop usually pays anyway).
//!
//! ## Rollback
//!
//! The Python side keeps no snapshots. A remedy that asks for a rollback is reported to the
//! caller (`d.action == "rollback"`, `d.apply` false); `after_update` then returns
//! `rolled_back_to`, the step of the newest snapshot the Guard asked for (`snapshot` true in
//! an earlier `after_update`), and the Guard resets its detectors as after a real rollback.
//! Restoring the weights and optimiser state is the caller's job; a caller that keeps no
//! checkpoints should stop, or treat the step as skipped.
//!
//! ## Errors
//!
//! Nothing panics across the boundary on bad input: a wrong dtype is a `TypeError`; a
//! non-contiguous gradient, a weight/gradient shape mismatch and a bad plugin dict (the
//! message names the key, e.g. `remedies[0].max_norm`) are `ValueError`s; driving the Guard
//! out of order or after `finish` is a `RuntimeError`.

use std::path::{Path, PathBuf};

use gradguard_core::{Action, Detector, ParamView, Remedy, Reporter, Role, RunInfo, UpdateStats};
use gradguard_detectors::RunFigures;
use gradguard_engine::{Decision as EngineDecision, Guard as EngineGuard, HostError};
use gradguard_engine::{StepInput, TrainingHost};
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde::Deserialize;

use gradguard_engine::spec_error::{self, SpecError, SpecFormat};

mod torch;
use torch::TorchFramework;

/// A spec error as one line that names the key (`remedies[0].max_norm: ...`).
fn spec_message(label: &str, e: &SpecError) -> String {
    match &e.key_path {
        Some(k) if k.starts_with('[') => format!("{label}{k}: {}", e.message),
        Some(k) => format!("{label}.{k}: {}", e.message),
        None => format!("{label}: {}", e.message),
    }
}

/// The plugin tables of a spec file; every other table (model, task, train, ...) is ignored.
#[derive(Deserialize)]
struct GuardTables {
    #[serde(default)]
    detectors: Option<Vec<Box<dyn Detector>>>,
    #[serde(default)]
    remedies: Vec<Box<dyn Remedy>>,
    #[serde(default = "yes")]
    default_reporters: bool,
    #[serde(default)]
    reporters: Option<Vec<Box<dyn Reporter>>>,
}

fn yes() -> bool {
    true
}

/// Reads a list of plugin dicts (`family` labels errors: `remedies`, `detectors`, ...).
fn plugins_from_dicts<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    family: &str,
    dicts: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Vec<T>>> {
    let Some(dicts) = dicts else { return Ok(None) };
    if dicts.is_none() {
        return Ok(None);
    }
    let json = py.import("json")?;
    let mut out = Vec::new();
    for (i, item) in dicts
        .try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{family}: expected a list of dicts")))?
        .enumerate()
    {
        let item = item?;
        let label = format!("{family}[{i}]");
        if !item.is_instance_of::<PyDict>() {
            return Err(PyTypeError::new_err(format!(
                "{label}: expected a dict such as {{\"kind\": ...}}, got {}",
                item.get_type().name()?
            )));
        }
        let text: String = json
            .call_method1("dumps", (&item,))
            .map_err(|e| PyValueError::new_err(format!("{label}: not JSON-like: {e}")))?
            .extract()?;
        let plugin = spec_error::parse_str::<T>(&text, SpecFormat::Json, Path::new(&label))
            .map_err(|e| PyValueError::new_err(spec_message(&label, &e)))?;
        out.push(plugin);
    }
    Ok(Some(out))
}

/// Checks every detector's and remedy's parameters before anything runs.
fn validate(detectors: &[Box<dyn Detector>], remedies: &[Box<dyn Remedy>]) -> PyResult<()> {
    for (i, d) in detectors.iter().enumerate() {
        d.validate().map_err(|m| {
            PyValueError::new_err(format!("detectors[{i}] (`{}`): {m}", d.typetag_name()))
        })?;
    }
    for (i, r) in remedies.iter().enumerate() {
        r.validate()
            .map_err(|e| PyValueError::new_err(format!("remedies[{i}]: {e}")))?;
    }
    Ok(())
}

/// The loop's side of checkpoints: the Python caller keeps them (or not). The Guard's
/// requests are recorded and reported back by `after_update`.
#[derive(Default)]
struct CallerHost {
    step: u64,
    last_snapshot: Option<u64>,
    snapshot_now: bool,
}

impl TrainingHost for CallerHost {
    fn snapshot(&mut self, _keep: usize) -> Result<(), HostError> {
        self.last_snapshot = Some(self.step);
        self.snapshot_now = true;
        Ok(())
    }
    fn restore_newest(&mut self) -> Result<Option<u64>, HostError> {
        Ok(self.last_snapshot)
    }
    fn skip_batches(&mut self, _n: u64) {}
}

/// One tensor of a step: float32 arrays the Guard reads (weights) and edits (gradients).
struct Tensor<'py> {
    name: String,
    weight: Bound<'py, PyArrayDyn<f32>>,
    grad: Option<Bound<'py, PyArrayDyn<f32>>>,
    /// The caller's gradient when `grad` is a float32 copy of it (written back after the step).
    grad_source: Option<Bound<'py, PyAny>>,
}

/// `obj` as a NumPy array: itself, or `obj.detach().numpy()` (PyTorch CPU tensors share memory).
fn as_ndarray<'py>(obj: &Bound<'py, PyAny>, name: &str, what: &str) -> PyResult<Bound<'py, PyAny>> {
    if obj.is_instance_of::<PyUntypedArray>() {
        return Ok(obj.clone());
    }
    if let Some(cuda) = obj.getattr_opt("is_cuda")? {
        if cuda.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "tensor `{name}`: its {what} is a CUDA tensor; with torch_stats=False gradguard reads CPU tensors and NumPy arrays only (leave torch_stats unset, and PyTorch measures and edits CUDA tensors on the device)"
            )));
        }
    }
    if obj.hasattr("numpy")? {
        // `.numpy()` refuses a tensor that requires grad: detach those only (a parameter's
        // `.data` and its `.grad` do not, and skipping the extra tensor object saves time).
        let needs_detach = match obj.getattr_opt("requires_grad")? {
            Some(r) => r.is_truthy()?,
            None => false,
        };
        let base = if needs_detach && obj.hasattr("detach")? {
            obj.call_method0("detach")?
        } else {
            obj.clone()
        };
        let arr = base.call_method0("numpy").map_err(|e| {
            PyTypeError::new_err(format!(
                "tensor `{name}`: its {what} cannot be read as a NumPy array through .numpy(): {e}"
            ))
        })?;
        if arr.is_instance_of::<PyUntypedArray>() {
            return Ok(arr);
        }
    }
    Err(PyTypeError::new_err(format!(
        "tensor `{name}`: its {what} is a {}, expected a NumPy array or an object with .numpy() (a CPU tensor)",
        obj.get_type().name()?
    )))
}

fn dtype_name(arr: &Bound<'_, PyUntypedArray>) -> String {
    arr.dtype().to_string()
}

/// The weights as a float32 array (the caller's own when float32 and C-contiguous, else a copy).
fn weight_array<'py>(
    np: &Bound<'py, PyModule>,
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let arr = as_ndarray(obj, name, "weight")?;
    let untyped = arr.cast::<PyUntypedArray>()?;
    if untyped.dtype().kind() != b'f' {
        return Err(PyTypeError::new_err(format!(
            "tensor `{name}`: the weight's dtype is {}, expected a float dtype (float32, or float16/float64, which are converted)",
            dtype_name(untyped)
        )));
    }
    if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        if a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    let copy = np.call_method1("ascontiguousarray", (&arr, "float32"))?;
    Ok(copy.cast_into::<PyArrayDyn<f32>>()?)
}

/// The gradient as a float32 array, with the caller's array when it is a converted copy.
#[allow(clippy::type_complexity)]
fn grad_array<'py>(
    np: &Bound<'py, PyModule>,
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, Option<Bound<'py, PyAny>>)> {
    let arr = as_ndarray(obj, name, "gradient")?;
    let untyped = arr.cast::<PyUntypedArray>()?;
    if untyped.dtype().kind() != b'f' {
        return Err(PyTypeError::new_err(format!(
            "tensor `{name}`: the gradient's dtype is {}, expected a float dtype (float32, or float16/float64, which are converted)",
            dtype_name(untyped)
        )));
    }
    if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        if !a.is_c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "tensor `{name}`: the float32 gradient is not C-contiguous (strides {:?}); gradients are edited in place, so pass a contiguous array (e.g. numpy.ascontiguousarray, then read it back)",
                a.strides()
            )));
        }
        return Ok((a.clone(), None));
    }
    let copy = np.call_method1("ascontiguousarray", (&arr, "float32"))?;
    Ok((copy.cast_into::<PyArrayDyn<f32>>()?, Some(arr)))
}

/// One entry of `params` as given: its name, its weight and (when read) its gradient object.
struct Raw<'py> {
    name: String,
    weight: Bound<'py, PyAny>,
    grad: Option<Bound<'py, PyAny>>,
}

/// One entry of `params`: a `(weight, grad)` pair, or a parameter object with `.data`/`.grad`.
/// `None` for a parameter without a gradient (frozen, or unused by this loss: not watched).
fn raw_entry<'py>(
    name: String,
    value: &Bound<'py, PyAny>,
    want_grads: bool,
) -> PyResult<Option<Raw<'py>>> {
    let (weight, grad) = if value.is_instance_of::<PyTuple>() || value.is_instance_of::<PyList>() {
        if value.len()? != 2 {
            return Err(PyValueError::new_err(format!(
                "tensor `{name}`: expected a (weight, grad) pair, got {} items",
                value.len()?
            )));
        }
        (value.get_item(0)?, Some(value.get_item(1)?))
    } else {
        let w = value.getattr_opt("data")?.unwrap_or_else(|| value.clone());
        let g = value.getattr_opt("grad")?.filter(|g| !g.is_none());
        if g.is_none() && value.hasattr("grad")? {
            return Ok(None);
        }
        (w, g)
    };
    if want_grads && grad.is_none() {
        return Err(PyTypeError::new_err(format!(
            "tensor `{name}`: expected a (weight, grad) pair or an object with .data and .grad, got {}",
            value.get_type().name()?
        )));
    }
    Ok(Some(Raw {
        name,
        weight,
        grad: if want_grads { grad } else { None },
    }))
}

/// Every entry of `params`: a dict name -> (weight, grad) or parameter, an object with
/// `named_parameters()` (a `torch.nn.Module`), an iterable of (name, obj) pairs, or an
/// iterable of parameters (`model.parameters()`, named `param[i]`).
fn gather_raw<'py>(params: &Bound<'py, PyAny>, want_grads: bool) -> PyResult<Vec<Raw<'py>>> {
    let items: Bound<'py, PyAny> = if let Ok(d) = params.cast::<PyDict>() {
        d.call_method0("items")?
    } else if params.hasattr("named_parameters")? {
        params.call_method0("named_parameters")?
    } else {
        params.clone()
    };
    let iter = items.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "params: expected a dict name -> (weight, grad), an object with named_parameters(), or an iterable of (name, parameter) pairs; got {}",
            params.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        let named = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2);
        let (name, value) = match named {
            Some(pair) => (pair.get_item(0)?.str()?.extract()?, pair.get_item(1)?),
            // `model.parameters()`, as clip_grad_norm_ takes: parameters without names,
            // called `param[i]` in messages and reports.
            None if item.hasattr("grad")? => (format!("param[{i}]"), item),
            None => {
                return Err(PyTypeError::new_err(
                    "params: each item must be a (name, parameter) pair, or a parameter with .grad (model.parameters())",
                ))
            }
        };
        if let Some(r) = raw_entry(name, &value, want_grads)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The entries of `now` named `names`, in that order: the tensors `step()` saw, as
/// `after_update` is given them (usually in the same order, which is checked first).
fn pick_by_name<'a, 'py>(now: &'a [Raw<'py>], names: &[String]) -> PyResult<Vec<&'a Raw<'py>>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            now.get(i)
                .filter(|r| &r.name == name)
                .or_else(|| now.iter().find(|r| &r.name == name))
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "after_update: tensor `{name}` was in step() but is not in these params"
                    ))
                })
        })
        .collect()
}

/// An entry as float32 NumPy arrays gradguard reads (and edits) in place.
fn host_tensor<'py>(np: &Bound<'py, PyModule>, raw: &Raw<'py>) -> PyResult<Tensor<'py>> {
    let name = &raw.name;
    let weight = weight_array(np, &raw.weight, name)?;
    let (grad, grad_source) = match &raw.grad {
        Some(g) => {
            let (grad, source) = grad_array(np, g, name)?;
            if grad.shape() != weight.shape() {
                return Err(PyValueError::new_err(format!(
                    "tensor `{name}`: the weight's shape {:?} and the gradient's shape {:?} differ",
                    weight.shape(),
                    grad.shape()
                )));
            }
            (Some(grad), source)
        }
        None => (None, None),
    };
    Ok(Tensor {
        name: name.clone(),
        weight,
        grad,
        grad_source,
    })
}

fn borrow_error(name: &str, what: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!(
        "tensor `{name}`: its {what} cannot be borrowed ({e}); is the same array passed twice, or as both weight and gradient?"
    ))
}

/// What the Guard decided for one step.
#[pyclass(module = "gradguard", frozen, get_all)]
struct Decision {
    /// "continue", "skip_step", "scale_lr", "rollback" or "stop".
    action: String,
    /// Why the action was taken ("" for continue).
    reason: String,
    /// Whether to apply the update (continue or scale_lr).
    apply: bool,
    /// Whether the run must end after this step.
    stop: bool,
    /// The factor to multiply the learning rate by for this update.
    lr_scale: f64,
    /// The global gradient norm before the remedies.
    grad_norm_before: f64,
    /// The global gradient norm after the remedies (what the update uses).
    grad_norm_after: f64,
    /// What the detectors found at this step, as dicts (the `findings` of events.jsonl).
    findings: Py<PyAny>,
    /// The step number.
    step: u64,
}

#[pymethods]
impl Decision {
    /// `grad_norm_before`, under the issue's shorter name.
    #[getter]
    fn grad_norm(&self) -> f64 {
        self.grad_norm_before
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(step={}, action={:?}, apply={}, stop={}, lr_scale={}, grad_norm_before={}, grad_norm_after={})",
            self.step,
            self.action,
            if self.apply { "True" } else { "False" },
            if self.stop { "True" } else { "False" },
            self.lr_scale,
            self.grad_norm_before,
            self.grad_norm_after
        )
    }
}

/// Where the weights before an applied update were kept (for ||dw||), by tensor name.
enum Before {
    /// Not kept (the update is withheld, or `measure_updates=False`).
    Nothing,
    /// In the Guard's host buffers.
    Host(Vec<String>),
    /// In torch tensors on the weights' device.
    Torch(Vec<String>),
}

/// A step between `step` and `after_update`.
struct Pending {
    step: u64,
    apply: bool,
    lr: f64,
    before: Before,
}

/// How a step's tensors are read.
enum Route<'py> {
    /// As host float32 arrays gradguard reads and edits (NumPy arrays, CPU tensors); with
    /// `gradguard._torch` when they are PyTorch tensors (for `clip_grad_norm_`'s coefficient).
    Host(Option<Bound<'py, PyModule>>),
    /// Kept by PyTorch: measured and edited with torch ops on their device.
    Device(Bound<'py, PyModule>),
}

/// The Guard: detectors, remedies, diagnosis and reports for one training run.
#[pyclass(module = "gradguard", unsendable)]
struct Guard {
    guard: Option<EngineGuard>,
    host: CallerHost,
    out_dir: Option<PathBuf>,
    name: String,
    started: bool,
    steps: u64,
    pending: Option<Pending>,
    last_loss: Option<f64>,
    measure_updates: bool,
    /// `torch_stats`: None (auto), True (always torch ops), False (never).
    torch_stats: Option<bool>,
    /// The weights before the update, per tensor, reused from step to step (host path).
    host_before: Vec<Vec<f32>>,
    /// The same on PyTorch's side: a list of tensors on the weights' device.
    torch_before: Option<Py<PyAny>>,
    /// `gradguard._torch`, once PyTorch is loaded.
    torch_helper: Option<Py<PyModule>>,
}

fn engine_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// The Guard's options that are not plugins.
struct Options {
    out_dir: Option<PathBuf>,
    quiet: bool,
    measure_updates: bool,
    torch_stats: Option<bool>,
}

impl Guard {
    fn build(
        detectors: Option<Vec<Box<dyn Detector>>>,
        remedies: Vec<Box<dyn Remedy>>,
        default_reporters: bool,
        reporters: Option<Vec<Box<dyn Reporter>>>,
        options: Options,
    ) -> PyResult<Self> {
        let Options {
            out_dir,
            quiet,
            measure_updates,
            torch_stats,
        } = options;
        let detectors = detectors.unwrap_or_else(gradguard_detectors::default_detectors);
        validate(&detectors, &remedies)?;
        // Console: only the final diagnosis (per-step lines would flood a notebook), and
        // nothing when quiet. Files only when there is a directory to write them to.
        let mut defaults: Vec<Box<dyn Reporter>> = Vec::new();
        if default_reporters {
            defaults = gradguard_engine::default_reporters(!quiet, true, 0);
            if out_dir.is_none() {
                defaults.retain(|r| r.typetag_name() == "console");
            }
        }
        let reporters = gradguard_engine::merge_reporters(defaults, reporters.unwrap_or_default());
        let name = out_dir
            .as_ref()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "python".into());
        Ok(Guard {
            guard: Some(EngineGuard::new(detectors, remedies, reporters)),
            host: CallerHost::default(),
            out_dir,
            name,
            started: false,
            steps: 0,
            pending: None,
            last_loss: None,
            measure_updates,
            torch_stats,
            host_before: Vec::new(),
            torch_before: None,
            torch_helper: None,
        })
    }

    fn engine(&mut self) -> PyResult<&mut EngineGuard> {
        self.guard
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("this Guard has finished; make a new one"))
    }

    /// Closes a step the caller did not close with `after_update` (the update unmeasured).
    fn close_pending(&mut self) -> PyResult<()> {
        if let Some(p) = self.pending.take() {
            let update = p.apply.then(|| UpdateStats {
                step: p.step,
                lr: p.lr,
                ..UpdateStats::default()
            });
            self.end_step(p.step, update)?;
        }
        Ok(())
    }

    /// How this step's tensors are read (see [`Route`]). PyTorch tensors go through
    /// `gradguard._torch`: on the host when every gradient is a CPU float32 contiguous tensor
    /// (unless `torch_stats=True`), else kept by PyTorch (unless `torch_stats=False`).
    fn route<'py>(&mut self, py: Python<'py>, raw: &[Raw<'py>]) -> PyResult<Route<'py>> {
        if self.torch_stats == Some(false) {
            return Ok(Route::Host(None));
        }
        let helper = match &self.torch_helper {
            Some(h) => h.bind(py).clone(),
            None => {
                // PyTorch tensors can only come from a loaded torch: never import it here.
                let torch_loaded = py
                    .import("sys")?
                    .getattr("modules")?
                    .contains("torch")
                    .unwrap_or(false);
                if !torch_loaded {
                    return Ok(Route::Host(None));
                }
                let h = py.import("gradguard._torch")?;
                self.torch_helper = Some(h.clone().unbind());
                h
            }
        };
        let grads = PyList::new(py, raw.iter().filter_map(|r| r.grad.as_ref()))?;
        let class: String = helper.call_method1("classify", (grads,))?.extract()?;
        Ok(match (class.as_str(), self.torch_stats) {
            ("none", _) => Route::Host(None),
            (_, Some(true)) | ("device", None) => Route::Device(helper),
            _ => Route::Host(Some(helper)),
        })
    }

    /// Starts the run at the first step: the tensors' names and shapes, the output directory.
    fn start_if_needed(&mut self, names: &[String], shapes: &[Vec<usize>]) -> PyResult<()> {
        if self.started {
            return Ok(());
        }
        let infos = names
            .iter()
            .zip(shapes)
            .map(|(n, s)| gradguard_core::ParamInfo {
                name: n.clone(),
                shape: s.clone(),
                role: Role::from_name(n, Some(s.len())),
            })
            .collect();
        let info = RunInfo {
            name: self.name.clone(),
            seed: 0,
            out_dir: self.out_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            params: infos,
            clip_threshold: None,
        };
        if let Some(dir) = &self.out_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        self.host.step = 0;
        let guard = self
            .guard
            .as_mut()
            .ok_or_else(|| engine_error("finished"))?;
        guard.start(info, &mut self.host).map_err(engine_error)?;
        self.started = true;
        Ok(())
    }

    /// A step over host float32 arrays, read and edited in place; with `torch` (CPU float32
    /// tensors), PyTorch computes the global-norm clip's coefficient.
    fn step_host<'py>(
        &mut self,
        py: Python<'py>,
        raw: &[Raw<'py>],
        input: StepInput,
        torch: Option<Bound<'py, PyModule>>,
    ) -> PyResult<(EngineDecision, Before)> {
        let np = py.import("numpy")?;
        let tensors = raw
            .iter()
            .map(|r| host_tensor(&np, r))
            .collect::<PyResult<Vec<_>>>()?;
        let names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
        let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.weight.shape().to_vec()).collect();
        let helper = match &torch {
            Some(t) => {
                let weights = PyList::new(py, raw.iter().map(|r| &r.weight))?;
                let grads = PyList::new(py, raw.iter().filter_map(|r| r.grad.as_ref()))?;
                Some(t.getattr("TorchGrads")?.call1((weights, grads))?)
            }
            None => None,
        };
        let mut weights: Vec<PyReadonlyArrayDyn<'_, f32>> = Vec::with_capacity(tensors.len());
        let mut grads: Vec<PyReadwriteArrayDyn<'_, f32>> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            weights.push(
                t.weight
                    .try_readonly()
                    .map_err(|e| borrow_error(&t.name, "weight", e))?,
            );
            let g = t.grad.as_ref().ok_or_else(|| engine_error("no gradient"))?;
            grads.push(
                g.try_readwrite()
                    .map_err(|e| borrow_error(&t.name, "gradient", e))?,
            );
        }
        self.start_if_needed(&names, &shapes)?;
        let decision: EngineDecision = {
            let mut view = ParamView::with_capacity(tensors.len());
            for (((t, shape), w), g) in tensors
                .iter()
                .zip(&shapes)
                .zip(&weights)
                .zip(grads.iter_mut())
            {
                let ws = w
                    .as_slice()
                    .map_err(|e| borrow_error(&t.name, "weight", e))?;
                let gs = g
                    .as_slice_mut()
                    .map_err(|e| borrow_error(&t.name, "gradient", e))?;
                view.push(
                    &t.name,
                    shape,
                    Role::from_name(&t.name, Some(shape.len())),
                    ws,
                    gs,
                )
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            }
            let guard = self
                .guard
                .as_mut()
                .ok_or_else(|| engine_error("finished"))?;
            match helper {
                Some(helper) => {
                    let mut fw = TorchFramework::new(helper, true, &names, &shapes);
                    guard.step_with_framework(input, &mut view, &mut fw)
                }
                None => guard.step(input, &mut view),
            }
        };
        let before = if decision.apply && self.measure_updates {
            // The weights before the update, into buffers kept from step to step.
            self.host_before.resize_with(weights.len(), Vec::new);
            for (buf, w) in self.host_before.iter_mut().zip(&weights) {
                let w = w.as_slice().map_err(engine_error)?;
                buf.clear();
                buf.extend_from_slice(w);
            }
            Before::Host(names)
        } else {
            Before::Nothing
        };
        drop(grads);
        drop(weights);
        // Converted gradients go back into the caller's arrays (NumPy casts them).
        for t in &tensors {
            if let (Some(source), Some(g)) = (&t.grad_source, &t.grad) {
                source.set_item(py.Ellipsis(), g)?;
            }
        }
        Ok((decision, before))
    }

    /// A step over tensors PyTorch keeps (CUDA, or a dtype other than float32, or
    /// `torch_stats=True`): measured and edited with torch ops on their device.
    fn step_device<'py>(
        &mut self,
        py: Python<'py>,
        raw: &[Raw<'py>],
        input: StepInput,
        torch: &Bound<'py, PyModule>,
    ) -> PyResult<(EngineDecision, Before)> {
        let is_tensor = torch.getattr("is_tensor")?;
        let mut names = Vec::with_capacity(raw.len());
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(raw.len());
        let mut weights = Vec::with_capacity(raw.len());
        let mut grads = Vec::with_capacity(raw.len());
        let mut device: Option<String> = None;
        for r in raw {
            let name = &r.name;
            let g = r.grad.as_ref().ok_or_else(|| engine_error("no gradient"))?;
            for (what, t) in [("weight", &r.weight), ("gradient", g)] {
                if !is_tensor.call1((t,))?.is_truthy()? {
                    return Err(PyTypeError::new_err(format!(
                        "tensor `{name}`: its {what} is a {}; a step mixes PyTorch tensors with other arrays (pass all as torch tensors, or all as NumPy arrays)",
                        t.get_type().name()?
                    )));
                }
                if !t.call_method0("is_floating_point")?.is_truthy()? {
                    return Err(PyTypeError::new_err(format!(
                        "tensor `{name}`: its {what}'s dtype is {}, expected a floating-point dtype",
                        t.getattr("dtype")?.str()?
                    )));
                }
            }
            let shape: Vec<usize> = g.getattr("shape")?.extract()?;
            let wshape: Vec<usize> = r.weight.getattr("shape")?.extract()?;
            if shape != wshape {
                return Err(PyValueError::new_err(format!(
                    "tensor `{name}`: the weight's shape {wshape:?} and the gradient's shape {shape:?} differ"
                )));
            }
            let dev = g.getattr("device")?.str()?.to_string();
            match &device {
                None => device = Some(dev),
                Some(d) if *d != dev => {
                    return Err(PyValueError::new_err(format!(
                        "tensor `{name}`: its gradient is on {dev}, the others on {d}; one Guard step watches the tensors of one device"
                    )))
                }
                Some(_) => {}
            }
            names.push(name.clone());
            shapes.push(shape);
            weights.push(r.weight.call_method0("detach")?);
            grads.push(g.clone());
        }
        self.start_if_needed(&names, &shapes)?;
        let weights = PyList::new(py, weights)?;
        let helper = torch
            .getattr("TorchGrads")?
            .call1((&weights, PyList::new(py, grads)?))?;
        let guard = self
            .guard
            .as_mut()
            .ok_or_else(|| engine_error("finished"))?;
        let decision = {
            let mut fw = TorchFramework::new(helper, false, &names, &shapes);
            guard.step_with_framework(input, &mut ParamView::new(), &mut fw)
        };
        let before = if decision.apply && self.measure_updates {
            let old = self.torch_before.as_ref().map(|b| b.bind(py).clone());
            let kept = torch.call_method1("copy_weights", (old, &weights))?;
            self.torch_before = Some(kept.unbind());
            Before::Torch(names)
        } else {
            Before::Nothing
        };
        Ok((decision, before))
    }

    /// ||dw|| per tensor on the host, against the buffers `step_host` filled.
    fn host_update(
        &mut self,
        params: &Bound<'_, PyAny>,
        step: u64,
        lr: f64,
        names: &[String],
    ) -> PyResult<UpdateStats> {
        let raw = gather_raw(params, false)?;
        let np = params.py().import("numpy")?;
        let now = pick_by_name(&raw, names)?
            .into_iter()
            .map(|r| host_tensor(&np, r))
            .collect::<PyResult<Vec<_>>>()?;
        let mut after: Vec<PyReadonlyArrayDyn<'_, f32>> = Vec::with_capacity(names.len());
        for (t, name) in now.iter().zip(names) {
            after.push(
                t.weight
                    .try_readonly()
                    .map_err(|e| borrow_error(name, "weight", e))?,
            );
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut after_slices = Vec::with_capacity(after.len());
        for ((a, name), b) in after.iter().zip(names).zip(&self.host_before) {
            let s = a.as_slice().map_err(|e| borrow_error(name, "weight", e))?;
            if s.len() != b.len() {
                return Err(PyValueError::new_err(format!(
                    "after_update: tensor `{name}` has {} values, it had {} at step()",
                    s.len(),
                    b.len()
                )));
            }
            after_slices.push(s);
        }
        // The buffers are ours: measured with the fast kernel, overwritten with dw.
        Ok(UpdateStats::measure_from_copy(
            step,
            lr,
            &name_refs,
            &mut self.host_before,
            &after_slices,
        ))
    }

    /// ||dw|| per tensor on PyTorch's side, against the tensors `step_device` copied.
    fn torch_update<'py>(
        &mut self,
        py: Python<'py>,
        params: &Bound<'py, PyAny>,
        step: u64,
        lr: f64,
        names: &[String],
    ) -> PyResult<UpdateStats> {
        let now = gather_raw(params, false)?;
        let weights = pick_by_name(&now, names)?
            .into_iter()
            .map(|r| r.weight.call_method0("detach"))
            .collect::<PyResult<Vec<_>>>()?;
        let buffers = self
            .torch_before
            .as_ref()
            .ok_or_else(|| engine_error("no weights kept before the update"))?
            .bind(py)
            .clone();
        let rows: Vec<(f64, f64, usize)> = py
            .import("gradguard._torch")?
            .call_method1("update_norms", (buffers, PyList::new(py, weights)?))?
            .extract()?;
        let params = names
            .iter()
            .zip(rows)
            .map(|(name, (d, w, bad))| gradguard_core::ParamUpdate {
                name: name.clone(),
                update_norm: d,
                weight_norm: w,
                weight_nonfinite: bad,
            })
            .collect();
        Ok(UpdateStats {
            step,
            lr,
            params,
            withheld: None,
        })
    }

    /// Hands the step's update to the engine's `after_update` (the host told which step it is).
    fn end_step(
        &mut self,
        step: u64,
        update: Option<UpdateStats>,
    ) -> PyResult<gradguard_engine::StepEnd> {
        self.host.step = step;
        self.host.snapshot_now = false;
        let guard = self
            .guard
            .as_mut()
            .ok_or_else(|| engine_error("finished"))?;
        guard
            .after_update(update, &mut self.host)
            .map_err(engine_error)
    }
}

#[pymethods]
impl Guard {
    /// `Guard(remedies=None, detectors=None, out_dir=None, quiet=False, reporters=None,
    /// default_reporters=True, measure_updates=True)`: plugins as dicts, as in specs
    /// (`{"kind": "clip_global_norm", "max_norm": 1.0}`); `detectors=None` means every built-in
    /// detector. events.jsonl, summary.json and report.html are written into `out_dir` when
    /// given. `measure_updates=False` skips ||dw|| (and the copy of the weights it needs).
    /// `torch_stats`: for PyTorch tensors, None lets each step choose (CPU float32 tensors
    /// read in place, others measured and edited with torch ops on their device), True
    /// always uses torch ops (the road CUDA tensors take, also on CPU), False never does (CPU
    /// tensors only; the global clip then uses gradguard's f64 total).
    #[new]
    #[pyo3(signature = (remedies=None, detectors=None, out_dir=None, quiet=false, reporters=None, default_reporters=true, measure_updates=true, torch_stats=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        remedies: Option<&Bound<'_, PyAny>>,
        detectors: Option<&Bound<'_, PyAny>>,
        out_dir: Option<PathBuf>,
        quiet: bool,
        reporters: Option<&Bound<'_, PyAny>>,
        default_reporters: bool,
        measure_updates: bool,
        torch_stats: Option<bool>,
    ) -> PyResult<Self> {
        gradguard_engine::link_plugins();
        let remedies = plugins_from_dicts::<Box<dyn Remedy>>(py, "remedies", remedies)?;
        let detectors = plugins_from_dicts::<Box<dyn Detector>>(py, "detectors", detectors)?;
        let reporters = plugins_from_dicts::<Box<dyn Reporter>>(py, "reporters", reporters)?;
        Guard::build(
            detectors,
            remedies.unwrap_or_default(),
            default_reporters,
            reporters,
            Options {
                out_dir,
                quiet,
                measure_updates,
                torch_stats,
            },
        )
    }

    /// A Guard from the `detectors`, `remedies`, `reporters` and `default_reporters` of a
    /// spec file (`.toml` or `.json`); its other tables are ignored.
    #[staticmethod]
    #[pyo3(signature = (path, out_dir=None, quiet=false, measure_updates=true, torch_stats=None))]
    fn from_file(
        path: PathBuf,
        out_dir: Option<PathBuf>,
        quiet: bool,
        measure_updates: bool,
        torch_stats: Option<bool>,
    ) -> PyResult<Self> {
        gradguard_engine::link_plugins();
        let tables: GuardTables =
            spec_error::load_file(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Guard::build(
            tables.detectors,
            tables.remedies,
            tables.default_reporters,
            tables.reporters,
            Options {
                out_dir,
                quiet,
                measure_updates,
                torch_stats,
            },
        )
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))
    }

    /// One step: measures the gradients, runs the detectors, then the remedies (which edit the
    /// gradients in place), and returns the Decision. `loss` is anything `float()` reads (a
    /// 0-d tensor too); `step` defaults to the previous step + 1.
    #[pyo3(signature = (params, loss, lr=None, step=None, epoch=None))]
    fn step(
        &mut self,
        py: Python<'_>,
        params: &Bound<'_, PyAny>,
        loss: &Bound<'_, PyAny>,
        lr: Option<f64>,
        step: Option<u64>,
        epoch: Option<u64>,
    ) -> PyResult<Decision> {
        self.engine()?;
        self.close_pending()?;
        // A PyTorch loss is detached first (float() of a tensor that requires grad warns);
        // on a GPU this reads one number back (a synchronisation the loop pays anyway).
        let loss = match loss.getattr_opt("detach")? {
            Some(detach) if loss.hasattr("requires_grad")? => detach.call0()?,
            _ => loss.clone(),
        };
        let loss: f64 = loss
            .call_method0("__float__")
            .and_then(|f| f.extract())
            .map_err(|e| PyTypeError::new_err(format!("loss: expected a number: {e}")))?;
        let raw = gather_raw(params, true)?;
        if raw.is_empty() {
            return Err(PyValueError::new_err(
                "params: no tensor with a gradient (call loss.backward() first?)",
            ));
        }
        let step = step.unwrap_or(self.steps + 1);
        let input = StepInput {
            step,
            loss,
            epoch,
            lr,
            ..StepInput::default()
        };
        let (decision, before) = match self.route(py, &raw)? {
            Route::Host(torch) => self.step_host(py, &raw, input, torch)?,
            Route::Device(torch) => self.step_device(py, &raw, input, &torch)?,
        };
        self.steps = step;
        self.last_loss = Some(loss);
        let guard = self
            .guard
            .as_ref()
            .ok_or_else(|| engine_error("finished"))?;
        let findings = if guard.findings().is_empty() {
            PyList::empty(py).into_any()
        } else {
            let json = serde_json::to_string(guard.findings()).map_err(engine_error)?;
            py.import("json")?.call_method1("loads", (json,))?
        };
        self.pending = Some(Pending {
            step,
            apply: decision.apply,
            lr: lr.unwrap_or(0.0),
            before,
        });
        let reason = match &decision.action {
            Action::Continue => String::new(),
            Action::SkipStep { reason }
            | Action::Rollback { reason }
            | Action::ScaleLr { reason, .. }
            | Action::Stop { reason } => reason.clone(),
        };
        Ok(Decision {
            action: decision.action.name().to_string(),
            reason,
            apply: decision.apply,
            stop: decision.stop(),
            lr_scale: decision.lr_scale,
            grad_norm_before: decision.grad_norm_before,
            grad_norm_after: decision.grad_norm_after,
            findings: findings.unbind(),
            step,
        })
    }

    /// Ends the step after the optimiser's update (or after skipping it): measures ||dw|| per
    /// tensor against the weights seen by `step` (when the update was applied) and records
    /// the step. Returns a dict: `stop` (why the run must end, or None), `rolled_back_to`
    /// (after a rollback: the step of the newest snapshot the Guard asked for; restore your
    /// own checkpoint of it) and `snapshot` (the Guard asks for a checkpoint now).
    #[pyo3(signature = (params=None))]
    fn after_update<'py>(
        &mut self,
        py: Python<'py>,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.engine()?;
        let p = self
            .pending
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("after_update() without a step() before it"))?;
        let unmeasured = || UpdateStats {
            step: p.step,
            lr: p.lr,
            ..UpdateStats::default()
        };
        let update = match (p.apply, params, &p.before) {
            (false, _, _) => None,
            (true, Some(params), Before::Host(names)) => {
                Some(self.host_update(params, p.step, p.lr, names)?)
            }
            (true, Some(params), Before::Torch(names)) => {
                Some(self.torch_update(py, params, p.step, p.lr, names)?)
            }
            (true, _, _) => Some(unmeasured()),
        };
        let end = self.end_step(p.step, update)?;
        let out = PyDict::new(py);
        out.set_item("stop", end.stop)?;
        out.set_item("rolled_back_to", end.rolled_back_to)?;
        out.set_item("snapshot", self.host.snapshot_now)?;
        Ok(out)
    }

    /// The diagnosis of the steps so far, as a dict (the run goes on).
    fn diagnose<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = self.engine()?.diagnose();
        let text = serde_json::to_string(&d).map_err(engine_error)?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Steps recorded so far.
    #[getter]
    fn steps(&self) -> u64 {
        self.guard.as_ref().map_or(self.steps, |g| g.steps())
    }

    /// Ends the run: the diagnosis; summary.json, report.html and events.jsonl in `out_dir`
    /// when given; the diagnosis printed unless quiet. Returns summary.json's contents as a
    /// dict. The Guard cannot be used afterwards.
    ///
    /// `final_loss` (the loss of the whole training set at the end) and `baseline_loss` (the
    /// best constant predictor's, e.g. the variance of the targets for a mean-squared-error
    /// regression) let the diagnosis check that the model learned, as `gradguard run` does:
    /// "healthy" then means it learned, and a run with no sign of explosion that did not learn
    /// is `not_learning`. Without them the verdict speaks of the gradients only.
    #[pyo3(signature = (final_loss=None, baseline_loss=None))]
    fn finish<'py>(
        &mut self,
        py: Python<'py>,
        final_loss: Option<f64>,
        baseline_loss: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if final_loss.is_some() != baseline_loss.is_some() {
            return Err(PyValueError::new_err(
                "finish(): give final_loss and baseline_loss together (the learning check compares them)",
            ));
        }
        self.engine()?;
        self.close_pending()?;
        let mut guard = self
            .guard
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this Guard has finished; make a new one"))?;
        if !self.started {
            return Err(PyRuntimeError::new_err(
                "finish() before any step(): nothing to diagnose",
            ));
        }
        if let (Some(final_train_loss), Some(baseline)) = (final_loss, baseline_loss) {
            guard.set_learning(gradguard_core::Learning {
                final_train_loss,
                baseline_loss: baseline,
                margin: gradguard_core::Learning::DEFAULT_MARGIN,
            });
        }
        let figures = RunFigures {
            name: self.name.clone(),
            steps: guard.steps(),
            last_batch_loss: self.last_loss.filter(|l| l.is_finite()),
            final_train_loss: final_loss,
            baseline_loss,
            ..RunFigures::default()
        };
        let diagnosis = guard.diagnose();
        let summary = guard
            .finish_with(&diagnosis, &figures)
            .map_err(engine_error)?;
        let text = serde_json::to_string(&summary).map_err(engine_error)?;
        py.import("json")?.call_method1("loads", (text,))
    }
}

/// gradguard: find, explain and cure exploding gradients in your own training loop.
#[pymodule]
fn _gradguard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gradguard_engine::link_plugins();
    m.add_class::<Guard>()?;
    m.add_class::<Decision>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
