//! The experiment spec: one TOML or JSON file describing a whole run.
//!
//! ```toml
//! name = "regression-sgd"
//! seed = 0
//!
//! [model]
//! kind = "mlp"
//! hidden = [25]
//! activation = "relu"
//!
//! [task]
//! kind = "regression"
//!
//! [train]
//! optimizer = { kind = "sgd", lr = 0.01, momentum = 0.9 }
//! epochs = 100
//!
//! [[remedies]]
//! kind = "clip_global_norm"
//! max_norm = 1.0
//! ```
//!
//! `detectors` defaults to gradguard's default set when absent (an empty list means none);
//! `remedies` defaults to none. The standard reporters (console, events.jsonl, summary.json,
//! report.html) always run unless `default_reporters = false`; `reporters` adds to them, and a
//! listed kind that is already among them replaces that default (to reconfigure it).
//! Unknown keys are rejected everywhere.

use std::path::Path;

use gradguard_core::{Detector, Remedy, Reporter};
use gradguard_models::spec::{ModelSpec, TaskSpec, TrainSpec};
use serde::{Deserialize, Serialize};

use crate::spec_error::{load_file, parse_str, SpecError, SpecFormat};

/// A whole experiment.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The experiment's name (used for the default output directory `runs/<name>`).
    pub name: String,
    /// What the experiment shows, one or two sentences. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The seed for initialisation, data and shuffling. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// The network.
    pub model: ModelSpec,
    /// The data.
    pub task: TaskSpec,
    /// How to train. Default: gradguard-models' `TrainSpec::default()`.
    #[serde(default)]
    pub train: TrainSpec,
    /// Detectors. Absent: the default set; `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Vec<Box<dyn Detector>>>,
    /// Remedies, applied in this order each step. Default: none.
    #[serde(default)]
    pub remedies: Vec<Box<dyn Remedy>>,
    /// Whether the standard reporters (console, events.jsonl, summary.json, report.html) run.
    /// Default `true`; `false` leaves only the reporters listed in `reporters`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub default_reporters: bool,
    /// Reporters added to the standard set; a kind already in the standard set replaces that
    /// default (e.g. `{ kind = "jsonl", flush_every = 1 }`). Absent or `[]`: only the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporters: Option<Vec<Box<dyn Reporter>>>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl std::fmt::Debug for ExperimentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("ExperimentSpec { .. }"),
        }
    }
}

impl ExperimentSpec {
    /// Reads a spec file (`.toml` or `.json`) and checks it: syntax, unknown keys, types,
    /// plugin kinds and the semantic rules of the model, task and training sections.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        crate::link_plugins();
        let mut spec: ExperimentSpec = load_file(path)?;
        // CSV paths in a spec are relative to the spec file's directory.
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        spec.task.resolve_paths(&dir);
        spec.validate(path)?;
        Ok(spec)
    }

    /// Parses and checks a spec given as text; `file` labels errors.
    pub fn parse(text: &str, format: SpecFormat, file: &Path) -> Result<Self, SpecError> {
        crate::link_plugins();
        let spec: ExperimentSpec = parse_str(text, format, file)?;
        spec.validate(file)?;
        Ok(spec)
    }

    /// The semantic checks that types alone cannot express (sizes > 0, fields that fit the
    /// model kind, ...). Errors name the key path.
    pub fn validate(&self, file: &Path) -> Result<(), SpecError> {
        if let Some(why) = name_problem(&self.name) {
            return Err(SpecError {
                file: file.to_path_buf(),
                line: None,
                column: None,
                key_path: Some("name".into()),
                message: why,
            });
        }
        // A plugin parameter written as `nan` or `inf` (TOML allows them) cannot survive the
        // JSON form every run and comparison copies specs through: refuse it here, by name.
        fn survives_json<T: serde::Serialize + serde::de::DeserializeOwned>(
            family: &str,
            i: usize,
            plugin: &T,
            file: &Path,
        ) -> Result<(), SpecError> {
            let fail = |key: Option<String>, message: String| SpecError {
                file: file.to_path_buf(),
                line: None,
                column: None,
                key_path: Some(match key {
                    Some(k) => format!("{family}[{i}].{k}"),
                    None => format!("{family}[{i}]"),
                }),
                message,
            };
            let value = serde_json::to_value(plugin).map_err(|e| fail(None, e.to_string()))?;
            serde_path_to_error::deserialize::<_, T>(value)
                .map(drop)
                .map_err(|e| {
                    let key = e.path().to_string();
                    fail(
                        (key != ".").then_some(key),
                        format!(
                            "expected a finite number (NaN and infinity cannot be used here): {}",
                            e.inner()
                        ),
                    )
                })
        }
        for (i, d) in self.detectors.iter().flatten().enumerate() {
            survives_json("detectors", i, d, file)?;
        }
        for (i, r) in self.remedies.iter().enumerate() {
            survives_json("remedies", i, r, file)?;
        }
        for (i, r) in self.reporters.iter().flatten().enumerate() {
            survives_json("reporters", i, r, file)?;
        }
        // Every detector's and remedy's parameters, before anything runs.
        for (i, d) in self.detectors.iter().flatten().enumerate() {
            if let Err(message) = d.validate() {
                return Err(SpecError {
                    file: file.to_path_buf(),
                    line: None,
                    column: None,
                    key_path: Some(format!("detectors[{i}]")),
                    message: format!("detector `{}`: {message}", d.typetag_name()),
                });
            }
        }
        for (i, r) in self.remedies.iter().enumerate() {
            if let Err(e) = r.validate() {
                return Err(SpecError {
                    file: file.to_path_buf(),
                    line: None,
                    column: None,
                    key_path: Some(format!("remedies[{i}]")),
                    message: e.to_string(),
                });
            }
        }
        gradguard_models::spec::validate(&self.model, &self.task, &self.train).map_err(|e| {
            SpecError {
                file: file.to_path_buf(),
                line: None,
                column: None,
                key_path: None,
                message: e.to_string(),
            }
        })
    }

    /// A deep copy (plugins are cloned through their serialised form, so their history starts fresh).
    pub fn try_clone(&self) -> Result<Self, SpecError> {
        let text = serde_json::to_string(self).map_err(|e| SpecError {
            file: "<clone>".into(),
            line: None,
            column: None,
            key_path: None,
            message: e.to_string(),
        })?;
        parse_str(&text, SpecFormat::Json, Path::new("<clone>"))
    }

    /// The spec as pretty TOML text.
    pub fn to_toml(&self) -> Result<String, String> {
        // Go through JSON values so typetag's internally tagged maps serialise as tables.
        let value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        toml::to_string_pretty(&value).map_err(|e| e.to_string())
    }
}

/// Why `name` cannot name a run, if it cannot: the default output directory is
/// `runs/<name>`, so the name must be a plain file name (no path separator, not `.` or
/// `..`, no control character, at most 200 bytes) and cannot lead a run outside `runs/`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("expected a non-empty name".into());
    }
    if name.len() > 200 {
        return Some(format!(
            "expected a name of at most 200 bytes (got {})",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Some(format!(
            "expected a plain file name (it names the run's directory under runs/): no `/`, `\\`, control characters, `.` or `..` (got {name:?})"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_error::SpecFormat;

    #[test]
    fn a_name_cannot_lead_outside_runs() {
        for bad in [
            "../../x",
            "/abs/path",
            "a/b",
            "..",
            ".",
            "a\\b",
            "tab\there",
            " ",
        ] {
            let text = format!("name = {bad:?}\n[model]\nkind = \"mlp\"\nhidden = [2]\n[task]\nkind = \"regression\"\n");
            let err = ExperimentSpec::parse(&text, SpecFormat::Toml, Path::new("s.toml"))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(err.key_path.as_deref(), Some("name"), "{bad:?}: {err}");
            assert!(err.to_string().starts_with("s.toml"), "{err}");
        }
        for good in ["regression-sgd", "run 1", "a+cell=lstm", "x.y"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        assert!(name_problem(&"n".repeat(201)).is_some());
    }

    #[test]
    fn remedy_parameters_are_checked_before_anything_runs() {
        let base =
            "name = \"s\"\n[model]\nkind = \"mlp\"\nhidden = [2]\n[task]\nkind = \"regression\"\n";
        for (remedy, want) in [
            (
                "kind = \"clip_global_norm\"\nmax_norm = -1.0",
                "`max_norm` must be a finite number >= 0, got -1",
            ),
            (
                "kind = \"clip_norm\"\nmax_norm = 0.0",
                "`max_norm` must be a finite number",
            ),
            (
                "kind = \"clip_value\"\nclip_value = -0.5",
                "`clip_value` must be a finite number >= 0",
            ),
            ("kind = \"agc\"\nclip_factor = 0.0", "`clip_factor` must be"),
            (
                "kind = \"autoclip\"\npercentile = 101.0",
                "`percentile` must be in [0, 100]",
            ),
            ("kind = \"zclip\"\nalpha = 1.0", "`alpha` must be in [0, 1)"),
            (
                "kind = \"l2\"\nl2 = -0.01",
                "`l2` must be a finite number >= 0",
            ),
            (
                "kind = \"lr_backoff\"\nfactor = 0.0",
                "`factor` must be in (0, 1]",
            ),
            (
                "kind = \"rollback\"\nevery = 0",
                "`every` and `keep` must be at least 1",
            ),
            (
                "kind = \"skip_spike\"\nwindow = 1",
                "`window` must be at least 2",
            ),
        ] {
            let text =
                format!("{base}[[remedies]]\nkind = \"skip_nonfinite\"\n[[remedies]]\n{remedy}\n");
            let err = ExperimentSpec::parse(&text, SpecFormat::Toml, Path::new("s.toml"))
                .err()
                .unwrap_or_else(|| panic!("{remedy}: accepted"));
            assert_eq!(
                err.key_path.as_deref(),
                Some("remedies[1]"),
                "{remedy}: {err}"
            );
            assert!(err.to_string().contains(want), "{remedy}: {err}");
        }
    }
}
