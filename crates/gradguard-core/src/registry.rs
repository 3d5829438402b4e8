//! What plugin kinds are registered, and their descriptions.
//!
//! A kind exists twice: typetag registers its deserialiser (what a spec is checked against),
//! and [`describe_plugin!`](crate::describe_plugin) submits its [`PluginInfo`] to an
//! `inventory` registry that gradguard owns. Listing reads the second:
//! [`registered_kinds`] and [`plugin_infos`] iterate the submitted descriptions.
//!
//! typetag keeps its own registry private, so the two are cross-checked instead:
//! [`typetag_kinds`] reads typetag's list back from its "unknown variant" error (a check
//! only, never the listing), and [`registry_mismatches`] names every kind one side has and
//! the other lacks. The registration tests assert it is empty and deserialise every
//! description's `example`, so nothing registered goes unlisted and nothing listed fails to
//! load.

use crate::plugin::{Detector, Family, PluginInfo, Remedy, Reporter};

const PROBE: &str = "__gradguard_registry_probe__";

/// Extracts the backtick-quoted names from a serde "unknown variant" message, dropping `probe`.
pub fn kinds_from_unknown_variant(message: &str, probe: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let name = &after[..end];
        if name != probe {
            out.push(name.to_string());
        }
        rest = &after[end + 1..];
    }
    out.sort();
    out.dedup();
    out
}

/// Every kind of `family` with a submitted description ([`PluginInfo`]), sorted: what
/// `gradguard plugins` lists and what cures are looked up in.
pub fn registered_kinds(family: Family) -> Vec<String> {
    let mut v: Vec<String> = inventory::iter::<PluginInfo>
        .into_iter()
        .filter(|i| i.family == family)
        .map(|i| i.kind.to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Every kind typetag can deserialise for `family`, sorted, read back from its "unknown
/// variant" error. A cross-check of [`registered_kinds`] only (see [`registry_mismatches`]).
pub fn typetag_kinds(family: Family) -> Vec<String> {
    let probe = format!("{{\"kind\":\"{PROBE}\"}}");
    let message = match family {
        Family::Detector => serde_json::from_str::<Box<dyn Detector>>(&probe)
            .err()
            .map(|e| e.to_string()),
        Family::Remedy => serde_json::from_str::<Box<dyn Remedy>>(&probe)
            .err()
            .map(|e| e.to_string()),
        Family::Reporter => serde_json::from_str::<Box<dyn Reporter>>(&probe)
            .err()
            .map(|e| e.to_string()),
    };
    message
        .map(|m| kinds_from_unknown_variant(&m, PROBE))
        .unwrap_or_default()
}

/// Every submitted description, sorted by family then kind.
pub fn plugin_infos() -> Vec<&'static PluginInfo> {
    let mut v: Vec<&'static PluginInfo> = inventory::iter::<PluginInfo>.into_iter().collect();
    v.sort_by(|a, b| (a.family, a.kind).cmp(&(b.family, b.kind)));
    v
}

/// The description of `kind` in `family`, if one was submitted.
pub fn plugin_info(family: Family, kind: &str) -> Option<&'static PluginInfo> {
    inventory::iter::<PluginInfo>
        .into_iter()
        .find(|i| i.family == family && i.kind == kind)
}

/// Kinds typetag can deserialise that have no description, or one with an empty summary
/// (should be empty; a test checks it).
pub fn undescribed_kinds() -> Vec<(Family, String)> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for kind in typetag_kinds(family) {
            if plugin_info(family, &kind)
                .map(|i| i.summary.trim().is_empty())
                .unwrap_or(true)
            {
                out.push((family, kind));
            }
        }
    }
    out
}

/// How the two registries disagree, one line per kind: a kind typetag deserialises without a
/// description (it would go unlisted), or a description whose kind typetag does not know
/// (listed but refused in a spec), or a kind described twice. Empty when they agree.
pub fn registry_mismatches() -> Vec<String> {
    let mut out = Vec::new();
    for family in Family::ALL {
        let typetag = typetag_kinds(family);
        let described: Vec<&'static str> = inventory::iter::<PluginInfo>
            .into_iter()
            .filter(|i| i.family == family)
            .map(|i| i.kind)
            .collect();
        for kind in &typetag {
            if !described.contains(&kind.as_str()) {
                out.push(format!(
                    "{} `{kind}` is registered with typetag but has no describe_plugin! entry",
                    family.as_str()
                ));
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for kind in described {
            if seen.contains(&kind) {
                out.push(format!("{} `{kind}` is described twice", family.as_str()));
            }
            seen.push(kind);
            if !typetag.iter().any(|k| k == kind) {
                out.push(format!(
                    "{} `{kind}` is described but typetag cannot deserialise it",
                    family.as_str()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_serde_messages() {
        let m = "unknown variant `__p`, expected one of `b`, `a`, `c` at line 1 column 10";
        assert_eq!(kinds_from_unknown_variant(m, "__p"), vec!["a", "b", "c"]);
        let m = "unknown variant `__p`, expected `a` or `b`";
        assert_eq!(kinds_from_unknown_variant(m, "__p"), vec!["a", "b"]);
        let m = "unknown variant `__p`, there are no variants";
        assert!(kinds_from_unknown_variant(m, "__p").is_empty());
    }
}
