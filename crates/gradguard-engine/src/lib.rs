//! # gradguard-engine: the Guard, one training step for any training loop
//!
//! [`Guard`] holds a run's detectors, remedies, reporters and diagnosis, and does one step of
//! gradguard's work over a [`gradguard_core::ParamView`] (plain `&[f32]` weights and
//! `&mut [f32]` gradients): measure, detect, remedy, resolve the action, record the event. The
//! training loop keeps its framework; it applies or skips the update as the Guard decides,
//! and answers checkpoint requests through [`TrainingHost`]. gradguard's own dfdx loop
//! (`gradguard-pipeline`), a hand-written loop over slices, and the Python package all drive
//! this same type. This crate does not depend on dfdx.
//!
//! ```
//! use gradguard_core::{ParamView, Role, UpdateStats};
//! use gradguard_engine::{Guard, NoCheckpoints, StepInput};
//! use gradguard_detectors::RunFigures;
//!
//! // y = 3x, one weight, plain SGD; clip the gradient's global norm to 1.
//! gradguard_engine::link_plugins(); // every built-in kind can be read from a spec
//! let remedy: Box<dyn gradguard_core::Remedy> =
//!     serde_json::from_str(r#"{"kind":"clip_global_norm","max_norm":1.0}"#).unwrap();
//! let mut guard = Guard::new(gradguard_detectors::default_detectors(), vec![remedy], vec![]);
//! let (mut w, mut g) = (vec![0.0f32], vec![0.0f32]);
//! for step in 1..=50 {
//!     let (x, y) = (2.0f32, 6.0f32);
//!     let err = w[0] * x - y;
//!     g[0] = err * x; // d/dw of err²/2
//!     let mut view = ParamView::new();
//!     view.push("w", &[1], Role::Weight, &w, &mut g).unwrap();
//!     let input = StepInput { step, loss: (err * err / 2.0) as f64, ..Default::default() };
//!     let d = guard.step(input, &mut view);
//!     let before = w.clone();
//!     if d.apply {
//!         w[0] -= 0.1 * d.lr_scale as f32 * g[0];
//!     }
//!     let update = UpdateStats::measure(step, 0.1, &["w"], &[&before], &[&w]);
//!     let end = guard.after_update(Some(update), &mut NoCheckpoints).unwrap();
//!     if end.stop.is_some() { break; }
//! }
//! assert!((w[0] - 3.0).abs() < 1e-3);
//! assert_eq!(guard.steps(), 50);
//! let diagnosis = guard.finish(&RunFigures::default()).unwrap();
//! println!("{:?}", diagnosis.verdict);
//! ```

#![warn(missing_docs)]

mod guard;
mod host;
mod reporters;

pub mod spec_error;
pub mod suggest;

pub use guard::{Decision, Guard, GuardError, StepEnd, StepInput, POST_REMEDY_CHECK, UPDATE_CHECK};
pub use host::{HostError, NoCheckpoints, TrainingHost};
pub use reporters::{default_reporters, merge_reporters};

/// Makes sure every built-in plugin crate is linked, so that each built-in kind can be read
/// from a spec (typetag registers kinds with link-time constructors, and a crate the binary
/// never names can be dropped by the linker). Returns the number of built-in kinds.
pub fn link_plugins() -> usize {
    gradguard_detectors::builtin_kinds().len()
        + gradguard_remedies::builtin_kinds().len()
        + gradguard_report::builtin_kinds().len()
}
