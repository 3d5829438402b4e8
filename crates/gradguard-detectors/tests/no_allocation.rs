//! The default detectors and the diagnoser allocate nothing per step once warmed up, in a
//! healthy run (findings allocate only when they fire). Checked with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use gradguard_core::{
    Event, Observation, ParamStats, ParamUpdate, ParamView, Role, Series, SeriesAxis, StepStats,
    UpdateStats,
};
use gradguard_detectors::{default_detectors, Diagnoser};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = COUNT.try_with(|n| n.set(n.get() + 1));
            }
        });
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNT.with(|n| n.get()))
}

#[test]
fn healthy_steps_allocate_nothing() {
    let names = [
        ("rnn.0.weight_ih", Role::Weight),
        ("rnn.0.weight_hh", Role::RecurrentWeight),
        ("rnn.0.bias_ih", Role::Bias),
        ("rnn.0.bias_hh", Role::Bias),
        ("head.weight", Role::Weight),
        ("head.bias", Role::Bias),
    ];
    let mut stats = StepStats {
        params: names
            .iter()
            .map(|(n, r)| ParamStats {
                name: n.to_string(),
                role: *r,
                numel: 64,
                grad_sum_sq: 0.25,
                grad_norm: 0.5,
                grad_max_abs: 0.1,
                grad_nonfinite: 0,
                weight_sum_sq: 4.0,
                weight_nonfinite: 0,
            })
            .collect(),
        ..Default::default()
    };
    stats.refresh_totals();
    let update = UpdateStats {
        step: 0,
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
    let series = [Series {
        name: "rnn.0 dL/dh_t".into(),
        axis: SeriesAxis::TimeSteps,
        values: vec![1.0; 30],
    }];
    // A live 8x8 recurrent weight with radius 0.5 (the radius detector runs at steps 1, 201, ...).
    let n = 8;
    let whh: Vec<f32> = (0..n * n)
        .map(|i| if i % (n + 1) == 0 { 0.5 } else { 0.0 })
        .collect();
    let mut g = vec![0.0f32; n * n];
    let shape = [n, n];
    let mut view = ParamView::new();
    view.push(
        "rnn.0.weight_hh",
        &shape,
        Role::RecurrentWeight,
        &whh,
        &mut g,
    )
    .unwrap();

    let mut detectors = default_detectors();
    let mut diagnoser = Diagnoser::default();
    let mut findings = Vec::with_capacity(16);
    let mut event = Event::from_stats(1, 1.0, &stats, Some(&update));
    event.series = series.to_vec();
    let mut run_step =
        |step: u64, stats: &mut StepStats, event: &mut Event, findings: &mut Vec<_>| {
            stats.grad_norm = 1.0 + 0.01 * (step % 7) as f64;
            let loss = 1.0 / (1.0 + 1e-3 * step as f64);
            let mut obs = Observation::new(step, loss, stats);
            obs.update = (step > 1).then_some(&update);
            obs.series = &series;
            obs.view = Some(&view);
            findings.clear();
            for d in detectors.iter_mut() {
                d.observe(&obs, findings);
            }
            event.step = step;
            event.loss = loss;
            diagnoser.observe_event(event);
        };
    // Warm-up: buffers reach their size (spike window of 50, first radius check at step 1).
    for step in 1..=60 {
        run_step(step, &mut stats, &mut event, &mut findings);
    }
    assert!(findings.is_empty(), "{findings:?}");
    let ((), allocations) = counted(|| {
        for step in 61..=400 {
            run_step(step, &mut stats, &mut event, &mut findings);
        }
    });
    assert!(findings.is_empty(), "{findings:?}");
    // Steps 61..400 include a radius check at step 201.
    assert_eq!(allocations, 0, "allocations in 340 healthy steps");
}
