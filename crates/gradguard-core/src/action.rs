//! What a remedy asks the training loop to do with the current step.

use serde::{Deserialize, Serialize};

use crate::capability::{ClipScope, RemedyCapabilities};

/// A remedy's request. The loop honours the strongest one of a step:
/// `Stop` > `Rollback` > `SkipStep` > `ScaleLr` > `Continue`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Apply the update with the (possibly edited) gradients.
    Continue,
    /// Do not apply this step's update; the weights and optimiser state stay as they were.
    SkipStep {
        /// Why.
        reason: String,
    },
    /// Restore the last good checkpoint (and skip the batches that follow, as configured).
    Rollback {
        /// Why.
        reason: String,
    },
    /// Multiply the learning rate by `factor` from this step on, then apply the update.
    ScaleLr {
        /// The factor (0 < factor).
        factor: f64,
        /// Why.
        reason: String,
    },
    /// End the run now; what was already written is kept.
    Stop {
        /// Why.
        reason: String,
    },
}

impl Action {
    /// How strong the request is; the loop follows the strongest of a step.
    pub fn severity(&self) -> u8 {
        match self {
            Action::Continue => 0,
            Action::ScaleLr { .. } => 1,
            Action::SkipStep { .. } => 2,
            Action::Rollback { .. } => 3,
            Action::Stop { .. } => 4,
        }
    }

    /// The snake_case name of the variant.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::SkipStep { .. } => "skip_step",
            Action::Rollback { .. } => "rollback",
            Action::ScaleLr { .. } => "scale_lr",
            Action::Stop { .. } => "stop",
        }
    }

    /// Whether the update is withheld (skip, rollback or stop).
    pub fn withholds_update(&self) -> bool {
        self.severity() >= 2
    }
}

/// An action together with the remedy that asked for it, or a note that a remedy changed
/// the gradients (`action = continue`, `changed = true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The remedy's kind.
    pub remedy: String,
    /// Whether the remedy changed the gradients this step (e.g. it clipped).
    pub changed: bool,
    /// Which gradients the remedy bounds, when it declares itself a clipping remedy
    /// ([`RemedyCapabilities::clips`]). Absent from the JSON when it does not, and in logs
    /// written before the field existed (read as `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clips: Option<ClipScope>,
    /// What it asked for.
    #[serde(flatten)]
    pub action: Action,
}

impl ActionRecord {
    /// The record of `remedy` (its kind) with what it declares of itself, whether it changed
    /// the gradients, and what it asked for.
    pub fn new(
        remedy: impl Into<String>,
        capabilities: &RemedyCapabilities,
        changed: bool,
        action: Action,
    ) -> Self {
        ActionRecord {
            remedy: remedy.into(),
            changed,
            clips: capabilities.clips,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_actions() {
        let skip = Action::SkipStep {
            reason: "nan".into(),
        };
        let stop = Action::Stop { reason: "x".into() };
        assert!(stop.severity() > skip.severity());
        assert!(skip.withholds_update());
        assert!(!Action::ScaleLr {
            factor: 0.5,
            reason: String::new()
        }
        .withholds_update());
        let rec = ActionRecord::new("skip_nonfinite", &RemedyCapabilities::NONE, false, skip);
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            json,
            r#"{"remedy":"skip_nonfinite","changed":false,"action":"skip_step","reason":"nan"}"#
        );
        let back: ActionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn a_clipping_record_says_its_scope_and_old_records_still_parse() {
        let caps = RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm);
        let rec = ActionRecord::new("clip_global_norm", &caps, true, Action::Continue);
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            json,
            r#"{"remedy":"clip_global_norm","changed":true,"clips":"global_norm","action":"continue"}"#
        );
        assert_eq!(serde_json::from_str::<ActionRecord>(&json).unwrap(), rec);
        let old: ActionRecord =
            serde_json::from_str(r#"{"remedy":"clip_norm","changed":true,"action":"continue"}"#)
                .unwrap();
        assert_eq!(old.clips, None);
    }
}
