//! The Guard's checks around the update (issue 12, item 7): nothing non-finite is applied.
//! - after the last remedy: gradients a remedy made non-finite skip the step; non-finite
//!   gradients from the backward pass that no remedy withheld skip the step and stop the run;
//! - after the update: an update the optimiser withheld (`UpdateStats::withheld`) is recorded
//!   as not applied, with a `weights_nonfinite` finding naming the tensor.

use gradguard_core::{Action, ParamView, Remedy, Role, RunInfo, Sign, UpdateStats, WithheldUpdate};
use gradguard_detectors::default_detectors;
use gradguard_engine::{Guard, NoCheckpoints, StepInput, POST_REMEDY_CHECK, UPDATE_CHECK};
use gradguard_remedies::ClipGlobalNorm;

fn info() -> RunInfo {
    RunInfo {
        name: "checks".into(),
        seed: 0,
        out_dir: std::env::temp_dir(),
        params: Vec::new(),
        clip_threshold: None,
    }
}

fn remedy(json: &str) -> Box<dyn Remedy> {
    // links the remedies' registrations
    let _ = ClipGlobalNorm::new(1.0);
    serde_json::from_str(json).expect("remedy")
}

fn guard(remedies: Vec<Box<dyn Remedy>>) -> Guard {
    let mut g = Guard::new(default_detectors(), remedies, Vec::new());
    g.start(info(), &mut NoCheckpoints).expect("start");
    g
}

fn input(step: u64) -> StepInput {
    StepInput {
        step,
        loss: 1.0,
        lr: Some(0.1),
        ..Default::default()
    }
}

/// `clip_global_norm` (max 1) then `l2 = 1e300`: gradients [3, 4] with weights [1, 1] are
/// clipped to [0.6, 0.8], then 2·1e300·w overflows f32 to inf. The step is skipped by the
/// post-remedy check, not stopped, and the after-norm is infinite.
#[test]
fn a_penalty_that_makes_clipped_gradients_infinite_is_withheld() {
    let mut g = guard(vec![
        remedy(r#"{"kind":"clip_global_norm","max_norm":1.0}"#),
        remedy(r#"{"kind":"l2","l2":1e300}"#),
    ]);
    let (w, mut gr) = (vec![1.0f32, 1.0], vec![3.0f32, 4.0]);
    let d = {
        let mut v = ParamView::new();
        v.push("dense.weight", &[2], Role::Weight, &w, &mut gr)
            .unwrap();
        g.step(input(1), &mut v)
    };
    assert_eq!(d.grad_norm_before, 5.0);
    assert!(d.grad_norm_after.is_infinite(), "{}", d.grad_norm_after);
    assert!(!d.apply);
    assert!(
        matches!(d.action, Action::SkipStep { .. }),
        "{:?}",
        d.action
    );
    let end = g.after_update(None, &mut NoCheckpoints).unwrap();
    assert_eq!(end.stop, None);
    let e = g.last_event().unwrap();
    assert!(!e.applied);
    assert!(e.actions.iter().any(|a| a.remedy == POST_REMEDY_CHECK));
}

/// With no remedy, a NaN gradient from the backward pass is not applied (PyTorch would): the
/// step is withheld, the run stops, and the detectors' `grad_nonfinite` names the tensor.
#[test]
fn backward_nonfinite_with_no_remedy_is_withheld_and_stops_the_run() {
    let mut g = guard(Vec::new());
    let (w, mut gr) = (vec![1.0f32, 1.0], vec![f32::NAN, 4.0]);
    let d = {
        let mut v = ParamView::new();
        v.push("dense.weight", &[2], Role::Weight, &w, &mut gr)
            .unwrap();
        g.step(input(1), &mut v)
    };
    assert!(!d.apply);
    assert!(d.stop(), "{:?}", d.action);
    let end = g.after_update(None, &mut NoCheckpoints).unwrap();
    let why = end.stop.expect("stopped");
    assert!(
        why.contains("non-finite gradient values came out of the backward pass"),
        "{why}"
    );
    let e = g.last_event().unwrap();
    assert!(!e.applied);
    assert!(e.actions.iter().any(|a| a.remedy == POST_REMEDY_CHECK));
    assert!(e
        .findings
        .iter()
        .any(|f| f.sign == Sign::GradNonfinite && f.layer.as_deref() == Some("dense.weight")));
}

/// A remedy that withholds non-finite gradients itself (clip_global_norm's default
/// `on_nonfinite = "skip_step"`) keeps its own action: the run goes on.
#[test]
fn a_remedy_that_withholds_backward_nonfinite_keeps_the_run_going() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
    )]);
    let (w, mut gr) = (vec![1.0f32, 1.0], vec![f32::INFINITY, 4.0]);
    let d = {
        let mut v = ParamView::new();
        v.push("dense.weight", &[2], Role::Weight, &w, &mut gr)
            .unwrap();
        g.step(input(1), &mut v)
    };
    assert!(!d.apply && !d.stop(), "{:?}", d.action);
    let end = g.after_update(None, &mut NoCheckpoints).unwrap();
    assert_eq!(end.stop, None);
    let e = g.last_event().unwrap();
    assert!(!e.actions.iter().any(|a| a.remedy == POST_REMEDY_CHECK));
}

/// An update the optimiser withheld (finite gradients, an overflowing learning rate) is
/// recorded as not applied, with a `weights_nonfinite` finding on the tensor and an
/// `update_check` action; the next step sees no last update.
#[test]
fn an_update_the_optimiser_withheld_is_recorded_with_a_finding() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
    )]);
    let (w, mut gr) = (vec![1.0f32, 1.0], vec![0.3f32, 0.4]);
    let d = {
        let mut v = ParamView::new();
        v.push("dense.weight", &[2], Role::Weight, &w, &mut gr)
            .unwrap();
        g.step(input(1), &mut v)
    };
    assert!(d.apply);
    let withheld = UpdateStats {
        step: 0,
        lr: 1e39,
        params: Vec::new(),
        withheld: Some(WithheldUpdate {
            param: "dense.weight".into(),
            nonfinite_weights: 2,
            nonfinite_state: 0,
        }),
    };
    let end = g.after_update(Some(withheld), &mut NoCheckpoints).unwrap();
    assert_eq!(end.stop, None);
    let e = g.last_event().unwrap();
    assert!(!e.applied);
    let f = e
        .findings
        .iter()
        .find(|f| f.sign == Sign::WeightsNonfinite)
        .expect("finding");
    assert_eq!((f.layer.as_deref(), f.value), (Some("dense.weight"), 2.0));
    assert!(f.message.contains("withheld"), "{}", f.message);
    assert!(e.actions.iter().any(|a| a.remedy == UPDATE_CHECK));
}
