//! `tensorboard`: TensorBoard event files with the run's scalars.
//!
//! Spec: `{ kind = "tensorboard" }` or `{ kind = "tensorboard", dir = "tb", layers = true, flush_every = 100 }`.
//!
//! | parameter     | default | meaning                                                               |
//! |---------------|---------|-----------------------------------------------------------------------|
//! | `dir`         | `""`    | directory inside the run's `out_dir` for the event file (`""`: `out_dir` itself) |
//! | `file`        | none    | file name; default `events.out.tfevents.<unix secs>.<hostname>` (TensorBoard only reads names containing `tfevents`) |
//! | `layers`      | `true`  | also write `grad_norm/<tensor>` for every tensor                      |
//! | `flush_every` | `100`   | flush every this many steps (0: only when the buffer fills and at the end) |
//!
//! Scalars per step: `loss`, `grad_norm/global` (before remedies), and `grad_norm/<tensor>`
//! for every tensor. Values are written as `simple_value` (f32, as TensorBoard stores
//! them; a value above f32's range becomes inf, and NaN stays NaN, which TensorBoard shows).
//! The wall time of each record is the time it is written. The format is described in
//! [`crate::tfrecord`], which also reads the files back. Open with
//! `tensorboard --logdir <out_dir>` (or the parent of several runs' directories).
//!
//! The default name holds the start time in seconds; when a file of that name already
//! exists (two runs started in the same second), `.1`, `.2`, ... is appended rather than
//! overwriting it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gradguard_core::{
    describe_plugin, Event, Family, ParamDoc, PluginInfo, ReportError, Reporter, RunEnd, RunInfo,
};
use serde::{Deserialize, Serialize};

use crate::tfrecord::{write_event, TfEvent, TfEventWhat, TfSummary, TfSummaryValue};

/// Writes a TensorBoard event file. See the [module docs](self).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorboardReporter {
    /// Directory inside the run's output directory (`""`: the output directory).
    #[serde(default)]
    pub dir: String,
    /// File name (default: `events.out.tfevents.<secs>.<hostname>`).
    #[serde(default)]
    pub file: Option<String>,
    /// Also write one scalar per tensor.
    #[serde(default = "default_true")]
    pub layers: bool,
    /// Flush every this many steps.
    #[serde(default = "default_flush_every")]
    pub flush_every: u64,
    #[serde(skip)]
    open: Option<Open>,
}

struct Open {
    path: PathBuf,
    writer: BufWriter<File>,
    records: u64,
    /// Tags (`grad_norm/<tensor>`), formatted once per tensor name.
    tags: Vec<(String, String)>,
}

fn default_true() -> bool {
    true
}
fn default_flush_every() -> u64 {
    100
}

impl Default for TensorboardReporter {
    fn default() -> Self {
        TensorboardReporter {
            dir: String::new(),
            file: None,
            layers: true,
            flush_every: default_flush_every(),
            open: None,
        }
    }
}

/// This machine's host name, for event file names: `/proc/sys/kernel/hostname`, else
/// `$HOSTNAME`, else `localhost`; characters other than letters, digits, `-`, `_` and
/// `.` become `_`.
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn create_new(path: &Path) -> Result<Option<File>, ReportError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(ReportError::io(path, e)),
    }
}

impl TensorboardReporter {
    /// The event file being written, once started.
    pub fn path(&self) -> Option<&Path> {
        self.open.as_ref().map(|o| o.path.as_path())
    }

    fn write(&mut self, event: &TfEvent) -> Result<(), ReportError> {
        let Some(open) = self.open.as_mut() else {
            return Err(ReportError::Other(
                "reporter `tensorboard`: event before start".into(),
            ));
        };
        write_event(&mut open.writer, event).map_err(|e| ReportError::io(&open.path, e))?;
        open.records += 1;
        if self.flush_every > 0 && open.records % self.flush_every == 0 {
            open.writer
                .flush()
                .map_err(|e| ReportError::io(&open.path, e))?;
        }
        Ok(())
    }
}

impl TensorboardReporter {
    /// The folder the event files go to: the run directory, or `dir` inside it.
    fn event_dir(&self, run: &RunInfo) -> Result<PathBuf, ReportError> {
        if self.dir.is_empty() {
            Ok(run.out_dir.clone())
        } else {
            crate::check_file_name("tensorboard", "dir", &self.dir)?;
            Ok(run.out_dir.join(&self.dir))
        }
    }
}

#[typetag::serde(name = "tensorboard")]
impl Reporter for TensorboardReporter {
    /// Removes the event files this reporter wrote before the interruption (TensorBoard would
    /// show their steps twice), then starts a new file and replays the steps up to the
    /// checkpoint into it.
    fn resume(&mut self, run: &RunInfo, past: &[Event]) -> Result<(), ReportError> {
        let dir = self.event_dir(run)?;
        if self.file.is_none() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let is_ours = name
                        .to_str()
                        .is_some_and(|n| n.starts_with("events.out.tfevents."));
                    if is_ours && entry.file_type().is_ok_and(|t| t.is_file()) {
                        let path = entry.path();
                        std::fs::remove_file(&path).map_err(|e| ReportError::io(&path, e))?;
                    }
                }
            }
        }
        self.start(run)?;
        for e in past {
            self.event(e)?;
        }
        Ok(())
    }

    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError> {
        let dir = self.event_dir(run)?;
        crate::create_dir(&dir)?;
        let wall = now_secs();
        let (path, file) = match &self.file {
            Some(name) => {
                crate::check_file_name("tensorboard", "file", name)?;
                if !name.contains("tfevents") {
                    return Err(ReportError::Other(format!(
                        "reporter `tensorboard`: `file` = {name:?} must contain \"tfevents\" (TensorBoard reads no other files)"
                    )));
                }
                let path = dir.join(name);
                let file = File::create(&path).map_err(|e| ReportError::io(&path, e))?;
                (path, file)
            }
            None => {
                let base = format!("events.out.tfevents.{}.{}", wall as u64, hostname());
                let mut found = None;
                for k in 0..1000 {
                    let name = if k == 0 {
                        base.clone()
                    } else {
                        format!("{base}.{k}")
                    };
                    let path = dir.join(name);
                    if let Some(f) = create_new(&path)? {
                        found = Some((path, f));
                        break;
                    }
                }
                found.ok_or_else(|| {
                    ReportError::Other(format!(
                        "{}: 1000 event files named {base}* exist already",
                        dir.display()
                    ))
                })?
            }
        };
        self.open = Some(Open {
            path,
            writer: BufWriter::with_capacity(1 << 16, file),
            records: 0,
            tags: Vec::new(),
        });
        let version = TfEvent {
            wall_time: wall,
            step: 0,
            what: Some(TfEventWhat::FileVersion("brain.Event:2".into())),
        };
        self.write(&version)?;
        if let Some(open) = self.open.as_mut() {
            open.writer
                .flush()
                .map_err(|e| ReportError::io(&open.path, e))?;
        }
        Ok(())
    }

    fn event(&mut self, e: &Event) -> Result<(), ReportError> {
        let Some(open) = self.open.as_mut() else {
            return Err(ReportError::Other(format!(
                "reporter `tensorboard`: event at step {} before start",
                e.step
            )));
        };
        let mut value = Vec::with_capacity(2 + e.layers.len());
        value.push(TfSummaryValue {
            tag: "loss".into(),
            simple_value: Some(e.loss as f32),
        });
        value.push(TfSummaryValue {
            tag: "grad_norm/global".into(),
            simple_value: Some(e.grad_norm as f32),
        });
        if self.layers {
            for (i, l) in e.layers.iter().enumerate() {
                if open.tags.get(i).is_none_or(|(name, _)| name != &l.name) {
                    open.tags.truncate(i);
                    open.tags
                        .push((l.name.clone(), format!("grad_norm/{}", l.name)));
                }
                value.push(TfSummaryValue {
                    tag: open.tags[i].1.clone(),
                    simple_value: Some(l.grad_norm as f32),
                });
            }
        }
        let step = i64::try_from(e.step).unwrap_or(i64::MAX);
        let ev = TfEvent {
            wall_time: now_secs(),
            step,
            what: Some(TfEventWhat::Summary(TfSummary { value })),
        };
        self.write(&ev)
    }

    fn finish(&mut self, _end: &RunEnd<'_>) -> Result<(), ReportError> {
        self.flush()
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        if let Some(open) = self.open.as_mut() {
            open.writer
                .flush()
                .map_err(|e| ReportError::io(&open.path, e))?;
        }
        Ok(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let _ = self.writer.flush();
    }
}

describe_plugin!(PluginInfo {
    family: Family::Reporter,
    kind: "tensorboard",
    summary: "Writes a TensorBoard event file: scalars loss, grad_norm/global and grad_norm/<tensor> per step.",
    params: &[
        ParamDoc { name: "dir", default: Some("\"\""), doc: "directory inside the output directory (\"\": the output directory)" },
        ParamDoc { name: "file", default: None, doc: "optional: file name, must contain `tfevents` (absent: events.out.tfevents.<secs>.<hostname>)" },
        ParamDoc { name: "layers", default: Some("true"), doc: "also write grad_norm/<tensor> for every tensor" },
        ParamDoc { name: "flush_every", default: Some("100"), doc: "flush every this many steps (0: only when the buffer fills and at the end)" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{diagnosis, event, run_info, summary, unwritable_dir};
    use crate::tfrecord::{read_events, read_scalars, Scalar};

    #[test]
    fn scalars_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = TensorboardReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=25 {
            r.event(&event(step, 20)).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        let path = r.path().unwrap().to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(&hostname()),
            "{name}"
        );
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 26);
        assert_eq!(
            events[0].what,
            Some(TfEventWhat::FileVersion("brain.Event:2".into()))
        );
        let scalars = read_scalars(&path).unwrap();
        assert_eq!(scalars.len(), 25 * 4);
        // Step 3: loss = 10/3 + 0.5*1.5^3*0.01, global norm 0.5*1.5^3 = 1.6875, weight 0.8x, bias 0.6x.
        let at3: Vec<&Scalar> = scalars.iter().filter(|s| s.step == 3).collect();
        let tags: Vec<&str> = at3.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(
            tags,
            [
                "loss",
                "grad_norm/global",
                "grad_norm/layers.0.weight",
                "grad_norm/layers.0.bias"
            ]
        );
        assert_eq!(at3[0].value, (10.0 / 3.0 + 1.6875 * 0.01) as f32);
        assert_eq!(at3[1].value, 1.6875f32);
        assert_eq!(at3[2].value, 1.35f32);
        assert_eq!(at3[3].value, (1.6875f64 * 0.6) as f32);
        // The NaN loss from step 20 is kept as NaN.
        assert!(scalars
            .iter()
            .find(|s| s.step == 20 && s.tag == "loss")
            .unwrap()
            .value
            .is_nan());
        // For checking by hand with TensorBoard's own reader (see the crate's report).
        if let Ok(dir) = std::env::var("GRADGUARD_KEEP_TFEVENTS") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&path, Path::new(&dir).join(&name));
        }
    }

    /// The file is checked by TensorBoard's own reader (`EventAccumulator`), not only by
    /// [`crate::tfrecord`]: every scalar must load with the same tag, step and f32 bits, NaN
    /// kept. Needs a Python with the `tensorboard` package (`$GRADGUARD_PYTHON`, else
    /// `python3`); `.ci/run` installs one and runs the ignored tests.
    #[test]
    #[ignore = "needs Python with the tensorboard package; CI installs it and runs `cargo test -- --ignored`"]
    fn tensorboards_own_reader_loads_the_scalars() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = TensorboardReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=25 {
            r.event(&event(step, 20)).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        let path = r.path().unwrap().to_path_buf();

        let python = std::env::var("GRADGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/read_tfevents.py");
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot start `{python}` ($GRADGUARD_PYTHON): {e}"));
        assert!(
            out.status.success(),
            "TensorBoard's reader failed (`{python} -m pip install tensorboard`?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let loaded: Vec<(String, i64, f64)> = text
            .lines()
            .map(|line| {
                let mut f = line.split('\t');
                let tag = f.next().unwrap().to_string();
                let step = f.next().unwrap().parse().unwrap();
                let value = f.next().unwrap().parse().unwrap();
                (tag, step, value)
            })
            .collect();
        // 25 steps x (loss, global, two tensors); TensorBoard groups by tag.
        assert_eq!(loaded.len(), 100, "{text}");
        let find = |tag: &str, step: i64| {
            loaded
                .iter()
                .find(|(t, s, _)| t == tag && *s == step)
                .unwrap_or_else(|| panic!("TensorBoard did not load {tag} at step {step}"))
                .2
        };
        // Hand values at step 3 (see `scalars_round_trip`), as f32 widened by Python.
        assert_eq!(find("loss", 3), (10.0 / 3.0 + 1.6875 * 0.01) as f32 as f64);
        assert_eq!(find("grad_norm/global", 3), 1.6875);
        assert_eq!(find("grad_norm/layers.0.weight", 3), 1.35f32 as f64);
        assert!(find("loss", 20).is_nan() && find("grad_norm/global", 21).is_nan());
        // Every scalar gradguard's reader sees, TensorBoard sees with the same bits.
        for s in read_scalars(&path).unwrap() {
            let v = find(&s.tag, s.step) as f32;
            assert_eq!(v.to_bits(), s.value.to_bits(), "{} at {}", s.tag, s.step);
        }
    }

    #[test]
    fn same_second_does_not_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = TensorboardReporter {
            dir: "tb".into(),
            ..Default::default()
        };
        let mut b = TensorboardReporter {
            dir: "tb".into(),
            layers: false,
            ..Default::default()
        };
        a.start(&run_info(tmp.path())).unwrap();
        b.start(&run_info(tmp.path())).unwrap();
        assert_ne!(a.path(), b.path());
        b.event(&event(1, 9)).unwrap();
        drop(b);
        let files = std::fs::read_dir(tmp.path().join("tb")).unwrap().count();
        assert!(files == 2, "{files}");
    }

    #[test]
    fn layers_off_and_named_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = TensorboardReporter {
            file: Some("x.tfevents".into()),
            layers: false,
            ..Default::default()
        };
        r.start(&run_info(tmp.path())).unwrap();
        r.event(&event(1, 9)).unwrap();
        drop(r);
        let tags: Vec<String> = read_scalars(&tmp.path().join("x.tfevents"))
            .unwrap()
            .into_iter()
            .map(|s| s.tag)
            .collect();
        assert_eq!(tags, ["loss", "grad_norm/global"]);
    }

    #[test]
    fn file_names_without_tfevents_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = TensorboardReporter {
            file: Some("scalars.bin".into()),
            ..Default::default()
        };
        let err = r.start(&run_info(tmp.path())).unwrap_err().to_string();
        assert!(err.contains("must contain \"tfevents\""), "{err}");
    }

    #[test]
    fn errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = TensorboardReporter::default();
        let err = r
            .start(&run_info(&unwritable_dir(tmp.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a_file/out"), "{err}");
        assert!(r
            .event(&event(1, 9))
            .unwrap_err()
            .to_string()
            .contains("before start"));
        // A full disk: a link to /dev/full opens fine and fails every write (ENOSPC).
        let full = tmp.path().join("full.tfevents");
        let have_full = Path::new("/dev/full").exists();
        if !have_full {
            // No silent skip: opting out is explicit.
            assert!(
                std::env::var("GRADGUARD_SKIP_DEV_FULL").is_ok_and(|v| v == "1"),
                "/dev/full is missing: this test needs it (set GRADGUARD_SKIP_DEV_FULL=1 to skip)"
            );
            eprintln!(
                "SKIPPED the full-disk case (GRADGUARD_SKIP_DEV_FULL=1): /dev/full is missing"
            );
        } else {
            std::os::unix::fs::symlink("/dev/full", &full).expect("symlink to /dev/full");
            let mut r = TensorboardReporter {
                file: Some("full.tfevents".into()),
                ..Default::default()
            };
            let err = r.start(&run_info(tmp.path())).unwrap_err().to_string();
            assert!(
                err.contains("full.tfevents:") && err.contains("space"),
                "{err}"
            );
        }
    }
}
