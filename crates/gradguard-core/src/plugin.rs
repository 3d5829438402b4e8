//! The three plugin traits, their contexts, and plugin descriptions.
//!
//! # Writing a plugin in your own crate
//! 1. Define a struct with serde derives (`#[serde(deny_unknown_fields)]` so typos in specs are
//!    errors; `#[serde(default = ...)]` for parameters with defaults).
//! 2. Implement the trait with `#[typetag::serde(name = "my_kind")]` on the `impl` block. Your
//!    crate needs `typetag` and `serde` as dependencies.
//!    For a remedy, declare what it is with [`Remedy::capabilities`] (it clips, and which
//!    gradients; it reads the weights; it adds a penalty).
//! 3. If it keeps history between steps (a window, a streak, an EMA), implement `save_state`
//!    and `restore_state` (two lines each, see [`PluginState`]) so that a resumed run
//!    continues exactly; mark those fields `#[serde(skip)]` so they stay out of specs.
//! 4. Describe it with [`describe_plugin!`](crate::describe_plugin) so `gradguard plugins`
//!    lists it (a test in gradguard fails for a built-in kind without a description).
//! 5. Make sure the final binary references your crate: typetag registers kinds with
//!    link-time constructors, and a crate the binary never names can be dropped by the linker
//!    ("unknown variant `my_kind`, there are no variants"). Calling any function of your
//!    crate from `main` (for example a `pub fn register() {}`) is enough.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::capability::RemedyCapabilities;
use crate::diagnosis::{Diagnosis, RunSummary};
use crate::error::{RemedyError, ReportError};
use crate::event::Event;
use crate::observation::Observation;
use crate::param::ParamInfo;
use crate::remedy_context::RemedyContext;
use crate::sign::Finding;
use crate::state::{PluginState, StateError};

/// Watches each step's [`Observation`] and reports what it sees as [`Finding`]s.
///
/// A detector keeps its own history, is deterministic, and should not allocate per step in
/// the common case (findings are rare; allocate only when pushing one).
#[typetag::serde(tag = "kind")]
pub trait Detector: Send {
    /// Looks at one step and pushes any findings onto `findings`.
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>);

    /// Checks the parameters before anything runs (spec validation calls it): `Err` says
    /// which parameter is wrong, what was expected and what was given. Default: nothing to
    /// check.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Forgets all history (e.g. after a rollback restored earlier weights).
    fn reset(&mut self) {}

    /// The history this detector keeps between steps (windows, streaks), for checkpoints: a
    /// fresh detector built from the same parameters and given it by
    /// [`Detector::restore_state`] must then behave exactly as this one would. `None` when
    /// it keeps none (the default). A detector with history that does not implement this
    /// resumes with an empty history, so a resumed run may then differ from an uninterrupted
    /// one. See [`PluginState`] for the two-line implementation.
    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        Ok(None)
    }

    /// Restores what [`Detector::save_state`] returned. Default: an error, since a detector
    /// without history was given one.
    fn restore_state(&mut self, _state: &PluginState) -> Result<(), StateError> {
        Err(StateError::unexpected(self.typetag_name()))
    }
}

/// How a remedy wants checkpoints kept so that it can ask for [`Action::Rollback`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    /// Keep a checkpoint every `every` good steps.
    pub every: u64,
    /// Keep the last `keep` checkpoints.
    pub keep: usize,
    /// After restoring, skip this many batches (the data that triggered the explosion).
    pub skip_batches: u64,
}

/// A cure that acts on one step: edits gradients in place and/or asks for an [`Action`].
///
/// Remedies run in spec order after the detectors. They read the shared [`StepStats`](crate::StepStats) rather
/// than recomputing norms, and keep it true after they change gradients.
#[typetag::serde(tag = "kind")]
pub trait Remedy: Send {
    /// Acts on the step. Returning `Err` stops the run with that error.
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError>;

    /// Checks the parameters, before anything runs: spec validation (`gradguard check`, and
    /// every run before training) calls it, so a bad parameter (`max_norm = -1`) is refused
    /// with its key path instead of failing mid-run. Default: nothing to check.
    fn validate(&self) -> Result<(), RemedyError> {
        Ok(())
    }

    /// What this remedy is: whether it clips and which gradients it bounds, whether it reads
    /// the weights, whether it adds a penalty. The loop copies it onto every
    /// [`ActionRecord`](crate::ActionRecord), so the diagnosis knows a clipping remedy by what
    /// it declares, not by its kind's name. Default: nothing declared. A remedy that clips or
    /// reads weights should say so, e.g.
    /// `RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm)`.
    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
    }

    /// The global-norm threshold this remedy clips to, if it has one (for charts).
    fn clip_threshold(&self) -> Option<f64> {
        None
    }

    /// Checkpoints this remedy needs the loop to keep, if it may ask for a rollback.
    fn checkpoint_policy(&self) -> Option<CheckpointPolicy> {
        None
    }

    /// Forgets all history.
    fn reset(&mut self) {}

    /// The history this remedy keeps between steps (windows, EMAs, counters), for
    /// checkpoints; `None` when it keeps none (the default). Same contract as
    /// [`Detector::save_state`].
    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        Ok(None)
    }

    /// Restores what [`Remedy::save_state`] returned. Default: an error, since a remedy
    /// without history was given one.
    fn restore_state(&mut self, _state: &PluginState) -> Result<(), StateError> {
        Err(StateError::unexpected(self.typetag_name()))
    }
}

/// What a reporter learns when a run starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The experiment's name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Where outputs go.
    pub out_dir: PathBuf,
    /// The model's parameters.
    pub params: Vec<ParamInfo>,
    /// The clip threshold of the first clipping remedy, for charts.
    pub clip_threshold: Option<f64>,
}

/// What a reporter learns when a run ends.
#[derive(Clone, Copy, Debug)]
pub struct RunEnd<'a> {
    /// The diagnosis.
    pub diagnosis: &'a Diagnosis,
    /// The summary.
    pub summary: &'a RunSummary,
}

/// Consumes events as they happen, and the diagnosis at the end.
#[typetag::serde(tag = "kind")]
pub trait Reporter: Send {
    /// Called once before the first step (create files here).
    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError>;
    /// Called after every step.
    fn event(&mut self, event: &Event) -> Result<(), ReportError>;
    /// Called once at the end, also when the run stopped early.
    fn finish(&mut self, end: &RunEnd<'_>) -> Result<(), ReportError>;

    /// Writes out whatever is buffered, so that the files hold every event so far (the loop
    /// calls it before writing a checkpoint: a resumed run reads the events back). Default:
    /// nothing buffered.
    fn flush(&mut self) -> Result<(), ReportError> {
        Ok(())
    }

    /// Called instead of [`Reporter::start`] when a run resumes from a checkpoint: `past`
    /// holds the events the run recorded up to the checkpoint (read back from its events
    /// log), so the reporter can rebuild what it writes. The default starts afresh and
    /// replays them through [`Reporter::event`]; a reporter whose output is not rebuilt that
    /// way (a console, a file it appends to) overrides it.
    fn resume(&mut self, run: &RunInfo, past: &[Event]) -> Result<(), ReportError> {
        self.start(run)?;
        for e in past {
            self.event(e)?;
        }
        Ok(())
    }
}

/// The three plugin families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// [`Detector`]s.
    Detector,
    /// [`Remedy`]s.
    Remedy,
    /// [`Reporter`]s.
    Reporter,
}

impl Family {
    /// All families.
    pub const ALL: [Family; 3] = [Family::Detector, Family::Remedy, Family::Reporter];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Detector => "detector",
            Family::Remedy => "remedy",
            Family::Reporter => "reporter",
        }
    }

    /// The spec key holding this family's list (`detectors`, `remedies`, `reporters`).
    pub fn spec_key(self) -> &'static str {
        match self {
            Family::Detector => "detectors",
            Family::Remedy => "remedies",
            Family::Reporter => "reporters",
        }
    }
}

/// One parameter of a plugin, for `gradguard plugins`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamDoc {
    /// The key in the spec.
    pub name: &'static str,
    /// Its default as written in TOML, or `None` when it is required.
    pub default: Option<&'static str>,
    /// What it means, one line.
    pub doc: &'static str,
}

/// A plugin kind's description, submitted with [`describe_plugin!`](crate::describe_plugin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    /// Which trait it implements.
    pub family: Family,
    /// Its `kind` name in specs.
    pub kind: &'static str,
    /// What it does, one line.
    pub summary: &'static str,
    /// Its parameters with defaults.
    pub params: &'static [ParamDoc],
    /// A complete, valid set of parameters as the body of a TOML inline table (without the
    /// `kind`), e.g. `max_norm = 1.0`; empty when every parameter has a default. Shown by
    /// `gradguard plugins` and deserialised by the registration tests.
    pub example: &'static str,
}

inventory::collect!(PluginInfo);

/// Registers a [`PluginInfo`] so `gradguard plugins` can list the kind.
///
/// ```
/// use gradguard_core::{describe_plugin, Family, ParamDoc, PluginInfo};
/// describe_plugin!(PluginInfo {
///     family: Family::Detector,
///     kind: "my_detector",
///     summary: "Fires when the loss exceeds a limit.",
///     params: &[ParamDoc { name: "limit", default: Some("10.0"), doc: "the limit" }],
///     example: "limit = 3.0",
/// });
/// ```
#[macro_export]
macro_rules! describe_plugin {
    ($info:expr) => {
        $crate::__private::inventory::submit! { $info }
    };
}
