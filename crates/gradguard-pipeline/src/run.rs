//! The training loop: the dfdx [`Trainer`] drives a [`Guard`] (gradguard-engine), one step
//! as DESIGN.md describes.
//!
//! ```text
//! batch -> forward -> loss -> backward          (Trainer::step_gradients)
//! ParamView over the model's buffers            (Trainer::view, zero-copy)
//! Guard::step                                   (statistics in one pass, detectors, remedies in
//!                                                spec order, the strongest action)
//! optimiser update -> UpdateStats               (Trainer::apply_update, unless withheld)
//! Guard::after_update                           (rollback/snapshots via TrainerHost, the event
//!                                                to the diagnosis and every reporter)
//! end: evaluation of the whole training set and the held-out set against the best
//!      constant predictor (did it learn?), Diagnosis, prescriptions that apply to the spec,
//!      verification of the top prescriptions (when asked), Guard::finish_with -> reporters
//! ```
//!
//! Before the first step the run probes itself at initialisation ([`probe_trainer`]: a few
//! forward/backward passes, after which the trainer is exactly as before): the growth of the
//! error signal across layers and time steps measured there is what the diagnosis may blame
//! on the initialisation or the depth.
//!
//! Non-finite values are never spread into the weights silently: with no remedy asking to
//! skip, an update made from a non-finite loss or gradient is applied (as PyTorch would) but
//! the detectors name it, and the run stops as soon as the weights are non-finite (nothing
//! can be learnt from there); the verdict is then `exploding`.

use std::path::PathBuf;
use std::time::Instant;

use std::collections::VecDeque;

use gradguard_core::{
    Detector, Diagnosis, Evidence, Learning, RemedyError, ReportError, RunInfo, RunSummary, Verdict,
};
use gradguard_detectors::{apply_evidence, default_detectors, RunFigures};
use gradguard_engine::{Guard, GuardError, HostError, StepInput, TrainingHost};
use gradguard_models::{ModelError, Snapshot, Trainer};
use gradguard_report::{compare::CompareRecorder, CompareVariant};

use crate::compare::{run_compare, variants, CompareError, CompareOptions, Comparison};
use crate::cures;
use crate::probe::{initial_growth, probe_trainer};
use crate::spec::ExperimentSpec;

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The model, task or data could not be built or stepped.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A remedy stopped the run with an error (e.g. `on_nonfinite = "error"`).
    #[error(transparent)]
    Remedy(#[from] RemedyError),
    /// A reporter failed (the error names the file).
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The spec could not be copied for verification.
    #[error(transparent)]
    Spec(#[from] crate::SpecError),
    /// Verifying the prescriptions failed.
    #[error("verifying the prescriptions: {0}")]
    Verify(Box<CompareError>),
    /// Another run holds the output directory.
    #[error("{0}")]
    Busy(String),
    /// The run's directory could not be made or used.
    #[error(transparent)]
    OutDir(#[from] crate::out_dir::OutDirError),
    /// The Guard could not go on (a checkpoint request failed).
    #[error(transparent)]
    Guard(GuardError),
    /// The run could not be resumed (no checkpoint, a damaged one, an events log that does
    /// not cover it).
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The thread count (`--threads`, `RAYON_NUM_THREADS`) is invalid or its pool would not start.
    #[error(transparent)]
    Threads(#[from] gradguard_models::ThreadsError),
    /// A run on another rank of an MPI job failed (its error, as text), or its result could
    /// not be read.
    #[error("on rank {rank}: {message}")]
    Rank {
        /// The rank that ran it.
        rank: i32,
        /// What went wrong.
        message: String,
    },
}

/// The name of the lock file a run holds in its output directory.
pub const LOCK_FILE: &str = ".gradguard.lock";

/// Takes the exclusive lock on a run's output directory (an OS file lock on
/// [`LOCK_FILE`], released when the returned file is dropped or the process dies, so a killed
/// run never leaves a stale lock). A second run on the same directory is refused at once,
/// naming the process that holds it.
pub fn lock_run_dir(out_dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let path = out_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| ReportError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(RunError::Busy(format!(
                "{} is in use by another gradguard run ({}): give this run another --out directory, or wait for that one to end",
                out_dir.display(),
                if holder.is_empty() { "process unknown".to_string() } else { holder.to_string() }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ReportError::io(&path, e).into()),
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "process {}", std::process::id());
    let _ = file.flush();
    Ok(file)
}

/// A flag a signal handler sets (the signal's number; 0 while none arrived), shared with a
/// run: the run finishes its current step, then ends as a completed run would (evaluation,
/// diagnosis, every reporter's `finish`) with `interrupted` set, so nothing is lost.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Interrupt {
    /// A flag no signal has set.
    pub fn new() -> Self {
        Interrupt::default()
    }

    /// The shared counter a handler stores the signal number in (e.g. with
    /// `signal_hook::flag::register_usize`).
    pub fn flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        std::sync::Arc::clone(&self.0)
    }

    /// Sets the flag, as a handler would.
    pub fn raise(&self, signal: i32) {
        self.0.store(
            usize::try_from(signal).unwrap_or(1).max(1),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// The signal that arrived, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            s => Some(i32::try_from(s).unwrap_or(i32::MAX)),
        }
    }
}

/// How to verify a run's prescriptions: the top ones are run over several seeds, from the
/// same initial weights and data order as the diagnosed run, for the same number of steps,
/// each stopping once beyond saving; their evidence then ranks the prescriptions.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// How many prescriptions, from the top. Default 4.
    pub top: usize,
    /// How many seeds (the run's seed, then the next ones). Default 3.
    pub seeds: u64,
    /// Verify only when the estimated time (the diagnosed run's time, times the runs needed)
    /// is at most this many seconds; `None` always verifies. Default 60.
    pub budget_s: Option<f64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            top: 4,
            seeds: 3,
            budget_s: Some(60.0),
        }
    }
}

/// How to run a spec.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output directory, written as it is (the caller checked it, see
    /// [`crate::out_dir::claim_dir`]); `None`: a fresh directory `runs/<spec name>/<UTC time>`
    /// ([`crate::out_dir::fresh_run_dir`]).
    pub out_dir: Option<PathBuf>,
    /// Overrides the spec's seed.
    pub seed: Option<u64>,
    /// Overrides the number of steps.
    pub steps: Option<u64>,
    /// Console output: `None` for the default console reporter, `Some(false)` for none.
    pub console: Option<bool>,
    /// Nothing on the console (the CLI's `-q`): no console reporter runs, neither the default
    /// one nor one the spec lists. The files are written as usual.
    pub quiet: bool,
    /// Verify the prescriptions of a run that did not end healthy (see [`VerifyOptions`]).
    pub verify: Option<VerifyOptions>,
    /// Stop once a decisive sign makes a healthy verdict impossible (verification variants).
    pub stop_when_beyond_saving: bool,
    /// End the run after the current step once this flag is raised (Ctrl-C, SIGTERM).
    pub interrupt: Option<Interrupt>,
    /// Train as an unprotected framework does: no post-remedy check
    /// ([`gradguard_engine::Guard::set_unguarded`]) and no transactional update
    /// (`Trainer::apply_update_unchecked`), so a non-finite gradient that no remedy withholds
    /// reaches the weights as it would in PyTorch. For the claims book, which tests the
    /// field's claims about training without a guard; never the default.
    pub unguarded: bool,
    /// Continue the run in `out_dir` (which must be given) from its newest checkpoint instead
    /// of starting afresh (see [`crate::checkpoints`]). The spec must be the one the run
    /// started with (`gradguard resume` reads it from the run's `spec.json`).
    pub resume: bool,
    /// Threads for the run's training steps (its one rayon pool, built when the run starts):
    /// `None` means `RAYON_NUM_THREADS` when set, else the cores available to the process
    /// ([`gradguard_models::threads::resolve_threads`]). The results are the same bits for any
    /// number (see [`gradguard_models::threads`]).
    pub threads: Option<std::num::NonZeroUsize>,
}

/// What a completed run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// The summary (as written to summary.json when that reporter is on).
    pub summary: RunSummary,
    /// Where the outputs went.
    pub out_dir: PathBuf,
    /// The run's curves and figures, for `compare`.
    pub variant: CompareVariant,
    /// Why the run ended early, if it did.
    pub stopped_early: Option<String>,
    /// The verification runs of the prescriptions, when they ran.
    pub verification: Option<Comparison>,
    /// The signal that ended the run early, if one did.
    pub interrupted: Option<i32>,
}

pub use gradguard_engine::{default_reporters, merge_reporters, POST_REMEDY_CHECK, UPDATE_CHECK};

/// The dfdx trainer as the Guard's [`TrainingHost`]: snapshots are in-memory copies of the
/// weights and optimiser state, kept in a ring.
struct TrainerHost<'a> {
    trainer: &'a mut Trainer,
    ring: &'a mut VecDeque<Snapshot>,
}

impl TrainingHost for TrainerHost<'_> {
    fn snapshot(&mut self, keep: usize) -> Result<(), HostError> {
        self.ring.push_back(self.trainer.snapshot());
        while self.ring.len() > keep.max(1) {
            self.ring.pop_front();
        }
        Ok(())
    }

    fn restore_newest(&mut self) -> Result<Option<u64>, HostError> {
        match self.ring.back() {
            Some(snap) => {
                self.trainer.restore(snap)?;
                Ok(Some(snap.steps_done()))
            }
            None => Ok(None),
        }
    }

    fn skip_batches(&mut self, n: u64) {
        self.trainer.skip_batches(n);
    }
}

impl From<GuardError> for RunError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Report(e) => RunError::Report(e),
            other => RunError::Guard(other),
        }
    }
}

/// Runs `spec` to completion: trains, watches, cures and reports. The loop is the dfdx
/// [`Trainer`] driving a [`Guard`]: the trainer computes gradients and applies updates, the
/// Guard does everything gradguard adds to a step.
///
/// The whole run executes inside one [`gradguard_models::ThreadPool`] of
/// [`RunOptions::threads`] threads, built here once; no thread is started per step.
pub fn run_experiment(spec: ExperimentSpec, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    let threads = gradguard_models::threads::resolve_threads(opts.threads)?;
    let pool = gradguard_models::ThreadPool::new(threads)?;
    tracing::debug!(threads = threads.get(), "training thread pool");
    pool.install(|| run_in_pool(spec, opts))
}

/// [`run_experiment`]'s body, on a thread of the run's pool.
fn run_in_pool(mut spec: ExperimentSpec, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let seed = opts.seed.unwrap_or(spec.seed);
    if let Some(steps) = opts.steps {
        spec.train.steps = Some(steps);
        spec.train.epochs = None;
    }
    // A run without a directory gets a fresh one of its own: reruns never overwrite or mix.
    let out_dir = match (&opts.out_dir, opts.resume) {
        (Some(dir), _) => dir.clone(),
        (None, true) => {
            return Err(RunError::Resume(
                "resuming needs the run's directory".into(),
            ))
        }
        (None, false) => crate::out_dir::fresh_run_dir(&PathBuf::from("runs").join(&spec.name))?,
    };
    // The spec as given, for deciding which cures apply and for verification.
    let original = spec.try_clone()?;
    // Held to the end of the run: no second run writes into the same directory.
    let _lock = lock_run_dir(&out_dir)?;
    let mut trainer = Trainer::new(&spec.model, &spec.task, &spec.train, seed)?;
    let resumed = if opts.resume {
        Some(crate::checkpoints::load_newest(&out_dir, &mut trainer)?)
    } else {
        None
    };
    // A resumed run's probe result is in the Guard's saved state.
    let initial = match resumed {
        None => Some(probe_trainer(&mut trainer, spec.model.is_recurrent(), 3)?),
        Some(_) => None,
    };
    let detectors: Vec<Box<dyn Detector>> = spec.detectors.take().unwrap_or_else(default_detectors);
    let remedies = std::mem::take(&mut spec.remedies);
    let console = opts.console.unwrap_or(true) && !opts.quiet;
    let defaults = if spec.default_reporters {
        default_reporters(console, false, trainer.planned_steps())
    } else {
        Vec::new()
    };
    let mut reporters = merge_reporters(defaults, spec.reporters.take().unwrap_or_default());
    if !console {
        // An explicit "no console" (compare's variants, `-q`) drops console reporters from
        // specs too.
        reporters.retain(|r| r.typetag_name() != "console");
    }
    let mut guard = Guard::new(detectors, remedies, reporters);
    guard.set_unguarded(opts.unguarded);
    if let Some(initial) = &initial {
        guard.set_initial_growth(initial_growth(initial, spec.model.is_recurrent()));
    }
    let mut ring = VecDeque::new();
    let info = RunInfo {
        name: spec.name.clone(),
        seed,
        out_dir: out_dir.clone(),
        params: trainer.param_infos(),
        clip_threshold: None,
    };
    let mut recorder = CompareRecorder::new(gradguard_report::BoundedSeries::DEFAULT_CAPACITY);
    let mut last_loss = f64::NAN;
    match resumed {
        Some(r) => {
            guard.resume(info, &r.guard, &r.past)?;
            ring.extend(r.snapshots);
            for e in &r.past {
                recorder.push(e);
            }
            last_loss = guard.last_loss();
            tracing::info!(
                "resumed from {} (step {}, {} events)",
                r.path.display(),
                r.run.step,
                r.run.events
            );
        }
        None => {
            guard.start(
                info,
                &mut TrainerHost {
                    trainer: &mut trainer,
                    ring: &mut ring,
                },
            )?;
            write_spec(&original, &out_dir, seed);
        }
    }
    let checkpoint = spec.train.checkpoint;
    let mut last_checkpoint = Instant::now();
    let mut stopped_early: Option<String> = None;
    let mut pending_error: Option<RunError> = None;
    let planned = trainer.planned_steps();

    let mut interrupted: Option<i32> = None;
    while !trainer.finished() {
        if let Some(sig) = opts.interrupt.as_ref().and_then(Interrupt::signal) {
            // The previous step finished and was recorded: end here like a completed run.
            interrupted = Some(sig);
            stopped_early = Some(format!(
                "interrupted by signal {sig} after step {}",
                trainer.steps_done()
            ));
            // The last step is complete: a checkpoint of it lets `gradguard resume` go on.
            if checkpoint.enabled() && guard.steps() > 0 {
                crate::checkpoints::checkpoint_or_warn(
                    &out_dir,
                    &trainer,
                    &ring,
                    &mut guard,
                    checkpoint.keep,
                    "at the interruption",
                );
            }
            break;
        }
        let step_info = match trainer.step_gradients() {
            Ok(s) => s,
            Err(e) => {
                pending_error = Some(e.into());
                break;
            }
        };
        last_loss = step_info.loss;
        let step = trainer.steps_done();
        // `train.eval_every`: the held-out loss at the weights this step's gradients were
        // computed at (evaluation reads the weights only, so the step is unchanged).
        let held_out_loss = match spec.train.eval_every {
            Some(n) if n > 0 && step.is_multiple_of(n) => match trainer.evaluate() {
                Ok(e) => Some(e.loss),
                Err(e) => {
                    pending_error = Some(e.into());
                    break;
                }
            },
            _ => None,
        };
        let input = StepInput {
            step,
            loss: step_info.loss,
            epoch: Some(step_info.position.epoch + 1),
            lr: Some(trainer.lr()),
            series: trainer.series(),
            held_out_loss,
        };
        let decision = match trainer.view() {
            Ok(mut view) => guard.step(input, &mut view),
            Err(e) => {
                pending_error = Some(e.into());
                break;
            }
        };
        let update = if decision.apply {
            let applied = if opts.unguarded {
                trainer.apply_update_unchecked(decision.lr_scale)
            } else {
                trainer.apply_update_with_stats(decision.lr_scale, guard.stats())
            };
            match applied {
                Ok(u) => Some(u),
                Err(e) => {
                    pending_error = Some(e.into());
                    break;
                }
            }
        } else {
            trainer.skip();
            None
        };
        if let Some(e) = decision.error {
            pending_error = Some(e.into());
        }
        let end = guard.after_update(
            update,
            &mut TrainerHost {
                trainer: &mut trainer,
                ring: &mut ring,
            },
        );
        match end {
            Ok(end) => stopped_early = stopped_early.or(end.stop),
            Err(e) => {
                pending_error.get_or_insert(e.into());
            }
        }
        if let Some(event) = guard.last_event() {
            recorder.push(event);
        }
        if pending_error.is_some() || stopped_early.is_some() {
            break;
        }
        if opts.stop_when_beyond_saving && guard.beyond_saving() {
            stopped_early = Some(format!(
                "step {}: a decisive sign made a healthy verdict impossible (verification stops such a run)",
                trainer.steps_done()
            ));
            break;
        }
        if !trainer.finished()
            && checkpoint.due(
                trainer.steps_done(),
                last_checkpoint.elapsed().as_secs_f64(),
            )
        {
            crate::checkpoints::checkpoint_or_warn(
                &out_dir,
                &trainer,
                &ring,
                &mut guard,
                checkpoint.keep,
                &format!("step {}", trainer.steps_done()),
            );
            last_checkpoint = Instant::now();
        }
    }

    let evaluation = if stopped_early.is_some() && pending_error.is_none() && !last_loss.is_finite()
    {
        None
    } else {
        trainer.evaluate().ok()
    };
    let train_evaluation = if evaluation.is_some() {
        trainer.evaluate_train().ok()
    } else {
        None
    };
    let baseline = trainer.baseline();
    if let (Some(b), Some(e)) = (&baseline, &train_evaluation) {
        guard.set_learning(Learning {
            final_train_loss: e.loss,
            baseline_loss: b.train_loss,
            margin: Learning::DEFAULT_MARGIN,
        });
    }
    let mut diagnosis = guard.diagnose();
    // Never prescribe what cannot be run on this spec.
    diagnosis
        .prescriptions
        .retain(|p| cures::applies_to(&p.remedy, &original));
    let mut verification = None;
    if let (Some(v), true, None) = (
        &opts.verify,
        diagnosis.verdict != Verdict::Healthy,
        interrupted,
    ) {
        let run = DiagnosedRun {
            seed,
            steps: planned,
            run_seconds: started.elapsed().as_secs_f64(),
            out_dir: &out_dir,
            interrupt: opts.interrupt.as_ref(),
        };
        match verify_prescriptions(&original, &mut diagnosis, v, &run) {
            Ok(c) => verification = c,
            Err(CompareError::Interrupted(sig)) => {
                // The diagnosed run is complete: keep it, with its advice untested.
                interrupted = Some(sig);
                for p in &mut diagnosis.prescriptions {
                    p.evidence = Evidence::untested(format!(
                        "verification was interrupted; run `gradguard verify {}`",
                        out_dir.display()
                    ));
                }
            }
            Err(e) => return Err(RunError::Verify(Box::new(e))),
        }
    }
    let figures = RunFigures {
        name: spec.name.clone(),
        seed,
        steps: trainer.steps_done(),
        epochs: trainer.cursor().epoch + u64::from(trainer.cursor().batch > 0),
        interrupted: interrupted.is_some(),
        final_train_loss: Some(train_evaluation.map_or(f64::NAN, |e| e.loss)),
        final_test_loss: evaluation.map(|e| e.loss),
        last_batch_loss: Some(last_loss),
        baseline_loss: baseline.as_ref().map(|b| b.train_loss),
        baseline_test_loss: baseline.as_ref().and_then(|b| b.test_loss),
        train_accuracy: train_evaluation.and_then(|e| e.accuracy),
        test_accuracy: evaluation.and_then(|e| e.accuracy),
    };
    let finished = guard.finish_with(&diagnosis, &figures);
    if let Some(e) = pending_error {
        return Err(e);
    }
    let summary = finished?;
    let variant = recorder.finish(
        spec.name.clone(),
        summary.clone(),
        started.elapsed().as_secs_f64(),
    );
    Ok(RunOutcome {
        diagnosis,
        summary,
        out_dir,
        variant,
        stopped_early,
        verification,
        interrupted,
    })
}

/// Writes the spec as run (with the seed used, and a CSV path made absolute) to `spec.json`
/// in the run directory, so that `gradguard verify RUN_DIR` can run the prescriptions later. Best effort: a run is not
/// failed for it (the reporters already created the directory, or say why they could not).
fn write_spec(spec: &ExperimentSpec, out_dir: &std::path::Path, seed: u64) {
    let Some(value) = spec_record(spec, seed) else {
        return;
    };
    if let Ok(text) = serde_json::to_string_pretty(&value) {
        if std::fs::create_dir_all(out_dir).is_ok() {
            let _ = gradguard_report::write_atomically(&out_dir.join("spec.json"), text.as_bytes());
        }
    }
}

/// The spec as a run records it in its `spec.json`: with the seed used, and a CSV path made
/// absolute. `None` when it does not serialise.
pub fn spec_record(spec: &ExperimentSpec, seed: u64) -> Option<serde_json::Value> {
    let mut value = serde_json::to_value(spec).ok()?;
    value["seed"] = serde_json::Value::from(seed);
    // A CSV path as written is relative to where the run started: make it absolute, so
    // `gradguard verify` finds the data from any folder.
    if let Some(path) = value
        .get_mut("task")
        .and_then(|t| t.get_mut("path"))
        .filter(|p| p.is_string())
    {
        if let Some(abs) = path
            .as_str()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.to_str().map(str::to_string))
        {
            *path = serde_json::Value::from(abs);
        }
    }
    Some(value)
}

/// The diagnosed run a verification starts from.
#[derive(Clone, Copy, Debug)]
pub struct DiagnosedRun<'a> {
    /// Its seed: the first of the verification seeds.
    pub seed: u64,
    /// Its planned number of steps: every variant runs as many.
    pub steps: u64,
    /// How long it took, to estimate the verification's time against the budget.
    pub run_seconds: f64,
    /// Its directory: the verification runs go to `<out_dir>/verify`.
    pub out_dir: &'a std::path::Path,
    /// Raised by a signal: the verification stops.
    pub interrupt: Option<&'a Interrupt>,
}

/// Runs the top prescriptions over the seeds and ranks them by what they did; the ones not
/// run say why. Returns the comparison when it ran.
pub fn verify_prescriptions(
    spec: &ExperimentSpec,
    diagnosis: &mut Diagnosis,
    v: &VerifyOptions,
    run: &DiagnosedRun<'_>,
) -> Result<Option<Comparison>, CompareError> {
    let DiagnosedRun {
        seed,
        steps,
        run_seconds,
        out_dir,
        interrupt,
    } = *run;
    let top: Vec<gradguard_core::Cure> = diagnosis
        .prescriptions
        .iter()
        .take(v.top)
        .map(|p| p.remedy.clone())
        .collect();
    if top.is_empty() {
        return Ok(None);
    }
    let seeds: Vec<u64> = (seed..seed.saturating_add(v.seeds.max(1))).collect();
    let runs = (top.len() + 1) * seeds.len();
    let estimate = run_seconds * runs as f64;
    if let Some(budget) = v.budget_s {
        if estimate > budget {
            let why = format!(
                "not verified: about {:.0} s of runs ({runs} runs of about {:.1} s) exceed the budget of {budget:.0} s; run `gradguard verify {}`",
                estimate,
                run_seconds,
                out_dir.display()
            );
            for p in &mut diagnosis.prescriptions {
                p.evidence = Evidence::untested(why.clone());
            }
            return Ok(None);
        }
    }
    let mut spec = spec
        .try_clone()
        .map_err(|e| CompareError::NotApplicable("none".into(), e.to_string()))?;
    // The diagnosed run's planned length, whatever stopped it: every variant gets as many steps.
    spec.train.steps = Some(steps.max(1));
    spec.train.epochs = None;
    let vs = variants(&spec, &top)?;
    let comparison = run_compare(
        vs,
        &out_dir.join("verify"),
        &CompareOptions {
            seeds,
            steps: None,
            stop_when_beyond_saving: true,
            interrupt: interrupt.cloned(),
            unguarded: false,
            jobs: 0,
            threads: None,
            executor: Default::default(),
        },
    )?;
    apply_evidence(
        diagnosis,
        &crate::compare::measured_cures(&comparison.outcomes),
    );
    for p in &mut diagnosis.prescriptions {
        if p.evidence.seeds_run == 0 {
            p.evidence = Evidence::untested(format!(
                "not among the top {} prescriptions verified (`gradguard compare --with {}` runs it)",
                v.top,
                p.remedy
            ));
        }
    }
    Ok(Some(comparison))
}

#[cfg(test)]
mod reporter_tests {
    use super::*;
    use gradguard_core::Reporter;

    fn kinds(v: &[Box<dyn Reporter>]) -> Vec<String> {
        v.iter().map(|r| r.typetag_name().to_string()).collect()
    }

    fn listed(json: &str) -> Vec<Box<dyn Reporter>> {
        crate::link_plugins();
        serde_json::from_str(json).expect("reporters")
    }

    #[test]
    fn listed_reporters_add_to_and_replace_the_defaults() {
        let merged = merge_reporters(
            default_reporters(true, false, 10),
            listed(r#"[{"kind":"tensorboard"},{"kind":"jsonl","flush_every":1}]"#),
        );
        assert_eq!(
            kinds(&merged),
            ["console", "jsonl", "summary", "html", "tensorboard"]
        );
        let jsonl = serde_json::to_value(&merged[1]).expect("json");
        assert_eq!(jsonl["flush_every"], 1, "{jsonl}");
    }

    #[test]
    fn listing_every_default_gives_no_duplicates() {
        let merged = merge_reporters(
            default_reporters(true, false, 10),
            listed(
                r#"[{"kind":"console"},{"kind":"jsonl"},{"kind":"summary"},{"kind":"html"},{"kind":"tensorboard"}]"#,
            ),
        );
        assert_eq!(
            kinds(&merged),
            ["console", "jsonl", "summary", "html", "tensorboard"]
        );
        let only = merge_reporters(Vec::new(), listed(r#"[{"kind":"tensorboard"}]"#));
        assert_eq!(kinds(&only), ["tensorboard"]);
    }
}
