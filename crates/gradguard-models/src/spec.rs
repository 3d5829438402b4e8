//! The model, task and training parts of an experiment spec (serde, TOML or JSON).
//!
//! The pipeline's top-level spec is `{ name, seed, model, task, train, detectors, remedies,
//! reporters }`; this module defines `model` ([`ModelSpec`]), `task` ([`TaskSpec`]) and
//! `train` ([`TrainSpec`]). Every struct rejects unknown keys, every default is documented on
//! its field, and [`validate`] checks values and the combination of the three, returning every
//! problem with its key path (e.g. `model.hidden[2] must be > 0`).
//!
//! ```toml
//! [model]
//! kind = "lstm"            # mlp | rnn | lstm | gru
//! hidden = 64
//! layers = 1
//! forget_bias = 1.0
//! recurrent_init = { scheme = "orthogonal", gain = 1.0 }
//!
//! [task]
//! kind = "adding"
//! seq_len = 50
//!
//! [train]
//! optimizer = { kind = "adam", lr = 0.001 }
//! batch_size = 32
//! steps = 500
//! bptt = { window = 20 }
//! ```

use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ModelError, SpecIssue};

// ---------------------------------------------------------------------------------------------
// Activations and initialisers
// ---------------------------------------------------------------------------------------------

/// A point-wise activation. Written as a bare name (`"relu"`, `"leaky_relu"` with its default
/// slope) or as a table with parameters (`{ kind = "leaky_relu", slope = 0.1 }`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `slope * x`. `slope` defaults to 0.01 (PyTorch's default) and must be >= 0.
    LeakyRelu {
        /// Slope for negative inputs.
        slope: f32,
    },
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`. `alpha` defaults to 1.0 and must be > 0.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `x` (no activation).
    Identity,
}

impl Activation {
    /// The snake_case name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Identity => "identity",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu { slope: 0.01 },
            "elu" => Activation::Elu { alpha: 1.0 },
            "identity" | "linear" | "none" => Activation::Identity,
            _ => return None,
        })
    }
}

const ACTIVATION_NAMES: &[&str] = &["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"];

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ActivationTable {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu {
        #[serde(default = "default_slope")]
        slope: f32,
    },
    Elu {
        #[serde(default = "default_alpha")]
        alpha: f32,
    },
    #[serde(alias = "linear", alias = "none")]
    Identity,
}

fn default_slope() -> f32 {
    0.01
}
fn default_alpha() -> f32 {
    1.0
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Activation;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an activation name (sigmoid, tanh, relu, leaky_relu, elu, identity) or a table with `kind`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Activation, E> {
                Activation::from_name(v).ok_or_else(|| E::unknown_variant(v, ACTIVATION_NAMES))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Activation, A::Error> {
                let t = ActivationTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    ActivationTable::Sigmoid => Activation::Sigmoid,
                    ActivationTable::Tanh => Activation::Tanh,
                    ActivationTable::Relu => Activation::Relu,
                    ActivationTable::LeakyRelu { slope } => Activation::LeakyRelu { slope },
                    ActivationTable::Elu { alpha } => Activation::Elu { alpha },
                    ActivationTable::Identity => Activation::Identity,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How a weight matrix of shape `[fan_out, fan_in]` is initialised (biases start at zero).
///
/// `gain` multiplies the standard form of every scheme: gain 1 is the scheme as Keras and
/// PyTorch define it, and gain `g` multiplies the scale (bound or standard deviation) by `g`,
/// so the variance by `g²`. The normal schemes are untruncated, as PyTorch's
/// `xavier_normal_` / `kaiming_normal_` (Keras truncates its `*_normal` initialisers at two
/// standard deviations and rescales them; we do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// U(-a, a), `a = gain * sqrt(6 / (fan_in + fan_out))`, variance `a² / 3`
    /// (Keras' default `glorot_uniform`, PyTorch `xavier_uniform_`).
    GlorotUniform,
    /// N(0, s²), `s = gain * sqrt(2 / (fan_in + fan_out))`, untruncated as PyTorch's
    /// `xavier_normal_` (Keras' `glorot_normal` truncates at 2s; we follow PyTorch).
    GlorotNormal,
    /// U(-a, a), `a = gain * sqrt(6 / fan_in)`, variance `2 * gain² / fan_in`: Keras'
    /// `he_uniform` and PyTorch's `kaiming_uniform_(nonlinearity = "relu")`.
    ///
    /// Before this definition `he_uniform` meant `a = gain * sqrt(3 / fan_in)`: an old spec
    /// with gain `g` keeps its meaning with gain `g / sqrt(2)`.
    HeUniform,
    /// N(0, s²), `s = gain * sqrt(2 / fan_in)`, untruncated (PyTorch
    /// `kaiming_normal_(nonlinearity = "relu")`; Keras' `he_normal` truncates).
    HeNormal,
    /// U(-a, a), `a = gain * sqrt(3 / fan_in)`, variance `gain² / fan_in` (Keras'
    /// `lecun_uniform`).
    LecunUniform,
    /// N(0, s²), `s = gain * sqrt(1 / fan_in)`, untruncated (Keras' `lecun_normal`
    /// truncates; we do not).
    LecunNormal,
    /// A (semi-)orthogonal matrix times `gain`, as PyTorch's `orthogonal_` (QR of a Gaussian
    /// matrix, signs fixed by diag(R)). For recurrent weights each gate's H×H block is
    /// orthogonal on its own, so every block has spectral radius exactly `gain`.
    Orthogonal,
    /// N(0, (gain * std)²), untruncated, with `std` from the [`InitSpec`].
    Normal,
}

/// An initialiser: scheme, gain and (for `normal`) the standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// The scheme.
    pub scheme: InitScheme,
    /// Multiplies the scale of the scheme. Default 1.0.
    #[serde(default = "one")]
    pub gain: f64,
    /// Standard deviation for `normal`. Default 0.01; ignored by the other schemes.
    #[serde(default = "default_std")]
    pub std: f64,
}

fn one() -> f64 {
    1.0
}
fn default_std() -> f64 {
    0.01
}

impl InitSpec {
    /// `glorot_uniform` with gain 1 (the default for input weights, as Keras).
    pub fn glorot() -> Self {
        InitSpec {
            scheme: InitScheme::GlorotUniform,
            gain: 1.0,
            std: 0.01,
        }
    }
    /// `orthogonal` with gain 1 (the default for recurrent weights, as Keras).
    pub fn orthogonal() -> Self {
        InitSpec {
            scheme: InitScheme::Orthogonal,
            gain: 1.0,
            std: 0.01,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The network. Input and output sizes come from the task; an output head (a linear layer,
/// no activation) maps the last hidden layer to the task's output size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// A multilayer perceptron.
    Mlp(MlpSpec),
    /// Stacked Elman RNN layers (`h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`).
    Rnn(RecurrentSpec),
    /// Stacked LSTM layers (PyTorch gate order i, f, g, o).
    Lstm(RecurrentSpec),
    /// Stacked GRU layers (PyTorch gate order r, z, n).
    Gru(RecurrentSpec),
}

/// A multilayer perceptron: `hidden` layer sizes, each followed by its activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Sizes of the hidden layers, input side first (may be empty: a linear model). Required.
    pub hidden: Vec<usize>,
    /// One activation for every hidden layer. Default `relu` when `activations` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// One activation per hidden layer (instead of `activation`). Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Vec<Activation>>,
    /// Initialiser of the hidden layers' weight matrices, and of the head's when
    /// `output_init` is absent. Default `{ scheme = "glorot_uniform", gain = 1.0 }`.
    #[serde(default = "InitSpec::glorot")]
    pub init: InitSpec,
    /// Initialiser of the output head's weight matrix. Default: absent, the head uses
    /// `init` (so a spec without it keeps its meaning). Keras' `Dense` default is
    /// `{ scheme = "glorot_uniform", gain = 1.0 }`: a Keras model with a He-initialised hidden
    /// layer and a default output layer is `init = he_uniform` plus
    /// `output_init = glorot_uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_init: Option<InitSpec>,
}

impl MlpSpec {
    /// The activation of each hidden layer.
    pub fn layer_activations(&self) -> Vec<Activation> {
        match (&self.activations, self.activation) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => vec![a; self.hidden.len()],
            (None, None) => vec![Activation::Relu; self.hidden.len()],
        }
    }
}

/// Stacked recurrent layers of one cell kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentSpec {
    /// Hidden size of every layer. Required.
    pub hidden: usize,
    /// Number of stacked layers. Default 1.
    #[serde(default = "one_usize")]
    pub layers: usize,
    /// Initialiser of the input weights `W_ih`, and of the head when `output_init` is absent.
    /// Default `glorot_uniform`, gain 1.
    #[serde(default = "InitSpec::glorot")]
    pub init: InitSpec,
    /// Initialiser of the output head's weight matrix. Default: absent, the head uses `init`
    /// (so a spec without it keeps its meaning). Keras' `Dense` default is `glorot_uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_init: Option<InitSpec>,
    /// Initialiser of the recurrent weights `W_hh`, per gate block. Default `orthogonal`,
    /// gain 1: spectral radius 1. `{ scheme = "orthogonal", gain = 4.0 }` makes a plain RNN
    /// explode.
    #[serde(default = "InitSpec::orthogonal")]
    pub recurrent_init: InitSpec,
    /// LSTM only: the value of the forget-gate bias (entries H..2H of `bias_ih`; `bias_hh`
    /// stays 0). Default 1.0 (Keras' `unit_forget_bias`); rejected for rnn and gru.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_bias: Option<f32>,
}

fn one_usize() -> usize {
    1
}

impl ModelSpec {
    /// `mlp`, `rnn`, `lstm` or `gru`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelSpec::Mlp(_) => "mlp",
            ModelSpec::Rnn(_) => "rnn",
            ModelSpec::Lstm(_) => "lstm",
            ModelSpec::Gru(_) => "gru",
        }
    }

    /// Whether the model reads sequences step by step (rnn, lstm, gru).
    pub fn is_recurrent(&self) -> bool {
        !matches!(self, ModelSpec::Mlp(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Task
// ---------------------------------------------------------------------------------------------

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
fn yes() -> bool {
    true
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

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

/// The loss. Each is the mean over the batch (and over output units for mse/bce, over time
/// steps for sequence targets), as PyTorch's `reduction = "mean"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error, `mean((y - t)²)` (PyTorch `MSELoss`).
    Mse,
    /// Softmax cross-entropy on logits with class-index targets (PyTorch `CrossEntropyLoss`),
    /// computed with the log-sum-exp trick.
    CrossEntropy,
    /// Binary cross-entropy on logits with targets in [0, 1] (PyTorch `BCEWithLogitsLoss`),
    /// computed as `max(x, 0) - x t + log(1 + e^-|x|)`.
    Bce,
}

/// The optimiser. Formulas follow PyTorch's `torch.optim` (no weight decay, no dampening).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// `v = μ v + g; w -= lr (nesterov ? g + μ v : v)` (plain `w -= lr g` when μ = 0).
    Sgd {
        /// Learning rate. Default 0.01.
        #[serde(default = "d_lr_sgd")]
        lr: f64,
        /// Momentum μ in [0, 1). Default 0.0.
        #[serde(default)]
        momentum: f64,
        /// Nesterov momentum (needs μ > 0). Default false.
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam with bias correction; ONE step counter per optimiser update for all tensors.
    Adam {
        /// Learning rate. Default 0.001.
        #[serde(default = "d_lr_adam")]
        lr: f64,
        /// First-moment decay. Default 0.9.
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// Second-moment decay. Default 0.999.
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// Added to sqrt(v̂). Default 1e-8.
        #[serde(default = "d_eps")]
        eps: f64,
    },
    /// RMSprop: `v = α v + (1-α) g²; w -= lr g / (sqrt(v) + eps)` (with momentum:
    /// `b = μ b + g / (sqrt(v) + eps); w -= lr b`).
    Rmsprop {
        /// Learning rate. Default 0.01 (PyTorch's default).
        #[serde(default = "d_lr_sgd")]
        lr: f64,
        /// Smoothing constant α. Default 0.99.
        #[serde(default = "d_alpha")]
        alpha: f64,
        /// Added to sqrt(v). Default 1e-8.
        #[serde(default = "d_eps")]
        eps: f64,
        /// Momentum μ. Default 0.0.
        #[serde(default)]
        momentum: f64,
    },
}

fn d_lr_sgd() -> f64 {
    0.01
}
fn d_lr_adam() -> f64 {
    0.001
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_alpha() -> f64 {
    0.99
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Sgd {
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::Rmsprop { lr, .. } => lr,
        }
    }
}

/// A learning-rate schedule over optimiser updates `t` (applied updates, counted from 0),
/// in PyTorch's closed forms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// `lr0 * gamma^floor(t / step_size)` (`StepLR`).
    Step {
        /// Updates between decays (> 0). Required.
        step_size: u64,
        /// Decay factor. Default 0.1.
        #[serde(default = "d_gamma_step")]
        gamma: f64,
    },
    /// `lr0 * gamma^t` (`ExponentialLR`). Required: `gamma`.
    Exponential {
        /// Decay factor per update.
        gamma: f64,
    },
    /// `eta_min + (lr0 - eta_min) (1 + cos(π t / t_max)) / 2` (`CosineAnnealingLR`).
    Cosine {
        /// Half-period in updates (> 0). Required.
        t_max: u64,
        /// Lowest learning rate. Default 0.0.
        #[serde(default)]
        eta_min: f64,
    },
}

fn d_gamma_step() -> f64 {
    0.1
}

impl ScheduleSpec {
    /// The learning rate after `t` applied updates, from base rate `lr0`.
    pub fn lr_at(&self, lr0: f64, t: u64) -> f64 {
        match *self {
            ScheduleSpec::Step { step_size, gamma } => {
                lr0 * gamma.powf((t / step_size.max(1)) as f64)
            }
            ScheduleSpec::Exponential { gamma } => lr0 * gamma.powf(t as f64),
            ScheduleSpec::Cosine { t_max, eta_min } => {
                let c = (std::f64::consts::PI * t as f64 / t_max.max(1) as f64).cos();
                eta_min + (lr0 - eta_min) * (1.0 + c) / 2.0
            }
        }
    }
}

/// Truncated backpropagation through time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpttSpec {
    /// Window length K in time steps (> 0). Required.
    pub window: usize,
}

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The optimiser. Default `{ kind = "sgd", lr = 0.01 }`.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule. Default: none (constant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// The loss. Default: the task's ([`TaskSpec::default_loss`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossKind>,
    /// Samples per batch (> 0). Default 32.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Passes over the training data. Default 10 when `steps` is absent; give one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Total optimiser steps (instead of `epochs`). Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Truncated BPTT (recurrent models only). Default: absent, full BPTT over the whole sequence.
    ///
    /// With a window K, a many-to-one task (adding, sine, csv_series) runs the first T - K
    /// steps without gradient (hidden state carried, detached) and backpropagates through the
    /// last K; a many-to-many task (copy) makes one optimiser step per window of K steps,
    /// carrying the hidden state across windows without its gradient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bptt: Option<BpttSpec>,
    /// Reshuffle the training samples every epoch (seeded). Default true.
    #[serde(default = "yes")]
    pub shuffle: bool,
}

fn d_batch() -> usize {
    32
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            optimizer: OptimizerSpec::default(),
            schedule: None,
            loss: None,
            batch_size: 32,
            epochs: None,
            steps: None,
            bptt: None,
            shuffle: true,
        }
    }
}

impl TrainSpec {
    /// The loss in effect for `task`.
    pub fn loss_for(&self, task: &TaskSpec) -> LossKind {
        self.loss.unwrap_or_else(|| task.default_loss())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

struct Issues(Vec<SpecIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecIssue {
            path: path.into(),
            message: message.into(),
        });
    }
    fn positive_f(&mut self, path: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.push(path, format!("must be a finite number > 0 (got {v})"));
        }
    }
    fn fraction(&mut self, path: &str, v: f64) {
        if !(v > 0.0 && v < 1.0) {
            self.push(path, format!("must be strictly between 0 and 1 (got {v})"));
        }
    }
    fn positive_u(&mut self, path: &str, v: usize) {
        if v == 0 {
            self.push(path, "must be > 0");
        }
    }
}

fn check_activation(iss: &mut Issues, path: &str, a: &Activation) {
    match *a {
        Activation::LeakyRelu { slope } if !(slope.is_finite() && slope >= 0.0) => iss.push(
            format!("{path}.slope"),
            format!("must be a finite number >= 0 (got {slope})"),
        ),
        Activation::Elu { alpha } if !(alpha.is_finite() && alpha > 0.0) => iss.push(
            format!("{path}.alpha"),
            format!("must be a finite number > 0 (got {alpha})"),
        ),
        _ => {}
    }
}

fn check_init(iss: &mut Issues, path: &str, i: &InitSpec) {
    if !(i.gain.is_finite() && i.gain >= 0.0) {
        iss.push(
            format!("{path}.gain"),
            format!("must be a finite number >= 0 (got {})", i.gain),
        );
    }
    if i.scheme == InitScheme::Normal && !(i.std.is_finite() && i.std >= 0.0) {
        iss.push(
            format!("{path}.std"),
            format!("must be a finite number >= 0 (got {})", i.std),
        );
    }
}

impl ModelSpec {
    fn check(&self, iss: &mut Issues) {
        match self {
            ModelSpec::Mlp(m) => {
                for (i, &h) in m.hidden.iter().enumerate() {
                    if h == 0 {
                        iss.push(format!("model.hidden[{i}]"), "must be > 0");
                    }
                }
                if m.activation.is_some() && m.activations.is_some() {
                    iss.push("model.activations", "give either `activation` (one for all) or `activations` (one per layer), not both");
                }
                if let Some(a) = &m.activations {
                    if a.len() != m.hidden.len() {
                        iss.push(
                            "model.activations",
                            format!(
                                "has {} entries but model.hidden has {} layers",
                                a.len(),
                                m.hidden.len()
                            ),
                        );
                    }
                    for (i, act) in a.iter().enumerate() {
                        check_activation(iss, &format!("model.activations[{i}]"), act);
                    }
                }
                if let Some(a) = &m.activation {
                    check_activation(iss, "model.activation", a);
                }
                check_init(iss, "model.init", &m.init);
                if let Some(o) = &m.output_init {
                    check_init(iss, "model.output_init", o);
                }
            }
            ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => {
                iss.positive_u("model.hidden", r.hidden);
                iss.positive_u("model.layers", r.layers);
                check_init(iss, "model.init", &r.init);
                check_init(iss, "model.recurrent_init", &r.recurrent_init);
                if let Some(o) = &r.output_init {
                    check_init(iss, "model.output_init", o);
                }
                if let Some(fb) = r.forget_bias {
                    if !matches!(self, ModelSpec::Lstm(_)) {
                        iss.push(
                            "model.forget_bias",
                            format!("applies to lstm only, not {}", self.kind_name()),
                        );
                    } else if !fb.is_finite() {
                        iss.push("model.forget_bias", "must be finite");
                    }
                }
            }
        }
    }

    /// Checks the model's own values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

impl TaskSpec {
    fn check(&self, iss: &mut Issues) {
        match self {
            TaskSpec::Regression(r) => {
                iss.positive_u("task.n_samples", r.n_samples);
                iss.positive_u("task.n_features", r.n_features);
                iss.positive_u("task.n_targets", r.n_targets);
                if !(r.noise.is_finite() && r.noise >= 0.0) {
                    iss.push("task.noise", "must be a finite number >= 0");
                }
                if !r.bias.is_finite() {
                    iss.push("task.bias", "must be finite");
                }
                iss.positive_f("task.target_scale", r.target_scale);
                iss.fraction("task.train_fraction", r.train_fraction);
            }
            TaskSpec::Adding(a) => {
                if a.seq_len < 2 {
                    iss.push("task.seq_len", "must be >= 2");
                }
                iss.positive_u("task.n_samples", a.n_samples);
                iss.fraction("task.train_fraction", a.train_fraction);
            }
            TaskSpec::Copy(c) => {
                if c.symbols < 2 {
                    iss.push("task.symbols", "must be >= 2");
                }
                iss.positive_u("task.length", c.length);
                iss.positive_u("task.n_samples", c.n_samples);
                iss.fraction("task.train_fraction", c.train_fraction);
            }
            TaskSpec::Sine(s) => {
                iss.positive_u("task.seq_len", s.seq_len);
                iss.positive_u("task.n_samples", s.n_samples);
                iss.positive_f("task.min_freq", s.min_freq);
                iss.positive_f("task.max_freq", s.max_freq);
                if s.max_freq < s.min_freq {
                    iss.push("task.max_freq", "must be >= task.min_freq");
                }
                if !(s.noise.is_finite() && s.noise >= 0.0) {
                    iss.push("task.noise", "must be a finite number >= 0");
                }
                iss.fraction("task.train_fraction", s.train_fraction);
            }
            TaskSpec::Csv(c) => {
                if c.targets.is_empty() {
                    iss.push("task.targets", "must name at least one column");
                }
                if let Some(f) = &c.features {
                    if f.is_empty() {
                        iss.push("task.features", "must name at least one column (or be left out: all non-target columns)");
                    }
                    for (i, name) in f.iter().enumerate() {
                        if c.targets.contains(name) {
                            iss.push(
                                format!("task.features[{i}]"),
                                format!("`{name}` is also a target column"),
                            );
                        }
                    }
                }
                if let Some(k) = c.classes {
                    if k < 2 {
                        iss.push("task.classes", "must be >= 2");
                    }
                    if c.targets.len() != 1 {
                        iss.push("task.targets", "must name exactly one column (of class indices) when task.classes is set");
                    }
                    if c.standardize_targets {
                        iss.push(
                            "task.standardize_targets",
                            "cannot standardise class indices (task.classes is set)",
                        );
                    }
                }
                iss.fraction("task.train_fraction", c.train_fraction);
            }
            TaskSpec::CsvSeries(c) => {
                if c.column.is_empty() {
                    iss.push("task.column", "must name a column");
                }
                iss.positive_u("task.window", c.window);
                iss.positive_u("task.horizon", c.horizon);
                iss.fraction("task.train_fraction", c.train_fraction);
            }
        }
    }

    /// Checks the task's own values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

impl TrainSpec {
    fn check(&self, iss: &mut Issues) {
        match self.optimizer {
            OptimizerSpec::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&momentum) {
                    iss.push(
                        "train.optimizer.momentum",
                        format!("must be in [0, 1) (got {momentum})"),
                    );
                }
                if nesterov && momentum <= 0.0 {
                    iss.push(
                        "train.optimizer.nesterov",
                        "needs train.optimizer.momentum > 0",
                    );
                }
            }
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&beta1) {
                    iss.push(
                        "train.optimizer.beta1",
                        format!("must be in [0, 1) (got {beta1})"),
                    );
                }
                if !(0.0..1.0).contains(&beta2) {
                    iss.push(
                        "train.optimizer.beta2",
                        format!("must be in [0, 1) (got {beta2})"),
                    );
                }
                iss.positive_f("train.optimizer.eps", eps);
            }
            OptimizerSpec::Rmsprop {
                lr,
                alpha,
                eps,
                momentum,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&alpha) {
                    iss.push(
                        "train.optimizer.alpha",
                        format!("must be in [0, 1) (got {alpha})"),
                    );
                }
                iss.positive_f("train.optimizer.eps", eps);
                if !(0.0..1.0).contains(&momentum) {
                    iss.push(
                        "train.optimizer.momentum",
                        format!("must be in [0, 1) (got {momentum})"),
                    );
                }
            }
        }
        match self.schedule {
            Some(ScheduleSpec::Step { step_size, gamma }) => {
                if step_size == 0 {
                    iss.push("train.schedule.step_size", "must be > 0");
                }
                iss.positive_f("train.schedule.gamma", gamma);
            }
            Some(ScheduleSpec::Exponential { gamma }) => {
                iss.positive_f("train.schedule.gamma", gamma)
            }
            Some(ScheduleSpec::Cosine { t_max, eta_min }) => {
                if t_max == 0 {
                    iss.push("train.schedule.t_max", "must be > 0");
                }
                if !(eta_min.is_finite() && eta_min >= 0.0) {
                    iss.push("train.schedule.eta_min", "must be a finite number >= 0");
                }
            }
            None => {}
        }
        iss.positive_u("train.batch_size", self.batch_size);
        if self.epochs.is_some() && self.steps.is_some() {
            iss.push(
                "train.steps",
                "give either train.epochs or train.steps, not both",
            );
        }
        if self.epochs == Some(0) {
            iss.push("train.epochs", "must be > 0");
        }
        if self.steps == Some(0) {
            iss.push("train.steps", "must be > 0");
        }
        if let Some(b) = self.bptt {
            iss.positive_u("train.bptt.window", b.window);
        }
    }

    /// Checks the training values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

fn finish(iss: Issues) -> Result<(), ModelError> {
    if iss.0.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Spec(iss.0))
    }
}

/// Validates the three parts and their combination (a sequence-to-sequence task needs a
/// recurrent model, a table needs an MLP, `bptt` needs a recurrent model, cross-entropy needs
/// class targets). Returns every issue found, each with its key path.
pub fn validate(model: &ModelSpec, task: &TaskSpec, train: &TrainSpec) -> Result<(), ModelError> {
    let mut iss = Issues(Vec::new());
    model.check(&mut iss);
    task.check(&mut iss);
    train.check(&mut iss);
    let loss = train.loss_for(task);
    if model.is_recurrent() && !task.is_sequence() {
        iss.push(
            "model.kind",
            format!(
                "`{}` needs a sequence task (adding, copy, sine, csv_series), but task.kind is `{}`",
                model.kind_name(),
                task.kind_name()
            ),
        );
    }
    if !model.is_recurrent() && task.is_many_to_many() {
        iss.push(
            "model.kind",
            format!(
                "task `{}` has a target at every step: use rnn, lstm or gru, not mlp",
                task.kind_name()
            ),
        );
    }
    if train.bptt.is_some() && !model.is_recurrent() {
        iss.push(
            "train.bptt",
            "applies to recurrent models (rnn, lstm, gru) only",
        );
    }
    let classification = matches!(task, TaskSpec::Copy(_))
        || matches!(task, TaskSpec::Csv(c) if c.classes.is_some());
    if loss == LossKind::CrossEntropy && !classification {
        iss.push(
            "train.loss",
            format!(
                "cross_entropy needs class targets (task copy, or csv with classes), not task `{}`",
                task.kind_name()
            ),
        );
    }
    if classification && loss != LossKind::CrossEntropy {
        iss.push(
            "train.loss",
            "a classification task (class-index targets) needs cross_entropy",
        );
    }
    // Sizes that pass one by one must still fit together, before anything is allocated.
    if iss.0.is_empty() {
        if let Err(issue) = crate::footprint::check(model, task, train) {
            iss.0.push(issue);
        }
    }
    finish(iss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_model(s: &str) -> Result<ModelSpec, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn mlp_with_activation_forms() {
        let m = parse_model(
            "kind = \"mlp\"\nhidden = [4, 3]\nactivations = [\"tanh\", { kind = \"leaky_relu\", slope = 0.2 }]\n",
        )
        .unwrap();
        let ModelSpec::Mlp(m) = m else {
            panic!("not mlp")
        };
        assert_eq!(
            m.layer_activations(),
            vec![Activation::Tanh, Activation::LeakyRelu { slope: 0.2 }]
        );
        assert_eq!(m.init, InitSpec::glorot());
        let m = parse_model("kind = \"mlp\"\nhidden = [2]\nactivation = \"elu\"\n").unwrap();
        let ModelSpec::Mlp(m) = m else {
            panic!("not mlp")
        };
        assert_eq!(m.layer_activations(), vec![Activation::Elu { alpha: 1.0 }]);
    }

    #[test]
    fn unknown_keys_and_names_are_errors() {
        let e = parse_model("kind = \"mlp\"\nhidden = [2]\nactivaton = \"relu\"\n").unwrap_err();
        assert!(e.contains("activaton"), "{e}");
        let e = parse_model("kind = \"mlp\"\nhidden = [2]\nactivation = \"swish\"\n").unwrap_err();
        assert!(e.contains("swish"), "{e}");
        let e = parse_model("kind = \"lstm\"\nhidden = 8\nforget = 1.0\n").unwrap_err();
        assert!(e.contains("forget"), "{e}");
        let e =
            toml::from_str::<TrainSpec>("optimizer = { kind = \"adam\", lr = 0.1, beta = 0.9 }")
                .unwrap_err();
        assert!(e.to_string().contains("beta"), "{e}");
    }

    #[test]
    fn defaults_are_documented_values() {
        let t: TrainSpec = toml::from_str("").unwrap();
        assert_eq!(t, TrainSpec::default());
        let t: TrainSpec = toml::from_str("optimizer = { kind = \"adam\" }").unwrap();
        assert_eq!(
            t.optimizer,
            OptimizerSpec::Adam {
                lr: 0.001,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8
            }
        );
        let r: ModelSpec = parse_model("kind = \"gru\"\nhidden = 8\n").unwrap();
        let ModelSpec::Gru(r) = r else {
            panic!("not gru")
        };
        assert_eq!(
            (r.layers, r.recurrent_init, r.forget_bias),
            (1, InitSpec::orthogonal(), None)
        );
        let c: TaskSpec =
            toml::from_str("kind = \"csv\"\npath = \"a.csv\"\ntargets = [\"y\"]\n").unwrap();
        let TaskSpec::Csv(c) = c else {
            panic!("not csv")
        };
        assert!(!c.standardize_features && !c.standardize_targets && c.shuffle_rows);
        assert_eq!(c.train_fraction, 0.8);
    }

    #[test]
    fn validation_names_key_paths() {
        let m =
            parse_model("kind = \"mlp\"\nhidden = [4, 4, 0]\nactivations = [\"relu\"]\n").unwrap();
        let t: TaskSpec = toml::from_str("kind = \"regression\"").unwrap();
        let tr: TrainSpec =
            toml::from_str("optimizer = { kind = \"sgd\", lr = -1.0 }\nbptt = { window = 0 }")
                .unwrap();
        let e = validate(&m, &t, &tr).unwrap_err().to_string();
        for needle in [
            "model.hidden[2] must be > 0",
            "model.activations has 1 entries",
            "train.optimizer.lr must be",
            "train.bptt.window must be > 0",
            "train.bptt applies to recurrent",
        ] {
            assert!(e.contains(needle), "missing `{needle}` in {e}");
        }
    }

    #[test]
    fn output_init_is_optional_and_validated() {
        let m = parse_model("kind = \"mlp\"\nhidden = [4]\n").unwrap();
        let ModelSpec::Mlp(mlp) = &m else {
            panic!("not mlp")
        };
        assert_eq!(mlp.output_init, None);
        // absent stays absent when written back
        let text = toml::to_string(&m).unwrap();
        assert!(!text.contains("output_init"), "{text}");
        let m = parse_model(
            "kind = \"mlp\"\nhidden = [4]\noutput_init = { scheme = \"glorot_uniform\", gain = -1.0 }\n",
        )
        .unwrap();
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("model.output_init.gain must be"), "{e}");
        let r = parse_model(
            "kind = \"gru\"\nhidden = 4\noutput_init = { scheme = \"normal\", std = -0.1 }\n",
        )
        .unwrap();
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("model.output_init.std must be"), "{e}");
        for scheme in [
            "glorot_normal",
            "lecun_uniform",
            "lecun_normal",
            "he_uniform",
        ] {
            let m = parse_model(&format!(
                "kind = \"mlp\"\nhidden = [4]\ninit = {{ scheme = \"{scheme}\" }}\n"
            ));
            assert!(m.is_ok(), "{scheme}: {m:?}");
        }
    }

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

    #[test]
    fn combination_rules() {
        let rnn = parse_model("kind = \"rnn\"\nhidden = 8\nforget_bias = 1.0\n").unwrap();
        let reg: TaskSpec = toml::from_str("kind = \"regression\"").unwrap();
        let e = validate(&rnn, &reg, &TrainSpec::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.forget_bias applies to lstm only"), "{e}");
        assert!(e.contains("needs a sequence task"), "{e}");
        let mlp = parse_model("kind = \"mlp\"\nhidden = [8]\n").unwrap();
        let copy: TaskSpec = toml::from_str("kind = \"copy\"").unwrap();
        let e = validate(&mlp, &copy, &TrainSpec::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("use rnn, lstm or gru"), "{e}");
        let ce = TrainSpec {
            loss: Some(LossKind::CrossEntropy),
            ..TrainSpec::default()
        };
        let e = validate(&mlp, &reg, &ce).unwrap_err().to_string();
        assert!(e.contains("cross_entropy needs class targets"), "{e}");
        let adding: TaskSpec = toml::from_str("kind = \"adding\"").unwrap();
        assert!(validate(&mlp, &adding, &TrainSpec::default()).is_ok());
    }

    #[test]
    fn schedules_match_pytorch_closed_forms() {
        let s = ScheduleSpec::Step {
            step_size: 10,
            gamma: 0.5,
        };
        assert_eq!(s.lr_at(0.1, 9), 0.1);
        assert_eq!(s.lr_at(0.1, 25), 0.025);
        let c = ScheduleSpec::Cosine {
            t_max: 100,
            eta_min: 0.0,
        };
        assert!((c.lr_at(1.0, 50) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(1.0, 100).abs() < 1e-12);
        let e = ScheduleSpec::Exponential { gamma: 0.5 };
        assert_eq!(e.lr_at(1.0, 3), 0.125);
    }
}
