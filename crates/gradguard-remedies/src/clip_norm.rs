//! `clip_norm`: clip each tensor's norm on its own (Keras' `clipnorm`).
//!
//! # Formula (followed: Keras `clipnorm`, i.e. `tf.clip_by_norm` per variable)
//! For each tensor `g` with L2 norm `||g||`: `g <- g * c / max(||g||, c)`. A tensor whose norm
//! is at most `c` is left exactly as it is (the factor is 1; nothing is written).
//!
//! Scope warning: this is *per tensor*, unlike PyTorch's `clip_grad_norm_` and Keras'
//! `global_clipnorm`. With K tensors every tensor is bounded by `c`, but the global norm only
//! by `c * sqrt(K)` (clab/dynet #1374); use `clip_global_norm` to bound the whole update.
//!
//! Keras does not check finiteness (an infinite norm turns finite entries into 0 and infinite
//! ones into NaN); here non-finite gradients follow `on_nonfinite`, and `propagate` reproduces
//! Keras per tensor (`g * c / max(||g||, c)` with the IEEE rules, a NaN norm giving NaN).
//! The per-tensor norm is read from the step statistics, not recomputed.
//!
//! # Parameters
//! - `max_norm` (required): the largest allowed norm of each tensor, `> 0`.
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_alias, describe_plugin, Action, ClipScope, Family, KindAlias, ParamDoc, PluginInfo,
    Remedy, RemedyCapabilities, RemedyContext, RemedyError,
};
use serde::{Deserialize, Serialize};

use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

/// Per-tensor norm clipping, Keras `clipnorm` semantics (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipNorm {
    /// The largest allowed norm of each tensor.
    pub max_norm: f64,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
}

impl ClipNorm {
    /// Per-tensor clipping to `max_norm` with the default policy.
    pub fn new(max_norm: f64) -> Self {
        ClipNorm {
            max_norm,
            on_nonfinite: NonFinitePolicy::SkipStep,
        }
    }
}

#[typetag::serde(name = "clip_norm")]
impl Remedy for ClipNorm {
    /// It bounds each tensor's norm.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.clipping(ClipScope::PerTensor)
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("clip_norm", "max_norm", self.max_norm, f64::MIN_POSITIVE)?;
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        ensure_stats_match("clip_norm", ctx)?;
        if let Some(action) = apply_policy("clip_norm", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let c = self.max_norm;
        ctx.scale_each(|s| {
            let n = s.grad_norm;
            // max(n, c) that keeps NaN (Keras under propagate).
            let denom = if n.is_nan() || n > c { n } else { c };
            let f = c / denom;
            (f < 1.0 || f.is_nan()).then_some(f)
        });
        Ok(Action::Continue)
    }

    /// `None`: the bound is per tensor, not on the global norm that charts show.
    fn clip_threshold(&self) -> Option<f64> {
        None
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "clip_norm",
    summary: "Clips each tensor's norm on its own (Keras clipnorm: g * c / max(||g||, c)); bounds the global norm only by c * sqrt(K).",
    params: &[
        ParamDoc { name: "max_norm", default: None, doc: "largest allowed norm of each tensor (> 0)" },
        ParamDoc {
            name: "on_nonfinite",
            default: Some("\"skip_step\""),
            doc: "non-finite gradients: \"skip_step\", \"error\", \"zero\" or \"propagate\" (Keras)"
        },
    ],
    example: "max_norm = 1.0",
});

describe_alias!(KindAlias {
    family: Family::Remedy,
    alias: "clipnorm",
    kind: "clip_norm",
    origin: "Keras' optimizer argument clipnorm (each tensor clipped on its own)",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    #[test]
    fn each_tensor_on_its_own() {
        // a: ||(3, 4)|| = 5 > 2 -> (1.2, 1.6); b: ||(1)|| = 1 <= 2 untouched; c: ||(0, 0)|| = 0.
        let mut d = OwnedParams::new()
            .with_grads("a", &[2], &[3.0, 4.0])
            .with_grads("b", &[1], &[1.0])
            .with_grads("c", &[2], &[0.0, 0.0]);
        let out = run_remedy(&mut ClipNorm::new(2.0), &mut d, 1, 0.0);
        let f = (2.0f64 / 5.0) as f32;
        assert_eq!(d.flat_grads(), vec![3.0 * f, 4.0 * f, 1.0, 0.0, 0.0]);
        assert!(out.changed);
        assert!((out.stats.params[0].grad_norm - 2.0).abs() < 1e-6);
        assert!((out.stats.grad_norm - 5f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn at_threshold_untouched_and_global_bound_is_c_sqrt_k() {
        // Exactly at c: factor c / max(c, c) = 1, untouched (Keras has no epsilon).
        let mut d = OwnedParams::new().with_grads("a", &[2], &[3.0, 4.0]);
        let out = run_remedy(&mut ClipNorm::new(5.0), &mut d, 1, 0.0);
        assert!(!out.changed);
        // 4 tensors of norm 10 clipped to 1 each: global norm 2 = 1 * sqrt(4), not 1.
        let mut d = OwnedParams::new();
        for i in 0..4 {
            d = d.with_grads(&format!("t{i}"), &[1], &[-10.0]);
        }
        run_remedy(&mut ClipNorm::new(1.0), &mut d, 1, 0.0);
        assert_eq!(d.flat_grads(), vec![-1.0; 4]);
        assert_eq!(d.grad_norm(), 2.0);
    }

    #[test]
    fn huge_and_tiny() {
        let mut d = OwnedParams::new()
            .with_grads("a", &[2], &[1e30, -1e30])
            .with_grads("b", &[1], &[1e-30]);
        run_remedy(&mut ClipNorm::new(1.0), &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert!(
            (g[0] - 0.70710677).abs() < 1e-6 && (g[1] + 0.70710677).abs() < 1e-6,
            "{g:?}"
        );
        assert_eq!(g[2], 1e-30);
    }

    #[test]
    fn propagate_is_keras() {
        let mut r: ClipNorm =
            serde_json::from_str(r#"{"max_norm":1,"on_nonfinite":"propagate"}"#).unwrap();
        let mut d = OwnedParams::new()
            .with_grads("a", &[2], &[f32::INFINITY, 2.0])
            .with_grads("b", &[1], &[3.0]);
        let out = run_remedy(&mut r, &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert!(
            g[0].is_nan() && g[1] == 0.0 && (g[2] - 1.0).abs() < 1e-6,
            "{g:?}"
        );
        assert_eq!(out.stats.params[0].grad_nonfinite, 1);
        assert!((out.stats.params[1].grad_norm - 1.0).abs() < 1e-6);
        let mut d = OwnedParams::new().with_grads("a", &[1], &[f32::NAN]);
        assert!(run_remedy(&mut ClipNorm::new(1.0), &mut d, 1, 0.0)
            .result
            .unwrap()
            .withholds_update());
    }

    #[test]
    fn rejects_zero_max_norm() {
        let e = run_remedy(
            &mut ClipNorm::new(0.0),
            &mut OwnedParams::new().with_grads("a", &[1], &[1.0]),
            1,
            0.0,
        )
        .result
        .unwrap_err()
        .to_string();
        assert!(e.contains("`max_norm` must be a finite number"), "{e}");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_per_tensor_clip(ClipNorm::new);
        gradguard_testkit::assert_remedy_invariants(|| ClipNorm::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipNorm::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipNorm {
            on_nonfinite: NonFinitePolicy::Error,
            ..ClipNorm::new(1.0)
        });
    }
}
