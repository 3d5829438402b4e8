//! `grad_nonfinite`: a gradient holds NaN or infinity; names the first such tensor.
//!
//! **Rule.** Fires at every step whose gradients hold a NaN, `+inf` or `-inf` value
//! (`obs.stats.grad_nonfinite > 0`, counted exactly by the statistics pass), so its count is
//! the number of such steps. The finding names the first tensor in view order with a
//! non-finite gradient; `value` is the number of non-finite gradient values over all tensors,
//! `threshold` is 0.
//!
//! **Parameters.** None.
//!
//! This sign is decisive, like a non-finite loss or weight. It is often the first of the
//! three: gradguard computes the loss in f64, so an MSE on f32 predictions near 1e28 stays
//! finite (1e56) while the f32 gradients of the backward pass already overflow; PyTorch's f32
//! loss would read `inf` at that step. Without a remedy that withholds the update
//! (`skip_nonfinite`, or a clipping remedy's default `on_nonfinite = "skip_step"`), the
//! weights turn non-finite when it is applied.

use gradguard_core::{describe_plugin, Detector, Family, Finding, Observation, PluginInfo, Sign};
use serde::{Deserialize, Serialize};

use crate::util::fmt_num;

/// Fires when a gradient is NaN or infinite. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradNonfinite {}

#[typetag::serde(name = "grad_nonfinite")]
impl Detector for GradNonfinite {
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let count = obs.stats.grad_nonfinite;
        if count == 0 {
            return;
        }
        let first = obs.stats.first_nonfinite_grad();
        let loss = if obs.loss.is_finite() {
            format!("the loss is still finite ({})", fmt_num(obs.loss))
        } else {
            format!("the loss is {}", fmt_num(obs.loss))
        };
        let message = match first {
            Some(p) => format!(
                "{count} gradient value(s) are NaN or infinite at step {}, first in `{}`; {loss}",
                obs.step, p.name
            ),
            None => format!(
                "{count} gradient value(s) are NaN or infinite at step {}; {loss}",
                obs.step
            ),
        };
        findings.push(Finding::new(
            Sign::GradNonfinite,
            obs.step,
            first.map(|p| p.name.as_str()),
            count as f64,
            0.0,
            message,
        ));
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "grad_nonfinite",
    summary: "Fires at every step whose gradients hold NaN or infinity, naming the first such tensor (often a step before the loss turns non-finite).",
    params: &[],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::Role;

    /// Gradients overflow at step 4 while the loss is still finite, and stay bad at step 5
    /// with a NaN loss: it fires at both, naming the bias (the first bad tensor).
    #[test]
    fn fires_at_each_step_with_a_nonfinite_gradient_and_names_the_tensor() {
        let mut d = GradNonfinite::default();
        let mut found = Vec::new();
        let losses = [3.0, 2.0, 9e40, 8e56, f64::NAN];
        for (i, &loss) in losses.iter().enumerate() {
            let step = i as u64 + 1;
            let g = if step >= 4 { f64::INFINITY } else { 1e30 };
            let mut s = stats(vec![
                param("l.weight", Role::Weight, 1.0, 1.0),
                param("l.bias", Role::Bias, g, 1.0),
            ]);
            if step >= 4 {
                s.params[1].grad_nonfinite = 3;
                s.refresh_totals();
            }
            d.observe(&Observation::new(step, loss, &s), &mut found);
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].step, 4);
        assert_eq!(found[0].layer.as_deref(), Some("l.bias"));
        assert_eq!(found[0].value, 3.0);
        assert_eq!(found[0].threshold, 0.0);
        assert!(
            found[0].message.contains("still finite"),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].step, 5);
        assert!(
            found[1].message.contains("the loss is NaN"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn quiet_on_finite_gradients_even_when_the_loss_is_not() {
        let mut d = GradNonfinite::default();
        let mut found = Vec::new();
        for step in 1..=50u64 {
            let s = stats(vec![param("a", Role::Weight, 1e30, 1.0)]);
            d.observe(&Observation::new(step, f64::INFINITY, &s), &mut found);
        }
        assert!(found.is_empty());
    }
}
