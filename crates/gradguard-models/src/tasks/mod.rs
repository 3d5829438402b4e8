//! Tasks and data: synthetic generators and CSV readers, split into training and held-out
//! sets, deterministic from the seed.

mod csv_data;
mod synthetic;

pub use csv_data::{
    check_width, read_csv_all_from, read_csv_header_from, read_csv_series, read_csv_table,
    read_csv_table_from, CsvTable,
};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::rng::Rng64;
use crate::spec::{LossKind, TaskSpec};

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

/// The loss of the best constant predictor: what a model that ignores its inputs reaches.
/// A trained model whose loss is not well below it has learnt nothing from the features.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The constant's loss on the training targets (the targets it was fitted on).
    pub train_loss: f64,
    /// The same constant's loss on the held-out targets; `None` when there are none.
    pub test_loss: Option<f64>,
}

/// The probability given to a class that never occurs in the training targets by
/// [`TaskData::baseline`] (and the clamp of a BCE rate away from 0 and 1), so that a held-out
/// loss stays finite.
pub const BASELINE_PROBABILITY_FLOOR: f64 = 1e-7;

impl TaskData {
    /// Target values per sample.
    pub fn targets_per_sample(&self) -> usize {
        match self.targets {
            Targets::Values => self.outputs,
            Targets::Classes => 1,
            Targets::StepClasses => self.steps,
        }
    }

    /// The loss of the best constant predictor under `loss`, fitted on the TRAINING targets
    /// only and evaluated on both splits with the reduction of the training loss (a mean over
    /// every target value, see [`LossKind`]):
    ///
    /// - `mse`: the per-column mean of the training targets; loss = mean of (y - mean)².
    ///   On the training targets this is the mean population variance of the columns.
    /// - `cross_entropy`: the class prior (the classes' frequencies in the training targets,
    ///   over every step for step targets); loss = mean of -ln p(class). A class absent from
    ///   the training targets gets probability [`BASELINE_PROBABILITY_FLOOR`] (the others are
    ///   scaled down by the same total so the prior sums to 1), so a held-out loss stays
    ///   finite; with every class present the prior is exactly the frequencies.
    /// - `bce`: the per-column mean of the training targets (the positive rate), clamped to
    ///   [`BASELINE_PROBABILITY_FLOOR`, 1 - `BASELINE_PROBABILITY_FLOOR`]; loss = mean of
    ///   -(t ln p + (1 - t) ln(1 - p)).
    ///
    /// `None` when the training set is empty, or when the loss does not fit the targets
    /// (mse or bce with class targets, cross-entropy with value targets, a class index out of
    /// range).
    pub fn baseline(&self, loss: LossKind) -> Option<Baseline> {
        if self.train.n == 0 || self.train.y.is_empty() {
            return None;
        }
        let test = |f: &dyn Fn(&[f32]) -> Option<f64>| -> Option<Option<f64>> {
            if self.test.n == 0 || self.test.y.is_empty() {
                Some(None)
            } else {
                f(&self.test.y).map(Some)
            }
        };
        match (loss, self.targets) {
            (LossKind::Mse, Targets::Values) => {
                let mean = column_means(&self.train.y, self.outputs)?;
                let mse = |y: &[f32]| -> Option<f64> {
                    let sum: f64 = y
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (v as f64 - mean[i % mean.len()]).powi(2))
                        .sum();
                    Some(sum / y.len() as f64)
                };
                Some(Baseline {
                    train_loss: mse(&self.train.y)?,
                    test_loss: test(&mse)?,
                })
            }
            (LossKind::Bce, Targets::Values) => {
                let floor = BASELINE_PROBABILITY_FLOOR;
                let rate: Vec<f64> = column_means(&self.train.y, self.outputs)?
                    .into_iter()
                    .map(|p| p.clamp(floor, 1.0 - floor))
                    .collect();
                let bce = |y: &[f32]| -> Option<f64> {
                    let sum: f64 = y
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| {
                            let (p, t) = (rate[i % rate.len()], t as f64);
                            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                        })
                        .sum();
                    Some(sum / y.len() as f64)
                };
                Some(Baseline {
                    train_loss: bce(&self.train.y)?,
                    test_loss: test(&bce)?,
                })
            }
            (LossKind::CrossEntropy, Targets::Classes | Targets::StepClasses) => {
                let k = self.outputs;
                let mut counts = vec![0usize; k];
                for &v in &self.train.y {
                    *counts.get_mut(class_index(v, k)?)? += 1;
                }
                let total = self.train.y.len() as f64;
                let absent = counts.iter().filter(|&&c| c == 0).count() as f64;
                let floor = BASELINE_PROBABILITY_FLOOR;
                let scale = 1.0 - absent * floor;
                let prior: Vec<f64> = counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            floor
                        } else {
                            c as f64 / total * scale
                        }
                    })
                    .collect();
                let ce = |y: &[f32]| -> Option<f64> {
                    let mut sum = 0.0;
                    for &v in y {
                        sum -= prior.get(class_index(v, k)?)?.ln();
                    }
                    Some(sum / y.len() as f64)
                };
                Some(Baseline {
                    train_loss: ce(&self.train.y)?,
                    test_loss: test(&ce)?,
                })
            }
            _ => None,
        }
    }

    /// The mean of y² over the training targets, for value targets: 1 for standardised
    /// targets, about the square of their typical magnitude otherwise (the pipeline uses it
    /// to tell targets far from unit scale). `None` for class targets or when there are no
    /// training targets.
    pub fn target_mean_square(&self) -> Option<f64> {
        if self.targets != Targets::Values || self.train.y.is_empty() {
            return None;
        }
        Some(mean_square(&self.train.y))
    }

    /// The mean of x² over the training inputs (every feature of every step of every sample);
    /// 0 when there are none.
    pub fn feature_mean_square(&self) -> f64 {
        if self.train.x.is_empty() {
            0.0
        } else {
            mean_square(&self.train.x)
        }
    }
}

fn mean_square(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64
}

/// Per-column means of a row-major `rows × cols` slice (`None` when it does not split into
/// whole rows or is empty).
fn column_means(y: &[f32], cols: usize) -> Option<Vec<f64>> {
    if cols == 0 || y.is_empty() || !y.len().is_multiple_of(cols) {
        return None;
    }
    let mut sum = vec![0f64; cols];
    for row in y.chunks_exact(cols) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    let rows = (y.len() / cols) as f64;
    Some(sum.into_iter().map(|s| s / rows).collect())
}

/// A class index stored as f32, if it is one in 0..k.
fn class_index(v: f32, k: usize) -> Option<usize> {
    (v >= 0.0 && v.fract() == 0.0 && (v as usize) < k).then_some(v as usize)
}

/// Z-scores the columns of row-major `train` and `test` (`width` values per row) with the
/// TRAINING rows' mean and population standard deviation per column; a column with standard
/// deviation 0 is only centred.
pub(crate) fn standardize_columns(train: &mut [f32], test: &mut [f32], width: usize) {
    if width == 0 || train.is_empty() {
        return;
    }
    let n = (train.len() / width) as f64;
    for col in 0..width {
        let mean = train
            .iter()
            .skip(col)
            .step_by(width)
            .map(|&v| v as f64)
            .sum::<f64>()
            / n;
        let var = train
            .iter()
            .skip(col)
            .step_by(width)
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in train
            .iter_mut()
            .skip(col)
            .step_by(width)
            .chain(test.iter_mut().skip(col).step_by(width))
        {
            *v = ((*v as f64 - mean) / sd) as f32;
        }
    }
}

/// Builds the task's data from its spec and the experiment seed.
pub fn build_task(spec: &TaskSpec, seed: u64) -> Result<TaskData, ModelError> {
    spec.validate()?;
    let mut rng = Rng64::new(seed, 0x7a5c);
    match spec {
        TaskSpec::Regression(r) => Ok(synthetic::regression(
            r,
            &mut rng,
            &mut Rng64::new(seed, 0x5b0f),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(train: &[f32], test: &[f32], cols: usize) -> TaskData {
        TaskData {
            train: Dataset {
                n: train.len() / cols,
                x: vec![0.0; train.len() / cols],
                y: train.to_vec(),
            },
            test: Dataset {
                n: test.len() / cols,
                x: vec![0.0; test.len() / cols],
                y: test.to_vec(),
            },
            steps: 1,
            input: 1,
            outputs: cols,
            targets: Targets::Values,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * b.abs().max(1.0)
    }

    /// Targets [1, 2, 3, 4]: mean 2.5, MSE (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; held out
    /// [5, 0]: (6.25 + 6.25) / 2 = 6.25, with the training mean (not the held-out one).
    #[test]
    fn mse_baseline_is_the_training_mean() {
        let d = values(&[1.0, 2.0, 3.0, 4.0], &[5.0, 0.0], 1);
        let b = d.baseline(LossKind::Mse).unwrap();
        assert!(close(b.train_loss, 1.25), "{b:?}");
        assert!(close(b.test_loss.unwrap(), 6.25), "{b:?}");
        // two columns: means (2, 20); squared errors 1, 100, 1, 100 -> 50.5 (mean over values)
        let d = values(&[1.0, 10.0, 3.0, 30.0], &[], 2);
        let b = d.baseline(LossKind::Mse).unwrap();
        assert!(close(b.train_loss, 50.5), "{b:?}");
        assert_eq!(b.test_loss, None);
        // mse on class targets does not apply
        let mut c = values(&[0.0, 1.0], &[1.0], 1);
        c.targets = Targets::Classes;
        c.outputs = 2;
        assert_eq!(c.baseline(LossKind::Mse), None);
    }

    /// Classes [0, 0, 1, 2]: prior (0.5, 0.25, 0.25); CE = -(2 ln 0.5 + 2 ln 0.25) / 4
    /// = (ln 2 + 2 ln 2) / 2 = 1.5 ln 2. Held out [1, 3]: class 3 never trains, so it gets
    /// the floor and the others shrink by it: -(ln(0.25 (1 - 1e-7)) + ln 1e-7) / 2.
    #[test]
    fn cross_entropy_baseline_is_the_class_prior() {
        let mut d = values(&[0.0, 0.0, 1.0, 2.0], &[1.0], 1);
        d.targets = Targets::Classes;
        d.outputs = 3;
        let b = d.baseline(LossKind::CrossEntropy).unwrap();
        assert!(close(b.train_loss, 1.5 * 2f64.ln()), "{b:?}");
        assert!(close(b.test_loss.unwrap(), 4f64.ln()), "{b:?}");
        d.outputs = 4;
        d.test.y = vec![1.0, 3.0];
        d.test.n = 2;
        let b = d.baseline(LossKind::CrossEntropy).unwrap();
        let f = BASELINE_PROBABILITY_FLOOR;
        let want = -((0.25 * (1.0 - f)).ln() + f.ln()) / 2.0;
        assert!(close(b.test_loss.unwrap(), want), "{b:?} vs {want}");
        let train = -(2.0 * (0.5 * (1.0 - f)).ln() + 2.0 * (0.25 * (1.0 - f)).ln()) / 4.0;
        assert!(close(b.train_loss, train), "{b:?}");
        // an index out of range, or cross-entropy on values: None
        d.train.y[0] = 7.0;
        assert_eq!(d.baseline(LossKind::CrossEntropy), None);
        assert_eq!(
            values(&[1.0], &[], 1).baseline(LossKind::CrossEntropy),
            None
        );
    }

    /// Step targets count every step: 2 samples x 3 steps [0,1,1, 1,1,1] -> prior (1/6, 5/6);
    /// CE = -(ln(1/6) + 5 ln(5/6)) / 6.
    #[test]
    fn step_class_baseline_counts_every_step() {
        let d = TaskData {
            train: Dataset {
                n: 2,
                x: vec![0.0; 6],
                y: vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            },
            test: Dataset::default(),
            steps: 3,
            input: 1,
            outputs: 2,
            targets: Targets::StepClasses,
        };
        let b = d.baseline(LossKind::CrossEntropy).unwrap();
        let want = -((1.0f64 / 6.0).ln() + 5.0 * (5.0f64 / 6.0).ln()) / 6.0;
        assert!(close(b.train_loss, want), "{b:?} vs {want}");
        assert_eq!(b.test_loss, None);
    }

    /// Columns [1, 0, 0, 1] and [1, 1, 1, 0]: rates 0.5 and 0.75; BCE = (4 ln 2 + 3 ln(4/3)
    /// + ln 4) / 8. Held-out row (0, 0): (-ln 0.5 - ln 0.25) / 2 = (ln 2 + ln 4) / 2.
    #[test]
    fn bce_baseline_is_the_positive_rate() {
        let d = values(&[1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0], &[0.0, 0.0], 2);
        let b = d.baseline(LossKind::Bce).unwrap();
        let ln2 = 2f64.ln();
        let col1 = 4.0 * ln2;
        let col2 = 3.0 * (4.0f64 / 3.0).ln() + 4f64.ln();
        assert!(close(b.train_loss, (col1 + col2) / 8.0), "{b:?}");
        // held-out row (0, 0): -ln(1 - 0.5) and -ln(1 - 0.75)
        assert!(
            close(b.test_loss.unwrap(), (ln2 + 4f64.ln()) / 2.0),
            "{b:?}"
        );
    }

    #[test]
    fn mean_squares() {
        let mut d = values(&[3.0, -1.0], &[100.0], 1);
        d.train.x = vec![1.0, -2.0, 2.0, 0.0];
        assert_eq!(d.target_mean_square(), Some(5.0));
        assert_eq!(d.feature_mean_square(), 2.25);
        d.targets = Targets::Classes;
        assert_eq!(d.target_mean_square(), None);
    }

    #[test]
    fn standardize_uses_training_statistics() {
        // column 0: train [1, 3] mean 2 sd 1; column 1: constant 5 -> centred only
        let mut train = vec![1.0, 5.0, 3.0, 5.0];
        let mut test = vec![4.0, 6.0];
        standardize_columns(&mut train, &mut test, 2);
        assert_eq!(train, vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(test, vec![2.0, 1.0]);
    }
}
