//! The training bridge: see [`Trainer`].

pub use gradguard_core::RecurrentMatrix;
use gradguard_core::{
    ParamInfo, ParamUpdate, ParamView, Series, SeriesAxis, StepStats, UpdateStats, WeightStats,
    WithheldUpdate,
};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::network::Network;
use crate::ops::loss_and_grad;
use crate::optim::{Known, Optimizer, StepUpdate};
use crate::recurrent::RecurrentState;
use crate::rng::Rng64;
use crate::spec::{validate, LossKind, ModelSpec, TaskSpec, TrainSpec};
use crate::tasks::{build_task, Baseline, Dataset, Targets, TaskData};

/// Where the data stream stands: the next unit of work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub batch: u64,
    /// Truncated-BPTT window within the batch, from 0 (always 0 without windows).
    pub window: u64,
}

/// What one [`Trainer::step_gradients`] call did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// The training loss of this batch (or window), before the update.
    pub loss: f64,
    /// Which data it used.
    pub position: DataCursor,
    /// Number of samples in the batch.
    pub batch_rows: usize,
}

/// Performance on one split ([`Trainer::evaluate`]: held out; [`Trainer::evaluate_train`]:
/// the whole training set), with full sequences and no gradient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean loss over the split's samples (same definition as the training loss: a mean over
    /// every target value). NaN when the split is empty.
    pub loss: f64,
    /// Fraction of correct argmax predictions (classification tasks only).
    pub accuracy: Option<f64>,
    /// Number of samples evaluated.
    pub samples: usize,
}

/// Everything that determines the rest of a run, in memory (for rollback).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) weights: Vec<Vec<f32>>,
    pub(crate) optimizer: Optimizer,
    pub(crate) cursor: DataCursor,
    pub(crate) order: Vec<usize>,
    pub(crate) rng: [u64; 4],
    pub(crate) steps_done: u64,
    pub(crate) states: Vec<Option<RecurrentState>>,
}

impl Snapshot {
    /// The data cursor saved.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }
    /// The number of steps taken when it was saved.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }
}

/// One pass of [`Trainer::probe`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProbePass {
    /// The loss.
    pub loss: f64,
    /// ||g|| of every parameter, in view order.
    pub grad_norms: Vec<(String, f64)>,
    /// Per-time-step (recurrent) or per-layer (MLP) gradient norms.
    pub series: Vec<Series>,
}

/// What [`Trainer::probe`] measured at initialisation, without changing the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    /// One entry per forward/backward pass (on consecutive training batches).
    pub passes: Vec<ProbePass>,
    /// MLP only: the error-signal norm ||dL/dz|| of each dense layer, input layer first
    /// (`layers.0`, `layers.1`, ..., `head`), averaged over the passes.
    pub layer_signal_norms: Vec<(String, f64)>,
    /// Recurrent only: ||dL/dh_t|| per time step of each recurrent layer, averaged over passes.
    pub time_step_norms: Vec<Series>,
    /// The global gradient norm, averaged over the passes.
    pub global_grad_norm: f64,
    /// The recurrent weight matrices `W_hh` (`[gates * hidden, hidden]`, gate blocks stacked
    /// in the rows: 1 for rnn, 4 for lstm, 3 for gru; see [`RecurrentMatrix::gates`]).
    pub recurrent_weights: Vec<RecurrentMatrix>,
    /// One bias per layer, input layer first and the head last, as indices into the view
    /// order (and into each pass's `grad_norms`): a dense layer's `bias`, a recurrent layer's
    /// `bias_ih`. Their gradients are the layers' error signals summed over the batch.
    pub layer_biases: Vec<usize>,
    /// The sequence length of the task (1 for tables).
    pub seq_len: usize,
    /// The truncated-BPTT window, if any.
    pub bptt_window: Option<usize>,
}

/// Builds a model, its data and its optimiser, and runs training steps under the pipeline's
/// control: the bridge the pipeline drives at every step.
///
/// ```text
/// let mut t = Trainer::new(&model, &task, &train, seed)?;
/// while !t.finished() {
///     let info = t.step_gradients()?;          // next batch (or BPTT window), forward, backward
///     let mut view = t.view()?;                // weights + gradients, zero-copy
///     ... detectors read, remedies edit view's gradients in place ...
///     drop(view);
///     let upd = t.apply_update(1.0)?;          // uses the (edited) gradients; or t.skip()
/// }
/// let eval = t.evaluate()?;
/// ```
///
/// Data order: each epoch visits the training samples in a seeded random order (when
/// `train.shuffle`), in batches of `train.batch_size` (the last one may be smaller). The
/// [`DataCursor`] names the next unit of work; [`Trainer::skip_batches`] moves it past data
/// (e.g. after a rollback), and [`Trainer::snapshot`] / [`Trainer::restore`] save and restore
/// everything that determines the rest of the run.
///
/// Truncated BPTT (`train.bptt = { window = K }`): for a many-to-one task the first T-K steps
/// run without gradient and the last K with it; for a many-to-many task (copy) each window of
/// K steps is one call of [`Trainer::step_gradients`] (one optimiser step), and the hidden
/// state is carried to the next window without its gradient. Without `bptt` the gradient
/// flows through the whole sequence.
pub struct Trainer {
    pub(crate) net: Network,
    pub(crate) opt: Optimizer,
    loss: LossKind,
    data: TaskData,
    batch_size: usize,
    shuffle: bool,
    bptt: Option<usize>,
    steps_limit: Option<u64>,
    epochs_limit: u64,
    pub(crate) cursor: DataCursor,
    pub(crate) order: Vec<usize>,
    pub(crate) rng: Rng64,
    pub(crate) steps_done: u64,
    pub(crate) states: Vec<Option<RecurrentState>>,
    bx: Vec<f32>,
    by: Vec<f32>,
    brows: usize,
    pub(crate) loaded: Option<(u64, u64)>,
    upd_buf: Vec<StepUpdate>,
    /// Per tensor, what the transactional update knows before it (reused every step).
    known_buf: Vec<(Known, Option<WeightStats>)>,
    pub(crate) model_kind: &'static str,
    pub(crate) seed: u64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model_kind)
            .field("params", &self.net.store.slots.len())
            .field("cursor", &self.cursor)
            .field("steps_done", &self.steps_done)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Validates the specs, builds the task's data, the model (initialised from `seed`) and
    /// the optimiser.
    pub fn new(
        model: &ModelSpec,
        task: &TaskSpec,
        train: &TrainSpec,
        seed: u64,
    ) -> Result<Self, ModelError> {
        validate(model, task, train)?;
        let data = build_task(task, seed)?;
        let loss = train.loss_for(task);
        Self::build(model, data, train, loss, seed)
    }

    /// A trainer over data you already have in memory (no task spec). The loss is
    /// `train.loss`, or cross-entropy for class targets and MSE otherwise. Checks that the
    /// data's sizes agree with its shape fields.
    pub fn from_data(
        model: &ModelSpec,
        data: TaskData,
        train: &TrainSpec,
        seed: u64,
    ) -> Result<Self, ModelError> {
        model.validate()?;
        train.validate()?;
        let per = data.targets_per_sample();
        for (name, d) in [("train", &data.train), ("test", &data.test)] {
            if d.x.len() != d.n * data.steps * data.input || d.y.len() != d.n * per {
                return Err(ModelError::spec(
                    format!("data.{name}"),
                    format!(
                        "holds {} inputs and {} targets, expected {} x {} x {} and {} x {per}",
                        d.x.len(),
                        d.y.len(),
                        d.n,
                        data.steps,
                        data.input,
                        d.n
                    ),
                ));
            }
        }
        if data.train.n == 0 {
            return Err(ModelError::spec("data.train", "has no samples"));
        }
        if data.targets != Targets::Values {
            for (name, d) in [("train", &data.train), ("test", &data.test)] {
                if let Some(v) = d
                    .y
                    .iter()
                    .find(|v| !(**v >= 0.0 && v.fract() == 0.0 && (**v as usize) < data.outputs))
                {
                    return Err(ModelError::spec(
                        format!("data.{name}.y"),
                        format!("{v} is not a class index in 0..{}", data.outputs),
                    ));
                }
            }
        }
        if !model.is_recurrent() && data.targets == Targets::StepClasses {
            return Err(ModelError::spec(
                "model.kind",
                "targets at every time step need rnn, lstm or gru, not mlp",
            ));
        }
        let loss = train.loss.unwrap_or(match data.targets {
            Targets::Values => LossKind::Mse,
            _ => LossKind::CrossEntropy,
        });
        Self::build(model, data, train, loss, seed)
    }

    fn build(
        model: &ModelSpec,
        data: TaskData,
        train: &TrainSpec,
        loss: LossKind,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if loss == LossKind::Bce {
            if let Some(v) = data
                .train
                .y
                .iter()
                .chain(&data.test.y)
                .find(|v| !(0.0..=1.0).contains(*v))
            {
                return Err(ModelError::spec(
                    "train.loss",
                    format!("bce needs targets in [0, 1], but the data has a target {v}"),
                ));
            }
        }
        let net = Network::build(model, data.steps, data.input, data.outputs, seed)?;
        let opt = Optimizer::new(train.optimizer, train.schedule, net.store.slots.len());
        let mut rng = Rng64::new(seed, 0x5eed);
        let mut order: Vec<usize> = (0..data.train.n).collect();
        if train.shuffle {
            rng.shuffle(&mut order);
        }
        let layers = net.recurrent_layers();
        let bptt = train.bptt.map(|b| b.window).filter(|&k| k < data.steps);
        Ok(Trainer {
            net,
            opt,
            loss,
            data,
            batch_size: train.batch_size,
            shuffle: train.shuffle,
            bptt,
            steps_limit: train.steps,
            epochs_limit: train.epochs.unwrap_or(10),
            cursor: DataCursor::default(),
            order,
            rng,
            steps_done: 0,
            states: vec![None; layers],
            bx: Vec::new(),
            by: Vec::new(),
            brows: 0,
            loaded: None,
            upd_buf: Vec::new(),
            known_buf: Vec::new(),
            model_kind: model.kind_name(),
            seed,
        })
    }

    /// Name, shape and role of every parameter, in view order.
    pub fn param_infos(&self) -> Vec<ParamInfo> {
        self.net.store.infos()
    }

    /// The loss in use.
    pub fn loss_kind(&self) -> LossKind {
        self.loss
    }

    /// The task's data (training and held-out sets, shapes).
    pub fn data(&self) -> &TaskData {
        &self.data
    }

    /// The next unit of work.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Calls of [`Trainer::step_gradients`] so far (updates and skipped steps).
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Optimiser updates applied so far.
    pub fn updates_applied(&self) -> u64 {
        self.opt.t
    }

    /// The learning rate the next update will use (schedule applied, before any scaling).
    pub fn lr(&self) -> f64 {
        self.opt.lr()
    }

    fn batches_per_epoch(&self) -> u64 {
        self.data.train.n.div_ceil(self.batch_size) as u64
    }

    fn windows_per_batch(&self) -> u64 {
        match (self.bptt, self.data.targets) {
            (Some(k), Targets::StepClasses) => self.data.steps.div_ceil(k) as u64,
            _ => 1,
        }
    }

    /// Steps in the whole run: `train.steps`, or epochs × batches × windows.
    pub fn planned_steps(&self) -> u64 {
        self.steps_limit
            .unwrap_or(self.epochs_limit * self.batches_per_epoch() * self.windows_per_batch())
    }

    /// Whether the run has done its planned steps (or epochs).
    pub fn finished(&self) -> bool {
        match self.steps_limit {
            Some(s) => self.steps_done >= s,
            None => {
                let e = if self.cursor.batch >= self.batches_per_epoch() {
                    self.cursor.epoch + 1
                } else {
                    self.cursor.epoch
                };
                e >= self.epochs_limit
            }
        }
    }

    fn roll_epoch_if_needed(&mut self) {
        if self.cursor.batch >= self.batches_per_epoch() {
            self.cursor.epoch += 1;
            self.cursor.batch = 0;
            self.cursor.window = 0;
            if self.shuffle {
                self.rng.shuffle(&mut self.order);
            }
        }
    }

    /// Moves the cursor past `n` whole batches (to the start of a batch), e.g. to skip the
    /// data that triggered an explosion after a rollback. Epoch boundaries reshuffle as usual.
    pub fn skip_batches(&mut self, n: u64) {
        for _ in 0..n {
            self.roll_epoch_if_needed();
            self.cursor.batch += 1;
            self.cursor.window = 0;
        }
        self.states.iter_mut().for_each(|s| *s = None);
        self.loaded = None;
    }

    fn load_batch(&mut self) {
        let (t, i) = (self.data.steps, self.data.input);
        let recurrent = self.net.recurrent_layers() > 0;
        let n = self.data.train.n;
        let start = (self.cursor.batch as usize * self.batch_size).min(n);
        let end = (start + self.batch_size).min(n);
        let rows = end - start;
        let d: &Dataset = &self.data.train;
        let tps = self.data.targets_per_sample();
        self.bx.clear();
        self.by.clear();
        let idx = &self.order[start..end];
        if recurrent {
            self.bx.resize(t * rows * i, 0.0);
            for step in 0..t {
                for (r, &s) in idx.iter().enumerate() {
                    let src = &d.x[(s * t + step) * i..(s * t + step + 1) * i];
                    self.bx[(step * rows + r) * i..(step * rows + r + 1) * i].copy_from_slice(src);
                }
            }
        } else {
            for &s in idx {
                self.bx.extend_from_slice(&d.x[s * t * i..(s + 1) * t * i]);
            }
        }
        if self.data.targets == Targets::StepClasses {
            self.by.resize(t * rows, 0.0);
            for step in 0..t {
                for (r, &s) in idx.iter().enumerate() {
                    self.by[step * rows + r] = d.y[s * t + step];
                }
            }
        } else {
            for &s in idx {
                self.by.extend_from_slice(&d.y[s * tps..(s + 1) * tps]);
            }
        }
        self.brows = rows;
        self.loaded = Some((self.cursor.epoch, self.cursor.batch));
        self.states.iter_mut().for_each(|s| *s = None);
    }

    /// Takes the next unit of work (a batch, or a truncated-BPTT window of it), runs forward
    /// and backward, and keeps the gradients for [`Trainer::view`] and
    /// [`Trainer::apply_update`]. Returns the loss (it may be NaN or infinite; nothing is
    /// updated yet).
    pub fn step_gradients(&mut self) -> Result<StepInfo, ModelError> {
        self.roll_epoch_if_needed();
        if self.cursor.window == 0 || self.loaded != Some((self.cursor.epoch, self.cursor.batch)) {
            if self.cursor.window != 0 {
                // restored mid-batch: rebuild the batch but keep the carried states
                let keep = std::mem::take(&mut self.states);
                self.load_batch();
                self.states = keep;
            } else {
                self.load_batch();
            }
        }
        let position = self.cursor;
        let (t, i, rows) = (self.data.steps, self.data.input, self.brows);
        self.net.store.zero_grads();
        let loss = match (
            self.net.recurrent_layers() > 0,
            self.data.targets,
            self.bptt,
        ) {
            (false, _, _) => {
                // the batch is used once: hand its buffer to the input tensor without copying
                let x = std::mem::take(&mut self.bx);
                self.loaded = None;
                self.net.loss_and_gradients(
                    x,
                    (t, rows, i),
                    &self.by,
                    self.loss,
                    &mut self.states,
                    false,
                )?
            }
            (true, Targets::StepClasses, window) => {
                let k = window.unwrap_or(t);
                let w = self.cursor.window as usize;
                let (t0, t1) = (w * k, ((w + 1) * k).min(t));
                let x = self.bx[t0 * rows * i..t1 * rows * i].to_vec();
                let y = &self.by[t0 * rows..t1 * rows];
                self.net.loss_and_gradients(
                    x,
                    (t1 - t0, rows, i),
                    y,
                    self.loss,
                    &mut self.states,
                    true,
                )?
            }
            (true, _, window) => {
                let k = window.unwrap_or(t);
                if k < t {
                    let prefix = self.bx[..(t - k) * rows * i].to_vec();
                    self.net
                        .advance_states(prefix, (t - k, rows, i), &mut self.states)?;
                }
                let x = self.bx[(t - k) * rows * i..].to_vec();
                self.net.loss_and_gradients(
                    x,
                    (k, rows, i),
                    &self.by,
                    self.loss,
                    &mut self.states,
                    false,
                )?
            }
        };
        self.steps_done += 1;
        self.cursor.window += 1;
        if self.cursor.window >= self.windows_per_batch() {
            self.cursor.window = 0;
            self.cursor.batch += 1;
        }
        Ok(StepInfo {
            loss,
            position,
            batch_rows: rows,
        })
    }

    /// Whether the backward pass measures each parameter gradient in its last write of it,
    /// so that the view lends those statistics ([`gradguard_core::Param::known_grad_stats`],
    /// exactly a fresh measure) and the statistics pass reads no gradient. The gradients are
    /// the same bits either way. Off by default: on the MLP reference step (AMD EPYC, 2026-12)
    /// the in-backward measure did not measure cheaper than the separate pass (see
    /// BENCHMARKS.md, "gradguard's overhead on a training step").
    pub fn set_measure_grads_in_backward(&mut self, on: bool) {
        self.net.measure_grads = on;
    }

    /// The weights and the gradients of the last [`Trainer::step_gradients`], zero-copy.
    /// Remedies edit the gradients in place; [`Trainer::apply_update`] uses the edited values.
    pub fn view(&mut self) -> Result<ParamView<'_>, ModelError> {
        self.net.store.view()
    }

    /// Applies one optimiser update with learning rate `lr() * lr_scale`, using the current
    /// gradients (as edited through the view), **transactionally**: when any tensor's new
    /// weights or optimiser state would hold a non-finite value (a NaN gradient, or a finite
    /// one times a learning rate that overflows f32), nothing is written, the gradients are
    /// discarded as by [`Trainer::skip`], and the returned [`UpdateStats::withheld`] names the
    /// tensor (see [`Optimizer::step_checked`]). Otherwise returns per-tensor ||dw||,
    /// ||w_old|| and the number of non-finite weights after the update (then always 0).
    ///
    /// The check costs nothing extra when the bound from known figures holds: max |w| from
    /// the last update pass and max |g| from the gradient buffers when the backward measured
    /// them; [`Trainer::apply_update_with_stats`] takes max |g| from the step's statistics.
    pub fn apply_update(&mut self, lr_scale: f64) -> Result<UpdateStats, ModelError> {
        self.apply_checked(lr_scale, None)
    }

    /// [`Trainer::apply_update`] with max |g| of each tensor taken from `stats` (the step's
    /// statistics after every remedy, e.g. `Guard::stats()`), so that the common case reads
    /// nothing before the update. A `stats` for other tensors (names or count differ) is
    /// ignored.
    pub fn apply_update_with_stats(
        &mut self,
        lr_scale: f64,
        stats: &StepStats,
    ) -> Result<UpdateStats, ModelError> {
        self.apply_checked(lr_scale, Some(stats))
    }

    fn apply_checked(
        &mut self,
        lr_scale: f64,
        stats: Option<&StepStats>,
    ) -> Result<UpdateStats, ModelError> {
        let lr = self.opt.lr() * lr_scale;
        let slots = &self.net.store.slots;
        let stats = stats.filter(|s| {
            s.params.len() == slots.len()
                && s.params
                    .iter()
                    .zip(slots)
                    .all(|(p, s)| p.name == s.info.name)
        });
        self.known_buf.clear();
        for (i, s) in slots.iter().enumerate() {
            let from_stats = stats
                .map(|st| &st.params[i])
                .filter(|p| p.grad_nonfinite == 0)
                .map(|p| p.grad_max_abs);
            let from_buf = || {
                s.g.try_lock()
                    .ok()
                    .and_then(|b| b.known())
                    .filter(|k| k.nonfinite == 0)
                    .map(|k| k.max_abs as f64)
            };
            let known_w = s.known;
            let weight_max_abs = known_w
                .filter(|k| k.nonfinite == 0)
                .map(|k| k.sum_sq.sqrt());
            self.known_buf.push((
                Known {
                    grad_max_abs: from_stats.or_else(from_buf),
                    weight_max_abs,
                },
                known_w,
            ));
        }
        let mut pairs = self.net.store.pairs_mut()?;
        let mut buf = std::mem::take(&mut self.upd_buf);
        let known = &self.known_buf;
        let outcome = self
            .opt
            .step_checked(&mut pairs, lr, |i| known[i].0, &mut buf);
        drop(pairs);
        if let Err(w) = outcome {
            // nothing was written: the weights' statistics still hold
            for (i, (_, k)) in self.known_buf.iter().enumerate() {
                if let Some(k) = k {
                    self.net.store.set_weight_stats(i, *k);
                }
            }
            self.net.store.zero_grads();
            self.upd_buf = buf;
            let param = self.net.store.slots[w.tensor].info.name.clone();
            return Ok(UpdateStats {
                step: self.opt.t,
                lr,
                params: Vec::new(),
                withheld: Some(WithheldUpdate {
                    param,
                    nonfinite_weights: w.nonfinite_weights,
                    nonfinite_state: w.nonfinite_state,
                }),
            });
        }
        Ok(self.finish_update(buf, lr))
    }

    /// The unchecked update (for bare-step benchmarks and loops that filter non-finite
    /// gradients themselves): applies whatever the gradients give, like PyTorch; a NaN
    /// gradient makes NaN weights, counted in the returned statistics.
    pub fn apply_update_unchecked(&mut self, lr_scale: f64) -> Result<UpdateStats, ModelError> {
        let lr = self.opt.lr() * lr_scale;
        let mut pairs = self.net.store.pairs_mut()?;
        let mut buf = std::mem::take(&mut self.upd_buf);
        self.opt.step(&mut pairs, lr, &mut buf);
        drop(pairs);
        Ok(self.finish_update(buf, lr))
    }

    fn finish_update(&mut self, buf: Vec<StepUpdate>, lr: f64) -> UpdateStats {
        for (i, u) in buf.iter().enumerate() {
            self.net.store.set_weight_stats(
                i,
                WeightStats {
                    sum_sq: u.new_weight_sum_sq,
                    nonfinite: u.weight_nonfinite,
                },
            );
        }
        self.net.sync_recurrent();
        let params = self
            .net
            .store
            .slots
            .iter()
            .zip(&buf)
            .map(|(s, u)| ParamUpdate {
                name: s.info.name.clone(),
                update_norm: u.update_sum_sq.sqrt(),
                weight_norm: u.weight_sum_sq.sqrt(),
                weight_nonfinite: u.weight_nonfinite,
            })
            .collect();
        self.upd_buf = buf;
        UpdateStats {
            step: self.opt.t,
            lr,
            params,
            withheld: None,
        }
    }

    /// Discards this step's gradients without updating (the optimiser state and its step
    /// counter are untouched).
    pub fn skip(&mut self) {
        self.net.store.zero_grads();
    }

    /// Saves weights, optimiser state, data cursor and order, RNG and carried states.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            weights: self.net.store.weights_snapshot(),
            optimizer: self.opt.clone(),
            cursor: self.cursor,
            order: self.order.clone(),
            rng: self.rng.state(),
            steps_done: self.steps_done,
            states: self.states.clone(),
        }
    }

    /// Restores a [`Snapshot`] of this trainer.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<(), ModelError> {
        if snap.weights.len() != self.net.store.slots.len() {
            return Err(ModelError::Internal("snapshot of a different model".into()));
        }
        for (i, w) in snap.weights.iter().enumerate() {
            let dst = self.net.store.weights_mut(i);
            if dst.len() != w.len() {
                return Err(ModelError::Internal(format!(
                    "snapshot of a different model (tensor {i})"
                )));
            }
            dst.copy_from_slice(w);
        }
        self.net.sync_recurrent();
        self.opt = snap.optimizer.clone();
        self.cursor = snap.cursor;
        self.order.clone_from(&snap.order);
        self.rng = Rng64::from_state(snap.rng);
        self.steps_done = snap.steps_done;
        self.states.clone_from(&snap.states);
        self.loaded = None;
        self.net.store.zero_grads();
        Ok(())
    }

    /// The held-out loss (full sequences, no truncation) and, for classification, accuracy.
    pub fn evaluate(&mut self) -> Result<Evaluation, ModelError> {
        self.evaluate_split(&self.data.test)
    }

    /// The mean loss (and, for classification, accuracy) over the WHOLE training set with the
    /// current weights: full sequences (no truncated BPTT), no gradient, in chunks of at least
    /// 256 samples. Nothing of the run changes: weights, gradients, optimiser, data cursor
    /// and order, RNG and carried recurrent states are left as they were, so the next
    /// [`Trainer::step_gradients`] gives the same result as without this call.
    pub fn evaluate_train(&mut self) -> Result<Evaluation, ModelError> {
        self.evaluate_split(&self.data.train)
    }

    /// The loss of the best constant predictor ([`TaskData::baseline`]) under this trainer's
    /// loss: the level a model must beat to have learnt anything from its inputs.
    pub fn baseline(&self) -> Option<Baseline> {
        self.data.baseline(self.loss)
    }

    /// Evaluates the current weights on `d` (one of this trainer's splits), reading nothing
    /// but the weights and writing nothing: recurrent states start fresh per chunk.
    fn evaluate_split(&self, d: &Dataset) -> Result<Evaluation, ModelError> {
        let (t, i) = (self.data.steps, self.data.input);
        let recurrent = self.net.recurrent_layers() > 0;
        let tps = self.data.targets_per_sample();
        let chunk = self.batch_size.max(256);
        let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
        let mut grad = Vec::new();
        for start in (0..d.n).step_by(chunk) {
            let end = (start + chunk).min(d.n);
            let rows = end - start;
            let (x, y) = if recurrent {
                let mut x = vec![0f32; t * rows * i];
                for step in 0..t {
                    for r in 0..rows {
                        let s = start + r;
                        x[(step * rows + r) * i..(step * rows + r + 1) * i]
                            .copy_from_slice(&d.x[(s * t + step) * i..(s * t + step + 1) * i]);
                    }
                }
                let y = if self.data.targets == Targets::StepClasses {
                    let mut y = vec![0f32; t * rows];
                    for step in 0..t {
                        for r in 0..rows {
                            y[step * rows + r] = d.y[(start + r) * t + step];
                        }
                    }
                    y
                } else {
                    d.y[start * tps..end * tps].to_vec()
                };
                (x, y)
            } else {
                (
                    d.x[start * t * i..end * t * i].to_vec(),
                    d.y[start * tps..end * tps].to_vec(),
                )
            };
            let mut states = vec![None; self.net.recurrent_layers()];
            let every = self.data.targets == Targets::StepClasses;
            let pred = self.net.predict(x, (t, rows, i), &mut states, every)?;
            let cols = self.data.outputs;
            let l = loss_and_grad(self.loss, &pred, &y, cols, false, &mut grad);
            let units = pred.len() / cols;
            loss_sum += l * units as f64;
            count += units;
            if matches!(self.data.targets, Targets::Classes | Targets::StepClasses) {
                for (r, label) in y.iter().enumerate() {
                    let row = &pred[r * cols..(r + 1) * cols];
                    let arg = row
                        .iter()
                        .enumerate()
                        .fold(0, |b, (c, &v)| if v > row[b] { c } else { b });
                    correct += (arg == *label as usize) as usize;
                }
            }
        }
        let classification = matches!(self.data.targets, Targets::Classes | Targets::StepClasses);
        Ok(Evaluation {
            loss: if count > 0 {
                loss_sum / count as f64
            } else {
                f64::NAN
            },
            accuracy: classification.then(|| correct as f64 / count.max(1) as f64),
            samples: d.n,
        })
    }

    /// Gradient norms the model measured in the last backward pass: per time step of each
    /// recurrent layer (`rnn.0 dL/dh_t`, axis TimeSteps, first step first), or per dense layer
    /// of an MLP (`layers dL/dz`, axis Layers, input layer first, head last).
    pub fn series(&self) -> Vec<Series> {
        let mut out: Vec<Series> = self
            .net
            .time_grad_norms()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, values)| Series {
                name: format!("{name} dL/dh_t"),
                axis: SeriesAxis::TimeSteps,
                values,
            })
            .collect();
        let signals = self.net.layer_signal_norms();
        if !signals.is_empty() {
            out.push(Series {
                name: "layers dL/dz".into(),
                axis: SeriesAxis::Layers,
                values: signals,
            });
        }
        out
    }

    /// Runs `passes` forward/backward passes on the next training batches at the current
    /// weights, records per-parameter gradient norms and the series, and restores everything
    /// (weights, data cursor, RNG): the run continues as if the probe had not happened.
    pub fn probe(&mut self, passes: usize) -> Result<ProbeReport, ModelError> {
        let snap = self.snapshot();
        let mut out = Vec::with_capacity(passes);
        for _ in 0..passes {
            let info = self.step_gradients()?;
            let view = self.view()?;
            let grad_norms = view
                .iter()
                .map(|p| {
                    (
                        p.name.to_string(),
                        p.grads
                            .iter()
                            .map(|&g| g as f64 * g as f64)
                            .sum::<f64>()
                            .sqrt(),
                    )
                })
                .collect();
            drop(view);
            out.push(ProbePass {
                loss: info.loss,
                grad_norms,
                series: self.series(),
            });
        }
        self.restore(&snap)?;
        let k = out.len().max(1) as f64;
        let global_grad_norm = out
            .iter()
            .map(|p| p.grad_norms.iter().map(|(_, g)| g * g).sum::<f64>().sqrt())
            .sum::<f64>()
            / k;
        // element-wise mean of each series over the passes
        let mut mean: Vec<Series> = out.first().map(|p| p.series.clone()).unwrap_or_default();
        for m in &mut mean {
            for (i, v) in m.values.iter_mut().enumerate() {
                *v = out
                    .iter()
                    .filter_map(|p| {
                        p.series
                            .iter()
                            .find(|s| s.name == m.name)
                            .and_then(|s| s.values.get(i))
                    })
                    .sum::<f64>()
                    / k;
            }
        }
        let (layer_series, time_step_norms): (Vec<Series>, Vec<Series>) =
            mean.into_iter().partition(|s| s.axis == SeriesAxis::Layers);
        let layer_signal_norms = layer_series
            .first()
            .map(|s| {
                let n = s.values.len();
                let name = |i: usize| {
                    if i + 1 == n {
                        "head".to_string()
                    } else {
                        format!("layers.{i}")
                    }
                };
                s.values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (name(i), v))
                    .collect()
            })
            .unwrap_or_default();
        let recurrent_weights = self
            .net
            .store
            .slots
            .iter()
            .filter(|s| s.info.role == gradguard_core::Role::RecurrentWeight)
            .map(|s| RecurrentMatrix {
                name: s.info.name.clone(),
                shape: s.info.shape.clone(),
                values: s.w.as_ref().clone(),
            })
            .collect();
        Ok(ProbeReport {
            passes: out,
            layer_signal_norms,
            time_step_norms,
            global_grad_norm,
            recurrent_weights,
            layer_biases: self.net.layer_biases(),
            seq_len: self.data.steps,
            bptt_window: self.bptt,
        })
    }
}
