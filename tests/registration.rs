//! Every built-in plugin kind is registered, described, and deserialises from TOML and JSON.

use gradguard::core::registry::{
    plugin_info, plugin_infos, registered_kinds, registry_mismatches, typetag_kinds,
    undescribed_kinds,
};
use gradguard::core::{Detector, Family, Remedy, Reporter};

fn toml_body(kind: &str, example: &str) -> String {
    let mut s = format!("kind = \"{kind}\"\n");
    // The example is the body of an inline table: `a = 1, b = "x"` -> one key per line.
    if !example.trim().is_empty() {
        let table: toml::Table = toml::from_str(&format!("t = {{ {example} }}"))
            .unwrap_or_else(|e| panic!("example of `{kind}` is not a TOML inline-table body: {e}"));
        let inner = table["t"].as_table().expect("inline table");
        s.push_str(&toml::to_string(inner).expect("serialise example"));
    }
    s
}

#[test]
fn builtin_kinds_are_exactly_the_registered_ones() {
    let builtin = gradguard::builtin_kinds();
    for family in Family::ALL {
        let mut mine: Vec<String> = builtin
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, k)| k.to_string())
            .collect();
        mine.sort();
        assert!(!mine.is_empty(), "no built-in {} kinds", family.as_str());
        assert_eq!(mine, registered_kinds(family), "{} kinds", family.as_str());
    }
}

#[test]
fn every_registered_kind_has_a_description() {
    let _ = gradguard::builtin_kinds();
    assert!(
        undescribed_kinds().is_empty(),
        "kinds without a description: {:?}",
        undescribed_kinds()
    );
}

#[test]
fn every_kind_deserialises_from_toml_and_json() {
    for (family, kind) in gradguard::builtin_kinds() {
        let info = plugin_info(family, kind).expect("described");
        let text = toml_body(kind, info.example);
        let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let json = serde_json::to_string(&value).expect("to json");
        let (from_toml, from_json) = match family {
            Family::Detector => (
                toml::from_str::<Box<dyn Detector>>(&text)
                    .err()
                    .map(|e| e.to_string()),
                serde_json::from_str::<Box<dyn Detector>>(&json)
                    .err()
                    .map(|e| e.to_string()),
            ),
            Family::Remedy => (
                toml::from_str::<Box<dyn Remedy>>(&text)
                    .err()
                    .map(|e| e.to_string()),
                serde_json::from_str::<Box<dyn Remedy>>(&json)
                    .err()
                    .map(|e| e.to_string()),
            ),
            Family::Reporter => (
                toml::from_str::<Box<dyn Reporter>>(&text)
                    .err()
                    .map(|e| e.to_string()),
                serde_json::from_str::<Box<dyn Reporter>>(&json)
                    .err()
                    .map(|e| e.to_string()),
            ),
        };
        assert_eq!(from_toml, None, "{kind} from TOML:\n{text}");
        assert_eq!(from_json, None, "{kind} from JSON: {json}");
    }
}

#[test]
fn unknown_kind_lists_the_known_ones() {
    let _ = gradguard::builtin_kinds();
    let err = serde_json::from_str::<Box<dyn Remedy>>(r#"{"kind":"clip_globl_norm","max_norm":1}"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("clip_globl_norm"), "{err}");
    assert!(err.contains("clip_global_norm"), "{err}");
}

/// The listing comes from the describe_plugin! entries; typetag's own list (read back from its
/// error text) must be exactly the same, and every listed kind must load from its example.
#[test]
fn listed_kinds_are_exactly_what_typetag_deserialises() {
    let _ = gradguard::builtin_kinds();
    assert!(
        registry_mismatches().is_empty(),
        "{:#?}",
        registry_mismatches()
    );
    for family in Family::ALL {
        assert_eq!(registered_kinds(family), typetag_kinds(family));
    }
    for info in plugin_infos() {
        let text = toml_body(info.kind, info.example);
        let loaded = match info.family {
            Family::Detector => toml::from_str::<Box<dyn Detector>>(&text).map(|_| ()),
            Family::Remedy => toml::from_str::<Box<dyn Remedy>>(&text).map(|_| ()),
            Family::Reporter => toml::from_str::<Box<dyn Reporter>>(&text).map(|_| ()),
        };
        if let Err(e) = loaded {
            panic!("`{}` is listed but does not load: {e}\n{text}", info.kind);
        }
    }
}

#[test]
fn declared_signs_are_well_formed_and_none_shadows_a_built_in_one() {
    let _ = gradguard::builtin_kinds();
    gradguard::core::Sign::check_declared().expect("declared signs");
    // gradguard itself declares none: the ten built-in signs are the whole checklist.
    assert_eq!(
        gradguard::core::Sign::all(),
        gradguard::core::Sign::ALL.to_vec()
    );
}
