//! `weights_nonfinite`: a weight became NaN or infinite; names the tensor.
//!
//! **Rule.** A tensor is bad at a step when `obs.stats.params[i].weight_nonfinite > 0` (the
//! weights this step's gradients were computed at) or, when `obs.update` is present, when
//! `obs.update.params[i].weight_nonfinite > 0` (the weights right after the previous update).
//! The detector fires when a tensor turns bad (once; it re-arms when the tensor is finite
//! again, e.g. after a rollback). `value` is the tensor's weight L2 norm (NaN or inf),
//! `threshold` is `inf`.
//!
//! **Parameters.** None.
//!
//! This sign is decisive: a non-finite weight means the run is broken. In the reference runs
//! it appears 0-1 updates after the loss became non-finite, when that update was applied.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, PluginInfo, PluginState, Sign,
    StateError,
};
use serde::{Deserialize, Serialize};

use crate::util::fmt_num;

/// Fires when a tensor's weights become non-finite. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsNonfinite {
    #[serde(skip)]
    bad: Vec<bool>,
}

#[typetag::serde(name = "weights_nonfinite")]
impl Detector for WeightsNonfinite {
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let params = &obs.stats.params;
        if self.bad.len() != params.len() {
            self.bad.clear();
            self.bad.resize(params.len(), false);
        }
        for (i, p) in params.iter().enumerate() {
            let after_update = obs
                .update
                .and_then(|u| u.params.get(i))
                .map(|u| u.weight_nonfinite > 0)
                .unwrap_or(false);
            let bad = p.weight_nonfinite > 0 || after_update;
            if bad && !self.bad[i] {
                let norm = p.weight_norm();
                findings.push(Finding::new(
                    Sign::WeightsNonfinite,
                    obs.step,
                    Some(&p.name),
                    norm,
                    f64::INFINITY,
                    format!(
                        "the weights of `{}` became NaN or infinite by step {} (weight norm {})",
                        p.name,
                        obs.step,
                        fmt_num(norm)
                    ),
                ));
            }
            self.bad[i] = bad;
        }
    }

    fn reset(&mut self) {
        self.bad.iter_mut().for_each(|b| *b = false);
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.bad).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.bad = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "weights_nonfinite",
    summary: "Fires when a tensor's weights become NaN or infinite, naming the tensor.",
    params: &[],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats, update};
    use gradguard_core::Role;

    #[test]
    fn reset_names_a_tensor_that_is_still_bad_again() {
        let mut d = WeightsNonfinite::default();
        let s = stats(vec![param("w", Role::Weight, 1.0, f64::NAN)]);
        let mut found = Vec::new();
        d.observe(&Observation::new(1, 1.0, &s), &mut found);
        d.observe(&Observation::new(2, 1.0, &s), &mut found);
        assert_eq!(found.len(), 1, "once per turn: {found:?}");
        d.reset();
        d.observe(&Observation::new(3, 1.0, &s), &mut found);
        assert_eq!(found.len(), 2, "after a reset it is new again: {found:?}");
    }

    #[test]
    fn names_the_tensor_once_when_it_turns_bad() {
        let mut d = WeightsNonfinite::default();
        let mut found = Vec::new();
        for step in 1..=8u64 {
            let w2 = match step {
                5..=6 => f64::NAN,
                8 => f64::INFINITY,
                _ => 2.0,
            };
            let s = stats(vec![
                param("l1.weight", Role::Weight, 1.0, 1.0),
                param("l2.weight", Role::Weight, 1.0, w2),
            ]);
            d.observe(&Observation::new(step, 1.0, &s), &mut found);
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].step, found[0].layer.as_deref()),
            (5, Some("l2.weight"))
        );
        assert!(found[0].value.is_nan());
        assert_eq!(found[1].step, 8);
    }

    #[test]
    fn reads_the_update_too() {
        let mut d = WeightsNonfinite::default();
        let mut found = Vec::new();
        let s = stats(vec![param("a", Role::Weight, 1.0, 1.0)]);
        let u = update(3, &[("a", f64::INFINITY)]);
        let mut obs = Observation::new(4, 1.0, &s);
        obs.update = Some(&u);
        d.observe(&obs, &mut found);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].layer.as_deref(), Some("a"));
    }

    #[test]
    fn quiet_on_finite_weights() {
        let mut d = WeightsNonfinite::default();
        let mut found = Vec::new();
        for step in 1..=50u64 {
            let s = stats(vec![
                param("a", Role::Weight, 1e30, 1e30),
                param("b", Role::Bias, 0.0, 0.0),
            ]);
            d.observe(&Observation::new(step, f64::NAN, &s), &mut found);
        }
        assert!(found.is_empty());
    }
}
