//! `skip_nonfinite`: skip updates whose loss or gradients are not finite; escalate after a run.
//!
//! # Rule (followed: optax `apply_if_finite`, without its give-up)
//! A step whose loss is NaN/±inf or whose gradients hold a NaN/±inf value is skipped
//! ([`Action::SkipStep`]: no update, weights and optimiser state unchanged). After
//! `max_consecutive` skipped steps in a row, the next bad step escalates instead: to
//! [`Action::Rollback`] (`escalate = "rollback"`, restore the last good checkpoint; the counter
//! starts again) or [`Action::Stop`] (`escalate = "stop"`). optax's `apply_if_finite` instead
//! *applies* the non-finite update after `max_consecutive_errors`; gradguard never does.
//! A finite step resets the counter.
//!
//! With `escalate = "rollback"` the remedy declares a [`CheckpointPolicy`] (a checkpoint
//! every 50 good steps, the last 2 kept, no batches skipped) unless a `rollback` remedy in
//! the same spec declares its own.
//!
//! # Parameters
//! - `max_consecutive = 10`: skips in a row before escalating.
//! - `escalate = "stop"`: `"stop"` or `"rollback"`.

use gradguard_core::{
    describe_plugin, Action, CheckpointPolicy, Family, ParamDoc, PluginInfo, PluginState, Remedy,
    RemedyCapabilities, RemedyContext, RemedyError, StateError,
};
use serde::{Deserialize, Serialize};

use crate::rollback::Escalation;

fn default_max_consecutive() -> u32 {
    10
}

/// Skips non-finite steps; escalates after `max_consecutive` of them in a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipNonfinite {
    /// Skips in a row before escalating.
    #[serde(default = "default_max_consecutive")]
    pub max_consecutive: u32,
    /// What to do then.
    #[serde(default)]
    pub escalate: Escalation,
    #[serde(skip)]
    consecutive: u32,
}

impl Default for SkipNonfinite {
    fn default() -> Self {
        SkipNonfinite {
            max_consecutive: default_max_consecutive(),
            escalate: Escalation::Stop,
            consecutive: 0,
        }
    }
}

impl SkipNonfinite {
    /// Bad steps seen in a row so far.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

#[typetag::serde(name = "skip_nonfinite")]
impl Remedy for SkipNonfinite {
    /// It withholds updates, it changes no gradient.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        let loss_bad = !ctx.loss().is_finite();
        if !loss_bad && ctx.stats().grads_finite() {
            self.consecutive = 0;
            return Ok(Action::Continue);
        }
        let what = if loss_bad {
            format!("loss is {}", ctx.loss())
        } else {
            let (name, n) = ctx
                .stats()
                .first_nonfinite_grad()
                .map(|p| (p.name.as_str(), p.grad_nonfinite))
                .unwrap_or(("?", 0));
            format!(
                "{} non-finite gradient value(s), first in `{name}` ({n})",
                ctx.stats().grad_nonfinite
            )
        };
        if self.consecutive >= self.max_consecutive {
            let reason = format!(
                "{what}; {} bad steps in a row, escalating",
                self.consecutive + 1
            );
            return Ok(match self.escalate {
                Escalation::Rollback => {
                    self.consecutive = 0;
                    Action::Rollback { reason }
                }
                Escalation::Stop => Action::Stop { reason },
            });
        }
        self.consecutive += 1;
        Ok(Action::SkipStep { reason: what })
    }

    fn checkpoint_policy(&self) -> Option<CheckpointPolicy> {
        (self.escalate == Escalation::Rollback).then_some(CheckpointPolicy {
            every: 50,
            keep: 2,
            skip_batches: 0,
        })
    }

    fn reset(&mut self) {
        self.consecutive = 0;
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.consecutive).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.consecutive = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "skip_nonfinite",
    summary: "Skips updates whose loss or gradients are non-finite; after max_consecutive skips in a row it rolls back or stops, never applying a bad update.",
    params: &[
        ParamDoc { name: "max_consecutive", default: Some("10"), doc: "skips in a row before escalating" },
        ParamDoc { name: "escalate", default: Some("\"stop\""), doc: "\"stop\" or \"rollback\"" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_testkit::{run_remedy, OwnedParams};

    fn step(r: &mut SkipNonfinite, loss: f64, g: f32) -> Action {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
        run_remedy(r, &mut d, 1, loss).result.unwrap()
    }

    #[test]
    fn skips_then_escalates() {
        let mut r = SkipNonfinite {
            max_consecutive: 2,
            ..SkipNonfinite::default()
        };
        assert_eq!(step(&mut r, 1.0, 1.0), Action::Continue);
        assert_eq!(step(&mut r, f64::NAN, 1.0).name(), "skip_step");
        match step(&mut r, 1.0, f32::INFINITY) {
            Action::SkipStep { reason } => assert!(reason.contains("`w`"), "{reason}"),
            a => panic!("{a:?}"),
        }
        assert_eq!(r.consecutive(), 2);
        match step(&mut r, 1.0, f32::NAN) {
            Action::Stop { reason } => assert!(reason.contains("3 bad steps in a row"), "{reason}"),
            a => panic!("{a:?}"),
        }
        // a good step resets the counter.
        let mut r = SkipNonfinite {
            max_consecutive: 1,
            ..SkipNonfinite::default()
        };
        step(&mut r, f64::INFINITY, 1.0);
        assert_eq!(step(&mut r, 1.0, 1.0), Action::Continue);
        assert_eq!(step(&mut r, f64::NAN, 1.0).name(), "skip_step");
        assert!(r.checkpoint_policy().is_none());
    }

    #[test]
    fn rollback_escalation() {
        let mut r: SkipNonfinite =
            serde_json::from_str(r#"{"max_consecutive":0,"escalate":"rollback"}"#).unwrap();
        assert_eq!(step(&mut r, f64::NAN, 1.0).name(), "rollback");
        assert_eq!(r.consecutive(), 0);
        assert_eq!(r.checkpoint_policy().map(|p| p.keep), Some(2));
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(SkipNonfinite::default);
        gradguard_testkit::assert_guards_nonfinite(SkipNonfinite::default);
    }
}
