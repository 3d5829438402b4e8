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
//! end: evaluation, Diagnosis, RunSummary -> Reporter::finish
//! ```
//!
//! Non-finite values are never spread into the weights silently: with no remedy asking to
//! skip, an update made from a non-finite loss or gradient is applied (as PyTorch would) but
//! the detectors name it, and the run stops as soon as the weights are non-finite (nothing
//! can be learnt from there); the verdict is then `exploding`.

use std::path::PathBuf;
use std::time::Instant;

use gradguard_core::{
    Action, ActionRecord, CheckpointPolicy, Detector, Diagnosis, Event, Finding, Observation,
    RemedyContext, RemedyError, ReportError, Reporter, RunEnd, RunInfo, RunSummary, StepStats,
    UpdateStats,
};
use gradguard_detectors::{default_detectors, run_summary, Diagnoser, RunFigures};
use gradguard_models::{ModelError, Snapshot, Trainer};
use gradguard_report::{
    compare::CompareRecorder, CompareVariant, ConsoleReporter, HtmlReporter, JsonlReporter,
    SummaryReporter,
};

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
    /// Held-out accuracy, for classification tasks.
    pub test_accuracy: Option<f64>,
    /// Why the run ended early, if it did.
    pub stopped_early: Option<String>,
}

/// The reporters a run uses when its spec lists none.
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
    let mut trainer = Trainer::new(&spec.model, &spec.task, &spec.train, seed)?;
    let mut detectors: Vec<Box<dyn Detector>> =
        spec.detectors.take().unwrap_or_else(default_detectors);
    let mut remedies = std::mem::take(&mut spec.remedies);
    let console = opts.console.unwrap_or(true);
    let mut reporters = spec
        .reporters
        .take()
        .unwrap_or_else(|| default_reporters(console, opts.quiet, trainer.planned_steps()));
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

    let mut diagnoser = Diagnoser::default();
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

    while !trainer.finished() {
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
                            actions.push(ActionRecord {
                                remedy: name.clone(),
                                changed: ctx.changed,
                                action,
                            });
                        }
                    }
                    Err(e) => {
                        strongest = Action::Stop {
                            reason: e.to_string(),
                        };
                        actions.push(ActionRecord {
                            remedy: name.clone(),
                            changed: false,
                            action: strongest.clone(),
                        });
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
        if weights_broken {
            // Observe one more step (the detectors then see the non-finite weights and name
            // the tensor), then stop: nothing can be learnt from non-finite weights.
            halting = true;
        }
    }
    let _ = planned;

    let evaluation = if stopped_early.is_some() && pending_error.is_none() && !last_loss.is_finite()
    {
        None
    } else {
        trainer.evaluate().ok()
    };
    let diagnosis = diagnoser.finish();
    let figures = RunFigures {
        name: spec.name.clone(),
        seed,
        steps: trainer.steps_done(),
        epochs: trainer.cursor().epoch + u64::from(trainer.cursor().batch > 0),
        final_train_loss: Some(last_loss),
        final_test_loss: evaluation.map(|e| e.loss),
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
        test_accuracy: evaluation.and_then(|e| e.accuracy),
        stopped_early,
    })
}
