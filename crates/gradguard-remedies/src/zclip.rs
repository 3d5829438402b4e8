//! `zclip`: clip z-score outliers of the global norm against its running mean (ZClip, 2025).
//!
//! # Formula (followed: the reference `zclip.py`, mode `zscore`, `adaptive_scaling`)
//! Warm-up: the first `warmup_steps` global norms are collected (clipped to `max_grad_norm`
//! with PyTorch's `clip_grad_norm_` when it is set); then `mean` = their mean and `var` =
//! their population variance. After warm-up, with `std = sqrt(var)`:
//! `z = (n - mean) / (std + 1e-6)`; when `z > z_thresh` the threshold is
//! `t = mean + z_thresh * std / (z / z_thresh)`, else none. The effective threshold is `t`
//! (or `n` when none), capped at `max_grad_norm` when set; when `n` exceeds it the gradients
//! are multiplied by `threshold / (n + 1e-6)`. The running statistics then take the clipped
//! value `x = t` (or `n` when there was no outlier):
//! `mean <- alpha * mean + (1 - alpha) * x`, `var <- alpha * var + (1 - alpha) * (x - mean)^2`
//! (with the new mean, as the reference does).
//!
//! Difference from the reference, on purpose: a non-finite norm never enters the warm-up
//! buffer or the running statistics (in the reference `z > z_thresh` is false for NaN and the
//! averages become NaN for good). Such a step follows `on_nonfinite`.
//!
//! # Parameters
//! - `alpha = 0.97`: smoothing of the running mean and variance, in [0, 1).
//! - `z_thresh = 2.5`: the z-score above which a norm is an outlier (`> 0`).
//! - `warmup_steps = 25`: norms collected before the statistics start.
//! - `max_grad_norm` (optional, none by default): a hard cap on the threshold.
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_plugin, Action, ClipScope, Family, ParamDoc, PluginInfo, PluginState, Remedy,
    RemedyCapabilities, RemedyContext, RemedyError, StateError, Window,
};
use serde::{Deserialize, Serialize};

use crate::clip_global_norm::{clip_to_norm, NormType};
use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

fn default_alpha() -> f64 {
    0.97
}
fn default_z_thresh() -> f64 {
    2.5
}
fn default_warmup() -> usize {
    25
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ZState {
    /// The warm-up norms (capacity `warmup_steps`, at least 1; emptied once full).
    warm: Window,
    initialized: bool,
    mean: f64,
    var: f64,
}

/// ZClip, NaN-safe (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZClip {
    /// Smoothing factor of the running mean and variance.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// z-score above which the norm is clipped.
    #[serde(default = "default_z_thresh")]
    pub z_thresh: f64,
    /// Steps collected before the running statistics start.
    #[serde(default = "default_warmup")]
    pub warmup_steps: usize,
    /// Optional hard cap on the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
    #[serde(skip)]
    state: ZState,
}

impl Default for ZClip {
    fn default() -> Self {
        ZClip {
            alpha: default_alpha(),
            z_thresh: default_z_thresh(),
            warmup_steps: default_warmup(),
            max_grad_norm: None,
            on_nonfinite: NonFinitePolicy::SkipStep,
            state: ZState::default(),
        }
    }
}

impl ZClip {
    /// The running mean and variance, once warm-up is over.
    pub fn running(&self) -> Option<(f64, f64)> {
        self.state
            .initialized
            .then_some((self.state.mean, self.state.var))
    }

    fn check_params(&self) -> Result<(), RemedyError> {
        ensure_at_least("zclip", "z_thresh", self.z_thresh, f64::MIN_POSITIVE)?;
        ensure_at_least("zclip", "alpha", self.alpha, 0.0)?;
        if self.alpha >= 1.0 {
            return Err(RemedyError::Invalid {
                remedy: "zclip".into(),
                message: format!("`alpha` must be in [0, 1), got {}", self.alpha),
            });
        }
        if let Some(m) = self.max_grad_norm {
            ensure_at_least("zclip", "max_grad_norm", m, 0.0)?;
        }
        Ok(())
    }
}

#[typetag::serde(name = "zclip")]
impl Remedy for ZClip {
    /// It bounds the global norm.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm)
    }

    fn validate(&self) -> Result<(), RemedyError> {
        self.check_params()
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.check_params()?;
        ensure_stats_match("zclip", ctx)?;
        if let Some(action) = apply_policy("zclip", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let n = ctx.stats().grad_norm;
        let s = &mut self.state;
        if !n.is_finite() {
            // Only under `propagate`: PyTorch's clip to max_grad_norm spreads the NaN/inf; the
            // statistics are left alone.
            if let Some(m) = self.max_grad_norm {
                clip_to_norm(ctx, m, n, NormType::L2);
            }
            return Ok(Action::Continue);
        }
        if !s.initialized {
            // (`warmup_steps = 0` behaves as 1: the first norm starts the statistics.)
            s.warm.set_capacity(self.warmup_steps.max(1));
            s.warm.push(n);
            if s.warm.is_full() {
                (s.mean, s.var) = s.warm.mean_population_variance();
                s.initialized = true;
                s.warm.clear();
            }
            if let Some(m) = self.max_grad_norm {
                clip_to_norm(ctx, m, n, NormType::L2);
            }
            return Ok(Action::Continue);
        }
        let std = s.var.sqrt();
        let z = (n - s.mean) / (std + 1e-6);
        let clip_val =
            (z > self.z_thresh).then(|| s.mean + self.z_thresh * std / (z / self.z_thresh));
        let mut effective = clip_val.unwrap_or(n);
        if let Some(m) = self.max_grad_norm {
            effective = effective.min(m);
        }
        if n > effective {
            clip_to_norm(ctx, effective, n, NormType::L2);
        }
        let x = clip_val.unwrap_or(n);
        s.mean = self.alpha * s.mean + (1.0 - self.alpha) * x;
        s.var = self.alpha * s.var + (1.0 - self.alpha) * (x - s.mean).powi(2);
        Ok(Action::Continue)
    }

    fn clip_threshold(&self) -> Option<f64> {
        self.max_grad_norm
    }

    fn reset(&mut self) {
        self.state = ZState {
            warm: std::mem::take(&mut self.state.warm),
            ..ZState::default()
        };
        self.state.warm.clear();
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.state).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.state = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "zclip",
    summary: "ZClip: clips the global norm when its z-score against a running mean exceeds z_thresh, to mean + z_thresh * std / (z / z_thresh); NaN-safe.",
    params: &[
        ParamDoc { name: "alpha", default: Some("0.97"), doc: "smoothing of the running mean and variance, in [0, 1)" },
        ParamDoc { name: "z_thresh", default: Some("2.5"), doc: "z-score above which the norm is clipped" },
        ParamDoc { name: "warmup_steps", default: Some("25"), doc: "norms collected before the statistics start" },
        ParamDoc { name: "max_grad_norm", default: None, doc: "optional hard cap on the threshold (absent: no cap)" },
        ParamDoc {
            name: "on_nonfinite",
            default: Some("\"skip_step\""),
            doc: "non-finite gradients: \"skip_step\", \"error\", \"zero\" or \"propagate\""
        },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    fn step(r: &mut ZClip, g: f32) -> (f32, Action) {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
        let out = run_remedy(r, &mut d, 1, 0.0);
        (d.flat_grads()[0], out.result.unwrap())
    }

    #[test]
    fn warmup_then_hand_computed_clip() {
        let mut r = ZClip {
            warmup_steps: 4,
            ..ZClip::default()
        };
        // warm-up norms 1, 3, 1, 3: mean 2, population variance 1.
        for g in [1.0, 3.0, 1.0, 3.0] {
            assert_eq!(step(&mut r, g).0, g);
        }
        assert_eq!(r.running(), Some((2.0, 1.0)));
        // n = 3: z = 1 / (1 + 1e-6) < 2.5: no clip; mean = 0.97*2 + 0.03*3 = 2.03,
        // var = 0.97 * 1 + 0.03 * (3 - 2.03)^2.
        assert_eq!(step(&mut r, 3.0).0, 3.0);
        let (m, v) = r.running().unwrap();
        assert!((m - 2.03).abs() < 1e-12);
        assert!((v - (0.97 + 0.03 * 0.97f64.powi(2))).abs() < 1e-12);
        // n = 12: z = (12 - m) / (sqrt(v) + 1e-6); t = m + 2.5 * std / (z / 2.5).
        let std = v.sqrt();
        let z = (12.0 - m) / (std + 1e-6);
        let t = m + 2.5 * std / (z / 2.5);
        let (g, _) = step(&mut r, 12.0);
        assert!(
            ((g as f64) - 12.0 * t / (12.0 + 1e-6)).abs() < 1e-5,
            "{g} vs {t}"
        );
        // the statistics take the clipped value t, not 12.
        let (m2, _) = r.running().unwrap();
        assert!((m2 - (0.97 * m + 0.03 * t)).abs() < 1e-12);
    }

    #[test]
    fn max_grad_norm_caps_warmup_and_after() {
        let mut r = ZClip {
            warmup_steps: 2,
            max_grad_norm: Some(1.5),
            ..ZClip::default()
        };
        let (g, _) = step(&mut r, 2.0);
        assert!((g - 1.5).abs() < 1e-5);
        step(&mut r, 2.0);
        // no outlier (z = 0) but the cap applies: 2 -> 1.5.
        let (g, _) = step(&mut r, 2.0);
        assert!((g - 1.5).abs() < 1e-5, "{g}");
        assert_eq!(r.clip_threshold(), Some(1.5));
    }

    #[test]
    fn nan_history_is_not_poisoned() {
        let mut r = ZClip {
            warmup_steps: 2,
            ..ZClip::default()
        };
        step(&mut r, 1.0);
        assert!(step(&mut r, f32::NAN).1.withholds_update());
        step(&mut r, 1.0);
        assert_eq!(r.running(), Some((1.0, 0.0)));
        assert!(step(&mut r, f32::INFINITY).1.withholds_update());
        assert_eq!(r.running(), Some((1.0, 0.0)));
        // std 0: a norm of 5 has z = 4 / 1e-6, t = 1 + 2.5 * 0 = 1: clipped to ~1.
        let (g, _) = step(&mut r, 5.0);
        assert!((g - 1.0).abs() < 1e-5, "{g}");
        r.reset();
        assert_eq!(r.running(), None);
    }

    #[test]
    fn rejects_bad_alpha() {
        let mut r = ZClip {
            alpha: 1.0,
            ..ZClip::default()
        };
        let e = run_remedy(
            &mut r,
            &mut OwnedParams::new().with_grads("w", &[1], &[1.0]),
            1,
            0.0,
        )
        .result
        .unwrap_err()
        .to_string();
        assert!(e.contains("`alpha` must be in [0, 1)"), "{e}");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(|| ZClip {
            warmup_steps: 1,
            ..ZClip::default()
        });
        gradguard_testkit::assert_guards_nonfinite(ZClip::default);
        gradguard_testkit::assert_guards_nonfinite(|| ZClip {
            on_nonfinite: NonFinitePolicy::Error,
            ..ZClip::default()
        });
    }
}
