//! `gradguard run`, `gradguard demo`, `gradguard compare` and `gradguard probe`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gradguard_pipeline::compare::{cure_found, default_cures, run_compare, variants};
use gradguard_pipeline::demos::{demo, DEMOS};
use gradguard_pipeline::probe::probe_spec;
use gradguard_pipeline::{run_experiment, ExperimentSpec, RunOptions, RunOutcome};

use crate::UserError;

/// Arguments of `gradguard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The spec file (.toml or .json).
    pub spec: PathBuf,
    /// Output directory (default `runs/<spec name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of optimiser steps (overrides the spec's epochs or steps).
    #[arg(long)]
    pub steps: Option<u64>,
}

/// Arguments of `gradguard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo to run; without a name, a short tour: an exploding run diagnosed, then the
    /// cures compared.
    pub name: Option<String>,
    /// List the demos.
    #[arg(long)]
    pub list: bool,
    /// Output directory (default `runs/demo`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (overrides the demo's).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Arguments of `gradguard compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The spec file (.toml or .json).
    pub spec: PathBuf,
    /// Cures to compare, comma separated: remedy kinds (with their documented example
    /// parameters, see `gradguard plugins`) and structural cures (fewer_layers,
    /// smaller_batch, truncated_bptt, activation, cell). Default: clipping kinds, l2 and the
    /// structural cures that apply to the model.
    #[arg(long, value_delimiter = ',')]
    pub with: Vec<String>,
    /// Output directory (default `runs/<spec name>-compare`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed (the same for every variant; overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of optimiser steps for every variant.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Run every variant under this many seeds (seed, seed+1, ...); a cure is credited only
    /// when it worked for every seed.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
}

/// Arguments of `gradguard probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The spec file (.toml or .json).
    pub spec: PathBuf,
    /// Forward/backward passes to average over.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Seed (overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn load(path: &Path) -> anyhow::Result<ExperimentSpec> {
    ExperimentSpec::load(path).map_err(|e| UserError(e.to_string()).into())
}

fn finish_line(outcome: &RunOutcome) {
    if let Some(why) = &outcome.stopped_early {
        println!("The run stopped early: {why}.");
    }
}

/// `gradguard run`.
pub fn run(args: &RunArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = load(&args.spec)?;
    let opts = RunOptions {
        out_dir: args.out.clone(),
        seed: args.seed,
        steps: args.steps,
        console: None,
        quiet,
    };
    let outcome =
        run_experiment(spec, &opts).with_context(|| format!("running {}", args.spec.display()))?;
    finish_line(&outcome);
    Ok(())
}

/// `gradguard demo`.
pub fn demo_cmd(args: &DemoArgs, quiet: bool) -> anyhow::Result<()> {
    if args.list {
        for d in DEMOS {
            println!("{:<20} {}", d.name, d.summary);
        }
        return Ok(());
    }
    let out_root = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join("demo"));
    match &args.name {
        Some(name) => {
            let d = demo(name).ok_or_else(|| {
                let names: Vec<&str> = DEMOS.iter().map(|d| d.name).collect();
                UserError(format!(
                    "unknown demo `{name}`: expected one of {}",
                    names.join(", ")
                ))
            })?;
            demo_and_compare(d, &out_root, args.seed, quiet, false)
        }
        None => tour(&out_root, args.seed, quiet),
    }
}

/// The tour: one exploding run diagnosed, then the compare table of cures.
fn tour(out_root: &Path, seed: Option<u64>, quiet: bool) -> anyhow::Result<()> {
    let d = demo("regression-sgd").ok_or_else(|| anyhow::anyhow!("the tour's demo is missing"))?;
    demo_and_compare(d, out_root, seed, quiet, true)
}

/// Runs a demo (diagnosed), then the same spec under each of the demo's cures over 3 seeds.
fn demo_and_compare(
    d: &gradguard_pipeline::demos::Demo,
    out_root: &Path,
    seed: Option<u64>,
    quiet: bool,
    tour: bool,
) -> anyhow::Result<()> {
    let (part1, part2) = if tour {
        (
            "gradguard tour, part 1 of 2: ",
            "gradguard tour, part 2 of 2: ",
        )
    } else {
        ("", "")
    };
    println!("{part1}{}: {}", d.name, d.summary);
    println!("Training without any remedy, watching every sign of exploding gradients...\n");
    let spec = d.spec()?;
    let opts = RunOptions {
        out_dir: Some(out_root.join(d.name)),
        seed,
        steps: None,
        console: None,
        quiet,
    };
    let outcome = run_experiment(spec, &opts)?;
    finish_line(&outcome);
    let spec = d.spec()?;
    let first = seed.unwrap_or(spec.seed);
    // Several seeds, so that one lucky or unlucky seed cannot credit or discredit a cure.
    let seeds: Vec<u64> = (first..first + 3).collect();
    println!(
        "\n{part2}the same run under each cure, for {} seeds (per seed, every variant starts from the same weights and data order).\n",
        seeds.len()
    );
    let with: Vec<String> = d.compare_with.iter().map(|s| s.to_string()).collect();
    let compare_dir = out_root.join(format!("{}-compare", d.name));
    let comparison = run_compare(variants(&spec, &with)?, &compare_dir, &seeds, None)?;
    println!("{}", comparison.table);
    println!("{}", seeds_note(&seeds));
    if cure_found(&comparison) {
        println!(
            "A cure is credited only where all {} seeds ended healthy; the others did not stop the explosion every time.",
            seeds.len()
        );
    } else {
        println!("No cure made every seed healthy: see each variant's report.");
    }
    println!(
        "Reports: {} (this run) and {} (comparison)",
        outcome.out_dir.join("report.html").display(),
        comparison.html.display()
    );
    Ok(())
}

/// How to read a table over several seeds.
fn seeds_note(seeds: &[u64]) -> String {
    format!(
        "Each name counts the seeds ({}) that ended healthy; the other columns are seed {}'s.",
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        seeds.first().copied().unwrap_or_default()
    )
}

/// `gradguard compare`.
pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let spec = load(&args.spec)?;
    let with = if args.with.is_empty() {
        default_cures(&spec)
    } else {
        args.with.clone()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-compare", spec.name)));
    let vs = variants(&spec, &with).map_err(|e| UserError(e.to_string()))?;
    let first = args.seed.unwrap_or(spec.seed);
    let seeds: Vec<u64> = (first..first + args.seeds.max(1)).collect();
    let comparison = run_compare(vs, &out, &seeds, args.steps)?;
    println!("{}", comparison.table);
    if seeds.len() > 1 {
        println!("{}", seeds_note(&seeds));
    }
    println!("Report: {}", comparison.html.display());
    Ok(())
}

/// `gradguard probe`.
pub fn probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let spec = load(&args.spec)?;
    let report = probe_spec(&spec, args.passes, args.seed).map_err(|e| UserError(e.to_string()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_plain_words());
    }
    Ok(())
}
