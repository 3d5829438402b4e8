//! Errors of the models crate. Each names the file, tensor or spec key involved.

use std::path::PathBuf;

/// One problem found in a spec, with the key path it concerns (e.g. `model.hidden[2]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecIssue {
    /// Dotted key path, e.g. `train.optimizer.lr`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl std::fmt::Display for SpecIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.path, self.message)
    }
}

/// Errors from building, training, evaluating or checkpointing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The spec is invalid; every issue found is listed.
    #[error("invalid spec: {}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    Spec(Vec<SpecIssue>),
    /// A data file could not be read or parsed.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// Where in it and what was expected, e.g. `row 7, column \`co2\`: \`abc\` is not a number`.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is malformed or does not match the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not match, naming the tensor.
        message: String,
    },
    /// An internal invariant failed (a bug in gradguard-models, not bad input).
    #[error("internal error in gradguard-models: {0}")]
    Internal(String),
}

impl ModelError {
    /// A spec error with a single issue.
    pub fn spec(path: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::Spec(vec![SpecIssue {
            path: path.into(),
            message: message.into(),
        }])
    }

    /// A data error naming `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<dfdx::tensor::CpuError> for ModelError {
    fn from(e: dfdx::tensor::CpuError) -> Self {
        ModelError::Internal(format!("dfdx: {e:?}"))
    }
}
