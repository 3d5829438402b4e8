//! # gradguard-models: dfdx models and training for gradguard
//!
//! Builds and trains the networks in which gradients explode, configured at run time from
//! the spec ([`spec`]): MLPs of any depth with an activation per layer, stacked RNN, LSTM and
//! GRU layers ([`recurrent`], each one fused op on dfdx's tape), an output head, the losses
//! mse / cross_entropy / bce, the optimisers sgd / adam / rmsprop with an optional learning-rate
//! schedule, full and truncated BPTT, synthetic tasks and CSV data ([`tasks`]), and
//! safetensors checkpoints ([`checkpoint`]).
//!
//! The [`Trainer`] is the bridge the pipeline drives at each step: it lends the model's weights
//! and gradients as a gradguard-core [`gradguard_core::ParamView`] (zero-copy over persistent
//! buffers, stable names such as `layers.0.weight`, `lstm.0.weight_hh`, `head.bias`), applies
//! the update with the (possibly edited) gradients, and supports skip, snapshot/restore and
//! evaluation.
//!
//! Dense layers and losses are custom ops on dfdx's tape too (gemm 0.19, hand-written
//! backward checked against finite differences), because dfdx's runtime-shaped parameters
//! cannot live in a `TensorCollection` and its stock matmul is slower.

#![warn(missing_docs)]

pub mod activation;
pub mod checkpoint;
pub mod error;
pub mod footprint;
pub mod init;
mod linalg;
mod network;
mod ops;
pub mod optim;
mod params;
pub mod recurrent;
pub mod rng;
pub mod spec;
pub mod tasks;
pub mod threads;
mod trainer;

#[cfg(test)]
mod gradcheck_tests;
#[cfg(test)]
mod trainer_tests;

pub use checkpoint::CheckpointExtras;
pub use error::{ModelError, SpecIssue};
pub use recurrent::{tune_allocator, CellKind};
pub use spec::{
    Activation, CheckpointSpec, InitScheme, InitSpec, LossKind, ModelSpec, OptimizerSpec,
    ScheduleSpec, TaskSpec, TrainSpec,
};
pub use tasks::{build_task, Baseline, TaskData};
pub use threads::{ThreadPool, ThreadsError};
pub use trainer::{
    DataCursor, Evaluation, ProbePass, ProbeReport, RecurrentMatrix, Snapshot, StepInfo, Trainer,
};
