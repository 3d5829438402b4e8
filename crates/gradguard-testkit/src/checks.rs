//! Invariant checks for remedies: one case at a time (`check_*`) or over many random cases
//! (`assert_*`).

use gradguard_core::{ParamStats, Remedy, StepStats};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::data::{run_remedy, OwnedParams};
use crate::strategies::{params, params_with_nonfinite, ParamsConfig};

/// Number of random cases each `assert_*` function runs.
pub const CASES: u32 = 64;

/// Smallest normal f32: values below it may be flushed when scaled, which a tolerance allows for.
const TINY: f64 = f32::MIN_POSITIVE as f64;

fn run<S: Strategy>(what: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), String>) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, |v| test(v).map_err(TestCaseError::fail)) {
        panic!("{what}: {e}");
    }
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
}

fn compare_param(kept: &ParamStats, fresh: &ParamStats) -> Result<(), String> {
    let n = fresh.numel as f64;
    let ok = kept.grad_nonfinite == fresh.grad_nonfinite
        && close(
            kept.grad_sum_sq,
            fresh.grad_sum_sq,
            1e-5,
            4.0 * n * TINY * TINY,
        )
        && close(kept.grad_norm, fresh.grad_norm, 1e-5, 2.0 * n.sqrt() * TINY)
        && close(kept.grad_max_abs, fresh.grad_max_abs, 1e-5, 2.0 * TINY)
        && close(kept.weight_sum_sq, fresh.weight_sum_sq, 1e-12, 0.0)
        && kept.weight_nonfinite == fresh.weight_nonfinite;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "statistics of `{}` not kept true: remedy left {kept:?}, fresh measurement {fresh:?}",
            fresh.name
        ))
    }
}

/// Checks that `kept` (what a remedy left) matches `fresh` (a new measurement), within f32
/// rounding.
pub fn compare_stats(kept: &StepStats, fresh: &StepStats) -> Result<(), String> {
    if kept.params.len() != fresh.params.len() {
        return Err(format!(
            "statistics hold {} tensors, the view {}",
            kept.params.len(),
            fresh.params.len()
        ));
    }
    for (k, f) in kept.params.iter().zip(&fresh.params) {
        compare_param(k, f)?;
    }
    let n: f64 = fresh.params.iter().map(|p| p.numel as f64).sum();
    if kept.grad_nonfinite != fresh.grad_nonfinite
        || !close(kept.grad_norm, fresh.grad_norm, 1e-5, 2.0 * n.sqrt() * TINY)
        || !close(kept.grad_max_abs, fresh.grad_max_abs, 1e-5, 2.0 * TINY)
    {
        return Err(format!(
            "global statistics not kept true: norm {} vs fresh {}, max {} vs {}, non-finite {} vs {}",
            kept.grad_norm, fresh.grad_norm, kept.grad_max_abs, fresh.grad_max_abs, kept.grad_nonfinite, fresh.grad_nonfinite
        ));
    }
    Ok(())
}

fn same_layout(
    before: &OwnedParams,
    infos: &[gradguard_core::ParamInfo],
    after: &OwnedParams,
) -> Result<(), String> {
    if infos.len() != before.params.len() {
        return Err(format!(
            "view holds {} tensors after the remedy, {} before",
            infos.len(),
            before.params.len()
        ));
    }
    for ((b, i), a) in before.params.iter().zip(infos).zip(&after.params) {
        if b.name != i.name
            || b.shape != i.shape
            || b.role != i.role
            || a.grads.len() != b.grads.len()
        {
            return Err(format!(
                "tensor `{}` {:?} became `{}` {:?} with {} values",
                b.name,
                b.shape,
                i.name,
                i.shape,
                a.grads.len()
            ));
        }
    }
    Ok(())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    dot / (norm(a) * norm(b))
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// One step of `remedy` on `data`: names, shapes and roles unchanged; finite gradients (and
/// weights) in give finite gradients out; the statistics left behind match a fresh
/// measurement; `changed` is set when any gradient changed.
pub fn check_remedy_invariants<R: Remedy + ?Sized>(
    remedy: &mut R,
    data: &OwnedParams,
) -> Result<(), String> {
    let mut d = data.clone();
    let out = run_remedy(remedy, &mut d, 1, 1.0);
    same_layout(data, &out.infos, &d)?;
    let finite_in = data.grads_finite()
        && data
            .params
            .iter()
            .all(|p| p.weights.iter().all(|w| w.is_finite()));
    if finite_in && !d.grads_finite() {
        return Err(format!(
            "finite gradients in, non-finite out (result {:?})",
            out.result
        ));
    }
    if bits(&d.flat_grads()) != bits(&data.flat_grads()) && !out.changed {
        return Err("gradients changed but ctx.changed was not set".into());
    }
    compare_stats(&out.stats, &d.measure())
}

/// One step of `remedy` on gradients holding non-finite values: it must return an error,
/// withhold the update (skip, rollback or stop), or leave only finite gradients. Layout and
/// statistics are checked as in [`check_remedy_invariants`].
pub fn check_guards_nonfinite<R: Remedy + ?Sized>(
    remedy: &mut R,
    data: &OwnedParams,
) -> Result<(), String> {
    let mut d = data.clone();
    let out = run_remedy(remedy, &mut d, 1, 1.0);
    same_layout(data, &out.infos, &d)?;
    compare_stats(&out.stats, &d.measure())?;
    match &out.result {
        Err(_) => Ok(()),
        Ok(a) if a.withholds_update() => Ok(()),
        Ok(a) if !d.grads_finite() => {
            Err(format!("non-finite gradients passed on with action {a:?}"))
        }
        Ok(_) => Ok(()),
    }
}

fn applied(out: &crate::data::Outcome) -> Result<(), String> {
    if out.applies_update() {
        Ok(())
    } else {
        Err(format!(
            "finite gradients, but the remedy returned {:?}",
            out.result
        ))
    }
}

/// Relative tolerance of the two-sided checks: f32 rounding of each written value (2^-24) and
/// of an f32 coefficient (2^-24), with room to spare; a remedy that squares its coefficient or
/// stops short of the bound misses by far more.
pub const TWO_SIDED_REL: f64 = 1e-6;

/// The L2 norm PyTorch's `clip_grad_norm_` leaves for a total norm `t` and `max_norm`:
/// `t * min(1, max_norm / (t + 1e-6))`, i.e. `max_norm * t / (t + 1e-6)` once clipping starts.
pub fn expected_global_clip_norm(t: f64, max_norm: f64) -> f64 {
    t * (max_norm / (t + 1e-6)).min(1.0)
}

/// Global-norm clipping to `max_norm`, built by `make(max_norm)`. Two-sided: the clipped norm
/// equals [`expected_global_clip_norm`] (`max_norm * t / (t + 1e-6)` when the total norm `t`
/// exceeds `max_norm`, PyTorch's `clip_grad_norm_`) within [`TWO_SIDED_REL`], so a remedy that
/// clips too little *or too much* fails; the norm is also at most
/// `max_norm * (1 + 1e-5)`; the direction is kept (cosine 1 within 1e-6); a gradient whose
/// norm is at most `max_norm` is unchanged (within PyTorch's `1e-6 / max_norm` epsilon
/// effect); clipping twice changes nothing more (within the same epsilon); and it is
/// positively homogeneous: `clip_{a*m}(a*g) = a * clip_m(g)` for `a > 0`.
pub fn check_global_norm_clip<R: Remedy, F: Fn(f64) -> R>(
    make: F,
    data: &OwnedParams,
    max_norm: f64,
    a: f32,
) -> Result<(), String> {
    let g = data.flat_grads();
    let t = norm(&g);
    let mut d = data.clone();
    let out = run_remedy(&mut make(max_norm), &mut d, 1, 1.0);
    applied(&out)?;
    let c = d.flat_grads();
    let n = norm(&c);
    if n > max_norm * (1.0 + 1e-5) + 1e-30 {
        return Err(format!(
            "norm {n} after clipping exceeds max_norm {max_norm} (was {t})"
        ));
    }
    let expect = expected_global_clip_norm(t, max_norm);
    let slack = 2.0 * (c.len() as f64).sqrt() * TINY;
    if t.is_finite() && (n - expect).abs() > TWO_SIDED_REL * expect + slack {
        return Err(format!(
            "norm {n} after clipping, expected max_norm * t / (t + 1e-6) = {expect} (t = {t}, \
             max_norm = {max_norm}): {}",
            if n < expect {
                "over-clipped"
            } else {
                "under-clipped"
            }
        ));
    }
    if n > 0.0 && t > 0.0 && cosine(&g, &c) < 1.0 - 1e-6 {
        return Err(format!("direction changed: cosine {}", cosine(&g, &c)));
    }
    let eps_rel = 1e-6 / max_norm.max(1e-300) + 1e-6;
    if t <= max_norm && dist(&g, &c) > eps_rel * t {
        return Err(format!(
            "norm {t} <= max_norm {max_norm} but the gradient moved by {}",
            dist(&g, &c)
        ));
    }
    let mut d2 = d.clone();
    let out2 = run_remedy(&mut make(max_norm), &mut d2, 2, 1.0);
    applied(&out2)?;
    if dist(&d2.flat_grads(), &c) > (2.0 * eps_rel + 1e-5) * n {
        return Err(format!(
            "not idempotent: second clip moved the gradient by {}",
            dist(&d2.flat_grads(), &c)
        ));
    }
    let scaled = data.scaled(a);
    if scaled.grads_finite() {
        let mut ds = scaled.clone();
        let am = a as f64 * max_norm;
        let out3 = run_remedy(&mut make(am), &mut ds, 3, 1.0);
        applied(&out3)?;
        let expect: Vec<f32> = c.iter().map(|&x| x * a).collect();
        let tol = (1e-5 + 4e-6 / am.min(max_norm).max(1e-300)) * norm(&expect) + 1e-30;
        if dist(&ds.flat_grads(), &expect) > tol {
            return Err(format!(
                "not positively homogeneous for a = {a}: clip(a*g) differs from a*clip(g) by {}",
                dist(&ds.flat_grads(), &expect)
            ));
        }
    }
    check_remedy_invariants(&mut make(max_norm), data)
}

/// Per-tensor norm clipping to `c` (Keras' `clipnorm`, `g * c / max(||g||, c)`), built by
/// `make(c)`. Two-sided: every tensor whose norm exceeds `c` ends with norm `c` within
/// [`TWO_SIDED_REL`] (so a remedy that clips too much or too little fails), and every tensor's
/// norm is at most `c * (1 + 1e-5)`, the global norm at most `c * sqrt(K) * (1 + 1e-5)` for K
/// tensors, each tensor's direction is kept, and a tensor whose norm is at most `c` is
/// unchanged bit for bit.
pub fn check_per_tensor_clip<R: Remedy, F: Fn(f64) -> R>(
    make: F,
    data: &OwnedParams,
    c: f64,
) -> Result<(), String> {
    let mut d = data.clone();
    let out = run_remedy(&mut make(c), &mut d, 1, 1.0);
    applied(&out)?;
    for (b, a) in data.params.iter().zip(&d.params) {
        let (nb, na) = (norm(&b.grads), norm(&a.grads));
        if na > c * (1.0 + 1e-5) + 1e-30 {
            return Err(format!(
                "tensor `{}` has norm {na} > {c} after clipping",
                b.name
            ));
        }
        let slack = 2.0 * (b.grads.len() as f64).sqrt() * TINY;
        if nb > c && (na - c).abs() > TWO_SIDED_REL * c + slack {
            return Err(format!(
                "tensor `{}` had norm {nb} > {c} and was clipped to {na}, expected exactly {c}: {}",
                b.name,
                if na < c {
                    "over-clipped"
                } else {
                    "under-clipped"
                }
            ));
        }
        if nb <= c && bits(&a.grads) != bits(&b.grads) {
            return Err(format!(
                "tensor `{}` (norm {nb} <= {c}) was changed",
                b.name
            ));
        }
        if na > 0.0 && nb > 0.0 && cosine(&a.grads, &b.grads) < 1.0 - 1e-6 {
            return Err(format!("tensor `{}` changed direction", b.name));
        }
    }
    let k = data.params.len() as f64;
    if d.grad_norm() > c * k.sqrt() * (1.0 + 1e-5) + 1e-30 {
        return Err(format!(
            "global norm {} > c * sqrt(K) = {}",
            d.grad_norm(),
            c * k.sqrt()
        ));
    }
    check_remedy_invariants(&mut make(c), data)
}

/// Value clipping to `[-v, v]`, built by `make(v)` (`v > 0`). Two-sided: every value must equal
/// the clamp `min(max(g_i, -v), v)` bit for bit (with `v` as an f32), so values inside are
/// unchanged and values outside become exactly `±v` with their sign; clipping inside values,
/// or stopping short of `±v`, fails.
pub fn check_value_clip<R: Remedy, F: Fn(f64) -> R>(
    make: F,
    data: &OwnedParams,
    v: f64,
) -> Result<(), String> {
    let mut d = data.clone();
    let out = run_remedy(&mut make(v), &mut d, 1, 1.0);
    applied(&out)?;
    let lim = v as f32;
    for (x, y) in data.flat_grads().into_iter().zip(d.flat_grads()) {
        let expect = if x > lim {
            lim
        } else if x < -lim {
            -lim
        } else {
            x
        };
        if y.to_bits() != expect.to_bits() {
            return Err(format!(
                "value {x} clipped to {y}, expected {expect} (limit {v})"
            ));
        }
        if y.abs() > lim || (x != 0.0 && x.signum() != y.signum()) {
            return Err(format!("value {x} became {y}: bound or sign broken"));
        }
    }
    check_remedy_invariants(&mut make(v), data)
}

/// Unit-wise (AGC) clipping, built by `make(clip_factor, eps)`: for every unit u (one output
/// row, dim 0 of a tensor of rank >= 2; the whole tensor for rank <= 1), with
/// `max = clip_factor * max(||w_u||, eps)`: a unit whose norm exceeds `max` ends with norm
/// `max * ||g_u|| / max(||g_u||, 1e-6)` (Brock et al.'s `g * max / max(||g||, 1e-6)`) within
/// [`TWO_SIDED_REL`], so a remedy that clips too much fails as surely as one that clips too
/// little; units inside the bound are unchanged bit for bit; each unit keeps its direction.
pub fn check_unitwise_clip<R: Remedy, F: Fn(f64, f64) -> R>(
    make: F,
    data: &OwnedParams,
    clip_factor: f64,
    eps: f64,
) -> Result<(), String> {
    let mut d = data.clone();
    let out = run_remedy(&mut make(clip_factor, eps), &mut d, 1, 1.0);
    applied(&out)?;
    for (b, a) in data.params.iter().zip(&d.params) {
        let rows = if b.shape.len() >= 2 { b.shape[0] } else { 1 };
        let len = b.grads.len() / rows.max(1);
        for r in 0..rows {
            let s = r * len..(r + 1) * len;
            let (gb, ga, w) = (&b.grads[s.clone()], &a.grads[s.clone()], &b.weights[s]);
            let max = clip_factor * norm(w).max(eps);
            let (nb, na) = (norm(gb), norm(ga));
            if na > max * (1.0 + 1e-5) + 2.0 * (len as f64).sqrt() * TINY {
                return Err(format!("unit {r} of `{}`: ||g|| = {na} > {max}", b.name));
            }
            if nb > max && nb.is_finite() {
                let expect = max * nb / nb.max(1e-6);
                let slack = 2.0 * (len as f64).sqrt() * TINY;
                if (na - expect).abs() > TWO_SIDED_REL * expect + slack {
                    return Err(format!(
                        "unit {r} of `{}`: ||g|| = {nb} above the bound {max} became {na}, expected {expect} (over- or under-clipped)",
                        b.name
                    ));
                }
            }
            if nb <= max && bits(ga) != bits(gb) {
                return Err(format!(
                    "unit {r} of `{}` was inside the bound but changed",
                    b.name
                ));
            }
            if na > 0.0 && nb > 0.0 && cosine(ga, gb) < 1.0 - 1e-6 {
                return Err(format!("unit {r} of `{}` changed direction", b.name));
            }
        }
    }
    check_remedy_invariants(&mut make(clip_factor, eps), data)
}

/// Runs [`check_remedy_invariants`] on [`CASES`] random cases: each case runs three steps on
/// the same remedy, with the gradients scaled by 1, 8 and 0.5 (so stateful remedies are
/// exercised too). Panics with the smallest failing case.
pub fn assert_remedy_invariants<R: Remedy, F: Fn() -> R>(make: F) {
    run(
        "remedy invariants",
        params(ParamsConfig::default()),
        |data| {
            let mut r = make();
            for a in [1.0f32, 8.0, 0.5] {
                let step = data.scaled(a);
                if step.grads_finite() {
                    check_remedy_invariants(&mut r, &step)?;
                }
            }
            Ok(())
        },
    );
}

/// Runs [`check_guards_nonfinite`] on [`CASES`] random cases holding NaN/±inf gradients,
/// after one finite step on the same remedy. Panics with the smallest failing case.
pub fn assert_guards_nonfinite<R: Remedy, F: Fn() -> R>(make: F) {
    run(
        "non-finite guard",
        params_with_nonfinite(ParamsConfig::default()),
        |data| {
            let mut r = make();
            let mut finite = data.clone();
            for p in &mut finite.params {
                p.grads
                    .iter_mut()
                    .for_each(|g| *g = if g.is_finite() { *g } else { 0.0 });
            }
            let _ = run_remedy(&mut r, &mut finite, 1, 1.0);
            check_guards_nonfinite(&mut r, &data)
        },
    );
}

/// Runs [`check_global_norm_clip`] on [`CASES`] random cases with `max_norm` between 1e-3
/// and 1e3 times the gradient norm (at least 1e-3) and `a` between 0.01 and 100.
pub fn assert_global_norm_clip<R: Remedy, F: Fn(f64) -> R>(make: F) {
    run(
        "global-norm clipping",
        (params(ParamsConfig::default()), -3.0f64..3.0, -2.0f64..2.0),
        |(data, r, a)| {
            let m = (data.grad_norm() * 10f64.powf(r)).max(1e-3);
            check_global_norm_clip(&make, &data, m, 10f64.powf(a) as f32)
        },
    );
}

/// Runs [`check_per_tensor_clip`] on [`CASES`] random cases with `c` between 1e-3 and 1e3
/// times the largest tensor norm (at least 1e-3).
pub fn assert_per_tensor_clip<R: Remedy, F: Fn(f64) -> R>(make: F) {
    run(
        "per-tensor clipping",
        (params(ParamsConfig::default()), -3.0f64..3.0),
        |(data, r)| {
            let largest = data
                .params
                .iter()
                .map(|p| norm(&p.grads))
                .fold(0.0, f64::max);
            check_per_tensor_clip(&make, &data, (largest * 10f64.powf(r)).max(1e-3))
        },
    );
}

/// Runs [`check_value_clip`] on [`CASES`] random cases with `v` between 1e-3 and 1e3 times the
/// largest |g| (at least 1e-30), and sometimes exactly one of the values.
pub fn assert_value_clip<R: Remedy, F: Fn(f64) -> R>(make: F) {
    run(
        "value clipping",
        (params(ParamsConfig::default()), -3.0f64..3.0, any::<bool>()),
        |(data, r, exact)| {
            let g = data.flat_grads();
            let largest = g.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
            let v = match g.iter().find(|x| **x != 0.0) {
                Some(x) if exact => x.abs() as f64,
                _ => (largest * 10f64.powf(r)).max(1e-30),
            };
            check_value_clip(&make, &data, v)
        },
    );
}

/// Runs [`check_unitwise_clip`] on [`CASES`] random cases with `clip_factor` between 1e-3 and
/// 1 and `eps` of 1e-3 or 1e-6.
pub fn assert_unitwise_clip<R: Remedy, F: Fn(f64, f64) -> R>(make: F) {
    run(
        "unit-wise clipping",
        (params(ParamsConfig::default()), -3.0f64..0.0, any::<bool>()),
        |(data, cf, e)| {
            check_unitwise_clip(&make, &data, 10f64.powf(cf), if e { 1e-3 } else { 1e-6 })
        },
    );
}
