//! Per-step wall times of the reference training steps (LSTM, tanh RNN, GRU with I=32 H=128
//! T=50 B=32, plain SGD) at several thread counts, interleaved step by step, with the minimum
//! next to the median: on a shared machine the minimum is the step that had its cores to
//! itself. A measurement aid beside the criterion benches (`benches/recurrent_step.rs`).
//!
//! Run: `cargo run --release -p gradguard-models --example step_times -- [STEPS=200] [THREADS=1,2]`

use std::num::NonZeroUsize;
use std::time::Instant;

use dfdx::prelude::*;
use gradguard_models::recurrent::{tune_allocator, CellKind, RecurrentLayer};
use gradguard_models::ThreadPool;

const INPUT: usize = 32;
const HIDDEN: usize = 128;
const STEPS: usize = 50;
const BATCH: usize = 32;

fn uniform(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn layer(dev: &Cpu, cell: CellKind) -> RecurrentLayer {
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

fn train_step(
    layer: &mut RecurrentLayer,
    x: &Tensor<(usize, usize, usize), f32, Cpu>,
    target: &Tensor<(usize, usize, usize), f32, Cpu>,
) -> f32 {
    let (out, _) = layer.forward(x.clone().traced(Gradients::leaky()), None, false);
    let loss = mse_loss(out.slice((STEPS - 1..STEPS, .., ..)), target.clone());
    let value = loss.array();
    let grads = loss.backward();
    let (g_ih, g_hh) = (grads.get(&layer.weight_ih), grads.get(&layer.weight_hh));
    let (g_bi, g_bh) = (grads.get(&layer.bias_ih), grads.get(&layer.bias_hh));
    drop(grads);
    layer.weight_ih.axpy(1.0, &g_ih, -0.01);
    layer.weight_hh.axpy(1.0, &g_hh, -0.01);
    layer.bias_ih.axpy(1.0, &g_bi, -0.01);
    layer.bias_hh.axpy(1.0, &g_bh, -0.01);
    value
}

fn main() {
    tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let threads: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let dev = Cpu::default();
    let mut seed = 7;
    let x: Tensor<(usize, usize, usize), f32, Cpu> = dev.tensor_from_vec(
        uniform(&mut seed, STEPS * BATCH * INPUT, 1.0),
        (STEPS, BATCH, INPUT),
    );
    let target: Tensor<(usize, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(uniform(&mut seed, BATCH * HIDDEN, 0.5), (1, BATCH, HIDDEN));
    let pools: Vec<ThreadPool> = threads
        .iter()
        .map(|&t| ThreadPool::new(NonZeroUsize::new(t).expect("threads >= 1")).expect("pool"))
        .collect();
    for (name, cell) in [
        ("lstm", CellKind::Lstm),
        ("rnn_tanh", CellKind::Rnn),
        ("gru", CellKind::Gru),
    ] {
        let mut layers: Vec<RecurrentLayer> = pools.iter().map(|_| layer(&dev, cell)).collect();
        let mut times = vec![Vec::with_capacity(steps); pools.len()];
        for i in 0..steps + 10 {
            for (p, (pool, l)) in pools.iter().zip(layers.iter_mut()).enumerate() {
                let dt = pool.install(|| {
                    let t0 = Instant::now();
                    std::hint::black_box(train_step(l, &x, &target));
                    t0.elapsed().as_secs_f64() * 1e3
                });
                if i >= 10 {
                    times[p].push(dt);
                }
            }
        }
        for (t, mut v) in threads.iter().zip(times) {
            v.sort_by(f64::total_cmp);
            println!(
                "{name:<9} {t} thread(s): min {:.3} ms  p10 {:.3} ms  median {:.3} ms",
                v[0],
                v[v.len() / 10],
                v[v.len() / 2]
            );
        }
    }
}
