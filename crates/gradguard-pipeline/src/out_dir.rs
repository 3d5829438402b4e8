//! Where a run writes: its own directory per run, so reruns never overwrite or mix.
//!
//! - Without `--out`, every run gets a fresh directory `runs/<name>/<UTC time>` (e.g.
//!   `runs/co2/2026-12-01T07-58-03Z`, with `-2`, `-3`, ... when two start in the same second),
//!   and `runs/<name>/latest` points at the newest (a symbolic link on Unix, a one-line text
//!   file naming the directory elsewhere). TensorBoard (`tensorboard --logdir runs/`) sees each
//!   run as its own run.
//! - With `--out DIR`, the run writes exactly there; a directory that already holds files is
//!   refused unless `--overwrite` is given, which first deletes the outputs gradguard writes
//!   there (and nothing else).

use std::path::{Path, PathBuf};

use crate::run::LOCK_FILE;

/// Files a run, a comparison or a verification writes in its directory.
pub const OUTPUT_FILES: &[&str] = &[
    "events.jsonl",
    "summary.json",
    "report.html",
    "spec.json",
    "compare.html",
    "compare.json",
];

/// Directories gradguard writes inside a run or comparison directory.
pub const OUTPUT_DIRS: &[&str] = &["verify"];

/// Why an output directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    /// `--out` names a directory that already holds files.
    #[error("{} is not empty (it holds {}): choose another --out, or pass --overwrite to replace the outputs gradguard wrote there", dir.display(), sample.join(", "))]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// A few of the entries found.
        sample: Vec<String>,
    },
    /// Another gradguard run holds the directory.
    #[error("{0}")]
    Busy(String),
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutDirError + '_ {
    move |source| OutDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `name` is something gradguard writes in a run directory.
fn is_output(name: &str) -> bool {
    OUTPUT_FILES.contains(&name)
        || OUTPUT_DIRS.contains(&name)
        || name.starts_with("events.out.tfevents.")
        || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// Whether `path` is a directory gradguard wrote a run or comparison into (a demo's
/// sub-directories): it holds the run lock or one of [`OUTPUT_FILES`].
fn holds_a_run(path: &Path) -> bool {
    path.is_dir()
        && (path.join(LOCK_FILE).exists() || OUTPUT_FILES.iter().any(|f| path.join(f).exists()))
}

/// Makes `dir` ready for a run that the user pointed at it (`--out`): creates it when missing;
/// refuses it when it holds anything besides the run lock, unless `overwrite`, which deletes
/// gradguard's own outputs there first: its files, and sub-directories holding a run (a
/// demo's); files and directories of other names are left alone.
pub fn claim_dir(dir: &Path, overwrite: bool) -> Result<(), OutDirError> {
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(io(dir));
    }
    if dir.join(LOCK_FILE).exists() {
        // A live run there is reported as such, before anything else is said about the
        // directory (the lock is released at once; the run takes it again).
        if let Err(crate::run::RunError::Busy(why)) = crate::run::lock_run_dir(dir) {
            return Err(OutDirError::Busy(why));
        }
    }
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    entries.sort();
    if entries.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let mut sample: Vec<String> = entries.iter().take(3).cloned().collect();
        if entries.len() > 3 {
            sample.push(format!("{} more", entries.len() - 3));
        }
        return Err(OutDirError::NotEmpty {
            dir: dir.to_path_buf(),
            sample,
        });
    }
    let ours = |name: &String| is_output(name) || holds_a_run(&dir.join(name));
    for name in entries.iter().filter(|n| ours(n)) {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

/// Creates a fresh directory for one run under `root` (named by the UTC time, with `-2`, `-3`,
/// ... on a collision) and points `root/latest` at it. Returns its path.
pub fn fresh_run_dir(root: &Path) -> Result<PathBuf, OutDirError> {
    fresh_run_dir_at(root, std::time::SystemTime::now())
}

fn fresh_run_dir_at(root: &Path, now: std::time::SystemTime) -> Result<PathBuf, OutDirError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = utc_stamp(secs);
    for n in 1..10_000u32 {
        let name = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = root.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                point_latest(root, &name)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Err(io(root)(std::io::Error::other(
        "10000 runs started in the same second",
    )))
}

/// Points `root/latest` at `name`, atomically (a new link renamed over the old one).
fn point_latest(root: &Path, name: &str) -> Result<(), OutDirError> {
    let latest = root.join("latest");
    let tmp = root.join(format!(".latest.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(name, &tmp).map_err(io(&tmp))?;
    #[cfg(not(unix))]
    std::fs::write(&tmp, format!("{name}\n")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &latest).map_err(io(&latest))
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH-MM-SSZ` (UTC; dashes, so the name is valid
/// on every file system).
pub fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("gradguard-outdir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "1970-01-01T00-00-00Z");
        // 2000-02-29 12:34:56 UTC (a leap day) is 951827696.
        assert_eq!(utc_stamp(951_827_696), "2000-02-29T12-34-56Z");
        // 2026-12-01 07:58:03 UTC.
        assert_eq!(utc_stamp(1_796_111_883), "2026-12-01T07-58-03Z");
    }

    #[test]
    fn each_run_gets_its_own_directory_and_latest_follows() {
        let root = scratch("fresh");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_111_883);
        let a = fresh_run_dir_at(&root, t).expect("a");
        let b = fresh_run_dir_at(&root, t).expect("b");
        assert_eq!(a, root.join("2026-12-01T07-58-03Z"));
        assert_eq!(b, root.join("2026-12-01T07-58-03Z-2"));
        let latest = std::fs::canonicalize(root.join("latest")).expect("latest");
        assert_eq!(latest, std::fs::canonicalize(&b).expect("b"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_used_directory_is_refused_unless_overwrite_and_overwrite_keeps_foreign_files() {
        let dir = scratch("claim");
        claim_dir(&dir, false).expect("a missing directory is created");
        claim_dir(&dir, false).expect("an empty one is fine");
        std::fs::write(dir.join(LOCK_FILE), "").expect("lock");
        claim_dir(&dir, false).expect("the lock alone does not count");
        std::fs::write(dir.join("events.jsonl"), "{}\n").expect("events");
        std::fs::write(dir.join("events.out.tfevents.1.host"), "").expect("tb");
        std::fs::create_dir_all(dir.join("verify/clip")).expect("verify");
        std::fs::write(dir.join("notes.txt"), "mine").expect("notes");
        std::fs::create_dir_all(dir.join("demo-run")).expect("demo run");
        std::fs::write(dir.join("demo-run/summary.json"), "{}").expect("summary");
        std::fs::create_dir_all(dir.join("photos")).expect("photos");
        let e = claim_dir(&dir, false).expect_err("not empty").to_string();
        assert!(
            e.contains("is not empty") && e.contains("--overwrite") && e.contains("events.jsonl"),
            "{e}"
        );
        claim_dir(&dir, true).expect("overwrite");
        assert!(!dir.join("events.jsonl").exists());
        assert!(!dir.join("events.out.tfevents.1.host").exists());
        assert!(!dir.join("verify").exists());
        assert!(
            !dir.join("demo-run").exists(),
            "a run's sub-directory is gradguard's"
        );
        assert!(
            dir.join("photos").is_dir(),
            "other directories are left alone"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).expect("kept"),
            "mine"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
