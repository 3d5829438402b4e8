//! The training loop: one step flows as DESIGN.md describes.
//!
//! ```text
//! batch -> forward -> loss -> backward          (Trainer::step_gradients)
//! ParamView over the model's buffers            (Trainer::view, zero-copy)
//! StepStats::measure_into                       (ONE fused pass, shared by everything below)
//! every Detector -> Findings                    (spec order)
//! every Remedy, in spec order -> Action         (may edit gradients in place, keeps stats true)
//! strongest action: Stop > Rollback > SkipStep > ScaleLr > Continue
//! optimiser update -> UpdateStats               (unless withheld)
//! Event -> Diagnoser and every Reporter
//! end: evaluation of the whole training set and the held-out set against the best
//!      constant predictor (did it learn?), Diagnosis, prescriptions that apply to the spec,
//!      verification of the top prescriptions (when asked), RunSummary -> Reporter::finish
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

use gradguard_core::{
    Action, ActionRecord, CheckpointPolicy, Detector, Diagnosis, Event, Evidence, Finding,
    Learning, Observation, RemedyContext, RemedyError, ReportError, Reporter, RunEnd, RunInfo,
    RunSummary, StepStats, UpdateStats, Verdict,
};
use gradguard_detectors::{apply_evidence, default_detectors, run_summary, Diagnoser, RunFigures};
use gradguard_models::{ModelError, Snapshot, Trainer};
use gradguard_report::{
    compare::CompareRecorder, CompareVariant, ConsoleReporter, HtmlReporter, JsonlReporter,
    SummaryReporter,
};

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
    /// Output directory (default `runs/<spec name>`).
    pub out_dir: Option<PathBuf>,
    /// Overrides the spec's seed.
    pub seed: Option<u64>,
    /// Overrides the number of steps.
    pub steps: Option<u64>,
    /// Console output: `None` for the default console reporter, `Some(false)` for none.
    pub console: Option<bool>,
    /// Only the final diagnosis on the console.
    pub quiet: bool,
    /// Verify the prescriptions of a run that did not end healthy (see [`VerifyOptions`]).
    pub verify: Option<VerifyOptions>,
    /// Stop once a decisive sign makes a healthy verdict impossible (verification variants).
    pub stop_when_beyond_saving: bool,
    /// End the run after the current step once this flag is raised (Ctrl-C, SIGTERM).
    pub interrupt: Option<Interrupt>,
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

/// The name under which the loop's own check after the last remedy records the update it
/// withheld (gradients made non-finite by a remedy).
pub const POST_REMEDY_CHECK: &str = "post_remedy_check";

/// The standard reporters: console (when `console`), events.jsonl, summary.json, report.html.
pub fn default_reporters(console: bool, quiet: bool, total_steps: u64) -> Vec<Box<dyn Reporter>> {
    let mut v: Vec<Box<dyn Reporter>> = Vec::new();
    if console {
        let mut c = ConsoleReporter::default().with_total_steps(total_steps);
        c.quiet = quiet;
        v.push(Box::new(c));
    }
    v.push(Box::new(JsonlReporter::default()));
    v.push(Box::new(SummaryReporter::default()));
    v.push(Box::new(HtmlReporter::default()));
    v
}

/// The defaults with the spec's reporters added: a spec reporter whose kind is among the
/// defaults takes that default's place (so a spec can reconfigure it), any other is appended.
pub fn merge_reporters(
    defaults: Vec<Box<dyn Reporter>>,
    listed: Vec<Box<dyn Reporter>>,
) -> Vec<Box<dyn Reporter>> {
    // Each default with whether a listed reporter already took its place.
    let mut slots: Vec<(Box<dyn Reporter>, bool)> =
        defaults.into_iter().map(|d| (d, false)).collect();
    let mut extra = Vec::new();
    for r in listed {
        // Two listed reporters of a default kind: the first replaces it, the next is added.
        match slots
            .iter_mut()
            .find(|(d, taken)| !*taken && d.typetag_name() == r.typetag_name())
        {
            Some(slot) => *slot = (r, true),
            None => extra.push(r),
        }
    }
    slots.into_iter().map(|(r, _)| r).chain(extra).collect()
}

struct Checkpoints {
    policy: CheckpointPolicy,
    ring: std::collections::VecDeque<Snapshot>,
}

impl Checkpoints {
    fn new(policy: CheckpointPolicy) -> Self {
        Checkpoints {
            policy,
            ring: std::collections::VecDeque::new(),
        }
    }
    fn keep(&mut self, snap: Snapshot) {
        self.ring.push_back(snap);
        while self.ring.len() > self.policy.keep.max(1) {
            self.ring.pop_front();
        }
    }
}

/// Runs `spec` to completion: trains, watches, cures and reports.
pub fn run_experiment(mut spec: ExperimentSpec, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let seed = opts.seed.unwrap_or(spec.seed);
    if let Some(steps) = opts.steps {
        spec.train.steps = Some(steps);
        spec.train.epochs = None;
    }
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    // The spec as given, for deciding which cures apply and for verification.
    let original = spec.try_clone()?;
    // Held to the end of the run: no second run writes into the same directory.
    let _lock = lock_run_dir(&out_dir)?;
    let mut trainer = Trainer::new(&spec.model, &spec.task, &spec.train, seed)?;
    let initial = probe_trainer(&mut trainer, spec.model.is_recurrent(), 3)?;
    let mut detectors: Vec<Box<dyn Detector>> =
        spec.detectors.take().unwrap_or_else(default_detectors);
    let mut remedies = std::mem::take(&mut spec.remedies);
    let console = opts.console.unwrap_or(true);
    let defaults = if spec.default_reporters {
        default_reporters(console, opts.quiet, trainer.planned_steps())
    } else {
        Vec::new()
    };
    let mut reporters = merge_reporters(defaults, spec.reporters.take().unwrap_or_default());
    if !console {
        // An explicit "no console" (compare's variants) drops console reporters from specs too.
        reporters.retain(|r| r.typetag_name() != "console");
    }
    let clip_threshold = remedies.iter().find_map(|r| r.clip_threshold());
    let mut checkpoints = remedies
        .iter()
        .find_map(|r| r.checkpoint_policy())
        .map(Checkpoints::new);
    let info = RunInfo {
        name: spec.name.clone(),
        seed,
        out_dir: out_dir.clone(),
        params: trainer.param_infos(),
        clip_threshold,
    };
    for r in reporters.iter_mut() {
        r.start(&info)?;
    }
    let remedy_names: Vec<String> = remedies
        .iter()
        .map(|r| r.typetag_name().to_string())
        .collect();

    write_spec(&original, &out_dir, seed);
    let mut diagnoser = Diagnoser::default();
    diagnoser.set_initial_growth(initial_growth(&initial, spec.model.is_recurrent()));
    let mut recorder = CompareRecorder::new(gradguard_report::BoundedSeries::DEFAULT_CAPACITY);
    let mut stats = StepStats::default();
    let mut findings: Vec<Finding> = Vec::new();
    let mut last_update: Option<UpdateStats> = None;
    let mut lr_scale = 1.0f64;
    let mut last_loss = f64::NAN;
    let mut stopped_early: Option<String> = None;
    let mut pending_error: Option<RunError> = None;
    let planned = trainer.planned_steps();
    let mut halting = false;

    if let Some(cp) = checkpoints.as_mut() {
        cp.keep(trainer.snapshot());
    }

    let mut interrupted: Option<i32> = None;
    while !trainer.finished() {
        if let Some(sig) = opts.interrupt.as_ref().and_then(Interrupt::signal) {
            // The previous step finished and was recorded: end here like a completed run.
            interrupted = Some(sig);
            stopped_early = Some(format!(
                "interrupted by signal {sig} after step {}",
                trainer.steps_done()
            ));
            break;
        }
        let step_info = match trainer.step_gradients() {
            Ok(s) => s,
            Err(e) => {
                pending_error = Some(e.into());
                break;
            }
        };
        let step = trainer.steps_done();
        let loss = step_info.loss;
        last_loss = loss;
        let series = trainer.series();
        let mut actions: Vec<ActionRecord> = Vec::new();
        let mut strongest = Action::Continue;
        let mut event;
        {
            let mut view = match trainer.view() {
                Ok(v) => v,
                Err(e) => {
                    pending_error = Some(e.into());
                    break;
                }
            };
            stats.measure_into(&view);
            findings.clear();
            {
                let obs = Observation {
                    step,
                    loss,
                    stats: &stats,
                    update: last_update.as_ref(),
                    view: Some(&view),
                    series: &series,
                };
                for d in detectors.iter_mut() {
                    d.observe(&obs, &mut findings);
                }
            }
            event = Event::from_stats(step, loss, &stats, last_update.as_ref());
            let grads_finite_before = stats.grads_finite() && stats.grad_norm.is_finite();
            let mut ctx = RemedyContext::new(step, loss, &mut view, &mut stats);
            ctx.findings = &findings;
            if halting {
                strongest = Action::Stop {
                    reason: "the weights are non-finite; training cannot recover".into(),
                };
            }
            for (remedy, name) in remedies.iter_mut().zip(&remedy_names) {
                if halting {
                    break;
                }
                ctx.changed = false;
                match remedy.apply(&mut ctx) {
                    Ok(action) => {
                        if ctx.changed || action != Action::Continue {
                            if action.severity() > strongest.severity() {
                                strongest = action.clone();
                            }
                            let caps = remedy.capabilities();
                            actions.push(ActionRecord::new(name, &caps, ctx.changed, action));
                        }
                    }
                    Err(e) => {
                        strongest = Action::Stop {
                            reason: e.to_string(),
                        };
                        let caps = remedy.capabilities();
                        actions.push(ActionRecord::new(name, &caps, false, strongest.clone()));
                        pending_error = Some(e.into());
                        break;
                    }
                }
                if matches!(strongest, Action::Stop { .. }) {
                    break;
                }
            }
            if ctx.penalty != 0.0 {
                event.penalty = Some(ctx.penalty);
            }
            event.grad_norm_after = Some(ctx.stats.grad_norm);
            // Re-check after the last remedy: gradients that were finite must not reach the
            // weights non-finite because a remedy (e.g. a huge penalty) made them so.
            let made_nonfinite = grads_finite_before
                && (!ctx.stats.grads_finite() || !ctx.stats.grad_norm.is_finite());
            if made_nonfinite && strongest.severity() < 2 {
                strongest = Action::SkipStep {
                    reason: format!(
                        "the gradients were finite before the remedies and non-finite after them (norm {}): the update is withheld",
                        ctx.stats.grad_norm
                    ),
                };
                actions.push(ActionRecord::new(
                    POST_REMEDY_CHECK,
                    &Default::default(),
                    false,
                    strongest.clone(),
                ));
            }
        }
        event.epoch = Some(step_info.position.epoch + 1);
        event.series = series;
        event.findings = findings.clone();
        event.lr = Some(trainer.lr() * lr_scale);

        match &strongest {
            Action::Continue | Action::ScaleLr { .. } => {
                if let Action::ScaleLr { factor, .. } = strongest {
                    if factor.is_finite() && factor > 0.0 {
                        lr_scale *= factor;
                        event.lr = Some(trainer.lr() * lr_scale);
                    }
                }
                match trainer.apply_update(lr_scale) {
                    Ok(u) => last_update = Some(u),
                    Err(e) => {
                        pending_error = Some(e.into());
                        break;
                    }
                }
            }
            Action::SkipStep { .. } => {
                trainer.skip();
                event.applied = false;
                last_update = None;
            }
            Action::Rollback { reason } => {
                trainer.skip();
                event.applied = false;
                last_update = None;
                match checkpoints
                    .as_ref()
                    .and_then(|c| c.ring.back().cloned().map(|s| (s, c.policy)))
                {
                    Some((snap, policy)) => {
                        if let Err(e) = trainer.restore(&snap) {
                            pending_error = Some(e.into());
                            break;
                        }
                        trainer.skip_batches(policy.skip_batches);
                        for d in detectors.iter_mut() {
                            d.reset();
                        }
                        tracing::info!(
                            "step {step}: rolled back to step {} ({reason})",
                            snap.steps_done()
                        );
                    }
                    None => {
                        stopped_early = Some(format!(
                            "step {step}: rollback asked ({reason}) but no checkpoint is kept"
                        ));
                    }
                }
            }
            Action::Stop { reason } => {
                trainer.skip();
                event.applied = false;
                stopped_early = Some(if halting {
                    format!("step {step}: {reason}")
                } else {
                    format!("step {step}: stopped by a remedy: {reason}")
                });
            }
        }
        event.actions = actions;

        let weights_broken = last_update
            .as_ref()
            .map(|u| u.params.iter().any(|p| p.weight_nonfinite > 0))
            .unwrap_or(false)
            && event.applied;
        if event.applied {
            if let Some(cp) = checkpoints.as_mut() {
                let every = cp.policy.every.max(1);
                if !weights_broken
                    && loss.is_finite()
                    && stats.grads_finite()
                    && trainer.steps_done() % every == 0
                {
                    cp.keep(trainer.snapshot());
                }
            }
        }

        diagnoser.observe_event(&event);
        recorder.push(&event);
        for r in reporters.iter_mut() {
            if let Err(e) = r.event(&event) {
                pending_error = Some(e.into());
            }
        }
        if pending_error.is_some() || stopped_early.is_some() {
            break;
        }
        if opts.stop_when_beyond_saving && diagnoser.beyond_saving() {
            stopped_early = Some(format!(
                "step {step}: a decisive sign made a healthy verdict impossible (verification stops such a run)"
            ));
            break;
        }
        if weights_broken {
            // Observe one more step (the detectors then see the non-finite weights and name
            // the tensor), then stop: nothing can be learnt from non-finite weights.
            halting = true;
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
        diagnoser.set_learning(Learning {
            final_train_loss: e.loss,
            baseline_loss: b.train_loss,
            margin: Learning::DEFAULT_MARGIN,
        });
    }
    let mut diagnosis = diagnoser.finish();
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
    let summary = run_summary(&diagnosis, &figures, diagnoser.remedy_activations());
    let end = RunEnd {
        diagnosis: &diagnosis,
        summary: &summary,
    };
    let mut finish_error = None;
    for r in reporters.iter_mut() {
        if let Err(e) = r.finish(&end) {
            finish_error.get_or_insert(e);
        }
    }
    if let Some(e) = pending_error {
        return Err(e);
    }
    if let Some(e) = finish_error {
        return Err(e.into());
    }
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
    let Ok(mut value) = serde_json::to_value(spec) else {
        return;
    };
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
    if let Ok(text) = serde_json::to_string_pretty(&value) {
        if std::fs::create_dir_all(out_dir).is_ok() {
            let _ = gradguard_report::write_atomically(&out_dir.join("spec.json"), text.as_bytes());
        }
    }
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
