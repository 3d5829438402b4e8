//! `summary`: `summary.json`, the run's stable one-page result.
//!
//! Spec: `{ kind = "summary" }` or `{ kind = "summary", file = "summary.json" }`.
//!
//! | parameter | default          | meaning                                                    |
//! |-----------|------------------|------------------------------------------------------------|
//! | `file`    | `"summary.json"` | path inside the run's `out_dir` (relative, no `..`) |
//!
//! The file is the pretty-printed [`RunSummary`], with these keys in this order (stable;
//! scripts may rely on them): `name`, `seed`, `steps`, `epochs`, `interrupted` (true when a
//! signal ended the run early: the figures and verdict are those so far), `final_train_loss` (the
//! mean loss over the whole training set after the last update), `final_test_loss` (null
//! when not finite or no held-out split), `last_batch_loss` (the last minibatch's loss,
//! before its update), `baseline_loss` and `baseline_test_loss` (the best constant
//! predictor's loss on the training and held-out sets: the training targets' mean for MSE,
//! their class prior for cross-entropy), `train_accuracy` and `test_accuracy`
//! (classification only), `verdict` (`healthy`, `suspect`, `exploding` or `not_learning`),
//! `first_nonfinite_step` (null if none; steps count optimiser updates from 1),
//! `max_grad_norm` (a number, or `"NaN"`/`"inf"`), `signs` (`{sign, first_step, count,
//! layer}`), `remedies` (`{kind, activations}`), `prescriptions` (`{remedy, reason,
//! evidence: {status, seeds_healthy, seeds_run, median_test_loss,
//! median_test_loss_vs_baseline, without_cure_vs_baseline, note}}`, `status` one of `works`,
//! `partly`, `fails`, `untested`).
//!
//! At `start` the reporter creates the directory and checks it accepts files, so a bad
//! output directory is reported before training. At `finish` it writes the file
//! atomically: to `.summary.json.tmp` beside it, synced, then renamed, so a reader never
//! sees a half-written summary and an earlier summary is replaced only by a complete one.

use std::path::{Path, PathBuf};

use gradguard_core::{
    describe_plugin, Event, Family, ParamDoc, PluginInfo, ReportError, Reporter, RunEnd, RunInfo,
    RunSummary,
};
use serde::{Deserialize, Serialize};

/// Writes `summary.json` at the end of the run. See the [module docs](self).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryReporter {
    /// File name inside the run's output directory.
    #[serde(default = "default_file")]
    pub file: String,
    #[serde(skip)]
    path: Option<PathBuf>,
}

fn default_file() -> String {
    "summary.json".into()
}

impl Default for SummaryReporter {
    fn default() -> Self {
        SummaryReporter {
            file: default_file(),
            path: None,
        }
    }
}

/// Writes `summary` to `path` as pretty JSON, atomically (temporary file + rename).
pub fn write_summary_json(summary: &RunSummary, path: &Path) -> Result<(), ReportError> {
    let mut bytes = serde_json::to_vec_pretty(summary).map_err(|e| {
        ReportError::Other(format!(
            "{}: cannot serialise the summary: {e}",
            path.display()
        ))
    })?;
    bytes.push(b'\n');
    crate::write_atomically(path, &bytes)
}

#[typetag::serde(name = "summary")]
impl Reporter for SummaryReporter {
    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError> {
        crate::check_file_name("summary", "file", &self.file)?;
        crate::create_dir(&run.out_dir)?;
        let path = crate::out_path(&run.out_dir, &self.file);
        crate::probe_writable(&path)?;
        self.path = Some(path);
        Ok(())
    }

    fn event(&mut self, _event: &Event) -> Result<(), ReportError> {
        Ok(())
    }

    fn finish(&mut self, end: &RunEnd<'_>) -> Result<(), ReportError> {
        let Some(path) = &self.path else {
            return Err(ReportError::Other(format!(
                "reporter `summary` ({}): finish before start",
                self.file
            )));
        };
        write_summary_json(end.summary, path)
    }
}

describe_plugin!(PluginInfo {
    family: Family::Reporter,
    kind: "summary",
    summary: "Writes summary.json at the end (verdict, first non-finite step, signs, remedies, prescriptions), atomically.",
    params: &[ParamDoc { name: "file", default: Some("\"summary.json\""), doc: "file name inside the output directory" }],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{diagnosis, run_info, summary, unwritable_dir};

    #[test]
    fn writes_the_stable_keys_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("nested/run");
        let mut r = SummaryReporter::default();
        r.start(&run_info(&out)).unwrap();
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
        let keys = [
            "name",
            "seed",
            "steps",
            "epochs",
            "interrupted",
            "final_train_loss",
            "final_test_loss",
            "last_batch_loss",
            "baseline_loss",
            "baseline_test_loss",
            "verdict",
            "first_nonfinite_step",
            "max_grad_norm",
            "signs",
            "remedies",
            "prescriptions",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| {
                text.find(&format!("\n  \"{k}\":"))
                    .unwrap_or_else(|| panic!("key {k} missing: {text}"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "keys out of order: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let top: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(top.len(), keys.len());
        assert_eq!(v["final_train_loss"], serde_json::Value::Null);
        assert_eq!(v["final_test_loss"], 0.25);
        assert_eq!(v["verdict"], "exploding");
        assert_eq!(v["first_nonfinite_step"], 20);
        assert_eq!(
            v["signs"][0],
            serde_json::json!({"sign":"loss_nonfinite","first_step":20,"count":1,"layer":null})
        );
        assert_eq!(
            v["remedies"][0],
            serde_json::json!({"kind":"clip_global_norm","activations":28})
        );
        assert_eq!(v["prescriptions"][0]["remedy"], "clip_global_norm");
        assert_eq!(v["prescriptions"][0]["evidence"]["status"], "untested");
        assert_eq!(v["baseline_loss"], 2.0);
        let back: RunSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert!(!out
            .join(format!(".summary.json.{}.tmp", std::process::id()))
            .exists());
    }

    #[test]
    fn non_finite_max_norm_is_a_string() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = summary();
        s.max_grad_norm = f64::INFINITY;
        let p = tmp.path().join("s.json");
        write_summary_json(&s, &p).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["max_grad_norm"], "inf");
    }

    #[test]
    fn bad_directory_fails_at_start_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = unwritable_dir(tmp.path());
        let mut r = SummaryReporter::default();
        let err = r.start(&run_info(&bad)).unwrap_err().to_string();
        assert!(err.contains("a_file/out"), "{err}");
        let (d, s) = (diagnosis(), summary());
        let err = r
            .finish(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("finish before start"), "{err}");
    }

    #[test]
    fn directory_removed_during_the_run_fails_at_finish_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let mut r = SummaryReporter::default();
        r.start(&run_info(&out)).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        let (d, s) = (diagnosis(), summary());
        let err = r
            .finish(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("run/.summary.json.{}.tmp", std::process::id())),
            "{err}"
        );
    }
}
