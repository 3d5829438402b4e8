//! One training step of a fused recurrent layer: forward over the sequence, MSE of h_T against
//! a fixed target, backward through time, plain SGD on W_ih, W_hh, b_ih, b_hh.
//! Shape: input 32, hidden 128, 50 steps, batch 32 (the reference shape).
//!
//! Wall clock at each thread count of `GRADGUARD_BENCH_THREADS` (default `1,2`): the step runs
//! inside a `gradguard_models::ThreadPool` of that many threads, as `gradguard run` does; plus
//! the calling thread's CPU time at 1 thread (the steadier figure on a loaded machine).
//! PyTorch side by side: `../shared/peers/torch_train_bench.py --threads 1 2` in the same session.
//!
//! Run: `cargo bench -p gradguard-models --bench recurrent_step`
//! Targets on the dev machine (PyTorch 2.15 low ends): LSTM <= 4.0 ms, RNN <= 3.4 ms, GRU <= 10 ms.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use dfdx::prelude::*;
use gradguard_models::recurrent::tune_allocator;
use gradguard_models::ThreadPool;

#[path = "reference/recurrent.rs"]
mod reference;
use reference::{inputs, layer, train_step, CELLS};

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`). On a shared, oversubscribed
/// machine wall time mostly measures the other processes; this measures the step's own work
/// (cache pollution by the neighbours still counts). Every GEMM runs on this thread (1-thread
/// rayon pool), so nothing is missed.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now() - start
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// The thread counts to measure: `GRADGUARD_BENCH_THREADS` (comma-separated), default 1 and 2.
fn bench_threads() -> Vec<usize> {
    std::env::var("GRADGUARD_BENCH_THREADS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|t| t.trim().parse().expect("GRADGUARD_BENCH_THREADS: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 2])
}

fn bench_wall(c: &mut Criterion) {
    tune_allocator();
    let dev = Cpu::default();
    let (x, target) = inputs(&dev);
    for threads in bench_threads() {
        let pool = ThreadPool::new(NonZeroUsize::new(threads).expect("threads >= 1"))
            .expect("thread pool");
        let mut group = c.benchmark_group(format!(
            "recurrent_step_i32_h128_t50_b32_{threads}thread_wall"
        ));
        for (name, cell) in CELLS {
            let mut l = layer(&dev, cell);
            let first = pool.install(|| train_step(&mut l, &x, &target, 0.01));
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    pool.install(|| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            std::hint::black_box(train_step(&mut l, &x, &target, 0.01));
                        }
                        start.elapsed()
                    })
                })
            });
            let last = pool.install(|| train_step(&mut l, &x, &target, 0.01));
            assert!(
                last.is_finite() && last < first,
                "{name}: SGD did not reduce the loss ({first} -> {last})"
            );
        }
        group.finish();
    }
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench(c, "thread_cpu");
}

/// One thread, every product on the calling thread (the global rayon pool has one worker).
fn bench<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    tune_allocator();
    // 1 thread: the global rayon pool (which gemm would use) gets one worker, so every GEMM
    // runs sequentially on the calling thread.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    assert_eq!(rayon::current_num_threads(), 1);
    let dev = Cpu::default();
    let (x, target) = inputs(&dev);
    let mut group = c.benchmark_group(format!("recurrent_step_i32_h128_t50_b32_1thread_{clock}"));
    for (name, cell) in CELLS {
        let mut l = layer(&dev, cell);
        let first = train_step(&mut l, &x, &target, 0.01);
        group.bench_function(name, |b| b.iter(|| train_step(&mut l, &x, &target, 0.01)));
        let last = train_step(&mut l, &x, &target, 0.01);
        assert!(
            last.is_finite() && last < first,
            "{name}: SGD did not reduce the loss ({first} -> {last})"
        );
    }
    group.finish();
}

fn config<M: Measurement>(m: M) -> Criterion<M> {
    Criterion::default()
        .with_measurement(m)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = wall;
    config = config(WallTime);
    targets = bench_wall
}
criterion_group! {
    name = cpu;
    config = config(ThreadCpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
