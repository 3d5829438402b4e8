//! `lr_backoff`: scale the learning rate down after a finding.
//!
//! # Rule
//! When the detectors reported at least one finding at this step (any sign), the remedy
//! returns [`Action::ScaleLr`] with `factor`: the loop multiplies the learning rate by it from
//! this step on, and still applies the update. It then waits `cooldown` steps before it can
//! back off again, so one burst of findings does not collapse the learning rate.
//! (No framework ships this as a gradient remedy; it is the manual "lower the LR and go on"
//! of large runs, as a plugin. Keras' `ReduceLROnPlateau` is the closest, triggered by a
//! metric plateau instead.)
//!
//! # Parameters
//! - `factor = 0.5`: the multiplier, in (0, 1].
//! - `cooldown = 100`: steps after a back-off during which findings are ignored.

use gradguard_core::{
    describe_plugin, Action, Family, ParamDoc, PluginInfo, PluginState, Remedy, RemedyCapabilities,
    RemedyContext, RemedyError, StateError,
};
use serde::{Deserialize, Serialize};

fn default_factor() -> f64 {
    0.5
}
fn default_cooldown() -> u64 {
    100
}

/// Scales the learning rate by `factor` after a finding, then waits `cooldown` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrBackoff {
    /// The learning-rate multiplier.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Steps to wait after a back-off.
    #[serde(default = "default_cooldown")]
    pub cooldown: u64,
    #[serde(skip)]
    last: Option<u64>,
}

impl Default for LrBackoff {
    fn default() -> Self {
        LrBackoff {
            factor: default_factor(),
            cooldown: default_cooldown(),
            last: None,
        }
    }
}

#[typetag::serde(name = "lr_backoff")]
impl Remedy for LrBackoff {
    /// It changes the learning rate, no gradient.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
    }

    fn validate(&self) -> Result<(), RemedyError> {
        if !(self.factor > 0.0 && self.factor <= 1.0) {
            return Err(RemedyError::Invalid {
                remedy: "lr_backoff".into(),
                message: format!("`factor` must be in (0, 1], got {}", self.factor),
            });
        }
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        let Some(first) = ctx.findings().first() else {
            return Ok(Action::Continue);
        };
        if let Some(last) = self.last {
            if ctx.step() < last.saturating_add(self.cooldown) && ctx.step() >= last {
                return Ok(Action::Continue);
            }
        }
        self.last = Some(ctx.step());
        Ok(Action::ScaleLr {
            factor: self.factor,
            reason: format!(
                "{} ({} finding(s) at step {})",
                first.sign,
                ctx.findings().len(),
                ctx.step()
            ),
        })
    }

    fn reset(&mut self) {
        self.last = None;
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.last).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.last = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "lr_backoff",
    summary: "Multiplies the learning rate by factor after any finding, then waits cooldown steps before backing off again.",
    params: &[
        ParamDoc { name: "factor", default: Some("0.5"), doc: "learning-rate multiplier, in (0, 1]" },
        ParamDoc { name: "cooldown", default: Some("100"), doc: "steps after a back-off during which findings are ignored" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::{Finding, Sign, StepStats};
    use gradguard_testkit::OwnedParams;

    fn step(r: &mut LrBackoff, step: u64, finding: bool) -> Action {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[1.0]);
        let mut view = d.view();
        let mut stats = StepStats::measure(&view);
        let f = [Finding::new(Sign::GradSpike, step, None, 9.0, 3.0, "spike")];
        let shown: &[Finding] = if finding { &f } else { &[] };
        let mut ctx = RemedyContext::new(step, 1.0, &mut view, &mut stats).with_findings(shown);
        r.apply(&mut ctx).unwrap()
    }

    #[test]
    fn backs_off_then_cools_down() {
        let mut r = LrBackoff {
            factor: 0.25,
            cooldown: 3,
            ..LrBackoff::default()
        };
        assert_eq!(step(&mut r, 1, false), Action::Continue);
        match step(&mut r, 2, true) {
            Action::ScaleLr { factor, reason } => {
                assert_eq!(factor, 0.25);
                assert!(reason.starts_with("grad_spike"), "{reason}");
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(step(&mut r, 3, true), Action::Continue);
        assert_eq!(step(&mut r, 4, true), Action::Continue);
        assert_eq!(step(&mut r, 5, true).name(), "scale_lr");
        let mut bad = LrBackoff {
            factor: 2.0,
            ..LrBackoff::default()
        };
        let mut d = OwnedParams::new().with_grads("w", &[1], &[1.0]);
        let e = gradguard_testkit::run_remedy(&mut bad, &mut d, 1, 0.0)
            .result
            .unwrap_err()
            .to_string();
        assert!(e.contains("(0, 1]"), "{e}");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(LrBackoff::default);
    }
}
