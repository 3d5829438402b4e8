//! The documented defaults are the real ones: every `ParamDoc { default: Some(..) }` of a
//! plugin's [`PluginInfo`] (what `gradguard plugins` prints and the README tables show) must be
//! the value serde fills in when a spec leaves the parameter out.
//!
//! For each registered kind of a family: deserialise `{kind, <the example's parameters>}`,
//! serialise it back, and compare every documented default of a parameter the example does not
//! set with the serialised field. Defaults are written as TOML values (`1.5`, `"skip_step"`,
//! `true`); numbers compare as f64, so `10.0` matches `10`.

use gradguard_core::registry::plugin_infos;
use gradguard_core::{Detector, Family, PluginInfo, Remedy, Reporter};
use serde_json::Value;

/// Checks every registered plugin of `family` linked into this binary (see the module doc).
/// Returns how many documented defaults were compared, or every mismatch, one per line.
pub fn check_documented_defaults(family: Family) -> Result<usize, String> {
    let mut checked = 0;
    let mut errors = Vec::new();
    for info in plugin_infos().into_iter().filter(|i| i.family == family) {
        match check_one(info) {
            Ok(n) => checked += n,
            Err(e) => errors.push(format!("`{}`: {e}", info.kind)),
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors.join("\n"))
    }
}

/// Panics with every mismatch unless [`check_documented_defaults`] passes; returns the number
/// of defaults compared (assert on it, so that a test cannot pass by finding no plugin).
pub fn assert_documented_defaults(family: Family) -> usize {
    check_documented_defaults(family).unwrap_or_else(|e| panic!("documented defaults:\n{e}"))
}

fn toml_value(text: &str) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(&format!("v = {text}")).map_err(|e| format!("`{text}`: {e}"))?;
    serde_json::to_value(&table["v"]).map_err(|e| e.to_string())
}

fn same(documented: &Value, actual: &Value) -> bool {
    match (documented.as_f64(), actual.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => documented == actual,
    }
}

fn round_trip(family: Family, spec: Value) -> Result<Value, serde_json::Error> {
    match family {
        Family::Detector => {
            serde_json::from_value::<Box<dyn Detector>>(spec).and_then(|p| serde_json::to_value(&p))
        }
        Family::Remedy => {
            serde_json::from_value::<Box<dyn Remedy>>(spec).and_then(|p| serde_json::to_value(&p))
        }
        Family::Reporter => {
            serde_json::from_value::<Box<dyn Reporter>>(spec).and_then(|p| serde_json::to_value(&p))
        }
    }
}

fn check_one(info: &PluginInfo) -> Result<usize, String> {
    let kind_only = serde_json::json!({ "kind": info.kind });
    // With no parameters at all when the kind allows it (every default is then compared),
    // else with its example's required parameters (the others are compared).
    let (example, serialised) = match round_trip(info.family, kind_only) {
        Ok(v) => (toml::Table::new(), v),
        Err(_) => {
            let t: toml::Table = toml::from_str(&format!("t = {{ {} }}", info.example))
                .map_err(|e| format!("example `{}`: {e}", info.example))?;
            let example = t["t"].as_table().cloned().unwrap_or_default();
            let mut spec = serde_json::to_value(&example).map_err(|e| e.to_string())?;
            spec["kind"] = Value::String(info.kind.to_string());
            let v = round_trip(info.family, spec).map_err(|e| format!("from its example: {e}"))?;
            (example, v)
        }
    };
    let mut checked = 0;
    let mut errors = Vec::new();
    for p in info.params {
        let Some(text) = p.default else { continue };
        if example.contains_key(p.name) {
            continue;
        }
        let documented = toml_value(text)?;
        match serialised.get(p.name) {
            Some(actual) if same(&documented, actual) => checked += 1,
            Some(actual) => {
                errors.push(format!("`{}` is documented as {text}, is {actual}", p.name))
            }
            None => errors.push(format!(
                "`{}` is documented as {text}, but the plugin does not serialise it",
                p.name
            )),
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors.join("; "))
    }
}
