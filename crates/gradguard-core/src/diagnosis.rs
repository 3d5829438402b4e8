//! The end-of-run diagnosis and the run summary (`summary.json`).

use serde::{Deserialize, Serialize};

use crate::cure::Cure;
use crate::sign::Sign;

/// The overall verdict of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No decisive sign, and the warnings are within what healthy runs show.
    Healthy,
    /// Warnings that healthy runs rarely show, but no decisive sign.
    Suspect,
    /// A decisive sign: the loss or the weights became non-finite, or were wrecked.
    Exploding,
    /// No sign decided the run, but it did not learn: its final loss on the whole training
    /// set was not clearly below the loss of the best constant predictor (see
    /// [`Learning::learned`]).
    NotLearning,
}

impl Verdict {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Suspect => "suspect",
            Verdict::Exploding => "exploding",
            Verdict::NotLearning => "not_learning",
        }
    }

    /// How bad the verdict is, for "worst over seeds": healthy 0, not_learning 1, suspect 2,
    /// exploding 3.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::NotLearning => 1,
            Verdict::Suspect => 2,
            Verdict::Exploding => 3,
        }
    }
}

/// Did the run learn? The final loss over the whole training set against the loss of the
/// best constant predictor on the training targets (the mean for MSE, the class prior for
/// cross-entropy).
///
/// Rule: the run learned when `final_train_loss < margin * baseline_loss`, with `margin`
/// 0.5 by default ([`Learning::DEFAULT_MARGIN`]). For an MSE regression that is R² > 0.5 on
/// the training set; for cross-entropy it is half the prior's entropy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Mean loss over the whole training set after the last update.
    pub final_train_loss: f64,
    /// The best constant predictor's loss on the training set.
    pub baseline_loss: f64,
    /// The fraction of the baseline the final loss must be below.
    pub margin: f64,
}

impl Learning {
    /// The default margin: below half the baseline.
    pub const DEFAULT_MARGIN: f64 = 0.5;

    /// Whether the run learned (a non-finite loss never did).
    pub fn learned(&self) -> bool {
        self.final_train_loss.is_finite()
            && self.final_train_loss < self.margin * self.baseline_loss
    }

    /// The rule and its numbers, in words.
    pub fn describe(&self) -> String {
        format!(
            "final loss over the whole training set {} against {} for the best constant predictor (learned means below {}x that)",
            crate::float::fmt_short(self.final_train_loss),
            crate::float::fmt_short(self.baseline_loss),
            crate::float::fmt_short(self.margin)
        )
    }
}

/// What a measured cure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CureStatus {
    /// Every seed run ended healthy (and so learned).
    Works,
    /// Some seeds ended healthy, not all.
    Partly,
    /// No seed ended healthy.
    Fails,
    /// Not run: advice from the signs only.
    Untested,
}

impl CureStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CureStatus::Works => "works",
            CureStatus::Partly => "partly",
            CureStatus::Fails => "fails",
            CureStatus::Untested => "untested",
        }
    }
}

/// The measurement behind a prescription (or why there is none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What the runs showed.
    pub status: CureStatus,
    /// Seeds that ended healthy.
    pub seeds_healthy: usize,
    /// Seeds run (0 when untested).
    pub seeds_run: usize,
    /// Median held-out loss over the seeds run (in the variant's own units).
    #[serde(default, with = "crate::float::lossy_opt")]
    pub median_test_loss: Option<f64>,
    /// Median over the seeds of held-out loss / the held-out loss of the best constant
    /// predictor (scale-free, so a variant that rescales the targets compares fairly).
    #[serde(default, with = "crate::float::lossy_opt")]
    pub median_test_loss_vs_baseline: Option<f64>,
    /// The same ratio for the diagnosed run's spec without the cure, over the same seeds,
    /// when it was measured.
    #[serde(default, with = "crate::float::lossy_opt")]
    pub without_cure_vs_baseline: Option<f64>,
    /// How it was measured, or why it was not.
    pub note: String,
}

impl Evidence {
    /// Advice with no run behind it, and why.
    pub fn untested(why: impl Into<String>) -> Evidence {
        Evidence {
            status: CureStatus::Untested,
            seeds_healthy: 0,
            seeds_run: 0,
            median_test_loss: None,
            median_test_loss_vs_baseline: None,
            without_cure_vs_baseline: None,
            note: why.into(),
        }
    }

    /// One line: `works: 3/3 seeds healthy, held-out loss 0.012x the constant predictor's`.
    pub fn describe(&self) -> String {
        if self.status == CureStatus::Untested {
            return format!("untested: {}", self.note);
        }
        let mut s = format!(
            "{}: {}/{} seeds healthy",
            self.status.as_str(),
            self.seeds_healthy,
            self.seeds_run
        );
        if let Some(r) = self.median_test_loss_vs_baseline {
            s.push_str(&format!(
                ", median held-out loss {}x the constant predictor's",
                crate::float::fmt_short(r)
            ));
            if let Some(w) = self.without_cure_vs_baseline {
                s.push_str(&format!(" ({}x without it)", crate::float::fmt_short(w)));
            }
        } else if self.seeds_run > 0 {
            s.push_str(", no finite held-out loss");
        }
        s
    }
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence::untested("not run")
    }
}

/// One line of the checklist: a sign, whether it was seen, when first, how often, where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignSummary {
    /// The sign.
    pub sign: Sign,
    /// Whether it was seen at all.
    pub seen: bool,
    /// The first step it was seen at.
    pub first_step: Option<u64>,
    /// How many findings named it.
    pub count: u64,
    /// The layer of its first finding, when one applies.
    pub layer: Option<String>,
    /// The sentence of its first finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
}

/// A cure, why it is prescribed, and what it did when it was run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prescription {
    /// The cure (written as its label, e.g. `clip_global_norm`, `truncated_bptt=10`).
    pub remedy: Cure,
    /// Why, from what was seen.
    pub reason: String,
    /// The measurement behind it (`untested` until verification or `compare` ran it).
    #[serde(default)]
    pub evidence: Evidence,
}

impl Prescription {
    /// A prescription from the signs, not yet run.
    pub fn untested(remedy: Cure, reason: impl Into<String>) -> Prescription {
        Prescription {
            remedy,
            reason: reason.into(),
            evidence: Evidence::untested("not run yet"),
        }
    }
}

/// What happened in a run, in words and in fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule that produced the verdict, in words.
    pub rule: String,
    /// Every sign, classic ones first: seen or not, first step, count, layer.
    pub checklist: Vec<SignSummary>,
    /// Where it started: the first layer and step implicated and the precursor, in words.
    pub origin: Option<String>,
    /// Cures, most fitting first.
    pub prescriptions: Vec<Prescription>,
    /// The first step whose loss or gradients were non-finite.
    pub first_nonfinite_step: Option<u64>,
    /// The largest global gradient norm seen (before remedies).
    #[serde(with = "crate::float::lossy")]
    pub max_grad_norm: f64,
    /// The step of the event the verdict rests on: an exploding run's decisive step (the
    /// first non-finite loss, gradient or weight, or the update that wrecked the weights), or
    /// the first finding that made a run suspect. `None` for other verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict_step: Option<u64>,
}

impl Diagnosis {
    /// The checklist entry of `sign`, if present.
    pub fn sign(&self, sign: Sign) -> Option<&SignSummary> {
        self.checklist.iter().find(|s| s.sign == sign)
    }

    /// The diagnosis in plain words, several lines, for the console.
    pub fn to_plain_words(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Verdict: {} ({})", self.verdict.as_str(), self.rule);
        let _ = writeln!(out, "Signs of exploding gradients:");
        for s in &self.checklist {
            let mark = if s.seen { "[x]" } else { "[ ]" };
            let _ = write!(
                out,
                "  {mark} {:<27} {}",
                s.sign.as_str(),
                s.sign.describe()
            );
            if s.seen {
                let _ = write!(out, " - first at step {}", s.first_step.unwrap_or(0));
                if let Some(l) = &s.layer {
                    let _ = write!(out, " on {l}");
                }
                let _ = write!(out, ", {} time(s)", s.count);
            }
            out.push('\n');
        }
        if let Some(o) = &self.origin {
            let _ = writeln!(out, "Where it started: {o}");
        }
        if !self.prescriptions.is_empty() {
            let _ = writeln!(out, "What to try:");
            for (i, p) in self.prescriptions.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {}. {} [{}]: {}",
                    i + 1,
                    p.remedy,
                    p.evidence.describe(),
                    p.reason
                );
            }
        }
        out
    }
}

/// One line of `summary.json`'s `signs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummarySign {
    /// The sign.
    pub sign: Sign,
    /// First step seen.
    pub first_step: u64,
    /// How many findings.
    pub count: u64,
    /// Layer of the first finding.
    pub layer: Option<String>,
}

/// One line of `summary.json`'s `remedies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRemedy {
    /// The remedy's kind.
    pub kind: String,
    /// In how many steps it changed gradients or asked for an action.
    pub activations: u64,
}

/// The stable contents of `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The experiment's name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Optimiser updates attempted.
    pub steps: u64,
    /// Epochs run.
    pub epochs: u64,
    /// Whether a signal (Ctrl-C, SIGTERM) ended the run early: the figures and the verdict
    /// are those so far.
    #[serde(default)]
    pub interrupted: bool,
    /// Final loss over the whole training set, after the last update (null when not finite
    /// or not measured). Older summaries held the last minibatch's loss here.
    pub final_train_loss: Option<f64>,
    /// Final held-out loss (null when not finite or no held-out split).
    pub final_test_loss: Option<f64>,
    /// The loss of the last training minibatch (or truncated-BPTT window), before its update.
    #[serde(default)]
    pub last_batch_loss: Option<f64>,
    /// The best constant predictor's loss on the training set (see [`Learning`]).
    #[serde(default)]
    pub baseline_loss: Option<f64>,
    /// The same constant predictor's loss on the held-out set.
    #[serde(default)]
    pub baseline_test_loss: Option<f64>,
    /// Accuracy over the whole training set (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    /// Accuracy over the held-out set (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// First step with a non-finite loss or gradient.
    pub first_nonfinite_step: Option<u64>,
    /// Largest global gradient norm (null when not finite... never: non-finite written as a string).
    #[serde(with = "crate::float::lossy")]
    pub max_grad_norm: f64,
    /// The signs seen.
    pub signs: Vec<SummarySign>,
    /// The remedies and how often each acted.
    pub remedies: Vec<SummaryRemedy>,
    /// The prescriptions.
    pub prescriptions: Vec<Prescription>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rule_is_below_half_the_baseline() {
        let l = |loss: f64| Learning {
            final_train_loss: loss,
            baseline_loss: 100.0,
            margin: Learning::DEFAULT_MARGIN,
        };
        assert!(l(49.9).learned());
        assert!(!l(50.0).learned());
        assert!(!l(f64::NAN).learned());
        assert!(!l(f64::INFINITY).learned());
        assert!(l(49.9).describe().contains("49.9 against 100"));
    }

    #[test]
    fn evidence_in_words() {
        let e = Evidence {
            status: CureStatus::Partly,
            seeds_healthy: 2,
            seeds_run: 3,
            median_test_loss: Some(12.0),
            median_test_loss_vs_baseline: Some(0.012),
            without_cure_vs_baseline: Some(3.0),
            note: String::new(),
        };
        assert_eq!(
            e.describe(),
            "partly: 2/3 seeds healthy, median held-out loss 0.012x the constant predictor's (3x without it)"
        );
        assert_eq!(
            Evidence::untested("the run took too long").describe(),
            "untested: the run took too long"
        );
        assert_eq!(Verdict::NotLearning.as_str(), "not_learning");
        assert!(Verdict::Exploding.severity() > Verdict::Suspect.severity());
        assert!(Verdict::Suspect.severity() > Verdict::NotLearning.severity());
    }

    #[test]
    fn plain_words_list_every_sign() {
        let d = Diagnosis {
            verdict: Verdict::Exploding,
            rule: "the loss became non-finite at step 9".into(),
            checklist: Sign::ALL
                .iter()
                .map(|&s| SignSummary {
                    sign: s,
                    seen: s == Sign::LossNonfinite,
                    first_step: (s == Sign::LossNonfinite).then_some(9),
                    count: (s == Sign::LossNonfinite) as u64,
                    layer: None,
                    first_message: None,
                })
                .collect(),
            origin: Some("a gradient spike on layers.0.weight at step 5".into()),
            prescriptions: vec![Prescription::untested(
                Cure::Remedy("clip_global_norm".into()),
                "bounds the step",
            )],
            first_nonfinite_step: Some(9),
            max_grad_norm: 1e33,
            verdict_step: Some(9),
        };
        let text = d.to_plain_words();
        assert!(text.starts_with("Verdict: exploding"));
        assert!(text.contains("[x] loss_nonfinite"));
        assert!(text.contains("first at step 9"));
        assert!(text.contains("[ ] loss_unstable"));
        assert!(text.contains("1. clip_global_norm [untested: not run yet]"));
        assert_eq!(d.sign(Sign::LossNonfinite).map(|s| s.count), Some(1));
    }
}
