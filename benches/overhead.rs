//! What gradguard adds to a training step: the fused statistics pass, every default
//! detector, a clipping remedy and the events line (`gradguard_work`), against the bare step
//! (forward, backward, update) of the same model (`bare_step`). Overhead = work / bare step.
//!
//! The gradients' statistics can be taken in the backward pass, as it writes each gradient
//! (`Trainer::set_measure_grads_in_backward`, off by default): `bare_step` runs with that
//! off, `step_measuring_grads` with it on, so their difference is what measuring in the
//! backward adds to the step; `gradguard_work` and `stats_pass_only` here use those
//! statistics. `stats_pass_reading_grads` is the statistics pass that reads the gradients
//! (the default).
//!
//! The `cpu/` rows time the same things in CPU time of the bench thread
//! (`CLOCK_THREAD_CPUTIME_ID`), which other processes on a loaded machine do not inflate;
//! `cpu/backward_measuring_extra` alternates steps with measuring on and off and averages
//! the paired differences (what measuring in the backward adds to a step).
//!
//! Run: `cargo bench --bench overhead` (release, 1 thread). Shapes: MLP 784-256-256-10 with
//! batch 64; LSTM hidden 128 over 50 steps with batch 32 (the adding task, input 2).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gradguard::core::{
    Action, Detector, Event, Finding, Observation, ParamView, RemedyContext, Series, StepStats,
    UpdateStats,
};
use gradguard::detectors::default_detectors;
use gradguard::models::spec::{ModelSpec, TaskSpec, TrainSpec};
use gradguard::models::Trainer;
use gradguard::remedies::ClipGlobalNorm;
use gradguard_core::Remedy;

fn trainer(model: &str, task: &str, train: &str) -> Trainer {
    let model: ModelSpec = toml::from_str(model).expect("model");
    let task: TaskSpec = toml::from_str(task).expect("task");
    let train: TrainSpec = toml::from_str(train).expect("train");
    Trainer::new(&model, &task, &train, 0).expect("trainer")
}

fn shapes() -> Vec<(&'static str, Trainer)> {
    vec![
        (
            "mlp_784_256_256_10_b64",
            trainer(
                "kind = \"mlp\"\nhidden = [256, 256]\n",
                "kind = \"regression\"\nn_samples = 4096\nn_features = 784\nn_informative = 784\nn_targets = 10\n",
                "batch_size = 64\nsteps = 1000000000\noptimizer = { kind = \"sgd\", lr = 1e-6 }\n",
            ),
        ),
        (
            "lstm_h128_t50_b32",
            trainer(
                "kind = \"lstm\"\nhidden = 128\n",
                "kind = \"adding\"\nseq_len = 50\nn_samples = 2048\n",
                "batch_size = 32\nsteps = 1000000000\noptimizer = { kind = \"sgd\", lr = 1e-4 }\n",
            ),
        ),
    ]
}

/// CPU time consumed by this thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One training step (gradients, then the update).
fn train_step(t: &mut Trainer) -> f64 {
    let info = t.step_gradients().expect("step");
    black_box(t.apply_update_unchecked(1.0).expect("update"));
    info.loss
}

/// What measuring the gradients in the backward adds to a step, in CPU time of this thread:
/// steps with measuring on and off alternate, and the paired differences are averaged (a
/// difference can be negative, which criterion cannot report, so this prints its own line:
/// mean ± standard error, and the median). Fewer pairs under `--test`.
fn backward_measuring_extra(name: &str, t: &mut Trainer) {
    // criterion's filter (a non-numeric free argument) applies to this line too
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        return;
    }
    let pairs = if std::env::args().any(|a| a == "--test") {
        2
    } else {
        400
    };
    let mut diffs: Vec<f64> = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let mut pair = [0.0f64; 2];
        for (slot, measure) in [(0, true), (1, false)] {
            t.set_measure_grads_in_backward(measure);
            let start = thread_cpu();
            black_box(train_step(t));
            pair[slot] = (thread_cpu() - start).as_secs_f64();
        }
        diffs.push(pair[0] - pair[1]);
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    diffs.sort_by(f64::total_cmp);
    let median = diffs[diffs.len() / 2];
    println!(
        "overhead/{name}/cpu/backward_measuring_extra: mean {:.2} us +- {:.2} us (standard error), median {:.2} us, {pairs} pairs",
        mean * 1e6,
        (var / n).sqrt() * 1e6,
        median * 1e6
    );
}

/// One step's inputs to the detectors and the remedy.
struct StepWork<'a> {
    step: u64,
    loss: f64,
    update: Option<&'a UpdateStats>,
    series: &'a [Series],
    findings: &'a mut Vec<Finding>,
}

impl StepWork<'_> {
    /// Every detector on the step's observation, then the clipping remedy (as the loop runs them).
    fn detect_and_clip(
        &mut self,
        detectors: &mut [Box<dyn Detector>],
        clip: &mut ClipGlobalNorm,
        view: &mut ParamView<'_>,
        stats: &mut StepStats,
    ) -> Action {
        self.findings.clear();
        let obs = Observation {
            step: self.step,
            loss: self.loss,
            stats,
            update: self.update,
            view: Some(view),
            series: self.series,
        };
        for d in detectors.iter_mut() {
            d.observe(&obs, self.findings);
        }
        let mut ctx = RemedyContext::new(self.step, self.loss, view, stats);
        clip.apply(&mut ctx).expect("clip")
    }
}

fn overhead(c: &mut Criterion) {
    gradguard::models::tune_allocator();
    let mut group = c.benchmark_group("overhead");
    group.sample_size(30);
    for (name, mut t) in shapes() {
        // the two steps alternate in one run, so that load changes hit both alike
        for (label, measure) in [("bare_step", false), ("step_measuring_grads", true)] {
            t.set_measure_grads_in_backward(measure);
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    let info = t.step_gradients().expect("step");
                    black_box(t.apply_update_unchecked(1.0).expect("update"));
                    black_box(info.loss)
                })
            });
        }
        t.set_measure_grads_in_backward(true);
        for (label, measure) in [("bare_step", false), ("step_measuring_grads", true)] {
            t.set_measure_grads_in_backward(measure);
            group.bench_function(format!("{name}/cpu/{label}"), |b| {
                b.iter_custom(|iters| {
                    let start = thread_cpu();
                    for _ in 0..iters {
                        black_box(train_step(&mut t));
                    }
                    thread_cpu() - start
                })
            });
        }
        backward_measuring_extra(name, &mut t);
        t.set_measure_grads_in_backward(true);
        // gradguard's own work on one step's gradients, timed apart from the training step
        // (the difference of two noisy step timings is noisier than the work itself).
        let info = t.step_gradients().expect("step");
        let mut detectors = default_detectors();
        let mut clip = ClipGlobalNorm::new(1e9);
        let mut stats = StepStats::default();
        let mut findings: Vec<Finding> = Vec::new();
        let last: Option<UpdateStats> = Some(t.apply_update_unchecked(0.0).expect("update"));
        let _ = t.step_gradients().expect("step");
        let mut line: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut step = 1u64;
        group.bench_function(format!("{name}/gradguard_work"), |b| {
            b.iter(|| {
                step += 1;
                let series = t.series();
                {
                    let mut view = t.view().expect("view");
                    stats.measure_into(&view);
                    let mut step_work = StepWork {
                        step,
                        loss: info.loss,
                        update: last.as_ref(),
                        series: &series,
                        findings: &mut findings,
                    };
                    black_box(step_work.detect_and_clip(
                        &mut detectors,
                        &mut clip,
                        &mut view,
                        &mut stats,
                    ));
                }
                let mut event = Event::from_stats(step, info.loss, &stats, last.as_ref());
                event.series = series;
                line.clear();
                serde_json::to_writer(&mut line, &event).expect("json");
                black_box(line.len())
            })
        });
        // The parts of `gradguard_work`, to see where its time goes.
        let series = t.series();
        group.bench_function(format!("{name}/detectors_and_clip_only"), |b| {
            let mut view = t.view().expect("view");
            stats.measure_into(&view);
            b.iter(|| {
                step += 1;
                let mut step_work = StepWork {
                    step,
                    loss: info.loss,
                    update: last.as_ref(),
                    series: &series,
                    findings: &mut findings,
                };
                black_box(step_work.detect_and_clip(
                    &mut detectors,
                    &mut clip,
                    &mut view,
                    &mut stats,
                ))
            })
        });
        group.bench_function(format!("{name}/series_and_events_line_only"), |b| {
            b.iter(|| {
                let mut event = Event::from_stats(step, info.loss, &stats, last.as_ref());
                event.series = t.series();
                line.clear();
                serde_json::to_writer(&mut line, &event).expect("json");
                black_box(line.len())
            })
        });
        group.bench_function(format!("{name}/stats_pass_only"), |b| {
            b.iter(|| {
                let view = t.view().expect("view");
                stats.measure_into(&view);
                black_box(stats.grad_norm)
            })
        });
        // the same pass on gradients that the backward did not measure (read again)
        t.set_measure_grads_in_backward(false);
        let _ = t.step_gradients().expect("step");
        group.bench_function(format!("{name}/stats_pass_reading_grads"), |b| {
            b.iter(|| {
                let view = t.view().expect("view");
                stats.measure_into(&view);
                black_box(stats.grad_norm)
            })
        });
        t.set_measure_grads_in_backward(true);
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
