//! # gradguard-pipeline: from a spec to a trained model, a diagnosis and a report
//!
//! What this crate is for: the experiment spec (TOML or JSON, unknown keys rejected, errors
//! with file, line, column and key path), the training loop that drives detectors, remedies
//! and reporters as DESIGN.md's data flow describes, `compare` and the embedded demos.
//!
//! What it may depend on: every other gradguard library crate (core, detectors, remedies,
//! report, models). It is the only crate that sees both dfdx models and the plugins.

#![warn(missing_docs)]

pub mod checkpoints;
pub mod claims;
pub mod compare;
pub mod cures;
pub mod demos;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod out_dir;
pub mod probe;
pub mod run;
pub mod spec;
/// Reading spec files (in gradguard-engine, so that loops without dfdx read specs too).
pub use gradguard_engine::spec_error;

pub use run::{
    default_reporters, merge_reporters, run_experiment, Interrupt, RunError, RunOptions, RunOutcome,
};
pub use spec::ExperimentSpec;
pub use spec_error::{load_file, parse_str, SpecError, SpecFormat};

/// Names every plugin crate so their typetag registrations are linked into any binary that
/// uses the pipeline. Returns the number of built-in kinds.
pub fn link_plugins() -> usize {
    gradguard_engine::link_plugins()
}
