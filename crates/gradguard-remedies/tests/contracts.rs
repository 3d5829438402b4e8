//! What every remedy promises beyond its formula, checked over all of them at once: it refuses
//! step statistics that do not describe its view, it refuses invalid parameters in
//! `validate` (so `gradguard check` catches them before a run), it declares the global-norm
//! threshold that charts draw, and `reset` forgets its state. Each row was found by
//! `scripts/mutants.sh` (docs/TESTING.md): a mutant that removed the check survived before.

use gradguard_core::{Action, Remedy, RemedyContext, Role, StepStats};
use gradguard_remedies::{SkipNonfinite, ZClip};
use gradguard_testkit::{run_remedy, OwnedParams};

fn remedy(json: &str) -> Box<dyn Remedy> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// The clipping remedies that check the statistics against the view before reading them.
const MEASURING: [&str; 8] = [
    r#"{"kind":"clip_global_norm","max_norm":1}"#,
    r#"{"kind":"clip_norm","max_norm":1}"#,
    r#"{"kind":"clip_value","clip_value":1}"#,
    r#"{"kind":"zclip","max_grad_norm":1}"#,
    r#"{"kind":"autoclip"}"#,
    r#"{"kind":"agc"}"#,
    r#"{"kind":"l2","l2":0.1}"#,
    r#"{"kind":"l1","l1":0.1}"#,
];

#[test]
fn statistics_that_do_not_describe_the_view_are_refused() {
    for json in MEASURING {
        let mut r = remedy(json);
        let mut d = OwnedParams::new()
            .with("a", &[2], Role::Weight, &[1.0, 1.0], &[3.0, 4.0])
            .with("b", &[1], Role::Bias, &[1.0], &[5.0]);
        let before = d.flat_grads();
        let mut view = d.view();
        // Statistics of nothing, for a view of two tensors.
        let mut stats = StepStats::default();
        let mut ctx = RemedyContext::new(1, 1.0, &mut view, &mut stats);
        let e = r.apply(&mut ctx).expect_err(json).to_string();
        assert!(
            e.contains("describe 0 tensor(s) but the view holds 2"),
            "{json}: {e}"
        );
        drop(view);
        assert_eq!(d.flat_grads(), before, "{json} wrote before refusing");
    }
}

#[test]
fn invalid_parameters_fail_validate() {
    // Each deserialises (the types fit) and must be refused by `validate`.
    for json in [
        r#"{"kind":"clip_global_norm","max_norm":-1}"#,
        r#"{"kind":"clip_norm","max_norm":0}"#,
        r#"{"kind":"clip_value","clip_value":-0.5}"#,
        r#"{"kind":"zclip","z_thresh":0}"#,
        r#"{"kind":"zclip","alpha":1.0}"#,
        r#"{"kind":"zclip","alpha":-0.1}"#,
        r#"{"kind":"zclip","max_grad_norm":-1}"#,
        r#"{"kind":"agc","clip_factor":0}"#,
        r#"{"kind":"agc","eps":-1}"#,
    ] {
        assert!(remedy(json).validate().is_err(), "{json} passed validate");
    }
    // ... and the boundaries that are allowed.
    for json in [
        r#"{"kind":"clip_value","clip_value":0}"#,
        r#"{"kind":"zclip","alpha":0}"#,
        r#"{"kind":"zclip","max_grad_norm":0}"#,
        r#"{"kind":"agc","eps":0}"#,
    ] {
        let r = remedy(json);
        assert!(r.validate().is_ok(), "{json}: {:?}", r.validate());
    }
}

#[test]
fn clip_thresholds_are_global_norm_bounds_only() {
    // Charts draw `clip_threshold` as a line on the global-norm axis: only remedies whose
    // bound is on the global norm declare one.
    for (json, want) in [
        (r#"{"kind":"clip_global_norm","max_norm":1.5}"#, Some(1.5)),
        (r#"{"kind":"zclip","max_grad_norm":2.5}"#, Some(2.5)),
        (r#"{"kind":"zclip"}"#, None),
        (r#"{"kind":"clip_norm","max_norm":1.5}"#, None),
        (r#"{"kind":"clip_value","clip_value":1.5}"#, None),
        (r#"{"kind":"agc","clip_factor":0.5}"#, None),
    ] {
        assert_eq!(remedy(json).clip_threshold(), want, "{json}");
    }
}

#[test]
fn skip_nonfinite_reset_forgets_the_bad_steps_in_a_row() {
    let mut r: SkipNonfinite = serde_json::from_str(r#"{"max_consecutive":1}"#).unwrap();
    let mut bad = OwnedParams::new().with_grads("a", &[1], &[f32::NAN]);
    let out = run_remedy(&mut r, &mut bad, 1, 1.0);
    assert!(matches!(out.result, Ok(Action::SkipStep { .. })));
    assert_eq!(r.consecutive(), 1);
    r.reset();
    assert_eq!(r.consecutive(), 0);
    // After the reset the next bad step is a first one again: skipped, not escalated.
    let out = run_remedy(&mut r, &mut bad, 2, 1.0);
    assert!(
        matches!(out.result, Ok(Action::SkipStep { .. })),
        "{:?}",
        out.result
    );
}

#[test]
fn zclip_exactly_at_the_z_threshold_does_not_clip() {
    // ZClip clips when z > z_thresh (strict). Warm up on norms 1 and 3 (mean 2, population
    // variance 1), then choose z_thresh equal to the next step's z, computed as zclip does:
    // z = (n - mean) / (std + 1e-6). The step must be left alone.
    let n = 5.0f32;
    let z = (n as f64 - 2.0) / (1.0f64.sqrt() + 1e-6);
    let zclip = |z_thresh: f64| -> ZClip {
        serde_json::from_value(serde_json::json!({"z_thresh": z_thresh, "warmup_steps": 2}))
            .unwrap()
    };
    let mut r = zclip(z);
    for (step, g) in [(1, 1.0f32), (2, 3.0)] {
        let mut d = OwnedParams::new().with_grads("a", &[1], &[g]);
        run_remedy(&mut r, &mut d, step, 1.0);
    }
    let mut d = OwnedParams::new().with_grads("a", &[1], &[n]);
    let out = run_remedy(&mut r, &mut d, 3, 1.0);
    assert_eq!(d.flat_grads(), vec![n]);
    assert!(!out.changed);
    // With z_thresh one ULP below this step's z, the same step is clipped.
    let mut below = zclip(z.next_down());
    for (step, g) in [(1, 1.0f32), (2, 3.0)] {
        let mut d = OwnedParams::new().with_grads("a", &[1], &[g]);
        run_remedy(&mut below, &mut d, step, 1.0);
    }
    let mut d = OwnedParams::new().with_grads("a", &[1], &[n]);
    let out = run_remedy(&mut below, &mut d, 3, 1.0);
    assert!(out.changed && d.flat_grads()[0] < n, "{:?}", d.flat_grads());
}
