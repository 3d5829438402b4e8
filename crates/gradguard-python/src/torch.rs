//! PyTorch tensors kept by PyTorch: the [`GradientFramework`] over `gradguard._torch`.
//!
//! Two uses (see the crate docs):
//! - **off the host** (CUDA tensors, non-float32 dtypes, or `torch_stats=True`): the step is
//!   measured with torch ops on the tensors' device and every edit is applied there;
//! - **on the host** (CPU float32 tensors, read in place as NumPy arrays): gradguard measures
//!   and edits them itself, except the global-norm clip, which PyTorch computes so that the
//!   result is bit-identical to `clip_grad_norm_` (gradguard's own total is summed in f64).

use gradguard_core::kernels::applied_factor;
use gradguard_core::{
    EditOutcome, FrameworkError, GradEdit, GradientFramework, StepStats, TensorNorms,
};
use pyo3::prelude::*;

/// Relative margin under which gradguard's own total norm is "clearly below" `max_norm`, so
/// PyTorch's (float32, differently rounded) total cannot reach it: no torch call then. The
/// two totals differ by far less (float32 rounding over the tensors, about 1e-6 relative).
const CLEARLY_BELOW: f64 = 1e-3;

/// `clip_grad_norm_`'s coefficient from its float32 total, op for op in float32:
/// `max_norm / (total + 1e-6)` is `Tensor.__rtruediv__`, i.e. `reciprocal(total + 1e-6) *
/// max_norm` (each operand a float32, each result rounded to float32), then
/// `clamp(max=1.0)`, which keeps NaN.
pub(crate) fn torch_clip_coef(max_norm: f64, total: f32) -> f32 {
    let denom = total + 1e-6f32;
    let coef = (1.0f32 / denom) * (max_norm as f32);
    if coef.is_nan() {
        coef
    } else {
        coef.min(1.0)
    }
}

/// One step's tensors on PyTorch's side (a `gradguard._torch.TorchGrads`), with their names
/// and shapes in view order.
pub(crate) struct TorchFramework<'py, 'a> {
    helper: Bound<'py, PyAny>,
    on_host: bool,
    names: &'a [String],
    shapes: &'a [Vec<usize>],
}

/// One tensor's figures as `TorchGrads.measure` returns them.
type Row = (f64, f64, usize, f64, usize);

fn norms(
    (grad_norm, grad_max_abs, grad_nonfinite, weight_norm, weight_nonfinite): Row,
) -> TensorNorms {
    TensorNorms {
        grad_norm,
        grad_max_abs,
        grad_nonfinite,
        weight_norm,
        weight_nonfinite,
    }
}

fn py_error(what: &str, e: PyErr) -> FrameworkError {
    FrameworkError(format!("PyTorch failed to {what}: {e}"))
}

impl<'py, 'a> TorchFramework<'py, 'a> {
    /// `helper` over the step's weights and gradients; `on_host` when gradguard reads them.
    pub(crate) fn new(
        helper: Bound<'py, PyAny>,
        on_host: bool,
        names: &'a [String],
        shapes: &'a [Vec<usize>],
    ) -> Self {
        TorchFramework {
            helper,
            on_host,
            names,
            shapes,
        }
    }

    /// `TorchGrads.measure(indices)`: one row per tensor asked (every tensor for `None`).
    fn rows(&self, indices: Option<Vec<usize>>) -> Result<Vec<Row>, FrameworkError> {
        self.helper
            .call_method1("measure", (indices,))
            .and_then(|r| r.extract())
            .map_err(|e| py_error("measure the gradients", e))
    }

    fn remeasure(&mut self, stats: &mut StepStats) -> Result<(), FrameworkError> {
        self.measure(stats)
    }

    /// Re-measures tensor `index` only, and refreshes the totals.
    fn remeasure_one(&mut self, stats: &mut StepStats, index: usize) -> Result<(), FrameworkError> {
        let rows = self.rows(Some(vec![index]))?;
        let (Some(&row), Some(slot)) = (rows.first(), stats.params.get_mut(index)) else {
            return Err(FrameworkError(format!("no tensor {index} to measure")));
        };
        slot.set_norms(norms(row));
        stats.refresh_totals();
        Ok(())
    }

    fn scaled(
        &mut self,
        stats: &mut StepStats,
        index: Option<usize>,
        factor: f64,
    ) -> Result<(), FrameworkError> {
        let finite_before = match index {
            Some(i) => stats.params.get(i).is_some_and(|p| p.grad_nonfinite == 0),
            None => stats.grads_finite(),
        };
        if finite_before && factor.is_finite() {
            match index {
                Some(i) => {
                    stats.scale_param(i, factor);
                    stats.refresh_totals();
                }
                None => stats.scale_all(factor),
            }
            Ok(())
        } else {
            self.remeasure(stats)
        }
    }
}

impl GradientFramework for TorchFramework<'_, '_> {
    fn values_on_host(&self) -> bool {
        self.on_host
    }

    fn measure(&mut self, stats: &mut StepStats) -> Result<(), FrameworkError> {
        let rows = self.rows(None)?;
        if rows.len() != self.names.len() {
            return Err(FrameworkError(format!(
                "PyTorch measured {} tensors, expected {}",
                rows.len(),
                self.names.len()
            )));
        }
        let tensors = self
            .names
            .iter()
            .zip(self.shapes)
            .zip(rows)
            .map(|((n, s), row)| {
                let role = gradguard_core::Role::from_name(n, Some(s.len()));
                (n.as_str(), role, s.iter().product(), norms(row))
            });
        stats.set_measured(tensors);
        Ok(())
    }

    fn edit(
        &mut self,
        edit: &GradEdit,
        stats: &mut StepStats,
    ) -> Result<EditOutcome, FrameworkError> {
        match *edit {
            GradEdit::ClipGlobalNorm {
                max_norm,
                norm_type,
            } => {
                if self.on_host {
                    let total = if norm_type.is_infinite() {
                        stats.grad_max_abs
                    } else {
                        stats.grad_norm
                    };
                    // Non-finite gradients (`propagate`): gradguard's kernels already do
                    // PyTorch's arithmetic there; clearly below: nothing to do.
                    if !stats.grads_finite()
                        || !total.is_finite()
                        || total * (1.0 + CLEARLY_BELOW) + 1e-6 < max_norm
                    {
                        return Ok(EditOutcome::Declined);
                    }
                }
                if self.on_host {
                    // PyTorch's own float32 total (it reads the memory gradguard holds), its
                    // coefficient's float32 arithmetic here, and gradguard multiplies: the
                    // same float32 products as clip_grad_norm_'s `_foreach_mul_`.
                    let total: f64 = self
                        .helper
                        .call_method1("total_norm", (norm_type,))
                        .and_then(|c| c.extract())
                        .map_err(|e| py_error("compute the total norm", e))?;
                    let coef = torch_clip_coef(max_norm, total as f32);
                    if coef >= 1.0 {
                        return Ok(EditOutcome::Unchanged);
                    }
                    return Ok(EditOutcome::ScaleOnHost {
                        factor: coef as f64,
                    });
                }
                // Off the host, in the tensors' own dtype with PyTorch's ops (bfloat16 rounds
                // at every op of clip_grad_norm_'s, which float32 here would not reproduce).
                let coef: f64 = self
                    .helper
                    .call_method1("clip_global_norm", (max_norm, norm_type))
                    .and_then(|c| c.extract())
                    .map_err(|e| py_error("clip the global norm", e))?;
                if coef >= 1.0 {
                    return Ok(EditOutcome::Unchanged);
                }
                self.scaled(stats, None, coef)?;
                Ok(EditOutcome::Applied { factor: coef })
            }
            _ if self.on_host => Ok(EditOutcome::Declined),
            GradEdit::ScaleAll { factor } => {
                self.helper
                    .call_method1("scale_all", (factor,))
                    .map_err(|e| py_error("scale the gradients", e))?;
                let applied = applied_factor(factor);
                self.scaled(stats, None, applied)?;
                Ok(EditOutcome::Applied { factor: applied })
            }
            GradEdit::ScaleParam { index, factor } => {
                self.helper
                    .call_method1("scale_param", (index, factor))
                    .map_err(|e| py_error("scale a tensor's gradients", e))?;
                let applied = applied_factor(factor);
                self.scaled(stats, Some(index), applied)?;
                Ok(EditOutcome::Applied { factor: applied })
            }
            GradEdit::Clamp { bound } => {
                self.helper
                    .call_method1("clamp", (bound as f64,))
                    .map_err(|e| py_error("clamp the gradients", e))?;
                self.remeasure(stats)?;
                Ok(EditOutcome::Applied { factor: 1.0 })
            }
            GradEdit::UnitClip {
                clip_factor,
                eps,
                propagate,
            } => {
                self.helper
                    .call_method1("unit_clip", (clip_factor, eps, propagate))
                    .map_err(|e| py_error("clip per unit (agc)", e))?;
                self.remeasure(stats)?;
                Ok(EditOutcome::Applied { factor: 1.0 })
            }
            GradEdit::AddPenaltyGrad { index, l1, l2 } => {
                let sum_abs: f64 = self
                    .helper
                    .call_method1("add_penalty_grad", (index, l1, l2))
                    .and_then(|v| v.extract())
                    .map_err(|e| py_error("add the penalty's gradient", e))?;
                self.remeasure_one(stats, index)?;
                Ok(EditOutcome::Penalised { sum_abs })
            }
            GradEdit::ZeroNonFinite => {
                self.helper
                    .call_method0("zero_nonfinite")
                    .map_err(|e| py_error("zero the non-finite gradients", e))?;
                self.remeasure(stats)?;
                Ok(EditOutcome::Applied { factor: 1.0 })
            }
        }
    }
}
