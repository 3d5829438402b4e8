//! Optimisers over slices, correct for any number of parameter tensors per step.
//!
//! Formulas follow PyTorch's `torch.optim` (no weight decay, no dampening, `maximize = false`):
//! - SGD: `b = μ b + g` (b = g at the first update), `d = nesterov ? g + μ b : b` (d = g when
//!   μ = 0), `w -= lr d`.
//! - Adam: one step counter `t` for the whole update (all tensors), `m = β1 m + (1-β1) g`,
//!   `v = β2 v + (1-β2) g²`, `w -= (lr / (1-β1^t)) m / (sqrt(v) / sqrt(1-β2^t) + eps)`.
//!   (dfdx's own `Adam` advances `t` once per `update()` call, so calling it per layer is
//!   wrong; this one counts optimiser steps.)
//! - RMSprop: `v = α v + (1-α) g²`, `a = sqrt(v) + eps`; without momentum `w -= lr g / a`,
//!   with momentum `b = μ b + g / a; w -= lr b`.
//!
//! **Update statistics** (||dw||, ||w_old||, non-finite count) are measured in the same pass:
//! squares are summed in sixteen f32 lanes over blocks of 1024 values and each block is added
//! into f64 totals (relative error below 1e-5; a weight above ~1e19 overflows its f32 square
//! to infinity, which then shows as an infinite norm rather than being hidden).
//!
//! **Non-finite values: the update is transactional.** [`Optimizer::step_checked`] (what
//! [`crate::Trainer::apply_update`] calls) writes nothing when any tensor's new weights or new
//! optimiser state would be non-finite (a NaN gradient, or a finite gradient times a huge
//! learning rate overflowing f32): it returns [`Withheld`] and leaves every weight, every
//! state buffer and the step counter exactly as they were. To cost nothing in the common case
//! it first bounds the new weights from what is already known ([`Known`]: max |g| from the
//! step statistics, max |w| ≤ ||w|| from the last update pass) and from its own bounds on the
//! state buffers (see [`Optimizer::weight_bound`] for the formulas); only when that bound is
//! unknown or above [`SAFE_BOUND`] does it run an exact read-only pass computing the new
//! values without writing them. [`Optimizer::step`] is the unchecked update (for benches and
//! loops that filter themselves): a NaN gradient there makes NaN weights, which the
//! [`StepUpdate`] it returns counts so nothing goes unseen.

use crate::spec::{OptimizerSpec, ScheduleSpec};

/// Per-tensor state buffers (allocated lazily at the first update, then reused).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    /// SGD/RMSprop momentum buffer, or Adam's first moment.
    pub a: Vec<f32>,
    /// Adam's or RMSprop's second moment.
    pub b: Vec<f32>,
}

/// What one update did to one tensor (sums in f64).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepUpdate {
    /// Σ (w_new - w_old)².
    pub update_sum_sq: f64,
    /// Σ w_old².
    pub weight_sum_sq: f64,
    /// Number of non-finite weights after the update.
    pub weight_nonfinite: usize,
    /// Σ w_new², summed in f64 lanes from exact f64 squares (the accuracy and range of
    /// `gradguard_core::kernels`): the next step's statistics take it instead of re-reading
    /// the weights.
    pub new_weight_sum_sq: f64,
}

/// Below this bound on every new |w| (and every momentum-like state value) an update is known
/// to stay finite in f32 (whose largest value is about 3.4e38) without reading anything: the
/// margin of ~34x absorbs f32 rounding in the update.
pub const SAFE_BOUND: f64 = 1e37;

/// What the caller already knows about one tensor before its update (for the cheap bound of
/// [`Optimizer::step_checked`]); `None` when unknown (the exact pass then decides).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Known {
    /// max |g| of the gradients the update will use (after every remedy).
    pub grad_max_abs: Option<f64>,
    /// An upper bound on max |w| of the current weights (e.g. ||w||₂ = sqrt(Σw²)).
    pub weight_max_abs: Option<f64>,
}

/// Why [`Optimizer::step_checked`] withheld an update (nothing was written).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Withheld {
    /// The first tensor (view order) whose update would have written a non-finite value.
    pub tensor: usize,
    /// How many of its new weights would have been non-finite.
    pub nonfinite_weights: usize,
    /// How many of its new optimiser-state values would have been non-finite.
    pub nonfinite_state: usize,
    /// The learning rate of the withheld update.
    pub lr: f64,
}

/// An optimiser with its state and learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    /// The configuration.
    pub spec: OptimizerSpec,
    /// The schedule, if any.
    pub schedule: Option<ScheduleSpec>,
    /// One state per parameter tensor, in view order.
    pub state: Vec<OptimState>,
    /// Updates applied so far (Adam's `t` after the last update).
    pub t: u64,
    /// Per tensor, an upper bound on max |a| of the momentum buffer (SGD or RMSprop with
    /// momentum, Adam's first moment), kept by [`Optimizer::step_checked`]; infinite when unknown (e.g. after
    /// [`Optimizer::step`] or a checkpoint load), which only costs one exact pass.
    state_bound: Vec<f64>,
}

impl Optimizer {
    /// A fresh optimiser for `n` tensors.
    pub fn new(spec: OptimizerSpec, schedule: Option<ScheduleSpec>, n: usize) -> Self {
        Optimizer {
            spec,
            schedule,
            state: vec![OptimState::default(); n],
            t: 0,
            state_bound: vec![f64::INFINITY; n],
        }
    }

    /// The learning rate of the next update (schedule applied, before any remedy's scaling).
    pub fn lr(&self) -> f64 {
        let lr0 = self.spec.lr();
        match &self.schedule {
            Some(s) => s.lr_at(lr0, self.t),
            None => lr0,
        }
    }

    /// This optimiser (same configuration and schedule) with its per-tensor state and step
    /// counter replaced, as a checkpoint restores them. The bounds the transactional check
    /// keeps are forgotten (unknown bounds only cost one exact pass, never a different result).
    pub fn with_state(&self, state: Vec<OptimState>, t: u64) -> Optimizer {
        Optimizer {
            spec: self.spec,
            schedule: self.schedule,
            state_bound: vec![f64::INFINITY; state.len()],
            state,
            t,
        }
    }

    /// Applies one update to every `(weights, grads)` pair with learning rate `lr`, advancing
    /// the step counter once. Returns one [`StepUpdate`] per tensor.
    pub fn step(
        &mut self,
        params: &mut [(&mut Vec<f32>, &mut Vec<f32>)],
        lr: f64,
        out: &mut Vec<StepUpdate>,
    ) {
        out.clear();
        self.t += 1;
        let t = self.t;
        if self.state.len() < params.len() {
            self.state.resize(params.len(), OptimState::default());
        }
        for ((w, g), st) in params.iter_mut().zip(self.state.iter_mut()) {
            out.push(update_one(&self.spec, st, w, g, lr, t));
        }
        self.state_bound.clear();
        self.state_bound.resize(params.len(), f64::INFINITY);
    }

    /// The transactional update: like [`Optimizer::step`], but when any tensor's new weights
    /// or new state would hold a non-finite value, nothing is written (weights, state buffers
    /// and the step counter stay exactly as they were) and the first such tensor is returned.
    ///
    /// `known(i)` says what the caller knows of tensor `i` ([`Known`]). A tensor whose
    /// [`Optimizer::weight_bound`] is at most [`SAFE_BOUND`] is not read before the update;
    /// any other gets one exact read-only pass (the same arithmetic as the update, into
    /// registers). Allocates nothing once the state buffers exist (on one thread; on several,
    /// a few small vectors per tensor above 64 Ki values, see `CHUNK`).
    pub fn step_checked(
        &mut self,
        params: &mut [(&mut Vec<f32>, &mut Vec<f32>)],
        lr: f64,
        known: impl Fn(usize) -> Known,
        out: &mut Vec<StepUpdate>,
    ) -> Result<(), Withheld> {
        out.clear();
        let t = self.t + 1;
        if self.state.len() < params.len() {
            self.state.resize(params.len(), OptimState::default());
        }
        if self.state_bound.len() < params.len() {
            self.state_bound.resize(params.len(), f64::INFINITY);
        }
        // Phase 1: decide, writing nothing.
        for (i, (w, g)) in params.iter().enumerate() {
            let k = known(i);
            let st = &self.state[i];
            let safe = self
                .weight_bound(i, w.len(), st, k, lr, t)
                .is_some_and(|(wb, sb)| wb <= SAFE_BOUND && sb <= SAFE_BOUND);
            if !safe {
                let c = check_one(&self.spec, st, w, g, lr, t);
                if c.bad_w + c.bad_state > 0 {
                    return Err(Withheld {
                        tensor: i,
                        nonfinite_weights: c.bad_w,
                        nonfinite_state: c.bad_state,
                        lr,
                    });
                }
            }
        }
        // Phase 2: every tensor's update is known finite: apply, and carry the state bounds.
        for (i, (w, g)) in params.iter_mut().enumerate() {
            let k = known(i);
            let bound = self
                .weight_bound(i, w.len(), &self.state[i], k, lr, t)
                .filter(|&(wb, sb)| wb <= SAFE_BOUND && sb <= SAFE_BOUND)
                .map(|(_, sb)| sb);
            let st = &mut self.state[i];
            out.push(update_one(&self.spec, st, w, g, lr, t));
            // the cheap bound when it held; else (the slow path) the buffer's measured max
            self.state_bound[i] = match bound {
                Some(b) => b,
                None => momentum_max_abs(&self.spec, st),
            };
        }
        self.t = t;
        Ok(())
    }

    /// Upper bounds, from known figures only, on max |w_new| of tensor `i` and on the max |a|
    /// of its momentum buffer after an update with `lr` at step `t` (`None` when a figure is
    /// missing or an assumption fails). With G = max |g|, W = max |w|, B = the state bound
    /// before (0 at the first update), s = 1.01 (f32 rounding):
    /// - SGD: B' = μB + G (μ = 0: B' = 0), d = G + μB' with Nesterov, else B' (G when μ = 0);
    ///   |w_new| ≤ s (W + lr d).
    /// - RMSprop: v ≥ (1-α) g², so |g| / (sqrt(v) + eps) ≤ c = 1/sqrt(1-α) (+1e-7 for squares
    ///   that underflow, needing eps ≥ 1e-12); B' = μB + c, d = B' (c without momentum).
    /// - Adam: by Cauchy-Schwarz over the history, |m| ≤ (1-β1) sqrt(v / ((1-β2)(1-β1²/β2)))
    ///   when β1² < β2, so the step is at most (lr/(1-β1^t)) (sqrt(1-β2^t) R + 1e-7) with
    ///   R = (1-β1)/sqrt((1-β2)(1-β1²/β2)), needing eps ≥ 1e-12; the first moment's bound is
    ///   B' = β1 B + (1-β1) G, and the product (lr/(1-β1^t)) B' the update forms first must
    ///   stay below [`SAFE_BOUND`] too (as must lr G for RMSprop without momentum).
    ///
    /// Adam and RMSprop also need G < 1e18 (so g² and the second moment stay finite in f32),
    /// and every method needs lr ≤ [`SAFE_BOUND`] (lr itself is rounded to f32).
    pub fn weight_bound(
        &self,
        i: usize,
        n: usize,
        st: &OptimState,
        k: Known,
        lr: f64,
        t: u64,
    ) -> Option<(f64, f64)> {
        const SLACK: f64 = 1.01;
        let g = k.grad_max_abs.filter(|g| g.is_finite())?;
        let w = k.weight_max_abs.filter(|w| w.is_finite())?;
        if !(lr.is_finite() && lr.abs() <= SAFE_BOUND) {
            return None;
        }
        let lr = lr.abs();
        let (step, state) = match self.spec {
            OptimizerSpec::Sgd {
                momentum, nesterov, ..
            } => {
                if momentum == 0.0 {
                    (lr * g, 0.0)
                } else {
                    let prev = if st.a.len() != n {
                        0.0
                    } else {
                        *self.state_bound.get(i)?
                    };
                    let mu = momentum.abs();
                    let b = mu * prev + g;
                    let d = if nesterov { g + mu * b } else { b };
                    (lr * d, b)
                }
            }
            OptimizerSpec::Rmsprop {
                alpha,
                eps,
                momentum,
                ..
            } => {
                if !(g < 1e18 && eps >= 1e-12 && (0.0..1.0).contains(&alpha)) {
                    return None;
                }
                let c = 1.0 / (1.0 - alpha).sqrt() + 1e-7;
                // without momentum the update computes lr·g before dividing
                let first = lr * g * SLACK;
                if momentum <= 0.0 && (first.is_nan() || first > SAFE_BOUND) {
                    return None;
                }
                if momentum > 0.0 {
                    let prev = if st.a.len() != n {
                        0.0
                    } else {
                        *self.state_bound.get(i)?
                    };
                    let b = momentum * prev + c;
                    (lr * b, b)
                } else {
                    (lr * c, 0.0)
                }
            }
            OptimizerSpec::Adam {
                beta1, beta2, eps, ..
            } => {
                if !(g < 1e18
                    && eps >= 1e-12
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && beta1 * beta1 < beta2)
                {
                    return None;
                }
                let bc1 = 1.0 - beta1.powf(t as f64);
                let bc2 = 1.0 - beta2.powf(t as f64);
                let r = (1.0 - beta1) / ((1.0 - beta2) * (1.0 - beta1 * beta1 / beta2)).sqrt();
                // |m| is a convex combination of past gradients: M' = β1 M + (1-β1) G
                let prev = if st.a.len() != n {
                    0.0
                } else {
                    *self.state_bound.get(i)?
                };
                let m = beta1 * prev + (1.0 - beta1) * g;
                // the update computes (lr/bc1)·m before dividing: that product must fit too
                let first = (lr / bc1) * m * SLACK;
                if first.is_nan() || first > SAFE_BOUND {
                    return None;
                }
                ((lr / bc1) * (bc2.sqrt() * r + 1e-7), m)
            }
        };
        let bound = SLACK * (w + step);
        (bound.is_finite() && state.is_finite()).then_some((bound, SLACK * state))
    }
}

/// max |a| of the momentum buffer or first moment (0 when the method keeps none): the state bound after an
/// update whose figures were not known (read once, only on that slow path).
fn momentum_max_abs(spec: &OptimizerSpec, st: &OptimState) -> f64 {
    let keeps = match *spec {
        OptimizerSpec::Sgd { momentum, .. } | OptimizerSpec::Rmsprop { momentum, .. } => {
            momentum != 0.0
        }
        OptimizerSpec::Adam { .. } => true,
    };
    if !keeps {
        return 0.0;
    }
    st.a.iter().fold(0f64, |m, &x| m.max((x as f64).abs()))
}

/// What the exact read-only pass found: non-finite new weights and new state values.
#[derive(Default)]
struct Check {
    bad_w: usize,
    bad_state: usize,
}

/// Runs `rule` over every element on copies of the state (zeros where the buffer does not
/// exist yet, as [`ensure`] would make it), writing nothing, and counts non-finite results:
/// in chunks of sixteen lanes (vectorisable, like [`run_rule`]), then the tail.
#[inline(always)]
fn check_rule(
    w: &[f32],
    g: &[f32],
    a: &[f32],
    b: &[f32],
    rule: impl Fn(f32, f32, &mut f32, &mut f32) -> f32,
) -> Check {
    let n = w.len();
    let g = &g[..n];
    let (use_a, use_b) = (a.len() == n, b.len() == n);
    let bad = |x: f32| ((x.to_bits() & EXP_MASK) == EXP_MASK) as u32;
    let mut c = Check::default();
    let main = n / LANES * LANES;
    let (mut bw, mut bs) = ([0u32; LANES], [0u32; LANES]);
    let mut base = 0;
    while base < main {
        let wc = &w[base..base + LANES];
        let gc = &g[base..base + LANES];
        let mut ac = [0f32; LANES];
        let mut bc = [0f32; LANES];
        if use_a {
            ac.copy_from_slice(&a[base..base + LANES]);
        }
        if use_b {
            bc.copy_from_slice(&b[base..base + LANES]);
        }
        for l in 0..LANES {
            let new = rule(wc[l], gc[l], &mut ac[l], &mut bc[l]);
            bw[l] += bad(new);
            bs[l] += bad(ac[l]) + bad(bc[l]);
        }
        base += LANES;
    }
    c.bad_w = bw.iter().map(|&v| v as usize).sum();
    c.bad_state = bs.iter().map(|&v| v as usize).sum();
    for i in main..n {
        let mut x = if use_a { a[i] } else { 0.0 };
        let mut y = if use_b { b[i] } else { 0.0 };
        let new = rule(w[i], g[i], &mut x, &mut y);
        c.bad_w += bad(new) as usize;
        c.bad_state += (bad(x) + bad(y)) as usize;
    }
    c
}

gradguard_core::multiversion! {
    // The exact read-only pass, compiled per tier like the update itself.
    fn check_one(
        spec: &OptimizerSpec,
        st: &OptimState,
        w: &[f32],
        g: &[f32],
        lr: f64,
        t: u64,
    ) -> Check {
        check_one_generic(spec, st, w, g, lr, t)
    }
}

/// The exact read-only pass of [`Optimizer::step_checked`]: the same rules as
/// [`update_one_generic`], on copies.
#[inline(always)]
fn check_one_generic(
    spec: &OptimizerSpec,
    st: &OptimState,
    w: &[f32],
    g: &[f32],
    lr: f64,
    t: u64,
) -> Check {
    let lr32 = lr as f32;
    let n = w.len();
    match *spec {
        OptimizerSpec::Sgd {
            momentum, nesterov, ..
        } => {
            if momentum == 0.0 {
                check_rule(w, g, &[], &[], |old, gi, _, _| old - lr32 * gi)
            } else {
                let first = st.a.len() != n;
                let mu = momentum as f32;
                match (first, nesterov) {
                    (true, false) => check_rule(w, g, &[], &[], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * gi
                    }),
                    (true, true) => check_rule(w, g, &[], &[], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * (gi + mu * gi)
                    }),
                    (false, false) => check_rule(w, g, &st.a, &[], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * *b
                    }),
                    (false, true) => check_rule(w, g, &st.a, &[], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * (gi + mu * *b)
                    }),
                }
            }
        }
        OptimizerSpec::Adam {
            beta1, beta2, eps, ..
        } => {
            let bc1 = 1.0 - beta1.powf(t as f64);
            let bc2 = 1.0 - beta2.powf(t as f64);
            let step_size = (lr / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
            check_rule(w, g, &st.a, &st.b, |old, gi, m, v| {
                *m = b1 * *m + (1.0 - b1) * gi;
                *v = b2 * *v + (1.0 - b2) * gi * gi;
                old - step_size * *m / (v.sqrt() / bc2_sqrt + eps)
            })
        }
        OptimizerSpec::Rmsprop {
            alpha,
            eps,
            momentum,
            ..
        } => {
            let (al, eps, mu) = (alpha as f32, eps as f32, momentum as f32);
            if momentum > 0.0 {
                check_rule(w, g, &st.a, &st.b, |old, gi, buf, v| {
                    *v = al * *v + (1.0 - al) * gi * gi;
                    *buf = mu * *buf + gi / (v.sqrt() + eps);
                    old - lr32 * *buf
                })
            } else {
                check_rule(w, g, &[], &st.b, |old, gi, _, v| {
                    *v = al * *v + (1.0 - al) * gi * gi;
                    old - lr32 * gi / (v.sqrt() + eps)
                })
            }
        }
    }
}

fn ensure(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        v.clear();
        v.resize(n, 0.0);
    }
}

const LANES: usize = 16;
/// Chunks summed in f32 lanes before flushing into the f64 totals (64 chunks = 1024 values):
/// each f32 lane adds at most 64 terms, so its relative rounding error stays below 4e-6.
const FLUSH: usize = 64;
const EXP_MASK: u32 = 0x7f80_0000;

/// Update statistics: f32 lanes (vectorisable) flushed into f64 totals every block.
#[derive(Default)]
struct Acc {
    dsq: f64,
    wsq: f64,
    nsq: f64,
    bad: usize,
}

impl Acc {
    #[inline(always)]
    fn add_one(&mut self, old: f32, new: f32) {
        let d = new as f64 - old as f64;
        self.dsq += d * d;
        self.wsq += old as f64 * old as f64;
        self.nsq += new as f64 * new as f64;
        self.bad += (!new.is_finite()) as usize;
    }
    fn finish(self) -> StepUpdate {
        StepUpdate {
            update_sum_sq: self.dsq,
            weight_sum_sq: self.wsq,
            weight_nonfinite: self.bad,
            new_weight_sum_sq: self.nsq,
        }
    }
}

/// Runs `rule(old_w, g, a, b) -> new_w` element-wise over chunks of sixteen (and the tail),
/// measuring the update in the same pass. `a` and `b` are the state buffers; an empty slice
/// means "unused" and is replaced by scratch values that are never read back.
#[inline(always)]
fn run_rule(
    w: &mut [f32],
    g: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    rule: impl Fn(f32, f32, &mut f32, &mut f32) -> f32,
) -> StepUpdate {
    let n = w.len();
    let g = &g[..n];
    let use_a = a.len() == n;
    let use_b = b.len() == n;
    let mut acc = Acc::default();
    let main = n / LANES * LANES;
    let (mut sa, mut sb) = ([0f32; LANES], [0f32; LANES]);
    let mut base = 0;
    while base < main {
        let block_end = (base + FLUSH * LANES).min(main);
        let (mut dsq, mut wsq, mut bad) = ([0f32; LANES], [0f32; LANES], [0u32; LANES]);
        let mut nsq = [0f64; LANES];
        while base < block_end {
            let wc = &mut w[base..base + LANES];
            let gc = &g[base..base + LANES];
            let ac: &mut [f32] = if use_a {
                &mut a[base..base + LANES]
            } else {
                &mut sa
            };
            let bc: &mut [f32] = if use_b {
                &mut b[base..base + LANES]
            } else {
                &mut sb
            };
            for l in 0..LANES {
                let old = wc[l];
                let new = rule(old, gc[l], &mut ac[l], &mut bc[l]);
                wc[l] = new;
                let d = new - old;
                dsq[l] += d * d;
                wsq[l] += old * old;
                let n64 = new as f64;
                nsq[l] += n64 * n64;
                bad[l] += ((new.to_bits() & EXP_MASK) == EXP_MASK) as u32;
            }
            base += LANES;
        }
        acc.dsq += dsq.iter().map(|&v| v as f64).sum::<f64>();
        acc.wsq += wsq.iter().map(|&v| v as f64).sum::<f64>();
        acc.nsq += nsq.iter().sum::<f64>();
        acc.bad += bad.iter().map(|&v| v as usize).sum::<usize>();
    }
    for i in main..n {
        let old = w[i];
        let (mut x, mut y) = (0f32, 0f32);
        let ai = if use_a { &mut a[i] } else { &mut x };
        let bi = if use_b { &mut b[i] } else { &mut y };
        w[i] = rule(old, g[i], ai, bi);
        acc.add_one(old, w[i]);
    }
    acc.finish()
}

/// Values per chunk of one tensor's update (a multiple of the `FLUSH * LANES` block). A tensor
/// of more runs in chunks, on the current rayon pool's threads when it has several, and the
/// chunks' sums are added in chunk order whatever ran them: the same bits on any number of
/// threads. (About 30 us of Adam work per chunk on one core, well above a fork-join.)
const CHUNK: usize = 64 * 1024;

/// One tensor's update: sizes the state buffers the rule uses, then runs the rule over
/// [`CHUNK`]-value chunks (see there).
fn update_one(
    spec: &OptimizerSpec,
    st: &mut OptimState,
    w: &mut [f32],
    g: &[f32],
    lr: f64,
    t: u64,
) -> StepUpdate {
    let n = w.len();
    // Which state buffers the rule reads and writes, sized to the tensor (`first`: SGD's
    // momentum buffer was just created, so it starts from the gradient).
    let (first, use_a, use_b) = match *spec {
        OptimizerSpec::Sgd { momentum, .. } => (st.a.len() != n, momentum != 0.0, false),
        OptimizerSpec::Adam { .. } => (false, true, true),
        OptimizerSpec::Rmsprop { momentum, .. } => (false, momentum > 0.0, true),
    };
    if use_a {
        ensure(&mut st.a, n);
    }
    if use_b {
        ensure(&mut st.b, n);
    }
    let a: &mut [f32] = if use_a { &mut st.a } else { &mut [] };
    let b: &mut [f32] = if use_b { &mut st.b } else { &mut [] };
    if n <= CHUNK {
        return update_slices(spec, first, w, g, a, b, lr, t);
    }
    let g = &g[..n];
    let chunks = n.div_ceil(CHUNK);
    let add = |total: &mut StepUpdate, p: StepUpdate| {
        total.update_sum_sq += p.update_sum_sq;
        total.weight_sum_sq += p.weight_sum_sq;
        total.weight_nonfinite += p.weight_nonfinite;
        total.new_weight_sum_sq += p.new_weight_sum_sq;
    };
    let mut total = StepUpdate::default();
    if rayon::current_num_threads() > 1 {
        // A few small vectors per large tensor (the only allocations of a parallel update).
        use rayon::prelude::*;
        let a_chunks: Vec<&mut [f32]> = if use_a {
            a.chunks_mut(CHUNK).collect()
        } else {
            (0..chunks).map(|_| &mut [][..]).collect()
        };
        let b_chunks: Vec<&mut [f32]> = if use_b {
            b.chunks_mut(CHUNK).collect()
        } else {
            (0..chunks).map(|_| &mut [][..]).collect()
        };
        let parts: Vec<StepUpdate> = w
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(a_chunks.into_par_iter().zip(b_chunks))
            .map(|((wc, gc), (ac, bc))| update_slices(spec, first, wc, gc, ac, bc, lr, t))
            .collect();
        for p in parts {
            add(&mut total, p);
        }
    } else {
        for c in 0..chunks {
            let r = c * CHUNK..((c + 1) * CHUNK).min(n);
            let ac: &mut [f32] = if use_a { &mut a[r.clone()] } else { &mut [] };
            let bc: &mut [f32] = if use_b { &mut b[r.clone()] } else { &mut [] };
            let p = update_slices(spec, first, &mut w[r.clone()], &g[r], ac, bc, lr, t);
            add(&mut total, p);
        }
    }
    total
}

gradguard_core::multiversion! {
    // The update rule over one slice of a tensor (its state buffers' matching slices, empty
    // when the rule uses none), compiled for AVX-512, AVX2+FMA and portable (gradguard's one
    // dispatch pattern; same bits in every build).
    #[allow(clippy::too_many_arguments)]
    fn update_slices(
        spec: &OptimizerSpec,
        first: bool,
        w: &mut [f32],
        g: &[f32],
        a: &mut [f32],
        b: &mut [f32],
        lr: f64,
        t: u64,
    ) -> StepUpdate {
        update_slices_generic(spec, first, w, g, a, b, lr, t)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_slices_generic(
    spec: &OptimizerSpec,
    first: bool,
    w: &mut [f32],
    g: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    lr: f64,
    t: u64,
) -> StepUpdate {
    let lr32 = lr as f32;
    match *spec {
        OptimizerSpec::Sgd {
            momentum, nesterov, ..
        } => {
            if momentum == 0.0 {
                run_rule(w, g, &mut [], &mut [], |old, gi, _, _| old - lr32 * gi)
            } else {
                let mu = momentum as f32;
                match (first, nesterov) {
                    (true, false) => run_rule(w, g, a, &mut [], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * gi
                    }),
                    (true, true) => run_rule(w, g, a, &mut [], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * (gi + mu * gi)
                    }),
                    (false, false) => run_rule(w, g, a, &mut [], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * *b
                    }),
                    (false, true) => run_rule(w, g, a, &mut [], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * (gi + mu * *b)
                    }),
                }
            }
        }
        OptimizerSpec::Adam {
            beta1, beta2, eps, ..
        } => {
            let bc1 = 1.0 - beta1.powf(t as f64);
            let bc2 = 1.0 - beta2.powf(t as f64);
            let step_size = (lr / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
            run_rule(w, g, a, b, |old, gi, m, v| {
                *m = b1 * *m + (1.0 - b1) * gi;
                *v = b2 * *v + (1.0 - b2) * gi * gi;
                old - step_size * *m / (v.sqrt() / bc2_sqrt + eps)
            })
        }
        OptimizerSpec::Rmsprop {
            alpha,
            eps,
            momentum,
            ..
        } => {
            let (al, eps, mu) = (alpha as f32, eps as f32, momentum as f32);
            if momentum > 0.0 {
                run_rule(w, g, a, b, |old, gi, buf, v| {
                    *v = al * *v + (1.0 - al) * gi * gi;
                    *buf = mu * *buf + gi / (v.sqrt() + eps);
                    old - lr32 * *buf
                })
            } else {
                run_rule(w, g, &mut [], b, |old, gi, _, v| {
                    *v = al * *v + (1.0 - al) * gi * gi;
                    old - lr32 * gi / (v.sqrt() + eps)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: OptimizerSpec, steps: &[[Vec<f32>; 2]], w0: [Vec<f32>; 2]) -> [Vec<f32>; 2] {
        let mut opt = Optimizer::new(spec, None, 2);
        let [mut w1, mut w2] = w0;
        let mut out = Vec::new();
        for [g1, g2] in steps {
            let (mut g1, mut g2) = (g1.clone(), g2.clone());
            let mut p = vec![(&mut w1, &mut g1), (&mut w2, &mut g2)];
            let lr = opt.lr();
            opt.step(&mut p, lr, &mut out);
        }
        [w1, w2]
    }

    /// A tensor above `CHUNK` values is updated in chunks, on several threads when the pool has
    /// them: the weights, the state and every sum are the same bits on 1 and 3 threads, the
    /// weights equal an update of the whole tensor in one piece, and the sums agree with it to
    /// f64 rounding.
    #[test]
    fn chunked_updates_are_the_same_on_any_number_of_threads() {
        let n = 2 * CHUNK + 12_345;
        let mut rng = crate::rng::Rng64::new(3, 4);
        let w0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let grads: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..n).map(|_| rng.normal() as f32 * 0.1).collect())
            .collect();
        for text in [
            "kind = \"sgd\"\nlr = 0.1",
            "kind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nnesterov = true",
            "kind = \"adam\"\nlr = 0.01",
            "kind = \"rmsprop\"\nlr = 0.01\nmomentum = 0.5",
        ] {
            let spec: OptimizerSpec = toml::from_str(text).expect("spec");
            let run = |threads: usize| {
                let pool = crate::threads::ThreadPool::new(
                    std::num::NonZeroUsize::new(threads).expect("threads"),
                )
                .expect("pool");
                pool.install(|| {
                    let mut opt = Optimizer::new(spec, None, 1);
                    let mut w = w0.clone();
                    let mut out = Vec::new();
                    let mut sums = Vec::new();
                    for g in &grads {
                        let mut g = g.clone();
                        opt.step(&mut [(&mut w, &mut g)], 0.01, &mut out);
                        sums.push(out[0]);
                    }
                    (w, opt.state[0].a.clone(), opt.state[0].b.clone(), sums)
                })
            };
            let one = run(1);
            let three = run(3);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one.0), bits(&three.0), "{text}: weights");
            assert_eq!(bits(&one.1), bits(&three.1), "{text}: state a");
            assert_eq!(bits(&one.2), bits(&three.2), "{text}: state b");
            assert_eq!(one.3, three.3, "{text}: sums");
            // The whole tensor in one piece (no chunks): the same weights, sums to rounding.
            let mut st = OptimState::default();
            let mut w = w0.clone();
            for (t, g) in grads.iter().enumerate() {
                let first = st.a.is_empty();
                let (ua, ub) = match spec {
                    OptimizerSpec::Sgd { momentum, .. } => (momentum != 0.0, false),
                    OptimizerSpec::Adam { .. } => (true, true),
                    OptimizerSpec::Rmsprop { momentum, .. } => (momentum > 0.0, true),
                };
                if ua {
                    ensure(&mut st.a, n);
                }
                if ub {
                    ensure(&mut st.b, n);
                }
                let a: &mut [f32] = if ua { &mut st.a } else { &mut [] };
                let b: &mut [f32] = if ub { &mut st.b } else { &mut [] };
                let u = update_slices(&spec, first, &mut w, g, a, b, 0.01, t as u64 + 1);
                let c = one.3[t];
                for (x, y) in [
                    (u.update_sum_sq, c.update_sum_sq),
                    (u.weight_sum_sq, c.weight_sum_sq),
                    (u.new_weight_sum_sq, c.new_weight_sum_sq),
                ] {
                    assert!((x - y).abs() <= 1e-6 * x.abs(), "{text}: {x} vs {y}");
                }
            }
            assert_eq!(bits(&w), bits(&one.0), "{text}: chunked vs whole");
        }
    }

    /// Two Adam steps on two tensors, computed by hand (lr 0.1, β1 0.9, β2 0.999, eps 1e-8).
    /// Tensor A: w = 1, g1 = 0.5, g2 = -1. Tensor B: w = [2, -3], g1 = [1, 2], g2 = [0.1, 0.1].
    /// Step 1 (t=1): m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², so w -= 0.1 · sign(g) (eps aside).
    /// Step 2 (t=2) for A: m = 0.9·0.05 + 0.1·(-1) = -0.055, v = 0.999·0.00025 + 0.001·1 = 0.00124975,
    /// m̂ = -0.055/0.19 = -0.289474, v̂ = 0.00124975/0.001999 = 0.625187, sqrt = 0.790688,
    /// w = 0.9 + 0.1 · 0.289474/0.790688 = 0.936610.
    /// A counter advanced per tensor (t = 2 on B's first step) would give B a different first step.
    #[test]
    fn adam_two_steps_two_tensors_hand_computed() {
        let spec = OptimizerSpec::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let steps = [[vec![0.5], vec![1.0, 2.0]], [vec![-1.0], vec![0.1, 0.1]]];
        let [a, b] = run(spec, &steps, [vec![1.0], vec![2.0, -3.0]]);
        let expect_b = |w0: f64, g1: f64, g2: f64| {
            let m = 0.9 * 0.1 * g1 + 0.1 * g2;
            let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
            let mh = m / (1.0 - 0.81);
            let vh = v / (1.0 - 0.999f64 * 0.999);
            w0 - 0.1 * g1.signum() - 0.1 * mh / (vh.sqrt() + 1e-8)
        };
        assert!((a[0] as f64 - 0.936610).abs() < 2e-6, "{}", a[0]);
        assert!(
            (b[0] as f64 - expect_b(2.0, 1.0, 0.1)).abs() < 2e-6,
            "{}",
            b[0]
        );
        assert!(
            (b[1] as f64 - expect_b(-3.0, 2.0, 0.1)).abs() < 2e-6,
            "{}",
            b[1]
        );
        // and the counter advanced once per update, not per tensor
        let mut opt = Optimizer::new(spec, None, 2);
        let (mut w1, mut w2, mut g1, mut g2) =
            (vec![1.0f32], vec![1.0f32], vec![1.0f32], vec![1.0f32]);
        let mut out = Vec::new();
        opt.step(&mut [(&mut w1, &mut g1), (&mut w2, &mut g2)], 0.1, &mut out);
        assert_eq!(opt.t, 1);
        assert_eq!(out.len(), 2);
        assert!((out[0].update_sum_sq.sqrt() - 0.1).abs() < 1e-6);
    }

    /// SGD momentum 0.9 as PyTorch: b1 = g1, b2 = 0.9 b1 + g2; nesterov uses g + μ b.
    #[test]
    fn sgd_momentum_and_nesterov_hand_computed() {
        let steps = [[vec![1.0], vec![2.0]], [vec![1.0], vec![-2.0]]];
        let [a, b] = run(
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: false,
            },
            &steps,
            [vec![0.0], vec![0.0]],
        );
        // a: b1 = 1 -> w = -0.1; b2 = 1.9 -> w = -0.29. b: b1 = 2 -> -0.2; b2 = 1.8 - 2 = -0.2 -> -0.18
        assert!(
            (a[0] + 0.29).abs() < 1e-6 && (b[0] + 0.18).abs() < 1e-6,
            "{a:?} {b:?}"
        );
        let [a, _] = run(
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            &steps,
            [vec![0.0], vec![0.0]],
        );
        // nesterov: d1 = 1 + 0.9*1 = 1.9 -> -0.19; b2 = 1.9, d2 = 1 + 1.71 = 2.71 -> -0.461
        assert!((a[0] + 0.461).abs() < 1e-6, "{a:?}");
    }

    /// RMSprop α 0.9: v1 = 0.1·4 = 0.4, w = 1 - 0.01·2/sqrt(0.4) = 0.968377.
    #[test]
    fn rmsprop_hand_computed() {
        let steps = [[vec![2.0], vec![0.0]]];
        let [a, b] = run(
            OptimizerSpec::Rmsprop {
                lr: 0.01,
                alpha: 0.9,
                eps: 1e-8,
                momentum: 0.0,
            },
            &steps,
            [vec![1.0], vec![5.0]],
        );
        assert!((a[0] - 0.968377).abs() < 1e-6, "{a:?}");
        assert_eq!(b[0], 5.0);
    }

    #[test]
    fn nan_gradient_is_counted_not_hidden() {
        let mut opt = Optimizer::new(OptimizerSpec::default(), None, 1);
        let (mut w, mut g) = (vec![1.0f32, 2.0], vec![f32::NAN, 0.0]);
        let mut out = Vec::new();
        opt.step(&mut [(&mut w, &mut g)], 0.1, &mut out);
        assert_eq!(out[0].weight_nonfinite, 1);
    }

    fn known(g: f64, w: f64) -> Known {
        Known {
            grad_max_abs: Some(g),
            weight_max_abs: Some(w),
        }
    }

    /// The cheap bound, by hand (s = 1.01, G = 2, W = 3):
    /// SGD lr 0.1: s (3 + 0.1·2) = 3.232. Nesterov μ 0.9, first update: B' = 2,
    /// d = 2 + 0.9·2 = 3.8, s (3 + 0.38) = 3.4138, state s·2 = 2.02. Adam lr 0.001 (0.9, 0.999,
    /// t = 1): R = 0.1/sqrt(0.001·(1 - 0.81/0.999)) = 7.270292,
    /// step = (0.001/0.1)·(sqrt(0.001)·R + 1e-7) = 0.002299069, s (3 + step) = 3.032322. RMSprop α 0.99 μ 0.5 lr 0.01 (W = 1):
    /// c = 1/sqrt(0.01) + 1e-7, s (1 + 0.01 c) = 1.111, state s c = 10.1.
    #[test]
    fn weight_bound_hand_computed() {
        let st = OptimState::default();
        let sgd = Optimizer::new(
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
            },
            None,
            1,
        );
        let (w, s) = sgd
            .weight_bound(0, 1, &st, known(2.0, 3.0), 0.1, 1)
            .unwrap();
        assert!((w - 3.232).abs() < 1e-12 && s == 0.0, "{w} {s}");
        let nest = Optimizer::new(
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            None,
            1,
        );
        let (w, s) = nest
            .weight_bound(0, 1, &st, known(2.0, 3.0), 0.1, 1)
            .unwrap();
        assert!(
            (w - 3.4138).abs() < 1e-12 && (s - 2.02).abs() < 1e-12,
            "{w} {s}"
        );
        let adam = Optimizer::new(
            OptimizerSpec::Adam {
                lr: 0.001,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            None,
            1,
        );
        let (w, _) = adam
            .weight_bound(0, 1, &st, known(2.0, 3.0), 0.001, 1)
            .unwrap();
        assert!((w - 3.032322).abs() < 1e-6, "{w}");
        let rms = Optimizer::new(
            OptimizerSpec::Rmsprop {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.5,
            },
            None,
            1,
        );
        let (w, s) = rms
            .weight_bound(0, 1, &st, known(2.0, 1.0), 0.01, 1)
            .unwrap();
        assert!(
            (w - 1.111).abs() < 1e-6 && (s - 10.1).abs() < 1e-6,
            "{w} {s}"
        );
        // unknown figures, an f32-overflowing lr, or gradients whose squares overflow: no bound
        assert!(sgd
            .weight_bound(0, 1, &st, Known::default(), 0.1, 1)
            .is_none());
        assert!(sgd
            .weight_bound(0, 1, &st, known(2.0, 3.0), 1e39, 1)
            .is_none());
        assert!(adam
            .weight_bound(0, 1, &st, known(1e19, 3.0), 0.001, 1)
            .is_none());
    }

    /// The bound of the momentum buffer is carried from step to step: after one update with
    /// G = 2 it is 1.01·2; the next update's with G = 1 is 1.01 (0.9·2.02 + 1) = 2.84618.
    #[test]
    fn momentum_state_bound_is_carried() {
        let spec = OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
        };
        let mut opt = Optimizer::new(spec, None, 1);
        let (mut w, mut g) = (vec![3.0f32], vec![2.0f32]);
        let mut out = Vec::new();
        opt.step_checked(&mut [(&mut w, &mut g)], 0.1, |_| known(2.0, 3.0), &mut out)
            .unwrap();
        assert!((opt.state_bound[0] - 2.02).abs() < 1e-12);
        let st = opt.state[0].clone();
        let (_, s) = opt
            .weight_bound(0, 1, &st, known(1.0, 3.0), 0.1, 2)
            .unwrap();
        assert!((s - 2.84618).abs() < 1e-9, "{s}");
    }

    fn all_specs() -> Vec<OptimizerSpec> {
        vec![
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
            },
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: false,
            },
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
            },
            OptimizerSpec::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OptimizerSpec::Rmsprop {
                lr: 0.1,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.0,
            },
            OptimizerSpec::Rmsprop {
                lr: 0.1,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.5,
            },
        ]
    }

    /// The holes of issue 12: a finite, clipped gradient (|g| = 1) with lr 1e39 (SGD) or 1e300
    /// (every optimiser) would overflow f32. The checked step writes nothing: weights, state
    /// and step counter are exactly as before, and the tensor is named.
    #[test]
    fn an_overflowing_update_is_withheld_and_nothing_changes() {
        for spec in all_specs() {
            for lr in [1e39, 1e300] {
                let mut opt = Optimizer::new(spec, None, 2);
                let (mut w1, mut w2) = (vec![1.0f32, -2.0], vec![0.5f32; 20]);
                let (mut g1, mut g2) = (vec![0.5f32, -0.5], vec![0.1f32; 20]);
                let mut out = Vec::new();
                opt.step_checked(
                    &mut [(&mut w1, &mut g1), (&mut w2, &mut g2)],
                    0.01,
                    |_| Known::default(),
                    &mut out,
                )
                .unwrap();
                let before = (opt.clone(), w1.clone(), w2.clone());
                let (mut g1, mut g2) = (vec![1.0f32, 0.0], vec![0.0f32; 20]);
                let r = opt.step_checked(
                    &mut [(&mut w1, &mut g1), (&mut w2, &mut g2)],
                    lr,
                    |i| known(if i == 0 { 1.0 } else { 0.0 }, 3.0),
                    &mut out,
                );
                let w = r.expect_err("withheld");
                assert_eq!(w.tensor, 0, "{spec:?} {lr}");
                assert!(w.nonfinite_weights >= 1, "{spec:?} {lr}: {w:?}");
                assert_eq!((&opt, &w1, &w2), (&before.0, &before.1, &before.2));
            }
        }
    }

    /// A NaN gradient is withheld by the checked step (the unchecked one writes NaN).
    #[test]
    fn nan_gradient_is_withheld_by_the_checked_step() {
        let mut opt = Optimizer::new(OptimizerSpec::default(), None, 1);
        let (mut w, mut g) = (vec![1.0f32, 2.0], vec![f32::NAN, 0.0]);
        let mut out = Vec::new();
        let r = opt.step_checked(&mut [(&mut w, &mut g)], 0.1, |_| Known::default(), &mut out);
        assert_eq!(
            r,
            Err(Withheld {
                tensor: 0,
                nonfinite_weights: 1,
                nonfinite_state: 0,
                lr: 0.1
            })
        );
        assert_eq!((w, opt.t), (vec![1.0, 2.0], 0));
    }

    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            20 => (-1.0f64..1.0, -30i32..39).prop_map(|(m, e)| (m * 10f64.powi(e)) as f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over every optimiser, learning rates up to 1e300 and gradients up to 1e38 (and the
        /// odd NaN/inf), with the figures known or not: after every checked step all weights
        /// and state are finite; an applied step equals the unchecked update bit for bit; a
        /// withheld one changed nothing.
        #[test]
        fn checked_steps_never_write_nonfinite_values(
            which in 0usize..6,
            lr_exp in -3.0f64..300.0,
            w0 in proptest::collection::vec(-100.0f32..100.0, 1..40),
            grads in proptest::collection::vec(proptest::collection::vec(value(), 40), 1..6),
            tell in any::<bool>(),
        ) {
            let spec = all_specs()[which];
            let lr = 10f64.powf(lr_exp);
            let mut opt = Optimizer::new(spec, None, 1);
            let mut w = w0.clone();
            let mut out = Vec::new();
            for g in grads {
                let mut g = g[..w.len()].to_vec();
                let gmax = g.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
                let wmax = w.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
                let k = if tell && g.iter().all(|x| x.is_finite()) {
                    known(gmax, wmax)
                } else {
                    Known::default()
                };
                let (opt0, w_before) = (opt.clone(), w.clone());
                let mut reference = (opt.clone(), w.clone(), g.clone());
                let r = opt.step_checked(&mut [(&mut w, &mut g)], lr, |_| k, &mut out);
                match r {
                    Ok(()) => {
                        let (ref mut o, ref mut rw, ref mut rg) = reference;
                        o.step(&mut [(rw, rg)], lr, &mut Vec::new());
                        prop_assert_eq!(&w, rw);
                        prop_assert_eq!(&opt.state, &o.state);
                    }
                    Err(_) => {
                        prop_assert_eq!(&w, &w_before);
                        prop_assert_eq!(&opt, &opt0);
                    }
                }
                prop_assert!(w.iter().all(|x| x.is_finite()), "{:?}", w);
                prop_assert!(opt.state.iter().all(|s| s.a.iter().chain(&s.b).all(|x| x.is_finite())));
            }
        }
    }
}
