//! Per-step wall times of the reference training steps (LSTM, tanh RNN, GRU with I=32 H=128
//! T=50 B=32, plain SGD) at several thread counts, interleaved step by step, with the minimum
//! next to the median: on a shared machine the minimum is the step that had its cores to
//! itself. A measurement aid beside the criterion benches (`benches/recurrent_step.rs`).
//!
//! Run: `cargo run --release -p gradguard-models --example step_times -- [STEPS=200] [THREADS=1,2]`

use std::num::NonZeroUsize;
use std::time::Instant;

use dfdx::prelude::*;
use gradguard_models::recurrent::{tune_allocator, RecurrentLayer};
use gradguard_models::ThreadPool;

#[path = "../benches/reference/recurrent.rs"]
mod reference;
use reference::{inputs, layer, train_step, CELLS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let steps: NonZeroUsize = match args.get(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("STEPS: expected a whole number >= 1, got `{s}` ({e})"))?,
        None => NonZeroUsize::new(200).ok_or("200 is not zero")?,
    };
    let steps = steps.get();
    let threads: Vec<NonZeroUsize> = match args.get(2) {
        Some(s) => s
            .split(',')
            .map(|t| {
                t.parse().map_err(|e| {
                    format!("THREADS: expected counts >= 1 such as 1,2, got `{t}` ({e})")
                })
            })
            .collect::<Result<_, _>>()?,
        None => vec![NonZeroUsize::MIN, NonZeroUsize::MIN.saturating_add(1)],
    };
    let dev = Cpu::default();
    let (x, target) = inputs(&dev);
    let pools = threads
        .iter()
        .map(|&t| ThreadPool::new(t))
        .collect::<Result<Vec<_>, _>>()?;
    for (name, cell) in CELLS {
        let mut layers: Vec<RecurrentLayer> = pools.iter().map(|_| layer(&dev, cell)).collect();
        let mut times = vec![Vec::with_capacity(steps); pools.len()];
        for i in 0..steps + 10 {
            for (p, (pool, l)) in pools.iter().zip(layers.iter_mut()).enumerate() {
                let dt = pool.install(|| {
                    let t0 = Instant::now();
                    std::hint::black_box(train_step(l, &x, &target, 0.01));
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
    Ok(())
}
