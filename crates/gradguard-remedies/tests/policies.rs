//! Every clipping remedy under every `on_nonfinite` policy, with NaN and with +inf in the
//! gradients: `skip_step` withholds the update and leaves the gradients untouched, `error`
//! names the tensor and the step, `zero` equals the same remedy run on the gradients with the
//! non-finite values set to 0 by hand, and `propagate` does what the followed framework does
//! (values hand-computed below). Then the testkit's `assert_guards_nonfinite` runs under every
//! policy: it passes for `skip_step`, `error` and `zero`, and rejects `propagate`, which lets
//! non-finite values through by design.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gradguard_core::{Action, Remedy, Role};
use gradguard_remedies::{Agc, AutoClip, ClipGlobalNorm, ClipNorm, ClipValue, ZClip};
use gradguard_testkit::{assert_guards_nonfinite, run_remedy, OwnedParams};
use serde::de::DeserializeOwned;

const POLICIES: [&str; 4] = ["skip_step", "error", "zero", "propagate"];

/// The six clipping remedies as spec JSON, without `on_nonfinite`. zclip has a cap so that
/// `propagate` clips (PyTorch's clip to `max_grad_norm`).
const REMEDIES: [(&str, &str); 6] = [
    ("clip_global_norm", r#""max_norm":1"#),
    ("clip_norm", r#""max_norm":1"#),
    ("clip_value", r#""clip_value":2"#),
    ("zclip", r#""max_grad_norm":1,"warmup_steps":3"#),
    ("autoclip", r#""percentile":50,"history":10"#),
    ("agc", r#""clip_factor":0.01,"eps":0.001"#),
];

fn remedy(kind: &str, params: &str, policy: &str) -> Box<dyn Remedy> {
    serde_json::from_str(&format!(
        r#"{{"kind":"{kind}",{params},"on_nonfinite":"{policy}"}}"#
    ))
    .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// `a` [2, 2] (AGC units: rows (bad, 3) and (4, 0.5)), `b` [2] = (6, 8); weights all 1.
fn data(bad: f32) -> OwnedParams {
    OwnedParams::new()
        .with("a", &[2, 2], Role::Weight, &[1.0; 4], &[bad, 3.0, 4.0, 0.5])
        .with("b", &[2], Role::Bias, &[1.0; 2], &[6.0, 8.0])
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// One finite step first, so that autoclip has a history (and zclip has started warm-up).
fn warm(r: &mut dyn Remedy) {
    let mut d = data(0.0);
    let out = run_remedy(r, &mut d, 1, 1.0);
    assert!(out.applies_update(), "{:?}", out.result);
}

#[test]
fn skip_step_error_and_zero_for_every_remedy() {
    for (kind, params) in REMEDIES {
        for bad in [f32::NAN, f32::INFINITY] {
            // skip_step: update withheld, gradients untouched bit for bit.
            let mut r = remedy(kind, params, "skip_step");
            warm(r.as_mut());
            let mut d = data(bad);
            let out = run_remedy(r.as_mut(), &mut d, 4, 1.0);
            assert!(
                matches!(out.result, Ok(Action::SkipStep { .. })),
                "{kind} {bad}: {:?}",
                out.result
            );
            assert_eq!(
                bits(&d.flat_grads()),
                bits(&data(bad).flat_grads()),
                "{kind}"
            );
            assert!(!out.changed, "{kind}");

            // error: names the first tensor holding the value, and the step.
            let mut r = remedy(kind, params, "error");
            warm(r.as_mut());
            let e = run_remedy(r.as_mut(), &mut data(bad), 4, 1.0)
                .result
                .expect_err(kind)
                .to_string();
            assert!(
                e.contains("`a`") && e.contains("step 4") && e.contains(kind),
                "{kind}: {e}"
            );

            // zero: the same as zeroing by hand, then running the same remedy.
            let mut r = remedy(kind, params, "zero");
            let mut reference = remedy(kind, params, "zero");
            warm(r.as_mut());
            warm(reference.as_mut());
            let mut d = data(bad);
            let out = run_remedy(r.as_mut(), &mut d, 4, 1.0);
            let mut by_hand = data(0.0);
            let expect = run_remedy(reference.as_mut(), &mut by_hand, 4, 1.0);
            assert_eq!(out.result.unwrap(), Action::Continue, "{kind}");
            assert!(expect.applies_update());
            assert!(d.grads_finite(), "{kind}: {:?}", d.flat_grads());
            assert_eq!(bits(&d.flat_grads()), bits(&by_hand.flat_grads()), "{kind}");
            assert!(out.changed, "{kind}");
            assert_eq!(out.stats.grad_nonfinite, 0, "{kind}");
        }
    }
}

/// Runs `kind` under `propagate` on `data(bad)` after one finite step.
fn propagate(kind: &str, bad: f32) -> (Vec<f32>, Action) {
    let params = REMEDIES.iter().find(|(k, _)| *k == kind).unwrap().1;
    let mut r = remedy(kind, params, "propagate");
    warm(r.as_mut());
    let mut d = data(bad);
    let out = run_remedy(r.as_mut(), &mut d, 4, 1.0);
    (d.flat_grads(), out.result.expect(kind))
}

#[test]
fn propagate_follows_the_frameworks_with_inf() {
    let inf = f32::INFINITY;
    // PyTorch clip_grad_norm_ (and zclip's cap, and autoclip's clip): total inf, coef =
    // max_norm / (inf + 1e-6) = 0: finite entries 0, inf * 0 = NaN.
    for kind in ["clip_global_norm", "zclip", "autoclip"] {
        let (g, a) = propagate(kind, inf);
        assert_eq!(a, Action::Continue);
        assert!(g[0].is_nan(), "{kind}: {g:?}");
        assert!(g[1..].iter().all(|&x| x == 0.0), "{kind}: {g:?}");
    }
    // Keras clipnorm per tensor: `a` has norm inf (f = 1 / inf = 0: (NaN, 0, 0, 0)); `b`
    // (norm 10) is clipped to norm 1 on its own: (0.6, 0.8).
    let (g, _) = propagate("clip_norm", inf);
    assert!(g[0].is_nan() && g[1..4] == [0.0, 0.0, 0.0], "{g:?}");
    assert_eq!(g[4..], [6.0 * 0.1f32, 8.0 * 0.1f32]);
    // clamp: inf becomes the limit 2, every value ends in [-2, 2].
    let (g, _) = propagate("clip_value", inf);
    assert_eq!(g, vec![2.0, 2.0, 2.0, 0.5, 2.0, 2.0]);
    // timm AGC per unit: row (inf, 3) has norm inf: f = 0.01 * sqrt(2) / inf = 0 -> (NaN, 0);
    // row (4, 0.5) and `b` are clipped to norm 0.01 * sqrt(2) each.
    let (g, _) = propagate("agc", inf);
    assert!(g[0].is_nan() && g[1] == 0.0, "{g:?}");
    let bound = 0.01 * 2f64.sqrt();
    assert!(
        (norm(&g[2..4]) - bound).abs() < 1e-7 * bound * 10.0,
        "{g:?}"
    );
    assert!((norm(&g[4..]) - bound).abs() < 1e-7 * bound * 10.0, "{g:?}");
}

#[test]
fn propagate_follows_the_frameworks_with_nan() {
    let nan = f32::NAN;
    // A NaN total makes the coefficient NaN: every entry NaN.
    for kind in ["clip_global_norm", "zclip", "autoclip"] {
        let (g, _) = propagate(kind, nan);
        assert!(g.iter().all(|x| x.is_nan()), "{kind}: {g:?}");
    }
    // Keras per tensor: max(NaN, c) keeps NaN, so all of `a` becomes NaN; `b` is clipped to 1.
    let (g, _) = propagate("clip_norm", nan);
    assert!(g[..4].iter().all(|x| x.is_nan()), "{g:?}");
    assert_eq!(g[4..], [6.0 * 0.1f32, 8.0 * 0.1f32]);
    // clamp lets NaN through and clamps the rest.
    let (g, _) = propagate("clip_value", nan);
    assert!(g[0].is_nan());
    assert_eq!(g[1..], [2.0, 2.0, 0.5, 2.0, 2.0]);
    // timm: `where(NaN < max, g, g * max / NaN)` takes the NaN branch: the unit is NaN; the
    // other units are clipped as usual.
    let (g, _) = propagate("agc", nan);
    assert!(g[0].is_nan() && g[1].is_nan(), "{g:?}");
    assert!(g[2..].iter().all(|x| x.is_finite()), "{g:?}");
}

#[test]
fn zclip_without_cap_leaves_nonfinite_alone_under_propagate() {
    let mut r: ZClip =
        serde_json::from_str(r#"{"warmup_steps":3,"on_nonfinite":"propagate"}"#).unwrap();
    warm(&mut r);
    let mut d = data(f32::INFINITY);
    let out = run_remedy(&mut r, &mut d, 4, 1.0);
    assert_eq!(out.result.unwrap(), Action::Continue);
    assert!(!out.changed);
    assert_eq!(
        bits(&d.flat_grads()),
        bits(&data(f32::INFINITY).flat_grads())
    );
}

fn typed<R: DeserializeOwned>(params: &str, policy: &str) -> R {
    serde_json::from_str(&format!(r#"{{{params},"on_nonfinite":"{policy}"}}"#)).unwrap()
}

/// The testkit guard under one policy: `Ok` when it passed, `Err(message)` when it rejected.
fn guard<R: Remedy + DeserializeOwned>(
    params: &'static str,
    policy: &'static str,
) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| {
        assert_guards_nonfinite(|| typed::<R>(params, policy))
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "panic".into())
    })
}

#[test]
fn testkit_guard_under_every_policy() {
    let mut rejected = Vec::new();
    for policy in POLICIES {
        let results = [
            (
                "clip_global_norm",
                guard::<ClipGlobalNorm>(REMEDIES[0].1, policy),
            ),
            ("clip_norm", guard::<ClipNorm>(REMEDIES[1].1, policy)),
            ("clip_value", guard::<ClipValue>(REMEDIES[2].1, policy)),
            ("zclip", guard::<ZClip>(REMEDIES[3].1, policy)),
            ("autoclip", guard::<AutoClip>(REMEDIES[4].1, policy)),
            ("agc", guard::<Agc>(REMEDIES[5].1, policy)),
        ];
        for (kind, result) in results {
            if policy == "propagate" {
                // propagate passes NaN/inf on by design: the guard must notice.
                let e = result.expect_err(kind);
                assert!(e.contains("non-finite gradients passed on"), "{kind}: {e}");
                rejected.push(kind);
            } else {
                result.unwrap_or_else(|e| panic!("{kind} under {policy}: {e}"));
            }
        }
    }
    assert_eq!(rejected.len(), 6);
}
