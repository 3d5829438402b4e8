//! The `task` part of a spec: the data ([`TaskSpec`]), synthetic or read from CSV.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{one, one_usize, yes, LossKind};

/// The data: synthetic or read from CSV. Every task is split into a training and a held-out
/// part; splits and samples are deterministic from the experiment's seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// Synthetic linear regression like scikit-learn's `make_regression`.
    Regression(RegressionTask),
    /// The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of a sequence.
    Adding(AddingTask),
    /// The copy memory task: read `length` symbols, wait `delay` steps, write them back.
    Copy(CopyTask),
    /// Predict the next value of a noisy sine wave from the previous `seq_len` values.
    Sine(SineTask),
    /// A table from a CSV file: feature columns in, target column(s) out.
    Csv(CsvTask),
    /// A time series from one CSV column: a window of values in, the value `horizon` steps later out.
    CsvSeries(CsvSeriesTask),
}

/// `make_regression`: X ~ N(0, 1); the first `n_informative` (of `n_features`, in a random
/// order) get coefficients 100·U(0, 1), the others 0; `y = (X·coef + bias + N(0, noise²)) * target_scale`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionTask {
    /// Number of samples (train + held-out). Default 1000.
    #[serde(default = "d_1000")]
    pub n_samples: usize,
    /// Number of features. Default 10.
    #[serde(default = "d_10")]
    pub n_features: usize,
    /// Number of features that influence the target. Default 10; capped at `n_features` (as scikit-learn).
    #[serde(default = "d_10")]
    pub n_informative: usize,
    /// Number of target columns. Default 1.
    #[serde(default = "one_usize")]
    pub n_targets: usize,
    /// Standard deviation of the Gaussian noise added to the targets. Default 0.0.
    #[serde(default)]
    pub noise: f64,
    /// Constant added to the targets. Default 0.0.
    #[serde(default)]
    pub bias: f64,
    /// Factor applied to the targets after everything else. Default 1.0 (scikit-learn's scale:
    /// targets of order 100, which is what makes unscaled regression explode).
    #[serde(default = "one")]
    pub target_scale: f64,
    /// Fraction of samples used for training. Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
    /// Shuffle the generated rows (with the seed, on a generator of its own) before the
    /// split, like scikit-learn's `make_regression(shuffle=True)` (rows only; the features'
    /// order is already random). Default false: the first `train_fraction` of the rows, in
    /// generation order, train and the rest are held out, which is what every run made before
    /// this field existed did, so their data stay bit-identical. The rows are independent
    /// draws, so shuffling changes which rows train, not their distribution.
    #[serde(default)]
    pub shuffle_rows: bool,
    /// Standardise each feature column to zero mean and unit variance with the TRAINING
    /// split's mean and population standard deviation (a column with standard deviation 0 is
    /// only centred), applied after the split. Default false.
    #[serde(default)]
    pub standardize_features: bool,
    /// Standardise each target column the same way (training statistics, after the split).
    /// Reported losses are then in z-score units: an MSE of 1 is the constant predictor's.
    /// Default false: targets of order 100, the classic exploding setup.
    #[serde(default)]
    pub standardize_targets: bool,
}

/// The adding problem: each step has 2 inputs, a value U(0, 1) and a marker (1 at exactly two
/// steps: one in the first half, one in the second, else 0). The target is the sum of the two
/// marked values, predicted from the last step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddingTask {
    /// Sequence length T (>= 2). Default 50.
    #[serde(default = "d_50")]
    pub seq_len: usize,
    /// Number of sequences. Default 2000.
    #[serde(default = "d_2000")]
    pub n_samples: usize,
    /// Fraction used for training. Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
}

/// The copy task: `length` random symbols (one-hot over `symbols`), then `delay` blanks, then a
/// delimiter, then `length - 1` blanks; the target is blank for the first `length + delay`
/// steps and then the symbols in order. Inputs have `symbols + 2` channels (symbols, blank,
/// delimiter); outputs have `symbols + 1` classes (symbols, blank). Sequence length
/// `2 * length + delay`. Loss: cross-entropy at every step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyTask {
    /// Alphabet size (>= 2). Default 8.
    #[serde(default = "d_8")]
    pub symbols: usize,
    /// Number of symbols to remember (>= 1). Default 5.
    #[serde(default = "d_5")]
    pub length: usize,
    /// Blank steps between reading and writing. Default 10.
    #[serde(default = "d_10")]
    pub delay: usize,
    /// Number of sequences. Default 2000.
    #[serde(default = "d_2000")]
    pub n_samples: usize,
    /// Fraction used for training. Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
}

/// Sine prediction: `x_t = sin(2π f t + φ) + N(0, noise²)` for t = 0..seq_len, f ~ U(min_freq,
/// max_freq) cycles per step, φ ~ U(0, 2π); the target is the noiseless value at t = seq_len.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SineTask {
    /// Input window length. Default 50.
    #[serde(default = "d_50")]
    pub seq_len: usize,
    /// Number of sequences. Default 1000.
    #[serde(default = "d_1000")]
    pub n_samples: usize,
    /// Lowest frequency, cycles per step. Default 0.02.
    #[serde(default = "d_min_freq")]
    pub min_freq: f64,
    /// Highest frequency, cycles per step. Default 0.1.
    #[serde(default = "d_max_freq")]
    pub max_freq: f64,
    /// Standard deviation of the input noise. Default 0.0.
    #[serde(default)]
    pub noise: f64,
    /// Fraction used for training. Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
}

/// A table from a CSV file with a header row. Every used cell must be a number.
///
/// **Scaling.** Features and targets are used exactly as written unless asked. Unscaled
/// targets (a price in dollars, CO2 in ppm around 350) are a classic cause of exploding
/// gradients: the MSE gradient grows with the target's magnitude. Set
/// `standardize_targets = true` to train on z-scores (mean and std from the training rows;
/// reported losses are then in z-score units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvTask {
    /// The CSV file. A relative path is resolved against the spec file's folder by
    /// [`TaskSpec::resolve_paths`] (or the working directory when not resolved). Required.
    pub path: PathBuf,
    /// Target column name(s). Required, at least one.
    pub targets: Vec<String>,
    /// Feature column names. Default: every column that is not a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// When set, the single target column holds class indices 0..classes-1, the output has
    /// `classes` units and the default loss is cross-entropy. Default: absent (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Fraction of rows used for training (the rest is held out). Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
    /// Shuffle the rows (with the seed) before splitting. Default true.
    #[serde(default = "yes")]
    pub shuffle_rows: bool,
    /// Standardise each feature column to zero mean and unit variance (training statistics).
    /// Default false.
    #[serde(default)]
    pub standardize_features: bool,
    /// Standardise each target column (regression only). Default false: see the type's docs.
    #[serde(default)]
    pub standardize_targets: bool,
}

/// A time series from one CSV column: each sample is `window` consecutive values (a sequence
/// of 1-channel steps for recurrent models, a flat vector for an MLP) and the target is the
/// value `horizon` steps after the window's last. The split is chronological: the first
/// `train_fraction` of the samples train, the rest are held out.
///
/// **Scaling.** Values are used as written unless `standardize = true` (then the series is
/// z-scored with the training part's mean and std). CO2 near 350 ppm unscaled makes MSE
/// gradients large: a classic cause of explosion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSeriesTask {
    /// The CSV file (see [`CsvTask::path`]). Required.
    pub path: PathBuf,
    /// The column holding the series. Required.
    pub column: String,
    /// Input window length (>= 1). Default 20.
    #[serde(default = "d_20")]
    pub window: usize,
    /// How many steps after the window's last value the target is (>= 1). Default 1.
    #[serde(default = "one_usize")]
    pub horizon: usize,
    /// Fraction of samples used for training. Default 0.8.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
    /// Standardise the series (training statistics). Default false.
    #[serde(default)]
    pub standardize: bool,
}

fn d_1000() -> usize {
    1000
}
fn d_2000() -> usize {
    2000
}
fn d_10() -> usize {
    10
}
fn d_20() -> usize {
    20
}
fn d_50() -> usize {
    50
}
fn d_8() -> usize {
    8
}
fn d_5() -> usize {
    5
}
fn d_min_freq() -> f64 {
    0.02
}
fn d_max_freq() -> f64 {
    0.1
}
fn d_train_fraction() -> f64 {
    0.8
}

impl TaskSpec {
    /// The task's `kind` name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            TaskSpec::Regression(_) => "regression",
            TaskSpec::Adding(_) => "adding",
            TaskSpec::Copy(_) => "copy",
            TaskSpec::Sine(_) => "sine",
            TaskSpec::Csv(_) => "csv",
            TaskSpec::CsvSeries(_) => "csv_series",
        }
    }

    /// The loss used when `train.loss` is absent: cross-entropy for classification (copy, csv
    /// with `classes`), MSE otherwise.
    pub fn default_loss(&self) -> LossKind {
        match self {
            TaskSpec::Copy(_) => LossKind::CrossEntropy,
            TaskSpec::Csv(c) if c.classes.is_some() => LossKind::CrossEntropy,
            _ => LossKind::Mse,
        }
    }

    /// Whether the task's samples are sequences (adding, copy, sine, csv_series).
    pub fn is_sequence(&self) -> bool {
        matches!(
            self,
            TaskSpec::Adding(_) | TaskSpec::Copy(_) | TaskSpec::Sine(_) | TaskSpec::CsvSeries(_)
        )
    }

    /// Whether the task has a target at every time step (copy) rather than one per sequence.
    pub fn is_many_to_many(&self) -> bool {
        matches!(self, TaskSpec::Copy(_))
    }

    /// A copy of the task with its targets (and, for tables, its features) standardised to
    /// z-scores with training statistics: the cure for targets far from unit scale.
    ///
    /// - `regression`: `standardize_targets = true` and `standardize_features = true`;
    /// - `csv` (regression): `standardize_targets = true` and `standardize_features = true`;
    /// - `csv_series`: `standardize = true`.
    ///
    /// `Err` with the reason when it does not apply: a classification csv (`classes` set:
    /// class indices are not scaled), the synthetic sequence tasks (adding, copy, sine: their
    /// data are already of unit scale), or a task already standardised.
    pub fn standardise(&self) -> Result<TaskSpec, String> {
        let mut out = self.clone();
        match &mut out {
            TaskSpec::Regression(r) => {
                if r.standardize_targets && r.standardize_features {
                    return Err("the regression's features and targets are already standardised (task.standardize_features and task.standardize_targets are true)".into());
                }
                r.standardize_targets = true;
                r.standardize_features = true;
            }
            TaskSpec::Csv(c) => {
                if c.classes.is_some() {
                    return Err("the csv task is a classification (task.classes is set): class indices are not standardised".into());
                }
                if c.standardize_targets && c.standardize_features {
                    return Err("the csv task's features and targets are already standardised (task.standardize_features and task.standardize_targets are true)".into());
                }
                c.standardize_targets = true;
                c.standardize_features = true;
            }
            TaskSpec::CsvSeries(c) => {
                if c.standardize {
                    return Err(
                        "the csv_series is already standardised (task.standardize is true)".into(),
                    );
                }
                c.standardize = true;
            }
            TaskSpec::Adding(_) | TaskSpec::Sine(_) => {
                return Err(format!(
                    "task `{}` generates inputs and targets of unit scale: there is nothing to standardise",
                    self.kind_name()
                ))
            }
            TaskSpec::Copy(_) => {
                return Err(
                    "task `copy` is a classification (one-hot inputs, class targets): there is nothing to standardise"
                        .into(),
                )
            }
        }
        Ok(out)
    }

    /// Resolves a relative CSV path against `base` (the spec file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let p = match self {
            TaskSpec::Csv(c) => &mut c.path,
            TaskSpec::CsvSeries(c) => &mut c.path,
            _ => return,
        };
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::*;
    #[test]
    fn standardise_rewrites_what_applies() {
        let reg: TaskSpec = toml::from_str("kind = \"regression\"").unwrap();
        let TaskSpec::Regression(r) = &reg else {
            panic!("not regression")
        };
        assert!(!r.shuffle_rows && !r.standardize_features && !r.standardize_targets);
        let z = reg.standardise().unwrap();
        let TaskSpec::Regression(r) = &z else {
            panic!("not regression")
        };
        assert!(r.standardize_features && r.standardize_targets);
        assert!(z
            .standardise()
            .unwrap_err()
            .contains("already standardised"));
        let csv: TaskSpec =
            toml::from_str("kind = \"csv\"\npath = \"a.csv\"\ntargets = [\"y\"]\n").unwrap();
        let TaskSpec::Csv(c) = csv.standardise().unwrap() else {
            panic!("not csv")
        };
        assert!(c.standardize_features && c.standardize_targets);
        let classes: TaskSpec =
            toml::from_str("kind = \"csv\"\npath = \"a.csv\"\ntargets = [\"y\"]\nclasses = 3\n")
                .unwrap();
        assert!(classes
            .standardise()
            .unwrap_err()
            .contains("classification"));
        let series: TaskSpec =
            toml::from_str("kind = \"csv_series\"\npath = \"a.csv\"\ncolumn = \"v\"\n").unwrap();
        let z = series.standardise().unwrap();
        assert!(matches!(&z, TaskSpec::CsvSeries(c) if c.standardize));
        assert!(z.standardise().is_err());
        for kind in ["adding", "copy", "sine"] {
            let t: TaskSpec = toml::from_str(&format!("kind = \"{kind}\"")).unwrap();
            let e = t.standardise().unwrap_err();
            assert!(e.contains(kind), "{e}");
        }
    }
}
