//! Reading `events.jsonl` back: one [`Event`] per line, errors naming file and line.
//!
//! [`EventsReader`] streams (constant memory, for `diagnose` on long logs);
//! [`read_events_jsonl`] collects every event. Blank lines are skipped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use gradguard_core::{Event, ReportError};

/// Iterates over the events of an `events.jsonl` file.
pub struct EventsReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line_no: usize,
}

impl EventsReader {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReportError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| ReportError::io(&path, e))?;
        Ok(EventsReader {
            path,
            lines: BufReader::new(file).lines(),
            line_no: 0,
        })
    }
}

impl Iterator for EventsReader {
    type Item = Result<Event, ReportError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(ReportError::io(&self.path, e))),
            };
            self.line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            return Some(serde_json::from_str(&line).map_err(|e| {
                ReportError::Other(format!(
                    "{}:{}:{}: not an event: {e}",
                    self.path.display(),
                    self.line_no,
                    e.column()
                ))
            }));
        }
    }
}

/// Reads every event of `path`.
pub fn read_events_jsonl(path: impl AsRef<Path>) -> Result<Vec<Event>, ReportError> {
    EventsReader::open(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::event;

    #[test]
    fn reads_back_and_names_bad_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("events.jsonl");
        let a = serde_json::to_string(&event(1, 2)).unwrap();
        let b = serde_json::to_string(&event(2, 2)).unwrap();
        std::fs::write(&p, format!("{a}\n\n{b}\n{{\"step\": \"x\"}}\n")).unwrap();
        let mut it = EventsReader::open(&p).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), event(1, 2));
        let second = it.next().unwrap().unwrap();
        assert!(second.loss.is_nan());
        let err = it.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("events.jsonl:4:"), "{err}");
        assert!(it.next().is_none());
        let err = read_events_jsonl(tmp.path().join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }
}
