//! The Guard driven by a plain loop over `Vec<f32>` (no framework at all): linear regression
//! trained by hand-written SGD, with every action honoured.

use gradguard_core::{Action, ParamView, Remedy, Role, RunInfo, UpdateStats};
use gradguard_detectors::{default_detectors, RunFigures};
use gradguard_engine::{Guard, GuardError, HostError, NoCheckpoints, StepInput, TrainingHost};
use gradguard_remedies::{ClipGlobalNorm, Rollback, SkipNonfinite};

/// y = 2 x0 - 3 x1 + 1 on a fixed batch; loss = mean squared error / 2.
fn loss_and_grad(w: &[f32], b: f32, poison: bool) -> (f64, Vec<f32>, f32) {
    let xs: [[f32; 2]; 4] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]];
    let mut gw = vec![0.0f32; 2];
    let mut gb = 0.0f32;
    let mut loss = 0.0f64;
    for x in xs {
        let y = 2.0 * x[0] - 3.0 * x[1] + 1.0;
        let mut x0 = x[0];
        if poison {
            x0 = f32::NAN;
        }
        let e = w[0] * x0 + w[1] * x[1] + b - y;
        loss += (e * e) as f64 / 8.0;
        gw[0] += e * x0 / 4.0;
        gw[1] += e * x[1] / 4.0;
        gb += e / 4.0;
    }
    (loss, gw, gb)
}

struct VecHost<'a> {
    w: &'a mut Vec<f32>,
    b: &'a mut f32,
    ring: &'a mut Vec<(u64, Vec<f32>, f32)>,
    step: u64,
    skipped: &'a mut u64,
}

impl TrainingHost for VecHost<'_> {
    fn snapshot(&mut self, keep: usize) -> Result<(), HostError> {
        self.ring.push((self.step, self.w.clone(), *self.b));
        while self.ring.len() > keep {
            self.ring.remove(0);
        }
        Ok(())
    }
    fn restore_newest(&mut self) -> Result<Option<u64>, HostError> {
        Ok(self.ring.last().map(|(s, w, b)| {
            self.w.clone_from(w);
            *self.b = *b;
            *s
        }))
    }
    fn skip_batches(&mut self, n: u64) {
        *self.skipped += n;
    }
}

fn info() -> RunInfo {
    RunInfo {
        name: "slices".into(),
        seed: 0,
        out_dir: std::env::temp_dir(),
        params: Vec::new(),
        clip_threshold: None,
    }
}

#[test]
fn a_plain_loop_trains_clips_and_rolls_back_a_poisoned_batch() {
    let mut rollback = Rollback::default();
    rollback.every = 5;
    rollback.skip_batches = 2;
    let remedies: Vec<Box<dyn Remedy>> =
        vec![Box::new(ClipGlobalNorm::new(1.0)), Box::new(rollback)];
    let mut guard = Guard::new(default_detectors(), remedies, Vec::new());
    assert_eq!(guard.clip_threshold(), Some(1.0));
    let (mut w, mut b) = (vec![0.0f32; 2], 0.0f32);
    let (mut ring, mut skipped) = (Vec::new(), 0u64);
    guard
        .start(
            info(),
            &mut VecHost {
                w: &mut w,
                b: &mut b,
                ring: &mut ring,
                step: 0,
                skipped: &mut skipped,
            },
        )
        .expect("start");
    assert_eq!(ring.len(), 1, "the first snapshot is taken at start");
    let shape_w = [2usize];
    let shape_b = [1usize];
    let (mut clipped, mut rolled) = (0, None);
    let mut w_at_rollback = Vec::new();
    for step in 1..=500u64 {
        let (loss, mut gw, gb) = loss_and_grad(&w, b, step == 40);
        let mut gbv = [gb];
        let d = {
            let mut view = ParamView::new();
            view.push("w", &shape_w, Role::Weight, &w, &mut gw)
                .expect("w");
            let bv = [b];
            view.push("b", &shape_b, Role::Bias, &bv, &mut gbv)
                .expect("b");
            guard.step(
                StepInput {
                    step,
                    loss,
                    lr: Some(0.3),
                    ..StepInput::default()
                },
                &mut view,
            )
        };
        if d.grad_norm_after < d.grad_norm_before {
            clipped += 1;
            assert!(d.grad_norm_after <= 1.0 + 1e-6);
            // The remedy edited the loop's own buffers in place.
            let n =
                ((gw[0] as f64).powi(2) + (gw[1] as f64).powi(2) + (gbv[0] as f64).powi(2)).sqrt();
            assert!(
                (n - d.grad_norm_after).abs() < 1e-5,
                "{n} vs {}",
                d.grad_norm_after
            );
        }
        let update = if d.apply {
            let before = [w.clone(), vec![b]];
            let lr = 0.3 * d.lr_scale as f32;
            w[0] -= lr * gw[0];
            w[1] -= lr * gw[1];
            b -= lr * gbv[0];
            let after = [w.clone(), vec![b]];
            Some(UpdateStats::measure(
                step,
                0.1,
                &["w", "b"],
                &[&before[0], &before[1]],
                &[&after[0], &after[1]],
            ))
        } else {
            assert!(
                matches!(d.action, Action::Rollback { .. }),
                "{:?}",
                d.action
            );
            w_at_rollback = w.clone();
            None
        };
        let end = guard
            .after_update(
                update,
                &mut VecHost {
                    w: &mut w,
                    b: &mut b,
                    ring: &mut ring,
                    step,
                    skipped: &mut skipped,
                },
            )
            .expect("after");
        if let Some(to) = end.rolled_back_to {
            rolled = Some((step, to));
        }
        assert_eq!(end.stop, None);
    }
    let (at, to) = rolled.expect("the poisoned batch at step 40 is rolled back");
    assert_eq!(at, 40);
    assert_eq!(to, 35, "the newest snapshot: every 5 good steps");
    assert_eq!(skipped, 2);
    assert!(w_at_rollback.iter().all(|v| v.is_finite()));
    assert!(clipped > 0, "the early gradients exceed 1 and are clipped");
    assert!(
        (w[0] - 2.0).abs() < 1e-3 && (w[1] + 3.0).abs() < 1e-3 && (b - 1.0).abs() < 1e-3,
        "{w:?} {b}"
    );
    assert_eq!(guard.steps(), 500);
    let event = guard.last_event().expect("event");
    assert_eq!(event.step, 500);
    guard.finish(&RunFigures::default()).expect("finish");
}

#[test]
fn without_snapshots_a_rollback_ends_the_run_and_says_why() {
    let remedies: Vec<Box<dyn Remedy>> = vec![Box::new(Rollback::default())];
    let mut guard = Guard::new(default_detectors(), remedies, Vec::new());
    guard.start(info(), &mut NoCheckpoints).expect("start");
    let (mut gw, mut gb) = (vec![f32::NAN, 1.0], [0.5f32]);
    let (w, b) = ([0.0f32; 2], [0.0f32]);
    let mut view = ParamView::new();
    view.push("w", &[2], Role::Weight, &w, &mut gw).expect("w");
    view.push("b", &[1], Role::Bias, &b, &mut gb).expect("b");
    let d = guard.step(
        StepInput {
            step: 1,
            loss: 1.0,
            ..StepInput::default()
        },
        &mut view,
    );
    assert!(!d.apply);
    let end = guard.after_update(None, &mut NoCheckpoints).expect("after");
    let why = end.stop.expect("stop");
    assert!(why.contains("no checkpoint is kept"), "{why}");
}

#[test]
fn a_non_finite_step_is_skipped_and_out_of_order_calls_are_refused() {
    let remedies: Vec<Box<dyn Remedy>> = vec![Box::new(SkipNonfinite::default())];
    let mut guard = Guard::new(default_detectors(), remedies, Vec::new());
    assert!(matches!(
        guard.after_update(None, &mut NoCheckpoints),
        Err(GuardError::Order(_))
    ));
    let mut g = vec![1.0f32, f32::INFINITY];
    let w = [0.0f32; 2];
    let mut view = ParamView::new();
    view.push("w", &[2], Role::Weight, &w, &mut g).expect("w");
    let d = guard.step(
        StepInput {
            step: 1,
            loss: 0.5,
            ..StepInput::default()
        },
        &mut view,
    );
    assert!(matches!(d.action, Action::SkipStep { .. }));
    assert!(!d.apply && !d.stop());
    guard.after_update(None, &mut NoCheckpoints).expect("after");
    let e = guard.last_event().expect("event");
    assert!(!e.applied);
    assert_eq!(e.actions.len(), 1);
    assert_eq!(e.actions[0].remedy, "skip_nonfinite");
}
