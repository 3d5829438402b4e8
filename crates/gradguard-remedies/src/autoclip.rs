//! `autoclip`: clip to a percentile of the history of global norms (Seetharaman et al. 2020).
//!
//! # Formula (followed: the AutoClip paper and its reference code)
//! At each step, the current global L2 norm `n_t` joins the history, then
//! `lambda_t = percentile_p(history)` (numpy's default linear interpolation: with the history
//! sorted as `s_0 <= ... <= s_{k-1}`, `h = (k - 1) * p / 100`,
//! `lambda = s_floor(h) + (h - floor(h)) * (s_ceil(h) - s_floor(h))`), and the gradients are
//! clipped as PyTorch's `clip_grad_norm_(max_norm = lambda)` (`coef = lambda / (n_t + 1e-6)`,
//! clamped at 1).
//!
//! Differences from the reference, on purpose:
//! - NaN-safe: a non-finite norm never enters the history (in the reference one NaN makes
//!   `np.percentile` return NaN forever after). Such a step follows `on_nonfinite`.
//! - The history is bounded: the last `history` finite norms, kept in a ring allocated once
//!   (the reference keeps every step, so its cost and memory grow with the run).
//!
//! # Parameters
//! - `percentile = 10`: p in [0, 100] (the paper's recommended 10).
//! - `history = 1000`: how many past norms are kept (`>= 1`).
//! - `on_nonfinite = "skip_step"`: see [`NonFinitePolicy`].

use gradguard_core::{
    describe_plugin, Action, ClipScope, Family, ParamDoc, PluginInfo, PluginState, Remedy,
    RemedyCapabilities, RemedyContext, RemedyError, StateError, Window,
};
use serde::{Deserialize, Serialize};

use crate::clip_global_norm::{clip_to_norm, NormType};
use crate::nonfinite::{apply_policy, ensure_at_least, ensure_stats_match, NonFinitePolicy};

fn default_percentile() -> f64 {
    10.0
}

fn default_history() -> usize {
    1000
}

/// `p`-th percentile of `sorted` (ascending, non-empty) with numpy's linear interpolation
/// (the definition AutoClip uses; [`Window::percentile_linear`] applies it to the history).
pub use gradguard_core::window::percentile_sorted;

/// AutoClip, NaN-safe (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoClip {
    /// The percentile of past norms to clip to, in [0, 100].
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// How many past finite norms are kept.
    #[serde(default = "default_history")]
    pub history: usize,
    /// What to do with non-finite gradients.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
    /// The last finite norms (the percentile sorts a copy in its scratch: no allocation).
    #[serde(skip)]
    state: Window,
}

impl Default for AutoClip {
    fn default() -> Self {
        AutoClip {
            percentile: default_percentile(),
            history: default_history(),
            on_nonfinite: NonFinitePolicy::SkipStep,
            state: Window::default(),
        }
    }
}

impl AutoClip {
    /// AutoClip at `percentile` over the last `history` norms.
    pub fn new(percentile: f64, history: usize) -> Self {
        AutoClip {
            percentile,
            history,
            ..AutoClip::default()
        }
    }

    /// The finite norms currently in the history (oldest first once the ring has wrapped).
    pub fn norms(&self) -> Vec<f64> {
        self.state.iter().collect()
    }

    fn push(&mut self, n: f64) {
        self.state.set_capacity(self.history.max(1));
        self.state.push(n);
    }
}

#[typetag::serde(name = "autoclip")]
impl Remedy for AutoClip {
    /// It bounds the global norm.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm)
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("autoclip", "percentile", self.percentile, 0.0)?;
        if self.percentile > 100.0 || self.history == 0 {
            return Err(RemedyError::Invalid {
                remedy: "autoclip".into(),
                message: format!(
                    "`percentile` must be in [0, 100] and `history` >= 1, got {} and {}",
                    self.percentile, self.history
                ),
            });
        }
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        ensure_stats_match("autoclip", ctx)?;
        if let Some(action) = apply_policy("autoclip", self.on_nonfinite, ctx)? {
            return Ok(action);
        }
        let total = ctx.stats().grad_norm;
        if total.is_finite() {
            self.push(total);
        }
        if self.state.is_empty() {
            return Ok(Action::Continue);
        }
        let lambda = self.state.percentile_linear(self.percentile);
        clip_to_norm(ctx, lambda, total, NormType::L2);
        Ok(Action::Continue)
    }

    fn reset(&mut self) {
        self.state.clear();
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
    kind: "autoclip",
    summary: "AutoClip: clips the global norm to the given percentile of past norms (current step included); non-finite norms never enter the history.",
    params: &[
        ParamDoc { name: "percentile", default: Some("10.0"), doc: "percentile of past norms, in [0, 100]" },
        ParamDoc { name: "history", default: Some("1000"), doc: "how many past finite norms are kept" },
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

    fn step(r: &mut AutoClip, g: f32) -> (f32, Action) {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
        let out = run_remedy(r, &mut d, 1, 0.0);
        (d.flat_grads()[0], out.result.unwrap())
    }

    #[test]
    fn numpy_percentile() {
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 10.0), 1.4);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), 3.0);
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert_eq!(percentile_sorted(&[7.0], 10.0), 7.0);
    }

    #[test]
    fn clips_to_percentile_including_current() {
        let mut r = AutoClip::new(50.0, 100);
        // step 1: history [4]: lambda = 4, coef = 4 / (4 + 1e-6) (PyTorch's epsilon).
        let (g, _) = step(&mut r, 4.0);
        assert_eq!(g, (4.0 * (4.0f64 / 4.000001)) as f32);
        // step 2: history [4, 2], median 3 > 2: coef = 3 / 2.000001 > 1, untouched.
        assert_eq!(step(&mut r, 2.0).0, 2.0);
        // step 3: history [4, 2, 100], median 4: 100 clipped to 4 / (100 + 1e-6) * 100.
        let (g, _) = step(&mut r, 100.0);
        assert!((g - 4.0).abs() < 1e-5, "{g}");
        assert_eq!(r.norms(), vec![4.0, 2.0, 100.0]);
    }

    #[test]
    fn nan_history_is_not_poisoned() {
        let mut r = AutoClip::new(50.0, 100);
        step(&mut r, 1.0);
        step(&mut r, 1.0);
        // a NaN step is skipped and stays out of the history.
        let (_, a) = step(&mut r, f32::NAN);
        assert!(a.withholds_update());
        let (_, a) = step(&mut r, f32::INFINITY);
        assert!(a.withholds_update());
        assert_eq!(r.norms(), vec![1.0, 1.0]);
        // later steps are still clipped to a finite threshold: [1, 1, 10] median 1.
        let (g, a) = step(&mut r, 10.0);
        assert_eq!(a, Action::Continue);
        assert!((g - 1.0).abs() < 1e-5, "{g}");
    }

    #[test]
    fn ring_keeps_the_last_norms() {
        let mut r = AutoClip::new(100.0, 3);
        for g in [1.0, 2.0, 3.0, 4.0, 5.0] {
            step(&mut r, g);
        }
        assert_eq!(r.norms(), vec![3.0, 4.0, 5.0]);
        r.reset();
        assert!(r.norms().is_empty());
        let e = run_remedy(
            &mut AutoClip::new(101.0, 3),
            &mut OwnedParams::new().with_grads("w", &[1], &[1.0]),
            1,
            0.0,
        )
        .result
        .unwrap_err()
        .to_string();
        assert!(e.contains("[0, 100]"), "{e}");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(AutoClip::default);
        gradguard_testkit::assert_guards_nonfinite(AutoClip::default);
        gradguard_testkit::assert_guards_nonfinite(|| AutoClip {
            on_nonfinite: NonFinitePolicy::Error,
            ..AutoClip::default()
        });
    }
}
