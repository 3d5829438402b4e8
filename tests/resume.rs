//! Interrupted runs resume to the uninterrupted result (issue 12, items 2 and 9).
//!
//! - Crashes simulated on disk: a finished run's directory cut back to what a crash after a
//!   given checkpoint leaves (older checkpoints, an events log running past the checkpoint and
//!   ending in a torn line, no summary or report), then resumed: summary.json equals the
//!   uninterrupted run's and events.jsonl is byte for byte the same.
//! - Real crashes: `gradguard run` killed with SIGKILL at several points (some fixed, some
//!   drawn from a seeded generator), then `gradguard resume`: the same summary, every output
//!   file parses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gradguard::pipeline::checkpoints::list_checkpoints;
use gradguard::pipeline::{run_experiment, ExperimentSpec, RunOptions, SpecFormat};

/// An LSTM on the adding problem with every stateful remedy and the default detectors (all
/// of which keep history), a held-out evaluation every 25 steps and a checkpoint every 10.
const LSTM_SPEC: &str = r#"
name = "resume-lstm"
seed = 3

[model]
kind = "lstm"
hidden = 24

[task]
kind = "adding"
seq_len = 24
n_samples = 384

[train]
optimizer = { kind = "adam", lr = 0.01 }
batch_size = 16
steps = STEPS
eval_every = 25
checkpoint = { every = 10, keep = 1000 }

[[remedies]]
kind = "zclip"

[[remedies]]
kind = "autoclip"

[[remedies]]
kind = "skip_spike"

[[remedies]]
kind = "lr_backoff"

[[remedies]]
kind = "clip_global_norm"
max_norm = 1.0
"#;

/// The Keras exploding-regression example with rollback: it explodes again and again, rolls
/// back to snapshots kept in memory (saved in the checkpoints), skips batches, and stops.
const ROLLBACK_SPEC: &str = r#"
name = "resume-rollback"
seed = 1

[model]
kind = "mlp"
hidden = [25]
activation = "relu"

[task]
kind = "regression"
n_samples = 400
n_features = 20
n_informative = 10
noise = 0.1
train_fraction = 0.5

[train]
optimizer = { kind = "sgd", lr = 0.01, momentum = 0.9 }
batch_size = 32
steps = 60
checkpoint = { every = 2, keep = 1000 }

[[remedies]]
kind = "rollback"
every = 3
keep = 2
skip_batches = 2
max_rollbacks = 12
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradguard-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spec(text: &str) -> ExperimentSpec {
    ExperimentSpec::parse(text, SpecFormat::Toml, Path::new("resume.toml")).expect("spec")
}

fn options(out: &Path, resume: bool) -> RunOptions {
    RunOptions {
        out_dir: Some(out.to_path_buf()),
        console: Some(false),
        quiet: true,
        resume,
        ..RunOptions::default()
    }
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// Cuts a finished run's directory back to what a crash after checkpoint `keep_upto` (the
/// events it covers) leaves: later checkpoints gone, the events log `extra` lines past it and
/// then half a line, no summary and no report.
fn crash_after(finished: &Path, crashed: &Path, keep_upto: u64, extra: usize) {
    copy_dir(finished, crashed);
    for (n, path) in list_checkpoints(crashed) {
        if n > keep_upto {
            std::fs::remove_file(path).expect("rm checkpoint");
        }
    }
    for f in ["summary.json", "report.html"] {
        std::fs::remove_file(crashed.join(f)).expect("rm output");
    }
    let log = std::fs::read_to_string(finished.join("events.jsonl")).expect("events");
    let lines: Vec<&str> = log.lines().collect();
    let whole = (keep_upto as usize + extra).min(lines.len() - 1);
    let mut cut: String = lines[..whole].iter().map(|l| format!("{l}\n")).collect();
    cut.push_str(&lines[whole][..lines[whole].len() / 2]);
    std::fs::write(crashed.join("events.jsonl"), cut).expect("write events");
}

fn check_resumes_to_the_same_result(text: &str, name: &str, points: &[(u64, usize)]) {
    let finished = scratch(&format!("{name}-whole"));
    run_experiment(spec(text), &options(&finished, false)).expect("uninterrupted run");
    let reference = summary(&finished);
    let log = std::fs::read(finished.join("events.jsonl")).expect("events");
    let written: Vec<u64> = list_checkpoints(&finished).iter().map(|c| c.0).collect();
    for &(upto, extra) in points {
        assert!(
            written.contains(&upto),
            "{name}: no checkpoint after {upto} events (written: {written:?})"
        );
        let crashed = scratch(&format!("{name}-crash-{upto}-{extra}"));
        crash_after(&finished, &crashed, upto, extra);
        let outcome = run_experiment(spec(text), &options(&crashed, true))
            .unwrap_or_else(|e| panic!("{name}: resuming after {upto} events: {e}"));
        assert_eq!(outcome.interrupted, None);
        assert_eq!(
            summary(&crashed),
            reference,
            "{name}: resumed after {upto} events, summary.json differs"
        );
        assert!(
            std::fs::read(crashed.join("events.jsonl")).expect("events") == log,
            "{name}: resumed after {upto} events, events.jsonl differs"
        );
        assert!(
            std::fs::metadata(crashed.join("report.html"))
                .expect("report")
                .len()
                > 1000
        );
        let _ = std::fs::remove_dir_all(&crashed);
    }
    let _ = std::fs::remove_dir_all(&finished);
}

#[test]
fn an_lstm_with_stateful_remedies_resumes_to_the_uninterrupted_result() {
    let text = LSTM_SPEC.replace("STEPS", "120");
    check_resumes_to_the_same_result(&text, "lstm", &[(10, 0), (50, 7), (110, 9)]);
}

#[test]
fn a_run_that_rolls_back_resumes_to_the_uninterrupted_result() {
    // Its steps repeat after each rollback, so checkpoints are numbered by events recorded.
    let finished = scratch("rollback-probe");
    let outcome = run_experiment(spec(ROLLBACK_SPEC), &options(&finished, false)).expect("run");
    let rolled = std::fs::read_to_string(finished.join("events.jsonl"))
        .expect("events")
        .matches("\"rollback\"")
        .count();
    assert!(rolled >= 2, "the spec must roll back: {rolled}");
    assert!(outcome.stopped_early.is_some() || rolled > 0);
    let written: Vec<u64> = list_checkpoints(&finished).iter().map(|c| c.0).collect();
    let _ = std::fs::remove_dir_all(&finished);
    // Resume from the middle checkpoint and the last one.
    let mid = written[written.len() / 2];
    let last = written[0];
    check_resumes_to_the_same_result(ROLLBACK_SPEC, "rollback", &[(mid, 1), (last, 0)]);
}

#[test]
fn resuming_without_a_checkpoint_or_with_a_short_log_says_why() {
    let text = LSTM_SPEC.replace("STEPS", "30");
    let empty = scratch("nothing");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let e = run_experiment(spec(&text), &options(&empty, true)).unwrap_err();
    assert!(e.to_string().contains("holds no checkpoint"), "{e}");

    let finished = scratch("short-whole");
    run_experiment(spec(&text), &options(&finished, false)).expect("run");
    let e = run_experiment(spec(&text), &options(&finished, true)).unwrap_err();
    assert!(
        e.to_string().contains("finished") && e.to_string().contains("nothing to resume"),
        "{e}"
    );
    std::fs::remove_file(finished.join("summary.json")).expect("rm summary");
    let short = scratch("short-log");
    copy_dir(&finished, &short);
    let log = std::fs::read_to_string(short.join("events.jsonl")).expect("events");
    let five: String = log.lines().take(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(short.join("events.jsonl"), five).expect("write");
    let e = run_experiment(spec(&text), &options(&short, true)).unwrap_err();
    let text_e = e.to_string();
    assert!(
        text_e.contains("no checkpoint in") && text_e.contains("the log ends"),
        "{text_e}"
    );
    for d in [empty, finished, short] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The newest checkpoint's event count, or 0.
fn newest(dir: &Path) -> u64 {
    list_checkpoints(dir).first().map_or(0, |c| c.0)
}

fn every_output_parses(dir: &Path) {
    summary(dir);
    let log = std::fs::read_to_string(dir.join("events.jsonl")).expect("events");
    assert!(log.ends_with('\n'), "the log ends in a whole line");
    for (i, line) in log.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("events.jsonl line {}: {e}", i + 1));
    }
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report");
    assert!(html.trim_end().ends_with("</html>"), "report.html is whole");
}

#[test]
fn runs_killed_with_sigkill_at_random_points_resume_to_the_same_summary() {
    let bin = env!("CARGO_BIN_EXE_gradguard");
    let root = scratch("sigkill");
    std::fs::create_dir_all(&root).expect("mkdir");
    let spec_path = root.join("spec.toml");
    let steps = 600u64;
    std::fs::write(&spec_path, LSTM_SPEC.replace("STEPS", &steps.to_string())).expect("spec");
    let gg = |args: &[&str]| {
        Command::new(bin)
            .args(["-q"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("gradguard")
    };
    let reference = root.join("whole");
    let out = gg(&[
        "run",
        spec_path.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
        "--no-verify",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = summary(&reference);

    // Kill points (checkpoints reached before the kill): fixed ones and seeded random ones.
    let mut x: u64 = 0x5DEECE66D;
    let mut points = vec![10u64, 300];
    for _ in 0..2 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        points.push(10 * (1 + (x >> 33) % (steps / 10 - 2)));
    }
    let mut landed = 0;
    for (i, &at) in points.iter().enumerate() {
        let dir = root.join(format!("killed-{i}"));
        let mut child = Command::new(bin)
            .args(["-q", "run", spec_path.to_str().unwrap(), "--out"])
            .arg(&dir)
            .arg("--no-verify")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        let mut finished_first = false;
        while newest(&dir) < at {
            if child.try_wait().expect("wait").is_some() {
                finished_first = true;
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "no checkpoint {at}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // SIGKILL: no handler runs, nothing is flushed.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let status = child.wait().expect("wait");
        if finished_first || status.code().is_some() {
            // The run ended before the kill: nothing to resume from this point.
            eprintln!("kill point {at}: the run finished first ({status:?})");
            continue;
        }
        landed += 1;
        assert!(
            !dir.join("summary.json").exists(),
            "a killed run writes no summary"
        );
        let out = gg(&["resume", dir.to_str().unwrap(), "--no-verify"]);
        assert!(
            out.status.success(),
            "resume after kill point {at}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        every_output_parses(&dir);
        assert_eq!(summary(&dir), whole, "killed after checkpoint {at}");
        assert_eq!(
            std::fs::read(dir.join("events.jsonl")).expect("events"),
            std::fs::read(reference.join("events.jsonl")).expect("events"),
            "killed after checkpoint {at}: events.jsonl differs"
        );
    }
    assert!(
        landed >= 2,
        "only {landed} of {} kills landed mid-run",
        points.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}
