//! `loss_not_converging`: after a warm-up, the loss stays above a fraction of its initial
//! value (or above a target) over a whole window.
//!
//! **Rule.** The initial loss `L0` is the mean of the first `initial_steps` finite losses.
//! After step `warmup_steps`, the steps are cut into consecutive windows of `window` steps; at
//! the end of each window the detector takes the smallest loss of the window `m` (a NaN or
//! infinite loss counts as `+inf`) and fires when `m > limit`, where
//! `limit = target` when a target is given, else `limit = fraction * L0`. So it fires at most
//! once per window; `value = m`, `threshold = limit`. Without a target it stays quiet until
//! `L0` is known.
//!
//! **Parameters (defaults).** `warmup_steps = 100`, `window = 50`, `fraction = 0.9`
//! (the loss has not even fallen by 10%), `initial_steps = 5`, `target` (none).
//!
//! Healthy training passes this easily; it is a warning, never decisive on its own.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Sign, StateError,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, require};

fn d_warmup() -> u64 {
    100
}
fn d_window() -> u64 {
    50
}
fn d_fraction() -> f64 {
    0.9
}
fn d_initial() -> u64 {
    5
}

/// Fires when the loss has not fallen below `fraction` of its start (or below `target`).
/// See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossNotConverging {
    /// Steps before the first window starts.
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
    /// Steps per window (>= 1).
    #[serde(default = "d_window")]
    pub window: u64,
    /// The loss must fall below `fraction * initial loss`.
    #[serde(default = "d_fraction")]
    pub fraction: f64,
    /// How many first finite losses make the initial loss (their mean).
    #[serde(default = "d_initial")]
    pub initial_steps: u64,
    /// An absolute target instead of the fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(skip)]
    initial_sum: f64,
    #[serde(skip)]
    initial_n: u64,
    #[serde(skip)]
    window_min: f64,
    #[serde(skip)]
    window_n: u64,
}

impl Default for LossNotConverging {
    fn default() -> Self {
        LossNotConverging {
            warmup_steps: d_warmup(),
            window: d_window(),
            fraction: d_fraction(),
            initial_steps: d_initial(),
            target: None,
            initial_sum: 0.0,
            initial_n: 0,
            window_min: f64::INFINITY,
            window_n: 0,
        }
    }
}

impl LossNotConverging {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        warmup_steps: u64,
        window: u64,
        fraction: f64,
        initial_steps: u64,
        target: Option<f64>,
    ) -> Self {
        LossNotConverging {
            warmup_steps,
            window,
            fraction,
            initial_steps,
            target,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "loss_not_converging")]
impl Detector for LossNotConverging {
    fn validate(&self) -> Result<(), String> {
        require(self.window >= 1, "window", "at least 1", self.window)?;
        require(
            self.initial_steps >= 1,
            "initial_steps",
            "at least 1",
            self.initial_steps,
        )?;
        require(
            self.fraction.is_finite() && self.fraction > 0.0 && self.fraction <= 1.0,
            "fraction",
            "in (0, 1]",
            self.fraction,
        )?;
        match self.target {
            Some(t) => require(t.is_finite(), "target", "a finite number", t),
            None => Ok(()),
        }
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        if obs.loss.is_finite() && self.initial_n < self.initial_steps {
            self.initial_sum += obs.loss;
            self.initial_n += 1;
        }
        if obs.step <= self.warmup_steps {
            return;
        }
        let loss = if obs.loss.is_nan() {
            f64::INFINITY
        } else {
            obs.loss
        };
        if self.window_n == 0 || loss < self.window_min {
            self.window_min = loss;
        }
        self.window_n += 1;
        if self.window_n < self.window.max(1) {
            return;
        }
        let m = self.window_min;
        self.window_n = 0;
        let limit = match self.target {
            Some(t) => t,
            None if self.initial_n > 0 => {
                self.fraction * (self.initial_sum / self.initial_n as f64)
            }
            None => return,
        };
        if m > limit {
            let what = match self.target {
                Some(t) => format!("the target {}", fmt_num(t)),
                None => format!(
                    "{} of the initial loss {}",
                    fmt_num(self.fraction),
                    fmt_num(self.initial_sum / self.initial_n as f64)
                ),
            };
            findings.push(Finding::new(
                Sign::LossNotConverging,
                obs.step,
                None,
                m,
                limit,
                format!(
                    "the loss stayed poor: its smallest value over steps {}-{} was {}, above {what}",
                    obs.step + 1 - self.window.max(1),
                    obs.step,
                    fmt_num(m)
                ),
            ));
        }
    }

    fn reset(&mut self) {
        self.window_n = 0;
        self.window_min = f64::INFINITY;
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&(
            self.initial_sum,
            self.initial_n,
            self.window_min,
            self.window_n,
        ))
        .map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        (
            self.initial_sum,
            self.initial_n,
            self.window_min,
            self.window_n,
        ) = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "loss_not_converging",
    summary: "After a warm-up, fires when the smallest loss of a window stays above fraction x initial loss (or a target).",
    params: &[
        ParamDoc { name: "warmup_steps", default: Some("100"), doc: "steps before the first window" },
        ParamDoc { name: "window", default: Some("50"), doc: "steps per window; fires at most once per window" },
        ParamDoc { name: "fraction", default: Some("0.9"), doc: "the loss must fall below fraction x initial loss" },
        ParamDoc { name: "initial_steps", default: Some("5"), doc: "the initial loss is the mean of this many first finite losses" },
        ParamDoc { name: "target", default: None, doc: "optional absolute target used instead of the fraction" },
    ],
    example: "warmup_steps = 20, window = 10, fraction = 0.5",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::Role;

    fn run(d: &mut LossNotConverging, losses: impl Fn(u64) -> f64, steps: u64) -> Vec<Finding> {
        let s = stats(vec![param("w", Role::Weight, 1.0, 1.0)]);
        let mut found = Vec::new();
        for step in 1..=steps {
            d.observe(&Observation::new(step, losses(step), &s), &mut found);
        }
        found
    }

    #[test]
    fn reset_restarts_the_window() {
        // target 0 (every window is above it), window 3, no warm-up.
        let mut d = LossNotConverging::new(0, 3, 0.9, 1, Some(0.0));
        let s = stats(vec![param("w", Role::Weight, 1.0, 1.0)]);
        let mut found = Vec::new();
        for step in 1..=2 {
            d.observe(&Observation::new(step, 1.0, &s), &mut found);
        }
        d.reset();
        // Only one loss in the new window: not judged yet.
        d.observe(&Observation::new(3, 1.0, &s), &mut found);
        assert!(found.is_empty(), "{found:?}");
        for step in 4..=5 {
            d.observe(&Observation::new(step, 1.0, &s), &mut found);
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].step, 5);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let new = |window, fraction, initial, target| {
            LossNotConverging::new(10, window, fraction, initial, target)
        };
        for bad in [
            new(0, 0.9, 5, None),
            new(10, 0.9, 0, None),
            new(10, 0.0, 5, None),
            new(10, 1.5, 5, None),
            new(10, f64::NAN, 5, None),
            new(10, 0.9, 5, Some(f64::INFINITY)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?} passed");
        }
        for good in [new(1, 1.0, 1, None), new(10, 0.5, 5, Some(-3.0))] {
            assert!(good.validate().is_ok(), "{good:?}: {:?}", good.validate());
        }
    }

    #[test]
    fn fires_at_the_end_of_the_first_window_after_warmup() {
        let mut d = LossNotConverging {
            warmup_steps: 20,
            window: 10,
            fraction: 0.5,
            ..Default::default()
        };
        // Starts at 10 (initial = mean of 10,10,10,10,10 = 10), wobbles around 8: never below 5.
        let found = run(
            &mut d,
            |s| {
                if s <= 5 {
                    10.0
                } else {
                    8.0 + (s % 3) as f64 * 0.5
                }
            },
            40,
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].step, 30);
        assert_eq!((found[0].value, found[0].threshold), (8.0, 5.0));
        assert_eq!(found[1].step, 40);
    }

    #[test]
    fn quiet_when_the_loss_falls() {
        let mut d = LossNotConverging {
            warmup_steps: 20,
            window: 10,
            fraction: 0.5,
            ..Default::default()
        };
        assert!(run(&mut d, |s| 10.0 / (1.0 + 0.2 * s as f64), 200).is_empty());
        let mut t = LossNotConverging {
            target: Some(0.01),
            ..Default::default()
        };
        assert!(run(&mut t, |s| 1.0 / s as f64, 400).is_empty());
    }

    #[test]
    fn nan_loss_counts_as_not_converged() {
        let mut d = LossNotConverging {
            warmup_steps: 10,
            window: 5,
            ..Default::default()
        };
        let found = run(&mut d, |s| if s < 12 { 1.0 } else { f64::NAN }, 20);
        assert_eq!(
            found.iter().map(|f| f.step).collect::<Vec<_>>(),
            vec![15, 20]
        );
        assert!(found[1].value.is_infinite());
    }
}
