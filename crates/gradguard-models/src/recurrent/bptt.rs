//! The whole-sequence forward pass and the backward pass through time, on plain slices.
//!
//! Layout: everything row-major; time-major sequences `[T, B, ...]`. `G = cell.gates()`.
//! Parameters follow PyTorch: `W_ih [G*H, I]`, `W_hh [G*H, H]`, `b_ih`, `b_hh [G*H]`.

use super::kernels;
use super::matmul::{matmul, Mat};
use super::pool::Pool;
use super::CellKind;

/// Sizes of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub cell: CellKind,
    pub steps: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
}

impl Dims {
    fn gh(&self) -> usize {
        self.cell.gates() * self.hidden
    }
    fn bh(&self) -> usize {
        self.batch * self.hidden
    }
}

/// Everything the backward pass needs, in pooled buffers.
pub(crate) struct Saved {
    pub dims: Dims,
    /// `[T*B, I]`
    pub x: Vec<f32>,
    /// `[G*H, I]` copy of `W_ih` at forward time.
    pub w_ih: Vec<f32>,
    /// `[G*H, H]` copy of `W_hh` at forward time.
    pub w_hh: Vec<f32>,
    /// `[(T+1)*B, H]`: h_0 .. h_T.
    pub hs: Vec<f32>,
    /// `[T*B, G*H]`: gate activations (LSTM, GRU); unused by the Elman cell.
    pub act: Vec<f32>,
    /// LSTM: `[(T+1)*B, H]` cell states c_0 .. c_T. Empty otherwise.
    pub cs: Vec<f32>,
    /// LSTM: `[T*B, H]` tanh(c_t); GRU: `[T*B, H]` `W_hn h_{t-1} + b_hn`. Empty for Elman.
    pub aux: Vec<f32>,
}

/// Gradients of the parameters and (optionally) the input, computed by [`Saved::backward`].
pub(crate) struct Grads {
    /// `[T*B, G*H]`: dL/d(x W_ih^T + b_ih) per step.
    pub d_in: Vec<f32>,
    /// GRU only: `[T*B, G*H]` dL/d(h W_hh^T + b_hh). Empty otherwise (then it equals `d_in`).
    pub d_hid: Vec<f32>,
    /// `[G*H]`: column sums of `d_in` (dL/db_ih), accumulated while each step's rows are hot.
    pub db_in: Vec<f32>,
    /// GRU only: `[G*H]` column sums of `d_hid` (dL/db_hh). Empty otherwise (equals `db_in`).
    pub db_hid: Vec<f32>,
    /// ||dL/dh_t|| for t = 1..T.
    pub time_norms: Vec<f64>,
}

/// Runs the forward pass. `h0`/`c0`: `[B*H]` or `None` for zeros. `params` are copied in.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    dims: Dims,
    pool: &Pool,
    x: Vec<f32>,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: &[f32],
    b_hh: &[f32],
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
) -> Saved {
    let Dims {
        cell,
        steps,
        batch,
        input,
        hidden,
    } = dims;
    let (gh, bh) = (dims.gh(), dims.bh());
    let rows = steps * batch;

    let mut hs = pool.take((steps + 1) * bh);
    match h0 {
        Some(h0) => hs[..bh].copy_from_slice(h0),
        None => hs[..bh].fill(0.0),
    }

    // Z = X W_ih^T + bias, for all steps at once. Elman and LSTM fold b_hh in here too; the GRU
    // keeps b_hh apart because b_hn sits inside r * (W_hn h + b_hn).
    let mut act = pool.take(rows * gh);
    let mut bias = pool.take(gh);
    for j in 0..gh {
        bias[j] = if cell == CellKind::Gru {
            b_ih[j]
        } else {
            b_ih[j] + b_hh[j]
        };
    }
    if gh > 0 {
        for row in act.chunks_exact_mut(gh) {
            row.copy_from_slice(&bias);
        }
    }
    matmul(
        rows,
        gh,
        input,
        &mut act,
        gh,
        true,
        Mat::rows(&x, input),
        Mat::transposed(&w_ih, input),
        true,
    );

    // W_hh^T, row-major [H, G*H], is the faster right-hand side for the per-step products.
    let mut w_hh_t = pool.take(hidden * gh);
    transpose(&w_hh, gh, hidden, &mut w_hh_t);

    let (mut cs, mut aux) = (Vec::new(), Vec::new());
    let mut scratch = Vec::new();
    // With no initial state h_0 = 0, so the first step's h_0 W_hh^T product is skipped.
    let k_at = |t: usize| if t == 0 && h0.is_none() { 0 } else { hidden };
    match cell {
        CellKind::Rnn => {
            for t in 0..steps {
                let z = &mut act[t * batch * gh..(t + 1) * batch * gh];
                let (prev, next) = hs.split_at_mut((t + 1) * bh);
                let h_prev = &prev[t * bh..];
                matmul(
                    batch,
                    gh,
                    k_at(t),
                    z,
                    gh,
                    true,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(&w_hh_t, gh),
                    false,
                );
                kernels::rnn_forward(z, &mut next[..bh]);
            }
        }
        CellKind::Lstm => {
            cs = pool.take((steps + 1) * bh);
            match c0 {
                Some(c0) => cs[..bh].copy_from_slice(c0),
                None => cs[..bh].fill(0.0),
            }
            aux = pool.take(rows * hidden);
            for t in 0..steps {
                let z = &mut act[t * batch * gh..(t + 1) * batch * gh];
                let (prev, next) = hs.split_at_mut((t + 1) * bh);
                let h_prev = &prev[t * bh..];
                matmul(
                    batch,
                    gh,
                    k_at(t),
                    z,
                    gh,
                    true,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(&w_hh_t, gh),
                    false,
                );
                let (c_prev, c_next) = cs.split_at_mut((t + 1) * bh);
                kernels::lstm_forward(
                    hidden,
                    z,
                    &c_prev[t * bh..],
                    &mut c_next[..bh],
                    &mut aux[t * bh..(t + 1) * bh],
                    &mut next[..bh],
                );
            }
        }
        CellKind::Gru => {
            aux = pool.take(rows * hidden);
            scratch = pool.take(batch * gh);
            for t in 0..steps {
                let z = &mut act[t * batch * gh..(t + 1) * batch * gh];
                let (prev, next) = hs.split_at_mut((t + 1) * bh);
                let h_prev = &prev[t * bh..];
                matmul(
                    batch,
                    gh,
                    k_at(t),
                    &mut scratch,
                    gh,
                    false,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(&w_hh_t, gh),
                    false,
                );
                kernels::gru_forward(
                    hidden,
                    z,
                    &scratch,
                    b_hh,
                    h_prev,
                    &mut aux[t * bh..(t + 1) * bh],
                    &mut next[..bh],
                );
            }
        }
    }
    pool.give([bias, w_hh_t, scratch]);
    Saved {
        dims,
        x,
        w_ih,
        w_hh,
        hs,
        act,
        cs,
        aux,
    }
}

impl Saved {
    /// The final hidden state h_T `[B*H]`.
    pub fn h_last(&self) -> &[f32] {
        let bh = self.dims.bh();
        &self.hs[self.dims.steps * bh..]
    }

    /// The final cell state c_T (LSTM only).
    pub fn c_last(&self) -> Option<&[f32]> {
        let bh = self.dims.bh();
        (self.dims.cell == CellKind::Lstm).then(|| &self.cs[self.dims.steps * bh..])
    }

    /// All hidden states h_1 .. h_T, `[T*B*H]`.
    pub fn outputs(&self) -> &[f32] {
        &self.hs[self.dims.bh()..]
    }

    /// The reverse loop. `dy` `[T*B*H]` is dL/dh_t from the layer's output. Reuses `act` as the
    /// storage for dL/dZ, so `self` must not be used for another backward afterwards.
    pub fn backward(&mut self, pool: &Pool, dy: &[f32]) -> Grads {
        let Dims {
            cell,
            steps,
            batch,
            hidden,
            ..
        } = self.dims;
        let (gh, bh) = (self.dims.gh(), self.dims.bh());
        let mut carry = pool.take_zeroed(bh);
        let mut dh = pool.take(bh);
        let mut time_norms = vec![0.0f64; steps];
        let mut d_hid = Vec::new();
        let mut db_in = pool.take_zeroed(gh);
        let mut db_hid = Vec::new();
        match cell {
            CellKind::Rnn => {
                for t in (0..steps).rev() {
                    let dz = &mut self.act[t * batch * gh..(t + 1) * batch * gh];
                    let h = &self.hs[(t + 1) * bh..(t + 2) * bh];
                    let dyt = &dy[t * bh..(t + 1) * bh];
                    time_norms[t] = kernels::rnn_backward(dyt, &carry, h, &mut dh, dz).sqrt();
                    col_sums_into(dz, &mut db_in);
                    // dL/dh_0 is not needed: the initial state carries no gradient.
                    if t > 0 {
                        matmul(
                            batch,
                            hidden,
                            gh,
                            &mut carry,
                            hidden,
                            false,
                            Mat::rows(dz, gh),
                            Mat::rows(&self.w_hh, hidden),
                            false,
                        );
                    }
                }
            }
            CellKind::Lstm => {
                let mut dc = pool.take_zeroed(bh);
                for t in (0..steps).rev() {
                    let dz = &mut self.act[t * batch * gh..(t + 1) * batch * gh];
                    let dyt = &dy[t * bh..(t + 1) * bh];
                    time_norms[t] = kernels::lstm_backward(
                        hidden,
                        dyt,
                        &carry,
                        &mut dh,
                        dz,
                        &self.aux[t * bh..(t + 1) * bh],
                        &self.cs[t * bh..(t + 1) * bh],
                        &mut dc,
                    )
                    .sqrt();
                    col_sums_into(dz, &mut db_in);
                    // dL/dh_0 is not needed: the initial state carries no gradient.
                    if t > 0 {
                        matmul(
                            batch,
                            hidden,
                            gh,
                            &mut carry,
                            hidden,
                            false,
                            Mat::rows(dz, gh),
                            Mat::rows(&self.w_hh, hidden),
                            false,
                        );
                    }
                }
                pool.give([dc]);
            }
            CellKind::Gru => {
                d_hid = pool.take(steps * batch * gh);
                db_hid = pool.take_zeroed(gh);
                for t in (0..steps).rev() {
                    let dz = &mut self.act[t * batch * gh..(t + 1) * batch * gh];
                    let dgh = &mut d_hid[t * batch * gh..(t + 1) * batch * gh];
                    let dyt = &dy[t * bh..(t + 1) * bh];
                    time_norms[t] = kernels::gru_backward(
                        hidden,
                        dyt,
                        &mut carry,
                        &mut dh,
                        dz,
                        &self.aux[t * bh..(t + 1) * bh],
                        &self.hs[t * bh..(t + 1) * bh],
                        dgh,
                    )
                    .sqrt();
                    col_sums_into(dz, &mut db_in);
                    col_sums_into(dgh, &mut db_hid);
                    // dL/dh_0 is not needed: the initial state carries no gradient.
                    if t > 0 {
                        matmul(
                            batch,
                            hidden,
                            gh,
                            &mut carry,
                            hidden,
                            true,
                            Mat::rows(dgh, gh),
                            Mat::rows(&self.w_hh, hidden),
                            false,
                        );
                    }
                }
            }
        }
        pool.give([carry, dh]);
        Grads {
            d_in: std::mem::take(&mut self.act),
            d_hid,
            db_in,
            db_hid,
            time_norms,
        }
    }

    /// Returns every buffer to the pool.
    pub fn recycle(self, pool: &Pool) {
        pool.give([
            self.x, self.w_ih, self.w_hh, self.hs, self.act, self.cs, self.aux,
        ]);
    }
}

impl Grads {
    fn d_hidden(&self) -> &[f32] {
        if self.d_hid.is_empty() {
            &self.d_in
        } else {
            &self.d_hid
        }
    }

    /// `dst [G*H, I] += dZ_in^T X`.
    pub fn add_d_w_ih(&self, saved: &Saved, dst: &mut [f32]) {
        let d = saved.dims;
        let (gh, rows) = (d.gh(), d.steps * d.batch);
        matmul(
            gh,
            d.input,
            rows,
            dst,
            d.input,
            true,
            Mat::transposed(&self.d_in, gh),
            Mat::rows(&saved.x, d.input),
            true,
        );
    }

    /// `dst [G*H, H] += dZ_hid^T [h_0 .. h_{T-1}]`.
    pub fn add_d_w_hh(&self, saved: &Saved, dst: &mut [f32]) {
        let d = saved.dims;
        let (gh, rows) = (d.gh(), d.steps * d.batch);
        let h_prev = &saved.hs[..rows * d.hidden];
        matmul(
            gh,
            d.hidden,
            rows,
            dst,
            d.hidden,
            true,
            Mat::transposed(self.d_hidden(), gh),
            Mat::rows(h_prev, d.hidden),
            true,
        );
    }

    /// `dst [G*H] += column sums of dZ_in`.
    pub fn add_d_b_ih(&self, dst: &mut [f32]) {
        add_assign(dst, &self.db_in);
    }

    /// `dst [G*H] += column sums of dZ_hid`.
    pub fn add_d_b_hh(&self, dst: &mut [f32]) {
        let db = if self.db_hid.is_empty() {
            &self.db_in
        } else {
            &self.db_hid
        };
        add_assign(dst, db);
    }

    /// `dst [T*B, I] += dZ_in W_ih`.
    pub fn add_d_x(&self, saved: &Saved, dst: &mut [f32]) {
        let d = saved.dims;
        let (gh, rows) = (d.gh(), d.steps * d.batch);
        matmul(
            rows,
            d.input,
            gh,
            dst,
            d.input,
            true,
            Mat::rows(&self.d_in, gh),
            Mat::rows(&saved.w_ih, d.input),
            true,
        );
    }

    /// Returns the buffers to the pool.
    pub fn recycle(self, pool: &Pool) {
        pool.give([self.d_in, self.d_hid, self.db_in, self.db_hid]);
    }
}

/// `dst [cols, rows] = src [rows, cols]^T`, in 16x16 tiles so both sides stay in cache.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

fn col_sums_into(m: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    for row in m.chunks_exact(n) {
        add_assign(dst, row);
    }
}

super::simd::multiversion! {
    fn add_assign(dst: &mut [f32], src: &[f32]) {
        let n = dst.len();
        let src = &src[..n];
        for j in 0..n {
            dst[j] += src[j];
        }
    }
}
