//! Per-step cost of the default detectors, of one recurrent-radius check, and of the
//! diagnoser, on the reference shapes (an MLP 20-25-1 and a 2-layer LSTM with H = 128).
//!
//! Run: `cargo bench -p gradguard-detectors --bench detectors`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gradguard_core::{
    Event, Observation, ParamStats, ParamUpdate, Role, Series, SeriesAxis, StepStats, UpdateStats,
};
use gradguard_detectors::linalg::Scratch;
use gradguard_detectors::recurrent_radius_above_one::measure_recurrent;
use gradguard_detectors::{default_detectors, Diagnoser};

fn tensors(names: &[(&str, Role)]) -> (StepStats, UpdateStats) {
    let params: Vec<ParamStats> = names
        .iter()
        .enumerate()
        .map(|(i, (n, r))| ParamStats {
            name: n.to_string(),
            role: *r,
            numel: 100,
            grad_sum_sq: 0.25,
            grad_norm: 0.5 + 0.01 * i as f64,
            grad_max_abs: 0.1,
            grad_nonfinite: 0,
            weight_sum_sq: 4.0,
            weight_nonfinite: 0,
        })
        .collect();
    let mut stats = StepStats {
        params,
        ..Default::default()
    };
    stats.refresh_totals();
    let update = UpdateStats {
        step: 1,
        lr: 0.01,
        params: names
            .iter()
            .map(|(n, _)| ParamUpdate {
                name: n.to_string(),
                update_norm: 2e-3,
                weight_norm: 2.0,
                weight_nonfinite: 0,
            })
            .collect(),
        withheld: None,
    };
    (stats, update)
}

fn bench_detectors(c: &mut Criterion, label: &str, names: &[(&str, Role)], series: &[Series]) {
    let (mut stats, update) = tensors(names);
    let mut detectors = default_detectors();
    let mut findings = Vec::new();
    let mut step = 0u64;
    c.bench_function(label, |b| {
        b.iter(|| {
            step += 1;
            // A healthy, slowly varying run.
            stats.grad_norm = 1.0 + 0.05 * ((step % 17) as f64);
            let mut obs = Observation::new(step, 1.0 / (1.0 + step as f64 * 1e-3), &stats);
            obs.update = Some(&update);
            obs.series = series;
            findings.clear();
            for d in detectors.iter_mut() {
                d.observe(black_box(&obs), &mut findings);
            }
            black_box(findings.len())
        })
    });
}

fn detectors(c: &mut Criterion) {
    let mlp = [
        ("layers.0.weight", Role::Weight),
        ("layers.0.bias", Role::Bias),
        ("layers.1.weight", Role::Weight),
        ("layers.1.bias", Role::Bias),
    ];
    bench_detectors(c, "default_detectors_step/mlp_20_25_1", &mlp, &[]);
    let lstm = [
        ("lstm.0.weight_ih", Role::Weight),
        ("lstm.0.weight_hh", Role::RecurrentWeight),
        ("lstm.0.bias_ih", Role::Bias),
        ("lstm.0.bias_hh", Role::Bias),
        ("lstm.1.weight_ih", Role::Weight),
        ("lstm.1.weight_hh", Role::RecurrentWeight),
        ("lstm.1.bias_ih", Role::Bias),
        ("lstm.1.bias_hh", Role::Bias),
        ("head.weight", Role::Weight),
        ("head.bias", Role::Bias),
    ];
    let series = [Series {
        name: "lstm.1 dL/dh_t".into(),
        axis: SeriesAxis::TimeSteps,
        values: (0..50).map(|t| 1.0 + 0.01 * t as f64).collect(),
    }];
    bench_detectors(c, "default_detectors_step/lstm_2x128_t50", &lstm, &series);

    let h = 128;
    let values: Vec<f32> = (0..4 * h * h)
        .map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) / (h as f32).sqrt())
        .collect();
    let mut scratch = Scratch::default();
    c.bench_function(
        "recurrent_radius_check/lstm_weight_hh_512x128_40_iterations",
        |b| {
            b.iter(|| {
                black_box(measure_recurrent(
                    &[4 * h, h],
                    black_box(&values),
                    40,
                    &mut scratch,
                ))
            })
        },
    );

    let (stats, update) = tensors(&lstm);
    let mut event = Event::from_stats(1, 1.0, &stats, Some(&update));
    event.series = series.to_vec();
    let mut diagnoser = Diagnoser::default();
    c.bench_function("diagnoser_observe_event/lstm_2x128", |b| {
        b.iter(|| {
            event.step += 1;
            diagnoser.observe_event(black_box(&event));
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = detectors
}
criterion_main!(benches);
