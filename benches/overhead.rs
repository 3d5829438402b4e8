//! What gradguard adds to a training step: the fused statistics pass, every default
//! detector, a clipping remedy and the events line (`gradguard_work`), against the bare step
//! (forward, backward, update) of the same model (`bare_step`). Overhead = work / bare step.
//!
//! Run: `cargo bench --bench overhead` (release, 1 thread). Shapes: MLP 784-256-256-10 with
//! batch 64; LSTM hidden 128 over 50 steps with batch 32 (the adding task, input 2).

use std::hint::black_box;

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
        group.bench_function(format!("{name}/bare_step"), |b| {
            b.iter(|| {
                let info = t.step_gradients().expect("step");
                black_box(t.apply_update(1.0).expect("update"));
                black_box(info.loss)
            })
        });
        // gradguard's own work on one step's gradients, timed apart from the training step
        // (the difference of two noisy step timings is noisier than the work itself).
        let info = t.step_gradients().expect("step");
        let mut detectors = default_detectors();
        let mut clip = ClipGlobalNorm::new(1e9);
        let mut stats = StepStats::default();
        let mut findings: Vec<Finding> = Vec::new();
        let last: Option<UpdateStats> = Some(t.apply_update(0.0).expect("update"));
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
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
