//! `gradguard run`, `gradguard demo`, `gradguard compare` and `gradguard probe`.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gradguard_core::{Diagnosis, Prescription};
use gradguard_detectors::Risk;
use gradguard_pipeline::compare::{
    cure_found, default_cures, parse_cures, run_compare, variants, CompareOptions, Comparison,
};
use gradguard_pipeline::demos::{demo, DEMOS};
use gradguard_pipeline::probe::probe_spec;
use gradguard_pipeline::run::{verify_prescriptions, DiagnosedRun, VerifyOptions};
use gradguard_pipeline::{run_experiment, ExperimentSpec, RunOptions, RunOutcome};

use crate::UserError;

/// Arguments of `gradguard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The spec file (.toml or .json).
    pub spec: PathBuf,
    /// Output directory, used as it is (refused when not empty, unless --overwrite). Default:
    /// a fresh `runs/<spec name>/<UTC time>`, with `runs/<spec name>/latest` pointing at it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let --out name a directory that holds an earlier run: its outputs are deleted first.
    #[arg(long)]
    pub overwrite: bool,
    /// Seed (overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of optimiser steps (overrides the spec's epochs or steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Continue the interrupted run in --out (default: `runs/<spec name>/latest`) from its
    /// newest checkpoint, instead of starting a new one. The spec must be the one that run
    /// started with (its seed and steps included); `gradguard resume RUN_DIR` needs no spec.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Threads for each training step (default: RAYON_NUM_THREADS when set, else the cores
    /// available to the process, respecting CPU affinity and cgroup limits). Results are the
    /// same for any number.
    #[arg(long, value_name = "N", value_parser = parse_threads_arg)]
    pub threads: Option<NonZeroUsize>,
    /// How to verify the prescriptions when the run is not healthy.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// Arguments of `gradguard resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// A run directory written by `gradguard run` (it holds spec.json and checkpoints/).
    pub run_dir: PathBuf,
    /// Threads for each training step (default: RAYON_NUM_THREADS when set, else the cores
    /// available to the process, respecting CPU affinity and cgroup limits). Results are the
    /// same for any number.
    #[arg(long, value_name = "N", value_parser = parse_threads_arg)]
    pub threads: Option<NonZeroUsize>,
    /// How to verify the prescriptions when the run is not healthy.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// How prescriptions are verified: the top ones are run over several seeds, from the same
/// initial weights, data order and number of steps as the diagnosed run.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// How many prescriptions to verify, from the top.
    #[arg(long = "verify", value_name = "K", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_VERIFY))]
    pub top: usize,
    /// Do not verify: every prescription stays `untested`.
    #[arg(long)]
    pub no_verify: bool,
    /// Seeds per verified prescription (the run's seed, then the next ones).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
    pub verify_seeds: u64,
    /// Verify only when the estimated time of the verification runs is at most this many
    /// seconds (the diagnosed run's time times the runs needed); otherwise print the command
    /// that verifies later.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds)]
    pub verify_budget: f64,
}

impl VerifyArgs {
    fn options(&self, budget: bool) -> Option<VerifyOptions> {
        (!self.no_verify && self.top > 0).then(|| VerifyOptions {
            top: self.top,
            seeds: self.verify_seeds.max(1),
            budget_s: budget.then_some(self.verify_budget),
        })
    }
}

/// Arguments of `gradguard verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyRunArgs {
    /// A run directory written by `gradguard run` (it holds spec.json and summary.json).
    pub run_dir: PathBuf,
    /// How many prescriptions to verify, from the top.
    #[arg(long = "top", value_name = "K", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_VERIFY))]
    pub top: usize,
    /// Seeds per verified prescription.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
    pub seeds: u64,
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
    /// Output directory, used as it is (refused when not empty, unless --overwrite). Default:
    /// a fresh `runs/demo/<UTC time>`, with `runs/demo/latest` pointing at it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let --out name a directory that holds an earlier run: its outputs are deleted first.
    #[arg(long)]
    pub overwrite: bool,
    /// Seed (overrides the demo's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads for each training step of the demo's run (default: RAYON_NUM_THREADS when set,
    /// else the cores available to the process); its comparison shares the cores as
    /// `compare` does. Results are the same for any number.
    #[arg(long, value_name = "N", value_parser = parse_threads_arg)]
    pub threads: Option<NonZeroUsize>,
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
    /// Output directory, used as it is (refused when not empty, unless --overwrite). Default:
    /// a fresh `runs/<spec name>-compare/<UTC time>`, with `latest` beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let --out name a directory that holds an earlier comparison: its outputs are deleted
    /// first.
    #[arg(long)]
    pub overwrite: bool,
    /// Seed (the same for every variant; overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of optimiser steps for every variant.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Run every variant under this many seeds (seed, seed+1, ...); a cure is credited only
    /// when it worked for every seed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
    pub seeds: u64,
    /// How many runs at once (default: the cores available to the process, divided by
    /// --threads when that is given). The comparison is the same for any number: each run is
    /// deterministic per seed.
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub jobs: Option<usize>,
    /// Threads of each run (default: RAYON_NUM_THREADS when set, else the cores left when
    /// --jobs runs share the cores available, at least 1: jobs x threads <= cores). Both given
    /// are used as given. The comparison is the same for any number.
    #[arg(long, value_name = "N", value_parser = parse_threads_arg)]
    pub threads: Option<NonZeroUsize>,
    /// Print the comparison as JSON (what compare.json, written beside compare.html, holds)
    /// instead of the table and ranking.
    #[arg(long)]
    pub json: bool,
}

/// The most seeds `compare`, `verify` and `claims` accept (each is a full training run per
/// variant).
pub const MAX_SEEDS: u64 = 1000;

/// The most prescriptions verification runs.
pub const MAX_VERIFY: u64 = 64;

/// `--threads N`: a whole number, at least 1.
fn parse_threads_arg(s: &str) -> Result<NonZeroUsize, String> {
    gradguard_models::threads::parse_threads(s, "--threads").map_err(|e| e.to_string())
}

/// Checks `RAYON_NUM_THREADS` before any work starts, so a bad value is a user error at once.
fn check_threads_env() -> Result<(), UserError> {
    gradguard_models::threads::threads_from_env()
        .map(|_| ())
        .map_err(|e| UserError(e.to_string()))
}

/// A time budget: a finite number of seconds >= 0.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of seconds >= 0, got `{s}`")),
    }
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
    /// Exit 1 when the risk is at least this level (`medium` or `high`), to gate CI. The
    /// report is printed first.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub fail_on: Option<FailOn>,
}

/// The risk level at which `gradguard probe --fail-on` fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Fail on a moderate or high risk.
    #[value(alias = "moderate")]
    Medium,
    /// Fail on a high risk only.
    High,
}

impl FailOn {
    /// Whether `risk` reaches this level.
    pub fn fails(self, risk: Risk) -> bool {
        let at_least = match self {
            FailOn::Medium => Risk::Moderate,
            FailOn::High => Risk::High,
        };
        risk >= at_least
    }
}

fn load(path: &Path) -> anyhow::Result<ExperimentSpec> {
    ExperimentSpec::load(path).map_err(|e| UserError(e.to_string()).into())
}

fn finish_line(outcome: &RunOutcome) {
    if let Some(why) = &outcome.stopped_early {
        say!("The run stopped early: {why}.");
    }
    if let Some(v) = &outcome.verification {
        say!(
            "\nVerification: the top prescriptions, each over the same seeds, from the same initial weights and data order, stopped once beyond saving:\n"
        );
        say!("{}", v.table);
        say!("Verification report: {}", v.html.display());
    } else if outcome.diagnosis.verdict != gradguard_core::Verdict::Healthy {
        if let Some(p) = outcome.diagnosis.prescriptions.first() {
            if p.evidence.note.starts_with("not verified") {
                say!("The prescriptions are untested: {}.", p.evidence.note);
            }
        }
    }
}

/// The directory a command writes to: `--out` as given (refused when it holds files, unless
/// `--overwrite`), or a fresh one under `default_root` (see [`gradguard_pipeline::out_dir`]).
fn output_dir(out: Option<&Path>, overwrite: bool, default_root: &Path) -> anyhow::Result<PathBuf> {
    use gradguard_pipeline::out_dir::{claim_dir, fresh_run_dir, OutDirError};
    let claimed = match out {
        Some(dir) => claim_dir(dir, overwrite).map(|()| dir.to_path_buf()),
        None => fresh_run_dir(default_root),
    };
    claimed.map_err(|e| match e {
        OutDirError::NotEmpty { .. } => UserError(e.to_string()).into(),
        other => anyhow::Error::from(other),
    })
}

/// `gradguard run`.
pub fn run(args: &RunArgs, quiet: bool) -> anyhow::Result<()> {
    check_threads_env()?;
    let spec = load(&args.spec)?;
    if args.resume {
        return run_resume(args, spec, quiet);
    }
    let out = output_dir(
        args.out.as_deref(),
        args.overwrite,
        &PathBuf::from("runs").join(&spec.name),
    )?;
    let opts = RunOptions {
        out_dir: Some(out),
        seed: args.seed,
        steps: args.steps,
        console: None,
        quiet,
        verify: args.verify.options(true),
        stop_when_beyond_saving: false,
        interrupt: Some(crate::interrupt().clone()),
        unguarded: false,
        resume: false,
        threads: args.threads,
    };
    let outcome =
        run_experiment(spec, &opts).with_context(|| format!("running {}", args.spec.display()))?;
    finish_line(&outcome);
    match outcome.interrupted {
        Some(sig) => Err(crate::Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// `gradguard run SPEC --resume`: the run in --out (or `runs/<name>/latest`), checked to have
/// started from this spec.
fn run_resume(args: &RunArgs, mut spec: ExperimentSpec, quiet: bool) -> anyhow::Result<()> {
    let run_dir = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            let latest = PathBuf::from("runs").join(&spec.name).join("latest");
            std::fs::canonicalize(&latest).map_err(|e| {
                UserError(format!(
                    "{}: {e}: no earlier run of `{}` to resume (give its directory with --out)",
                    latest.display(),
                    spec.name
                ))
            })?
        }
    };
    let recorded_path = run_dir.join("spec.json");
    let recorded = load(&recorded_path)?;
    let seed = args.seed.unwrap_or(spec.seed);
    if let Some(steps) = args.steps {
        spec.train.steps = Some(steps);
        spec.train.epochs = None;
    }
    let given = gradguard_pipeline::run::spec_record(&spec, seed);
    let then = gradguard_pipeline::run::spec_record(&recorded, recorded.seed);
    if given.is_none() || given != then {
        return Err(UserError(format!(
            "{} was started from a different spec (or seed or steps) than {}: resume it with `gradguard resume {}`, which uses the spec it started with",
            run_dir.display(),
            args.spec.display(),
            run_dir.display()
        ))
        .into());
    }
    resume_dir(&run_dir, recorded, &args.verify, args.threads, quiet)
}

/// `gradguard resume RUN_DIR`.
pub fn resume(args: &ResumeArgs, quiet: bool) -> anyhow::Result<()> {
    check_threads_env()?;
    let spec = load(&args.run_dir.join("spec.json"))?;
    resume_dir(&args.run_dir, spec, &args.verify, args.threads, quiet)
}

fn resume_dir(
    run_dir: &Path,
    spec: ExperimentSpec,
    verify: &VerifyArgs,
    threads: Option<NonZeroUsize>,
    quiet: bool,
) -> anyhow::Result<()> {
    let opts = RunOptions {
        out_dir: Some(run_dir.to_path_buf()),
        seed: None,
        steps: None,
        console: None,
        quiet,
        verify: verify.options(true),
        stop_when_beyond_saving: false,
        interrupt: Some(crate::interrupt().clone()),
        unguarded: false,
        resume: true,
        threads,
    };
    let outcome = run_experiment(spec, &opts).map_err(|e| match e {
        gradguard_pipeline::RunError::Resume(_) => anyhow::Error::from(UserError(e.to_string())),
        other => anyhow::Error::from(other),
    })?;
    finish_line(&outcome);
    match outcome.interrupted {
        Some(sig) => Err(crate::Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// A comparison stopped by a signal becomes [`crate::Interrupted`] (exit 128 + signal).
fn interrupted(e: gradguard_pipeline::compare::CompareError) -> anyhow::Error {
    match e {
        gradguard_pipeline::compare::CompareError::Interrupted(sig) => {
            crate::Interrupted(sig).into()
        }
        other => other.into(),
    }
}

/// The prescriptions ranked by a comparison, one line each.
fn ranked_lines(prescriptions: &[Prescription]) -> String {
    let mut out = String::new();
    for (i, p) in prescriptions.iter().enumerate() {
        out.push_str(&format!(
            "  {}. {} [{}]\n",
            i + 1,
            p.remedy,
            p.evidence.describe()
        ));
    }
    out
}

fn print_ranking(c: &Comparison) {
    if let Some(d) = &c.ranked {
        if !d.prescriptions.is_empty() {
            say!(
                "What to try, ranked by these runs (the diagnosis of `none`, seed {}):",
                c.outcomes
                    .first()
                    .and_then(|o| o.seeds.first())
                    .map_or(0, |s| s.seed)
            );
            say_text!("{}", ranked_lines(&d.prescriptions));
        }
    }
}

/// `gradguard verify RUN_DIR`: runs the prescriptions of a finished run and writes their
/// evidence into its summary.json.
pub fn verify(args: &VerifyRunArgs) -> anyhow::Result<()> {
    let spec_path = args.run_dir.join("spec.json");
    let summary_path = args.run_dir.join("summary.json");
    let spec = load(&spec_path)?;
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| UserError(format!("{}: {e}", summary_path.display())))?;
    let mut summary: gradguard_core::RunSummary = serde_json::from_str(&text).map_err(|e| {
        UserError(format!(
            "{}: line {}, column {}: not a gradguard summary.json: {e}",
            summary_path.display(),
            e.line(),
            e.column()
        ))
    })?;
    if summary.verdict == gradguard_core::Verdict::Healthy || summary.prescriptions.is_empty() {
        say!(
            "{}: verdict {}, no prescription to verify.",
            args.run_dir.display(),
            summary.verdict.as_str()
        );
        return Ok(());
    }
    let mut diagnosis = Diagnosis {
        verdict: summary.verdict,
        rule: String::new(),
        checklist: Vec::new(),
        origin: None,
        prescriptions: summary.prescriptions.clone(),
        first_nonfinite_step: summary.first_nonfinite_step,
        max_grad_norm: summary.max_grad_norm,
        verdict_step: None,
    };
    let planned = gradguard_models::Trainer::new(&spec.model, &spec.task, &spec.train, spec.seed)
        .map_err(|e| UserError(format!("{}: {e}", spec_path.display())))?
        .planned_steps();
    let comparison = verify_prescriptions(
        &spec,
        &mut diagnosis,
        &VerifyOptions {
            top: args.top.max(1),
            seeds: args.seeds.max(1),
            budget_s: None,
        },
        &DiagnosedRun {
            seed: spec.seed,
            steps: planned,
            run_seconds: 0.0,
            out_dir: &args.run_dir,
            interrupt: Some(crate::interrupt()),
        },
    )
    .map_err(interrupted)?;
    summary.prescriptions = diagnosis.prescriptions.clone();
    let json = serde_json::to_string_pretty(&summary)?;
    gradguard_report::write_atomically(&summary_path, json.as_bytes())?;
    if let Some(c) = &comparison {
        say!("{}", c.table);
        say!("Verification report: {}", c.html.display());
    }
    say!("What to try, ranked by these runs:");
    say_text!("{}", ranked_lines(&diagnosis.prescriptions));
    say!("Updated {}", summary_path.display());
    Ok(())
}

/// `gradguard demo`.
pub fn demo_cmd(args: &DemoArgs, quiet: bool) -> anyhow::Result<()> {
    if args.list {
        for d in DEMOS {
            say!("{:<20} {}", d.name, d.summary);
        }
        return Ok(());
    }
    check_threads_env()?;
    // The demo is named before anything is written.
    let named = match &args.name {
        Some(name) => Some(demo(name).ok_or_else(|| {
            let names: Vec<&str> = DEMOS.iter().map(|d| d.name).collect();
            let hint = gradguard_pipeline::cures::did_you_mean(name, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            UserError(format!(
                "unknown demo `{name}`{hint}: expected one of {}",
                names.join(", ")
            ))
        })?),
        None => None,
    };
    let out_root = output_dir(
        args.out.as_deref(),
        args.overwrite,
        &PathBuf::from("runs").join("demo"),
    )?;
    match named {
        Some(d) => demo_and_compare(d, &out_root, args.seed, args.threads, quiet, false),
        None => tour(&out_root, args.seed, args.threads, quiet),
    }
}

/// The tour: one exploding run diagnosed, then the compare table of cures.
fn tour(
    out_root: &Path,
    seed: Option<u64>,
    threads: Option<NonZeroUsize>,
    quiet: bool,
) -> anyhow::Result<()> {
    let d = demo("regression-sgd").ok_or_else(|| anyhow::anyhow!("the tour's demo is missing"))?;
    demo_and_compare(d, out_root, seed, threads, quiet, true)
}

/// Runs a demo (diagnosed), then the same spec under each of the demo's cures over 3 seeds.
fn demo_and_compare(
    d: &gradguard_pipeline::demos::Demo,
    out_root: &Path,
    seed: Option<u64>,
    threads: Option<NonZeroUsize>,
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
    say!("{part1}{}: {}", d.name, d.summary);
    say!("Training without any remedy, watching every sign of exploding gradients...\n");
    let spec = d.spec()?;
    let opts = RunOptions {
        out_dir: Some(out_root.join(d.name)),
        seed,
        steps: None,
        console: None,
        quiet,
        // A demo always verifies its prescriptions: the advice it prints is measured.
        verify: Some(VerifyOptions {
            budget_s: None,
            ..VerifyOptions::default()
        }),
        stop_when_beyond_saving: false,
        interrupt: Some(crate::interrupt().clone()),
        unguarded: false,
        resume: false,
        threads,
    };
    let outcome = run_experiment(spec, &opts)?;
    finish_line(&outcome);
    if let Some(sig) = outcome.interrupted {
        return Err(crate::Interrupted(sig).into());
    }
    let spec = d.spec()?;
    let first = seed.unwrap_or(spec.seed);
    // Several seeds, so that one lucky or unlucky seed cannot credit or discredit a cure.
    let seeds: Vec<u64> = (first..first + 3).collect();
    say!(
        "\n{part2}the same run under each cure, for {} seeds (per seed, every variant starts from the same weights and data order).\n",
        seeds.len()
    );
    let with: Vec<String> = d.compare_with.iter().map(|s| s.to_string()).collect();
    let cures = parse_cures(&with)?;
    let compare_dir = out_root.join(format!("{}-compare", d.name));
    let comparison = run_compare(
        variants(&spec, &cures)?,
        &compare_dir,
        &CompareOptions {
            seeds: seeds.clone(),
            steps: None,
            stop_when_beyond_saving: false,
            interrupt: Some(crate::interrupt().clone()),
            unguarded: false,
            jobs: 0,
            threads,
            executor: Default::default(),
        },
    )
    .map_err(interrupted)?;
    say!("{}", comparison.table);
    say!("{}", seeds_note(&seeds));
    if cure_found(&comparison) {
        say!(
            "A cure is credited only where all {} seeds ended healthy; the others did not stop the explosion every time.",
            seeds.len()
        );
    } else {
        say!("No cure made every seed healthy: see each variant's report.");
    }
    say!(
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
    check_threads_env()?;
    let spec = load(&args.spec)?;
    let cures = if args.with.is_empty() {
        default_cures(&spec)
    } else {
        parse_cures(&args.with).map_err(|e| UserError(e.to_string()))?
    };
    let out = output_dir(
        args.out.as_deref(),
        args.overwrite,
        &PathBuf::from("runs").join(format!("{}-compare", spec.name)),
    )?;
    let vs = variants(&spec, &cures).map_err(|e| UserError(e.to_string()))?;
    let first = args.seed.unwrap_or(spec.seed);
    let seeds: Vec<u64> = (first..first.saturating_add(args.seeds.max(1))).collect();
    let comparison = run_compare(
        vs,
        &out,
        &CompareOptions {
            seeds: seeds.clone(),
            steps: args.steps,
            stop_when_beyond_saving: false,
            interrupt: Some(crate::interrupt().clone()),
            unguarded: false,
            jobs: args.jobs.unwrap_or(0),
            threads: args.threads,
            executor: crate::executor(),
        },
    )
    .map_err(interrupted)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison.to_json())?);
        return Ok(());
    }
    say!("{}", comparison.table);
    if seeds.len() > 1 {
        say!("{}", seeds_note(&seeds));
    }
    print_ranking(&comparison);
    say!(
        "Report: {} (as JSON: {})",
        comparison.html.display(),
        comparison.json.display()
    );
    Ok(())
}

/// `gradguard probe`.
pub fn probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let spec = load(&args.spec)?;
    let report = probe_spec(&spec, args.passes, args.seed).map_err(|e| UserError(e.to_string()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say_text!("{}", report.to_plain_words());
    }
    if let Some(level) = args.fail_on {
        if level.fails(report.risk) {
            return Err(UserError(format!(
                "{}: the risk of explosion at initialisation is {} (--fail-on {})",
                args.spec.display(),
                report.risk.as_str(),
                match level {
                    FailOn::Medium => "medium",
                    FailOn::High => "high",
                }
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod fail_on_tests {
    use super::*;

    #[test]
    fn fail_on_thresholds() {
        assert!(!FailOn::High.fails(Risk::Low));
        assert!(!FailOn::High.fails(Risk::Moderate));
        assert!(FailOn::High.fails(Risk::High));
        assert!(!FailOn::Medium.fails(Risk::Low));
        assert!(FailOn::Medium.fails(Risk::Moderate));
        assert!(FailOn::Medium.fails(Risk::High));
    }
}
