//! # gradguard-testkit: property tests for remedies, ready for plugin authors
//!
//! gradguard's own remedies are checked with these functions; a plugin author runs the same
//! checks on their remedy with one call each:
//!
//! - [`assert_remedy_invariants`]: for any remedy. Finite gradients in give finite gradients
//!   out; names, shapes and lengths are unchanged; the step statistics the remedy leaves
//!   behind match a fresh measurement (the context's edit methods keep them true; a remedy
//!   that writes gradients behind their back, e.g. returning `TensorEdit::Keep` after writing,
//!   fails here); the context marks a change whenever a gradient changed.
//! - [`assert_guards_nonfinite`]: for a remedy that promises never to pass non-finite
//!   gradients on (gradguard's clipping remedies under `on_nonfinite = "skip_step"` or
//!   `"error"`): it errors, withholds the update, or leaves only finite gradients.
//! - [`assert_global_norm_clip`], [`assert_per_tensor_clip`], [`assert_value_clip`],
//!   [`assert_unitwise_clip`]: the mathematical invariants of each clipping scope. The first
//!   three are two-sided, so a remedy that over-clips fails as surely as one that under-clips:
//!   - global norm: when the total norm `t` exceeds `max_norm`, the clipped global norm must
//!     equal `max_norm * t / (t + 1e-6)` (PyTorch's `clip_grad_norm_`,
//!     [`expected_global_clip_norm`]) within [`TWO_SIDED_REL`] (f32 rounding);
//!   - per tensor (Keras `clipnorm`, `g * c / max(||g||, c)`): each tensor whose norm exceeds
//!     `c` must end with norm `c` within [`TWO_SIDED_REL`], the others unchanged bit for bit;
//!   - by value: every value must equal the clamp to `[-v, v]` bit for bit.
//!
//! - [`assert_documented_defaults`]: for any plugin family. Every default written in a
//!   plugin's `describe_plugin!` entry (what `gradguard plugins` prints) must be the value serde
//!   fills in when a spec leaves the parameter out.
//!
//! Each clipping `assert_*` runs a proptest [`TestRunner`] over random [`OwnedParams`] (names, shapes
//! of rank 0 to 3, values from 0 and 1e-30 to 1e30; one case in eight adds a tensor of 1,024
//! to 5,000 values, so that the statistics kernels' fast paths run too) and panics with the
//! smallest failing case.
//! The `check_*` functions behind them take one case and return `Err(message)`, for use inside
//! your own `proptest!` blocks with the strategies [`params`] and [`params_with_nonfinite`].
//!
//! ```
//! use gradguard_core::{Action, RemedyContext, RemedyError, Remedy};
//! use serde::{Deserialize, Serialize};
//!
//! /// Halves every gradient when the global norm exceeds `limit` (a custom remedy).
//! #[derive(Serialize, Deserialize)]
//! struct HalveAbove { limit: f64 }
//!
//! #[typetag::serde(name = "doc_halve_above")]
//! impl Remedy for HalveAbove {
//!     fn apply(&mut self, ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
//!         if !ctx.stats().grads_finite() {
//!             return Ok(Action::SkipStep { reason: "non-finite gradients".into() });
//!         }
//!         if ctx.stats().grad_norm > self.limit {
//!             ctx.scale_all(0.5); // scales, keeps the statistics true, marks the change
//!         }
//!         Ok(Action::Continue)
//!     }
//! }
//!
//! gradguard_testkit::assert_remedy_invariants(|| HalveAbove { limit: 1.0 });
//! gradguard_testkit::assert_guards_nonfinite(|| HalveAbove { limit: 1.0 });
//! ```

#![warn(missing_docs)]

mod checks;
mod data;
mod defaults;
mod strategies;

pub use checks::{
    assert_global_norm_clip, assert_guards_nonfinite, assert_per_tensor_clip,
    assert_remedy_invariants, assert_unitwise_clip, assert_value_clip, check_global_norm_clip,
    check_guards_nonfinite, check_per_tensor_clip, check_remedy_invariants, check_unitwise_clip,
    check_value_clip, compare_stats, expected_global_clip_norm, CASES, TWO_SIDED_REL,
};
pub use data::{run_remedy, Outcome, OwnedParam, OwnedParams};
pub use defaults::{assert_documented_defaults, check_documented_defaults};
pub use proptest::test_runner::TestRunner;
pub use strategies::{finite_value, params, params_with_nonfinite, ParamsConfig};
