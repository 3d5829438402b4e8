//! `loss_unstable`: the loss swings from update to update.
//!
//! **Rule, `mode = "relative_change"` (default).** With `prev` the last finite loss and `L0`
//! the first finite loss, `change = |L_t - prev| / max(|prev|, floor_fraction * |L0|, 1e-12)`;
//! fires at every step where `change > threshold` (`value = change`). The floor keeps a loss
//! that is already tiny (0.001 -> 0.003 late in training) from counting as a swing. A non-finite loss is not a swing (that is
//! `loss_nonfinite`): it is skipped and the next finite loss is compared with nothing.
//!
//! **Rule, `mode = "coefficient_of_variation"`.** Over the last `window` finite losses,
//! `cv = std / |mean|` (population std); fires when the window is full and `cv > threshold`,
//! then waits `window` steps before it may fire again.
//!
//! **Parameters (defaults).** `mode = "relative_change"`, `threshold = 1.0` (the loss more
//! than doubled, or jumped by its own size), `floor_fraction = 0.01`, `window = 20`
//! (coefficient mode only).
//!
//! **Specificity.** In healthy PyTorch reference runs, swings above 100% happened in about 55 of
//! 1600 updates (3.4%): this sign is a warning. The diagnosis calls a run `suspect` only when
//! more than 10% of its steps swing (see [`crate::diagnoser`]).

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Sign, StateError, Window,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, non_negative, positive, require};

/// How a swing is measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnstableMode {
    /// |L_t - L_{t-1}| / |L_{t-1}|.
    #[default]
    RelativeChange,
    /// std / |mean| over a window.
    CoefficientOfVariation,
}

fn d_threshold() -> f64 {
    1.0
}
fn d_window() -> usize {
    20
}
fn d_floor() -> f64 {
    0.01
}

/// Fires when the loss swings. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossUnstable {
    /// How a swing is measured.
    #[serde(default)]
    pub mode: UnstableMode,
    /// The swing above which it fires.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// Window of the coefficient-of-variation mode.
    #[serde(default = "d_window")]
    pub window: usize,
    /// Relative-change mode: the denominator is at least this fraction of the first loss.
    #[serde(default = "d_floor")]
    pub floor_fraction: f64,
    #[serde(skip)]
    prev: Option<f64>,
    #[serde(skip)]
    first: Option<f64>,
    /// The last finite losses (coefficient-of-variation mode).
    #[serde(skip)]
    ring: Window,
    #[serde(skip)]
    cooldown: usize,
}

impl Default for LossUnstable {
    fn default() -> Self {
        LossUnstable {
            mode: UnstableMode::default(),
            threshold: d_threshold(),
            window: d_window(),
            floor_fraction: d_floor(),
            prev: None,
            first: None,
            ring: Window::default(),
            cooldown: 0,
        }
    }
}

impl LossUnstable {
    fn relative(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        if !obs.loss.is_finite() {
            self.prev = None;
            return;
        }
        let first = *self.first.get_or_insert(obs.loss);
        if let Some(prev) = self.prev {
            let floor = (self.floor_fraction * first.abs()).max(1e-12);
            let change = (obs.loss - prev).abs() / prev.abs().max(floor);
            if change > self.threshold {
                findings.push(Finding::new(
                    Sign::LossUnstable,
                    obs.step,
                    None,
                    change,
                    self.threshold,
                    format!(
                        "the loss swung from {} to {} at step {} (a {}% change)",
                        fmt_num(prev),
                        fmt_num(obs.loss),
                        obs.step,
                        fmt_num(change * 100.0)
                    ),
                ));
            }
        }
        self.prev = Some(obs.loss);
    }

    fn coefficient(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let w = self.window.max(2);
        if self.cooldown > 0 {
            self.cooldown -= 1;
        }
        if !obs.loss.is_finite() {
            return;
        }
        self.ring.set_capacity(w);
        self.ring.push(obs.loss);
        if !self.ring.is_full() || self.cooldown > 0 {
            return;
        }
        let (mean, var) = self.ring.mean_population_variance();
        let cv = var.sqrt() / mean.abs().max(1e-12);
        if cv > self.threshold {
            self.cooldown = w;
            findings.push(Finding::new(
                Sign::LossUnstable,
                obs.step,
                None,
                cv,
                self.threshold,
                format!(
                    "the loss swings: over the {w} steps up to step {} its coefficient of variation is {} (mean {})",
                    obs.step,
                    fmt_num(cv),
                    fmt_num(mean)
                ),
            ));
        }
    }
}

impl LossUnstable {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    pub fn new(mode: UnstableMode, threshold: f64, window: usize, floor_fraction: f64) -> Self {
        LossUnstable {
            mode,
            threshold,
            window,
            floor_fraction,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "loss_unstable")]
impl Detector for LossUnstable {
    fn validate(&self) -> Result<(), String> {
        positive("threshold", self.threshold)?;
        require(self.window >= 2, "window", "at least 2", self.window)?;
        non_negative("floor_fraction", self.floor_fraction)
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        match self.mode {
            UnstableMode::RelativeChange => self.relative(obs, findings),
            UnstableMode::CoefficientOfVariation => self.coefficient(obs, findings),
        }
    }

    fn reset(&mut self) {
        self.prev = None;
        self.first = None;
        self.ring.clear();
        self.cooldown = 0;
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&(self.prev, self.first, &self.ring, self.cooldown)).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        (self.prev, self.first, self.ring, self.cooldown) = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "loss_unstable",
    summary: "Fires when the loss swings: relative step-to-step change (default) or coefficient of variation over a window above a threshold.",
    params: &[
        ParamDoc { name: "mode", default: Some("\"relative_change\""), doc: "\"relative_change\" or \"coefficient_of_variation\"" },
        ParamDoc { name: "threshold", default: Some("1.0"), doc: "relative change (1.0 = 100%) or coefficient of variation above which it fires" },
        ParamDoc { name: "window", default: Some("20"), doc: "window of the coefficient-of-variation mode" },
        ParamDoc { name: "floor_fraction", default: Some("0.01"), doc: "relative-change denominator is at least this fraction of the first loss" },
    ],
    example: "mode = \"coefficient_of_variation\", threshold = 0.5, window = 10",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::Role;

    fn run(d: &mut LossUnstable, losses: &[f64]) -> Vec<Finding> {
        let s = stats(vec![param("w", Role::Weight, 1.0, 1.0)]);
        let mut found = Vec::new();
        for (i, &l) in losses.iter().enumerate() {
            d.observe(&Observation::new(i as u64 + 1, l, &s), &mut found);
        }
        found
    }

    fn observe_losses(d: &mut LossUnstable, losses: &[(u64, f64)]) -> Vec<Finding> {
        let s = crate::testing::stats(Vec::new());
        let mut found = Vec::new();
        for &(step, loss) in losses {
            d.observe(&Observation::new(step, loss, &s), &mut found);
        }
        found
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let rc = UnstableMode::RelativeChange;
        assert!(LossUnstable::new(rc, 0.0, 10, 0.01).validate().is_err());
        assert!(LossUnstable::new(rc, 1.0, 1, 0.01).validate().is_err());
        assert!(LossUnstable::new(rc, 1.0, 10, -0.01).validate().is_err());
        assert!(LossUnstable::new(rc, 1.0, 2, 0.0).validate().is_ok());
    }

    #[test]
    fn the_floor_is_a_fraction_of_the_first_loss() {
        // first 100, floor_fraction 0.01: floor 1. From 0.001 to 0.5 the change is
        // 0.499 / max(0.001, 1) = 0.499 < 1: quiet (without the floor it would be 499).
        let mut d = LossUnstable::new(UnstableMode::RelativeChange, 1.0, 10, 0.01);
        let found = observe_losses(&mut d, &[(1, 100.0), (2, 0.001), (3, 0.5)]);
        // 100 -> 0.001 is a change of 0.99999 < 1 too.
        assert!(found.is_empty(), "{found:?}");
        // From 0.5 to 2.0: 1.5 / max(0.5, 1) = 1.5 > 1: fires.
        let found = observe_losses(&mut d, &[(4, 2.0)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((found[0].value - 1.5).abs() < 1e-12, "{}", found[0].value);
    }

    #[test]
    fn reset_forgets_the_previous_loss() {
        let mut d = LossUnstable::new(UnstableMode::RelativeChange, 1.0, 10, 0.01);
        assert!(observe_losses(&mut d, &[(1, 1.0)]).is_empty());
        d.reset();
        // No previous loss after the reset: a tenfold jump has nothing to compare with.
        assert!(observe_losses(&mut d, &[(2, 10.0)]).is_empty());
        // The next one is compared with 10 (and the floor with the new first loss, 10).
        assert_eq!(observe_losses(&mut d, &[(3, 100.0)]).len(), 1);
    }

    #[test]
    fn relative_change_fires_on_the_jump() {
        let mut d = LossUnstable::default();
        let found = run(&mut d, &[4.0, 3.0, 2.5, 7.5, 7.0, f64::NAN, 100.0]);
        // 2.5 -> 7.5 is +200%; the NaN breaks the comparison so 100 is not compared.
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].step, 4);
        assert!((found[0].value - 2.0).abs() < 1e-12);
    }

    #[test]
    fn quiet_on_a_smoothly_falling_loss() {
        let losses: Vec<f64> = (0..500)
            .map(|i| 2.0 * (-0.01 * i as f64).exp() * (1.0 + 0.3 * ((i % 7) as f64 / 7.0)))
            .collect();
        assert!(run(&mut LossUnstable::default(), &losses).is_empty());
        let mut cv = LossUnstable {
            mode: UnstableMode::CoefficientOfVariation,
            threshold: 0.5,
            ..Default::default()
        };
        assert!(run(&mut cv, &losses).is_empty());
    }

    #[test]
    fn tiny_late_losses_are_not_swings() {
        // 1.0 at the start: the floor is 0.01; 0.001 -> 0.003 changes by 0.002 / 0.01 = 20%.
        let found = run(
            &mut LossUnstable::default(),
            &[1.0, 0.5, 0.1, 0.001, 0.003, 0.001, 0.05],
        );
        // Only 0.001 -> 0.05: 0.049 / 0.01 = 490%.
        assert_eq!(found.iter().map(|f| f.step).collect::<Vec<_>>(), vec![7]);
        assert!((found[0].value - 4.9).abs() < 1e-9);
    }

    #[test]
    fn coefficient_mode_hand_computed() {
        // Window 4 of [1, 3, 1, 3]: mean 2, std 1, cv 0.5 > 0.4 at step 4; cooldown 4 steps.
        let mut d = LossUnstable {
            mode: UnstableMode::CoefficientOfVariation,
            threshold: 0.4,
            window: 4,
            ..Default::default()
        };
        let found = run(&mut d, &[1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0]);
        assert_eq!(found.iter().map(|f| f.step).collect::<Vec<_>>(), vec![4, 8]);
        assert!((found[0].value - 0.5).abs() < 1e-12);
    }

    /// `change > threshold` is strict. prev = 1 (and the floor 0.01 * 1 below it), so the
    /// change of 1 -> L is L - 1, exact for L in [1, 2]: L = 1.5 is exactly on 0.5.
    #[test]
    fn relative_change_boundary_is_strict() {
        for (loss, fires) in [
            (1.5f64.next_down(), false),
            (1.5, false),
            (1.5f64.next_up(), true),
        ] {
            let mut d = LossUnstable {
                threshold: 0.5,
                ..LossUnstable::default()
            };
            let found = run(&mut d, &[1.0, loss]);
            assert_eq!(found.len(), fires as usize, "loss {loss:e}");
            if fires {
                assert_eq!(found[0].value, loss - 1.0);
            }
        }
    }
}
