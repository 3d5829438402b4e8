//! `clip_value`: clamp every gradient value to `[-clip_value, clip_value]`.
//!
//! # Formula (followed: Keras `clipvalue` and PyTorch `clip_grad_value_`, which agree)
//! `g_i <- min(max(g_i, -v), v)` for every value of every tensor, in one read-and-write pass
//! that also measures the result (so the statistics stay true without a second pass). Values
//! exactly at `±v` are unchanged. Tensors whose largest |g| (from the step statistics) is at
//! most `v` are not touched at all.
//!
//! Clipping by value changes the gradient's direction and never removes NaN (FIELD.md B,
//! trip-up 2). NaN compares false and passes through `clamp` in both frameworks; here
//! non-finite gradients follow `on_nonfinite`, and `propagate` is the frameworks' behaviour
//! (NaN stays NaN, ±inf becomes ±v).
//!
//! # Parameters
//! - `clip_value` (required): the bound `v`, `>= 0`.
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_alias, describe_plugin, Action, ClipScope, Family, GradEdit, KindAlias, ParamDoc,
    PluginInfo, Remedy, RemedyCapabilities, RemedyContext, RemedyError, TensorEdit,
};
use serde::{Deserialize, Serialize};

use crate::kernels::clamp_measure;
use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

/// Value clipping, Keras `clipvalue` / PyTorch `clip_grad_value_` semantics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipValue {
    /// The bound: every gradient value ends in `[-clip_value, clip_value]`.
    pub clip_value: f64,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
}

impl ClipValue {
    /// Value clipping to `v` with the default policy.
    pub fn new(v: f64) -> Self {
        ClipValue {
            clip_value: v,
            on_nonfinite: NonFinitePolicy::SkipStep,
        }
    }
}

#[typetag::serde(name = "clip_value")]
impl Remedy for ClipValue {
    /// It bounds each value.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.clipping(ClipScope::PerValue)
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("clip_value", "clip_value", self.clip_value, 0.0)?;
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        ensure_stats_match("clip_value", ctx)?;
        if let Some(action) = apply_policy("clip_value", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let v = self.clip_value as f32;
        if ctx.framework_edit(GradEdit::Clamp { bound: v }).is_some() {
            return Ok(Action::Continue);
        }
        ctx.edit_each(|s, p| {
            // grad_max_abs ignores NaN; a tensor holding NaN only passes NaN through (propagate).
            if s.grad_max_abs <= v as f64 {
                TensorEdit::Keep
            } else {
                TensorEdit::Measured(clamp_measure(p.grads, v))
            }
        });
        Ok(Action::Continue)
    }

    /// `None`: the bound is on values, not on the global norm that charts show.
    fn clip_threshold(&self) -> Option<f64> {
        None
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "clip_value",
    summary: "Clamps every gradient value to [-clip_value, clip_value] (Keras clipvalue, PyTorch clip_grad_value_).",
    params: &[
        ParamDoc { name: "clip_value", default: None, doc: "the bound v (>= 0)" },
        ParamDoc {
            name: "on_nonfinite",
            default: Some("\"skip_step\""),
            doc: "non-finite gradients: \"skip_step\", \"error\", \"zero\" or \"propagate\" (NaN passes through)"
        },
    ],
    example: "clip_value = 0.5",
});

describe_alias!(KindAlias {
    family: Family::Remedy,
    alias: "clip_grad_value",
    kind: "clip_value",
    origin: "PyTorch's torch.nn.utils.clip_grad_value_ (clamp to [-clip_value, clip_value])",
});

describe_alias!(KindAlias {
    family: Family::Remedy,
    alias: "clipvalue",
    kind: "clip_value",
    origin: "Keras' optimizer argument clipvalue",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    #[test]
    fn clamps_and_keeps_values_at_the_bound() {
        let mut d = OwnedParams::new()
            .with_grads("a", &[5], &[0.5, -0.5, 0.7, -2.0, 0.25])
            .with_grads("b", &[2], &[0.1, -0.5]);
        let out = run_remedy(&mut ClipValue::new(0.5), &mut d, 1, 0.0);
        assert_eq!(d.flat_grads(), vec![0.5, -0.5, 0.5, -0.5, 0.25, 0.1, -0.5]);
        assert!(out.changed);
        assert_eq!(out.stats.params[0].grad_sum_sq, 4.0 * 0.25 + 0.0625);
        assert_eq!(out.stats.params[0].grad_max_abs, 0.5);
        // b was inside the bound: untouched, statistics as measured.
        assert_eq!(
            out.stats.params[1].grad_sum_sq,
            (0.1f32 as f64).powi(2) + 0.25
        );
    }

    #[test]
    fn exactly_at_bound_writes_nothing() {
        let mut d = OwnedParams::new().with_grads("a", &[2], &[1.5, -1.5]);
        let out = run_remedy(&mut ClipValue::new(1.5), &mut d, 1, 0.0);
        assert!(!out.changed);
        assert_eq!(d.flat_grads(), vec![1.5, -1.5]);
    }

    #[test]
    fn huge_tiny_and_zero() {
        let mut d = OwnedParams::new().with_grads("a", &[4], &[1e30, -1e30, 1e-30, 0.0]);
        run_remedy(&mut ClipValue::new(1.0), &mut d, 1, 0.0);
        assert_eq!(d.flat_grads(), vec![1.0, -1.0, 1e-30, 0.0]);
        let mut d = OwnedParams::new().with_grads("a", &[2], &[3.0, -1e-30]);
        run_remedy(&mut ClipValue::new(0.0), &mut d, 1, 0.0);
        assert_eq!(d.flat_grads(), vec![0.0, 0.0]);
    }

    #[test]
    fn propagate_lets_nan_through_and_clamps_inf() {
        let mut r: ClipValue =
            serde_json::from_str(r#"{"clip_value":1,"on_nonfinite":"propagate"}"#).unwrap();
        let mut d = OwnedParams::new().with_grads("a", &[3], &[f32::NAN, f32::NEG_INFINITY, 5.0]);
        let out = run_remedy(&mut r, &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert!(g[0].is_nan() && g[1] == -1.0 && g[2] == 1.0);
        assert_eq!(out.stats.grad_nonfinite, 1);
        let mut r: ClipValue =
            serde_json::from_str(r#"{"clip_value":1,"on_nonfinite":"zero"}"#).unwrap();
        let mut d = OwnedParams::new().with_grads("a", &[3], &[f32::NAN, f32::NEG_INFINITY, 5.0]);
        run_remedy(&mut r, &mut d, 1, 0.0);
        assert_eq!(d.flat_grads(), vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_value_clip(ClipValue::new);
        gradguard_testkit::assert_remedy_invariants(|| ClipValue::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipValue::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipValue {
            on_nonfinite: NonFinitePolicy::Error,
            ..ClipValue::new(1.0)
        });
    }
}
