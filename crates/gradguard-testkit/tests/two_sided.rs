//! Self-tests of the testkit's two-sided clipping checks: a correct remedy passes, and a remedy
//! that over-clips (squares its coefficient, or clamps short of the limit) or under-clips
//! (takes the square root of its coefficient, or clamps past the limit) is rejected, both by the
//! one-case `check_*` functions and by the random `assert_*` runners.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gradguard_core::{Action, Remedy, RemedyContext, RemedyError, TensorEdit};
use gradguard_testkit::{
    assert_global_norm_clip, assert_per_tensor_clip, assert_value_clip, check_global_norm_clip,
    check_per_tensor_clip, check_value_clip, expected_global_clip_norm, OwnedParams,
};
use serde::{Deserialize, Serialize};

/// Global-norm clipping whose coefficient `coef = max_norm / (t + 1e-6)`, when below 1, is
/// raised to `power`: 1 is PyTorch's `clip_grad_norm_`, 2 over-clips, 0.5 under-clips.
#[derive(Serialize, Deserialize)]
struct GlobalClip {
    max_norm: f64,
    power: f64,
}

#[typetag::serde(name = "testkit_selftest_global")]
impl Remedy for GlobalClip {
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        let coef = self.max_norm / (ctx.stats().grad_norm + 1e-6);
        if coef < 1.0 {
            let f = coef.powf(self.power) as f32;
            ctx.scale_all(f as f64);
        }
        Ok(Action::Continue)
    }
}

/// Per-tensor clipping `g * (c / max(||g||, c))^power`: 1 is Keras' `clipnorm`.
#[derive(Serialize, Deserialize)]
struct PerTensorClip {
    c: f64,
    power: f64,
}

#[typetag::serde(name = "testkit_selftest_per_tensor")]
impl Remedy for PerTensorClip {
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        let (c, power) = (self.c, self.power);
        ctx.edit_each(|s, _| {
            let n = s.grad_norm;
            if n > c {
                TensorEdit::Scale((c / n).powf(power) as f32 as f64)
            } else {
                TensorEdit::Keep
            }
        });
        Ok(Action::Continue)
    }
}

/// Value clipping to `[-v * k, v * k]`: `k = 1` is the clamp, `k < 1` over-clips, `k > 1`
/// under-clips.
#[derive(Serialize, Deserialize)]
struct ValueClip {
    v: f64,
    k: f64,
}

#[typetag::serde(name = "testkit_selftest_value")]
impl Remedy for ValueClip {
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        let lim = (self.v * self.k) as f32;
        ctx.edit_each(|_, p| {
            let before: Vec<u32> = p.grads.iter().map(|g| g.to_bits()).collect();
            p.grads.iter_mut().for_each(|g| *g = g.clamp(-lim, lim));
            if p.grads.iter().map(|g| g.to_bits()).ne(before) {
                TensorEdit::Edited
            } else {
                TensorEdit::Keep
            }
        });
        Ok(Action::Continue)
    }
}

/// ||(3, 4)|| = 5 and ||(12)|| = 12: total 13.
fn data() -> OwnedParams {
    OwnedParams::new()
        .with_grads("a", &[2], &[3.0, 4.0])
        .with_grads("b", &[1], &[12.0])
}

fn rejected(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("the check accepted a wrong remedy");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn expected_global_norm_is_torch_formula() {
    // t = 13, max_norm = 1: 1 * 13 / 13.000001; below the bound nothing changes.
    assert_eq!(expected_global_clip_norm(13.0, 1.0), 13.0 / (13.0 + 1e-6));
    assert_eq!(expected_global_clip_norm(0.5, 1.0), 0.5);
}

#[test]
fn global_norm_clip_is_two_sided() {
    let correct = |m| GlobalClip {
        max_norm: m,
        power: 1.0,
    };
    check_global_norm_clip(correct, &data(), 1.0, 2.0).expect("PyTorch's formula passes");
    // coef = 1 / 13.000001 squared: norm 1/13, far below 13 / 13.000001.
    let e = check_global_norm_clip(
        |m| GlobalClip {
            max_norm: m,
            power: 2.0,
        },
        &data(),
        1.0,
        2.0,
    )
    .unwrap_err();
    assert!(e.contains("over-clipped"), "{e}");
    // sqrt(coef): norm sqrt(13) > 1.
    let e = check_global_norm_clip(
        |m| GlobalClip {
            max_norm: m,
            power: 0.5,
        },
        &data(),
        1.0,
        2.0,
    )
    .unwrap_err();
    assert!(e.contains("exceeds max_norm"), "{e}");
    // Just above the bound (t = 13, max_norm = 12.9): coef 0.992, its square 0.985 is 0.8%
    // short, which the old one-sided check (norm <= max_norm) let through.
    let e = check_global_norm_clip(
        |m| GlobalClip {
            max_norm: m,
            power: 2.0,
        },
        &data(),
        12.9,
        1.0,
    )
    .unwrap_err();
    assert!(e.contains("over-clipped"), "{e}");

    assert_global_norm_clip(correct);
    let msg = rejected(|| {
        assert_global_norm_clip(|m| GlobalClip {
            max_norm: m,
            power: 2.0,
        })
    });
    assert!(msg.contains("global-norm clipping"), "{msg}");
    rejected(|| {
        assert_global_norm_clip(|m| GlobalClip {
            max_norm: m,
            power: 0.5,
        })
    });
}

#[test]
fn per_tensor_clip_is_two_sided() {
    let correct = |c| PerTensorClip { c, power: 1.0 };
    // c = 4: `a` (norm 5) and `b` (norm 12) must both end at norm 4.
    check_per_tensor_clip(correct, &data(), 4.0).expect("Keras' clipnorm passes");
    let e = check_per_tensor_clip(|c| PerTensorClip { c, power: 2.0 }, &data(), 4.0).unwrap_err();
    assert!(e.contains("over-clipped"), "{e}");
    let e = check_per_tensor_clip(|c| PerTensorClip { c, power: 0.5 }, &data(), 4.0).unwrap_err();
    assert!(e.contains("norm") && e.contains("> 4"), "{e}");

    assert_per_tensor_clip(correct);
    rejected(|| assert_per_tensor_clip(|c| PerTensorClip { c, power: 2.0 }));
    rejected(|| assert_per_tensor_clip(|c| PerTensorClip { c, power: 0.5 }));
}

#[test]
fn value_clip_is_two_sided() {
    let correct = |v| ValueClip { v, k: 1.0 };
    check_value_clip(correct, &data(), 4.0).expect("the clamp passes");
    let e = check_value_clip(|v| ValueClip { v, k: 0.99 }, &data(), 4.0).unwrap_err();
    assert!(e.contains("expected 4"), "{e}");
    let e = check_value_clip(|v| ValueClip { v, k: 1.01 }, &data(), 4.0).unwrap_err();
    assert!(e.contains("expected 4"), "{e}");

    assert_value_clip(correct);
    rejected(|| assert_value_clip(|v| ValueClip { v, k: 0.99 }));
    rejected(|| assert_value_clip(|v| ValueClip { v, k: 1.01 }));
}

/// Writes the gradients inside `edit_each` but says it kept them: the statistics the step
/// leaves behind no longer describe the gradients.
#[derive(Serialize, Deserialize)]
struct LiesAboutItsEdit;

#[typetag::serde(name = "testkit_selftest_liar")]
impl Remedy for LiesAboutItsEdit {
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        ctx.edit_each(|_, p| {
            p.grads.iter_mut().for_each(|g| *g *= 0.5);
            TensorEdit::Keep
        });
        Ok(Action::Continue)
    }
}

#[test]
fn a_remedy_that_desynchronises_the_statistics_is_caught() {
    let e = gradguard_testkit::check_remedy_invariants(&mut LiesAboutItsEdit, &data())
        .expect_err("a remedy that edits behind the statistics must fail");
    assert!(e.contains("changed") || e.contains("stat"), "{e}");
    let msg = rejected(|| gradguard_testkit::assert_remedy_invariants(|| LiesAboutItsEdit));
    assert!(!msg.is_empty());
}

/// Unit-wise clipping `g_u * (max / ||g_u||)^power` with `max = c * max(||w_u||, eps)`: 1 is
/// AGC, 2 over-clips, 0.5 under-clips.
#[derive(Serialize, Deserialize)]
struct UnitClip {
    c: f64,
    eps: f64,
    power: f64,
}

#[typetag::serde(name = "testkit_selftest_unitwise")]
impl Remedy for UnitClip {
    fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        let (c, eps, power) = (self.c, self.eps, self.power);
        ctx.edit_each(|_, p| {
            let rows = if p.shape.len() >= 2 { p.shape[0] } else { 1 };
            let len = p.grads.len() / rows.max(1);
            if len == 0 {
                return TensorEdit::Keep;
            }
            let mut touched = false;
            for (g, w) in p
                .grads
                .chunks_exact_mut(len)
                .zip(p.weights.chunks_exact(len))
            {
                let gn = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                let wn = w.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                let max = c * wn.max(eps);
                if gn > max {
                    let f = (max / gn).powf(power) as f32;
                    g.iter_mut().for_each(|x| *x *= f);
                    touched = true;
                }
            }
            if touched {
                TensorEdit::Edited
            } else {
                TensorEdit::Keep
            }
        });
        Ok(Action::Continue)
    }
}

#[test]
fn unitwise_clip_is_two_sided() {
    // One unit per row of a [2, 2] weight: row 0 g = (3, 4), w = (1, 0): max = 0.1, clipped;
    // row 1 g = (0.01, 0), w = (1, 0): inside the bound, unchanged.
    let data = OwnedParams::new().with(
        "w",
        &[2, 2],
        gradguard_core::Role::Weight,
        &[1.0, 0.0, 1.0, 0.0],
        &[3.0, 4.0, 0.01, 0.0],
    );
    let make = |power: f64| move |c: f64, eps: f64| UnitClip { c, eps, power };
    gradguard_testkit::check_unitwise_clip(make(1.0), &data, 0.1, 1e-3).expect("AGC passes");
    let over = gradguard_testkit::check_unitwise_clip(make(2.0), &data, 0.1, 1e-3)
        .expect_err("over-clipping is rejected");
    assert!(over.contains("over- or under-clipped"), "{over}");
    let under = gradguard_testkit::check_unitwise_clip(make(0.5), &data, 0.1, 1e-3)
        .expect_err("under-clipping is rejected");
    assert!(
        under.contains("above the bound") || under.contains(">"),
        "{under}"
    );
}
