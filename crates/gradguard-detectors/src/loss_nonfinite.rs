//! `loss_nonfinite`: the step's loss is NaN or infinite.
//!
//! **Rule.** Fires at every step whose loss is NaN, `+inf` or `-inf` (so its count is the
//! number of non-finite steps). `value` is the loss, `threshold` is `inf` (a finite loss is
//! below it). When gradients are non-finite too, the finding names the first tensor holding
//! a non-finite gradient; otherwise it has no layer (in the classic exploding regression the
//! loss overflows while the gradients are still finite, norm ~1e33, and the weights turn
//! non-finite only when that update is applied).
//!
//! **Parameters.** None.

use gradguard_core::{describe_plugin, Detector, Family, Finding, Observation, PluginInfo, Sign};
use serde::{Deserialize, Serialize};

use crate::util::fmt_num;

/// Fires when the loss is NaN or infinite. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossNonfinite {}

#[typetag::serde(name = "loss_nonfinite")]
impl Detector for LossNonfinite {
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        if obs.loss.is_finite() {
            return;
        }
        let bad = obs.stats.first_nonfinite_grad();
        let message = match bad {
            Some(p) => format!(
                "the loss is {} at step {}; {} gradient value(s) are non-finite, first in `{}`",
                fmt_num(obs.loss),
                obs.step,
                obs.stats.grad_nonfinite,
                p.name
            ),
            None => format!(
                "the loss is {} at step {} while the gradients are still finite (global norm {})",
                fmt_num(obs.loss),
                obs.step,
                fmt_num(obs.stats.grad_norm)
            ),
        };
        findings.push(Finding::new(
            Sign::LossNonfinite,
            obs.step,
            bad.map(|p| p.name.as_str()),
            obs.loss,
            f64::INFINITY,
            message,
        ));
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "loss_nonfinite",
    summary: "Fires at every step whose loss is NaN or infinite (names the first tensor with a non-finite gradient, if any).",
    params: &[],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::Role;

    #[test]
    fn fires_at_the_first_inf_loss_and_names_the_nonfinite_tensor() {
        let mut d = LossNonfinite::default();
        let mut found = Vec::new();
        let losses = [3.0, 2.5, 2.0, f64::INFINITY, f64::NAN];
        for (i, &loss) in losses.iter().enumerate() {
            let g = if i == 4 { f64::NAN } else { 1e33 };
            let s = stats(vec![
                param("l.weight", Role::Weight, 1.0, 1.0),
                param("l.bias", Role::Bias, g, 1.0),
            ]);
            d.observe(&Observation::new(i as u64 + 1, loss, &s), &mut found);
        }
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].step, found[0].layer.as_deref()), (4, None));
        assert!(
            found[0].message.contains("still finite"),
            "{}",
            found[0].message
        );
        assert_eq!(
            (found[1].step, found[1].layer.as_deref()),
            (5, Some("l.bias"))
        );
        assert!(found[1].value.is_nan());
    }

    #[test]
    fn quiet_on_finite_losses() {
        let mut d = LossNonfinite::default();
        let mut found = Vec::new();
        let s = stats(vec![param("w", Role::Weight, 1e30, 1.0)]);
        for step in 1..=100 {
            d.observe(&Observation::new(step, 1e300 / step as f64, &s), &mut found);
        }
        assert!(found.is_empty());
    }
}
