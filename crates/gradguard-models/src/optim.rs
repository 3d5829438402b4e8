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
//! **Non-finite values.** The optimiser applies whatever gradients it is given: a NaN
//! gradient makes NaN weights. Keeping non-finite values out of the weights is the training
//! loop's job (gradguard's pipeline skips such steps before calling the update); the
//! [`StepUpdate`] it returns counts non-finite weights after the update so nothing goes unseen.

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
}

impl Optimizer {
    /// A fresh optimiser for `n` tensors.
    pub fn new(spec: OptimizerSpec, schedule: Option<ScheduleSpec>, n: usize) -> Self {
        Optimizer {
            spec,
            schedule,
            state: vec![OptimState::default(); n],
            t: 0,
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

gradguard_core::multiversion! {
    // One tensor's update, compiled for AVX-512, AVX2+FMA and portable (gradguard's one
    // dispatch pattern; same bits in every build).
    fn update_one(
        spec: &OptimizerSpec,
        st: &mut OptimState,
        w: &mut [f32],
        g: &[f32],
        lr: f64,
        t: u64,
    ) -> StepUpdate {
        update_one_generic(spec, st, w, g, lr, t)
    }
}

#[inline(always)]
fn update_one_generic(
    spec: &OptimizerSpec,
    st: &mut OptimState,
    w: &mut [f32],
    g: &[f32],
    lr: f64,
    t: u64,
) -> StepUpdate {
    let n = w.len();
    let lr32 = lr as f32;
    match *spec {
        OptimizerSpec::Sgd {
            momentum, nesterov, ..
        } => {
            if momentum == 0.0 {
                run_rule(w, g, &mut [], &mut [], |old, gi, _, _| old - lr32 * gi)
            } else {
                let first = st.a.len() != n;
                ensure(&mut st.a, n);
                let mu = momentum as f32;
                match (first, nesterov) {
                    (true, false) => run_rule(w, g, &mut st.a, &mut [], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * gi
                    }),
                    (true, true) => run_rule(w, g, &mut st.a, &mut [], |old, gi, b, _| {
                        *b = gi;
                        old - lr32 * (gi + mu * gi)
                    }),
                    (false, false) => run_rule(w, g, &mut st.a, &mut [], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * *b
                    }),
                    (false, true) => run_rule(w, g, &mut st.a, &mut [], |old, gi, b, _| {
                        *b = mu * *b + gi;
                        old - lr32 * (gi + mu * *b)
                    }),
                }
            }
        }
        OptimizerSpec::Adam {
            beta1, beta2, eps, ..
        } => {
            ensure(&mut st.a, n);
            ensure(&mut st.b, n);
            let bc1 = 1.0 - beta1.powf(t as f64);
            let bc2 = 1.0 - beta2.powf(t as f64);
            let step_size = (lr / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
            run_rule(w, g, &mut st.a, &mut st.b, |old, gi, m, v| {
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
            ensure(&mut st.b, n);
            let (al, eps, mu) = (alpha as f32, eps as f32, momentum as f32);
            if momentum > 0.0 {
                ensure(&mut st.a, n);
                run_rule(w, g, &mut st.a, &mut st.b, |old, gi, buf, v| {
                    *v = al * *v + (1.0 - al) * gi * gi;
                    *buf = mu * *buf + gi / (v.sqrt() + eps);
                    old - lr32 * *buf
                })
            } else {
                run_rule(w, g, &mut [], &mut st.b, |old, gi, _, v| {
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
}
