//! A run's checkpoints on disk, and what a resumed run reads back.
//!
//! ```text
//! <run dir>/checkpoints/checkpoint-00000040.safetensors   (Trainer::save_checkpoint_with)
//!   (numbered by the events recorded before it: steps, counting each attempt, so the number
//!   grows even when a rollback sends the trainer's step back)
//!   param.* optim.* state.*     the trainer: weights, optimiser state, carried states
//!   ring.<i>.*                  the snapshots kept for rollback
//!   extra.guard                 Guard::save_state: detectors', remedies' and the diagnoser's state
//!   extra.run                   JSON: how many events the checkpoint covers, the step
//! ```
//!
//! Before a checkpoint is written every reporter is flushed, so the events log holds at least
//! the events it covers. Resuming takes the newest checkpoint that loads, reads that many
//! events back from `events.jsonl` (stopping at a torn last line, which is then cut off) and
//! hands them to the reporters ([`gradguard_core::Reporter::resume`]).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use gradguard_core::{Event, PluginState};
use gradguard_detectors::offline::{parse_event_line, MAX_LINE_BYTES};
use gradguard_engine::Guard;
use gradguard_models::{CheckpointExtras, Snapshot, Trainer};
use serde::{Deserialize, Serialize};

use crate::run::RunError;

/// The folder of a run's checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// The events log a resumed run reads back (the `jsonl` reporter's default file).
pub const EVENTS_FILE: &str = "events.jsonl";

/// What the loop keeps beside the trainer's and the Guard's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunState {
    /// The events recorded up to the checkpoint (the first lines of the events log).
    pub events: u64,
    /// The trainer's step at the checkpoint.
    pub step: u64,
}

/// A checkpoint found in a run directory.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub path: PathBuf,
    pub guard: PluginState,
    pub run: RunState,
    pub snapshots: Vec<Snapshot>,
    pub past: Vec<Event>,
}

fn file_name(events: u64) -> String {
    format!("checkpoint-{events:08}.safetensors")
}

/// The checkpoints in `run_dir` with the number of events each covers, newest first.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(run_dir.join(CHECKPOINT_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let step = name
                .to_str()?
                .strip_prefix("checkpoint-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    found
}

/// Writes a checkpoint after the step just recorded: flushes the reporters, saves the trainer,
/// the snapshots and the Guard's state atomically, then deletes all but the newest `keep`.
pub(crate) fn write_checkpoint(
    run_dir: &Path,
    trainer: &Trainer,
    ring: &std::collections::VecDeque<Snapshot>,
    guard: &mut Guard,
    keep: usize,
) -> Result<PathBuf, RunError> {
    guard.flush_reporters()?;
    let state = guard.save_state()?;
    let run = RunState {
        events: guard.steps(),
        step: trainer.steps_done(),
    };
    let run_json = serde_json::to_vec(&run).unwrap_or_default();
    let dir = run_dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| gradguard_core::ReportError::io(&dir, e))?;
    let path = dir.join(file_name(run.events));
    let snaps: Vec<&Snapshot> = ring.iter().collect();
    trainer.save_checkpoint_with(
        &path,
        &snaps,
        &[("guard", state.as_bytes()), ("run", &run_json)],
    )?;
    for (_, old) in list_checkpoints(run_dir).into_iter().skip(keep.max(1)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// [`write_checkpoint`], with a failure said (a warning naming `when`) rather than returned: a
/// run is never ended by a checkpoint it could not write, and the older ones stay.
pub(crate) fn checkpoint_or_warn(
    run_dir: &Path,
    trainer: &Trainer,
    ring: &std::collections::VecDeque<Snapshot>,
    guard: &mut Guard,
    keep: usize,
    when: &str,
) {
    match write_checkpoint(run_dir, trainer, ring, guard, keep) {
        Ok(path) => tracing::debug!("checkpoint {}", path.display()),
        Err(e) => tracing::warn!("{when}: no checkpoint written: {e}"),
    }
}

/// Loads the newest checkpoint of `run_dir` that loads into `trainer` (a damaged one is
/// skipped with a warning), and the events it covers.
pub(crate) fn load_newest(run_dir: &Path, trainer: &mut Trainer) -> Result<Resumed, RunError> {
    // A run that ended (not interrupted) has nothing to resume: going on from its last
    // checkpoint would only redo its last steps.
    let summary = run_dir.join("summary.json");
    if let Ok(text) = std::fs::read_to_string(&summary) {
        let interrupted = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("interrupted").and_then(serde_json::Value::as_bool));
        if interrupted == Some(false) {
            return Err(RunError::Resume(format!(
                "{} finished ({} says so): there is nothing to resume",
                run_dir.display(),
                summary.display()
            )));
        }
    }
    let found = list_checkpoints(run_dir);
    if found.is_empty() {
        return Err(RunError::Resume(format!(
            "{} holds no checkpoint (`{CHECKPOINT_DIR}/checkpoint-*.safetensors`): the run wrote none before it stopped (see `checkpoint` in [train]), so it cannot be resumed",
            run_dir.display()
        )));
    }
    let mut last_error = String::new();
    for (_, path) in found {
        match load_one(run_dir, &path, trainer) {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!("skipping checkpoint {}: {e}", path.display());
                last_error = e.to_string();
            }
        }
    }
    Err(RunError::Resume(format!(
        "no checkpoint in {} could be loaded; the last error: {last_error}",
        run_dir.join(CHECKPOINT_DIR).display()
    )))
}

fn load_one(run_dir: &Path, path: &Path, trainer: &mut Trainer) -> Result<Resumed, RunError> {
    let CheckpointExtras {
        snapshots,
        mut blobs,
    } = trainer.load_checkpoint_with(path)?;
    let missing = |what: &str| {
        RunError::Resume(format!(
            "{}: not a run checkpoint (it has no `extra.{what}`)",
            path.display()
        ))
    };
    let guard = PluginState::from_bytes(blobs.remove("guard").ok_or_else(|| missing("guard"))?);
    let run: RunState = serde_json::from_slice(&blobs.remove("run").ok_or_else(|| missing("run"))?)
        .map_err(|e| RunError::Resume(format!("{}: `extra.run`: {e}", path.display())))?;
    let past = read_events(&run_dir.join(EVENTS_FILE), run.events)?;
    Ok(Resumed {
        path: path.to_path_buf(),
        guard,
        run,
        snapshots,
        past,
    })
}

/// The first `n` events of the log at `path`. Lines are bounded ([`MAX_LINE_BYTES`]); a log
/// with fewer than `n` complete events is an error naming the line.
pub(crate) fn read_events(path: &Path, n: u64) -> Result<Vec<Event>, RunError> {
    let file = std::fs::File::open(path).map_err(|e| {
        RunError::Resume(format!(
            "{}: {e}: a run resumes from its events log, which the `jsonl` reporter writes",
            path.display()
        ))
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut events = Vec::with_capacity(n.min(1 << 20) as usize);
    let mut buf = Vec::new();
    let mut line = 0u64;
    while (events.len() as u64) < n {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| RunError::Resume(format!("{}: {e}", path.display())))?;
        line += 1;
        let short = |why: &str| {
            RunError::Resume(format!(
                "{}: line {line}: {why}; the checkpoint covers {n} events, the log holds {} before it",
                path.display(),
                events.len()
            ))
        };
        if read == 0 {
            return Err(short("the log ends"));
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(short("the line is too long"));
        }
        if buf.last() != Some(&b'\n') {
            return Err(short("the last line is torn"));
        }
        match parse_event_line(&buf) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return Err(short("a blank line")),
            Err(why) => return Err(short(&why)),
        }
    }
    Ok(events)
}
