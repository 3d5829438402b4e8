//! Error types shared by the plugin traits.

use std::path::PathBuf;

/// Errors from building core structures.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A parameter's weights, gradients and shape disagree in length.
    #[error("parameter `{name}` has shape {shape:?} but {weights} weights and {grads} gradients")]
    ShapeMismatch {
        /// The parameter's name.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// Number of weight values given.
        weights: usize,
        /// Number of gradient values given.
        grads: usize,
    },
}

/// Errors a remedy can raise. A remedy that cannot make a step safe says so instead of
/// passing bad values on.
#[derive(Debug, thiserror::Error)]
pub enum RemedyError {
    /// Non-finite gradients were found and the policy is `error`.
    #[error("step {step}: {count} non-finite gradient value(s) in `{tensor}` (remedy `{remedy}`, on_nonfinite = \"error\")")]
    NonFinite {
        /// The remedy's kind.
        remedy: String,
        /// The step.
        step: u64,
        /// The first tensor holding non-finite values.
        tensor: String,
        /// How many non-finite values it holds.
        count: usize,
    },
    /// A remedy's parameters are invalid (e.g. a negative `max_norm`).
    #[error("remedy `{remedy}`: {message}")]
    Invalid {
        /// The remedy's kind.
        remedy: String,
        /// What is wrong.
        message: String,
    },
    /// The remedy gave up and asks the run to stop, with the reason.
    #[error("remedy `{remedy}` stopped the run at step {step}: {reason}")]
    GaveUp {
        /// The remedy's kind.
        remedy: String,
        /// The step.
        step: u64,
        /// Why.
        reason: String,
    },
    /// The framework that keeps the gradients could not carry out the remedy's edit, or the
    /// remedy needs gradient values that are not on the host (see [`crate::framework`]).
    #[error("remedy `{remedy}` at step {step}: {message}")]
    Framework {
        /// The remedy's kind.
        remedy: String,
        /// The step.
        step: u64,
        /// What went wrong.
        message: String,
    },
}

/// Errors a reporter can raise. They name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl ReportError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
