//! `jsonl`: the events log, one [`Event`] per line.
//!
//! Spec: `{ kind = "jsonl" }` or `{ kind = "jsonl", file = "events.jsonl", flush_every = 100 }`.
//!
//! | parameter     | default          | meaning                                                    |
//! |---------------|------------------|------------------------------------------------------------|
//! | `file`        | `"events.jsonl"` | path inside the run's `out_dir` (relative, no `..`) |
//! | `flush_every` | `100`            | flush to the OS every this many steps (0: only when the buffer fills, at finish and on drop) |
//!
//! Each line is `serde_json::to_string(&event)`: the schema of [`Event`] (step, loss, global
//! gradient norm before and after remedies, per-layer norms and update ratios, findings,
//! actions); non-finite numbers are written as the strings `"NaN"`, `"inf"`, `"-inf"`
//! (see [`gradguard_core::float`]). The output depends only on the events, so the same
//! run gives a byte-identical file. The file is truncated at `start`. Lines are collected in
//! memory and handed to the OS in whole lines only: every `flush_every` steps, whenever 64 KiB
//! of complete lines are waiting, at `finish`, and when the reporter is dropped (so a run
//! that stops on an error keeps every line written so far, and a process killed at any point
//! leaves whole lines, at worst followed by one line the kernel had not finished writing).
//! Read it back with [`read_events_jsonl`](crate::read_events_jsonl).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use gradguard_core::{
    describe_plugin, Event, Family, ParamDoc, PluginInfo, ReportError, Reporter, RunEnd, RunInfo,
};
use serde::{Deserialize, Serialize};

/// Writes `events.jsonl`. See the [module docs](self).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlReporter {
    /// File name inside the run's output directory.
    #[serde(default = "default_file")]
    pub file: String,
    /// Flush every this many steps (0: only when the buffer fills and at the end).
    #[serde(default = "default_flush_every")]
    pub flush_every: u64,
    #[serde(skip)]
    open: Option<OpenFile>,
}

struct OpenFile {
    path: PathBuf,
    file: File,
    /// Complete lines not yet handed to the OS.
    pending: Vec<u8>,
    lines: u64,
}

/// Whole lines waiting beyond this many bytes are written out.
const PENDING_LIMIT: usize = 1 << 16;

impl OpenFile {
    /// Hands every pending (complete) line to the OS in one write.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

fn default_file() -> String {
    "events.jsonl".into()
}

fn default_flush_every() -> u64 {
    100
}

impl Default for JsonlReporter {
    fn default() -> Self {
        JsonlReporter {
            file: default_file(),
            flush_every: default_flush_every(),
            open: None,
        }
    }
}

impl JsonlReporter {
    /// The file being written, once started.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.open.as_ref().map(|o| o.path.as_path())
    }
}

#[typetag::serde(name = "jsonl")]
impl Reporter for JsonlReporter {
    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError> {
        crate::check_file_name("jsonl", "file", &self.file)?;
        crate::create_dir(&run.out_dir)?;
        let path = crate::out_path(&run.out_dir, &self.file);
        let file = File::create(&path).map_err(|e| ReportError::io(&path, e))?;
        self.open = Some(OpenFile {
            path,
            file,
            pending: Vec::with_capacity(PENDING_LIMIT + 4096),
            lines: 0,
        });
        Ok(())
    }

    /// Keeps the first `past.len()` lines of the log as they are (bytes unchanged: the
    /// events the checkpoint covers) and appends after them; whatever followed (steps after the
    /// checkpoint, a torn last line) is cut off. A log with fewer lines is rewritten from
    /// `past`.
    fn resume(&mut self, run: &RunInfo, past: &[Event]) -> Result<(), ReportError> {
        crate::check_file_name("jsonl", "file", &self.file)?;
        let path = crate::out_path(&run.out_dir, &self.file);
        let keep = match std::fs::File::open(&path) {
            Ok(f) => offset_after_lines(f, past.len()).map_err(|e| ReportError::io(&path, e))?,
            Err(_) => None,
        };
        let Some(offset) = keep else {
            self.start(run)?;
            for e in past {
                self.event(e)?;
            }
            return Ok(());
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| ReportError::io(&path, e))?;
        file.set_len(offset)
            .map_err(|e| ReportError::io(&path, e))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
            .map_err(|e| ReportError::io(&path, e))?;
        self.open = Some(OpenFile {
            path,
            file,
            pending: Vec::with_capacity(PENDING_LIMIT + 4096),
            lines: past.len() as u64,
        });
        Ok(())
    }

    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let Some(open) = self.open.as_mut() else {
            return Err(ReportError::Other(format!(
                "reporter `jsonl` ({}): event at step {} before start",
                self.file, event.step
            )));
        };
        let line_start = open.pending.len();
        if let Err(e) = serde_json::to_writer(&mut open.pending, event) {
            // Never leave half a line pending.
            open.pending.truncate(line_start);
            return Err(ReportError::Other(format!(
                "{}: step {}: {e}",
                open.path.display(),
                event.step
            )));
        }
        open.pending.push(b'\n');
        open.lines += 1;
        let due = self.flush_every > 0 && open.lines % self.flush_every == 0;
        if due || open.pending.len() >= PENDING_LIMIT {
            open.write_pending()
                .map_err(|e| ReportError::io(&open.path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self, _end: &RunEnd<'_>) -> Result<(), ReportError> {
        self.flush()
    }

    /// Writes the pending lines and syncs the file, so a checkpoint taken next never covers
    /// events the log lacks.
    fn flush(&mut self) -> Result<(), ReportError> {
        if let Some(open) = self.open.as_mut() {
            open.write_pending()
                .and_then(|()| open.file.sync_data())
                .map_err(|e| ReportError::io(&open.path, e))?;
        }
        Ok(())
    }
}

/// The byte offset just after the first `lines` complete (newline-ended) lines of `file`, or
/// `None` when it has fewer.
fn offset_after_lines(file: File, lines: usize) -> std::io::Result<Option<u64>> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(file);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for _ in 0..lines {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        offset += n as u64;
    }
    Ok(Some(offset))
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // A run that stops on an error keeps every complete line.
        let _ = self.write_pending();
    }
}

describe_plugin!(PluginInfo {
    family: Family::Reporter,
    kind: "jsonl",
    summary: "Writes events.jsonl: one JSON object per step (loss, norms, per-layer figures, findings, actions).",
    params: &[
        ParamDoc { name: "file", default: Some("\"events.jsonl\""), doc: "file name inside the output directory" },
        ParamDoc {
            name: "flush_every",
            default: Some("100"),
            doc: "flush every this many steps (0: only when the buffer fills and at the end)",
        },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{diagnosis, event, run_info, summary, unwritable_dir};

    #[test]
    fn writes_one_event_per_line_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let mut r = JsonlReporter::default();
        r.start(&run_info(&out)).unwrap();
        for step in 1..=25 {
            r.event(&event(step, 20)).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 25);
        assert!(text.ends_with('\n'));
        assert!(lines[0].starts_with("{\"step\":1,"), "{}", lines[0]);
        // The NaN loss is written as a string, not dropped.
        assert!(lines[19].contains("\"loss\":\"NaN\""), "{}", lines[19]);
        let back: Event = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(back, event(3, 20));
        // Same events, same bytes.
        let mut again = JsonlReporter {
            file: "again.jsonl".into(),
            ..Default::default()
        };
        again.start(&run_info(&out)).unwrap();
        for step in 1..=25 {
            again.event(&event(step, 20)).unwrap();
        }
        drop(again);
        assert_eq!(
            std::fs::read(out.join("again.jsonl")).unwrap(),
            text.as_bytes()
        );
    }

    #[test]
    fn flushes_every_n_steps_and_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = JsonlReporter {
            flush_every: 2,
            ..Default::default()
        };
        r.start(&run_info(tmp.path())).unwrap();
        let path = tmp.path().join("events.jsonl");
        r.event(&event(1, 99)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 0);
        r.event(&event(2, 99)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        r.event(&event(3, 99)).unwrap();
        drop(r);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn unwritable_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = unwritable_dir(tmp.path());
        let mut r = JsonlReporter::default();
        let err = r.start(&run_info(&bad)).unwrap_err().to_string();
        assert!(err.contains("a_file/out"), "{err}");
        // Events before a successful start are an error, not a panic.
        let err = r.event(&event(1, 99)).unwrap_err().to_string();
        assert!(err.contains("before start"), "{err}");
    }

    #[test]
    fn write_errors_name_the_file() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        if !std::path::Path::new("/dev/full").exists() {
            // No silent skip: opting out is explicit.
            assert!(
                std::env::var("GRADGUARD_SKIP_DEV_FULL").is_ok_and(|v| v == "1"),
                "/dev/full is missing: this test needs it (set GRADGUARD_SKIP_DEV_FULL=1 to skip)"
            );
            eprintln!("SKIPPED write_errors_name_the_file (GRADGUARD_SKIP_DEV_FULL=1): /dev/full is missing");
            return;
        }
        // The reporter writes only inside the run directory: the full device is reached
        // through a link there.
        let dir = std::env::temp_dir().join(format!("gg-jsonl-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.join("full.jsonl")).unwrap();
        let mut r = JsonlReporter {
            file: "full.jsonl".into(),
            flush_every: 1,
            ..Default::default()
        };
        r.start(&run_info(&dir)).unwrap();
        let err = r.event(&event(1, 99)).unwrap_err().to_string();
        assert!(err.contains("full.jsonl:"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_outside_the_run_directory_are_refused() {
        for file in ["/tmp/victim", "../../victim", "a/../../b"] {
            let mut r = JsonlReporter {
                file: file.into(),
                ..Default::default()
            };
            let err = r
                .start(&run_info(std::path::Path::new("/tmp/gg-run")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("must be a path inside the run directory"),
                "{file}: {err}"
            );
        }
    }

    #[test]
    fn spec_parameters_and_typos() {
        let r: Box<dyn Reporter> =
            serde_json::from_str(r#"{"kind":"jsonl","file":"e.jsonl"}"#).unwrap();
        drop(r);
        let err = serde_json::from_str::<Box<dyn Reporter>>(r#"{"kind":"jsonl","fille":"e"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown field `fille`"), "{err}");
        let mut empty = JsonlReporter {
            file: " ".into(),
            ..Default::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        assert!(empty
            .start(&run_info(tmp.path()))
            .unwrap_err()
            .to_string()
            .contains("must name a file"));
    }
}
