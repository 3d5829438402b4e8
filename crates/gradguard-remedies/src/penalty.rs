//! `l1`, `l2`, `l1_l2`: weight penalties (Keras' `kernel_regularizer`).
//!
//! # Formula (followed: Keras `regularizers.L1`, `L2`, `L1L2`)
//! Penalty added to the loss: `l1 * sum |w| + l2 * sum w^2` (no 1/2 factor, unlike some
//! "weight decay" conventions), summed over the weight matrices (roles `weight` and
//! `recurrent_weight`: Keras' `kernel_regularizer` and `recurrent_regularizer`). Biases and
//! other tensors (norm scales, embeddings) are left out unless `include_bias = true`.
//! Its gradient is added to the gradients: `g += l1 * sign(w) + 2 * l2 * w` (sign(0) = 0, as
//! TensorFlow's gradient of `abs`). The penalty value is added with `ctx.add_penalty`, which the
//! loop reports beside the loss.
//!
//! One pass per penalised tensor adds the gradient and measures the result; the L2 value is
//! read from the step statistics (`sum w^2`), only `sum |w|` is accumulated in that pass.
//! Place it before the clipping remedies in a spec to clip the penalised gradient (Keras
//! applies `clipnorm` to the full gradient, penalty included).
//!
//! # Parameters
//! - `l1`: `l1 = 0.01` for the `l1` kind, `0.0` for `l1_l2` (Keras' defaults).
//! - `l2`: `l2 = 0.01` for the `l2` kind, `0.0` for `l1_l2`.
//! - `include_bias = false`: also penalise biases and other non-kernel tensors.

use gradguard_core::{
    describe_plugin, Action, Family, GradEdit, ParamDoc, PluginInfo, Remedy, RemedyCapabilities,
    RemedyContext, RemedyError, TensorEdit,
};
use serde::{Deserialize, Serialize};

use crate::kernels::add_penalty_grad;
use crate::nonfinite::{ensure_at_least, ensure_stats_match};

fn keras_default() -> f64 {
    0.01
}

/// Adds `l1 * sum|w| + l2 * sum w^2` to the penalty and its gradient to the gradients.
/// Returns the penalty value added.
pub fn apply_penalty(
    kind: &str,
    l1: f64,
    l2: f64,
    include_bias: bool,
    ctx: &mut RemedyContext<'_, '_>,
) -> Result<f64, RemedyError> {
    ensure_at_least(kind, "l1", l1, 0.0)?;
    ensure_at_least(kind, "l2", l2, 0.0)?;
    ensure_stats_match(kind, ctx)?;
    if l1 == 0.0 && l2 == 0.0 {
        return Ok(0.0);
    }
    let mut penalty = 0.0;
    if !ctx.values_on_host() {
        // The framework keeps the values: one typed edit per penalised tensor.
        for i in 0..ctx.param_count() {
            let s = &ctx.stats().params[i];
            if !(s.role.is_weight() || include_bias) || s.numel == 0 {
                continue;
            }
            let weight_sum_sq = s.weight_sum_sq;
            let edit = GradEdit::AddPenaltyGrad { index: i, l1, l2 };
            if let Some(sum_abs) = ctx.framework_edit(edit) {
                penalty += l1 * sum_abs + l2 * weight_sum_sq;
            }
        }
        ctx.add_penalty(penalty);
        return Ok(penalty);
    }
    ctx.edit_each(|s, p| {
        if !(p.role.is_weight() || include_bias) || p.grads.is_empty() {
            return TensorEdit::Keep;
        }
        let (m, sum_abs) = add_penalty_grad(p.grads, p.weights, l1 as f32, l2 as f32);
        penalty += l1 * sum_abs + l2 * s.weight_sum_sq;
        TensorEdit::Measured(m)
    });
    ctx.add_penalty(penalty);
    Ok(penalty)
}

/// L1 penalty `l1 * sum |w|` (Keras `regularizers.L1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1 {
    /// The L1 factor.
    #[serde(default = "keras_default")]
    pub l1: f64,
    /// Also penalise biases and other non-kernel tensors.
    #[serde(default)]
    pub include_bias: bool,
}

/// L2 penalty `l2 * sum w^2` (Keras `regularizers.L2`; no 1/2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2 {
    /// The L2 factor.
    #[serde(default = "keras_default")]
    pub l2: f64,
    /// Also penalise biases and other non-kernel tensors.
    #[serde(default)]
    pub include_bias: bool,
}

/// Both penalties, `l1 * sum |w| + l2 * sum w^2` (Keras `regularizers.L1L2`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1L2 {
    /// The L1 factor.
    #[serde(default)]
    pub l1: f64,
    /// The L2 factor.
    #[serde(default)]
    pub l2: f64,
    /// Also penalise biases and other non-kernel tensors.
    #[serde(default)]
    pub include_bias: bool,
}

#[typetag::serde(name = "l1")]
impl Remedy for L1 {
    /// A penalty on the weights.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.reading_weights().penalising()
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("l1", "l1", self.l1, 0.0)?;
        ensure_at_least("l1", "l2", 0.0, 0.0)
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        apply_penalty("l1", self.l1, 0.0, self.include_bias, ctx).map(|_| Action::Continue)
    }
}

#[typetag::serde(name = "l2")]
impl Remedy for L2 {
    /// A penalty on the weights.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.reading_weights().penalising()
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("l2", "l1", 0.0, 0.0)?;
        ensure_at_least("l2", "l2", self.l2, 0.0)
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        apply_penalty("l2", 0.0, self.l2, self.include_bias, ctx).map(|_| Action::Continue)
    }
}

#[typetag::serde(name = "l1_l2")]
impl Remedy for L1L2 {
    /// A penalty on the weights.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.reading_weights().penalising()
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("l1_l2", "l1", self.l1, 0.0)?;
        ensure_at_least("l1_l2", "l2", self.l2, 0.0)
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        apply_penalty("l1_l2", self.l1, self.l2, self.include_bias, ctx).map(|_| Action::Continue)
    }
}

const INCLUDE_BIAS: ParamDoc = ParamDoc {
    name: "include_bias",
    default: Some("false"),
    doc: "also penalise biases and other non-kernel tensors",
};

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "l1",
    summary: "L1 weight penalty l1 * sum|w| on weight matrices (Keras kernel_regularizer); adds l1 * sign(w) to the gradients.",
    params: &[ParamDoc { name: "l1", default: Some("0.01"), doc: "the L1 factor (>= 0)" }, INCLUDE_BIAS],
    example: "l1 = 0.001",
});

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "l2",
    summary: "L2 weight penalty l2 * sum w^2 on weight matrices (Keras kernel_regularizer, no 1/2); adds 2 * l2 * w to the gradients.",
    params: &[ParamDoc { name: "l2", default: Some("0.01"), doc: "the L2 factor (>= 0)" }, INCLUDE_BIAS],
    example: "l2 = 0.001",
});

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "l1_l2",
    summary:
        "L1 and L2 weight penalties l1 * sum|w| + l2 * sum w^2 on weight matrices (Keras L1L2).",
    params: &[
        ParamDoc {
            name: "l1",
            default: Some("0.0"),
            doc: "the L1 factor (>= 0)"
        },
        ParamDoc {
            name: "l2",
            default: Some("0.0"),
            doc: "the L2 factor (>= 0)"
        },
        INCLUDE_BIAS,
    ],
    example: "l1 = 0.001, l2 = 0.001",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::Role;
    use gradguard_testkit::{run_remedy, OwnedParams};

    fn data() -> OwnedParams {
        OwnedParams::new()
            .with(
                "w",
                &[1, 3],
                Role::Weight,
                &[2.0, -1.0, 0.0],
                &[1.0, 1.0, 1.0],
            )
            .with("b", &[2], Role::Bias, &[4.0, -4.0], &[0.5, 0.5])
    }

    #[test]
    fn l1_l2_hand_computed_skips_biases() {
        // penalty = 0.1 * (2 + 1 + 0) + 0.5 * (4 + 1 + 0) = 0.3 + 2.5 = 2.8
        // grads: 1 + 0.1 * sign(w) + 2 * 0.5 * w = (3.1, -0.1, 1.0); bias untouched.
        let mut d = data();
        let mut r = L1L2 {
            l1: 0.1,
            l2: 0.5,
            include_bias: false,
        };
        let out = run_remedy(&mut r, &mut d, 1, 0.0);
        assert!((out.penalty - 2.8).abs() < 1e-9, "{}", out.penalty);
        assert_eq!(
            d.flat_grads(),
            vec![1.0f32 + 0.1 + 2.0, 1.0f32 - 0.1 - 1.0, 1.0, 0.5, 0.5]
        );
        assert!(out.changed);
    }

    #[test]
    fn include_bias_and_defaults() {
        // l2 default 0.01: penalty = 0.01 * (5 + 32) = 0.37; bias grads 0.5 + 0.02 * (4, -4).
        let mut d = data();
        let mut r: L2 = serde_json::from_str(r#"{"include_bias":true}"#).unwrap();
        let out = run_remedy(&mut r, &mut d, 1, 0.0);
        assert!((out.penalty - 0.37).abs() < 1e-9);
        let g = d.flat_grads();
        assert!(
            (g[3] - 0.58).abs() < 1e-6 && (g[4] - 0.42).abs() < 1e-6,
            "{g:?}"
        );
        // l1 default 0.01: 0.01 * 3 on the kernel only.
        let mut d = data();
        let out = run_remedy(
            &mut serde_json::from_str::<L1>("{}").unwrap(),
            &mut d,
            1,
            0.0,
        );
        assert!((out.penalty - 0.03).abs() < 1e-9);
        // l1_l2 defaults (0, 0): nothing at all.
        let mut d = data();
        let out = run_remedy(&mut L1L2::default(), &mut d, 1, 0.0);
        assert!(!out.changed && out.penalty == 0.0);
    }

    #[test]
    fn zero_weights_have_no_l1_push() {
        let mut d = OwnedParams::new().with("w", &[2, 1], Role::Weight, &[0.0, 0.0], &[0.0, 0.0]);
        let out = run_remedy(
            &mut L1 {
                l1: 1.0,
                include_bias: false,
            },
            &mut d,
            1,
            0.0,
        );
        assert_eq!(d.flat_grads(), vec![0.0, 0.0]);
        assert_eq!(out.penalty, 0.0);
        let e = run_remedy(
            &mut L2 {
                l2: -1.0,
                include_bias: false,
            },
            &mut data(),
            1,
            0.0,
        )
        .result
        .unwrap_err()
        .to_string();
        assert!(e.contains("`l2` must be a finite number >= 0"), "{e}");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(|| L1L2 {
            l1: 1e-3,
            l2: 1e-3,
            include_bias: true,
        });
    }
}
