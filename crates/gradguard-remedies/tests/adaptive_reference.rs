//! `zclip` and `autoclip` step by step against an independent reference: the plain-Python
//! implementation of the published algorithms in `tests/fixtures/adaptive_clip_reference.py`,
//! whose output is checked in as `adaptive_clip_reference.json` (see docs/TESTING.md to
//! regenerate it). Each step feeds the norm as a one-value f32 gradient (its norm is exactly
//! that value) and compares the coefficient the remedy applied, and for ZClip the running mean
//! and variance, with the reference's.

use gradguard_remedies::{AutoClip, ZClip};
use gradguard_testkit::{run_remedy, OwnedParams};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/adaptive_clip_reference.json");
    serde_json::from_str(text).expect("fixture JSON")
}

/// Runs one step on a one-value gradient `norm`; returns the gradient after the remedy.
fn step(r: &mut dyn gradguard_core::Remedy, norm: f64, i: usize) -> f32 {
    let g = norm as f32;
    assert_eq!(g as f64, norm, "fixture norms are f32 values");
    let mut d = OwnedParams::new().with_grads("w", &[1], &[g]);
    let out = run_remedy(r, &mut d, i as u64 + 1, 1.0);
    assert!(out.applies_update(), "step {i}: {:?}", out.result);
    d.flat_grads()[0]
}

/// The gradient must be `norm * coef`: bit for bit when the reference does not clip, within
/// f32 rounding of the coefficient and of the product (2 * 2^-24) when it does.
fn check_coef(what: &str, i: usize, norm: f64, coef: f64, got: f32) {
    if coef == 1.0 {
        assert_eq!(
            got as f64, norm,
            "{what} step {i}: clipped, the reference did not"
        );
    } else {
        let expect = norm * coef;
        assert!(
            ((got as f64) - expect).abs() <= 2.5e-7 * expect,
            "{what} step {i}: gradient {got}, reference {expect} (coef {coef})"
        );
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) + 1e-300
}

#[test]
fn zclip_matches_the_reference_step_by_step() {
    let f = fixture();
    let scenarios = f["zclip"].as_array().expect("zclip scenarios");
    assert!(scenarios.len() >= 2);
    for (k, sc) in scenarios.iter().enumerate() {
        let mut r: ZClip = serde_json::from_value(serde_json::json!({
            "alpha": sc["alpha"],
            "z_thresh": sc["z_thresh"],
            "warmup_steps": sc["warmup_steps"],
            "max_grad_norm": sc["max_grad_norm"],
        }))
        .expect("zclip parameters");
        let what = format!("zclip scenario {k}");
        let (mut clipped, mut outliers) = (0, 0);
        for (i, s) in sc["steps"].as_array().unwrap().iter().enumerate() {
            let norm = s["norm"].as_f64().unwrap();
            let coef = s["coef"].as_f64().unwrap();
            let got = step(&mut r, norm, i);
            check_coef(&what, i, norm, coef, got);
            clipped += (coef < 1.0) as usize;
            outliers += s["clip_value"].is_f64() as usize;
            match (r.running(), s["mean"].as_f64(), s["var"].as_f64()) {
                (None, None, None) => {}
                (Some((m, v)), Some(rm), Some(rv)) => assert!(
                    close(m, rm) && close(v, rv),
                    "{what} step {i}: mean/var ({m}, {v}), reference ({rm}, {rv})"
                ),
                (got, rm, rv) => {
                    panic!("{what} step {i}: running {got:?}, reference {rm:?} {rv:?}")
                }
            }
        }
        // The scenario exercises clipping and the z-score path, so the test can fail.
        assert!(
            clipped >= 3 && outliers >= 3,
            "{what}: {clipped} clipped, {outliers} outliers"
        );
    }
}

#[test]
fn autoclip_matches_the_reference_step_by_step() {
    let f = fixture();
    let scenarios = f["autoclip"].as_array().expect("autoclip scenarios");
    assert!(scenarios.len() >= 2);
    for (k, sc) in scenarios.iter().enumerate() {
        let mut r = AutoClip::new(
            sc["percentile"].as_f64().unwrap(),
            sc["history"].as_u64().unwrap() as usize,
        );
        let what = format!("autoclip scenario {k}");
        let mut clipped = 0;
        for (i, s) in sc["steps"].as_array().unwrap().iter().enumerate() {
            let norm = s["norm"].as_f64().unwrap();
            let coef = s["coef"].as_f64().unwrap();
            let got = step(&mut r, norm, i);
            check_coef(&what, i, norm, coef, got);
            clipped += (coef < 1.0) as usize;
        }
        assert!(clipped >= 10, "{what}: only {clipped} clipped steps");
    }
}
