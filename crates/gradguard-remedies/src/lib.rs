//! # gradguard-remedies: cures for exploding gradients
//!
//! Every remedy is a [`gradguard_core::Remedy`] registered with typetag under a snake_case
//! `kind`, in its own file whose doc states the formula, the parameters with their defaults,
//! and which framework's behaviour it follows. Remedies read the step's
//! [`gradguard_core::StepStats`] (norms are measured once per step) and keep them true after
//! changing gradients.
//!
//! | kind | what | follows |
//! |---|---|---|
//! | [`clip_global_norm`](clip_global_norm::ClipGlobalNorm) | clip the norm of all gradients together | PyTorch `clip_grad_norm_` |
//! | [`clip_norm`](clip_norm::ClipNorm) | clip each tensor's norm on its own | Keras `clipnorm` |
//! | [`clip_value`](clip_value::ClipValue) | clamp every value to [-v, v] | Keras `clipvalue`, PyTorch `clip_grad_value_` |
//! | [`agc`](agc::Agc) | unit-wise clipping against the weight norm | timm `adaptive_clip_grad` |
//! | [`autoclip`](autoclip::AutoClip) | clip to a percentile of past norms | AutoClip (Seetharaman et al. 2020) |
//! | [`zclip`](zclip::ZClip) | clip z-score outliers of the norm | ZClip (Kumar et al. 2025) |
//! | [`l1`](penalty::L1), [`l2`](penalty::L2), [`l1_l2`](penalty::L1L2) | weight penalties | Keras `kernel_regularizer` |
//! | [`skip_nonfinite`](skip_nonfinite::SkipNonfinite) | skip non-finite steps, escalate after a run of them | optax `apply_if_finite`, without its give-up |
//! | [`skip_spike`](skip_spike::SkipSpike) | skip steps whose loss or norm is an outlier | OLMo-core `SkipStepOptimizer`, NaN-robust |
//! | [`lr_backoff`](lr_backoff::LrBackoff) | scale the learning rate down after a finding | — |
//! | [`rollback`](rollback::Rollback) | restore the last good checkpoint and skip batches | PaLM's manual recipe |
//!
//! The clipping remedies share [`NonFinitePolicy`] (`on_nonfinite`). The slice kernels live in
//! [`kernels`]. Gradient dumps on disk (`gradguard grads`) are the `gradguard-dump` crate's.

#![warn(missing_docs)]

pub mod agc;
pub mod autoclip;
pub mod clip_global_norm;
pub mod clip_norm;
pub mod clip_value;
pub mod kernels;
pub mod lr_backoff;
pub mod nonfinite;
pub mod penalty;
pub mod rollback;
pub mod skip_nonfinite;
pub mod skip_spike;
pub mod zclip;

pub use agc::Agc;
pub use autoclip::AutoClip;
pub use clip_global_norm::{ClipGlobalNorm, NormType};
pub use clip_norm::ClipNorm;
pub use clip_value::ClipValue;
pub use lr_backoff::LrBackoff;
pub use nonfinite::NonFinitePolicy;
pub use penalty::{L1, L1L2, L2};
pub use rollback::{Escalation, Rollback};
pub use skip_nonfinite::SkipNonfinite;
pub use skip_spike::SkipSpike;
pub use zclip::ZClip;

/// Every remedy kind this crate registers (the facade calls this so the linker keeps them).
pub fn builtin_kinds() -> &'static [&'static str] {
    &[
        "agc",
        "autoclip",
        "clip_global_norm",
        "clip_norm",
        "clip_value",
        "l1",
        "l1_l2",
        "l2",
        "lr_backoff",
        "rollback",
        "skip_nonfinite",
        "skip_spike",
        "zclip",
    ]
}

#[cfg(test)]
mod tests {
    use gradguard_core::Family;

    #[test]
    fn documented_defaults_are_the_ones_serde_fills_in() {
        // `gradguard plugins` and the README print these defaults: each must be the value a
        // spec that leaves the parameter out gets.
        assert_eq!(super::builtin_kinds().len(), 13);
        let checked = gradguard_testkit::assert_documented_defaults(Family::Remedy);
        assert!(checked >= 25, "only {checked} defaults compared");
    }
}
