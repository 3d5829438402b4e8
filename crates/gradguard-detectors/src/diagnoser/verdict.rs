//! The verdict rules (see the [module documentation](super)): what is decisive, the verdict
//! and its rule in words, and where the trouble started.

use gradguard_core::{Event, Finding, Sign, Verdict};

use super::Diagnoser;
use crate::util::fmt_num;

/// What made the run exploding, first.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Decisive {
    Loss {
        step: u64,
        loss: f64,
        layer: Option<String>,
    },
    Grad {
        step: u64,
        layer: Option<String>,
    },
    Weights {
        step: u64,
        layer: String,
    },
    Wrecked {
        step: u64,
        layer: String,
        ratio: f64,
        radius: Option<(f64, String)>,
    },
}

impl Decisive {
    pub(super) fn step(&self) -> u64 {
        match self {
            Decisive::Loss { step, .. }
            | Decisive::Grad { step, .. }
            | Decisive::Weights { step, .. }
            | Decisive::Wrecked { step, .. } => *step,
        }
    }

    pub(super) fn phrase(&self) -> String {
        match self {
            Decisive::Loss { loss, .. } => format!("the loss became {}", fmt_num(*loss)),
            Decisive::Grad { layer: Some(l), .. } => {
                format!("the gradient of `{l}` became non-finite")
            }
            Decisive::Grad { layer: None, .. } => "the gradients became non-finite".to_string(),
            Decisive::Weights { layer, .. } => {
                format!("the weights of `{layer}` became non-finite")
            }
            Decisive::Wrecked { layer, ratio, .. } => {
                format!(
                    "an update moved `{layer}` by {} times its norm",
                    fmt_num(*ratio)
                )
            }
        }
    }
}

impl Diagnoser {
    /// Rule 1: records the first non-finite event and the first wrecked update, each with
    /// the precursor streak in progress.
    pub(super) fn check_decisive(&mut self, e: &Event, grads_bad: bool) {
        if self.nonfinite.is_none() {
            let bad_grad_layer = || {
                e.layers
                    .iter()
                    .find(|l| l.grad_nonfinite > 0 || !l.grad_norm.is_finite())
                    .map(|l| l.name.clone())
            };
            let d = if !e.loss.is_finite() {
                Some(Decisive::Loss {
                    step: e.step,
                    loss: e.loss,
                    layer: if grads_bad { bad_grad_layer() } else { None },
                })
            } else if grads_bad {
                Some(Decisive::Grad {
                    step: e.step,
                    layer: bad_grad_layer(),
                })
            } else {
                e.layers
                    .iter()
                    .find(|l| !l.weight_norm.is_finite())
                    .map(|l| Decisive::Weights {
                        step: e.step,
                        layer: l.name.clone(),
                    })
            };
            if let Some(d) = d {
                self.nonfinite = Some((d, self.streak_first.clone()));
            }
        }
        if self.wreck.is_none() {
            if let Some((ratio, _, layer)) = &self.max_ratio {
                let radius = self
                    .max_radius
                    .as_ref()
                    .filter(|r| r.0 >= self.rules.wrecked_radius);
                let wrecked = *ratio >= self.rules.wrecked_update_ratio
                    || (*ratio >= self.rules.wrecked_ratio_with_radius && radius.is_some());
                if wrecked {
                    let d = Decisive::Wrecked {
                        step: e.step,
                        layer: layer.clone(),
                        ratio: *ratio,
                        radius: radius.map(|r| (r.0, r.2.clone())),
                    };
                    self.wreck = Some((d, self.streak_first.clone()));
                }
            }
        }
    }

    /// A precursor finding in words, with its figure, tensor and step.
    pub(super) fn describe_precursor(f: &Finding) -> String {
        let what = match f.sign {
            Sign::GradSpike => format!("a gradient spike (norm {})", fmt_num(f.value)),
            Sign::GradNormAboveOne => format!(
                "the error gradient staying above {} (norm {})",
                fmt_num(f.threshold),
                fmt_num(f.value)
            ),
            Sign::GradGrowthAcrossLayers => format!(
                "gradient growth of {}x per layer or time step",
                fmt_num(f.value)
            ),
            Sign::RecurrentRadiusAboveOne => {
                format!("a recurrent spectral radius of {}", fmt_num(f.value))
            }
            Sign::WeightsChangeLarge => {
                format!("an update of {} times the weights' norm", fmt_num(f.value))
            }
            Sign::LossUnstable => format!("a loss swing of {}%", fmt_num(f.value * 100.0)),
            other => other.describe().to_string(),
        };
        match &f.layer {
            Some(l) => format!("{what} on `{l}` at step {}", f.step),
            None => format!("{what} at step {}", f.step),
        }
    }

    /// The verdict, its rule in words, and (for suspect runs) the finding behind it.
    pub(super) fn verdict(&self) -> (Verdict, String, Option<Finding>) {
        if let Some((d, _)) = self.decisive() {
            let rule = match d {
                Decisive::Loss { step, .. } => format!("{} at step {step}; a non-finite loss is decisive", d.phrase()),
                Decisive::Grad { step, .. } => format!("{} at step {step}; a non-finite gradient is decisive", d.phrase()),
                Decisive::Weights { step, .. } => format!("{} by step {step}; non-finite weights are decisive", d.phrase()),
                Decisive::Wrecked { step, radius, .. } => match radius {
                    Some((r, l)) => format!(
                        "the weights were wrecked without NaN: {} (by step {step}, >= {}) and the recurrent weight `{l}` reached spectral radius {} (>= {})",
                        d.phrase(),
                        fmt_num(self.rules.wrecked_ratio_with_radius),
                        fmt_num(*r),
                        fmt_num(self.rules.wrecked_radius)
                    ),
                    None => format!(
                        "the weights were wrecked without NaN: {} (by step {step}, >= {})",
                        d.phrase(),
                        fmt_num(self.rules.wrecked_update_ratio)
                    ),
                },
            };
            return (Verdict::Exploding, rule, None);
        }
        let wcl = self.acc(Sign::WeightsChangeLarge);
        if let Some(f) = &wcl.first {
            let rule = format!(
                "no decisive sign, but updates moved the weights by more than {} times their norm (first `{}` at step {}, up to {}); healthy runs stay below about 0.25",
                fmt_num(f.threshold),
                f.layer.as_deref().unwrap_or("?"),
                f.step,
                fmt_num(wcl.max_value.unwrap_or(f.value))
            );
            return (Verdict::Suspect, rule, Some(f.clone()));
        }
        let unstable = self.acc(Sign::LossUnstable);
        let fraction = if self.steps > 0 {
            unstable.count as f64 / self.steps as f64
        } else {
            0.0
        };
        if fraction > self.rules.suspect_unstable_fraction {
            let rule = format!(
                "no decisive sign, but the loss swung at {} of {} steps ({}%, above {}%; healthy runs show about 3%)",
                unstable.count,
                self.steps,
                fmt_num(fraction * 100.0),
                fmt_num(self.rules.suspect_unstable_fraction * 100.0)
            );
            return (Verdict::Suspect, rule, unstable.first.clone());
        }
        if let Some((r, step, layer)) = &self.max_radius {
            if *r >= self.rules.wrecked_radius {
                let rule = format!(
                    "no decisive sign, but the recurrent weight `{layer}` reached spectral radius {} at step {step} (>= {})",
                    fmt_num(*r),
                    fmt_num(self.rules.wrecked_radius)
                );
                return (
                    Verdict::Suspect,
                    rule,
                    self.acc(Sign::RecurrentRadiusAboveOne).first.clone(),
                );
            }
        }
        if self.seen(Sign::LossNotConverging) {
            let companion = [
                Sign::GradSpike,
                Sign::WeightsChangeLarge,
                Sign::LossUnstable,
                Sign::GradGrowthAcrossLayers,
            ]
            .into_iter()
            .find(|&s| self.seen(s));
            if let Some(c) = companion {
                let rule = format!(
                    "no decisive sign, but the loss did not converge and {} ({})",
                    c.describe(),
                    c.as_str()
                );
                return (Verdict::Suspect, rule, self.acc(c).first.clone());
            }
        }
        if let Some(l) = self.learning.filter(|l| !l.learned()) {
            let rule = format!(
                "no sign of exploding gradients decided the run, but it did not learn: {}",
                l.describe()
            );
            return (Verdict::NotLearning, rule, None);
        }
        let warnings: Vec<String> = self
            .order
            .iter()
            .filter(|&&s| self.seen(s))
            .map(|&s| format!("{} x{}", s.as_str(), self.acc(s).count))
            .collect();
        let mut rule = if warnings.is_empty() {
            "no sign of exploding gradients".to_string()
        } else {
            format!(
                "no decisive sign; the warnings seen ({}) are within what healthy runs show",
                warnings.join(", ")
            )
        };
        match &self.learning {
            Some(l) => rule.push_str(&format!("; it learned: {}", l.describe())),
            None => rule.push_str("; whether it learned was not measured"),
        }
        (Verdict::Healthy, rule, None)
    }

    /// Where the trouble started (see the module documentation's *Origin*).
    pub(super) fn origin(&self, verdict: Verdict, suspect_by: Option<&Finding>) -> Option<String> {
        match (self.decisive(), verdict) {
            (Some((d, precursor)), _) => {
                let step = d.step();
                let layer = match d {
                    Decisive::Loss { layer: Some(l), .. } => {
                        format!(" (first non-finite gradient in `{l}`)")
                    }
                    _ => String::new(),
                };
                Some(match precursor {
                    Some(p) if p.step < step => format!(
                        "{}, {} step(s) before {} (step {step}){layer}",
                        Self::describe_precursor(p),
                        step - p.step,
                        d.phrase()
                    ),
                    Some(p) => format!(
                        "{}, at the same step as {}{layer}",
                        Self::describe_precursor(p),
                        d.phrase()
                    ),
                    None => format!("{} at step {step}{layer}, with no earlier sign", d.phrase()),
                })
            }
            (None, Verdict::Suspect) => suspect_by.map(Self::describe_precursor),
            _ => None,
        }
    }
}
