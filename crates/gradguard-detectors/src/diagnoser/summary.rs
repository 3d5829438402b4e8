//! [`run_summary`]: `summary.json`'s contents from a diagnosis and the run's figures.

use gradguard_core::{Diagnosis, RunSummary, SummaryRemedy, SummarySign};

/// Figures of a run that the diagnosis does not hold, for [`run_summary`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    /// The experiment's name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Optimiser updates attempted.
    pub steps: u64,
    /// Epochs run.
    pub epochs: u64,
    /// Whether a signal ended the run early.
    pub interrupted: bool,
    /// Final loss over the whole training set (written as null when not finite).
    pub final_train_loss: Option<f64>,
    /// Final held-out loss (written as null when not finite).
    pub final_test_loss: Option<f64>,
    /// The last minibatch's loss.
    pub last_batch_loss: Option<f64>,
    /// The best constant predictor's loss on the training set.
    pub baseline_loss: Option<f64>,
    /// The best constant predictor's loss on the held-out set.
    pub baseline_test_loss: Option<f64>,
    /// Accuracy over the training set (classification).
    pub train_accuracy: Option<f64>,
    /// Accuracy over the held-out set (classification).
    pub test_accuracy: Option<f64>,
}

/// Builds `summary.json`'s contents from a diagnosis, the run's figures and the remedies'
/// activation counts ([`Diagnoser::remedy_activations`](super::Diagnoser::remedy_activations)).
pub fn run_summary(
    diagnosis: &Diagnosis,
    figures: &RunFigures,
    remedies: Vec<SummaryRemedy>,
) -> RunSummary {
    RunSummary {
        name: figures.name.clone(),
        seed: figures.seed,
        steps: figures.steps,
        epochs: figures.epochs,
        interrupted: figures.interrupted,
        final_train_loss: figures.final_train_loss.filter(|l| l.is_finite()),
        final_test_loss: figures.final_test_loss.filter(|l| l.is_finite()),
        last_batch_loss: figures.last_batch_loss.filter(|l| l.is_finite()),
        baseline_loss: figures.baseline_loss.filter(|l| l.is_finite()),
        baseline_test_loss: figures.baseline_test_loss.filter(|l| l.is_finite()),
        train_accuracy: figures.train_accuracy,
        test_accuracy: figures.test_accuracy,
        verdict: diagnosis.verdict,
        first_nonfinite_step: diagnosis.first_nonfinite_step,
        max_grad_norm: diagnosis.max_grad_norm,
        signs: diagnosis
            .checklist
            .iter()
            .filter(|s| s.seen)
            .map(|s| SummarySign {
                sign: s.sign,
                first_step: s.first_step.unwrap_or(0),
                count: s.count,
                layer: s.layer.clone(),
            })
            .collect(),
        remedies,
        prescriptions: diagnosis.prescriptions.clone(),
    }
}
