//! The end-of-run diagnosis and the run summary (`summary.json`).

use serde::{Deserialize, Serialize};

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
}

impl Verdict {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Suspect => "suspect",
            Verdict::Exploding => "exploding",
        }
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

/// A cure, and why it is prescribed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prescription {
    /// The remedy's kind or structural cure (e.g. `clip_global_norm`, `truncated_bptt`).
    pub remedy: String,
    /// Why, from what was seen (and measured, where `compare` ran).
    pub reason: String,
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
                let _ = writeln!(out, "  {}. {}: {}", i + 1, p.remedy, p.reason);
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
    /// Final training loss (null when not finite).
    pub final_train_loss: Option<f64>,
    /// Final held-out loss (null when not finite or no held-out split).
    pub final_test_loss: Option<f64>,
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
            prescriptions: vec![Prescription {
                remedy: "clip_global_norm".into(),
                reason: "bounds the step".into(),
            }],
            first_nonfinite_step: Some(9),
            max_grad_norm: 1e33,
        };
        let text = d.to_plain_words();
        assert!(text.starts_with("Verdict: exploding"));
        assert!(text.contains("[x] loss_nonfinite"));
        assert!(text.contains("first at step 9"));
        assert!(text.contains("[ ] loss_unstable"));
        assert!(text.contains("1. clip_global_norm"));
        assert_eq!(d.sign(Sign::LossNonfinite).map(|s| s.count), Some(1));
    }
}
