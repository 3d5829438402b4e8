//! Recurrent layers (Elman tanh RNN, LSTM, GRU), each run as ONE op on dfdx's tape.
//!
//! [`RecurrentLayer::forward`] runs the whole sequence in one call: one GEMM `X W_ih^T` for all
//! steps, then per step one GEMM `h W_hh^T` and a SIMD gate kernel. It records a single backward
//! op that runs the reverse loop through time (a point-wise kernel and `dZ W_hh` per step), then
//! one large GEMM each for `dW_hh`, `dW_ih` and `dX`. Stock dfdx ops would record 16-18 ops and
//! thousands of allocations per step (measured 21-28 ms per LSTM training step against about
//! 4 ms here; see `benches/recurrent_step.rs`).
//!
//! Semantics follow PyTorch exactly: parameter layout `[G*H, I]` / `[G*H, H]`, both bias vectors,
//! gate order `i, f, g, o` (LSTM) and `r, z, n` (GRU, with `b_hn` inside `r * (W_hn h + b_hn)`),
//! and `h' = (1 - z) * n + z * h` for the GRU.
//!
//! Truncated BPTT: the final state is returned detached ([`RecurrentState`] is plain data), and a
//! state passed back in as `h0` carries no gradient, so each call is its own window.
//!
//! Call [`tune_allocator`] once at program start for the measured speed (glibc otherwise
//! mmaps and trims the multi-megabyte per-step buffers).

use std::sync::{Arc, Mutex};

use dfdx::prelude::*;

mod bptt;
mod kernels;
mod matmul;
mod pool;
mod simd;
mod split;

use bptt::{Dims, Saved};
use pool::Pool;

/// Which recurrent cell a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// Elman RNN: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)` (PyTorch `nn.RNN`, tanh).
    Rnn,
    /// LSTM, gates `i, f, g, o` in that order (PyTorch `nn.LSTM`).
    Lstm,
    /// GRU, gates `r, z, n` in that order (PyTorch `nn.GRU`).
    Gru,
}

impl CellKind {
    /// Number of gate blocks stacked in the weight matrices: 1 (RNN), 4 (LSTM), 3 (GRU).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// A recurrent state between calls: plain data, so it carries no gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentState {
    /// Hidden state `[B*H]`, row-major (batch rows).
    pub h: Vec<f32>,
    /// Cell state `[B*H]`, LSTM only (`None` means zeros for an LSTM; ignored by other cells).
    pub c: Option<Vec<f32>>,
}

/// One recurrent layer with PyTorch's parameter layout. See the [module docs](self).
pub struct RecurrentLayer {
    /// The cell this layer runs.
    pub cell: CellKind,
    /// Input features per step (I).
    pub input: usize,
    /// Hidden units (H).
    pub hidden: usize,
    /// Input-to-hidden weights `[G*H, I]` (G = `cell.gates()`). Must stay contiguous.
    pub weight_ih: Tensor<(usize, usize), f32, Cpu>,
    /// Hidden-to-hidden weights `[G*H, H]`. Must stay contiguous.
    pub weight_hh: Tensor<(usize, usize), f32, Cpu>,
    /// Input-to-hidden bias `[G*H]`.
    pub bias_ih: Tensor<(usize,), f32, Cpu>,
    /// Hidden-to-hidden bias `[G*H]`.
    pub bias_hh: Tensor<(usize,), f32, Cpu>,
    dev: Cpu,
    pool: Pool,
    time_norms: Arc<Mutex<Vec<f64>>>,
}

impl std::fmt::Debug for RecurrentLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecurrentLayer")
            .field("cell", &self.cell)
            .field("input", &self.input)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

impl Clone for RecurrentLayer {
    /// Clones the parameters (sharing storage copy-on-write, as dfdx tensors do); the clone gets
    /// its own buffer pool and an empty gradient-norm record.
    fn clone(&self) -> Self {
        Self {
            cell: self.cell,
            input: self.input,
            hidden: self.hidden,
            weight_ih: self.weight_ih.clone(),
            weight_hh: self.weight_hh.clone(),
            bias_ih: self.bias_ih.clone(),
            bias_hh: self.bias_hh.clone(),
            dev: self.dev.clone(),
            pool: Pool::default(),
            time_norms: Arc::default(),
        }
    }
}

/// Sets glibc's `M_MMAP_THRESHOLD` to 256 MiB and `M_TRIM_THRESHOLD` to 1 GiB, so the
/// multi-megabyte tensors freed and reallocated every training step are reused instead of being
/// mmap'd/unmapped or trimmed (which page-faults: measured 1.46 vs 0.96 ms per tanh-RNN step).
/// Call once at program start (binaries and benches). Does nothing on non-glibc targets.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

impl RecurrentLayer {
    /// A layer with all parameters zero; initialise them with `copy_from`.
    pub fn new(dev: &Cpu, cell: CellKind, input: usize, hidden: usize) -> Self {
        let gh = cell.gates() * hidden;
        Self {
            cell,
            input,
            hidden,
            weight_ih: dev.zeros_like(&(gh, input)),
            weight_hh: dev.zeros_like(&(gh, hidden)),
            bias_ih: dev.zeros_like(&(gh,)),
            bias_hh: dev.zeros_like(&(gh,)),
            dev: dev.clone(),
            pool: Pool::default(),
            time_norms: Arc::default(),
        }
    }

    /// Runs the layer over a whole sequence.
    ///
    /// `x`: time-major `[T, B, I]` (any strides: a permuted view is made contiguous first,
    /// on the tape). Returns all hidden states `[T, B, H]` carrying `x`'s tape, and the final
    /// state DETACHED. `h0`: the initial state (`None`: zeros); it never receives a gradient.
    /// `need_dx`: whether to compute dL/dx (true for stacked layers above the first; costs
    /// one extra GEMM in the backward pass).
    ///
    /// Gradients accumulate (`+=`) into the gradient buffers of `weight_ih`, `weight_hh`,
    /// `bias_ih`, `bias_hh` (and `x` when `need_dx`) in the `Gradients` the tape carries.
    ///
    /// # Panics
    /// On programmer errors by the model builder: `x`'s last axis is not `self.input`, `h0.h`
    /// (or `h0.c`) is not `B*H` long, or a parameter tensor was replaced by one of a different
    /// shape or a non-contiguous view.
    #[allow(clippy::type_complexity)] // the interface other crates code against
    pub fn forward<T: Tape<f32, Cpu>>(
        &self,
        x: Tensor<(usize, usize, usize), f32, Cpu, T>,
        h0: Option<&RecurrentState>,
        need_dx: bool,
    ) -> (Tensor<(usize, usize, usize), f32, Cpu, T>, RecurrentState) {
        let (steps, batch, input) = *x.shape();
        let hidden = self.hidden;
        let gh = self.cell.gates() * hidden;
        assert_eq!(
            input, self.input,
            "RecurrentLayer::forward: x has {input} features per step, the layer expects {}",
            self.input
        );
        assert_eq!(
            self.weight_ih.shape(),
            &(gh, self.input),
            "weight_ih must be [G*H, I]"
        );
        assert_eq!(
            self.weight_hh.shape(),
            &(gh, hidden),
            "weight_hh must be [G*H, H]"
        );
        assert_eq!(self.bias_ih.shape(), &(gh,), "bias_ih must be [G*H]");
        assert_eq!(self.bias_hh.shape(), &(gh,), "bias_hh must be [G*H]");
        let bh = batch * hidden;
        if let Some(s) = h0 {
            assert_eq!(
                s.h.len(),
                bh,
                "RecurrentLayer::forward: h0.h must hold B*H = {bh} values"
            );
            if let (CellKind::Lstm, Some(c)) = (self.cell, &s.c) {
                assert_eq!(
                    c.len(),
                    bh,
                    "RecurrentLayer::forward: h0.c must hold B*H = {bh} values"
                );
            }
        }

        // A permuted view would be copied in storage order: make it contiguous (a taped copy;
        // a no-op that keeps the id for contiguous tensors).
        let x = x.reshape_like(&(steps, batch, input));
        let (x, mut tape) = x.split_tape();
        let dims = Dims {
            cell: self.cell,
            steps,
            batch,
            input,
            hidden,
        };

        let mut x_buf = self.pool.take(steps * batch * input);
        x.copy_into(&mut x_buf);
        let mut w_ih = self.pool.take(gh * input);
        self.weight_ih.copy_into(&mut w_ih);
        let mut w_hh = self.pool.take(gh * hidden);
        self.weight_hh.copy_into(&mut w_hh);
        let mut b_ih = self.pool.take(gh);
        self.bias_ih.copy_into(&mut b_ih);
        let mut b_hh = self.pool.take(gh);
        self.bias_hh.copy_into(&mut b_hh);

        let c0 = match (self.cell, h0) {
            (CellKind::Lstm, Some(s)) => s.c.as_deref(),
            _ => None,
        };
        let saved = bptt::forward(
            dims,
            &self.pool,
            x_buf,
            w_ih,
            w_hh,
            &b_ih,
            &b_hh,
            h0.map(|s| s.h.as_slice()),
            c0,
        );
        self.pool.give([b_ih, b_hh]);

        let state = RecurrentState {
            h: saved.h_last().to_vec(),
            c: saved.c_last().map(<[f32]>::to_vec),
        };
        let out = self
            .dev
            .tensor_from_vec(saved.outputs().to_vec(), (steps, batch, hidden));

        if T::OWNS_TAPE {
            let op = BackwardOp {
                saved,
                pool: self.pool.clone(),
                time_norms: self.time_norms.clone(),
                out: out.clone(),
                x: need_dx.then(|| x.clone()),
                weight_ih: self.weight_ih.clone(),
                weight_hh: self.weight_hh.clone(),
                bias_ih: self.bias_ih.clone(),
                bias_hh: self.bias_hh.clone(),
            };
            tape.add_backward_op(move |grads| op.run(grads));
        } else {
            saved.recycle(&self.pool);
        }
        (out.put_tape(tape), state)
    }

    /// `||dL/dh_t||_2` over the whole batch for t = 1..T, where dL/dh_t is the total gradient
    /// reaching h_t (from the output at t and from step t+1), recorded by the last backward pass
    /// of this layer. Empty before the first backward pass.
    pub fn time_grad_norms(&self) -> Vec<f64> {
        self.time_norms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the recorded backward op owns.
struct BackwardOp {
    saved: Saved,
    pool: Pool,
    time_norms: Arc<Mutex<Vec<f64>>>,
    out: Tensor<(usize, usize, usize), f32, Cpu>,
    x: Option<Tensor<(usize, usize, usize), f32, Cpu>>,
    weight_ih: Tensor<(usize, usize), f32, Cpu>,
    weight_hh: Tensor<(usize, usize), f32, Cpu>,
    bias_ih: Tensor<(usize,), f32, Cpu>,
    bias_hh: Tensor<(usize,), f32, Cpu>,
}

impl BackwardOp {
    fn run(mut self, grads: &mut Gradients<f32, Cpu>) -> Result<(), <Cpu as HasErr>::Err> {
        // Only one gradient can be borrowed at a time: take dY out and put it back at the end.
        let dy = std::mem::take(&mut **grads.get_or_alloc_mut(&self.out)?);
        let g = self.saved.backward(&self.pool, &dy);
        **grads.get_or_alloc_mut(&self.out)? = dy;
        *self.time_norms.lock().unwrap_or_else(|e| e.into_inner()) = g.time_norms.clone();

        // The weight gradients (and dX) are written at once, possibly on several threads: take
        // their buffers out (one `&mut` at a time) and put them back after.
        let mut d_w_ih = std::mem::take(&mut **grads.get_or_alloc_mut(&self.weight_ih)?);
        let mut d_w_hh = std::mem::take(&mut **grads.get_or_alloc_mut(&self.weight_hh)?);
        let mut d_x = match &self.x {
            Some(x) => Some(std::mem::take(&mut **grads.get_or_alloc_mut(x)?)),
            None => None,
        };
        g.add_weight_grads(&self.saved, &mut d_w_ih, &mut d_w_hh, d_x.as_deref_mut());
        **grads.get_or_alloc_mut(&self.weight_ih)? = d_w_ih;
        **grads.get_or_alloc_mut(&self.weight_hh)? = d_w_hh;
        if let (Some(x), Some(dx)) = (&self.x, d_x) {
            **grads.get_or_alloc_mut(x)? = dx;
        }
        g.add_d_b_ih(grads.get_or_alloc_mut(&self.bias_ih)?);
        g.add_d_b_hh(grads.get_or_alloc_mut(&self.bias_hh)?);
        g.recycle(&self.pool);
        self.saved.recycle(&self.pool);
        Ok(())
    }
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// Everything one training step of a layer produces: outputs, final state, the four
    /// parameter gradients, dL/dx and the per-step gradient norms.
    fn step(
        cell: CellKind,
        steps: usize,
        batch: usize,
        input: usize,
        hidden: usize,
        with_h0: bool,
    ) -> Vec<Vec<u64>> {
        let dev = Cpu::default();
        let layer = RecurrentLayer::new(&dev, cell, input, hidden);
        let gh = cell.gates() * hidden;
        let k = 1.0 / (hidden as f32).sqrt();
        let (mut w_ih, mut w_hh) = (layer.weight_ih.clone(), layer.weight_hh.clone());
        w_ih.copy_from(&values(gh * input, 1, k));
        w_hh.copy_from(&values(gh * hidden, 2, k));
        let (mut b_ih, mut b_hh) = (layer.bias_ih.clone(), layer.bias_hh.clone());
        b_ih.copy_from(&values(gh, 3, k));
        b_hh.copy_from(&values(gh, 4, k));
        let layer = RecurrentLayer {
            weight_ih: w_ih,
            weight_hh: w_hh,
            bias_ih: b_ih,
            bias_hh: b_hh,
            ..layer
        };
        let x: Tensor<(usize, usize, usize), f32, Cpu> =
            dev.tensor_from_vec(values(steps * batch * input, 5, 1.0), (steps, batch, input));
        let h0 = with_h0.then(|| RecurrentState {
            h: values(batch * hidden, 6, 0.5),
            c: Some(values(batch * hidden, 7, 0.5)),
        });
        let (out, state) = layer.forward(x.clone().traced(Gradients::leaky()), h0.as_ref(), true);
        // A loss on every output, weighted so each step's gradient differs.
        let w: Tensor<(usize, usize, usize), f32, Cpu> = dev.tensor_from_vec(
            values(steps * batch * hidden, 8, 1.0),
            (steps, batch, hidden),
        );
        let outputs = out.retaped::<NoneTape>().as_vec();
        let loss = (out * w).sum();
        let grads = loss.backward();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits() as u64).collect::<Vec<_>>();
        vec![
            bits(&outputs),
            bits(&state.h),
            bits(&grads.get(&layer.weight_ih).as_vec()),
            bits(&grads.get(&layer.weight_hh).as_vec()),
            bits(&grads.get(&layer.bias_ih).as_vec()),
            bits(&grads.get(&layer.bias_hh).as_vec()),
            bits(&grads.get(&x).as_vec()),
            layer
                .time_grad_norms()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        ]
    }

    /// The batch split (threads > 1) gives the same bits as one thread, for every cell, even
    /// and uneven lanes, with and without an initial state.
    #[test]
    fn threads_give_identical_bits() {
        for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
            for (batch, with_h0) in [(32, false), (19, true), (10, false)] {
                let (steps, input, hidden) = (20, 5, 96);
                assert!(steps * batch * cell.gates() * hidden * hidden >= split::MIN_SPLIT_WORK);
                let run = |threads: usize| {
                    let pool = crate::threads::ThreadPool::new(
                        std::num::NonZeroUsize::new(threads).unwrap(),
                    )
                    .unwrap();
                    pool.install(|| step(cell, steps, batch, input, hidden, with_h0))
                };
                let one = run(1);
                assert!(one[7].iter().all(|&b| f64::from_bits(b) > 0.0));
                for threads in [2, 3, 4] {
                    let many = run(threads);
                    for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                        assert!(
                            a == b,
                            "{cell:?} batch {batch}: output {i} differs between 1 and {threads} threads"
                        );
                    }
                }
                // And the same thread count twice gives the same bits.
                assert_eq!(run(2), run(2));
            }
        }
    }
}
