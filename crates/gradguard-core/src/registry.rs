//! What plugin kinds are registered, and their descriptions.
//!
//! typetag keeps its registry private, but its "unknown variant" error lists every registered
//! kind; [`registered_kinds`] asks for a kind that cannot exist and reads that list. This is
//! the list a spec is actually checked against, so it is the honest source for
//! `gradguard plugins` and for the test that every kind is described.

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

/// Every kind registered with typetag for `family`, sorted.
pub fn registered_kinds(family: Family) -> Vec<String> {
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

/// Registered kinds that have no description (should be empty; a test checks it).
pub fn undescribed_kinds() -> Vec<(Family, String)> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for kind in registered_kinds(family) {
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
