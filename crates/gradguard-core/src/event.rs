//! One step as recorded for reporters and events logs (`events.jsonl`, schema in docs/EVENTS.md).

use serde::{Deserialize, Serialize};

use crate::action::ActionRecord;
use crate::observation::Series;
use crate::sign::Finding;
use crate::stats::{StepStats, UpdateStats};

/// One tensor's figures at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The tensor's name.
    pub name: String,
    /// Its gradient L2 norm (before remedies).
    #[serde(with = "crate::float::lossy")]
    pub grad_norm: f64,
    /// Its largest |g| (before remedies).
    #[serde(with = "crate::float::lossy")]
    pub grad_max_abs: f64,
    /// How many gradient values were non-finite.
    #[serde(default)]
    pub grad_nonfinite: usize,
    /// Its weight L2 norm.
    #[serde(with = "crate::float::lossy")]
    pub weight_norm: f64,
    /// ||dw|| / ||w|| of the previous update, when known.
    #[serde(
        default,
        with = "crate::float::lossy_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_ratio: Option<f64>,
}

/// One step: what was measured, seen and done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Optimiser update number, from 1.
    pub step: u64,
    /// Epoch, from 1, when the run counts epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The training loss of the batch.
    #[serde(with = "crate::float::lossy")]
    pub loss: f64,
    /// L1/L2 penalty added by remedies (reported beside the loss), when any.
    #[serde(
        default,
        with = "crate::float::lossy_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub penalty: Option<f64>,
    /// Global gradient L2 norm before remedies.
    #[serde(with = "crate::float::lossy")]
    pub grad_norm: f64,
    /// Global gradient L2 norm after remedies (what the optimiser received).
    #[serde(
        default,
        with = "crate::float::lossy_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub grad_norm_after: Option<f64>,
    /// The loss over the held-out split, at the steps where the loop evaluated it (absent
    /// at the others, and from logs that do not record it). report.html draws it beside the
    /// training loss.
    #[serde(
        default,
        with = "crate::float::lossy_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub held_out_loss: Option<f64>,
    /// Number of non-finite gradient values.
    #[serde(default)]
    pub grad_nonfinite: usize,
    /// The learning rate in force.
    #[serde(
        default,
        with = "crate::float::lossy_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub lr: Option<f64>,
    /// Per-tensor figures.
    #[serde(default)]
    pub layers: Vec<LayerRecord>,
    /// Norms per time step or layer that the model measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Series>,
    /// What the detectors saw.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// What the remedies did or asked for (only remedies that acted are listed).
    #[serde(default)]
    pub actions: Vec<ActionRecord>,
    /// Whether the update was applied.
    #[serde(default = "default_true")]
    pub applied: bool,
}

fn default_true() -> bool {
    true
}

impl Event {
    /// Builds the measured part of an event from step statistics and the last update.
    pub fn from_stats(
        step: u64,
        loss: f64,
        stats: &StepStats,
        update: Option<&UpdateStats>,
    ) -> Self {
        let layers = stats
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| LayerRecord {
                name: p.name.clone(),
                grad_norm: p.grad_norm,
                grad_max_abs: p.grad_max_abs,
                grad_nonfinite: p.grad_nonfinite,
                weight_norm: p.weight_norm(),
                update_ratio: update.and_then(|u| u.params.get(i)).map(|u| u.ratio()),
            })
            .collect();
        Event {
            step,
            epoch: None,
            loss,
            penalty: None,
            grad_norm: stats.grad_norm,
            grad_norm_after: None,
            held_out_loss: None,
            grad_nonfinite: stats.grad_nonfinite,
            lr: None,
            layers,
            series: Vec::new(),
            findings: Vec::new(),
            actions: Vec::new(),
            applied: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::{ParamView, Role};

    #[test]
    fn round_trips_through_json_with_nan() {
        let w = [1.0f32, 2.0];
        let mut g = [f32::NAN, 1.0];
        let shape = [2usize];
        let mut v = ParamView::new();
        v.push("w", &shape, Role::Weight, &w, &mut g).unwrap();
        let s = StepStats::measure(&v);
        let e = Event::from_stats(3, f64::NAN, &s, None);
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains("\"loss\":\"NaN\""), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert!(back.loss.is_nan() && back.grad_norm.is_nan());
        assert_eq!(back.layers[0].grad_nonfinite, 1);
        assert!(back.applied);
        // No held-out loss: absent from the line (logs stay as they were), None when read.
        assert!(!line.contains("held_out_loss"), "{line}");
        assert_eq!(back.held_out_loss, None);
    }

    #[test]
    fn the_held_out_loss_is_written_and_read_when_measured() {
        let line = r#"{"step":5,"loss":1.5,"grad_norm":2.0,"held_out_loss":0.75}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.held_out_loss, Some(0.75));
        let out = serde_json::to_string(&e).unwrap();
        assert!(out.contains("\"held_out_loss\":0.75"), "{out}");
        let nan: Event =
            serde_json::from_str(r#"{"step":6,"loss":1.5,"grad_norm":2.0,"held_out_loss":"NaN"}"#)
                .unwrap();
        assert!(nan.held_out_loss.is_some_and(f64::is_nan));
        let absent: Event =
            serde_json::from_str(r#"{"step":6,"loss":1.5,"grad_norm":2.0,"held_out_loss":null}"#)
                .unwrap();
        assert_eq!(absent.held_out_loss, None);
    }
}
