//! `compare`: the same experiment under each cure, same seeds and data order, side by side,
//! and the measured evidence that ranks the diagnosis' prescriptions.
//!
//! Every variant runs under every seed; per seed, every variant starts from the same initial
//! weights (where the cure keeps the architecture) and the same data order. A variant's
//! [`Evidence`] counts the seeds that ended `healthy` (which requires that the run learned)
//! and takes the median over the seeds of its held-out loss divided by the held-out loss of
//! the best constant predictor (a seed with no finite held-out loss counts as infinitely
//! bad). Status: `works` when every seed ended healthy, `partly` when some did, `fails` when
//! none did.

use std::path::{Path, PathBuf};

use gradguard_core::{Cure, CureStatus, Diagnosis, Evidence, RunSummary, Verdict};
use gradguard_detectors::{apply_evidence, MeasuredCure};
use gradguard_report::compare::test_loss_vs_baseline;
use gradguard_report::{format_compare_table, render_compare_html, CompareVariant};

use crate::cures;
use crate::run::{run_experiment, RunError, RunOptions, RunOutcome};
use crate::spec::ExperimentSpec;

/// One variant to run: a name, the cure it applies (none for the spec as given) and its spec.
pub struct Variant {
    /// The variant's name (`none` or the cure's label).
    pub name: String,
    /// The cure, or `None` for the spec as given.
    pub cure: Option<Cure>,
    /// The spec it runs.
    pub spec: ExperimentSpec,
}

/// Errors of `compare`.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A `--with` name is neither a remedy kind nor a structural cure.
    #[error("{0}")]
    UnknownCure(String),
    /// A cure does not apply to this spec.
    #[error("cure `{0}` does not apply: {1}")]
    NotApplicable(String, String),
    /// A signal interrupted the comparison (the runs so far wrote their outputs).
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// A variant's run failed.
    #[error("variant `{0}`: {1}")]
    Run(String, Box<RunError>),
    /// Writing the comparison failed.
    #[error(transparent)]
    Report(#[from] gradguard_core::ReportError),
    /// A run was not started because an earlier one failed or was interrupted.
    #[error("variant `{0}` was not run: an earlier run of the comparison failed")]
    NotRun(String),
    /// The thread count (`--threads`, `RAYON_NUM_THREADS`) is invalid.
    #[error(transparent)]
    Threads(#[from] gradguard_models::ThreadsError),
}

/// Parses `--with` labels into cures, checking each names something that exists.
pub fn parse_cures(labels: &[String]) -> Result<Vec<Cure>, CompareError> {
    crate::link_plugins();
    labels
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| cures::parse_cure(l).map_err(CompareError::UnknownCure))
        .collect()
}

/// The default `--with` list for a spec: the clipping kinds and L2, then every structural
/// cure (with its default value) that applies to the spec.
pub fn default_cures(spec: &ExperimentSpec) -> Vec<Cure> {
    crate::link_plugins();
    let mut v: Vec<Cure> = ["clip_global_norm", "clip_norm", "clip_value", "l2"]
        .iter()
        .map(|s| Cure::Remedy(s.to_string()))
        .collect();
    for name in gradguard_core::cure::STRUCTURAL_CURES {
        if let Ok(c) = Cure::parse(name) {
            v.push(c);
        }
    }
    v.retain(|c| cures::applies_to(c, spec));
    v
}

/// Builds the variants: `none` (the spec as given) then one per cure.
pub fn variants(
    spec: &ExperimentSpec,
    cures_to_run: &[Cure],
) -> Result<Vec<Variant>, CompareError> {
    let mut out = vec![Variant {
        name: "none".into(),
        cure: None,
        spec: spec
            .try_clone()
            .map_err(|e| CompareError::NotApplicable("none".into(), e.to_string()))?,
    }];
    for cure in cures_to_run {
        let s = cures::apply(cure, spec)
            .map_err(|why| CompareError::NotApplicable(cure.label(), why))?;
        out.push(Variant {
            name: cure.label(),
            cure: Some(cure.clone()),
            spec: s,
        });
    }
    Ok(out)
}

/// How to run a comparison.
#[derive(Clone, Debug, Default)]
pub struct CompareOptions {
    /// The seeds every variant runs under (the spec's own seed when empty).
    pub seeds: Vec<u64>,
    /// Overrides every variant's number of steps.
    pub steps: Option<u64>,
    /// Stop a cure's run once its verdict can no longer be healthy (a decisive sign);
    /// `none` always runs to the end.
    pub stop_when_beyond_saving: bool,
    /// Stop (after the current step of the current run) once this flag is raised.
    pub interrupt: Option<crate::run::Interrupt>,
    /// Every run unguarded ([`RunOptions::unguarded`]): the claims book only.
    pub unguarded: bool,
    /// How many runs at once (each run is deterministic per seed, so the comparison is the
    /// same for any number); 0 (the default) decides with `threads`, see [`Self::plan`].
    pub jobs: usize,
    /// Threads per run (each run's own pool; the results are the same bits for any number);
    /// `None` decides with `jobs`, see [`Self::plan`].
    pub threads: Option<std::num::NonZeroUsize>,
    /// Where the runs execute: this process's threads (the default) or an MPI job's ranks.
    pub executor: Executor,
}

/// How a comparison shares the cores: `workers` runs at once, each on `threads` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Runs at once (worker threads taking the next run as one finishes).
    pub workers: usize,
    /// Threads of each run's pool.
    pub threads: std::num::NonZeroUsize,
}

impl CompareOptions {
    /// How `runs` runs share `cores` cores (the cores available to the process, see
    /// [`gradguard_models::threads::available_cores`]). Runs are independent, so they come
    /// first: by default as many runs at once as cores, and the cores left over when there are
    /// fewer runs than cores go to each run's threads (jobs x threads <= cores). An explicit
    /// `jobs` or `threads` (or `RAYON_NUM_THREADS`, which counts as `threads`) is kept, and the
    /// other is chosen to fill the cores; when both are given they are used as given, even
    /// above the cores (then the runs share cores, each still deterministic).
    pub fn plan(
        &self,
        runs: usize,
        cores: std::num::NonZeroUsize,
    ) -> Result<Plan, gradguard_models::ThreadsError> {
        use std::num::NonZeroUsize;
        let runs = runs.max(1);
        let c = cores.get();
        let threads = match self.threads {
            Some(t) => Some(t),
            None => gradguard_models::threads::threads_from_env()?,
        };
        let (workers, threads) = match (self.jobs, threads) {
            (0, Some(t)) => ((c / t.get()).max(1), t),
            (0, None) => {
                let w = c.min(runs);
                (w, NonZeroUsize::new(c / w).unwrap_or(NonZeroUsize::MIN))
            }
            (j, Some(t)) => (j, t),
            (j, None) => (
                j,
                NonZeroUsize::new(c / j.min(runs)).unwrap_or(NonZeroUsize::MIN),
            ),
        };
        Ok(Plan {
            workers: workers.clamp(1, runs),
            threads,
        })
    }
}

/// Where a comparison's runs execute.
#[derive(Clone, Debug, Default)]
pub enum Executor {
    /// This process: the worker threads of [`CompareOptions::plan`].
    #[default]
    Local,
    /// The ranks of an MPI job (feature `mpi`): rank 0 hands out the runs one at a time as
    /// ranks finish them, runs some itself, gathers the results and writes every output
    /// (see the `distributed` module).
    #[cfg(feature = "mpi")]
    Mpi(crate::distributed::Cluster),
}

/// One run of a comparison: a variant under a seed, with its own copy of the spec.
pub(crate) struct Job {
    /// The spec it runs.
    pub(crate) spec: ExperimentSpec,
    /// How (its output directory included).
    pub(crate) opts: RunOptions,
}

/// A job's result; `None` when it never ran (an earlier run failed or was interrupted).
pub(crate) type JobResult = Option<Result<RunOutcome, RunError>>;

/// The jobs of a comparison, taken in order by whoever is free, and their results in the
/// jobs' order. After a failed or interrupted run no new job is handed out.
pub(crate) struct JobQueue {
    queue: std::sync::Mutex<std::collections::VecDeque<(usize, Job)>>,
    results: Vec<std::sync::Mutex<JobResult>>,
    stop: std::sync::atomic::AtomicBool,
    interrupt: Option<crate::run::Interrupt>,
}

impl JobQueue {
    /// A queue of `jobs`, none run yet.
    pub(crate) fn new(jobs: Vec<Job>) -> Self {
        let n = jobs.len();
        let interrupt = jobs.first().and_then(|j| j.opts.interrupt.clone());
        JobQueue {
            interrupt,
            queue: std::sync::Mutex::new(jobs.into_iter().enumerate().collect()),
            results: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
            stop: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The interrupt flag the runs watch (the first job's), if any.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn interrupt(&self) -> Option<crate::run::Interrupt> {
        self.interrupt.clone()
    }

    /// How many jobs the queue started with.
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }

    /// The next job and its index, unless every job was handed out or a run failed.
    pub(crate) fn next(&self) -> Option<(usize, Job)> {
        if self.stopped() {
            return None;
        }
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    /// Whether a run failed or was interrupted (no new job is handed out).
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records job `i`'s result; a failed or interrupted run stops the queue.
    pub(crate) fn record(&self, i: usize, r: Result<RunOutcome, RunError>) {
        if r.as_ref().map_or(true, |o| o.interrupted.is_some()) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(Ok(mut slot)) = self.results.get(i).map(|m| m.lock()) {
            *slot = Some(r);
        }
    }

    /// Runs jobs in this thread until none is left (or a run failed).
    pub(crate) fn work(&self) {
        while let Some((i, job)) = self.next() {
            self.record(i, run_experiment(job.spec, &job.opts));
        }
    }

    /// The results, in the jobs' order.
    pub(crate) fn into_results(self) -> Vec<JobResult> {
        self.results
            .into_iter()
            .map(|m| m.into_inner().ok().flatten())
            .collect()
    }
}

/// Runs `jobs` on `workers` threads (inline when 1), taking the next job as one finishes, and
/// returns their results in the jobs' order. After a failed or interrupted run no new job
/// starts (those left are `None`).
fn run_jobs(jobs: Vec<Job>, workers: usize) -> Vec<JobResult> {
    let queue = JobQueue::new(jobs);
    let workers = workers.clamp(1, queue.len().max(1));
    let work = || queue.work();
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for w in 0..workers {
                // Runs keep the main thread's stack size (a model's recursion is shallow,
                // but a user's plugin may not be).
                let spawned = std::thread::Builder::new()
                    .name(format!("gradguard-compare-{w}"))
                    .stack_size(8 << 20)
                    .spawn_scoped(s, work);
                if spawned.is_err() {
                    // No thread to be had: this one does the work.
                    work();
                }
            }
        });
    }
    queue.into_results()
}

/// One seed of one variant.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The run's summary.
    pub summary: RunSummary,
    /// Why it ended early, if it did.
    pub stopped_early: Option<String>,
}

/// One variant over every seed.
#[derive(Clone, Debug)]
pub struct VariantOutcome {
    /// The variant's name.
    pub name: String,
    /// The cure, or `None` for the spec as given.
    pub cure: Option<Cure>,
    /// Per seed, in order.
    pub seeds: Vec<SeedOutcome>,
    /// What the runs showed.
    pub evidence: Evidence,
}

/// The outcome of a comparison.
#[derive(Debug)]
pub struct Comparison {
    /// One entry per variant, in order (curves and figures of the first seed; the name says
    /// how many seeds ended healthy when several ran).
    pub variants: Vec<CompareVariant>,
    /// Per variant, every seed's outcome and the evidence.
    pub outcomes: Vec<VariantOutcome>,
    /// The diagnosis of the `none` variant's first seed, its prescriptions ranked by the
    /// measured evidence (when `none` ran).
    pub ranked: Option<Diagnosis>,
    /// Where compare.html was written.
    pub html: PathBuf,
    /// Where compare.json ([`Comparison::to_json`]) was written, beside compare.html.
    pub json: PathBuf,
    /// The console table.
    pub table: String,
}

/// The median of the values (the mean of the middle two for an even count), when it is
/// finite; `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    };
    m.is_finite().then_some(m)
}

/// The evidence of one variant's seeds (see the [module documentation](self)).
pub fn evidence_of(seeds: &[SeedOutcome], note: String) -> Evidence {
    let healthy = seeds
        .iter()
        .filter(|s| s.summary.verdict == Verdict::Healthy)
        .count();
    let status = if seeds.is_empty() {
        CureStatus::Untested
    } else if healthy == seeds.len() {
        CureStatus::Works
    } else if healthy > 0 {
        CureStatus::Partly
    } else {
        CureStatus::Fails
    };
    let inf_if_none = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
    Evidence {
        status,
        seeds_healthy: healthy,
        seeds_run: seeds.len(),
        median_test_loss: median(
            seeds
                .iter()
                .map(|s| inf_if_none(s.summary.final_test_loss))
                .collect(),
        ),
        median_test_loss_vs_baseline: median(
            seeds
                .iter()
                .map(|s| inf_if_none(test_loss_vs_baseline(&s.summary)))
                .collect(),
        ),
        without_cure_vs_baseline: None,
        note,
    }
}

/// Runs every variant under every seed (each run writes its outputs under
/// `out_dir/<variant>[/seed-<s>]`), then writes `out_dir/compare.html` and returns the
/// table, each variant's evidence, and the `none` diagnosis re-ranked by that evidence.
pub fn run_compare(
    variants: Vec<Variant>,
    out_dir: &Path,
    opts: &CompareOptions,
) -> Result<Comparison, CompareError> {
    let mut shown = Vec::new();
    let mut outcomes: Vec<VariantOutcome> = Vec::new();
    let mut none_diagnosis: Option<Diagnosis> = None;
    let seed_list: Vec<Option<u64>> = if opts.seeds.is_empty() {
        vec![None]
    } else {
        opts.seeds.iter().map(|&s| Some(s)).collect()
    };
    let cores = gradguard_models::threads::available_cores();
    let plan = opts.plan(variants.len() * seed_list.len(), cores)?;
    if plan.workers * plan.threads.get() > cores.get() {
        tracing::warn!(
            "{} runs at once x {} threads each is more than the {} cores available: the runs will share cores",
            plan.workers,
            plan.threads,
            cores
        );
    }
    // Every (variant, seed) run, in order, each with its own copy of the spec.
    let mut jobs = Vec::with_capacity(variants.len() * seed_list.len());
    for v in &variants {
        let base = out_dir.join(v.name.replace(['/', '\\', ' '], "_"));
        for seed in &seed_list {
            let spec = v
                .spec
                .try_clone()
                .map_err(|e| CompareError::NotApplicable(v.name.clone(), e.to_string()))?;
            let dir = match seed {
                Some(s) if seed_list.len() > 1 => base.join(format!("seed-{s}")),
                _ => base.clone(),
            };
            let run_opts = RunOptions {
                out_dir: Some(dir),
                seed: *seed,
                steps: opts.steps,
                console: Some(false),
                quiet: true,
                verify: None,
                // `none` always runs its course: it is what each cure is measured against.
                stop_when_beyond_saving: opts.stop_when_beyond_saving && v.cure.is_some(),
                interrupt: opts.interrupt.clone(),
                unguarded: opts.unguarded,
                resume: false,
                threads: Some(plan.threads),
            };
            jobs.push(Job {
                spec,
                opts: run_opts,
            });
        }
    }
    let results = match &opts.executor {
        Executor::Local => run_jobs(jobs, plan.workers),
        #[cfg(feature = "mpi")]
        Executor::Mpi(cluster) => crate::distributed::run_jobs(cluster, jobs),
    };
    let mut results = results.into_iter();
    for v in variants {
        let mut runs: Vec<CompareVariant> = Vec::new();
        let mut seeds = Vec::new();
        let mut early = 0;
        for _ in &seed_list {
            // Jobs start in order, so a run left out comes after the failed or interrupted
            // one, whose error this loop returns first.
            let Some(result) = results.next().flatten() else {
                return Err(CompareError::NotRun(v.name.clone()));
            };
            let outcome = result.map_err(|e| CompareError::Run(v.name.clone(), Box::new(e)))?;
            if let Some(sig) = outcome.interrupted {
                return Err(CompareError::Interrupted(sig));
            }
            early += usize::from(outcome.stopped_early.is_some());
            if v.cure.is_none() && none_diagnosis.is_none() {
                none_diagnosis = Some(outcome.diagnosis.clone());
            }
            seeds.push(SeedOutcome {
                seed: outcome.summary.seed,
                summary: outcome.summary.clone(),
                stopped_early: outcome.stopped_early.clone(),
            });
            runs.push(outcome.variant);
        }
        // The charts draw the median over the seeds with its min-max band; the table, the
        // first seed's figures.
        let Some(mut variant) = CompareVariant::over_seeds(runs) else {
            continue;
        };
        variant.name = if seed_list.len() > 1 {
            let healthy = seeds
                .iter()
                .filter(|s| s.summary.verdict == Verdict::Healthy)
                .count();
            format!("{} ({healthy}/{} healthy)", v.name, seed_list.len())
        } else {
            v.name.clone()
        };
        let seed_names: Vec<String> = seeds.iter().map(|s| s.seed.to_string()).collect();
        let mut note = format!(
            "measured over seed(s) {} ({} step(s) planned each)",
            seed_names.join(", "),
            variant.summary.steps.max(1)
        );
        if early > 0 && opts.stop_when_beyond_saving {
            note.push_str(&format!(
                "; {early} run(s) stopped early, once a decisive sign made a healthy verdict impossible"
            ));
        }
        let evidence = evidence_of(&seeds, note);
        outcomes.push(VariantOutcome {
            name: v.name.clone(),
            cure: v.cure.clone(),
            seeds,
            evidence,
        });
        shown.push(variant);
    }
    let without = outcomes
        .iter()
        .find(|o| o.cure.is_none())
        .and_then(|o| o.evidence.median_test_loss_vs_baseline);
    for o in outcomes.iter_mut().filter(|o| o.cure.is_some()) {
        o.evidence.without_cure_vs_baseline = without;
    }
    let measured = measured_cures(&outcomes);
    let ranked = none_diagnosis.map(|mut d| {
        apply_evidence(&mut d, &measured);
        for p in &mut d.prescriptions {
            if p.evidence.status == CureStatus::Untested {
                p.evidence = Evidence::untested(format!(
                    "not in this comparison (`--with {}` runs it)",
                    p.remedy
                ));
            }
        }
        d
    });
    let html = out_dir.join("compare.html");
    render_compare_html(&shown, &opts.seeds, &html)?;
    let table = format_compare_table(&shown);
    let comparison = Comparison {
        variants: shown,
        outcomes,
        ranked,
        html,
        json: out_dir.join("compare.json"),
        table,
    };
    let text = serde_json::to_string_pretty(&comparison.to_json()).map_err(|e| {
        gradguard_core::ReportError::Other(format!("cannot serialise the comparison: {e}"))
    })?;
    gradguard_report::write_atomically(&comparison.json, format!("{text}\n").as_bytes())?;
    Ok(comparison)
}

impl Comparison {
    /// The comparison as JSON (what `compare --json` prints and compare.json holds): per
    /// variant, its name, its cure's label (`null` for the spec as given), per seed the
    /// verdict, `final_train_loss`, `final_test_loss`, `baseline_test_loss`,
    /// `first_nonfinite_step` and `stopped_early`, and the evidence.
    pub fn to_json(&self) -> serde_json::Value {
        let variants: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .map(|o| {
                let seeds: Vec<serde_json::Value> = o
                    .seeds
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "seed": s.seed,
                            "verdict": s.summary.verdict,
                            "final_train_loss": s.summary.final_train_loss,
                            "final_test_loss": s.summary.final_test_loss,
                            "baseline_test_loss": s.summary.baseline_test_loss,
                            "first_nonfinite_step": s.summary.first_nonfinite_step,
                            "stopped_early": s.stopped_early,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": o.name,
                    "cure": o.cure.as_ref().map(Cure::label),
                    "seeds": seeds,
                    "evidence": o.evidence,
                })
            })
            .collect();
        serde_json::json!({ "variants": variants })
    }
}

/// The evidence of every variant with a cure, to rank prescriptions ([`apply_evidence`]).
pub fn measured_cures(outcomes: &[VariantOutcome]) -> Vec<MeasuredCure> {
    outcomes
        .iter()
        .filter_map(|o| {
            o.cure.as_ref().map(|c| MeasuredCure {
                cure: c.clone(),
                evidence: o.evidence.clone(),
            })
        })
        .collect()
}

/// Whether some cure was healthy for every seed while `none` was not.
pub fn cure_found(c: &Comparison) -> bool {
    let base_works = c
        .outcomes
        .iter()
        .find(|o| o.cure.is_none())
        .is_some_and(|o| o.evidence.status == CureStatus::Works);
    !base_works
        && c.outcomes
            .iter()
            .any(|o| o.cure.is_some() && o.evidence.status == CureStatus::Works)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(verdict: Verdict, test: Option<f64>, baseline: Option<f64>) -> SeedOutcome {
        SeedOutcome {
            seed: 1,
            summary: RunSummary {
                name: "s".into(),
                seed: 1,
                steps: 10,
                epochs: 1,
                interrupted: false,
                final_train_loss: None,
                final_test_loss: test,
                last_batch_loss: None,
                baseline_loss: None,
                baseline_test_loss: baseline,
                train_accuracy: None,
                test_accuracy: None,
                verdict,
                first_nonfinite_step: None,
                max_grad_norm: 1.0,
                signs: Vec::new(),
                remedies: Vec::new(),
                prescriptions: Vec::new(),
            },
            stopped_early: None,
        }
    }

    #[test]
    fn evidence_counts_healthy_seeds_and_takes_medians_of_ratios() {
        let e = evidence_of(
            &[
                seed(Verdict::Healthy, Some(2.0), Some(100.0)),
                seed(Verdict::Healthy, Some(8.0), Some(100.0)),
                seed(Verdict::Exploding, None, Some(100.0)),
            ],
            String::new(),
        );
        assert_eq!(e.status, CureStatus::Partly);
        assert_eq!((e.seeds_healthy, e.seeds_run), (2, 3));
        // medians of [2, 8, inf] and [0.02, 0.08, inf]
        assert_eq!(e.median_test_loss, Some(8.0));
        assert_eq!(e.median_test_loss_vs_baseline, Some(0.08));
        let e = evidence_of(
            &[
                seed(Verdict::NotLearning, Some(90.0), Some(100.0)),
                seed(Verdict::Exploding, None, Some(100.0)),
            ],
            String::new(),
        );
        assert_eq!(e.status, CureStatus::Fails);
        // the median of [0.9, inf] is not finite
        assert_eq!(e.median_test_loss_vs_baseline, None);
        let e = evidence_of(
            &[
                seed(Verdict::Healthy, Some(1.0), Some(4.0)),
                seed(Verdict::Healthy, Some(3.0), Some(4.0)),
            ],
            String::new(),
        );
        assert_eq!(e.status, CureStatus::Works);
        assert_eq!(e.median_test_loss_vs_baseline, Some(0.5));
    }
}
