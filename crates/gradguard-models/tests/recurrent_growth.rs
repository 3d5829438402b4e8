//! Exploding gradients through time, measured with `RecurrentLayer::time_grad_norms`
//! (||dL/dh_t|| over the batch; the loss is the MSE of h_T against a target).
//!
//! Weights: `W_ih ~ U(-1/sqrt(I), 1/sqrt(I))`; each gate block of `W_hh` is `radius * Q` with Q a
//! random orthogonal matrix, so the Elman cell's `W_hh` has spectral radius exactly `radius`.
use dfdx::prelude::*;
use gradguard_models::recurrent::{CellKind, RecurrentLayer};

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

/// A random orthogonal n x n matrix (Gram-Schmidt on uniform entries), row-major.
fn orthogonal(rng: &mut Lcg, n: usize) -> Vec<f64> {
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| rng.next()).collect();
        for u in &q {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            q.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    q.concat()
}

/// ||dL/dh_t|| for t = 1..steps, for a layer (B=4, I=8, H=32) over inputs U(-x_scale, x_scale).
fn norms(
    cell: CellKind,
    steps: usize,
    x_scale: f64,
    radius: f64,
    forget_bias: f32,
    seed: u64,
) -> Vec<f64> {
    let (b, i, h) = (4, 8, 32);
    let dev = Cpu::default();
    let mut rng = Lcg(seed);
    let mut layer = RecurrentLayer::new(&dev, cell, i, h);
    let g = cell.gates();
    let w_ih = rng.vec(g * h * i, 1.0 / (i as f64).sqrt());
    let mut w_hh = Vec::new();
    for _ in 0..g {
        w_hh.extend(
            orthogonal(&mut rng, h)
                .into_iter()
                .map(|v| (v * radius) as f32),
        );
    }
    layer.weight_ih.copy_from(&w_ih);
    layer.weight_hh.copy_from(&w_hh);
    if cell == CellKind::Lstm {
        let mut bias = vec![0.0; g * h];
        bias[h..2 * h].fill(forget_bias);
        layer.bias_hh.copy_from(&bias);
    }
    let x: Tensor<(usize, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(Lcg(seed + 11).vec(steps * b * i, x_scale), (steps, b, i));
    let target: Tensor<(usize, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(Lcg(seed + 12).vec(b * h, 0.5), (1, b, h));
    let (out, _) = layer.forward(x.traced(Gradients::leaky()), None, false);
    let last = out.slice((steps - 1..steps, .., ..));
    let _ = mse_loss(last, target).backward();
    layer.time_grad_norms()
}

/// ||dL/dh_1|| for each sequence length.
fn first_step_norms(cell: CellKind, lengths: &[usize], radius: f64, forget_bias: f32) -> Vec<f64> {
    lengths
        .iter()
        .map(|&t| norms(cell, t, 1.0, radius, forget_bias, 3)[0])
        .collect()
}

/// Average growth of ln ||dL/dh_1|| per extra time step between the first and last length.
fn log_slope(lengths: &[usize], n: &[f64]) -> f64 {
    (n[n.len() - 1].ln() - n[0].ln()) / (lengths[lengths.len() - 1] - lengths[0]) as f64
}

#[test]
fn rnn_gradient_grows_by_the_spectral_radius_per_step_in_the_linear_regime() {
    // Inputs of 1e-8 keep |h| < 1e-3, so tanh' = 1 - h^2 = 1 to 1e-6 and dL/dh_{t-1} =
    // (dL/dh_t) * 4Q: its norm is exactly 4 times larger at every step back, for every length.
    for steps in [4, 6, 8] {
        let n = norms(CellKind::Rnn, steps, 1e-8, 4.0, 0.0, 3);
        assert_eq!(n.len(), steps);
        for t in 1..steps {
            let ratio = n[t - 1] / n[t];
            assert!(
                (ratio - 4.0).abs() < 1e-3,
                "T={steps}: ||dL/dh_{t}|| / ||dL/dh_{}|| = {ratio}",
                t + 1
            );
        }
        let expected = n[steps - 1] * 4f64.powi(steps as i32 - 1);
        assert!((n[0] / expected - 1.0).abs() < 1e-4);
    }
}

#[test]
fn rnn_gradient_explodes_with_length_and_lstm_gradient_does_not() {
    // Ordinary inputs U(-1, 1). Measured (seed 3, lengths 10/20/30/40):
    //   Elman, radius 4:                1.6e1  3.1e2  3.6e4  3.8e6   (x1.5 per step)
    //   LSTM, radius 1, forget bias 1:  3.8e-3 1.8e-3 6.9e-4 4.5e-4  (shrinks)
    //   LSTM, radius 4 in every gate:   1.8e-1 1.0e-1 9.8e-1 1.1e0   (x1.06 per step)
    let lengths = [10, 20, 30, 40];
    let rnn = first_step_norms(CellKind::Rnn, &lengths, 4.0, 0.0);
    for w in rnn.windows(2) {
        assert!(w[1] > 3.0 * w[0], "Elman: {rnn:?}");
    }
    let rnn_slope = log_slope(&lengths, &rnn);
    assert!(
        rnn_slope > 1.2f64.ln(),
        "Elman grows by only {} per step",
        rnn_slope.exp()
    );

    // The same shape as an LSTM with an orthogonal recurrent init and forget bias 1 (the usual
    // cure): the gradient reaching h_1 does not grow with the length.
    let lstm = first_step_norms(CellKind::Lstm, &lengths, 1.0, 1.0);
    for w in lstm.windows(2) {
        assert!(w[1] <= w[0], "LSTM: {lstm:?}");
    }
    // Even with the Elman cell's radius-4 weights in every gate, the LSTM's growth rate stays a
    // small fraction of the Elman cell's (the additive cell path is damped by f < 1).
    let lstm4 = first_step_norms(CellKind::Lstm, &lengths, 4.0, 0.0);
    let lstm4_slope = log_slope(&lengths, &lstm4);
    assert!(
        lstm4_slope < rnn_slope / 3.0,
        "LSTM radius 4: {lstm4:?}, Elman {rnn:?}"
    );
}
