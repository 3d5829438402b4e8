//! `grad_norm_above_one`: a layer's error gradient norm stays above a threshold (1.0) for
//! `patience` consecutive steps.
//!
//! **Which tensors are a layer's "error gradient".** A layer's error signal is
//! `δ = dL/dz` (the gradient with respect to its pre-activation). A bias enters every example
//! as `z = W x + b`, so the bias gradient is exactly `Σ_batch δ`: the error signal summed over
//! the batch. With `tensors = "error_signal"` (the default) the detector watches every tensor
//! with [`Role::Bias`]; a model with no bias at all falls back to its weight matrices
//! ([`Role::Weight`] and [`Role::RecurrentWeight`]), whose gradient `δ xᵀ` also scales with the
//! error signal. `tensors = "weights"` watches weight matrices only, `"all"` every tensor.
//!
//! **Rule.** Per watched tensor, a streak counts consecutive steps with
//! `‖g‖₂ > threshold` (a NaN norm counts as above). When it reaches `patience` the detector
//! fires once (`value` = that step's norm, `layer` = the tensor) and stays quiet until the
//! norm falls to the threshold or below.
//!
//! **Parameters (defaults).** `threshold = 1.0`, `patience = 5`, `tensors = "error_signal"`.
//!
//! **Specificity.** In healthy PyTorch reference runs this fired in every seed, early in
//! training; in the exploding regression a layer stayed above 1.0 from about update 5. It is
//! a warning: the diagnosis never calls a run exploding or suspect from it alone.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Role, Sign, StateError,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, non_negative, require};

/// Which tensors [`GradNormAboveOne`] watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorSelection {
    /// Bias gradients (the error signal summed over the batch); weights when there is no bias.
    #[default]
    ErrorSignal,
    /// Weight matrices (input and recurrent).
    Weights,
    /// Every tensor.
    All,
}

impl TensorSelection {
    /// Whether the tensor with `role` is watched, given whether the model has any bias.
    pub fn watches(self, role: Role, model_has_bias: bool) -> bool {
        match self {
            TensorSelection::ErrorSignal if model_has_bias => role == Role::Bias,
            TensorSelection::ErrorSignal | TensorSelection::Weights => role.is_weight(),
            TensorSelection::All => true,
        }
    }
}

fn d_threshold() -> f64 {
    1.0
}
fn d_patience() -> u32 {
    5
}

/// Fires when a layer's error gradient stays above the threshold. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradNormAboveOne {
    /// Gradient L2 norm above which a step counts.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// Consecutive steps needed to fire (>= 1).
    #[serde(default = "d_patience")]
    pub patience: u32,
    /// Which tensors are watched.
    #[serde(default)]
    pub tensors: TensorSelection,
    #[serde(skip)]
    streak: Vec<u32>,
}

impl Default for GradNormAboveOne {
    fn default() -> Self {
        GradNormAboveOne {
            threshold: d_threshold(),
            patience: d_patience(),
            tensors: TensorSelection::default(),
            streak: Vec::new(),
        }
    }
}

impl GradNormAboveOne {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    pub fn new(threshold: f64, patience: u32, tensors: TensorSelection) -> Self {
        GradNormAboveOne {
            threshold,
            patience,
            tensors,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "grad_norm_above_one")]
impl Detector for GradNormAboveOne {
    fn validate(&self) -> Result<(), String> {
        non_negative("threshold", self.threshold)?;
        require(self.patience >= 1, "patience", "at least 1", self.patience)
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let params = &obs.stats.params;
        if self.streak.len() != params.len() {
            self.streak.clear();
            self.streak.resize(params.len(), 0);
        }
        let has_bias = params.iter().any(|p| p.role == Role::Bias);
        let patience = self.patience.max(1);
        for (p, streak) in params.iter().zip(self.streak.iter_mut()) {
            if !self.tensors.watches(p.role, has_bias) {
                continue;
            }
            if !(p.grad_norm > self.threshold || p.grad_norm.is_nan()) {
                *streak = 0;
                continue;
            }
            *streak = streak.saturating_add(1);
            if *streak == patience {
                findings.push(Finding::new(
                    Sign::GradNormAboveOne,
                    obs.step,
                    Some(&p.name),
                    p.grad_norm,
                    self.threshold,
                    format!(
                        "the gradient of `{}` has stayed above {} for {} steps (norm {} at step {})",
                        p.name,
                        fmt_num(self.threshold),
                        patience,
                        fmt_num(p.grad_norm),
                        obs.step
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
    kind: "grad_norm_above_one",
    summary: "Fires when a layer's error gradient (its bias gradient by default) stays above a threshold for `patience` consecutive steps.",
    params: &[
        ParamDoc { name: "threshold", default: Some("1.0"), doc: "gradient L2 norm above which a step counts" },
        ParamDoc { name: "patience", default: Some("5"), doc: "consecutive steps needed to fire" },
        ParamDoc { name: "tensors", default: Some("\"error_signal\""), doc: "\"error_signal\" (bias gradients; weights if no bias), \"weights\" or \"all\"" },
    ],
    example: "threshold = 1.0, patience = 3, tensors = \"all\"",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};

    fn step_stats(bias_norm: f64) -> gradguard_core::StepStats {
        stats(vec![
            param("layers.0.weight", Role::Weight, 50.0, 1.0),
            param("layers.0.bias", Role::Bias, 0.5, 1.0),
            param("rnn.0.weight_hh", Role::RecurrentWeight, 50.0, 1.0),
            param("rnn.0.bias_hh", Role::Bias, bias_norm, 1.0),
        ])
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad_threshold = GradNormAboveOne {
            threshold: -1.0,
            ..GradNormAboveOne::default()
        };
        let bad_patience = GradNormAboveOne {
            patience: 0,
            ..GradNormAboveOne::default()
        };
        assert!(bad_threshold.validate().is_err());
        assert!(bad_patience.validate().is_err());
        let edge = GradNormAboveOne {
            threshold: 0.0,
            patience: 1,
            ..GradNormAboveOne::default()
        };
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn reset_restarts_every_streak() {
        // patience 2: one step above, reset, one step above: no finding (the streak restarted).
        let mut d = GradNormAboveOne {
            patience: 2,
            ..GradNormAboveOne::default()
        };
        let s = stats(vec![param("w", Role::Weight, 5.0, 1.0)]);
        let mut found = Vec::new();
        d.observe(&Observation::new(1, 1.0, &s), &mut found);
        d.reset();
        d.observe(&Observation::new(2, 1.0, &s), &mut found);
        assert!(found.is_empty(), "{found:?}");
        d.observe(&Observation::new(3, 1.0, &s), &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn fires_after_patience_on_the_bias_of_the_exploding_layer() {
        let mut d = GradNormAboveOne::default();
        let mut found = Vec::new();
        let norms = [0.5, 2.0, 0.5, 1.5, 3.0, 9.0, 27.0, 81.0, 243.0, 729.0];
        for (i, &n) in norms.iter().enumerate() {
            d.observe(
                &Observation::new(i as u64 + 1, 1.0, &step_stats(n)),
                &mut found,
            );
        }
        // Streak starts at step 4 (after the dip at step 3): steps 4..8 -> fires at 8, once.
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].step, found[0].layer.as_deref(), found[0].value),
            (8, Some("rnn.0.bias_hh"), 81.0)
        );
    }

    #[test]
    fn quiet_when_only_weight_gradients_are_large() {
        let mut d = GradNormAboveOne::default();
        let mut found = Vec::new();
        for step in 1..=100 {
            d.observe(&Observation::new(step, 1.0, &step_stats(0.9)), &mut found);
        }
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn falls_back_to_weights_without_biases() {
        let mut d = GradNormAboveOne {
            patience: 2,
            ..Default::default()
        };
        let mut found = Vec::new();
        let s = stats(vec![
            param("w1", Role::Weight, 0.1, 1.0),
            param("w2", Role::Weight, 4.0, 1.0),
        ]);
        for step in 1..=3 {
            d.observe(&Observation::new(step, 1.0, &s), &mut found);
        }
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].step, found[0].layer.as_deref()), (2, Some("w2")));
    }

    /// `norm > threshold` is strict: a norm exactly on the threshold, or one ULP below, does not
    /// count; one ULP above does (the same on a threshold that is not a power of two).
    #[test]
    fn boundary_is_strictly_above_the_threshold() {
        for threshold in [1.0f64, 0.7] {
            for (norm, fires) in [
                (threshold.next_down(), false),
                (threshold, false),
                (threshold.next_up(), true),
            ] {
                let mut d = GradNormAboveOne::new(threshold, 1, TensorSelection::All);
                let mut found = Vec::new();
                let s = stats(vec![param("w", Role::Weight, norm, 1.0)]);
                d.observe(&Observation::new(1, 1.0, &s), &mut found);
                assert_eq!(
                    found.len(),
                    fires as usize,
                    "norm {norm:e} vs threshold {threshold:e}"
                );
            }
        }
    }
}
