//! Every remedy kind of this crate is registered, listed by `builtin_kinds`, described, and
//! its documented example and defaults deserialise.

use gradguard_core::registry::{
    plugin_info, registered_kinds, registry_mismatches, undescribed_kinds,
};
use gradguard_core::{ClipScope, Family, Remedy};

#[test]
fn builtin_kinds_are_the_registered_kinds() {
    let mut listed: Vec<String> = gradguard_remedies::builtin_kinds()
        .iter()
        .map(|s| s.to_string())
        .collect();
    listed.sort();
    assert_eq!(registered_kinds(Family::Remedy), listed);
    assert!(undescribed_kinds().is_empty(), "{:?}", undescribed_kinds());
    assert!(
        registry_mismatches().is_empty(),
        "{:?}",
        registry_mismatches()
    );
}

/// The remedy of `kind` with its documented example parameters.
fn example(kind: &str) -> Box<dyn Remedy> {
    let info = plugin_info(Family::Remedy, kind).expect("described");
    let toml_text = format!("kind = \"{kind}\"\n{}", info.example.replace(", ", "\n"));
    toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn every_remedy_declares_what_it_is() {
    use ClipScope::*;
    // kind, clips, needs_weights, penalises
    let table = [
        ("agc", Some(PerUnit), true, false),
        ("autoclip", Some(GlobalNorm), false, false),
        ("clip_global_norm", Some(GlobalNorm), false, false),
        ("clip_norm", Some(PerTensor), false, false),
        ("clip_value", Some(PerValue), false, false),
        ("l1", None, true, true),
        ("l1_l2", None, true, true),
        ("l2", None, true, true),
        ("lr_backoff", None, false, false),
        ("rollback", None, false, false),
        ("skip_nonfinite", None, false, false),
        ("skip_spike", None, false, false),
        ("zclip", Some(GlobalNorm), false, false),
    ];
    let kinds: Vec<&str> = table.iter().map(|t| t.0).collect();
    assert_eq!(kinds, gradguard_remedies::builtin_kinds());
    for (kind, clips, needs_weights, penalises) in table {
        let c = example(kind).capabilities();
        assert_eq!(
            (c.clips, c.needs_weights, c.penalises),
            (clips, needs_weights, penalises),
            "{kind}"
        );
        // A clipping remedy says so, and says its threshold for the charts when it has one.
        if example(kind).clip_threshold().is_some() {
            assert!(c.clips.is_some(), "{kind}");
        }
    }
}

#[test]
fn examples_and_documented_defaults_deserialise() {
    for kind in gradguard_remedies::builtin_kinds() {
        let info = plugin_info(Family::Remedy, kind).expect("described");
        let toml_text = format!("kind = \"{kind}\"\n{}", info.example.replace(", ", "\n"));
        let value: toml::Value =
            toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let json = serde_json::to_string(&value).unwrap();
        let r: Box<dyn Remedy> =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{kind}: {e}"));
        // Serialising again writes every documented parameter with a default.
        let back = serde_json::to_value(&r).unwrap();
        for p in info.params {
            if let Some(default) = p.default {
                let in_example = info.example.contains(&format!("{} =", p.name));
                let got = back
                    .get(p.name)
                    .unwrap_or_else(|| panic!("{kind}: `{}` missing in {back}", p.name));
                if !in_example {
                    let want: toml::Value = toml::from_str(&format!("x = {default}")).unwrap();
                    let want = serde_json::to_value(&want["x"]).unwrap();
                    let same = match (got.as_f64(), want.as_f64()) {
                        (Some(a), Some(b)) => a == b,
                        _ => *got == want,
                    };
                    assert!(
                        same,
                        "{kind}: `{}` defaults to {got}, documented {default}",
                        p.name
                    );
                }
            }
        }
    }
}
