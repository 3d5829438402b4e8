//! Gradients kept by another framework: typed edits it applies its own way.
//!
//! Normally the gradients are host slices (`&mut [f32]` in a [`ParamView`](crate::ParamView))
//! and remedies edit them with gradguard's kernels. Two cases need the framework that owns
//! them to do the edit instead:
//!
//! - the gradients live where gradguard cannot read them (CUDA tensors): the framework
//!   measures them on the device ([`GradientFramework::values_on_host`] is false) and applies
//!   every edit there (PyTorch's foreach ops);
//! - an edit must match the framework's own arithmetic bit for bit: PyTorch's
//!   `clip_grad_norm_` computes its total norm in float32 with its own reduction order, so a
//!   clip coefficient computed by gradguard (in f64) can differ from it by an ulp. The
//!   framework computes [`GradEdit::ClipGlobalNorm`]'s coefficient itself, and may decline
//!   edits whose host kernels are already exact (a clamp, a scale by a given factor).
//!
//! A remedy never talks to the framework directly: it calls the
//! [`RemedyContext`](crate::RemedyContext) edits, which route each one here when a framework
//! is attached. A remedy that needs the values themselves
//! ([`RemedyContext::edit_each`](crate::RemedyContext::edit_each), e.g. `agc`, the L1/L2
//! penalties) cannot run when they are not on the host: the step stops with an error that
//! names it.

use crate::stats::StepStats;

/// One edit of the gradients, as a framework applies it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GradEdit {
    /// Multiply every gradient by `factor`.
    ScaleAll {
        /// The factor.
        factor: f64,
    },
    /// Multiply the gradients of tensor `index` (the view's order) by `factor`.
    ScaleParam {
        /// The tensor's index.
        index: usize,
        /// The factor.
        factor: f64,
    },
    /// PyTorch's `clip_grad_norm_`: `total = ||(||g_1||_p, ..., ||g_n||_p)||_p` computed by the
    /// framework, `coef = max_norm / (total + 1e-6)` clamped at 1, every gradient times `coef`.
    ClipGlobalNorm {
        /// The largest allowed total norm.
        max_norm: f64,
        /// The norm's order: 2, or `f64::INFINITY` for max |g|.
        norm_type: f64,
    },
    /// Clamp every gradient value to `[-bound, bound]` (NaN passes through).
    Clamp {
        /// The bound.
        bound: f32,
    },
    /// Replace every non-finite gradient value by 0.
    ZeroNonFinite,
    /// Adaptive gradient clipping per unit (timm's `adaptive_clip_grad`, `[out, in, ...]`
    /// layout: a unit is one output row, a tensor of rank <= 1 is one unit): where
    /// `||g_u|| >= clip_factor * max(||w_u||, eps)`, `g_u` is scaled to that norm (divided by
    /// `max(||g_u||, 1e-6)`). Units whose weights are not finite are left alone unless
    /// `propagate`.
    UnitClip {
        /// The largest allowed ratio ||g_u|| / ||w_u||.
        clip_factor: f64,
        /// The smallest weight norm used in the bound.
        eps: f64,
        /// Whether units with non-finite weights are clipped too (and become NaN).
        propagate: bool,
    },
    /// Add a weight penalty's gradient to tensor `index`: `g += l1 * sign(w) + 2 * l2 * w`
    /// (sign(0) = 0). The outcome carries `sum |w|` for the penalty's value.
    AddPenaltyGrad {
        /// The tensor's index.
        index: usize,
        /// The L1 factor.
        l1: f64,
        /// The L2 factor.
        l2: f64,
    },
}

/// What the framework did with an edit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EditOutcome {
    /// It applied the edit and brought the statistics up to date; `factor` is the factor
    /// really applied by a scale or a clip (1 for a clamp or a zeroing).
    Applied {
        /// The factor applied.
        factor: f64,
    },
    /// It added a penalty gradient ([`GradEdit::AddPenaltyGrad`]) and kept the statistics
    /// true; `sum_abs` is the tensor's `sum |w|`.
    Penalised {
        /// The tensor's sum of |w|.
        sum_abs: f64,
    },
    /// It looked and nothing needed changing (e.g. a clip coefficient of 1): the step is not
    /// marked as changed.
    Unchanged,
    /// It computed the edit as a factor for gradguard to multiply the host values by (only
    /// when the values are on the host: the framework reads them but does not write memory
    /// gradguard holds), e.g. `clip_grad_norm_`'s own coefficient.
    ScaleOnHost {
        /// The factor, as the framework computed it.
        factor: f64,
    },
    /// It leaves the edit to gradguard's host kernels (only when the values are on the host).
    Declined,
}

/// An edit the framework could not apply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FrameworkError(pub String);

/// The framework that keeps the gradients (see the [module](self)).
pub trait GradientFramework {
    /// Whether the gradient values are also host slices in the step's view (CPU tensors
    /// sharing memory with it). When false the view is empty, and the framework measures
    /// and edits everything.
    fn values_on_host(&self) -> bool;

    /// Measures every tensor's gradients and weights into `stats` (one entry per tensor, in
    /// the view's order, totals refreshed). Only called when the values are not on the host.
    fn measure(&mut self, stats: &mut StepStats) -> Result<(), FrameworkError>;

    /// Applies `edit`, keeping `stats` true for what changed, or declines it (only possible
    /// when the values are on the host: gradguard's kernels then apply it).
    fn edit(
        &mut self,
        edit: &GradEdit,
        stats: &mut StepStats,
    ) -> Result<EditOutcome, FrameworkError>;
}
