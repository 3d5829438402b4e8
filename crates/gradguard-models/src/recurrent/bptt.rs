//! The whole-sequence forward pass and the backward pass through time, on plain slices.
//!
//! Layout: everything row-major; time-major sequences `[T, B, ...]`. `G = cell.gates()`.
//! Parameters follow PyTorch: `W_ih [G*H, I]`, `W_hh [G*H, H]`, `b_ih`, `b_hh [G*H]`.

use super::kernels;
use super::matmul::{matmul, Mat};
use super::pool::Pool;
use super::split::{self, SharedRows};
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
    match cell {
        CellKind::Rnn => {}
        CellKind::Lstm => {
            cs = pool.take((steps + 1) * bh);
            match c0 {
                Some(c0) => cs[..bh].copy_from_slice(c0),
                None => cs[..bh].fill(0.0),
            }
            aux = pool.take(rows * hidden);
        }
        CellKind::Gru => aux = pool.take(rows * hidden),
    }
    // The recurrence, one group of batch lanes per thread (see `split`).
    let lanes = split::lanes(batch);
    let groups = split::lane_groups(
        lanes.len(),
        split::groups(lanes.len(), steps * batch * gh * hidden),
    );
    let bufs = ForwardBufs {
        act: SharedRows::new(&mut act, gh, batch),
        hs: SharedRows::new(&mut hs, hidden, batch),
        cs: SharedRows::new(&mut cs, hidden, batch),
        aux: SharedRows::new(&mut aux, hidden, batch),
    };
    split::run_groups(&groups, |g| {
        let r = lanes[g.start].start..lanes[g.end - 1].end;
        // SAFETY: each group touches only its own batch rows `r` of every buffer, and per
        // buffer holds at most one slice of a given slot at a time (`forward_rows`).
        unsafe { forward_rows(dims, r, &bufs, &w_hh_t, b_hh, h0.is_some(), pool) }
    });
    pool.give([bias, w_hh_t]);
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

/// The forward pass's buffers, shared by the lane groups (each writes only its own rows).
struct ForwardBufs<'a> {
    /// `[T*B, G*H]` pre-activations in, activations out.
    act: SharedRows<'a>,
    /// `[(T+1)*B, H]` h_0 .. h_T.
    hs: SharedRows<'a>,
    /// LSTM `[(T+1)*B, H]` c_0 .. c_T (empty otherwise).
    cs: SharedRows<'a>,
    /// `[T*B, H]` tanh(c_t) (LSTM) or `W_hn h + b_hn` (GRU); empty for Elman.
    aux: SharedRows<'a>,
}

/// The forward recurrence over batch rows `r` for every step: per step one product
/// `h_{t-1} W_hh^T` of `r.len()` rows and the gate kernel.
///
/// # Safety
/// No other thread may touch rows `r` of `bufs` while this runs (the groups' row ranges are
/// disjoint). Within, each buffer's slices of different slots are disjoint.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows(
    dims: Dims,
    r: std::ops::Range<usize>,
    bufs: &ForwardBufs<'_>,
    w_hh_t: &[f32],
    b_hh: &[f32],
    has_h0: bool,
    pool: &Pool,
) {
    let Dims {
        cell,
        steps,
        hidden,
        ..
    } = dims;
    let gh = dims.gh();
    let m = r.len();
    // With no initial state h_0 = 0, so the first step's h_0 W_hh^T product is skipped.
    let k_at = |t: usize| if t == 0 && !has_h0 { 0 } else { hidden };
    let mut scratch = if cell == CellKind::Gru {
        pool.take(m * gh)
    } else {
        Vec::new()
    };
    for t in 0..steps {
        // SAFETY (all `rows` calls): rows `r` belong to this group alone; slot t and slot t+1
        // of `hs` and `cs` are different rows.
        let z = unsafe { bufs.act.rows(t, r.clone()) };
        let h_prev: &[f32] = unsafe { bufs.hs.rows(t, r.clone()) };
        let h_next = unsafe { bufs.hs.rows(t + 1, r.clone()) };
        match cell {
            CellKind::Rnn => {
                matmul(
                    m,
                    gh,
                    k_at(t),
                    z,
                    gh,
                    true,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(w_hh_t, gh),
                    false,
                );
                kernels::rnn_forward(z, h_next);
            }
            CellKind::Lstm => {
                matmul(
                    m,
                    gh,
                    k_at(t),
                    z,
                    gh,
                    true,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(w_hh_t, gh),
                    false,
                );
                let c_prev: &[f32] = unsafe { bufs.cs.rows(t, r.clone()) };
                let c_next = unsafe { bufs.cs.rows(t + 1, r.clone()) };
                let tc = unsafe { bufs.aux.rows(t, r.clone()) };
                kernels::lstm_forward(hidden, z, c_prev, c_next, tc, h_next);
            }
            CellKind::Gru => {
                matmul(
                    m,
                    gh,
                    k_at(t),
                    &mut scratch,
                    gh,
                    false,
                    Mat::rows(h_prev, hidden),
                    Mat::rows(w_hh_t, gh),
                    false,
                );
                let ghn = unsafe { bufs.aux.rows(t, r.clone()) };
                kernels::gru_forward(hidden, z, &scratch, b_hh, h_prev, ghn, h_next);
            }
        }
    }
    pool.give([scratch]);
}

/// What one lane group's reverse loop sums over its rows, per lane (combined in lane order
/// by [`Saved::backward`]).
struct GroupSums {
    /// `[lanes, G*H]` column sums of dL/dZ_in per lane.
    db_in: Vec<f32>,
    /// GRU: `[lanes, G*H]` column sums of dL/dZ_hid per lane; empty otherwise.
    db_hid: Vec<f32>,
    /// `[lanes, T]` per lane and step: the squared norm of dL/dh_t over the lane's rows.
    norms: Vec<f64>,
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
    ///
    /// Runs one group of batch lanes per thread of the current rayon pool (see `split`); the
    /// result's bits do not depend on the number of groups.
    pub fn backward(&mut self, pool: &Pool, dy: &[f32]) -> Grads {
        let Dims {
            cell,
            steps,
            batch,
            hidden,
            ..
        } = self.dims;
        let gh = self.dims.gh();
        let mut d_hid = if cell == CellKind::Gru {
            pool.take(steps * batch * gh)
        } else {
            Vec::new()
        };
        let lanes = split::lanes(batch);
        let groups = split::lane_groups(
            lanes.len(),
            split::groups(lanes.len(), steps * batch * gh * hidden),
        );
        let act = SharedRows::new(&mut self.act, gh, batch);
        let dhid = SharedRows::new(&mut d_hid, gh, batch);
        let read = BackwardRead {
            dims: self.dims,
            dy,
            hs: &self.hs,
            cs: &self.cs,
            aux: &self.aux,
            w_hh: &self.w_hh,
        };
        let sums = split::run_groups(&groups, |g| {
            // SAFETY: each group touches only the rows of its own lanes of `act` and `dhid`,
            // one slot at a time.
            unsafe { read.reverse_loop(&lanes[g], act, dhid, pool) }
        });

        // Combine the per-lane sums in lane order: the same bits for any grouping.
        let mut db_in = pool.take_zeroed(gh);
        let mut db_hid = if cell == CellKind::Gru {
            pool.take_zeroed(gh)
        } else {
            Vec::new()
        };
        let mut sq = vec![0.0f64; steps];
        for s in &sums {
            if gh > 0 {
                for lane in s.db_in.chunks_exact(gh) {
                    add_assign(&mut db_in, lane);
                }
                for lane in s.db_hid.chunks_exact(gh) {
                    add_assign(&mut db_hid, lane);
                }
            }
            if steps > 0 {
                for lane in s.norms.chunks_exact(steps) {
                    for (acc, v) in sq.iter_mut().zip(lane) {
                        *acc += v;
                    }
                }
            }
        }
        for s in sums {
            pool.give([s.db_in, s.db_hid]);
        }
        Grads {
            d_in: std::mem::take(&mut self.act),
            d_hid,
            db_in,
            db_hid,
            time_norms: sq.into_iter().map(f64::sqrt).collect(),
        }
    }

    /// Returns every buffer to the pool.
    pub fn recycle(self, pool: &Pool) {
        pool.give([
            self.x, self.w_ih, self.w_hh, self.hs, self.act, self.cs, self.aux,
        ]);
    }
}

/// What the reverse loop reads, shared by every lane group.
struct BackwardRead<'a> {
    dims: Dims,
    dy: &'a [f32],
    hs: &'a [f32],
    cs: &'a [f32],
    aux: &'a [f32],
    w_hh: &'a [f32],
}

impl BackwardRead<'_> {
    /// The reverse loop over the rows of `lanes` (contiguous): per step the point-wise kernel
    /// per lane (its squared norm and bias column sums kept per lane), then one product
    /// `dZ W_hh` for all the group's rows (dL/dh_{t-1}).
    ///
    /// # Safety
    /// No other thread may touch the rows of `lanes` in `act` or `dhid` while this runs.
    unsafe fn reverse_loop(
        &self,
        lanes: &[std::ops::Range<usize>],
        act: SharedRows<'_>,
        dhid: SharedRows<'_>,
        pool: &Pool,
    ) -> GroupSums {
        let Dims {
            cell,
            steps,
            batch,
            hidden,
            ..
        } = self.dims;
        let gh = self.dims.gh();
        let r = match (lanes.first(), lanes.last()) {
            (Some(a), Some(b)) => a.start..b.end,
            _ => 0..0,
        };
        let m = r.len();
        let mut carry = pool.take_zeroed(m * hidden);
        let mut dh = pool.take(m * hidden);
        let mut dc = if cell == CellKind::Lstm {
            pool.take_zeroed(m * hidden)
        } else {
            Vec::new()
        };
        let mut db_in = pool.take_zeroed(lanes.len() * gh);
        let mut db_hid = if cell == CellKind::Gru {
            pool.take_zeroed(lanes.len() * gh)
        } else {
            Vec::new()
        };
        let mut norms = vec![0.0f64; lanes.len() * steps];
        for t in (0..steps).rev() {
            // SAFETY: rows `r` of slot t belong to this group alone.
            let dz = unsafe { act.rows(t, r.clone()) };
            let dgh: &mut [f32] = if cell == CellKind::Gru {
                // SAFETY: as above.
                unsafe { dhid.rows(t, r.clone()) }
            } else {
                &mut []
            };
            for (li, lane) in lanes.iter().enumerate() {
                // Offsets: `o` within the group's buffers, `at` within the whole [T*B] rows.
                let (o, n) = (lane.start - r.start, lane.len());
                let at = t * batch + lane.start;
                let (lo, hi) = (o * hidden, (o + n) * hidden);
                let (glo, ghi) = (o * gh, (o + n) * gh);
                let (alo, ahi) = (at * hidden, (at + n) * hidden);
                let dyt = &self.dy[alo..ahi];
                let dzl = &mut dz[glo..ghi];
                let sq = match cell {
                    CellKind::Rnn => {
                        let h = &self.hs[alo + batch * hidden..ahi + batch * hidden];
                        kernels::rnn_backward(dyt, &carry[lo..hi], h, &mut dh[lo..hi], dzl)
                    }
                    CellKind::Lstm => kernels::lstm_backward(
                        hidden,
                        dyt,
                        &carry[lo..hi],
                        &mut dh[lo..hi],
                        dzl,
                        &self.aux[alo..ahi],
                        &self.cs[alo..ahi],
                        &mut dc[lo..hi],
                    ),
                    CellKind::Gru => kernels::gru_backward(
                        hidden,
                        dyt,
                        &mut carry[lo..hi],
                        &mut dh[lo..hi],
                        dzl,
                        &self.aux[alo..ahi],
                        &self.hs[alo..ahi],
                        &mut dgh[glo..ghi],
                    ),
                };
                norms[li * steps + t] = sq;
                col_sums_into(&dz[glo..ghi], &mut db_in[li * gh..(li + 1) * gh]);
                if cell == CellKind::Gru {
                    col_sums_into(&dgh[glo..ghi], &mut db_hid[li * gh..(li + 1) * gh]);
                }
            }
            // dL/dh_0 is not needed: the initial state carries no gradient.
            if t > 0 {
                // The GRU's kernel left the direct part `dh * z` in `carry`: add to it.
                let (src, accumulate): (&[f32], bool) = if cell == CellKind::Gru {
                    (&*dgh, true)
                } else {
                    (&*dz, false)
                };
                matmul(
                    m,
                    hidden,
                    gh,
                    &mut carry,
                    hidden,
                    accumulate,
                    Mat::rows(src, gh),
                    Mat::rows(self.w_hh, hidden),
                    false,
                );
            }
        }
        pool.give([carry, dh, dc]);
        GroupSums {
            db_in,
            db_hid,
            norms,
        }
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

    /// `d_w_ih += dZ_in^T X`, `d_w_hh += dZ_hid^T [h_0 .. h_{T-1}]` and, when given,
    /// `d_x += dZ_in W_ih`. On several threads the products run at once (a rayon join), each
    /// also on gemm's own parallelism, so a thread that finishes the small one helps with the
    /// large one. Every product is one gemm call whatever the thread count (gemm splits the
    /// output, never a sum: the same bits on any number of threads).
    pub fn add_weight_grads(
        &self,
        saved: &Saved,
        d_w_ih: &mut [f32],
        d_w_hh: &mut [f32],
        d_x: Option<&mut [f32]>,
    ) {
        if rayon::current_num_threads() <= 1 {
            self.add_d_w_ih(saved, d_w_ih);
            self.add_d_w_hh(saved, d_w_hh);
            if let Some(dx) = d_x {
                self.add_d_x(saved, dx);
            }
            return;
        }
        rayon::join(
            || self.add_d_w_hh(saved, d_w_hh),
            || {
                rayon::join(
                    || self.add_d_w_ih(saved, d_w_ih),
                    || {
                        if let Some(dx) = d_x {
                            self.add_d_x(saved, dx);
                        }
                    },
                )
            },
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
