//! Test helpers: synthetic step statistics without real tensors.

use gradguard_core::{ParamStats, ParamUpdate, Role, StepStats, UpdateStats};

/// One synthetic tensor: name, role, gradient norm, weight norm.
pub(crate) fn param(name: &str, role: Role, grad_norm: f64, weight_norm: f64) -> ParamStats {
    ParamStats {
        name: name.to_string(),
        role,
        numel: 4,
        grad_sum_sq: grad_norm * grad_norm,
        grad_norm,
        grad_max_abs: grad_norm,
        grad_nonfinite: (!grad_norm.is_finite()) as usize,
        weight_sum_sq: weight_norm * weight_norm,
        weight_nonfinite: (!weight_norm.is_finite()) as usize,
    }
}

/// Step statistics from tensors, with the totals refreshed.
pub(crate) fn stats(params: Vec<ParamStats>) -> StepStats {
    let mut s = StepStats {
        params,
        ..StepStats::default()
    };
    s.refresh_totals();
    s
}

/// An update with the given per-tensor ratios (weight norm 1, so update_norm = ratio).
pub(crate) fn update(step: u64, ratios: &[(&str, f64)]) -> UpdateStats {
    UpdateStats {
        step,
        lr: 0.1,
        params: ratios
            .iter()
            .map(|&(n, r)| ParamUpdate {
                name: n.to_string(),
                update_norm: r,
                weight_norm: 1.0,
                weight_nonfinite: (!r.is_finite()) as usize,
            })
            .collect(),
    }
}
