//! Gradient checks for the fused recurrent layers (Elman RNN, LSTM, GRU):
//! - against f64 central differences of an independent f64 implementation (loss on every h_t),
//!   for W_ih, W_hh, b_ih, b_hh and x, with zero and with a given initial state;
//! - against the same cell built from stock dfdx ops (written here, op by op);
//! - a permuted (non-contiguous) input gives the same dX as the contiguous one;
//! - forward values, the detached final state, accumulation across calls and `need_dx = false`.

use dfdx::prelude::*;
use gradguard_models::recurrent::{CellKind, RecurrentLayer, RecurrentState};

type Otape = OwnedTape<f32, Cpu>;
type Seq<T = NoneTape> = Tensor<(usize, usize, usize), f32, Cpu, T>;
type Mat<T = NoneTape> = Tensor<(usize, usize), f32, Cpu, T>;

const CELLS: [CellKind; 3] = [CellKind::Rnn, CellKind::Lstm, CellKind::Gru];

/// Deterministic uniform numbers in [-scale, scale) (64-bit LCG, top bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.next() * scale) as f32).collect()
    }
}

/// Problem: sizes, parameters, input, loss weights R (loss = sum_t sum h_t * R_t) and h0/c0.
#[derive(Clone)]
struct Case {
    cell: CellKind,
    t: usize,
    b: usize,
    i: usize,
    h: usize,
    /// w_ih, w_hh, b_ih, b_hh
    params: [Vec<f32>; 4],
    x: Vec<f32>,
    r: Vec<f32>,
    h0: Option<RecurrentState>,
}

impl Case {
    fn new(cell: CellKind, seed: u64, with_state: bool) -> Self {
        Self::sized(cell, seed, with_state, (5, 2, 3, 4))
    }

    /// Sizes (T, B, I, H).
    fn sized(
        cell: CellKind,
        seed: u64,
        with_state: bool,
        (t, b, i, h): (usize, usize, usize, usize),
    ) -> Self {
        let g = cell.gates() * h;
        let mut rng = Lcg(seed);
        let params = [
            rng.vec(g * i, 0.6),
            rng.vec(g * h, 0.6),
            rng.vec(g, 0.3),
            rng.vec(g, 0.3),
        ];
        let x = rng.vec(t * b * i, 1.0);
        let r = rng.vec(t * b * h, 1.0);
        let h0 = with_state.then(|| RecurrentState {
            h: rng.vec(b * h, 0.8),
            c: (cell == CellKind::Lstm).then(|| rng.vec(b * h, 0.8)),
        });
        Case {
            cell,
            t,
            b,
            i,
            h,
            params,
            x,
            r,
            h0,
        }
    }

    fn layer(&self, dev: &Cpu) -> RecurrentLayer {
        let mut l = RecurrentLayer::new(dev, self.cell, self.i, self.h);
        l.weight_ih.copy_from(&self.params[0]);
        l.weight_hh.copy_from(&self.params[1]);
        l.bias_ih.copy_from(&self.params[2]);
        l.bias_hh.copy_from(&self.params[3]);
        l
    }
}

fn sig(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Independent f64 implementation (PyTorch formulas). Returns (loss, all h_t flattened, h_T, c_T).
fn reference(
    case: &Case,
    params: &[Vec<f64>; 4],
    x: &[f64],
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (t_len, b, i_len, h) = (case.t, case.b, case.i, case.h);
    let g = case.cell.gates() * h;
    let [w_ih, w_hh, b_ih, b_hh] = params;
    let mut hs = vec![0.0; b * h];
    let mut cs = vec![0.0; b * h];
    if let Some(s) = &case.h0 {
        hs = s.h.iter().map(|&v| v as f64).collect();
        if let Some(c) = &s.c {
            cs = c.iter().map(|&v| v as f64).collect();
        }
    }
    let mut loss = 0.0;
    let mut outs = Vec::new();
    for t in 0..t_len {
        let mut new_h = vec![0.0; b * h];
        let mut new_c = vec![0.0; b * h];
        for n in 0..b {
            let xt = &x[(t * b + n) * i_len..(t * b + n + 1) * i_len];
            let hp = &hs[n * h..(n + 1) * h];
            // gi = W_ih x + b_ih, gh = W_hh h + b_hh
            let gi: Vec<f64> = (0..g)
                .map(|r| b_ih[r] + (0..i_len).map(|k| w_ih[r * i_len + k] * xt[k]).sum::<f64>())
                .collect();
            let gh: Vec<f64> = (0..g)
                .map(|r| b_hh[r] + (0..h).map(|k| w_hh[r * h + k] * hp[k]).sum::<f64>())
                .collect();
            for j in 0..h {
                let (hn, cn) = match case.cell {
                    CellKind::Rnn => ((gi[j] + gh[j]).tanh(), 0.0),
                    CellKind::Lstm => {
                        let ig = sig(gi[j] + gh[j]);
                        let fg = sig(gi[h + j] + gh[h + j]);
                        let gg = (gi[2 * h + j] + gh[2 * h + j]).tanh();
                        let og = sig(gi[3 * h + j] + gh[3 * h + j]);
                        let c = fg * cs[n * h + j] + ig * gg;
                        (og * c.tanh(), c)
                    }
                    CellKind::Gru => {
                        let r = sig(gi[j] + gh[j]);
                        let z = sig(gi[h + j] + gh[h + j]);
                        let nn = (gi[2 * h + j] + r * gh[2 * h + j]).tanh();
                        ((1.0 - z) * nn + z * hp[j], 0.0)
                    }
                };
                new_h[n * h + j] = hn;
                new_c[n * h + j] = cn;
            }
        }
        hs = new_h;
        cs = new_c;
        for (k, v) in hs.iter().enumerate() {
            loss += v * case.r[t * b * h + k] as f64;
        }
        outs.extend_from_slice(&hs);
    }
    (loss, outs, hs, cs)
}

/// Fused layer: all hidden states, final state, and the gradients [w_ih, w_hh, b_ih, b_hh, x].
fn fused(case: &Case) -> (Vec<f32>, RecurrentState, [Vec<f32>; 5]) {
    let dev = Cpu::default();
    let layer = case.layer(&dev);
    let x: Seq = dev.tensor_from_vec(case.x.clone(), (case.t, case.b, case.i));
    let r: Seq = dev.tensor_from_vec(case.r.clone(), (case.t, case.b, case.h));
    let (out, state) = layer.forward(x.clone().traced(Gradients::leaky()), case.h0.as_ref(), true);
    let values = out.as_vec();
    let loss = (out * r).sum::<(), _>();
    let grads = loss.backward();
    let gs = [
        grads.get(&layer.weight_ih).as_vec(),
        grads.get(&layer.weight_hh).as_vec(),
        grads.get(&layer.bias_ih).as_vec(),
        grads.get(&layer.bias_hh).as_vec(),
        grads.get(&x).as_vec(),
    ];
    (values, state, gs)
}

/// Normwise relative error ||a - b|| / ||b||.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-12)
}

const NAMES: [&str; 5] = ["W_ih", "W_hh", "b_ih", "b_hh", "x"];

/// Central differences in f64 of the reference loss for all 5 tensors.
fn finite_differences(case: &Case) -> [Vec<f64>; 5] {
    let eps = 1e-6;
    let params: [Vec<f64>; 4] = case
        .params
        .clone()
        .map(|p| p.iter().map(|&v| v as f64).collect());
    let x: Vec<f64> = case.x.iter().map(|&v| v as f64).collect();
    let mut out: [Vec<f64>; 5] = Default::default();
    for (which, slot) in out.iter_mut().enumerate() {
        let n = if which < 4 {
            params[which].len()
        } else {
            x.len()
        };
        for k in 0..n {
            let eval = |delta: f64| {
                let (mut p, mut xx) = (params.clone(), x.clone());
                if which < 4 {
                    p[which][k] += delta;
                } else {
                    xx[k] += delta;
                }
                reference(case, &p, &xx).0
            };
            slot.push((eval(eps) - eval(-eps)) / (2.0 * eps));
        }
    }
    out
}

fn check_against_finite_differences(cell: CellKind, with_state: bool) -> f64 {
    let case = Case::new(cell, 7 + cell.gates() as u64, with_state);
    let params: [Vec<f64>; 4] = case
        .params
        .clone()
        .map(|p| p.iter().map(|&v| v as f64).collect());
    let x: Vec<f64> = case.x.iter().map(|&v| v as f64).collect();
    let (_, ref_out, ref_h, ref_c) = reference(&case, &params, &x);
    let (values, state, grads) = fused(&case);
    // Forward values and the final state match the f64 implementation.
    assert!(
        rel_err(&values, &ref_out) < 1e-5,
        "{cell:?} outputs differ: {}",
        rel_err(&values, &ref_out)
    );
    assert!(rel_err(&state.h, &ref_h) < 1e-5);
    assert_eq!(state.c.is_some(), cell == CellKind::Lstm);
    if let Some(c) = &state.c {
        assert!(rel_err(c, &ref_c) < 1e-5);
    }
    let fd = finite_differences(&case);
    let mut worst = 0.0f64;
    for k in 0..5 {
        let e = rel_err(&grads[k], &fd[k]);
        eprintln!("{cell:?} (state given: {with_state}) d{}: relative error vs f64 central differences {e:.2e}", NAMES[k]);
        assert!(e < 1e-2, "{cell:?} d{} relative error {e}", NAMES[k]);
        worst = worst.max(e);
    }
    worst
}

// Measured (normwise relative error ||g - g_fd|| / ||g_fd||, worst of W_ih, W_hh, b_ih, b_hh, x;
// T=5, B=2, I=3, H=4; zero state / given state): RNN 1.6e-7 / 1.6e-7, LSTM 2.5e-7 / 1.8e-7,
// GRU 1.6e-7 / 1.2e-7. Asserted: the 1e-2 per tensor, and 1e-4 for the worst.
// Against stock dfdx ops the worst is 2.6e-7 at the small size and 8.8e-7 at T=9, B=3, I=7,
// H=37 (asserted < 1e-4). Run with `-- --nocapture` to see every figure.

#[test]
fn rnn_matches_finite_differences() {
    assert!(check_against_finite_differences(CellKind::Rnn, false) < 1e-4);
    assert!(check_against_finite_differences(CellKind::Rnn, true) < 1e-4);
}

#[test]
fn lstm_matches_finite_differences() {
    assert!(check_against_finite_differences(CellKind::Lstm, false) < 1e-4);
    assert!(check_against_finite_differences(CellKind::Lstm, true) < 1e-4);
}

#[test]
fn gru_matches_finite_differences() {
    assert!(check_against_finite_differences(CellKind::Gru, false) < 1e-4);
    assert!(check_against_finite_differences(CellKind::Gru, true) < 1e-4);
}

// ---------------------------------------------------------------------------------------------
// The same cells from stock dfdx ops.

fn taped<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Tensor<S, f32, Cpu, Otape> {
    t.retaped::<Otape>()
}

/// `x [B, I] * W^T + bias` with W `[G, I]`, bias `[G]`, all op by op.
fn affine(x: Mat<Otape>, w: &Mat, bias: &Tensor<(usize,), f32, Cpu>) -> Mat<Otape> {
    let (b, g) = (x.shape().0, w.shape().0);
    let wt = taped(w).permute::<(usize, usize), Axes2<1, 0>>();
    x.matmul(wt) + taped(bias).broadcast_like::<(usize, usize), Axis<0>>(&(b, g))
}

fn cols(z: &Mat, k: usize, h: usize) -> Mat<Otape> {
    taped(z).slice((.., k * h..(k + 1) * h))
}

/// Detaches a value for reuse: its tape goes into `spare` (merged into the loss at the end),
/// and each use takes `value.retaped()`, which records into the same gradient slot.
fn keep(t: Mat<Otape>, spare: &mut Otape) -> Mat {
    let (v, tape) = t.split_tape();
    *spare = std::mem::take(spare).merge(tape);
    v
}

/// Stock-op cell: returns the gradients [w_ih, w_hh, b_ih, b_hh, x] of sum_t sum h_t * R_t.
fn stock(case: &Case, dev: &Cpu, layer: &RecurrentLayer, x: &Seq) -> [Vec<f32>; 5] {
    let (t_len, b, i, h) = (case.t, case.b, case.i, case.h);
    let (h0, c0) = match &case.h0 {
        Some(s) => (s.h.clone(), s.c.clone().unwrap_or(vec![0.0; b * h])),
        None => (vec![0.0; b * h], vec![0.0; b * h]),
    };
    let mut spare = Otape::default();
    let mut hp: Mat = dev.tensor_from_vec(h0, (b, h));
    let mut cp: Mat = dev.tensor_from_vec(c0, (b, h));
    let mut loss: Option<Tensor<(), f32, Cpu, Otape>> = None;
    for t in 0..t_len {
        let xt: Mat<Otape> = taped(x).slice((t..t + 1, .., ..)).reshape_like(&(b, i));
        let gi = affine(xt, &layer.weight_ih, &layer.bias_ih);
        let gh = affine(taped(&hp), &layer.weight_hh, &layer.bias_hh);
        let hn: Mat<Otape> = match case.cell {
            CellKind::Rnn => (gi + gh).tanh(),
            CellKind::Lstm => {
                let z = keep(gi + gh, &mut spare);
                let ig = cols(&z, 0, h).sigmoid();
                let fg = cols(&z, 1, h).sigmoid();
                let gg = cols(&z, 2, h).tanh();
                let og = cols(&z, 3, h).sigmoid();
                let c = keep(fg * taped(&cp) + ig * gg, &mut spare);
                let hn = og * taped(&c).tanh();
                cp = c;
                hn
            }
            CellKind::Gru => {
                let gi = keep(gi, &mut spare);
                let gh = keep(gh, &mut spare);
                let r = (cols(&gi, 0, h) + cols(&gh, 0, h)).sigmoid();
                let z = keep((cols(&gi, 1, h) + cols(&gh, 1, h)).sigmoid(), &mut spare);
                let n = keep((cols(&gi, 2, h) + r * cols(&gh, 2, h)).tanh(), &mut spare);
                // h' = (1 - z) * n + z * h = n + z * (h - n)
                taped(&n) + taped(&z) * (taped(&hp) - taped(&n))
            }
        };
        let hv = keep(hn, &mut spare);
        let rt: Mat = dev.tensor_from_vec(case.r[t * b * h..(t + 1) * b * h].to_vec(), (b, h));
        let term = (taped(&hv) * rt).sum::<(), _>();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
        hp = hv;
    }
    let (loss, tape) = loss.expect("at least one step").split_tape();
    let grads = loss.put_tape(tape.merge(spare)).backward();
    [
        grads.get(&layer.weight_ih).as_vec(),
        grads.get(&layer.weight_hh).as_vec(),
        grads.get(&layer.bias_ih).as_vec(),
        grads.get(&layer.bias_hh).as_vec(),
        grads.get(x).as_vec(),
    ]
}

fn check_against_stock_ops(case: Case) -> f64 {
    let (cell, with_state) = (case.cell, case.h0.is_some());
    let dev = Cpu::default();
    let layer = case.layer(&dev);
    let x: Seq = dev.tensor_from_vec(case.x.clone(), (case.t, case.b, case.i));
    let reference = stock(&case, &dev, &layer, &x);
    let (_, _, grads) = fused(&case);
    let mut worst = 0.0f64;
    for k in 0..5 {
        let r64: Vec<f64> = reference[k].iter().map(|&v| v as f64).collect();
        let e = rel_err(&grads[k], &r64);
        eprintln!(
            "{cell:?} (state given: {with_state}) d{}: relative error vs stock dfdx ops {e:.2e}",
            NAMES[k]
        );
        assert!(
            e < 1e-4,
            "{cell:?} d{} differs from stock ops: {e}",
            NAMES[k]
        );
        worst = worst.max(e);
    }
    worst
}

#[test]
fn fused_cells_match_stock_dfdx_ops() {
    for cell in CELLS {
        check_against_stock_ops(Case::new(cell, 100 + cell.gates() as u64, false));
        check_against_stock_ops(Case::new(cell, 100 + cell.gates() as u64, true));
        // Sizes that are not multiples of any SIMD width: exercises the vector bodies and the
        // remainder loops of the gate kernels and the GEMM edge tiles.
        check_against_stock_ops(Case::sized(cell, 200, true, (9, 3, 7, 37)));
    }
}

#[test]
fn stock_reference_itself_matches_finite_differences() {
    // Guards the reference: a wrong stock cell would make the comparison above meaningless.
    for cell in CELLS {
        let case = Case::new(cell, 55, true);
        let dev = Cpu::default();
        let layer = case.layer(&dev);
        let x: Seq = dev.tensor_from_vec(case.x.clone(), (case.t, case.b, case.i));
        let got = stock(&case, &dev, &layer, &x);
        let fd = finite_differences(&case);
        for k in 0..5 {
            let e = rel_err(&got[k], &fd[k]);
            assert!(e < 1e-4, "stock {cell:?} d{}: {e}", NAMES[k]);
        }
    }
}

#[test]
fn permuted_input_gives_the_same_dx() {
    for cell in CELLS {
        let case = Case::new(cell, 31, false);
        let dev = Cpu::default();
        let (t, b, i) = (case.t, case.b, case.i);
        // The same values stored batch-major [B, T, I], viewed time-major by a permute.
        let mut bti = vec![0.0f32; t * b * i];
        for tt in 0..t {
            for n in 0..b {
                for k in 0..i {
                    bti[(n * t + tt) * i + k] = case.x[(tt * b + n) * i + k];
                }
            }
        }
        let leaf: Seq = dev.tensor_from_vec(bti, (b, t, i));
        let layer = case.layer(&dev);
        let r: Seq = dev.tensor_from_vec(case.r.clone(), (t, b, case.h));
        let view = leaf
            .clone()
            .traced(Gradients::leaky())
            .permute::<(usize, usize, usize), Axes3<1, 0, 2>>();
        let (out, _) = layer.forward(view, None, true);
        let grads = (out * r).sum::<(), _>().backward();
        let d_bti = grads.get(&leaf).as_vec();
        let (_, _, contiguous) = fused(&case);
        for tt in 0..t {
            for n in 0..b {
                for k in 0..i {
                    assert_eq!(
                        d_bti[(n * t + tt) * i + k],
                        contiguous[4][(tt * b + n) * i + k],
                        "{cell:?}"
                    );
                }
            }
        }
        assert_eq!(grads.get(&layer.weight_hh).as_vec(), contiguous[1]);
    }
}

#[test]
fn two_calls_accumulate_and_state_is_detached() {
    // Window 2 starts from window 1's final state; the loss is on both windows. Gradients of
    // the parameters are the sum of each window's own gradient (h0 of window 2 carries none).
    for cell in CELLS {
        let case1 = Case::new(cell, 77, false);
        let dev = Cpu::default();
        let layer = case1.layer(&dev);
        let x1: Seq = dev.tensor_from_vec(case1.x.clone(), (case1.t, case1.b, case1.i));
        let r: Seq = dev.tensor_from_vec(case1.r.clone(), (case1.t, case1.b, case1.h));
        let (out1, state) = layer.forward(x1.clone().traced(Gradients::leaky()), None, true);
        let mut case2 = case1.clone();
        case2.x.iter_mut().for_each(|v| *v = -*v * 0.5);
        case2.h0 = Some(state.clone());
        let x2: Seq = dev.tensor_from_vec(case2.x.clone(), (case2.t, case2.b, case2.i));
        let (out1v, tape1) = out1.split_tape();
        let (out2, _) = layer.forward(x2.clone().put_tape(tape1), Some(&state), false);
        let loss = (out1v.put_tape(Default::default()) * r.clone()).sum::<(), _>()
            + (out2 * r).sum::<(), _>();
        let grads = loss.backward();
        let (_, _, g1) = fused(&case1);
        let (_, _, g2) = fused(&case2);
        for (k, param) in [&layer.weight_ih, &layer.weight_hh].into_iter().enumerate() {
            let got = grads.get(param).as_vec();
            let want: Vec<f64> = g1[k]
                .iter()
                .zip(&g2[k])
                .map(|(a, b)| (a + b) as f64)
                .collect();
            assert!(
                rel_err(&got, &want) < 1e-5,
                "{cell:?} accumulated d{}",
                NAMES[k]
            );
        }
        // need_dx = false on window 2: x2 got no gradient; window 1's x got its own.
        assert!(grads.get(&x1).as_vec().iter().any(|&v| v != 0.0));
    }
}

#[test]
fn inference_without_tape_gives_the_same_outputs() {
    for cell in CELLS {
        let case = Case::new(cell, 5, true);
        let dev = Cpu::default();
        let layer = case.layer(&dev);
        let x: Seq = dev.tensor_from_vec(case.x.clone(), (case.t, case.b, case.i));
        let (out, state) = layer.forward(x, case.h0.as_ref(), false);
        let (values, state2, _) = fused(&case);
        assert_eq!(out.as_vec(), values);
        assert_eq!(state, state2);
        assert!(layer.time_grad_norms().is_empty());
    }
}

#[test]
fn time_grad_norms_are_the_norms_of_dl_dh() {
    // With loss = sum_t h_t . R_t, the gradient reaching h_T is R_T exactly.
    for cell in CELLS {
        let case = Case::new(cell, 9, false);
        let dev = Cpu::default();
        let layer = case.layer(&dev);
        let x: Seq = dev.tensor_from_vec(case.x.clone(), (case.t, case.b, case.i));
        let r: Seq = dev.tensor_from_vec(case.r.clone(), (case.t, case.b, case.h));
        let (out, _) = layer.forward(x.traced(Gradients::leaky()), None, false);
        let _ = (out * r).sum::<(), _>().backward();
        let norms = layer.time_grad_norms();
        assert_eq!(norms.len(), case.t);
        let bh = case.b * case.h;
        let last: f64 = case.r[(case.t - 1) * bh..]
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norms[case.t - 1] - last).abs() < 1e-6 * last, "{cell:?}");
        assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0));
    }
}

#[test]
fn empty_sizes_do_not_panic() {
    // T = 0, B = 0, H = 0 or I = 0: a spec can ask for them; the layer returns empty results
    // instead of panicking.
    for cell in CELLS {
        for (t, b, i, h) in [(0, 2, 3, 4), (3, 0, 3, 4), (3, 2, 3, 0), (3, 2, 0, 4)] {
            let dev = Cpu::default();
            let layer = RecurrentLayer::new(&dev, cell, i, h);
            let x: Seq = dev.tensor_from_vec(vec![0.5; t * b * i], (t, b, i));
            let (out, state) = layer.forward(x.traced(Gradients::leaky()), None, true);
            assert_eq!(*out.shape(), (t, b, h));
            assert_eq!(state.h, vec![0.0; b * h]);
            // dfdx's own `sum` divides by zero on an empty tensor, so the backward pass is only
            // driven where the output has elements (here: I = 0).
            if t * b * h > 0 {
                let grads = out.sum::<(), _>().backward();
                assert_eq!(
                    grads.get(&layer.weight_hh).as_vec().len(),
                    cell.gates() * h * h
                );
                assert!(grads.get(&layer.bias_hh).as_vec().iter().any(|&v| v != 0.0));
            }
        }
    }
}
