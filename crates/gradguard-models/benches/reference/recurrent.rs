//! The recurrent reference step (I=32 H=128 T=50 B=32, plain SGD on the last output's MSE),
//! shared by `benches/recurrent_step.rs` and `examples/step_times.rs` (each includes this file
//! with `#[path]`), so that both time the same work.

use dfdx::prelude::*;
use gradguard_models::recurrent::{CellKind, RecurrentLayer};

pub const INPUT: usize = 32;
pub const HIDDEN: usize = 128;
pub const STEPS: usize = 50;
pub const BATCH: usize = 32;

/// The three cells, with their bench names.
pub const CELLS: [(&str, CellKind); 3] = [
    ("lstm", CellKind::Lstm),
    ("rnn_tanh", CellKind::Rnn),
    ("gru", CellKind::Gru),
];

/// A time-major batch, `(STEPS, BATCH, INPUT)` or `(1, BATCH, HIDDEN)`.
pub type Batch = Tensor<(usize, usize, usize), f32, Cpu>;

/// `n` values uniform in `[-scale, scale]` from a 64-bit LCG (reproducible, no RNG crate).
pub fn uniform(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A layer with PyTorch's default init U(-1/sqrt(H), 1/sqrt(H)).
pub fn layer(dev: &Cpu, cell: CellKind) -> RecurrentLayer {
    let mut l = RecurrentLayer::new(dev, cell, INPUT, HIDDEN);
    let g = cell.gates() * HIDDEN;
    let k = 1.0 / (HIDDEN as f32).sqrt();
    let mut seed = 42;
    l.weight_ih.copy_from(&uniform(&mut seed, g * INPUT, k));
    l.weight_hh.copy_from(&uniform(&mut seed, g * HIDDEN, k));
    l.bias_ih.copy_from(&uniform(&mut seed, g, k));
    l.bias_hh.copy_from(&uniform(&mut seed, g, k));
    l
}

/// The input batch and the target of the last step.
pub fn inputs(dev: &Cpu) -> (Batch, Batch) {
    let mut seed = 7;
    let x = dev.tensor_from_vec(
        uniform(&mut seed, STEPS * BATCH * INPUT, 1.0),
        (STEPS, BATCH, INPUT),
    );
    let target = dev.tensor_from_vec(uniform(&mut seed, BATCH * HIDDEN, 0.5), (1, BATCH, HIDDEN));
    (x, target)
}

/// One step; returns the loss so the work cannot be optimised away.
pub fn train_step(layer: &mut RecurrentLayer, x: &Batch, target: &Batch, lr: f32) -> f32 {
    let (out, _) = layer.forward(x.clone().traced(Gradients::leaky()), None, false);
    let last = out.slice((STEPS - 1..STEPS, .., ..));
    let loss = mse_loss(last, target.clone());
    let value = loss.array();
    let grads = loss.backward();
    let (g_ih, g_hh) = (grads.get(&layer.weight_ih), grads.get(&layer.weight_hh));
    let (g_bi, g_bh) = (grads.get(&layer.bias_ih), grads.get(&layer.bias_hh));
    drop(grads);
    layer.weight_ih.axpy(1.0, &g_ih, -lr);
    layer.weight_hh.axpy(1.0, &g_hh, -lr);
    layer.bias_ih.axpy(1.0, &g_bi, -lr);
    layer.bias_hh.axpy(1.0, &g_bh, -lr);
    value
}
