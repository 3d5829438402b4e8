//! Point-wise gate kernels for one time step of each cell, forward and backward.
//!
//! Each public function handles a whole `[B, ...]` block and is compiled for AVX-512, AVX2+FMA
//! and generic x86-64 (see [`multiversion`]). The per-row work sits in `#[inline(always)]`
//! functions that take every slice as a separate parameter: with many local `split_at_mut`
//! slices instead, LLVM gives up on its alias checks and emits scalar code (measured 5x slower).
//!
//! Gate order and formulas follow PyTorch's `nn.RNN` (tanh), `nn.LSTM` (i, f, g, o) and
//! `nn.GRU` (r, z, n, with `b_hn` inside `r * (W_hn h + b_hn)`).

use super::simd::{multiversion, sigmoid, tanh};

/// Sum of squares in f64 of `dy + carry`, written to `dh`.
#[inline(always)]
fn add_row(dy: &[f32], carry: &[f32], dh: &mut [f32]) -> f64 {
    let n = dh.len();
    let (dy, carry) = (&dy[..n], &carry[..n]);
    let mut s = 0.0f64;
    for j in 0..n {
        let v = dy[j] + carry[j];
        dh[j] = v;
        s += (v as f64) * (v as f64);
    }
    s
}

multiversion! {
    /// Elman forward: `h = tanh(a)` over a `[B, H]` block.
    pub(crate) fn rnn_forward(a: &[f32], h: &mut [f32]) {
        let n = h.len();
        let a = &a[..n];
        for j in 0..n {
            h[j] = tanh(a[j]);
        }
    }
}

multiversion! {
    /// Elman backward for one step: `dh = dy + carry` (its squared norm is returned) and
    /// `da = dh * (1 - h^2)`.
    pub(crate) fn rnn_backward(dy: &[f32], carry: &[f32], h: &[f32], dh: &mut [f32], da: &mut [f32]) -> f64 {
        let s = add_row(dy, carry, dh);
        let n = da.len();
        let (h, dh) = (&h[..n], &dh[..n]);
        for j in 0..n {
            da[j] = dh[j] * (1.0 - h[j] * h[j]);
        }
        s
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_forward_row(
    zi: &mut [f32],
    zf: &mut [f32],
    zg: &mut [f32],
    zo: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (zi, zf, zg, zo) = (&mut zi[..n], &mut zf[..n], &mut zg[..n], &mut zo[..n]);
    let (c_prev, c, tc) = (&c_prev[..n], &mut c[..n], &mut tc[..n]);
    for j in 0..n {
        let i = sigmoid(zi[j]);
        let f = sigmoid(zf[j]);
        let g = tanh(zg[j]);
        let o = sigmoid(zo[j]);
        let cj = f.mul_add(c_prev[j], i * g);
        let t = tanh(cj);
        zi[j] = i;
        zf[j] = f;
        zg[j] = g;
        zo[j] = o;
        c[j] = cj;
        tc[j] = t;
        h[j] = o * t;
    }
}

multiversion! {
    /// LSTM forward for one step. `gates` `[B, 4H]` holds the pre-activations `x W_ih^T + b_ih +
    /// h W_hh^T + b_hh` and is overwritten with the activations `i, f, g, o`; writes `c`,
    /// `tanh(c)` and `h` (`[B, H]` each).
    pub(crate) fn lstm_forward(hidden: usize, gates: &mut [f32], c_prev: &[f32], c: &mut [f32], tc: &mut [f32], h: &mut [f32]) {
        if hidden == 0 {
            return;
        }
        for (r, g) in gates.chunks_exact_mut(4 * hidden).enumerate() {
            let (zi, rest) = g.split_at_mut(hidden);
            let (zf, rest) = rest.split_at_mut(hidden);
            let (zg, zo) = rest.split_at_mut(hidden);
            let row = r * hidden..(r + 1) * hidden;
            lstm_forward_row(zi, zf, zg, zo, &c_prev[row.clone()], &mut c[row.clone()], &mut tc[row.clone()], &mut h[row]);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_backward_row(
    gi: &mut [f32],
    gf: &mut [f32],
    gg: &mut [f32],
    go: &mut [f32],
    tc: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
) {
    let n = dh.len();
    let (gi, gf, gg, go) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n]);
    let (tc, c_prev, dc) = (&tc[..n], &c_prev[..n], &mut dc[..n]);
    for j in 0..n {
        let (i, f, g, o, t) = (gi[j], gf[j], gg[j], go[j], tc[j]);
        let d_o = dh[j] * t;
        let dct = (dh[j] * o).mul_add(1.0 - t * t, dc[j]);
        let di = dct * g;
        let dg = dct * i;
        let df = dct * c_prev[j];
        dc[j] = dct * f;
        gi[j] = di * i * (1.0 - i);
        gf[j] = df * f * (1.0 - f);
        gg[j] = dg * (1.0 - g * g);
        go[j] = d_o * o * (1.0 - o);
    }
}

multiversion! {
    /// LSTM backward for one step. `dh = dy + carry` is written to `dh` (its squared norm is
    /// returned); `gates` (the activations) is overwritten with dL/d(pre-activation); `dc` holds
    /// dL/dc_t from step t+1 on entry and dL/dc_{t-1} on exit.
    pub(crate) fn lstm_backward(hidden: usize, dy: &[f32], carry: &[f32], dh: &mut [f32], gates: &mut [f32], tc: &[f32], c_prev: &[f32], dc: &mut [f32]) -> f64 {
        let s = add_row(dy, carry, dh);
        if hidden == 0 {
            return s;
        }
        for (r, g) in gates.chunks_exact_mut(4 * hidden).enumerate() {
            let (gi, rest) = g.split_at_mut(hidden);
            let (gf, rest) = rest.split_at_mut(hidden);
            let (gg, go) = rest.split_at_mut(hidden);
            let row = r * hidden..(r + 1) * hidden;
            lstm_backward_row(gi, gf, gg, go, &tc[row.clone()], &c_prev[row.clone()], &dh[row.clone()], &mut dc[row]);
        }
        s
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_forward_row(
    ir: &mut [f32],
    iz: &mut [f32],
    inn: &mut [f32],
    hr: &[f32],
    hz: &[f32],
    hn: &[f32],
    bias_hh: &[f32],
    h_prev: &[f32],
    ghn: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (ir, iz, inn) = (&mut ir[..n], &mut iz[..n], &mut inn[..n]);
    let (hr, hz, hn, h_prev, ghn) = (&hr[..n], &hz[..n], &hn[..n], &h_prev[..n], &mut ghn[..n]);
    let (br, bz, bn) = (&bias_hh[..n], &bias_hh[n..2 * n], &bias_hh[2 * n..3 * n]);
    for j in 0..n {
        let r = sigmoid(ir[j] + hr[j] + br[j]);
        let z = sigmoid(iz[j] + hz[j] + bz[j]);
        let gn = hn[j] + bn[j];
        let nn = tanh(r.mul_add(gn, inn[j]));
        ir[j] = r;
        iz[j] = z;
        inn[j] = nn;
        ghn[j] = gn;
        h[j] = z.mul_add(h_prev[j] - nn, nn);
    }
}

multiversion! {
    /// GRU forward for one step. `gi` `[B, 3H]` holds `x W_ih^T + b_ih` and is overwritten with
    /// the activations `r, z, n`; `gh` `[B, 3H]` is `h W_hh^T` (without bias); `bias_hh` `[3H]`;
    /// writes `ghn = W_hn h + b_hn` and the new `h`.
    pub(crate) fn gru_forward(hidden: usize, gi: &mut [f32], gh: &[f32], bias_hh: &[f32], h_prev: &[f32], ghn: &mut [f32], h: &mut [f32]) {
        if hidden == 0 {
            return;
        }
        for (r, (g, hrow)) in gi.chunks_exact_mut(3 * hidden).zip(gh.chunks_exact(3 * hidden)).enumerate() {
            let (ir, rest) = g.split_at_mut(hidden);
            let (iz, inn) = rest.split_at_mut(hidden);
            let (hr, rest) = hrow.split_at(hidden);
            let (hz, hn) = rest.split_at(hidden);
            let row = r * hidden..(r + 1) * hidden;
            gru_forward_row(ir, iz, inn, hr, hz, hn, bias_hh, &h_prev[row.clone()], &mut ghn[row.clone()], &mut h[row]);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_backward_row(
    gr: &mut [f32],
    gz: &mut [f32],
    gn: &mut [f32],
    ghn: &[f32],
    h_prev: &[f32],
    dh: &[f32],
    carry: &mut [f32],
    dhr: &mut [f32],
    dhz: &mut [f32],
    dhn: &mut [f32],
) {
    let n = dh.len();
    let (gr, gz, gn) = (&mut gr[..n], &mut gz[..n], &mut gn[..n]);
    let (ghn, h_prev, carry) = (&ghn[..n], &h_prev[..n], &mut carry[..n]);
    let (dhr, dhz, dhn) = (&mut dhr[..n], &mut dhz[..n], &mut dhn[..n]);
    for j in 0..n {
        let (r, z, nn, d) = (gr[j], gz[j], gn[j], dh[j]);
        let dn = d * (1.0 - z);
        let dz = d * (h_prev[j] - nn);
        carry[j] = d * z;
        let dan = dn * (1.0 - nn * nn);
        let dar = dan * ghn[j] * r * (1.0 - r);
        let daz = dz * z * (1.0 - z);
        gr[j] = dar;
        gz[j] = daz;
        gn[j] = dan;
        dhr[j] = dar;
        dhz[j] = daz;
        dhn[j] = dan * r;
    }
}

multiversion! {
    /// GRU backward for one step. `dh = dy + carry` (squared norm returned); `gates` (r, z, n) is
    /// overwritten with dL/d(x W_ih^T + b_ih); `dgh` `[B, 3H]` receives dL/d(h W_hh^T + b_hh);
    /// `carry` receives the direct part `dh * z` of dL/dh_{t-1} (the caller adds `dgh W_hh`).
    pub(crate) fn gru_backward(hidden: usize, dy: &[f32], carry: &mut [f32], dh: &mut [f32], gates: &mut [f32], ghn: &[f32], h_prev: &[f32], dgh: &mut [f32]) -> f64 {
        let s = add_row(dy, carry, dh);
        if hidden == 0 {
            return s;
        }
        for (r, (g, d)) in gates.chunks_exact_mut(3 * hidden).zip(dgh.chunks_exact_mut(3 * hidden)).enumerate() {
            let (gr, rest) = g.split_at_mut(hidden);
            let (gz, gn) = rest.split_at_mut(hidden);
            let (dhr, rest) = d.split_at_mut(hidden);
            let (dhz, dhn) = rest.split_at_mut(hidden);
            let row = r * hidden..(r + 1) * hidden;
            gru_backward_row(gr, gz, gn, &ghn[row.clone()], &h_prev[row.clone()], &dh[row.clone()], &mut carry[row], dhr, dhz, dhn);
        }
        s
    }
}
