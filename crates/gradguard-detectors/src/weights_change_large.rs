//! `weights_change_large`: a layer's update ratio ‖dw‖ / ‖w‖ stays above a threshold.
//!
//! **Which tensors.** Weight matrices only: biases (a name whose last component contains
//! `bias`) are skipped (the same name rule as for logs, [`Role::from_name`], so a replayed
//! log agrees with the live run). Biases often start at 0, where the ratio is meaningless (`ParamUpdate::ratio`
//! divides by 1e-12 and reports ~1e9 for the first update).
//!
//! **Rule.** Reads `obs.update` (what the previous optimiser update did, per tensor):
//! `ratio = ‖w_new − w_old‖₂ / ‖w_old‖₂` ([`gradguard_core::ParamUpdate::ratio`]; a
//! non-finite ratio counts as above). For each tensor, a streak counts consecutive updates
//! with `ratio > threshold`; when the streak reaches `patience` the detector fires once
//! (`value` = that update's ratio, `layer` = the tensor) and stays quiet until the ratio
//! falls back to the threshold or below. A step without an update (the first step, or one
//! after a skipped update) leaves the streaks as they are.
//!
//! **Parameters (defaults).** `threshold = 1.0`, `patience = 1`.
//!
//! **Why 1.0.** Healthy training usually moves a tensor by about 1e-3 of its norm per update.
//! In the PyTorch reference runs (issue 5) the exploding regression already had ratios of
//! 1.8-2.8 at the first update and ~1e7 before the overflow, while healthy runs never exceeded
//! 0.23; a threshold of 0.1 fired in 4 of 5 healthy seeds. A threshold near 1 separated the two.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Sign, StateError,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, positive, require};
use gradguard_core::Role;

fn d_threshold() -> f64 {
    1.0
}
fn d_patience() -> u32 {
    1
}

/// Fires when a tensor's update ratio stays above the threshold. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsChangeLarge {
    /// Update ratio above which an update counts as large.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// Consecutive large updates needed to fire (>= 1).
    #[serde(default = "d_patience")]
    pub patience: u32,
    #[serde(skip)]
    streak: Vec<u32>,
}

impl Default for WeightsChangeLarge {
    fn default() -> Self {
        WeightsChangeLarge {
            threshold: d_threshold(),
            patience: d_patience(),
            streak: Vec::new(),
        }
    }
}

impl WeightsChangeLarge {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    pub fn new(threshold: f64, patience: u32) -> Self {
        WeightsChangeLarge {
            threshold,
            patience,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "weights_change_large")]
impl Detector for WeightsChangeLarge {
    fn validate(&self) -> Result<(), String> {
        positive("threshold", self.threshold)?;
        require(self.patience >= 1, "patience", "at least 1", self.patience)
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let Some(update) = obs.update else { return };
        if self.streak.len() != update.params.len() {
            self.streak.clear();
            self.streak.resize(update.params.len(), 0);
        }
        let patience = self.patience.max(1);
        for (p, streak) in update.params.iter().zip(self.streak.iter_mut()) {
            if Role::from_name(&p.name, None) == Role::Bias {
                continue;
            }
            let ratio = p.ratio();
            let large = ratio > self.threshold || ratio.is_nan();
            if !large {
                *streak = 0;
                continue;
            }
            *streak = streak.saturating_add(1);
            if *streak == patience {
                findings.push(Finding::new(
                    Sign::WeightsChangeLarge,
                    obs.step,
                    Some(&p.name),
                    ratio,
                    self.threshold,
                    format!(
                        "the update before step {} moved `{}` by {} times its own norm (||dw||/||w||, {} update(s) in a row above {})",
                        obs.step,
                        p.name,
                        fmt_num(ratio),
                        patience,
                        fmt_num(self.threshold)
                    ),
                ));
            }
        }
    }

    fn reset(&mut self) {
        self.streak.iter_mut().for_each(|s| *s = 0);
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.streak).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.streak = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "weights_change_large",
    summary: "Fires when a tensor's update ratio ||dw||/||w|| stays above a threshold for `patience` consecutive updates.",
    params: &[
        ParamDoc { name: "threshold", default: Some("1.0"), doc: "update ratio above which an update is large (healthy runs stay below ~0.25)" },
        ParamDoc { name: "patience", default: Some("1"), doc: "consecutive large updates needed to fire" },
    ],
    example: "threshold = 0.5, patience = 2",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats, update};
    use gradguard_core::Role;

    fn run(d: &mut WeightsChangeLarge, ratios: &[(f64, f64)]) -> Vec<Finding> {
        let s = stats(vec![
            param("l1.weight", Role::Weight, 1.0, 1.0),
            param("l2.weight", Role::Weight, 1.0, 1.0),
        ]);
        let mut found = Vec::new();
        for (i, &(a, b)) in ratios.iter().enumerate() {
            let step = i as u64 + 1;
            let u = update(
                step - 1,
                &[("l1.weight", a), ("l2.weight", b), ("l2.bias", 1e9)],
            );
            let mut obs = Observation::new(step, 1.0, &s);
            if step > 1 {
                obs.update = Some(&u);
            }
            d.observe(&obs, &mut found);
        }
        found
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(WeightsChangeLarge::new(0.0, 3).validate().is_err());
        assert!(WeightsChangeLarge::new(-1.0, 3).validate().is_err());
        assert!(WeightsChangeLarge::new(1.0, 0).validate().is_err());
        assert!(WeightsChangeLarge::new(1e-9, 1).validate().is_ok());
    }

    #[test]
    fn reset_restarts_every_streak() {
        // patience 2: one large change, reset, one large change: no finding; a second: one.
        let mut d = WeightsChangeLarge::new(1.0, 2);
        let s = stats(vec![param("l1.weight", Role::Weight, 1.0, 1.0)]);
        let u = update(1, &[("l1.weight", 5.0)]);
        let mut found = Vec::new();
        let observe = |d: &mut WeightsChangeLarge, step: u64, found: &mut Vec<Finding>| {
            let mut obs = Observation::new(step, 1.0, &s);
            obs.update = Some(&u);
            d.observe(&obs, found);
        };
        observe(&mut d, 2, &mut found);
        d.reset();
        observe(&mut d, 3, &mut found);
        assert!(found.is_empty(), "{found:?}");
        observe(&mut d, 4, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn fires_after_patience_on_the_layer_and_once_per_streak() {
        let mut d = WeightsChangeLarge {
            patience: 2,
            ..Default::default()
        };
        let r = [
            (0.0, 0.0),
            (1e-3, 0.2),
            (1e-3, 2.8),
            (1e-3, 30.0),
            (1e-3, 1e7),
            (1e-3, 0.1),
            (1e-3, f64::NAN),
            (1e-3, 5.0),
        ];
        let found = run(&mut d, &r);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].step, found[0].layer.as_deref(), found[0].value),
            (4, Some("l2.weight"), 30.0)
        );
        assert_eq!(found[1].step, 8);
    }

    #[test]
    fn quiet_on_healthy_ratios() {
        let r: Vec<(f64, f64)> = (0..300)
            .map(|i| (1e-3 * (1 + i % 5) as f64, 0.23 - 1e-4 * (i % 50) as f64))
            .collect();
        assert!(run(&mut WeightsChangeLarge::default(), &r).is_empty());
    }

    /// `ratio > threshold` is strict: exactly on the threshold or one ULP below is quiet, one
    /// ULP above fires (weight norm 1, so the ratio is the update norm, bit for bit).
    #[test]
    fn boundary_is_strictly_above_the_threshold() {
        for threshold in [1.0f64, 0.3] {
            for (ratio, fires) in [
                (threshold.next_down(), false),
                (threshold, false),
                (threshold.next_up(), true),
            ] {
                let mut d = WeightsChangeLarge::new(threshold, 1);
                let found = run(&mut d, &[(0.0, 0.0), (ratio, 0.0)]);
                assert_eq!(
                    found.len(),
                    fires as usize,
                    "ratio {ratio:e} vs threshold {threshold:e}"
                );
            }
        }
    }
}
