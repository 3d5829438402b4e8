//! Custom ops on dfdx's tape: a dense layer with its activation, the losses, and the
//! last-time-step selection. Each is one tape entry with a hand-written backward (checked
//! against finite differences in `gradcheck`), computing on slices with gemm 0.19.
//!
//! Parameter gradients go straight into the model's persistent buffers (see
//! [`crate::params`]); gradients of inputs go through dfdx's `Gradients` as usual.

use std::sync::{Arc, Mutex};

use dfdx::prelude::{Cpu, HasShape, Shape, Tape, Tensor, TensorFromVec};
use dfdx::tensor::{PutTape, SplitTape};
use gradguard_core::kernels::{slice_stats, SliceStats, StatsStream};

use crate::activation::{backward_in_place, forward_in_place};
use crate::error::ModelError;
use crate::linalg::matmul;
use crate::params::GradBuf;
use crate::spec::{Activation, LossKind};

/// Handles to one dense layer's parameters for one pass.
#[derive(Clone, Debug)]
pub(crate) struct DenseRef {
    pub w: Arc<Vec<f32>>,
    pub b: Arc<Vec<f32>>,
    pub gw: Arc<Mutex<GradBuf>>,
    pub gb: Arc<Mutex<GradBuf>>,
    pub fan_in: usize,
    pub fan_out: usize,
    pub act: Activation,
    /// Where to record ||dL/dz|| (the layer's error signal) in the backward, if anywhere.
    pub signal: Option<(Arc<Mutex<Vec<f64>>>, usize)>,
    /// Whether the backward measures the parameter gradients as it writes them.
    pub measure: bool,
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

/// Columns of gemm's f32 microkernel on x86 (its `NR`): the weight-gradient product runs in
/// blocks of dW rows that are whole multiples of it, so every block is tiled as in one call.
const GEMM_NR: usize = 6;
/// Bytes of dW per block of [`weight_grad_measured`]: a block is measured from L2 right after
/// gemm wrote it. (Blocks of 16 KiB, measured from L1, were no faster on an AMD EPYC: the
/// measuring kernel is bound by its own instructions there, and each gemm call costs a little.)
const MEASURE_BLOCK_BYTES: usize = 128 * 1024;
/// Depths (batch rows) up to which gemm sums the whole depth in one pass (its `kc` is at
/// least 512), so that splitting dW into row blocks cannot change any sum's order.
const MAX_BLOCKED_DEPTH: usize = 512;

/// Rows of dW per block in [`weight_grad_measured`]: a multiple of [`GEMM_NR`] of about
/// [`MEASURE_BLOCK_BYTES`], or all of them when they cannot be split without changing the
/// product's bits.
fn weight_grad_block_rows(fo: usize, fi: usize, rows: usize) -> usize {
    if rows > MAX_BLOCKED_DEPTH || rows <= 2 || fi <= 1 {
        return fo;
    }
    let per_row = fi * std::mem::size_of::<f32>();
    (MEASURE_BLOCK_BYTES / per_row / GEMM_NR * GEMM_NR).max(GEMM_NR)
}

/// `dW[fo×fi] += dZᵀ · X` (dZ is `rows × fo`, X is `rows × fi`), computed in blocks of dW rows,
/// each measured by a [`StatsStream`] right after gemm wrote it, while it is still in the
/// cache. Returns the statistics of all of dW, exactly `slice_stats(gw)`.
///
/// The product's bits are those of one `matmul` call: every block is a whole number of gemm's
/// microkernel tiles ([`GEMM_NR`] columns of its transposed problem, starting at multiples of
/// it), gemm sums the whole depth in one pass (depths up to [`MAX_BLOCKED_DEPTH`]), and no
/// block is a single row (which gemm would send to its matrix-vector path); other shapes run
/// as one call. `dense_weight_grad_blocks_are_bit_identical` checks this.
pub(crate) fn weight_grad_measured(
    fo: usize,
    fi: usize,
    rows: usize,
    gw: &mut [f32],
    dz: &[f32],
    xb: &[f32],
) -> SliceStats {
    let block = weight_grad_block_rows(fo, fi, rows);
    let mut stream = StatsStream::new();
    let mut r0 = 0;
    while r0 < fo {
        let mut r1 = (r0 + block).min(fo);
        if fo - r1 == 1 {
            r1 = fo; // never leave a one-row block
        }
        matmul(
            r1 - r0,
            fi,
            rows,
            &mut gw[r0 * fi..r1 * fi],
            fi,
            true,
            &dz[r0..],
            1,
            fo,
            xb,
            fi,
            1,
        );
        stream.advance(&gw[..r1 * fi]);
        r0 = r1;
    }
    stream.finish(gw)
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
            let add_bias = |gb: &mut [f32]| {
                for r in 0..rows {
                    for (g, &v) in gb.iter_mut().zip(&dz[r * fo..(r + 1) * fo]) {
                        *g += v;
                    }
                }
            };
            if d.measure {
                // the last writes of this layer's parameter gradients, measured as written
                lock(&d.gw).write_measured(|gw| weight_grad_measured(fo, fi, rows, gw, &dz, &xb));
                lock(&d.gb).write_measured(|gb| {
                    add_bias(gb);
                    slice_stats(gb)
                });
            } else {
                // dW[fo×fi] += dZᵀ · X
                let mut gw = lock(&d.gw);
                matmul(
                    fo,
                    fi,
                    rows,
                    gw.values_mut(),
                    fi,
                    true,
                    &dz,
                    1,
                    fo,
                    &xb,
                    fi,
                    1,
                );
                add_bias(lock(&d.gb).values_mut());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect()
    }

    /// The weight gradient computed in measured row blocks has the bits of one gemm call, and
    /// its statistics are exactly `slice_stats` of the result, on the reference shapes and on
    /// awkward ones (one-row remainders, depths past gemm's single pass, tiny and wide layers).
    #[test]
    fn dense_weight_grad_blocks_are_bit_identical() {
        for (fo, fi, rows) in [
            (256, 784, 64),
            (256, 256, 64),
            (10, 256, 64),
            (1, 5, 64),
            (7, 3, 64),
            (13, 784, 33),
            (25, 20, 512),
            (25, 20, 600),
            (64, 4096, 64),
            (61, 4096, 17),
            (256, 784, 1),
            (256, 784, 2),
            (256, 784, 3),
            (128, 1, 64),
        ] {
            let dz = values(rows * fo, 3 + fo as u64);
            let xb = values(rows * fi, 5 + fi as u64);
            let start = values(fo * fi, 7); // gradients accumulate onto what is there
            let mut one = start.clone();
            matmul(fo, fi, rows, &mut one, fi, true, &dz, 1, fo, &xb, fi, 1);
            let mut blocked = start.clone();
            let stats = weight_grad_measured(fo, fi, rows, &mut blocked, &dz, &xb);
            let same = one
                .iter()
                .zip(&blocked)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{fo}x{fi}, depth {rows}: blocked product differs");
            let fresh = slice_stats(&blocked);
            assert_eq!(stats.sum_sq.to_bits(), fresh.sum_sq.to_bits(), "{fo}x{fi}");
            assert_eq!(
                stats.max_abs.to_bits(),
                fresh.max_abs.to_bits(),
                "{fo}x{fi}"
            );
            assert_eq!(stats.nonfinite, fresh.nonfinite);
        }
    }
}
