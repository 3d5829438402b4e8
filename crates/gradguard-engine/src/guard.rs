//! [`Guard`]: one training step as a library.

use gradguard_core::{
    Action, ActionRecord, CheckpointPolicy, Detector, Diagnosis, Event, Finding, GradientFramework,
    Learning, Observation, ParamView, PluginState, Remedy, RemedyContext, RemedyError, ReportError,
    Reporter, RunEnd, RunInfo, RunSummary, Series, Sign, StepStats, UpdateStats,
};
use gradguard_detectors::{default_detectors, run_summary, Diagnoser, InitialGrowth, RunFigures};
use serde::{Deserialize, Serialize};

use crate::host::{HostError, TrainingHost};

/// The name under which the Guard's own check after the last remedy records the update it
/// withheld: gradients made non-finite by a remedy (the step is skipped), or non-finite
/// gradients from the backward pass that no remedy withheld (the step is skipped and the run
/// stops).
pub const POST_REMEDY_CHECK: &str = "post_remedy_check";

/// The name under which the Guard records an update that the loop's optimiser withheld
/// because it would have written non-finite weights or state ([`UpdateStats::withheld`]),
/// e.g. a finite gradient times a learning rate that overflows f32.
pub const UPDATE_CHECK: &str = "update_check";

/// Why the Guard could not go on.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A reporter failed (the error names the file). The step was still recorded by the
    /// diagnosis and by every other reporter.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The training loop failed a checkpoint request (snapshot or restore).
    #[error("the training loop could not {what}: {source}")]
    Host {
        /// What was asked: `take a snapshot` or `restore a snapshot`.
        what: &'static str,
        /// The loop's error.
        source: HostError,
    },
    /// The Guard was driven out of order (e.g. `after_update` without `step`).
    #[error("the Guard was driven out of order: {0}")]
    Order(&'static str),
    /// A checkpoint's Guard state could not be saved, or does not fit this Guard's plugins.
    #[error("the Guard's checkpoint state: {0}")]
    State(String),
}

/// The version of [`Guard::save_state`]'s layout.
const STATE_FORMAT: u32 = 1;

/// What [`Guard::save_state`] keeps: everything a step depends on from earlier steps.
#[derive(Serialize, Deserialize)]
struct SavedGuard {
    format: u32,
    detectors: Vec<SavedPlugin>,
    remedies: Vec<SavedPlugin>,
    diagnoser: Diagnoser,
    last_update: Option<UpdateStats>,
    lr_scale: f64,
    halting: bool,
    last_loss: f64,
}

/// One plugin's kind (to check the spec still lists the same plugins in the same order) and
/// its saved history.
#[derive(Serialize, Deserialize)]
struct SavedPlugin {
    kind: String,
    state: Option<PluginState>,
}

/// What the training loop tells the Guard about a step besides its gradients.
#[derive(Clone, Debug, Default)]
pub struct StepInput {
    /// The step: optimiser updates counted from 1, attempted ones included.
    pub step: u64,
    /// The step's training loss (may be NaN or infinite).
    pub loss: f64,
    /// The epoch, counted from 1, if the loop has epochs.
    pub epoch: Option<u64>,
    /// The loop's learning rate before the Guard's own scaling ([`Decision::lr_scale`]).
    pub lr: Option<f64>,
    /// Extra norms the model measured (per time step or per layer), for the growth detectors.
    pub series: Vec<Series>,
    /// The held-out loss when the loop evaluated it at this step (at the weights the step's
    /// gradients were computed at); recorded in the event as `held_out_loss`.
    pub held_out_loss: Option<f64>,
}

/// What the Guard decided for one step. The loop then applies the update (scaled by
/// `lr_scale`) when [`Decision::apply`], or leaves the weights alone, and calls
/// [`Guard::after_update`] either way.
#[derive(Debug)]
pub struct Decision {
    /// The strongest action of the remedies: Stop > Rollback > SkipStep > ScaleLr > Continue.
    pub action: Action,
    /// Whether to apply the update (Continue or ScaleLr).
    pub apply: bool,
    /// The factor to multiply the loop's learning rate by for this update (the product of
    /// every ScaleLr so far; 1 when none).
    pub lr_scale: f64,
    /// The global gradient norm before the remedies.
    pub grad_norm_before: f64,
    /// The global gradient norm after the remedies (what the update will use).
    pub grad_norm_after: f64,
    /// The error of a remedy that stopped the run (`on_nonfinite = "error"`), if one did; the
    /// action is then Stop.
    pub error: Option<RemedyError>,
}

impl Decision {
    /// Whether the run must end after this step (the action is Stop).
    pub fn stop(&self) -> bool {
        matches!(self.action, Action::Stop { .. })
    }
}

/// How a step ended, from [`Guard::after_update`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepEnd {
    /// Why the run must end here, if it must (a remedy stopped it, a rollback had no
    /// snapshot, or the weights stayed non-finite).
    pub stop: Option<String>,
    /// The update count the weights were rolled back to, when a rollback happened.
    pub rolled_back_to: Option<u64>,
}

/// One step of gradguard as a library: measure, detect, remedy, resolve the action, record the
/// event, diagnose. Any training loop drives it; it knows no framework.
///
/// ```text
/// guard.start(info, host)                          reporters start; first snapshot if a remedy may roll back
/// per step:
///   d = guard.step(input, &mut view)               statistics (one pass), detectors, remedies (in order)
///   if d.apply { update with lr * d.lr_scale }     the loop's optimiser; gradients as the remedies left them
///   guard.after_update(update_stats, host)         rollback/snapshots through the host, the event recorded
///   stop when the StepEnd says so
/// guard.finish(figures)                            Diagnosis; summary.json, report.html, flushes
/// ```
///
/// Statistics the loop already measured reach the Guard through the view
/// ([`gradguard_core::Param::known_weight_stats`]): the statistics pass then skips them.
pub struct Guard {
    detectors: Vec<Box<dyn Detector>>,
    remedies: Vec<Box<dyn Remedy>>,
    remedy_names: Vec<String>,
    reporters: Vec<Box<dyn Reporter>>,
    diagnoser: Diagnoser,
    checkpoints: Option<CheckpointPolicy>,
    stats: StepStats,
    findings: Vec<Finding>,
    last_update: Option<UpdateStats>,
    lr_scale: f64,
    /// The weights became non-finite: the next step observes them, then the run stops.
    halting: bool,
    /// The step between [`Guard::step`] and [`Guard::after_update`].
    open: Option<OpenStep>,
    last_event: Option<Event>,
    last_loss: f64,
    started: bool,
    /// The post-remedy check is off (see [`Guard::set_unguarded`]).
    unguarded: bool,
}

struct OpenStep {
    event: Event,
    action: Action,
    base_lr: Option<f64>,
}

impl Default for Guard {
    /// Every built-in detector, no remedy, no reporter.
    fn default() -> Self {
        Guard::new(default_detectors(), Vec::new(), Vec::new())
    }
}

impl Guard {
    /// A Guard over these plugins (in the order given: detectors see each step in order, then
    /// remedies act in order).
    pub fn new(
        detectors: Vec<Box<dyn Detector>>,
        remedies: Vec<Box<dyn Remedy>>,
        reporters: Vec<Box<dyn Reporter>>,
    ) -> Self {
        let remedy_names = remedies
            .iter()
            .map(|r| r.typetag_name().to_string())
            .collect();
        let checkpoints = remedies.iter().find_map(|r| r.checkpoint_policy());
        Guard {
            detectors,
            remedies,
            remedy_names,
            reporters,
            diagnoser: Diagnoser::default(),
            checkpoints,
            stats: StepStats::default(),
            findings: Vec::new(),
            last_update: None,
            lr_scale: 1.0,
            halting: false,
            open: None,
            last_event: None,
            last_loss: f64::NAN,
            started: false,
            unguarded: false,
        }
    }

    /// Every built-in detector with these remedies and reporters (`None`: the defaults of
    /// [`crate::default_reporters`] without a console).
    pub fn with_remedies(
        remedies: Vec<Box<dyn Remedy>>,
        reporters: Option<Vec<Box<dyn Reporter>>>,
    ) -> Self {
        let reporters = reporters.unwrap_or_else(|| crate::default_reporters(false, false, 0));
        Guard::new(default_detectors(), remedies, reporters)
    }

    /// Turns the post-remedy check ([`POST_REMEDY_CHECK`]) off: non-finite gradients that no
    /// remedy withheld are applied, as PyTorch's `optimizer.step()` would apply them. Only for
    /// studying unprotected training (the claims book tests the field's claims about training
    /// without a guard); never the default. The loop must then also apply its update without
    /// its own transactional check (in the pipeline: `RunOptions::unguarded`).
    pub fn set_unguarded(&mut self, unguarded: bool) {
        self.unguarded = unguarded;
    }

    /// The growth the probe at initialisation measured, which the diagnosis may blame.
    pub fn set_initial_growth(&mut self, growth: InitialGrowth) {
        self.diagnoser.set_initial_growth(growth);
    }

    /// Whether the run learned (the final loss against the best constant predictor's), for
    /// the diagnosis' `not_learning` verdict.
    pub fn set_learning(&mut self, learning: Learning) {
        self.diagnoser.set_learning(learning);
    }

    /// The global-norm threshold of the first remedy that clips to one (for charts).
    pub fn clip_threshold(&self) -> Option<f64> {
        self.remedies.iter().find_map(|r| r.clip_threshold())
    }

    /// The checkpoints the first remedy that may roll back asks the loop to keep.
    pub fn checkpoint_policy(&self) -> Option<CheckpointPolicy> {
        self.checkpoints
    }

    /// The reporters (e.g. to drop console ones before [`Guard::start`]).
    pub fn reporters_mut(&mut self) -> &mut Vec<Box<dyn Reporter>> {
        &mut self.reporters
    }

    /// Starts the reporters, and takes the first snapshot when a remedy may roll back.
    /// `info.clip_threshold` is filled from the remedies when it is `None`.
    pub fn start(
        &mut self,
        mut info: RunInfo,
        host: &mut dyn TrainingHost,
    ) -> Result<(), GuardError> {
        if info.clip_threshold.is_none() {
            info.clip_threshold = self.clip_threshold();
        }
        for r in self.reporters.iter_mut() {
            r.start(&info)?;
        }
        if let Some(policy) = self.checkpoints {
            host.snapshot(policy.keep.max(1))
                .map_err(|source| GuardError::Host {
                    what: "take a snapshot",
                    source,
                })?;
        }
        self.started = true;
        Ok(())
    }

    /// Everything later steps depend on, for a checkpoint: each detector's and remedy's
    /// history ([`Detector::save_state`], [`Remedy::save_state`]), the diagnoser (every step
    /// so far, for the diagnosis), the last update's statistics, the learning-rate scale the
    /// remedies set, and whether the run is halting. Call it between steps (after
    /// [`Guard::after_update`]). The weights, optimiser, data position and snapshots are the
    /// training loop's to save.
    pub fn save_state(&self) -> Result<PluginState, GuardError> {
        let plugin_err = |family: &str, i: usize, kind: &str, e: gradguard_core::StateError| {
            GuardError::State(format!("{family} {} (`{kind}`): {e}", i + 1))
        };
        let mut detectors = Vec::with_capacity(self.detectors.len());
        for (i, d) in self.detectors.iter().enumerate() {
            let kind = d.typetag_name();
            detectors.push(SavedPlugin {
                kind: kind.to_string(),
                state: d
                    .save_state()
                    .map_err(|e| plugin_err("detector", i, kind, e))?,
            });
        }
        let mut remedies = Vec::with_capacity(self.remedies.len());
        for (i, r) in self.remedies.iter().enumerate() {
            let kind = r.typetag_name();
            remedies.push(SavedPlugin {
                kind: kind.to_string(),
                state: r
                    .save_state()
                    .map_err(|e| plugin_err("remedy", i, kind, e))?,
            });
        }
        PluginState::encode(&SavedGuard {
            format: STATE_FORMAT,
            detectors,
            remedies,
            diagnoser: self.diagnoser.clone(),
            last_update: self.last_update.clone(),
            lr_scale: self.lr_scale,
            halting: self.halting,
            last_loss: self.last_loss,
        })
        .map_err(|e| GuardError::State(e.to_string()))
    }

    /// Flushes every reporter ([`Reporter::flush`]); the first error is returned after every
    /// reporter was flushed. Call it before writing a checkpoint.
    pub fn flush_reporters(&mut self) -> Result<(), GuardError> {
        let mut first = None;
        for r in self.reporters.iter_mut() {
            if let Err(e) = r.flush() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Starts a resumed run instead of [`Guard::start`]: restores what [`Guard::save_state`]
    /// saved (checking that the detectors and remedies are the same kinds, in the same order,
    /// as when it was saved) and resumes every reporter with the events recorded up to the
    /// checkpoint ([`Reporter::resume`]: files are rebuilt from them, the console says where
    /// the run resumes). No snapshot is taken: the loop restores its own. After an error the
    /// Guard may hold part of the saved history: build a new one rather than go on with it.
    pub fn resume(
        &mut self,
        mut info: RunInfo,
        state: &PluginState,
        past: &[Event],
    ) -> Result<(), GuardError> {
        let saved: SavedGuard = state
            .decode()
            .map_err(|e| GuardError::State(e.to_string()))?;
        if saved.format != STATE_FORMAT {
            return Err(GuardError::State(format!(
                "layout {}, this gradguard reads layout {STATE_FORMAT}",
                saved.format
            )));
        }
        fn same_kinds<'a>(
            family: &str,
            saved: &[SavedPlugin],
            now: impl ExactSizeIterator<Item = &'a str>,
        ) -> Result<(), GuardError> {
            let now: Vec<&str> = now.collect();
            let then: Vec<&str> = saved.iter().map(|p| p.kind.as_str()).collect();
            if now != then {
                return Err(GuardError::State(format!(
                    "the checkpoint was made with the {family} [{}], the spec now lists [{}]: resume with the spec the run started with",
                    then.join(", "),
                    now.join(", ")
                )));
            }
            Ok(())
        }
        same_kinds(
            "detectors",
            &saved.detectors,
            self.detectors.iter().map(|d| d.typetag_name()),
        )?;
        same_kinds(
            "remedies",
            &saved.remedies,
            self.remedies.iter().map(|r| r.typetag_name()),
        )?;
        let restore_err = |family: &str, i: usize, kind: &str, e: gradguard_core::StateError| {
            GuardError::State(format!("{family} {} (`{kind}`): {e}", i + 1))
        };
        for (i, (d, s)) in self.detectors.iter_mut().zip(&saved.detectors).enumerate() {
            if let Some(st) = &s.state {
                d.restore_state(st)
                    .map_err(|e| restore_err("detector", i, &s.kind, e))?;
            }
        }
        for (i, (r, s)) in self.remedies.iter_mut().zip(&saved.remedies).enumerate() {
            if let Some(st) = &s.state {
                r.restore_state(st)
                    .map_err(|e| restore_err("remedy", i, &s.kind, e))?;
            }
        }
        self.diagnoser = saved.diagnoser;
        self.last_update = saved.last_update;
        self.lr_scale = saved.lr_scale;
        self.halting = saved.halting;
        self.last_loss = saved.last_loss;
        self.last_event = past.last().cloned();
        if info.clip_threshold.is_none() {
            info.clip_threshold = self.clip_threshold();
        }
        for r in self.reporters.iter_mut() {
            r.resume(&info, past)?;
        }
        self.started = true;
        Ok(())
    }

    /// One step, before the update: measures `view` (one fused pass), runs every detector,
    /// then every remedy (which may edit the gradients in `view` in place), and resolves the
    /// strongest action. Then the post-remedy check ([`POST_REMEDY_CHECK`]): gradients that
    /// are non-finite after the last remedy are never applied. Made non-finite by a remedy
    /// (e.g. a huge penalty): the step is skipped. Non-finite from the backward pass with no
    /// remedy withholding them: the step is skipped and the run stops (`Action::Stop`), with
    /// the detectors' `grad_nonfinite` finding naming the tensor.
    pub fn step(&mut self, input: StepInput, view: &mut ParamView<'_>) -> Decision {
        self.run_step(input, view, None)
    }

    /// [`Guard::step`] for gradients kept by another framework ([`GradientFramework`]): when
    /// their values are on the host (CPU tensors sharing memory with `view`), the view is
    /// measured as usual and the framework applies the edits it must match bit for bit
    /// (PyTorch's `clip_grad_norm_`); when they are not (CUDA tensors), `view` is empty, the
    /// framework measures the step and applies every edit, detectors see no view (those
    /// that need the weights, e.g. the recurrent radius, stay quiet), and a remedy that needs
    /// the values stops the step with an error naming it.
    pub fn step_with_framework(
        &mut self,
        input: StepInput,
        view: &mut ParamView<'_>,
        framework: &mut dyn GradientFramework,
    ) -> Decision {
        self.run_step(input, view, Some(framework))
    }

    fn run_step(
        &mut self,
        input: StepInput,
        view: &mut ParamView<'_>,
        mut framework: Option<&mut dyn GradientFramework>,
    ) -> Decision {
        let StepInput {
            step,
            loss,
            epoch,
            lr,
            series,
            held_out_loss,
        } = input;
        self.last_loss = loss;
        let on_host = framework.as_ref().is_none_or(|f| f.values_on_host());
        let mut measure_error = None;
        if on_host {
            self.stats.measure_into(view);
        } else if let Some(fw) = framework.as_deref_mut() {
            if let Err(e) = fw.measure(&mut self.stats) {
                measure_error = Some(RemedyError::Framework {
                    remedy: "(measuring the gradients)".into(),
                    step,
                    message: e.0,
                });
            }
        }
        self.findings.clear();
        if measure_error.is_none() {
            let obs = Observation {
                step,
                loss,
                stats: &self.stats,
                update: self.last_update.as_ref(),
                view: on_host.then_some(&*view),
                series: &series,
            };
            for d in self.detectors.iter_mut() {
                d.observe(&obs, &mut self.findings);
            }
        }
        let mut event = Event::from_stats(step, loss, &self.stats, self.last_update.as_ref());
        event.held_out_loss = held_out_loss;
        let grad_norm_before = self.stats.grad_norm;
        let grads_finite_before = self.stats.grads_finite() && grad_norm_before.is_finite();
        let mut actions: Vec<ActionRecord> = Vec::new();
        let mut strongest = Action::Continue;
        let mut error = None;
        let mut ctx =
            RemedyContext::new(step, loss, view, &mut self.stats).with_findings(&self.findings);
        if let Some(fw) = framework {
            ctx = ctx.with_framework(fw);
        }
        if let Some(e) = measure_error {
            strongest = Action::Stop {
                reason: e.to_string(),
            };
            error = Some(e);
        } else if self.halting {
            strongest = Action::Stop {
                reason: "the weights are non-finite; training cannot recover".into(),
            };
        } else {
            for (remedy, name) in self.remedies.iter_mut().zip(&self.remedy_names) {
                ctx.take_changed();
                let result = remedy
                    .apply(&mut ctx)
                    .and_then(|action| match ctx.take_problem() {
                        None => Ok(action),
                        Some(message) => Err(RemedyError::Framework {
                            remedy: name.clone(),
                            step,
                            message,
                        }),
                    });
                match result {
                    Ok(action) => {
                        let changed = ctx.changed();
                        if changed || action != Action::Continue {
                            if action.severity() > strongest.severity() {
                                strongest = action.clone();
                            }
                            let caps = remedy.capabilities();
                            actions.push(ActionRecord::new(name, &caps, changed, action));
                        }
                    }
                    Err(e) => {
                        strongest = Action::Stop {
                            reason: e.to_string(),
                        };
                        let caps = remedy.capabilities();
                        actions.push(ActionRecord::new(name, &caps, false, strongest.clone()));
                        error = Some(e);
                        break;
                    }
                }
                if matches!(strongest, Action::Stop { .. }) {
                    break;
                }
            }
        }
        if ctx.penalty() != 0.0 {
            event.penalty = Some(ctx.penalty());
        }
        let after = ctx.stats();
        let grad_norm_after = after.grad_norm;
        event.grad_norm_after = Some(grad_norm_after);
        // The post-remedy check: no non-finite gradient reaches an applied update. Gradients
        // that were finite but a remedy made non-finite (e.g. a huge penalty): the step is
        // skipped. Non-finite gradients from the backward pass that no remedy withheld (no
        // remedy, or one that lets them through): the step is skipped and the run stops, since
        // nothing the loop does next can make them finite.
        let nonfinite_after = !after.grads_finite() || !grad_norm_after.is_finite();
        if nonfinite_after && !self.unguarded && strongest.severity() < 2 {
            strongest = if grads_finite_before {
                Action::SkipStep {
                    reason: format!(
                        "the gradients were finite before the remedies and non-finite after them (norm {grad_norm_after}): the update is withheld"
                    ),
                }
            } else {
                Action::Stop {
                    reason: format!(
                        "{} non-finite gradient values came out of the backward pass and no remedy withheld them: the update is withheld and the run stops (a remedy with on_nonfinite = \"skip_step\", e.g. clip_global_norm or skip_nonfinite, skips such steps instead)",
                        after.grad_nonfinite
                    ),
                }
            };
            actions.push(ActionRecord::new(
                POST_REMEDY_CHECK,
                &Default::default(),
                false,
                strongest.clone(),
            ));
        }
        if let Action::ScaleLr { factor, .. } = strongest {
            if factor.is_finite() && factor > 0.0 {
                self.lr_scale *= factor;
            }
        }
        event.epoch = epoch;
        event.series = series;
        event.findings = self.findings.clone();
        event.lr = lr.map(|lr| lr * self.lr_scale);
        event.actions = actions;
        let apply = matches!(strongest, Action::Continue | Action::ScaleLr { .. });
        event.applied = apply;
        self.open = Some(OpenStep {
            event,
            action: strongest.clone(),
            base_lr: lr,
        });
        Decision {
            action: strongest,
            apply,
            lr_scale: self.lr_scale,
            grad_norm_before,
            grad_norm_after,
            error,
        }
    }

    /// Ends the step: takes what the update did (`None` when it was withheld; an
    /// [`UpdateStats`] with `withheld` set when the optimiser's transactional check refused
    /// it, which records a `weights_nonfinite` finding naming the tensor and an
    /// [`UPDATE_CHECK`] action, and counts the step as not applied), carries out a
    /// rollback or a snapshot through `host`, and records the event with the diagnosis and
    /// every reporter. A reporter's error is returned after every other reporter saw the
    /// event.
    pub fn after_update(
        &mut self,
        update: Option<UpdateStats>,
        host: &mut dyn TrainingHost,
    ) -> Result<StepEnd, GuardError> {
        let OpenStep {
            mut event,
            action,
            base_lr,
        } = self.open.take().ok_or(GuardError::Order(
            "after_update() without a step() before it",
        ))?;
        let step = event.step;
        let mut end = StepEnd::default();
        if let Some(w) = update.as_ref().and_then(|u| u.withheld.as_ref()) {
            if event.applied {
                // The optimiser's transactional check refused the update: nothing was written.
                let reason = format!(
                    "the update would have made {} weight(s) and {} optimiser-state value(s) of `{}` non-finite: it was withheld and the weights and optimiser state are unchanged",
                    w.nonfinite_weights, w.nonfinite_state, w.param
                );
                let finding = Finding::new(
                    Sign::WeightsNonfinite,
                    step,
                    Some(&w.param),
                    w.nonfinite_weights.max(w.nonfinite_state) as f64,
                    0.0,
                    reason.clone(),
                );
                self.findings.push(finding.clone());
                event.findings.push(finding);
                event.actions.push(ActionRecord::new(
                    UPDATE_CHECK,
                    &Default::default(),
                    false,
                    Action::SkipStep { reason },
                ));
                event.applied = false;
            }
        }
        if !event.applied {
            self.last_update = None;
        } else {
            self.last_update = update;
            event.lr = base_lr.map(|lr| lr * self.lr_scale);
        }
        let mut host_error = None;
        match &action {
            Action::Rollback { reason } => match self.checkpoints {
                Some(policy) => match host.restore_newest() {
                    Ok(Some(to)) => {
                        host.skip_batches(policy.skip_batches);
                        for d in self.detectors.iter_mut() {
                            d.reset();
                        }
                        tracing::info!("step {step}: rolled back to step {to} ({reason})");
                        end.rolled_back_to = Some(to);
                    }
                    Ok(None) => {
                        end.stop = Some(format!(
                            "step {step}: rollback asked ({reason}) but no checkpoint is kept"
                        ));
                    }
                    Err(source) => {
                        end.stop = Some(format!("step {step}: the rollback failed: {source}"));
                        host_error = Some(GuardError::Host {
                            what: "restore a snapshot",
                            source,
                        });
                    }
                },
                None => {
                    end.stop = Some(format!(
                        "step {step}: rollback asked ({reason}) but no checkpoint is kept"
                    ));
                }
            },
            Action::Stop { reason } => {
                end.stop = Some(if self.halting {
                    format!("step {step}: {reason}")
                } else {
                    format!("step {step}: stopped by a remedy: {reason}")
                });
            }
            _ => {}
        }
        let weights_broken = event.applied
            && self
                .last_update
                .as_ref()
                .is_some_and(|u| u.params.iter().any(|p| p.weight_nonfinite > 0));
        if event.applied && host_error.is_none() {
            if let Some(policy) = self.checkpoints {
                let every = policy.every.max(1);
                if !weights_broken
                    && event.loss.is_finite()
                    && self.stats.grads_finite()
                    && step % every == 0
                {
                    if let Err(source) = host.snapshot(policy.keep.max(1)) {
                        host_error = Some(GuardError::Host {
                            what: "take a snapshot",
                            source,
                        });
                    }
                }
            }
        }
        self.diagnoser.observe_event(&event);
        let mut report_error = None;
        for r in self.reporters.iter_mut() {
            if let Err(e) = r.event(&event) {
                report_error.get_or_insert(e);
            }
        }
        self.last_event = Some(event);
        if weights_broken {
            // Observe one more step (the detectors then see the non-finite weights and name
            // the tensor), then stop: nothing can be learnt from non-finite weights.
            self.halting = true;
        }
        if let Some(e) = host_error {
            return Err(e);
        }
        if let Some(e) = report_error {
            return Err(e.into());
        }
        Ok(end)
    }

    /// The event of the last completed step.
    pub fn last_event(&self) -> Option<&Event> {
        self.last_event.as_ref()
    }

    /// What the detectors found at the last step.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The last step's statistics (after the remedies).
    pub fn stats(&self) -> &StepStats {
        &self.stats
    }

    /// The last step's loss.
    pub fn last_loss(&self) -> f64 {
        self.last_loss
    }

    /// Steps recorded so far.
    pub fn steps(&self) -> u64 {
        self.diagnoser.steps()
    }

    /// Whether a decisive sign already makes a healthy verdict impossible.
    pub fn beyond_saving(&self) -> bool {
        self.diagnoser.beyond_saving()
    }

    /// The diagnosis of the steps so far.
    pub fn diagnose(&self) -> Diagnosis {
        self.diagnoser.finish()
    }

    /// Ends the run with `diagnosis` (from [`Guard::diagnose`], possibly edited by the caller,
    /// e.g. with verified evidence): builds the summary from it and `figures`, and finishes
    /// every reporter (summary.json, report.html, flushes). Every reporter is finished even
    /// when one fails; the first error is returned.
    pub fn finish_with(
        &mut self,
        diagnosis: &Diagnosis,
        figures: &RunFigures,
    ) -> Result<RunSummary, GuardError> {
        let summary = run_summary(diagnosis, figures, self.diagnoser.remedy_activations());
        let end = RunEnd {
            diagnosis,
            summary: &summary,
        };
        let mut first = None;
        for r in self.reporters.iter_mut() {
            if let Err(e) = r.finish(&end) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(summary),
        }
    }

    /// Ends the run: the diagnosis of every step, with the reporters finished (see
    /// [`Guard::finish_with`]).
    pub fn finish(mut self, figures: &RunFigures) -> Result<Diagnosis, GuardError> {
        let diagnosis = self.diagnose();
        self.finish_with(&diagnosis, figures)?;
        Ok(diagnosis)
    }
}
