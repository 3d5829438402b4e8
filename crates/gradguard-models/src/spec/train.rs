//! The `train` part of a spec: loss, optimiser, schedule, batches and truncated BPTT
//! ([`TrainSpec`]).

use serde::{Deserialize, Serialize};

use super::{yes, TaskSpec};

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
    /// Evaluate the held-out split every this many steps (> 0) and record its loss in that
    /// step's event (`held_out_loss`, drawn in report.html beside the training loss).
    /// Default: absent, the held-out split is evaluated once, at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
    /// Checkpoints to disk, from which `gradguard resume RUN_DIR` continues an interrupted
    /// run. Default: `{ seconds = 30, keep = 2 }`, one after the first step that ends 30 s or
    /// more after the last one (so a run of a few seconds writes none), plus one when a
    /// signal interrupts the run.
    #[serde(default, skip_serializing_if = "CheckpointSpec::is_default")]
    pub checkpoint: CheckpointSpec,
}

/// `[train] checkpoint = { every = N, keep = K }`: when a run writes checkpoints to
/// `<run dir>/checkpoints/checkpoint-<N>.safetensors` (N: the steps recorded before it) (atomically: weights, optimiser state, data
/// position, RNG, the snapshots kept for rollback, and the Guard's state: every detector's and
/// remedy's history and the diagnosis so far).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// One every this many steps; `0` writes none (not even on a signal). Default: absent,
    /// timed by `seconds` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Without `every`: one after the first step that ends at least this many seconds of
    /// training after the last checkpoint (or the start). Default 30.
    #[serde(default = "d_checkpoint_seconds")]
    pub seconds: f64,
    /// How many of the newest checkpoints are kept (>= 1); older ones are deleted. Default 2.
    #[serde(default = "d_checkpoint_keep")]
    pub keep: usize,
}

fn d_checkpoint_seconds() -> f64 {
    30.0
}
fn d_checkpoint_keep() -> usize {
    2
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            every: None,
            seconds: d_checkpoint_seconds(),
            keep: d_checkpoint_keep(),
        }
    }
}

impl CheckpointSpec {
    /// Whether these are the defaults (left out of a written spec).
    pub fn is_default(&self) -> bool {
        *self == CheckpointSpec::default()
    }

    /// Whether checkpoints are written at all.
    pub fn enabled(&self) -> bool {
        self.every != Some(0)
    }

    /// Whether a checkpoint is due after `step`, `since_last_s` seconds after the last one.
    pub fn due(&self, step: u64, since_last_s: f64) -> bool {
        match self.every {
            Some(0) => false,
            Some(n) => step.is_multiple_of(n),
            None => since_last_s >= self.seconds,
        }
    }
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
            eval_every: None,
            checkpoint: CheckpointSpec::default(),
        }
    }
}

impl TrainSpec {
    /// The loss in effect for `task`.
    pub fn loss_for(&self, task: &TaskSpec) -> LossKind {
        self.loss.unwrap_or_else(|| task.default_loss())
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::*;
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
