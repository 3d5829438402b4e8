//! # gradguard-report: what a run leaves behind for people and tools
//!
//! Each reporter is a [`Reporter`](gradguard_core::Reporter) plugin in its own file, named in
//! specs by its `kind`:
//!
//! | kind          | writes (default name, inside `RunInfo::out_dir`)                         |
//! |---------------|---------------------------------------------------------------------------|
//! | `jsonl`       | `events.jsonl`: one [`Event`](gradguard_core::Event) per line             |
//! | `summary`     | `summary.json`: the [`RunSummary`](gradguard_core::RunSummary), atomically |
//! | `html`        | `report.html`: one self-contained page, SVG charts, checklist, cures       |
//! | `tensorboard` | `events.out.tfevents.<secs>.<host>`: TensorBoard scalars                    |
//! | `console`     | a progress bar (or plain lines), then the diagnosis in plain words         |
//!
//! Besides the plugins: [`compare`] renders the comparison of several variants of one
//! experiment (HTML page and console table), [`events_file`] reads `events.jsonl` back,
//! and [`tfrecord`] reads TensorBoard event files back (checking every CRC).
//!
//! What it may depend on: `gradguard-core` only of gradguard's crates; no dfdx.
//! Every I/O error names the file it concerns; nothing here panics on bad input.

#![warn(missing_docs)]

pub mod chart;
pub mod color;
pub mod compare;
pub mod console;
pub mod events_file;
pub mod html;
pub mod html_page;
pub mod jsonl;
pub mod series;
pub mod summary;
pub mod tensorboard;
pub mod tfrecord;

use std::path::{Path, PathBuf};

use gradguard_core::ReportError;

pub use compare::{format_compare_table, render_compare_html, CompareVariant, SeedBands};
pub use console::ConsoleReporter;
pub use events_file::{read_events_jsonl, EventsReader};
pub use html::HtmlReporter;
pub use jsonl::JsonlReporter;
pub use series::BoundedSeries;
pub use summary::{write_summary_json, SummaryReporter};
pub use tensorboard::TensorboardReporter;

/// The reporter kinds this crate registers. Calling it also keeps the crate's typetag
/// registrations in the final binary.
pub fn builtin_kinds() -> &'static [&'static str] {
    &["console", "html", "jsonl", "summary", "tensorboard"]
}

/// Creates `dir` (and its parents), naming it in the error.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))
}

/// `out_dir/file` (a `file` checked by [`check_file_name`] stays inside `out_dir`).
pub(crate) fn out_path(out_dir: &Path, file: &str) -> PathBuf {
    out_dir.join(file)
}

/// Checks a configured file name: not empty, not a directory name, and inside the run
/// directory: relative, with no `..` component (a spec must not write elsewhere).
pub(crate) fn check_file_name(kind: &str, key: &str, file: &str) -> Result<(), ReportError> {
    if file.trim().is_empty() || file.ends_with('/') || file.ends_with(std::path::MAIN_SEPARATOR) {
        return Err(ReportError::Other(format!(
            "reporter `{kind}`: `{key}` must name a file, got {file:?}"
        )));
    }
    let p = Path::new(file);
    if p.is_absolute()
        || file.starts_with('/')
        || file.starts_with('\\')
        || p.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::Prefix(_)
            )
        })
    {
        return Err(ReportError::Other(format!(
            "reporter `{kind}`: `{key}` must be a path inside the run directory (relative, without `..`), got {file:?}"
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: to a temporary file unique to this process in the
/// same directory (`.<name>.<pid>.tmp`), synced, then renamed over `path`. A reader never sees a half-written file; on error the temporary
/// file is removed and the error names the file that failed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    use std::io::Write;
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ReportError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| ReportError::io(&tmp, e))?;
        f.sync_all().map_err(|e| ReportError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ReportError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The temporary name used by [`write_atomically`]: `.<name>.<pid>.tmp` beside `path`, so
/// two processes writing the same file never share a temporary file.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Checks early (at `start`) that `path`'s directory accepts new files, so an unwritable
/// output directory is reported before training rather than after it.
pub(crate) fn probe_writable(path: &Path) -> Result<(), ReportError> {
    let tmp = temp_path(path);
    std::fs::File::create(&tmp).map_err(|e| ReportError::io(&tmp, e))?;
    std::fs::remove_file(&tmp).map_err(|e| ReportError::io(&tmp, e))
}

/// A number for people: gradguard's one formatter, [`gradguard_core::float::fmt_short`]
/// (three significant digits, scientific at 10^4 and above or below 10^-3, `NaN` / `inf` /
/// `-inf`), re-exported under the name the reporters have always used.
pub use gradguard_core::float::fmt_short as format_number;

#[cfg(test)]
pub(crate) mod test_util {
    //! Synthetic runs for the tests of every reporter.
    use gradguard_core::{
        Action, ActionRecord, ClipScope, Diagnosis, Event, Finding, LayerRecord, ParamInfo,
        Prescription, RemedyCapabilities, Role, RunInfo, RunSummary, Sign, SignSummary,
        SummaryRemedy, SummarySign, Verdict,
    };
    use std::path::Path;

    pub fn run_info(dir: &Path) -> RunInfo {
        RunInfo {
            name: "synthetic".into(),
            seed: 7,
            out_dir: dir.to_path_buf(),
            params: vec![
                ParamInfo {
                    name: "layers.0.weight".into(),
                    shape: vec![4, 3],
                    role: Role::Weight,
                },
                ParamInfo {
                    name: "layers.0.bias".into(),
                    shape: vec![4],
                    role: Role::Bias,
                },
            ],
            clip_threshold: Some(1.0),
        }
    }

    /// An exploding run: the norm grows 1.5x per step, the loss goes NaN at `nan_from`.
    pub fn event(step: u64, nan_from: u64) -> Event {
        let g = 0.5 * 1.5f64.powi(step as i32);
        let loss = if step >= nan_from {
            f64::NAN
        } else {
            10.0 / step as f64 + g * 0.01
        };
        let mut findings = Vec::new();
        let mut actions = Vec::new();
        if step == nan_from {
            findings.push(Finding::new(
                Sign::LossNonfinite,
                step,
                None,
                loss,
                0.0,
                "the loss is NaN",
            ));
        }
        if g > 1.0 {
            actions.push(ActionRecord::new(
                "clip_global_norm",
                &RemedyCapabilities::NONE.clipping(ClipScope::GlobalNorm),
                true,
                Action::Continue,
            ));
        }
        Event {
            step,
            epoch: Some(1 + step / 10),
            loss,
            penalty: None,
            grad_norm: if step >= nan_from { f64::NAN } else { g },
            grad_norm_after: Some(g.min(1.0)),
            held_out_loss: None,
            grad_nonfinite: 0,
            lr: Some(0.01),
            layers: vec![
                LayerRecord {
                    name: "layers.0.weight".into(),
                    grad_norm: g * 0.8,
                    grad_max_abs: g * 0.5,
                    grad_nonfinite: 0,
                    weight_norm: 2.0,
                    update_ratio: (step > 1).then_some(0.001 * step as f64),
                },
                LayerRecord {
                    name: "layers.0.bias".into(),
                    grad_norm: g * 0.6,
                    grad_max_abs: g * 0.4,
                    grad_nonfinite: 0,
                    weight_norm: 0.5,
                    update_ratio: (step > 1).then_some(0.002 * step as f64),
                },
            ],
            series: Vec::new(),
            findings,
            actions,
            applied: true,
        }
    }

    pub fn diagnosis() -> Diagnosis {
        Diagnosis {
            verdict: Verdict::Exploding,
            rule: "the loss became non-finite at step 20".into(),
            checklist: Sign::ALL
                .iter()
                .map(|&s| SignSummary {
                    sign: s,
                    seen: s == Sign::LossNonfinite,
                    first_step: (s == Sign::LossNonfinite).then_some(20),
                    count: (s == Sign::LossNonfinite) as u64,
                    layer: None,
                    first_message: (s == Sign::LossNonfinite).then(|| "the loss is NaN <b>".into()),
                })
                .collect(),
            origin: Some("a gradient spike on layers.0.weight at step 5".into()),
            prescriptions: vec![Prescription::untested(
                gradguard_core::Cure::Remedy("clip_global_norm".into()),
                "bounds the update & keeps the loss finite",
            )],
            first_nonfinite_step: Some(20),
            max_grad_norm: 1e3,
            verdict_step: Some(20),
        }
    }

    pub fn summary() -> RunSummary {
        RunSummary {
            name: "synthetic".into(),
            seed: 7,
            steps: 30,
            epochs: 3,
            interrupted: false,
            final_train_loss: None,
            final_test_loss: Some(0.25),
            last_batch_loss: None,
            baseline_loss: Some(2.0),
            baseline_test_loss: Some(2.5),
            train_accuracy: None,
            test_accuracy: None,
            verdict: Verdict::Exploding,
            first_nonfinite_step: Some(20),
            max_grad_norm: 1e3,
            signs: vec![SummarySign {
                sign: Sign::LossNonfinite,
                first_step: 20,
                count: 1,
                layer: None,
            }],
            remedies: vec![SummaryRemedy {
                kind: "clip_global_norm".into(),
                activations: 28,
            }],
            prescriptions: diagnosis().prescriptions,
        }
    }

    /// How plotters' SVG backend writes a text element's content.
    pub fn svg_text(text: &str) -> String {
        format!(">\n{text}\n</text>")
    }

    /// A directory that cannot be created: a path under a regular file.
    pub fn unwritable_dir(tmp: &Path) -> std::path::PathBuf {
        let file = tmp.join("a_file");
        std::fs::write(&file, b"x").unwrap();
        file.join("out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::{registry::plugin_info, registry::registered_kinds, Family, Reporter};

    #[test]
    fn documented_defaults_are_the_ones_serde_fills_in() {
        assert_eq!(builtin_kinds().len(), 5);
        let checked =
            gradguard_testkit::assert_documented_defaults(gradguard_core::Family::Reporter);
        assert!(checked >= 4, "only {checked} defaults compared");
    }

    #[test]
    fn builtin_kinds_are_registered_and_described() {
        let registered = registered_kinds(Family::Reporter);
        let mut ours: Vec<String> = builtin_kinds().iter().map(|s| s.to_string()).collect();
        ours.sort();
        // This crate's tests link only this crate's reporters.
        assert_eq!(registered, ours);
        for kind in builtin_kinds() {
            let info =
                plugin_info(Family::Reporter, kind).unwrap_or_else(|| panic!("{kind} undescribed"));
            assert!(!info.summary.is_empty());
            let spec = format!(
                "r = {{ kind = \"{kind}\"{}{} }}",
                if info.example.is_empty() { "" } else { ", " },
                info.example
            );
            #[derive(serde::Deserialize)]
            struct Wrapper {
                #[allow(dead_code)]
                r: Box<dyn Reporter>,
            }
            if let Err(e) = toml::from_str::<Wrapper>(&spec) {
                panic!("example of `{kind}` ({spec}) does not load: {e}");
            }
        }
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1234.5678), "1235");
        assert_eq!(format_number(0.012345), "0.0123");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(1.5e33), "1.50e33");
        assert_eq!(format_number(2e-5), "2.00e-5");
    }

    #[test]
    fn atomic_write_replaces_and_names_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!temp_path(&p).exists());
        let bad = test_util::unwritable_dir(tmp.path()).join("x.json");
        let err = write_atomically(&bad, b"x").unwrap_err().to_string();
        let unique = format!("a_file/out/.x.json.{}.tmp", std::process::id());
        assert!(err.contains(&unique), "{err}");
    }
}
