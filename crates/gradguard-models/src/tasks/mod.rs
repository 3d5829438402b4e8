//! Tasks and data: synthetic generators and CSV readers, split into training and held-out
//! sets, deterministic from the seed.

mod csv_data;
mod synthetic;

pub use csv_data::{check_width, read_csv_series, read_csv_table, CsvTable};

use crate::error::ModelError;
use crate::rng::Rng64;
use crate::spec::TaskSpec;

/// How targets are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// `outputs` real values per sample.
    Values,
    /// One class index per sample (stored as f32), `outputs` classes.
    Classes,
    /// One class index per time step of each sample (sequence-to-sequence), `outputs` classes.
    StepClasses,
}

/// Samples of one split. Inputs are stored sample-major: `x[n][t][i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Number of samples.
    pub n: usize,
    /// Inputs, `n × steps × input` values.
    pub x: Vec<f32>,
    /// Targets: `n × outputs` values, `n` class indices, or `n × steps` class indices.
    pub y: Vec<f32>,
}

/// A task's data and shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskData {
    /// Training samples.
    pub train: Dataset,
    /// Held-out samples.
    pub test: Dataset,
    /// Time steps per sample (1 for tables).
    pub steps: usize,
    /// Input channels per step (features for tables).
    pub input: usize,
    /// Output units of the model (values or classes).
    pub outputs: usize,
    /// Target layout.
    pub targets: Targets,
}

impl TaskData {
    /// Target values per sample.
    pub fn targets_per_sample(&self) -> usize {
        match self.targets {
            Targets::Values => self.outputs,
            Targets::Classes => 1,
            Targets::StepClasses => self.steps,
        }
    }
}

/// Builds the task's data from its spec and the experiment seed.
pub fn build_task(spec: &TaskSpec, seed: u64) -> Result<TaskData, ModelError> {
    spec.validate()?;
    let mut rng = Rng64::new(seed, 0x7a5c);
    match spec {
        TaskSpec::Regression(r) => Ok(synthetic::regression(r, &mut rng)),
        TaskSpec::Adding(a) => Ok(synthetic::adding(a, &mut rng)),
        TaskSpec::Copy(c) => Ok(synthetic::copy(c, &mut rng)),
        TaskSpec::Sine(s) => Ok(synthetic::sine(s, &mut rng)),
        TaskSpec::Csv(c) => csv_data::csv_task(c, &mut rng),
        TaskSpec::CsvSeries(c) => csv_data::csv_series_task(c),
    }
}

/// Splits `n` samples (given as per-sample chunks of `x` and `y`) at `fraction`, keeping at
/// least one sample on each side.
pub(crate) fn split(x: Vec<f32>, y: Vec<f32>, n: usize, fraction: f64) -> (Dataset, Dataset) {
    let n_train =
        ((n as f64 * fraction).round() as usize).clamp(1.min(n), n.saturating_sub(1).max(1));
    let xs = x.len() / n.max(1);
    let ys = y.len() / n.max(1);
    let (mut x, mut y) = (x, y);
    let xt = x.split_off(n_train * xs);
    let yt = y.split_off(n_train * ys);
    (
        Dataset { n: n_train, x, y },
        Dataset {
            n: n - n_train,
            x: xt,
            y: yt,
        },
    )
}
