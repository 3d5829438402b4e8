//! `skip_spike`: skip a step whose loss or global norm is an outlier of its recent history.
//!
//! # Rule (followed: OLMo-core's `SkipStepOptimizer`, made NaN-robust and one-sided)
//! Two rolling windows hold the last `window` finite losses and global gradient norms (the
//! current step excluded). Once each holds at least `min(window, max(20, window / 2))` values
//! (OLMo-core's warm-up), a step is skipped when `z = (x - mean) / std > sigma` for its loss or
//! its norm (`std`: sample standard deviation of the window; with `std = 0`, any `x > mean`
//! counts as an outlier). The step's finite values then join the windows, outliers included
//! (as in OLMo-core, so a lasting change of level is learned instead of skipped forever).
//!
//! Differences from OLMo-core, on purpose:
//! - NaN-robust: a non-finite loss or norm skips the step and never enters the windows (in
//!   OLMo-core it stays in the window and makes mean/std NaN, skipping the next ~window steps).
//! - One-sided: only upward spikes skip. OLMo-core uses `|x - mean|`, so sudden *drops* of
//!   the loss skip too; a drop is not an explosion.
//!
//! # Parameters
//! - `window = 128`: how many past steps the statistics cover (`>= 2`).
//! - `sigma = 6.0`: the z-score above which a step is skipped (`> 0`).

use gradguard_core::{
    describe_plugin, Action, Family, ParamDoc, PluginInfo, PluginState, Remedy, RemedyCapabilities,
    RemedyContext, RemedyError, StateError, Window,
};
use serde::{Deserialize, Serialize};

use crate::nonfinite::ensure_at_least;
use gradguard_core::float::fmt_short;

fn default_window() -> usize {
    128
}
fn default_sigma() -> f64 {
    6.0
}

/// One-sided z-score of `x` against `w`'s mean and sample standard deviation
/// ([`Window::mean_sample_std`]); with `std = 0`: +inf above the mean, else 0.
fn one_sided_z(w: &Window, x: f64) -> f64 {
    let (mean, std) = w.mean_sample_std();
    if std > 0.0 {
        (x - mean) / std
    } else if x > mean {
        f64::INFINITY
    } else {
        0.0
    }
}

/// Skips outlier steps of the loss or global norm (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipSpike {
    /// How many past steps the statistics cover.
    #[serde(default = "default_window")]
    pub window: usize,
    /// z-score above which a step is skipped.
    #[serde(default = "default_sigma")]
    pub sigma: f64,
    #[serde(skip)]
    losses: Window,
    #[serde(skip)]
    norms: Window,
}

impl Default for SkipSpike {
    fn default() -> Self {
        SkipSpike {
            window: default_window(),
            sigma: default_sigma(),
            losses: Window::default(),
            norms: Window::default(),
        }
    }
}

impl SkipSpike {
    /// Values needed in a window before steps can be skipped.
    pub fn warmup(&self) -> usize {
        self.window.min(20.max(self.window / 2))
    }
}

#[typetag::serde(name = "skip_spike")]
impl Remedy for SkipSpike {
    /// It withholds updates, it changes no gradient.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
    }

    fn validate(&self) -> Result<(), RemedyError> {
        ensure_at_least("skip_spike", "sigma", self.sigma, f64::MIN_POSITIVE)?;
        if self.window < 2 {
            return Err(RemedyError::Invalid {
                remedy: "skip_spike".into(),
                message: format!("`window` must be at least 2, got {}", self.window),
            });
        }
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        let (loss, norm) = (ctx.loss(), ctx.stats().grad_norm);
        if !loss.is_finite() || !norm.is_finite() {
            return Ok(Action::SkipStep {
                reason: format!("non-finite loss ({loss}) or gradient norm ({norm})"),
            });
        }
        let warm = self.warmup();
        let mut reason = None;
        if self.losses.len() >= warm && self.norms.len() >= warm {
            let (zl, zn) = (
                one_sided_z(&self.losses, loss),
                one_sided_z(&self.norms, norm),
            );
            if zl > self.sigma {
                reason = Some(format!(
                    "loss {} has z-score {} > {} over the last {} steps",
                    fmt_short(loss),
                    fmt_short(zl),
                    fmt_short(self.sigma),
                    self.losses.len()
                ));
            } else if zn > self.sigma {
                reason = Some(format!(
                    "gradient norm {} has z-score {} > {} over the last {} steps",
                    fmt_short(norm),
                    fmt_short(zn),
                    fmt_short(self.sigma),
                    self.norms.len()
                ));
            }
        }
        self.losses.set_capacity(self.window);
        self.norms.set_capacity(self.window);
        self.losses.push(loss);
        self.norms.push(norm);
        Ok(match reason {
            Some(reason) => Action::SkipStep { reason },
            None => Action::Continue,
        })
    }

    fn reset(&mut self) {
        self.losses.clear();
        self.norms.clear();
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&(&self.losses, &self.norms)).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        (self.losses, self.norms) = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "skip_spike",
    summary: "Skips a step whose loss or global norm z-score over a rolling window exceeds sigma (OLMo-core, NaN-robust, upward spikes only).",
    params: &[
        ParamDoc { name: "window", default: Some("128"), doc: "how many past steps the statistics cover (>= 2)" },
        ParamDoc { name: "sigma", default: Some("6.0"), doc: "z-score above which a step is skipped" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    fn step(r: &mut SkipSpike, loss: f64, g: f32) -> Action {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
        run_remedy(r, &mut d, 1, loss).result.unwrap()
    }

    #[test]
    fn hand_computed_z_scores() {
        let mut r = SkipSpike {
            window: 4,
            sigma: 2.0,
            ..SkipSpike::default()
        };
        assert_eq!(r.warmup(), 4);
        // losses 1, 2, 3, 4: mean 2.5, sample std sqrt(5/3) = 1.291; norms all 1 (std 0).
        for l in [1.0, 2.0, 3.0, 4.0] {
            assert_eq!(step(&mut r, l, 1.0), Action::Continue);
        }
        // loss 5: z = 2.5 / 1.291 = 1.94 <= 2: continue. Window now 2, 3, 4, 5.
        assert_eq!(step(&mut r, 5.0, 1.0), Action::Continue);
        // loss 6.5: mean 3.5, std 1.291, z = 2.32 > 2: skipped.
        match step(&mut r, 6.5, 1.0) {
            Action::SkipStep { reason } => assert!(reason.contains("z-score 2.32"), "{reason}"),
            a => panic!("{a:?}"),
        }
        // a drop is not a spike (one-sided).
        assert_eq!(step(&mut r, -100.0, 1.0), Action::Continue);
        // norm window is constant 1: any norm above 1 is an outlier (std 0).
        assert_eq!(step(&mut r, 3.0, 1.5).name(), "skip_step");
    }

    #[test]
    fn nan_never_enters_the_window() {
        let mut r = SkipSpike {
            window: 4,
            sigma: 3.0,
            ..SkipSpike::default()
        };
        for l in [1.0, 1.1, 0.9, 1.0] {
            step(&mut r, l, 1.0);
        }
        assert_eq!(step(&mut r, f64::NAN, 1.0).name(), "skip_step");
        assert_eq!(step(&mut r, 1.0, f32::NAN).name(), "skip_step");
        assert_eq!(r.losses.len(), 4);
        // the windows are still usable right after the NaN steps.
        assert_eq!(step(&mut r, 1.05, 1.0), Action::Continue);
        assert_eq!(step(&mut r, 50.0, 1.0).name(), "skip_step");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(SkipSpike::default);
        gradguard_testkit::assert_guards_nonfinite(SkipSpike::default);
    }
}
