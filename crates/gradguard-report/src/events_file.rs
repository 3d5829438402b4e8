//! Reading `events.jsonl` back: one [`Event`] per line, errors naming file and line.
//!
//! [`EventsReader`] streams (constant memory, for `diagnose` on long logs);
//! [`read_events_jsonl`] collects every event. Blank lines are skipped, and so, with a
//! warning, is a final line without its newline that does not parse: the tail a killed writer
//! left (gradguard's jsonl reporter writes whole lines, but the kernel may not have finished
//! the last write).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use gradguard_core::{Event, ReportError};

/// The longest line read (64 MiB); a longer one is an error, not unbounded growth.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Iterates over the events of an `events.jsonl` file.
pub struct EventsReader {
    path: PathBuf,
    reader: BufReader<File>,
    buf: String,
    line_no: usize,
}

impl EventsReader {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReportError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| ReportError::io(&path, e))?;
        Ok(EventsReader {
            path,
            reader: BufReader::new(file),
            buf: String::new(),
            line_no: 0,
        })
    }
}

impl Iterator for EventsReader {
    type Item = Result<Event, ReportError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match (&mut self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_line(&mut self.buf)
            {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(ReportError::io(&self.path, e))),
            }
            self.line_no += 1;
            if self.buf.len() > MAX_LINE_BYTES {
                return Some(Err(ReportError::Other(format!(
                    "{}:{}: a line longer than {MAX_LINE_BYTES} bytes: not an events log",
                    self.path.display(),
                    self.line_no
                ))));
            }
            let line = self.buf.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            let torn = !self.buf.ends_with('\n');
            return match serde_json::from_str(line) {
                Ok(event) => Some(Ok(event)),
                Err(e) if torn => {
                    tracing::warn!(
                        "{}:{}: skipped a torn last line (no newline, not a whole event: {e})",
                        self.path.display(),
                        self.line_no
                    );
                    None
                }
                Err(e) => Some(Err(ReportError::Other(format!(
                    "{}:{}:{}: not an event: {e}",
                    self.path.display(),
                    self.line_no,
                    e.column()
                )))),
            };
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
        // A torn tail (a killed writer's last line, no newline) is skipped; the same text
        // followed by a newline is an error.
        let torn = &b[..b.len() / 2];
        std::fs::write(&p, format!("{a}\n{torn}")).unwrap();
        assert_eq!(read_events_jsonl(&p).unwrap(), vec![event(1, 2)]);
        std::fs::write(&p, format!("{a}\n{torn}\n")).unwrap();
        let err = read_events_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("events.jsonl:2:"), "{err}");
        let err = read_events_jsonl(tmp.path().join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }
}
