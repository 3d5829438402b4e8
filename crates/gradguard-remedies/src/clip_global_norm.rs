//! `clip_global_norm`: clip the norm of all gradients together (PyTorch's `clip_grad_norm_`).
//!
//! # Formula (followed: PyTorch `torch.nn.utils.clip_grad_norm_`)
//! `total = ||(g_1, ..., g_n)||_p` over every tensor together (p = 2, or p = inf: `max |g|`),
//! `coef = max_norm / (total + 1e-6)`, clamped at 1; every gradient is multiplied by `coef`.
//! Keras' `global_clipnorm` and optax's `clip_by_global_norm` clip to the same norm without the
//! `1e-6` (so at `total == max_norm` PyTorch, and gradguard, shrink by `max_norm / (max_norm +
//! 1e-6)`, and at `total == max_norm == 0` gradguard gives 0 where optax gives NaN).
//!
//! Differences from PyTorch, all on purpose:
//! - the total is read from the step statistics (measured once per step in f64), not recomputed;
//! - when the clamped coef is 1 nothing is written (PyTorch always multiplies by it); the
//!   result is the same, the write pass is saved;
//! - non-finite gradients follow `on_nonfinite` (default `skip_step`; `propagate` is PyTorch's
//!   behaviour: an infinite total gives coef 0, so finite entries become 0 and infinite ones
//!   NaN; a NaN total makes every entry NaN);
//! - a negative or non-finite `max_norm` is an error (PyTorch silently flips the gradient).
//!
//! # Parameters
//! - `max_norm` (required): the largest allowed global norm, `>= 0`.
//! - `norm_type = 2`: `2` for the L2 norm or `"inf"` for the largest |g|.
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_alias, describe_plugin, Action, ClipScope, Family, GradEdit, KindAlias, ParamDoc,
    PluginInfo, Remedy, RemedyCapabilities, RemedyContext, RemedyError,
};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

/// PyTorch's epsilon added to the total norm.
pub const TORCH_EPS: f64 = 1e-6;

/// Which norm `clip_global_norm` bounds: `2` or `"inf"` in specs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormType {
    /// The L2 norm (`norm_type = 2`).
    #[default]
    L2,
    /// The largest absolute value (`norm_type = "inf"`).
    Inf,
}

impl Serialize for NormType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NormType::L2 => s.serialize_u8(2),
            NormType::Inf => s.serialize_str("inf"),
        }
    }
}

struct NormTypeVisitor;

impl Visitor<'_> for NormTypeVisitor {
    type Value = NormType;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("2 or \"inf\"")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NormType, E> {
        if v == 2 {
            Ok(NormType::L2)
        } else {
            Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NormType, E> {
        if v == 2 {
            Ok(NormType::L2)
        } else {
            Err(E::invalid_value(de::Unexpected::Signed(v), &self))
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NormType, E> {
        if v == 2.0 {
            Ok(NormType::L2)
        } else if v == f64::INFINITY {
            Ok(NormType::Inf)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NormType, E> {
        match v {
            "inf" | "Inf" | "infinity" => Ok(NormType::Inf),
            "2" => Ok(NormType::L2),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for NormType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NormType, D::Error> {
        d.deserialize_any(NormTypeVisitor)
    }
}

/// Global-norm clipping, PyTorch `clip_grad_norm_` semantics (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipGlobalNorm {
    /// The largest allowed global norm.
    pub max_norm: f64,
    /// `2` or `"inf"`.
    #[serde(default)]
    pub norm_type: NormType,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
}

impl ClipGlobalNorm {
    /// L2 clipping to `max_norm` with the default policy.
    pub fn new(max_norm: f64) -> Self {
        ClipGlobalNorm {
            max_norm,
            norm_type: NormType::L2,
            on_nonfinite: NonFinitePolicy::SkipStep,
        }
    }
}

/// The step's total norm of the given type, as PyTorch computes it (NaN when any value is NaN).
pub fn total_norm(stats: &gradguard_core::StepStats, norm_type: NormType) -> f64 {
    match norm_type {
        NormType::L2 => stats.grad_norm,
        NormType::Inf if stats.grad_sum_sq.is_nan() => f64::NAN,
        NormType::Inf => stats.grad_max_abs,
    }
}

/// Scales every gradient by `coef = max_norm / (total + 1e-6)` when it is below 1 (or NaN,
/// under `propagate`), through [`RemedyContext::scale_all`] (which keeps the statistics true). Returns the
/// factor applied (1 when nothing was written). Shared by `autoclip` and `zclip`.
///
/// When a framework keeps the gradients ([`gradguard_core::GradientFramework`], e.g.
/// PyTorch), it computes `total` and `coef` itself ([`GradEdit::ClipGlobalNorm`]), so the
/// result is bit-identical to its own `clip_grad_norm_`; `norm_type` says which total.
pub fn clip_to_norm(
    ctx: &mut RemedyContext<'_, '_>,
    max_norm: f64,
    total: f64,
    norm_type: NormType,
) -> f64 {
    let p = match norm_type {
        NormType::L2 => 2.0,
        NormType::Inf => f64::INFINITY,
    };
    let edit = GradEdit::ClipGlobalNorm {
        max_norm,
        norm_type: p,
    };
    if let Some(applied) = ctx.framework_edit(edit) {
        return applied;
    }
    let coef = max_norm / (total + TORCH_EPS);
    if !(coef < 1.0 || coef.is_nan()) {
        return 1.0;
    }
    ctx.scale_all(coef)
}

#[typetag::serde(name = "clip_global_norm")]
impl Remedy for ClipGlobalNorm {
    /// It bounds the global norm.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm)
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("clip_global_norm", "max_norm", self.max_norm, 0.0)?;
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        ensure_stats_match("clip_global_norm", ctx)?;
        if let Some(action) = apply_policy("clip_global_norm", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let total = total_norm(ctx.stats(), self.norm_type);
        clip_to_norm(ctx, self.max_norm, total, self.norm_type);
        Ok(Action::Continue)
    }

    fn clip_threshold(&self) -> Option<f64> {
        Some(self.max_norm)
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "clip_global_norm",
    summary: "Clips the norm of all gradients together to max_norm (PyTorch clip_grad_norm_: coef = max_norm / (total + 1e-6), clamped at 1).",
    params: &[
        ParamDoc { name: "max_norm", default: None, doc: "largest allowed global norm (>= 0)" },
        ParamDoc { name: "norm_type", default: Some("2"), doc: "2 for the L2 norm, \"inf\" for max |g|" },
        ParamDoc {
            name: "on_nonfinite",
            default: Some("\"skip_step\""),
            doc: "non-finite gradients: \"skip_step\", \"error\", \"zero\" or \"propagate\" (PyTorch)"
        },
    ],
    example: "max_norm = 1.0",
});

describe_alias!(KindAlias {
    family: Family::Remedy,
    alias: "clip_grad_norm",
    kind: "clip_global_norm",
    origin: "PyTorch's torch.nn.utils.clip_grad_norm_ (same formula, max_norm and norm_type)",
});

describe_alias!(KindAlias {
    family: Family::Remedy,
    alias: "global_clipnorm",
    kind: "clip_global_norm",
    origin: "Keras' optimizer argument global_clipnorm (the global L2 norm)",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    fn two(a: &[f32], b: &[f32]) -> OwnedParams {
        OwnedParams::new()
            .with_grads("a", &[a.len()], a)
            .with_grads("b", &[b.len()], b)
    }

    #[test]
    fn below_threshold_is_untouched() {
        // ||(3, 4, 12)|| = 13 < 20: coef = 20 / (13 + 1e-6) > 1, nothing written.
        let mut d = two(&[3.0, 4.0], &[12.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(20.0), &mut d, 1, 0.5);
        assert_eq!(out.result.unwrap(), Action::Continue);
        assert!(!out.changed);
        assert_eq!(d.flat_grads(), vec![3.0, 4.0, 12.0]);
        assert_eq!(out.stats.grad_norm, 13.0);
    }

    #[test]
    fn at_threshold_shrinks_by_the_torch_epsilon() {
        // total = 13 = max_norm: coef = 13 / (13 + 1e-6), as PyTorch.
        let mut d = two(&[3.0, 4.0], &[12.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(13.0), &mut d, 1, 0.5);
        let coef = (13.0f64 / (13.0 + 1e-6)) as f32;
        assert!(out.changed);
        assert_eq!(d.flat_grads(), vec![3.0 * coef, 4.0 * coef, 12.0 * coef]);
        assert!((out.stats.grad_norm - 13.0 * coef as f64).abs() < 1e-12);
    }

    #[test]
    fn far_above_threshold() {
        // total = 13, max_norm = 1: coef = 1 / 13.000001.
        let mut d = two(&[3.0, 4.0], &[12.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 1, 0.5);
        let coef = (1.0f64 / 13.000001) as f32;
        assert_eq!(d.flat_grads(), vec![3.0 * coef, 4.0 * coef, 12.0 * coef]);
        assert!((d.grad_norm() - 1.0).abs() < 1e-6, "{}", d.grad_norm());
        assert!((out.stats.grad_norm - d.grad_norm()).abs() < 1e-7);
        assert_eq!(out.stats.params[1].grad_max_abs, (12.0 * coef) as f64);
    }

    #[test]
    fn inf_norm_uses_max_abs() {
        // max |g| = 12; max_norm 6: coef = 6 / (12 + 1e-6).
        let mut d = two(&[3.0, -4.0], &[-12.0]);
        let mut r: ClipGlobalNorm =
            serde_json::from_str(r#"{"max_norm":6,"norm_type":"inf"}"#).unwrap();
        run_remedy(&mut r, &mut d, 1, 0.5);
        let coef = (6.0f64 / 12.000001) as f32;
        assert_eq!(d.flat_grads(), vec![3.0 * coef, -4.0 * coef, -12.0 * coef]);
    }

    #[test]
    fn all_zero_gradients_and_zero_max_norm() {
        let mut d = two(&[0.0, 0.0], &[0.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 1, 0.5);
        assert!(!out.changed);
        // max_norm = 0 (a schedule that decays to 0): coef = 0 / 1e-6 = 0, not optax's NaN.
        let mut d = two(&[0.0, 0.0], &[0.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(0.0), &mut d, 1, 0.5);
        assert_eq!(out.result.unwrap(), Action::Continue);
        assert_eq!(d.flat_grads(), vec![0.0, 0.0, 0.0]);
        let mut d = two(&[1.0, 0.0], &[0.0]);
        run_remedy(&mut ClipGlobalNorm::new(0.0), &mut d, 1, 0.5);
        assert_eq!(d.flat_grads(), vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn tiny_and_huge_values() {
        // 1e-30 values: total 2e-30, far below 1: untouched.
        let mut d = two(&[1e-30, 1e-30, 1e-30], &[1e-30]);
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 1, 0.5);
        assert!(!out.changed);
        assert!((out.stats.grad_norm - 2e-30).abs() < 1e-36);
        // 1e30 values: total 2e30 (no overflow: squares are summed in f64), clipped to 1.
        let mut d = two(&[1e30, 1e30, 1e30], &[1e30]);
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 1, 0.5);
        assert!((d.grad_norm() - 1.0).abs() < 1e-6, "{}", d.grad_norm());
        for g in d.flat_grads() {
            assert!((g - 0.5).abs() < 1e-6, "{g}");
        }
        assert!((out.stats.grad_norm - 1.0).abs() < 1e-6);
        // near f32::MAX the coefficient is subnormal in f32 and is applied in f64.
        let mut d = two(&[3e38, 3e38], &[]);
        run_remedy(&mut ClipGlobalNorm::new(1e-3), &mut d, 1, 0.5);
        assert!((d.grad_norm() - 1e-3).abs() < 1e-9, "{}", d.grad_norm());
    }

    #[test]
    fn many_small_tensors() {
        // 1000 tensors of one value 1: total sqrt(1000); clip to 1: each value 1/sqrt(1000).
        let mut d = OwnedParams::new();
        for i in 0..1000 {
            d = d.with_grads(&format!("t{i}"), &[1], &[1.0]);
        }
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 1, 0.5);
        let coef = (1.0 / (1000f64.sqrt() + 1e-6)) as f32;
        assert!(d.flat_grads().iter().all(|&g| g == coef));
        assert!((out.stats.grad_norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn nonfinite_policies() {
        let bad = || two(&[f32::INFINITY, 1.0], &[2.0]);
        let mut d = bad();
        let out = run_remedy(&mut ClipGlobalNorm::new(1.0), &mut d, 4, 0.5);
        assert!(out.result.unwrap().withholds_update());
        assert_eq!(d.flat_grads()[1..], [1.0, 2.0]);
        let mut r: ClipGlobalNorm =
            serde_json::from_str(r#"{"max_norm":1,"on_nonfinite":"error"}"#).unwrap();
        let e = run_remedy(&mut r, &mut bad(), 4, 0.5)
            .result
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a`") && e.contains("step 4"), "{e}");
        // zero: inf -> 0, then ||(0, 1, 2)|| = sqrt(5) clipped to 1.
        let mut r: ClipGlobalNorm =
            serde_json::from_str(r#"{"max_norm":1,"on_nonfinite":"zero"}"#).unwrap();
        let mut d = bad();
        let out = run_remedy(&mut r, &mut d, 4, 0.5);
        let coef = (1.0 / (5f64.sqrt() + 1e-6)) as f32;
        assert_eq!(d.flat_grads(), vec![0.0, coef, 2.0 * coef]);
        assert_eq!(out.stats.grad_nonfinite, 0);
        // propagate (PyTorch): total inf -> coef 0: finite entries 0, inf * 0 = NaN.
        let mut r: ClipGlobalNorm =
            serde_json::from_str(r#"{"max_norm":1,"on_nonfinite":"propagate"}"#).unwrap();
        let mut d = bad();
        let out = run_remedy(&mut r, &mut d, 4, 0.5);
        let g = d.flat_grads();
        assert!(g[0].is_nan() && g[1] == 0.0 && g[2] == 0.0);
        assert_eq!(out.stats.grad_nonfinite, 1);
        // propagate with NaN: everything NaN.
        let mut d = two(&[f32::NAN, 1.0], &[2.0]);
        run_remedy(&mut r, &mut d, 4, 0.5);
        assert!(d.flat_grads().iter().all(|g| g.is_nan()));
    }

    #[test]
    fn rejects_bad_parameters() {
        let e = run_remedy(
            &mut ClipGlobalNorm::new(-1.0),
            &mut two(&[1.0], &[1.0]),
            1,
            0.5,
        )
        .result
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "remedy `clip_global_norm`: `max_norm` must be a finite number >= 0, got -1"
        );
        let e = serde_json::from_str::<ClipGlobalNorm>(r#"{"max_norm":1,"norm_type":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 2 or \"inf\""), "{e}");
        let e = serde_json::from_str::<ClipGlobalNorm>(r#"{"max_nrm":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `max_nrm`"), "{e}");
        let r: ClipGlobalNorm = serde_json::from_str(r#"{"max_norm":1.5}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"max_norm":1.5,"norm_type":2,"on_nonfinite":"skip_step"}"#
        );
        assert_eq!(r.clip_threshold(), Some(1.5));
    }

    #[test]
    fn norm_type_from_toml_integers() {
        // TOML integers are signed (serde's visit_i64), JSON's unsigned (visit_u64): both
        // paths accept 2 and refuse other numbers.
        let r: ClipGlobalNorm = toml::from_str("max_norm = 1.0\nnorm_type = 2").unwrap();
        assert_eq!(r.norm_type, NormType::L2);
        let r: ClipGlobalNorm = toml::from_str("max_norm = 1.0\nnorm_type = \"inf\"").unwrap();
        assert_eq!(r.norm_type, NormType::Inf);
        // TOML floats (visit_f64): 2.0 and the bare float `inf`.
        let r: ClipGlobalNorm = toml::from_str("max_norm = 1.0\nnorm_type = 2.0").unwrap();
        assert_eq!(r.norm_type, NormType::L2);
        let r: ClipGlobalNorm = toml::from_str("max_norm = 1.0\nnorm_type = inf").unwrap();
        assert_eq!(r.norm_type, NormType::Inf);
        // strings (visit_str): "2", "inf", "Inf", "infinity".
        for (text, want) in [
            ("2", NormType::L2),
            ("inf", NormType::Inf),
            ("Inf", NormType::Inf),
            ("infinity", NormType::Inf),
        ] {
            let r: ClipGlobalNorm =
                toml::from_str(&format!("max_norm = 1.0\nnorm_type = \"{text}\"")).unwrap();
            assert_eq!(r.norm_type, want, "{text}");
        }
        for bad in ["1", "-2", "3", "1.5", "-inf", "nan", "\"l2\""] {
            let e = toml::from_str::<ClipGlobalNorm>(&format!("max_norm = 1.0\nnorm_type = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("expected 2 or \"inf\""), "{bad}: {e}");
        }
    }

    #[test]
    fn a_coefficient_of_exactly_one_writes_nothing() {
        // coef = max_norm / (t + 1e-6) == 1 exactly when max_norm = t + 1e-6: PyTorch's
        // clamp(coef, max=1) multiplies by 1, a no-op; gradguard writes nothing and reports
        // no change (`coef < 1` is strict).
        let mut d = two(&[3.0, 4.0], &[12.0]);
        let out = run_remedy(&mut ClipGlobalNorm::new(13.0 + TORCH_EPS), &mut d, 1, 0.0);
        assert!(!out.changed);
        assert_eq!(d.flat_grads(), vec![3.0, 4.0, 12.0]);
        // Just below, it scales.
        let out = run_remedy(
            &mut ClipGlobalNorm::new((13.0 + TORCH_EPS).next_down()),
            &mut d,
            2,
            0.0,
        );
        assert!(out.changed);
    }

    #[test]
    fn inf_norm_with_nan_is_nan_under_propagate() {
        // PyTorch: max |g| over a tensor holding NaN is NaN, so coef is NaN and every
        // gradient becomes NaN. The statistics' max |g| ignores NaN; total_norm must not.
        let mut r = ClipGlobalNorm {
            norm_type: NormType::Inf,
            on_nonfinite: NonFinitePolicy::Propagate,
            ..ClipGlobalNorm::new(1.0)
        };
        let mut d = two(&[f32::NAN, 4.0], &[12.0]);
        run_remedy(&mut r, &mut d, 1, 0.0);
        assert!(
            d.flat_grads().iter().all(|g| g.is_nan()),
            "{:?}",
            d.flat_grads()
        );
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_global_norm_clip(ClipGlobalNorm::new);
        gradguard_testkit::assert_remedy_invariants(|| ClipGlobalNorm::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipGlobalNorm::new(1.0));
        gradguard_testkit::assert_guards_nonfinite(|| ClipGlobalNorm {
            on_nonfinite: NonFinitePolicy::Error,
            ..ClipGlobalNorm::new(1.0)
        });
    }
}
