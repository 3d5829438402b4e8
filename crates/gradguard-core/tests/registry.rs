//! The registry sees plugins registered with typetag, and their descriptions.

use gradguard_core::registry::{
    plugin_info, registered_kinds, registry_mismatches, typetag_kinds, undescribed_kinds,
};
use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, Sign,
};
use serde::{Deserialize, Serialize};

/// A test detector: fires when the loss exceeds `limit`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LossAbove {
    #[serde(default = "ten")]
    limit: f64,
}

fn ten() -> f64 {
    10.0
}

#[typetag::serde(name = "test_loss_above")]
impl Detector for LossAbove {
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        if obs.loss > self.limit {
            findings.push(Finding::new(
                Sign::LossUnstable,
                obs.step,
                None,
                obs.loss,
                self.limit,
                "loss above limit",
            ));
        }
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "test_loss_above",
    summary: "Fires when the loss exceeds a limit.",
    params: &[ParamDoc {
        name: "limit",
        default: Some("10.0"),
        doc: "the limit"
    }],
    example: "limit = 3.0",
});

#[test]
fn registry_lists_and_describes_test_plugin() {
    assert!(registered_kinds(Family::Detector).contains(&"test_loss_above".to_string()));
    assert!(plugin_info(Family::Detector, "test_loss_above").is_some());
    assert!(undescribed_kinds().is_empty(), "{:?}", undescribed_kinds());
    assert!(registered_kinds(Family::Remedy).is_empty());
}

#[test]
fn spec_rejects_unknown_fields_and_uses_defaults() {
    let d: Box<dyn Detector> = serde_json::from_str(r#"{"kind":"test_loss_above"}"#).unwrap();
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(json, r#"{"kind":"test_loss_above","limit":10.0}"#);
    let err = serde_json::from_str::<Box<dyn Detector>>(r#"{"kind":"test_loss_above","limt":3}"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown field `limt`"), "{err}");
}

#[test]
fn listing_comes_from_descriptions_and_agrees_with_typetag() {
    assert_eq!(
        registered_kinds(Family::Detector),
        typetag_kinds(Family::Detector)
    );
    assert!(
        registry_mismatches().is_empty(),
        "{:?}",
        registry_mismatches()
    );
    // Every description's example deserialises through typetag.
    for kind in registered_kinds(Family::Detector) {
        let info = plugin_info(Family::Detector, &kind).unwrap();
        let (key, value) = info.example.split_once(" = ").unwrap();
        let json = format!(r#"{{"kind":"{kind}","{key}":{value}}}"#);
        serde_json::from_str::<Box<dyn Detector>>(&json).unwrap();
    }
}
