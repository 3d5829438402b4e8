//! The non-finite policy shared by every clipping remedy, and the checks they all run first.
//!
//! Frameworks disagree on what clipping does with NaN or infinite gradients (see FIELD.md B):
//! PyTorch's `clip_grad_norm_` multiplies by `max_norm / (inf + 1e-6) = 0` (finite entries
//! become 0, infinite ones NaN) or by NaN; Keras' `global_clipnorm` and optax return NaN;
//! `clip_grad_value_` lets NaN through. gradguard makes the choice explicit with
//! `on_nonfinite`, and its default never lets a non-finite value reach the weights.

use gradguard_core::{Action, GradEdit, RemedyContext, RemedyError, TensorEdit};
use serde::{Deserialize, Serialize};

use crate::kernels::zero_nonfinite;

/// What a clipping remedy does when the step's gradients hold NaN or ±inf values.
///
/// Spec values: `"skip_step"` (default), `"error"`, `"zero"`, `"propagate"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Ask the loop to skip the update ([`Action::SkipStep`]); gradients are left untouched.
    #[default]
    SkipStep,
    /// Stop with [`RemedyError::NonFinite`], naming the first tensor holding a non-finite value
    /// (what PyTorch's `error_if_nonfinite=True` does, plus the tensor's name).
    Error,
    /// Set every non-finite gradient value to 0, then clip the rest as usual.
    Zero,
    /// Clip exactly as the followed framework does, letting NaN/inf spread (PyTorch-compatible;
    /// only for reproducing a reference run).
    Propagate,
}

impl NonFinitePolicy {
    /// The spec name.
    pub fn as_str(self) -> &'static str {
        match self {
            NonFinitePolicy::SkipStep => "skip_step",
            NonFinitePolicy::Error => "error",
            NonFinitePolicy::Zero => "zero",
            NonFinitePolicy::Propagate => "propagate",
        }
    }
}

/// Errors when the context's statistics do not describe its view (one entry per tensor).
/// Nothing to check when a framework keeps the values off the host (the view is empty).
pub fn ensure_stats_match(kind: &str, ctx: &RemedyContext<'_, '_>) -> Result<(), RemedyError> {
    if ctx.values_on_host() && ctx.stats().params.len() != ctx.view().len() {
        return Err(RemedyError::Invalid {
            remedy: kind.to_string(),
            message: format!(
                "the step statistics describe {} tensor(s) but the view holds {}; measure the view first",
                ctx.stats().params.len(),
                ctx.view().len()
            ),
        });
    }
    Ok(())
}

/// Errors unless `value` is finite and at least `min` (parameter checks, e.g. `max_norm >= 0`).
pub fn ensure_at_least(kind: &str, name: &str, value: f64, min: f64) -> Result<(), RemedyError> {
    if !(value.is_finite() && value >= min) {
        return Err(RemedyError::Invalid {
            remedy: kind.to_string(),
            message: format!("`{name}` must be a finite number >= {min}, got {value}"),
        });
    }
    Ok(())
}

/// Applies `policy` to the step before a clipping remedy runs.
///
/// Returns `Ok(Some(action))` when the remedy must return that action now (skip), `Ok(None)`
/// when it should go on clipping (finite gradients, `zero` after zeroing, or `propagate`), and
/// `Err` for `error`. With `zero`, the zeroed tensors are re-measured (through the context).
pub fn apply_policy(
    kind: &str,
    policy: NonFinitePolicy,
    ctx: &mut RemedyContext<'_, '_>,
) -> Result<Option<Action>, RemedyError> {
    if ctx.stats().grads_finite() {
        return Ok(None);
    }
    let (tensor, count) = ctx
        .stats()
        .first_nonfinite_grad()
        .map(|p| (p.name.clone(), p.grad_nonfinite))
        .unwrap_or_default();
    match policy {
        NonFinitePolicy::SkipStep => Ok(Some(Action::SkipStep {
            reason: format!(
                "{kind}: {} non-finite gradient value(s), first in `{tensor}` ({count})",
                ctx.stats().grad_nonfinite
            ),
        })),
        NonFinitePolicy::Error => Err(RemedyError::NonFinite {
            remedy: kind.to_string(),
            step: ctx.step(),
            tensor,
            count,
        }),
        NonFinitePolicy::Zero => {
            if ctx.framework_edit(GradEdit::ZeroNonFinite).is_some() {
                return Ok(None);
            }
            ctx.edit_each(|s, p| {
                if s.grad_nonfinite == 0 {
                    return TensorEdit::Keep;
                }
                zero_nonfinite(p.grads);
                TensorEdit::Edited
            });
            Ok(None)
        }
        NonFinitePolicy::Propagate => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::{Role, StepStats};
    use gradguard_testkit::OwnedParams;

    fn data() -> OwnedParams {
        OwnedParams::new()
            .with("a", &[2], Role::Weight, &[0.0, 0.0], &[1.0, 2.0])
            .with(
                "b",
                &[3],
                Role::Weight,
                &[0.0; 3],
                &[f32::NAN, 4.0, f32::INFINITY],
            )
    }

    #[test]
    fn each_policy() {
        for (policy, expect) in [
            (NonFinitePolicy::SkipStep, "skip"),
            (NonFinitePolicy::Error, "error"),
            (NonFinitePolicy::Zero, "zero"),
            (NonFinitePolicy::Propagate, "propagate"),
        ] {
            let mut d = data();
            let mut view = d.view();
            let mut stats = StepStats::measure(&view);
            let mut ctx = RemedyContext::new(7, 1.0, &mut view, &mut stats);
            let r = apply_policy("clip_global_norm", policy, &mut ctx);
            match expect {
                "skip" => {
                    let a = r.unwrap().unwrap();
                    assert!(a.withholds_update());
                    assert!(format!("{a:?}").contains("`b`"), "{a:?}");
                }
                "error" => {
                    let e = r.unwrap_err().to_string();
                    assert_eq!(e, "step 7: 2 non-finite gradient value(s) in `b` (remedy `clip_global_norm`, on_nonfinite = \"error\")");
                }
                "zero" => {
                    assert!(r.unwrap().is_none());
                    assert!(ctx.changed());
                    assert_eq!(ctx.stats().grad_nonfinite, 0);
                    assert_eq!(ctx.stats().grad_sum_sq, 1.0 + 4.0 + 16.0);
                    assert_eq!(ctx.view().params()[1].grads, &[0.0, 4.0, 0.0]);
                }
                _ => {
                    assert!(r.unwrap().is_none());
                    assert!(!ctx.changed());
                }
            }
        }
    }

    #[test]
    fn parses_spec_names() {
        let p: NonFinitePolicy = serde_json::from_str("\"zero\"").unwrap();
        assert_eq!(p, NonFinitePolicy::Zero);
        assert_eq!(p.as_str(), "zero");
        let e = serde_json::from_str::<NonFinitePolicy>("\"ignore\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("skip_step"), "{e}");
    }
}
