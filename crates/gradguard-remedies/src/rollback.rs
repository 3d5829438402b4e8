//! `rollback`: on explosion, restore the last good checkpoint and skip the next batches.
//!
//! # Rule (followed: the manual recipe of large runs, e.g. PaLM: "restart from a checkpoint
//! about 100 steps before the spike and skip 200-500 batches")
//! The remedy declares a [`CheckpointPolicy`] `{ every, keep, skip_batches }`: the loop keeps a
//! checkpoint every `every` good steps in a ring of the last `keep`, and after restoring one
//! it skips `skip_batches` batches (the data that led to the explosion). The remedy returns
//! [`Action::Rollback`] when the step exploded: the loss or a gradient is not finite, or a
//! detector reported a decisive sign (`loss_nonfinite`, `weights_nonfinite`). After
//! `max_rollbacks` rollbacks it returns [`Action::Stop`] instead, so a run that explodes again
//! and again ends (the count survives `reset`, which the loop may call after restoring).
//!
//! # Parameters
//! - `every = 50`: good steps between checkpoints (`>= 1`).
//! - `keep = 2`: checkpoints kept (`>= 1`).
//! - `skip_batches = 20`: batches skipped after restoring.
//! - `max_rollbacks = 5`: rollbacks before the run is stopped.

use gradguard_core::{
    describe_plugin, Action, CheckpointPolicy, Family, ParamDoc, PluginInfo, PluginState, Remedy,
    RemedyCapabilities, RemedyContext, RemedyError, StateError,
};
use serde::{Deserialize, Serialize};

/// What a guard does when skipping is no longer enough.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// End the run ([`Action::Stop`]).
    #[default]
    Stop,
    /// Restore the last good checkpoint ([`Action::Rollback`]).
    Rollback,
}

fn default_every() -> u64 {
    50
}
fn default_keep() -> usize {
    2
}
fn default_skip() -> u64 {
    20
}
fn default_max_rollbacks() -> u32 {
    5
}

/// Rolls back to the last good checkpoint on explosion (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Good steps between checkpoints.
    #[serde(default = "default_every")]
    pub every: u64,
    /// Checkpoints kept.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Batches skipped after restoring.
    #[serde(default = "default_skip")]
    pub skip_batches: u64,
    /// Rollbacks before the run is stopped.
    #[serde(default = "default_max_rollbacks")]
    pub max_rollbacks: u32,
    #[serde(skip)]
    rollbacks: u32,
}

impl Default for Rollback {
    fn default() -> Self {
        Rollback {
            every: default_every(),
            keep: default_keep(),
            skip_batches: default_skip(),
            max_rollbacks: default_max_rollbacks(),
            rollbacks: 0,
        }
    }
}

impl Rollback {
    /// Rollbacks asked for so far.
    pub fn rollbacks(&self) -> u32 {
        self.rollbacks
    }
}

#[typetag::serde(name = "rollback")]
impl Remedy for Rollback {
    /// It asks for a rollback, it changes no gradient.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
    }

    fn validate(&self) -> Result<(), RemedyError> {
        if self.every == 0 || self.keep == 0 {
            return Err(RemedyError::Invalid {
                remedy: "rollback".into(),
                message: format!(
                    "`every` and `keep` must be at least 1, got {} and {}",
                    self.every, self.keep
                ),
            });
        }
        Ok(())
    }

    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        self.validate()?;
        let why = if !ctx.loss().is_finite() {
            Some(format!("loss is {}", ctx.loss()))
        } else if let Some(p) = ctx.stats().first_nonfinite_grad() {
            Some(format!(
                "{} non-finite gradient value(s) in `{}`",
                p.grad_nonfinite, p.name
            ))
        } else {
            ctx.findings()
                .iter()
                .find(|f| f.sign.is_decisive())
                .map(|f| format!("{}: {}", f.sign, f.message))
        };
        let Some(why) = why else {
            return Ok(Action::Continue);
        };
        if self.rollbacks >= self.max_rollbacks {
            return Ok(Action::Stop {
                reason: format!("{why}; already rolled back {} times", self.rollbacks),
            });
        }
        self.rollbacks += 1;
        Ok(Action::Rollback {
            reason: format!(
                "{why}; restoring the last good checkpoint and skipping {} batches",
                self.skip_batches
            ),
        })
    }

    fn checkpoint_policy(&self) -> Option<CheckpointPolicy> {
        Some(CheckpointPolicy {
            every: self.every,
            keep: self.keep,
            skip_batches: self.skip_batches,
        })
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.rollbacks).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.rollbacks = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Remedy,
    kind: "rollback",
    summary: "On explosion (non-finite loss or gradients, NaN weights) restores the last good checkpoint and skips the next batches; stops after max_rollbacks.",
    params: &[
        ParamDoc { name: "every", default: Some("50"), doc: "good steps between checkpoints" },
        ParamDoc { name: "keep", default: Some("2"), doc: "checkpoints kept in the ring" },
        ParamDoc { name: "skip_batches", default: Some("20"), doc: "batches skipped after restoring" },
        ParamDoc { name: "max_rollbacks", default: Some("5"), doc: "rollbacks before the run is stopped" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::{Finding, Sign, StepStats};
    use gradguard_testkit::OwnedParams;

    fn step(r: &mut Rollback, loss: f64, g: f32, finding: Option<Sign>) -> Action {
        let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
        let mut view = d.view();
        let mut stats = StepStats::measure(&view);
        let f: Vec<Finding> = finding
            .into_iter()
            .map(|s| Finding::new(s, 1, None, 1.0, 0.0, "seen"))
            .collect();
        let mut ctx = RemedyContext::new(1, loss, &mut view, &mut stats).with_findings(&f);
        r.apply(&mut ctx).unwrap()
    }

    #[test]
    fn rolls_back_on_explosion_then_stops() {
        let mut r = Rollback {
            max_rollbacks: 2,
            ..Rollback::default()
        };
        assert_eq!(
            r.checkpoint_policy(),
            Some(CheckpointPolicy {
                every: 50,
                keep: 2,
                skip_batches: 20
            })
        );
        assert_eq!(step(&mut r, 1.0, 1.0, None), Action::Continue);
        assert_eq!(
            step(&mut r, 1.0, 1.0, Some(Sign::GradSpike)),
            Action::Continue
        );
        match step(&mut r, f64::NAN, 1.0, None) {
            Action::Rollback { reason } => {
                assert!(reason.contains("skipping 20 batches"), "{reason}")
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(
            step(&mut r, 1.0, 1.0, Some(Sign::WeightsNonfinite)).name(),
            "rollback"
        );
        assert_eq!(r.rollbacks(), 2);
        assert_eq!(step(&mut r, 1.0, f32::INFINITY, None).name(), "stop");
    }

    #[test]
    fn properties() {
        gradguard_testkit::assert_remedy_invariants(Rollback::default);
        gradguard_testkit::assert_guards_nonfinite(Rollback::default);
    }
}
