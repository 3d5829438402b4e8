//! What a detector sees at one step.

use serde::{Deserialize, Serialize};

use crate::param::ParamView;
use crate::stats::{StepStats, UpdateStats};

/// Which axis a [`Series`] runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesAxis {
    /// One value per time step of a recurrent layer, first step first
    /// (e.g. ||dL/dh_t|| for t = 1..T).
    TimeSteps,
    /// One value per layer, input layer first (e.g. the error-signal norm ||dL/dz_l||).
    Layers,
}

/// A sequence of gradient norms the model measured itself (per time step or per layer),
/// for detectors of growth that the per-tensor statistics cannot see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// What it measures, e.g. `rnn.0 dL/dh_t`.
    pub name: String,
    /// Along which axis.
    pub axis: SeriesAxis,
    /// The norms, in axis order (non-finite values are written as strings in JSON).
    #[serde(with = "crate::float::lossy_vec")]
    pub values: Vec<f64>,
}

/// Everything a detector sees at one step. Built by the training loop (or replayed from an
/// events log, in which case `view` is `None`).
#[derive(Clone, Copy, Debug)]
pub struct Observation<'o, 'v> {
    /// The step: optimiser updates counted from 1 (this step's update is not applied yet).
    pub step: u64,
    /// The step's training loss (may be NaN or infinite).
    pub loss: f64,
    /// This step's gradient and weight statistics.
    pub stats: &'o StepStats,
    /// What the previous update did (None at the first step or when it was skipped).
    pub update: Option<&'o UpdateStats>,
    /// The live parameters (read only), for detectors that need the weights themselves
    /// (e.g. the spectral radius of a recurrent matrix). None when replaying a log.
    pub view: Option<&'o ParamView<'v>>,
    /// Extra norms the model measured (per time step or per layer).
    pub series: &'o [Series],
}

impl<'o, 'v> Observation<'o, 'v> {
    /// An observation with only step, loss and statistics.
    pub fn new(step: u64, loss: f64, stats: &'o StepStats) -> Self {
        Observation {
            step,
            loss,
            stats,
            update: None,
            view: None,
            series: &[],
        }
    }
}
