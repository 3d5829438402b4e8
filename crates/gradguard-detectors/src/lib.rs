//! # gradguard-detectors: every sign of exploding gradients, and the diagnosis
//!
//! One file per detector; each is a `typetag` kind of [`gradguard_core::Detector`] whose doc
//! comment gives its rule, parameters and defaults:
//!
//! | kind | sign | reads |
//! |---|---|---|
//! | [`loss_nonfinite`] | the loss is NaN or infinite | `obs.loss` |
//! | [`loss_not_converging`] | the loss stays poor after a warm-up | `obs.loss` |
//! | [`loss_unstable`] | the loss swings from update to update | `obs.loss` |
//! | [`weights_change_large`] | a layer's update ratio ‖dw‖/‖w‖ is large | `obs.update` |
//! | [`weights_nonfinite`] | a weight became NaN or infinite | `obs.stats`, `obs.update` |
//! | [`grad_norm_above_one`] | a layer's error gradient stays above 1.0 | `obs.stats` |
//! | [`grad_nonfinite`] | a gradient is NaN or infinite (names the first tensor) | `obs.stats` |
//! | [`grad_spike`] | the global gradient norm jumps (median/MAD) | `obs.stats` |
//! | [`grad_growth_across_layers`] | gradients grow from the output back to the input, or across time steps | `obs.stats`, `obs.series` |
//! | [`recurrent_radius_above_one`] | a recurrent weight's spectral radius is above 1 | `obs.view` (live only) |
//!
//! [`default_detectors`] is the set a run uses when its spec lists none.
//!
//! The [`diagnoser::Diagnoser`] turns a run's events into a [`gradguard_core::Diagnosis`]
//! (verdict, checklist, origin, prescriptions); [`offline::diagnose_events`] does the same
//! from an `events.jsonl` log; [`probe`](mod@probe) estimates the risk of explosion before training.
//!
//! Depends on gradguard-core only (no deep-learning framework).

#![warn(missing_docs)]

pub mod diagnoser;
pub mod grad_growth_across_layers;
pub mod grad_nonfinite;
pub mod grad_norm_above_one;
pub mod grad_spike;
pub mod linalg;
pub mod loss_nonfinite;
pub mod loss_not_converging;
pub mod loss_unstable;
pub mod offline;
pub mod probe;
pub mod recurrent_radius_above_one;
pub mod weights_change_large;
pub mod weights_nonfinite;

mod util;

#[cfg(test)]
pub(crate) mod testing;

pub use diagnoser::{
    apply_evidence, run_summary, Diagnoser, DiagnosisRules, InitialGrowth, MeasuredCure, RunFigures,
};
pub use grad_growth_across_layers::GradGrowthAcrossLayers;
pub use grad_nonfinite::GradNonfinite;
pub use grad_norm_above_one::{GradNormAboveOne, TensorSelection};
pub use grad_spike::GradSpike;
pub use loss_nonfinite::LossNonfinite;
pub use loss_not_converging::LossNotConverging;
pub use loss_unstable::{LossUnstable, UnstableMode};
pub use offline::{
    diagnose_events, diagnose_events_observed, diagnose_events_report, diagnose_events_with,
    observation_parts_from_event, python_nonfinite_to_strings, DiagnoseError, LineError,
    OfflineOptions, OfflineReport,
};
pub use probe::{probe, Growth, ProbeInput, ProbeReport, RecurrentMatrix, RecurrentReport, Risk};
pub use recurrent_radius_above_one::RecurrentRadiusAboveOne;
pub use weights_change_large::WeightsChangeLarge;
pub use weights_nonfinite::WeightsNonfinite;

use gradguard_core::Detector;

/// The detector kinds this crate registers (the facade calls this so the linker keeps the
/// registrations; a test checks it equals the registered detector kinds).
pub fn builtin_kinds() -> &'static [&'static str] {
    &[
        "grad_growth_across_layers",
        "grad_nonfinite",
        "grad_norm_above_one",
        "grad_spike",
        "loss_nonfinite",
        "loss_not_converging",
        "loss_unstable",
        "recurrent_radius_above_one",
        "weights_change_large",
        "weights_nonfinite",
    ]
}

/// The detectors a run uses when its spec lists none: every built-in kind with its defaults,
/// in checklist order (classic signs first).
pub fn default_detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(LossNotConverging::default()),
        Box::new(LossUnstable::default()),
        Box::new(LossNonfinite::default()),
        Box::new(WeightsChangeLarge::default()),
        Box::new(WeightsNonfinite::default()),
        Box::new(GradNormAboveOne::default()),
        Box::new(GradNonfinite::default()),
        Box::new(GradSpike::default()),
        Box::new(GradGrowthAcrossLayers::default()),
        Box::new(RecurrentRadiusAboveOne::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::registry::{plugin_info, registered_kinds};
    use gradguard_core::Family;

    #[test]
    fn builtin_kinds_are_registered_described_and_examples_parse() {
        let registered = registered_kinds(Family::Detector);
        let mine: Vec<String> = builtin_kinds().iter().map(|s| s.to_string()).collect();
        assert_eq!(registered, mine);
        for kind in builtin_kinds() {
            let info =
                plugin_info(Family::Detector, kind).unwrap_or_else(|| panic!("{kind} undescribed"));
            assert!(!info.summary.trim().is_empty());
            let example = format!("kind = \"{kind}\"\n{}", info.example.replace(", ", "\n"));
            let d: Box<dyn Detector> =
                toml::from_str(&example).unwrap_or_else(|e| panic!("{kind} example: {e}"));
            let back = serde_json::to_string(&d).unwrap();
            assert!(back.contains(kind), "{back}");
            // Every documented default parses back through serde.
            for p in info.params {
                if let Some(default) = p.default {
                    let text = format!("kind = \"{kind}\"\n{} = {default}", p.name);
                    toml::from_str::<Box<dyn Detector>>(&text)
                        .unwrap_or_else(|e| panic!("{kind}.{} = {default}: {e}", p.name));
                }
            }
        }
        assert_eq!(default_detectors().len(), builtin_kinds().len());
    }

    #[test]
    fn documented_defaults_are_the_ones_serde_fills_in() {
        // `gradguard plugins` and the README print these defaults: each must be the value a
        // spec that leaves the parameter out gets.
        let checked = gradguard_testkit::assert_documented_defaults(Family::Detector);
        assert!(checked >= 20, "only {checked} defaults compared");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Box<dyn Detector>>(r#"{"kind":"grad_spike","windw":3}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown field `windw`"), "{err}");
    }
}
