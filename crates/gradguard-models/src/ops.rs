//! Custom ops on dfdx's tape: a dense layer with its activation, the losses, and the
//! last-time-step selection. Each is one tape entry with a hand-written backward (checked
//! against finite differences in `gradcheck`), computing on slices with gemm 0.19.
//!
//! Parameter gradients go straight into the model's persistent buffers (see
//! [`crate::params`]); gradients of inputs go through dfdx's `Gradients` as usual.

use std::sync::{Arc, Mutex};

use dfdx::prelude::{Cpu, HasShape, Shape, Tape, Tensor, TensorFromVec};
use dfdx::tensor::{PutTape, SplitTape};

use crate::activation::{backward_in_place, forward_in_place};
use crate::error::ModelError;
use crate::linalg::matmul;
use crate::spec::{Activation, LossKind};

/// Handles to one dense layer's parameters for one pass.
#[derive(Clone, Debug)]
pub(crate) struct DenseRef {
    pub w: Arc<Vec<f32>>,
    pub b: Arc<Vec<f32>>,
    pub gw: Arc<Mutex<Vec<f32>>>,
    pub gb: Arc<Mutex<Vec<f32>>>,
    pub fan_in: usize,
    pub fan_out: usize,
    pub act: Activation,
    /// Where to record ||dL/dz|| (the layer's error signal) in the backward, if anywhere.
    pub signal: Option<(Arc<Mutex<Vec<f64>>>, usize)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Σ v² in f64 with eight independent accumulators.
pub(crate) fn sum_sq(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    for &x in rest {
        acc[0] += x as f64 * x as f64;
    }
    acc.iter().sum()
}

/// `act(x · Wᵀ + b)` where `x` holds `rows × fan_in` values in any (contiguous) shape.
/// Returns `[rows, fan_out]`. With `need_dx` the backward also propagates into `x`.
pub(crate) fn dense<S: Shape, T: Tape<f32, Cpu>>(
    x: Tensor<S, f32, Cpu, T>,
    d: &DenseRef,
    need_dx: bool,
) -> Result<Tensor<(usize, usize), f32, Cpu, T>, ModelError> {
    let numel = x.shape().num_elements();
    if d.fan_in == 0 || !numel.is_multiple_of(d.fan_in) {
        return Err(ModelError::Internal(format!(
            "dense: {numel} inputs do not split into rows of {}",
            d.fan_in
        )));
    }
    let rows = numel / d.fan_in;
    let (fi, fo) = (d.fan_in, d.fan_out);
    let (x, mut tape) = x.split_tape();
    let mut xb = vec![0f32; numel];
    x.copy_into(&mut xb);
    let mut y = vec![0f32; rows * fo];
    for r in 0..rows {
        y[r * fo..(r + 1) * fo].copy_from_slice(&d.b);
    }
    matmul(rows, fo, fi, &mut y, fo, true, &xb, fi, 1, &d.w, 1, fi);
    forward_in_place(d.act, &mut y);
    let dev = x.device().clone();
    let y_saved = if T::OWNS_TAPE && d.act != Activation::Identity {
        y.clone()
    } else {
        Vec::new()
    };
    let out = dev.try_tensor_from_vec(y, (rows, fo))?;
    if T::OWNS_TAPE {
        let out_h = out.clone();
        let d = d.clone();
        tape.add_backward_op(move |grads| {
            let mut dz = std::mem::take(&mut **grads.get_or_alloc_mut(&out_h)?);
            if dz.len() != rows * fo {
                return Ok(()); // no gradient reached this output
            }
            backward_in_place(d.act, &y_saved, &mut dz);
            if let Some((sig, i)) = &d.signal {
                let ss = sum_sq(&dz);
                if let Some(slot) = lock(sig).get_mut(*i) {
                    *slot = ss.sqrt();
                }
            }
            {
                let mut gw = lock(&d.gw);
                // dW[fo×fi] += dZᵀ · X
                matmul(fo, fi, rows, &mut gw, fi, true, &dz, 1, fo, &xb, fi, 1);
            }
            {
                let mut gb = lock(&d.gb);
                for r in 0..rows {
                    for (g, &v) in gb.iter_mut().zip(&dz[r * fo..(r + 1) * fo]) {
                        *g += v;
                    }
                }
            }
            if need_dx {
                let dx = grads.get_or_alloc_mut(&x)?;
                // dX[rows×fi] += dZ · W
                matmul(rows, fi, fo, dx, fi, true, &dz, fo, 1, &d.w, fi, 1);
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// The rows of the last time step of a time-major `[T, B, H]` tensor, as `[B, H]`.
pub(crate) fn last_step<T: Tape<f32, Cpu>>(
    x: Tensor<(usize, usize, usize), f32, Cpu, T>,
) -> Result<Tensor<(usize, usize), f32, Cpu, T>, ModelError> {
    let (t, b, h) = *x.shape();
    let (x, mut tape) = x.split_tape();
    let mut all = vec![0f32; t * b * h];
    x.copy_into(&mut all);
    let last = all.split_off((t - 1) * b * h);
    drop(all);
    let out = x.device().try_tensor_from_vec(last, (b, h))?;
    if T::OWNS_TAPE {
        let out_h = out.clone();
        tape.add_backward_op(move |grads| {
            let dy = std::mem::take(&mut **grads.get_or_alloc_mut(&out_h)?);
            if dy.len() != b * h {
                return Ok(());
            }
            let dx = grads.get_or_alloc_mut(&x)?;
            for (g, v) in dx[(t - 1) * b * h..].iter_mut().zip(&dy) {
                *g += v;
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// The loss value (f64) and its gradient with respect to `pred` (`rows × cols`, row-major),
/// both as PyTorch's `reduction = "mean"` (see [`LossKind`]). `target` holds `rows × cols`
/// values for mse/bce and `rows` class indices for cross-entropy. The gradient is pushed onto
/// `grad` (cleared first) only when `want_grad`.
pub(crate) fn loss_and_grad(
    kind: LossKind,
    pred: &[f32],
    target: &[f32],
    cols: usize,
    want_grad: bool,
    grad: &mut Vec<f32>,
) -> f64 {
    grad.clear();
    let rows = pred.len() / cols.max(1);
    match kind {
        LossKind::Mse => {
            let n = pred.len() as f64;
            let mut sum = 0.0;
            for (&p, &t) in pred.iter().zip(target) {
                let d = p as f64 - t as f64;
                sum += d * d;
                if want_grad {
                    grad.push((2.0 * d / n) as f32);
                }
            }
            sum / n
        }
        LossKind::Bce => {
            let n = pred.len() as f64;
            let mut sum = 0.0;
            for (&p, &t) in pred.iter().zip(target) {
                let (x, t) = (p as f64, t as f64);
                sum += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
                if want_grad {
                    let s = if x >= 0.0 {
                        1.0 / (1.0 + (-x).exp())
                    } else {
                        x.exp() / (1.0 + x.exp())
                    };
                    grad.push(((s - t) / n) as f32);
                }
            }
            sum / n
        }
        LossKind::CrossEntropy => {
            let mut sum = 0.0;
            let inv = 1.0 / rows.max(1) as f64;
            for r in 0..rows {
                let row = &pred[r * cols..(r + 1) * cols];
                let label = target[r] as usize;
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let se: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                let lse = m + se.ln();
                sum += lse - row.get(label).copied().unwrap_or(f32::NAN) as f64;
                if want_grad {
                    for (c, &v) in row.iter().enumerate() {
                        let p = (v as f64 - lse).exp();
                        let onehot = if c == label { 1.0 } else { 0.0 };
                        grad.push(((p - onehot) * inv) as f32);
                    }
                }
            }
            sum * inv
        }
    }
}

/// A scalar tensor carrying tape `T`.
pub(crate) type Scalar<T> = Tensor<(), f32, Cpu, T>;

/// The loss as a scalar tensor on the tape (for `backward()`), plus its f64 value.
pub(crate) fn loss<T: Tape<f32, Cpu>>(
    pred: Tensor<(usize, usize), f32, Cpu, T>,
    target: &[f32],
    kind: LossKind,
) -> Result<(Scalar<T>, f64), ModelError> {
    let (rows, cols) = *pred.shape();
    let want = if kind == LossKind::CrossEntropy {
        rows
    } else {
        rows * cols
    };
    if target.len() != want {
        return Err(ModelError::Internal(format!(
            "loss: {} targets for {rows}x{cols} outputs",
            target.len()
        )));
    }
    let (pred, mut tape) = pred.split_tape();
    let mut pb = vec![0f32; rows * cols];
    pred.copy_into(&mut pb);
    let mut grad = if T::OWNS_TAPE {
        Vec::with_capacity(rows * cols)
    } else {
        Vec::new()
    };
    let value = loss_and_grad(kind, &pb, target, cols, T::OWNS_TAPE, &mut grad);
    let out = pred.device().try_tensor_from_vec(vec![value as f32], ())?;
    if T::OWNS_TAPE {
        let out_h = out.clone();
        tape.add_backward_op(move |grads| {
            let dl = grads
                .get_or_alloc_mut(&out_h)?
                .first()
                .copied()
                .unwrap_or(0.0);
            let dp = grads.get_or_alloc_mut(&pred)?;
            for (g, &v) in dp.iter_mut().zip(&grad) {
                *g += dl * v;
            }
            Ok(())
        });
    }
    Ok((out.put_tape(tape), value))
}
