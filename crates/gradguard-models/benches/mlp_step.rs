//! One MLP training step (forward, cross-entropy loss, backward, SGD update), the reference
//! shape of BENCHMARKS.md: 784-256-256-10, ReLU, batch 64, f32, at 1 and 2 threads.
//! PyTorch 2.15 on the same machine class (peers/torch_train_bench.py): 0.95-1.0 ms.
//!
//! Run: `cargo bench -p gradguard-models --bench mlp_step`; thread counts of the wall figure:
//! `GRADGUARD_BENCH_THREADS` (default `1,2`).
//!
//! Two figures: `wall` (criterion's default clock) and `thread_cpu` (CPU time of the
//! benchmarking thread, `CLOCK_THREAD_CPUTIME_ID`), which stays meaningful on a shared,
//! loaded machine where the wall clock also counts time spent waiting for a core.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};

/// CPU time consumed by the calling thread.
struct ThreadCpu;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
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
        WALL.formatter()
    }
}
use gradguard_models::tasks::{Dataset, Targets};
use gradguard_models::{ModelSpec, TaskData, ThreadPool, TrainSpec, Trainer};

fn setup() -> Trainer {
    gradguard_models::tune_allocator();
    let model: ModelSpec =
        toml::from_str("kind = \"mlp\"\nhidden = [256, 256]\nactivation = \"relu\"")
            .expect("model spec");
    let train: TrainSpec = toml::from_str(
        "optimizer = { kind = \"sgd\", lr = 0.01 }\nbatch_size = 64\nloss = \"cross_entropy\"",
    )
    .expect("train spec");
    let mut rng = gradguard_models::rng::Rng64::new(0, 0);
    let n = 64 * 20;
    let x: Vec<f32> = (0..n * 784).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.below(10) as f32).collect();
    let data = TaskData {
        train: Dataset { n, x, y },
        test: Dataset {
            n: 0,
            x: Vec::new(),
            y: Vec::new(),
        },
        steps: 1,
        input: 784,
        outputs: 10,
        targets: Targets::Classes,
    };
    Trainer::from_data(&model, data, &train, 0).expect("trainer")
}

fn step(trainer: &mut Trainer) -> f64 {
    let info = trainer.step_gradients().expect("step");
    trainer.apply_update_unchecked(1.0).expect("update");
    info.loss
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

/// Wall clock per step inside a `ThreadPool` of each thread count, as `gradguard run` runs.
/// The 1-thread figure keeps the name it had before threads existed (`.../wall`).
fn wall(c: &mut Criterion) {
    for threads in bench_threads() {
        let pool = ThreadPool::new(NonZeroUsize::new(threads).expect("threads >= 1"))
            .expect("thread pool");
        let mut trainer = setup();
        let name = if threads == 1 {
            "mlp_784_256_256_10_b64_step/wall".to_string()
        } else {
            format!("mlp_784_256_256_10_b64_step/wall_{threads}threads")
        };
        c.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                pool.install(|| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(step(&mut trainer));
                    }
                    start.elapsed()
                })
            })
        });
    }
}

/// CPU time of the calling thread at 1 thread (the global rayon pool gets one worker, so every
/// product runs on this thread).
fn thread_cpu(c: &mut Criterion<ThreadCpu>) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    assert_eq!(rayon::current_num_threads(), 1);
    let mut trainer = setup();
    c.bench_function("mlp_784_256_256_10_b64_step/thread_cpu", |b| {
        b.iter(|| step(&mut trainer))
    });
}

criterion_group!(wall_group, wall);
criterion_group! {
    name = cpu_group;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = thread_cpu
}
criterion_main!(wall_group, cpu_group);
