//! `gradguard check SPEC`: validate a spec without training.
//!
//! Beyond the spec's own rules, a CSV task's data file is read as the run would read it
//! (`gradguard_models::build_task`): a missing file, a bad header, a column that is not
//! there or a cell that is not a number fails the check, naming the file.

use std::path::PathBuf;

use gradguard_models::TaskSpec;
use gradguard_pipeline::ExperimentSpec;

use crate::UserError;

/// Arguments of `gradguard check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The spec file (.toml or .json).
    pub spec: PathBuf,
}

/// Validates the spec; prints a one-line summary when it is valid.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let spec = ExperimentSpec::load(&args.spec).map_err(|e| UserError(e.to_string()))?;
    if matches!(spec.task, TaskSpec::Csv(_) | TaskSpec::CsvSeries(_)) {
        gradguard_models::build_task(&spec.task, spec.seed)
            .map_err(|e| UserError(format!("{}: task data: {e}", args.spec.display())))?;
    }
    let detectors = spec
        .detectors
        .as_ref()
        .map(|d| d.len().to_string())
        .unwrap_or_else(|| "default".into());
    // Listed reporters add to the standard ones unless `default_reporters = false`.
    let listed = spec.reporters.as_ref().map_or(0, Vec::len);
    let reporters = match (spec.default_reporters, listed) {
        (true, 0) => "default".to_string(),
        (true, n) => format!("default + {n} listed"),
        (false, n) => n.to_string(),
    };
    say!(
        "{}: valid spec `{}` (model {}, detectors: {}, remedies: {}, reporters: {})",
        args.spec.display(),
        spec.name,
        spec.model.kind_name(),
        detectors,
        spec.remedies.len(),
        reporters
    );
    Ok(())
}
