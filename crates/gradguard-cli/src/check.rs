//! `gradguard check SPEC`: validate a spec without training.

use std::path::PathBuf;

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
    let detectors = spec
        .detectors
        .as_ref()
        .map(|d| d.len().to_string())
        .unwrap_or_else(|| "default".into());
    let reporters = spec
        .reporters
        .as_ref()
        .map(|r| r.len().to_string())
        .unwrap_or_else(|| "default".into());
    println!(
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
