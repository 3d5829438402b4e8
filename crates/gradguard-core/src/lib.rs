//! # gradguard-core: the vocabulary every other gradguard crate speaks
//!
//! What this crate is for: the types that describe one training step independently of any
//! deep-learning framework, so that detectors and remedies work on dfdx's gradients, on a
//! PyTorch dump, or on anything else that can lend `&[f32]` / `&mut [f32]` buffers.
//!
//! - [`ParamView`]: the named parameters of a model (name, shape, [`Role`], weights, gradients).
//! - [`StepStats`]: per-parameter and global gradient statistics, measured in **one fused pass**.
//!   It is the one place norms are computed; everything else reads it.
//! - [`UpdateStats`]: what the last optimiser update did (||dw||, ||w||, their ratio).
//! - [`Observation`], [`Sign`], [`Finding`], [`Action`], [`Event`], [`Diagnosis`],
//!   [`RunSummary`]: what detectors see and say, what remedies ask for, what reporters record.
//! - [`RecurrentMatrix`]: a recurrent weight measured at initialisation, from the bridge to the
//!   risk probe.
//! - [`Role::from_name`]: the one rule that infers a tensor's role from its name (and rank),
//!   for logs and dumps that carry no roles.
//! - [`Window`]: the fixed-capacity ring and robust statistics (mean/variance, median/MAD,
//!   percentile) of every plugin that keeps a history.
//! - The plugin traits [`Detector`], [`Remedy`] and [`Reporter`], each
//!   `#[typetag::serde(tag = "kind")]`, plus [`PluginInfo`] descriptions and the
//!   [`registry`] helpers that list every described kind; [`RemedyCapabilities`], what a
//!   remedy declares it is (clips and its [`ClipScope`], reads weights, penalises).
//!
//! What it may depend on: nothing of gradguard's, and no deep-learning framework (no dfdx).
//! Only serde, typetag, inventory and thiserror.

#![warn(missing_docs)]

pub mod action;
pub mod alias;
pub mod capability;
pub mod cure;
pub mod diagnosis;
pub mod error;
pub mod event;
pub mod float;
pub mod framework;
pub mod kernels;
pub mod observation;
pub mod param;
pub mod plugin;
pub mod probe;
pub mod registry;
pub mod remedy_context;
pub mod sign;
pub mod state;
pub mod stats;
pub mod window;

pub use action::{Action, ActionRecord};
pub use alias::KindAlias;
pub use capability::{ClipScope, RemedyCapabilities};
pub use cure::{CellName, Cure};
pub use diagnosis::{
    CureStatus, Diagnosis, Evidence, Learning, Prescription, RunSummary, SignSummary,
    SummaryRemedy, SummarySign, Verdict,
};
pub use error::{CoreError, RemedyError, ReportError};
pub use event::{Event, LayerRecord};
pub use framework::{EditOutcome, FrameworkError, GradEdit, GradientFramework};
pub use observation::{Observation, Series, SeriesAxis};
pub use param::{Param, ParamInfo, ParamView, Role, WeightStats};
pub use plugin::{
    CheckpointPolicy, Detector, Family, ParamDoc, PluginInfo, Remedy, Reporter, RunEnd, RunInfo,
};
pub use probe::{gate_blocks, RecurrentMatrix};
pub use remedy_context::{ParamEdit, RemedyContext, TensorEdit};
pub use sign::{DeclaredSign, Finding, Sign, SignInfo};
pub use state::{PluginState, StateError};
pub use stats::{ParamStats, ParamUpdate, StepStats, TensorNorms, UpdateStats, WithheldUpdate};
pub use window::Window;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
