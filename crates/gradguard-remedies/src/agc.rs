//! `agc`: Adaptive Gradient Clipping, unit-wise against the weight norm (Brock et al. 2021).
//!
//! # Formula (followed: timm `adaptive_clip_grad`, PyTorch `[out, in, ...]` layout)
//! A *unit* is one output row of a tensor of rank >= 2 (index 0, all other dimensions
//! together: `x.norm(dim=1..ndim)` in timm); a tensor of rank <= 1 (bias, scale) is one unit.
//! For each unit u:
//! `max_u = clip_factor * max(||w_u||, eps)`; where `||g_u|| >= max_u`,
//! `g_u <- g_u * max_u / max(||g_u||, 1e-6)` (timm's `where(grad_norm < max_norm, g, clipped)`,
//! so a unit exactly at the bound is multiplied by 1 and unchanged).
//!
//! Layout trap (FIELD.md B): optax's `adaptive_grad_clip` reduces over the *leading* axes of
//! its `[in, out]` (IO) layout; applied to `[out, in]` tensors that would clip per input unit.
//! gradguard's tensors are `[out, in]` like PyTorch's, so it follows timm.
//!
//! `eps` keeps zero-initialised weights (e.g. biases) from clipping their gradients to 0: they
//! are clipped to norm `clip_factor * eps` instead. Every tensor of the view is clipped (timm
//! clips every parameter it is given; the paper leaves the final classifier layer out: leave it
//! out of the view if you want that).
//!
//! The unit norms are not in the step statistics (those are per tensor), so AGC reads each
//! unit's gradient and weight once, and re-measures only the tensors it changed. Where a
//! framework keeps the gradients (PyTorch on a GPU), the same rule is handed to it as
//! [`GradEdit::UnitClip`] and computed there with its ops.
//!
//! Non-finite gradients follow `on_nonfinite`. A unit whose weights are not finite has no
//! meaningful bound: it is left unchanged (under `propagate` it follows timm and becomes NaN).
//!
//! # Parameters
//! - `clip_factor = 0.01`: the largest allowed ratio ||g_u|| / ||w_u|| (`> 0`).
//! - `eps = 1e-3`: the smallest weight norm used (`>= 0`).
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_plugin, Action, ClipScope, Family, GradEdit, ParamDoc, PluginInfo, Remedy,
    RemedyCapabilities, RemedyContext, RemedyError, TensorEdit,
};
use serde::{Deserialize, Serialize};

use crate::kernels::{scale, sum_sq_pair};
use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

fn default_clip_factor() -> f64 {
    0.01
}

fn default_eps() -> f64 {
    1e-3
}

/// Adaptive Gradient Clipping, timm semantics (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agc {
    /// Largest allowed ratio of a unit's gradient norm to its weight norm.
    #[serde(default = "default_clip_factor")]
    pub clip_factor: f64,
    /// Smallest weight norm used in the bound.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
}

impl Default for Agc {
    fn default() -> Self {
        Agc {
            clip_factor: default_clip_factor(),
            eps: default_eps(),
            on_nonfinite: NonFinitePolicy::SkipStep,
        }
    }
}

/// Number of units of a tensor of `shape` (rows of dim 0 for rank >= 2, else 1).
pub fn units(shape: &[usize]) -> usize {
    if shape.len() >= 2 {
        shape[0]
    } else {
        1
    }
}

#[typetag::serde(name = "agc")]
impl Remedy for Agc {
    /// It bounds each unit against its weights' norm, so it reads the weights.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
            .clipping(ClipScope::PerUnit)
            .reading_weights()
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("agc", "clip_factor", self.clip_factor, f64::MIN_POSITIVE)?;
        ensure_at_least("agc", "eps", self.eps, 0.0)?;
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        ensure_stats_match("agc", ctx)?;
        if let Some(action) = apply_policy("agc", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let propagate = self.on_nonfinite == NonFinitePolicy::Propagate;
        let (eps, clip_factor) = (self.eps, self.clip_factor);
        let edit = GradEdit::UnitClip {
            clip_factor,
            eps,
            propagate,
        };
        if ctx.framework_edit(edit).is_some() {
            return Ok(Action::Continue);
        }
        ctx.edit_each(|_, p| {
            let mut touched = false;
            {
                let n = p.grads.len();
                let rows = units(p.shape);
                if n == 0 || rows == 0 {
                    return TensorEdit::Keep;
                }
                let len = n / rows;
                for (g, w) in p
                    .grads
                    .chunks_exact_mut(len)
                    .zip(p.weights.chunks_exact(len))
                {
                    let (gsq, wsq) = sum_sq_pair(g, w);
                    let (gn, wn) = (gsq.sqrt(), wsq.sqrt());
                    if !wn.is_finite() && !propagate {
                        continue;
                    }
                    let wn_eps = if wn.is_nan() || wn > eps { wn } else { eps };
                    let max = clip_factor * wn_eps;
                    if gn < max {
                        continue;
                    }
                    let denom = if gn.is_nan() || gn > 1e-6 { gn } else { 1e-6 };
                    let f = max / denom;
                    if f != 1.0 {
                        scale(g, f);
                        touched = true;
                    }
                }
            }
            if touched {
                TensorEdit::Edited
            } else {
                TensorEdit::Keep
            }
        });
        Ok(Action::Continue)
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "agc",
    summary: "Adaptive Gradient Clipping (timm, [out, in] layout): each output row's ||g|| is clipped to clip_factor * max(||w||, eps).",
    params: &[
        ParamDoc { name: "clip_factor", default: Some("0.01"), doc: "largest allowed ||g_unit|| / ||w_unit|| (> 0)" },
        ParamDoc { name: "eps", default: Some("0.001"), doc: "smallest weight norm used, so zero weights still get a bound" },
        ParamDoc {
            name: "on_nonfinite",
            default: Some("\"skip_step\""),
            doc: "non-finite gradients: \"skip_step\", \"error\", \"zero\" or \"propagate\" (timm)"
        },
    ],
    example: "clip_factor = 0.01",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::Role;
    use gradguard_testkit::{run_remedy, OwnedParams};

    #[test]
    fn rows_are_units() {
        // W [2, 2]: row 0 w = (3, 4) (norm 5), g = (0.3, 0.4) (norm 0.5): bound 0.1 * 5 = 0.5, at
        // the bound -> unchanged. Row 1 w = (0, 1), g = (2, 0): bound 0.1 -> g = (0.1, 0).
        let mut d = OwnedParams::new().with(
            "w",
            &[2, 2],
            Role::Weight,
            &[3.0, 4.0, 0.0, 1.0],
            &[0.3, 0.4, 2.0, 0.0],
        );
        let mut r = Agc {
            clip_factor: 0.1,
            ..Agc::default()
        };
        let out = run_remedy(&mut r, &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert_eq!(&g[..2], &[0.3, 0.4]);
        assert!((g[2] - 0.1).abs() < 1e-7 && g[3] == 0.0, "{g:?}");
        assert!(out.changed);
        assert!((out.stats.grad_norm - (0.25f64 + 0.01).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn rank_one_is_one_unit_and_zero_weights_use_eps() {
        // zero-initialised bias: bound = 0.01 * max(0, 1e-3) = 1e-5; g = (3, 4) -> norm 1e-5.
        let mut d = OwnedParams::new().with("b", &[2], Role::Bias, &[0.0, 0.0], &[3.0, 4.0]);
        run_remedy(&mut Agc::default(), &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert!(
            (g[0] as f64 - 6e-6).abs() < 1e-12 && (g[1] as f64 - 8e-6).abs() < 1e-12,
            "{g:?}"
        );
        // a scalar is one unit too.
        let mut d = OwnedParams::new().with("s", &[], Role::Other, &[2.0], &[-1.0]);
        run_remedy(
            &mut Agc {
                clip_factor: 0.25,
                ..Agc::default()
            },
            &mut d,
            1,
            0.0,
        );
        assert_eq!(d.flat_grads(), vec![-0.5]);
    }

    #[test]
    fn rank_three_rows_span_the_rest() {
        // [2, 1, 2]: row 0 = (1, 0 | w 10, 0) bound 0.1 -> (0.1, 0); row 1 = tiny, unchanged.
        let mut d = OwnedParams::new().with(
            "conv",
            &[2, 1, 2],
            Role::Weight,
            &[10.0, 0.0, 10.0, 0.0],
            &[1.0, 0.0, 1e-30, 0.0],
        );
        run_remedy(&mut Agc::default(), &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert!((g[0] - 0.1).abs() < 1e-7 && g[2] == 1e-30, "{g:?}");
    }

    #[test]
    fn huge_gradients() {
        let mut d = OwnedParams::new().with("w", &[1, 2], Role::Weight, &[1.0, 0.0], &[1e30, 1e30]);
        run_remedy(&mut Agc::default(), &mut d, 1, 0.0);
        assert!((d.grad_norm() - 0.01).abs() < 1e-8, "{}", d.grad_norm());
    }

    #[test]
    fn nonfinite_weights_leave_the_unit() {
        let mut d =
            OwnedParams::new().with("w", &[2, 1], Role::Weight, &[f32::NAN, 1.0], &[5.0, 5.0]);
        run_remedy(&mut Agc::default(), &mut d, 1, 0.0);
        let g = d.flat_grads();
        assert_eq!(g[0], 5.0);
        assert!((g[1] - 0.01).abs() < 1e-8);
    }

    #[test]
    fn a_unit_exactly_at_a_bound_below_1e_minus_6_is_scaled_as_timm_does() {
        // timm: clipped = g * max / clamp(||g||, 1e-6); where(||g|| < max, g, clipped). At
        // ||g|| == max < 1e-6 the `where` picks `clipped`, and the clamp makes the factor
        // max / 1e-6 < 1. w = 2^-21, clip_factor 0.5, eps 0: max = 2^-22 = ||g||.
        let (w, g) = (2f32.powi(-21), 2f32.powi(-22));
        let mut d = OwnedParams::new().with("b", &[1], Role::Bias, &[w], &[g]);
        let mut r = Agc {
            clip_factor: 0.5,
            eps: 0.0,
            ..Agc::default()
        };
        run_remedy(&mut r, &mut d, 1, 0.0);
        let want = (g as f64 * (2f64.powi(-22) / 1e-6)) as f32;
        assert_eq!(d.flat_grads(), vec![want]);
        assert!(want < g);
    }

    #[test]
    fn an_empty_tensor_with_rows_is_left_alone() {
        // shape [3, 0]: three units of no values. No division by zero, no zero-length chunks.
        let mut d = OwnedParams::new()
            .with("empty", &[3, 0], Role::Weight, &[], &[])
            .with("w", &[1, 1], Role::Weight, &[1.0], &[5.0]);
        let out = run_remedy(&mut Agc::default(), &mut d, 1, 0.0);
        assert!(out.changed);
        assert!((d.flat_grads()[0] - 0.01).abs() < 1e-8);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for bad in [
            Agc {
                clip_factor: 0.0,
                ..Agc::default()
            },
            Agc {
                clip_factor: -1.0,
                ..Agc::default()
            },
            Agc {
                clip_factor: f64::NAN,
                ..Agc::default()
            },
            Agc {
                eps: -1e-3,
                ..Agc::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} passed validation");
        }
        assert!(Agc::default().validate().is_ok());
        assert!(Agc {
            eps: 0.0,
            ..Agc::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_unitwise_clip(|clip_factor, eps| Agc {
            clip_factor,
            eps,
            ..Agc::default()
        });
        gradguard_testkit::assert_remedy_invariants(Agc::default);
        gradguard_testkit::assert_guards_nonfinite(Agc::default);
        gradguard_testkit::assert_guards_nonfinite(|| Agc {
            on_nonfinite: NonFinitePolicy::Error,
            ..Agc::default()
        });
    }
}
