//! `compare`: the same experiment under each cure, same seed and data order, side by side.

use std::path::{Path, PathBuf};

use gradguard_core::registry::plugin_info;
use gradguard_core::{Family, Remedy, Verdict};
use gradguard_detectors::MeasuredEffect;
use gradguard_report::{format_compare_table, render_compare_html, CompareVariant};

use crate::cures::{Cure, CURE_NAMES};
use crate::run::{run_experiment, RunError, RunOptions};
use crate::spec::ExperimentSpec;
use crate::spec_error::{parse_str, SpecFormat};

/// One variant to run: a name and its spec.
pub struct Variant {
    /// The variant's name (`none`, a remedy kind, or a cure label).
    pub name: String,
    /// The spec it runs.
    pub spec: ExperimentSpec,
}

/// Errors of `compare`.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A `--with` name is neither a remedy kind nor a structural cure.
    #[error("unknown cure `{0}`: expected a remedy kind (see `gradguard plugins`) or one of {1}")]
    UnknownCure(String, String),
    /// A cure does not apply to this spec.
    #[error("cure `{0}` does not apply: {1}")]
    NotApplicable(String, String),
    /// A variant's run failed.
    #[error("variant `{0}`: {1}")]
    Run(String, RunError),
    /// Writing the comparison failed.
    #[error(transparent)]
    Report(#[from] gradguard_core::ReportError),
}

/// The remedy `kind` with its documented example parameters, as a remedy object.
pub fn remedy_with_example(kind: &str) -> Option<Box<dyn Remedy>> {
    let info = plugin_info(Family::Remedy, kind)?;
    let text = if info.example.is_empty() {
        format!("kind = \"{kind}\"")
    } else {
        format!("kind = \"{kind}\"\n{}", info.example.replace(", ", "\n"))
    };
    parse_str::<Box<dyn Remedy>>(&text, SpecFormat::Toml, Path::new("<example>")).ok()
}

/// The default `--with` list for a spec: clipping kinds, L2 and the structural cures that apply.
pub fn default_cures(spec: &ExperimentSpec) -> Vec<String> {
    let mut v: Vec<String> = ["clip_global_norm", "clip_norm", "clip_value", "l2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in CURE_NAMES {
        if let Some(c) = Cure::by_name(name) {
            if c.applies_to(spec) {
                v.push(name.to_string());
            }
        }
    }
    v
}

/// Builds the variants: `none` (the spec as given) then one per name in `with`.
pub fn variants(spec: &ExperimentSpec, with: &[String]) -> Result<Vec<Variant>, CompareError> {
    let clone = |s: &ExperimentSpec| {
        s.try_clone()
            .map_err(|e| CompareError::NotApplicable("none".into(), e.to_string()))
    };
    let mut out = vec![Variant {
        name: "none".into(),
        spec: clone(spec)?,
    }];
    for name in with {
        let name = name.trim();
        if let Some(cure) = Cure::by_name(name) {
            let s = cure
                .apply(spec)
                .map_err(|why| CompareError::NotApplicable(name.to_string(), why))?;
            out.push(Variant {
                name: cure.label(),
                spec: s,
            });
        } else if let Some(remedy) = remedy_with_example(name) {
            let mut s = clone(spec)?;
            s.name = format!("{}+{}", spec.name, name);
            s.remedies.push(remedy);
            out.push(Variant {
                name: name.to_string(),
                spec: s,
            });
        } else {
            let mut known: Vec<String> = CURE_NAMES.iter().map(|s| s.to_string()).collect();
            known.extend(gradguard_core::registry::registered_kinds(Family::Remedy));
            return Err(CompareError::UnknownCure(
                name.to_string(),
                known.join(", "),
            ));
        }
    }
    Ok(out)
}

/// The outcome of a comparison.
pub struct Comparison {
    /// One entry per variant, in order (curves and figures of the first seed; the name says
    /// how many seeds ended healthy when several ran).
    pub variants: Vec<CompareVariant>,
    /// Per variant: how many seeds ended `healthy`, out of how many.
    pub healthy_seeds: Vec<(usize, usize)>,
    /// Measured effects, for re-ranking prescriptions: a variant counts as `healthy` only when
    /// every seed did.
    pub effects: Vec<MeasuredEffect>,
    /// Where compare.html was written.
    pub html: PathBuf,
    /// The console table.
    pub table: String,
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Healthy => 0,
        Verdict::Suspect => 1,
        Verdict::Exploding => 2,
    }
}

/// Runs every variant under every seed in `seeds` (the spec's own seed when empty; each run
/// writes its outputs under `out_dir/<variant>[/seed-<s>]`), then writes
/// `out_dir/compare.html` and returns the table. Every variant sees the same seeds, so the
/// same initial weights and data order. A variant's verdict is its worst over the seeds, so
/// a cure is credited only when it worked for every seed.
pub fn run_compare(
    variants: Vec<Variant>,
    out_dir: &Path,
    seeds: &[u64],
    steps: Option<u64>,
) -> Result<Comparison, CompareError> {
    let mut results = Vec::new();
    let mut effects = Vec::new();
    let mut healthy_seeds = Vec::new();
    for v in variants {
        let seed_list: Vec<Option<u64>> = if seeds.is_empty() {
            vec![None]
        } else {
            seeds.iter().map(|&s| Some(s)).collect()
        };
        let base = out_dir.join(v.name.replace(['/', '\\', ' '], "_"));
        let mut first: Option<CompareVariant> = None;
        let mut worst = Verdict::Healthy;
        let mut healthy = 0;
        for seed in &seed_list {
            let spec = v
                .spec
                .try_clone()
                .map_err(|e| CompareError::NotApplicable(v.name.clone(), e.to_string()))?;
            let dir = match seed {
                Some(s) if seed_list.len() > 1 => base.join(format!("seed-{s}")),
                _ => base.clone(),
            };
            let opts = RunOptions {
                out_dir: Some(dir),
                seed: *seed,
                steps,
                console: Some(false),
                quiet: true,
            };
            let outcome =
                run_experiment(spec, &opts).map_err(|e| CompareError::Run(v.name.clone(), e))?;
            let verdict = outcome.summary.verdict;
            if verdict == Verdict::Healthy {
                healthy += 1;
            }
            if rank(verdict) > rank(worst) {
                worst = verdict;
            }
            if first.is_none() {
                first = Some(outcome.variant);
            }
        }
        let Some(mut variant) = first else { continue };
        variant.name = if seed_list.len() > 1 {
            format!("{} ({healthy}/{} healthy)", v.name, seed_list.len())
        } else {
            v.name.clone()
        };
        effects.push(MeasuredEffect {
            remedy: v.name.replace('=', " "),
            verdict: worst,
            final_loss: variant.summary.final_train_loss,
        });
        healthy_seeds.push((healthy, seed_list.len()));
        results.push(variant);
    }
    let html = out_dir.join("compare.html");
    render_compare_html(&results, seeds, &html)?;
    let table = format_compare_table(&results);
    Ok(Comparison {
        variants: results,
        healthy_seeds,
        effects,
        html,
        table,
    })
}

/// Whether some variant other than `none` was healthy for every seed while `none` was not.
pub fn cure_found(c: &Comparison) -> bool {
    let base_all_healthy = c
        .healthy_seeds
        .first()
        .map(|(h, n)| h == n)
        .unwrap_or(false);
    !base_all_healthy
        && c.healthy_seeds
            .iter()
            .skip(1)
            .any(|(h, n)| h == n && *n > 0)
}
