//! # gradguard: find, explain and cure exploding gradients
//!
//! The facade over gradguard's crates. Each is re-exported under a short name, and
//! [`prelude`] brings the everyday types into scope. Depend on a single crate instead
//! (for example `gradguard-remedies` in your own training loop) when you need only that.
//!
//! | module | crate | for |
//! |---|---|---|
//! | [`cli`] | gradguard-cli | the command line, as a library call (`cli::main`) for binaries with your own plugins |
//! | [`core`] | gradguard-core | parameter views, step statistics, signs, findings, the plugin traits |
//! | [`detectors`] | gradguard-detectors | one detector per sign, the diagnosis |
//! | [`dump`] | gradguard-dump | gradient dumps on disk (safetensors), for `gradguard grads` |
//! | [`engine`] | gradguard-engine | the Guard: one step of gradguard for any training loop |
//! | [`remedies`] | gradguard-remedies | clipping, adaptive clipping, penalties, guards |
//! | [`report`] | gradguard-report | console, JSON lines, summary.json, HTML, TensorBoard |
//! | [`models`] | gradguard-models | dfdx MLP / RNN / LSTM / GRU, tasks, optimisers |
//! | [`pipeline`] | gradguard-pipeline | the experiment spec and the training loop |
//! | `testkit` (feature `testkit`) | gradguard-testkit | property checks for your own remedies |

#![warn(missing_docs)]

pub use gradguard_cli as cli;
pub use gradguard_core as core;
pub use gradguard_detectors as detectors;
pub use gradguard_dump as dump;
pub use gradguard_engine as engine;
pub use gradguard_models as models;
pub use gradguard_pipeline as pipeline;
pub use gradguard_remedies as remedies;
pub use gradguard_report as report;
#[cfg(feature = "testkit")]
pub use gradguard_testkit as testkit;

use gradguard_core::Family;

/// The everyday types.
pub mod prelude {
    pub use gradguard_core::{
        Action, Detector, Diagnosis, Event, Family, Finding, Observation, ParamView, Remedy,
        RemedyContext, Reporter, Role, Sign, StepStats, UpdateStats, Verdict,
    };
    pub use gradguard_engine::{Decision, Guard, StepInput, TrainingHost};
    pub use gradguard_pipeline::ExperimentSpec;
}

/// Every built-in plugin kind, by family. Calling it also guarantees that the linker keeps
/// each plugin crate, so their typetag registrations are present in the binary.
pub fn builtin_kinds() -> Vec<(Family, &'static str)> {
    let mut v = Vec::new();
    v.extend(
        gradguard_detectors::builtin_kinds()
            .iter()
            .map(|k| (Family::Detector, *k)),
    );
    v.extend(
        gradguard_remedies::builtin_kinds()
            .iter()
            .map(|k| (Family::Remedy, *k)),
    );
    v.extend(
        gradguard_report::builtin_kinds()
            .iter()
            .map(|k| (Family::Reporter, *k)),
    );
    v
}

/// The README's Rust snippets, compiled and run as doc tests (so they stay true).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
