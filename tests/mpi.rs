//! `gradguard compare` under `mpirun` (feature `mpi`): the same outputs as one process, no
//! hang when a rank dies, other commands refused. Built only with `--features mpi`
//! (`.ci/run` runs `cargo test -p gradguard --features mpi --test mpi`).
//!
//! Each test needs `mpirun` on the PATH (a build with the feature has an MPI library; Debian's
//! `openmpi-bin` adds `mpirun`). Without it a test fails and says so: it never passes
//! without having run. Every `mpirun` runs under `timeout`, so a hang fails the test instead
//! of blocking CI.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gradguard");

/// One mpirun at a time: two jobs of 2 ranks on a 2-core machine would slow each other down
/// past the fault tests' timing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the one-at-a-time lock (a test that failed while holding it does not poison the
/// others) and panics, naming what it looked for, when mpirun is not on the PATH.
fn need_mpirun() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let found = Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "these tests need `mpirun` on the PATH (Debian: apt-get install openmpi-bin; .ci/run installs it)"
    );
    guard
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("mpi")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `timeout --kill-after=10 <secs> mpirun -np <n> --oversubscribe [--allow-run-as-root]
/// gradguard <args>`.
fn mpirun(n: usize, secs: u64, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "--kill-after=10",
        &secs.to_string(),
        "mpirun",
        "-np",
        &n.to_string(),
    ]);
    c.arg("--oversubscribe");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--allow-run-as-root");
    }
    c.arg(BIN).args(args);
    // mpirun forwards its stdin to rank 0; nothing here reads it.
    c.stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The spec of the comparisons: a tanh RNN that overflows (non-finite figures included).
fn spec() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/specs/rnn-nan.toml")
        .display()
        .to_string()
}

/// A healthy LSTM whose runs go to the end: long enough with `--steps 3000` that a rank is
/// in the middle of one when a fault test strikes.
fn long_spec() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/specs/lstm-adding-clipped.json")
        .display()
        .to_string()
}

/// Stdout with the output directory's name replaced and the wall-time column (the last,
/// `<x.y> s`) dropped from the table's lines.
fn normalise_stdout(out: &[u8], dir: &Path) -> Vec<String> {
    String::from_utf8_lossy(out)
        .replace(&dir.display().to_string(), "<OUT>")
        .lines()
        .map(|l| match l.rsplit_once("  ") {
            Some((head, last)) if last.trim().ends_with(" s") || last.trim() == "wall time" => {
                head.trim_end().to_string()
            }
            _ => l.to_string(),
        })
        .collect()
}

/// compare.html with every wall-time cell (`>x.y s<`) replaced by `>T<`.
fn normalise_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find('>') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let end = rest.find('<').unwrap_or(rest.len());
        let cell = &rest[..end];
        let is_time = cell
            .strip_suffix(" s")
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok() && n.contains('.'));
        if is_time {
            out.push('T');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Every file under `root` (relative names, sorted).
fn files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

#[test]
fn compare_on_two_ranks_writes_what_one_process_writes() {
    let _one = need_mpirun();
    let d = scratch("same");
    let (one, two) = (d.join("one"), d.join("two"));
    let spec = spec();
    let args = |out: &Path| -> Vec<String> {
        [
            "compare",
            &spec,
            "--with",
            "clip_global_norm,clip_value",
            "--seeds",
            "2",
            "--steps",
            "40",
            "--out",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let single = Command::new(BIN)
        .args(args(&one))
        .args(["--jobs", "1"])
        .output()
        .expect("gradguard");
    assert!(single.status.success(), "{}", text(&single));
    let a: Vec<String> = args(&two);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // A private TMPDIR: rank 1's scratch directory must be gone afterwards.
    let tmp = d.join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let multi = mpirun(2, 180, &a)
        .env("TMPDIR", &tmp)
        .output()
        .expect("mpirun");
    assert!(multi.status.success(), "{}", text(&multi));

    // The table (and the ranking and every other line on stdout), but the wall times.
    let (s1, s2) = (
        normalise_stdout(&single.stdout, &one),
        normalise_stdout(&multi.stdout, &two),
    );
    assert!(s1.iter().any(|l| l.starts_with("variant")), "{s1:#?}");
    assert_eq!(s1, s2, "{}", text(&multi));
    // compare.json: byte for byte.
    let j1 = std::fs::read_to_string(one.join("compare.json")).expect("compare.json");
    let j2 = std::fs::read_to_string(two.join("compare.json")).expect("compare.json");
    assert_eq!(j1, j2);
    assert!(j1.contains("\"seed\": 2"), "{j1}");
    // compare.html: the same but its wall-time cells.
    let h1 = std::fs::read_to_string(one.join("compare.html")).expect("compare.html");
    let h2 = std::fs::read_to_string(two.join("compare.html")).expect("compare.html");
    assert_ne!(normalise_html(&h1), h1, "no wall-time cell found to mask");
    assert_eq!(normalise_html(&h1), normalise_html(&h2));
    // Every run's directory: the same files, the same bytes (but each lock file's holder).
    let (f1, f2) = (files(&one), files(&two));
    assert_eq!(f1, f2);
    assert!(
        f1.iter().any(|f| f.ends_with("none/seed-2/summary.json")),
        "{f1:?}"
    );
    for f in f1
        .iter()
        .filter(|f| !f.ends_with(".gradguard.lock") && !f.ends_with("compare.html"))
    {
        let (b1, b2) = (
            std::fs::read(one.join(f)).expect("file"),
            std::fs::read(two.join(f)).expect("file"),
        );
        assert!(b1 == b2, "{} differs", f.display());
    }
    // The other rank cleaned its scratch directory.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("gradguard-rank"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn a_rank_that_dies_ends_the_job_without_a_hang() {
    let _one = need_mpirun();
    let mut job = LongCompare::start("kill");
    let pid = job.wait_until_rank_one_runs(&[1])[0];
    let (child, out) = (job.child, job.out);
    // SAFETY: kill has no memory preconditions; pid is rank 1, started by this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let o = child.wait_with_output().expect("mpirun output");
    let took = killed.elapsed();
    // `timeout` ends a hung job after 120 s (status 124, or 137 when it had to kill, which is
    // also mpirun's own status for a rank killed by signal 9): the time tells them apart.
    eprintln!("the job ended {took:?} after rank 1 was killed");
    assert!(
        took < Duration::from_secs(60) && o.status.code() != Some(124),
        "the job hung after rank 1 died ({took:?}): {}",
        text(&o)
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("rank 1"),
        "mpirun did not name the rank that died: {}",
        text(&o)
    );
    // Rank 0 wrote no comparison from a partial set of runs.
    assert!(!out.join("compare.json").exists(), "{}", text(&o));
}

#[test]
fn other_commands_are_refused_on_several_ranks() {
    let _one = need_mpirun();
    let d = scratch("refuse");
    let out = d.join("run");
    let spec = spec();
    let o = mpirun(
        2,
        60,
        &[
            "run",
            &spec,
            "--steps",
            "5",
            "--out",
            &out.display().to_string(),
        ],
    )
    .output()
    .expect("mpirun");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("only `gradguard compare` is distributed")
            && err.contains("run `gradguard run` without mpirun"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    let o = mpirun(2, 60, &["compare", &spec, "--jobs", "2", "--steps", "5"])
        .output()
        .expect("mpirun");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--jobs does not apply under mpirun"),
        "{}",
        text(&o)
    );
    // One rank: as without MPI.
    let o = mpirun(
        1,
        120,
        &[
            "run",
            &spec,
            "--steps",
            "5",
            "-q",
            "--out",
            &out.display().to_string(),
        ],
    )
    .output()
    .expect("mpirun");
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("summary.json").exists());
}

/// Whether rank 1 runs a job: its scratch directory under `tmp` holds a job's directory.
/// (Open MPI keeps its own session directory under `$TMPDIR` too, from before MPI_Init.)
fn rank_one_busy(tmp: &Path) -> bool {
    std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("gradguard-rank1-")
        })
        .any(|e| {
            std::fs::read_dir(e.path()).is_ok_and(|r| {
                r.flatten()
                    .any(|j| j.file_name().to_string_lossy().starts_with("job-"))
            })
        })
}

/// The pid of the process whose environment holds `mark` and OMPI_COMM_WORLD_RANK=`rank`.
fn rank_pid(mark: &str, rank: u32) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if vars.contains(&mark.as_bytes()) && vars.contains(&want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// A rank that stops answering (SIGSTOP: alive, so the launcher sees nothing wrong) while rank
/// 0 is interrupted: rank 0 waits at most its grace period for the result out, then ends the
/// whole job with MPI_Abort instead of hanging.
#[test]
fn a_rank_that_stops_answering_cannot_hang_an_interrupted_job() {
    let _one = need_mpirun();
    let mut job = LongCompare::start("stall");
    let pids = job.wait_until_rank_one_runs(&[0, 1]);
    let (root, worker) = (pids[0], pids[1]);
    let (child, out) = (job.child, job.out);
    // SAFETY: kill has no memory preconditions; both pids are ranks this test started.
    unsafe {
        assert_eq!(libc::kill(worker as i32, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(root as i32, libc::SIGINT), 0);
    }
    let signalled = Instant::now();
    let o = child.wait_with_output().expect("mpirun output");
    let took = signalled.elapsed();
    eprintln!("the job ended {took:?} after rank 0 was interrupted");
    assert!(
        took < Duration::from_secs(60) && o.status.code() != Some(124),
        "the job hung ({took:?}): {}",
        text(&o)
    );
    assert!(!o.status.success(), "{}", text(&o));
    // It waited for the stalled rank before giving up on it.
    assert!(
        took >= Duration::from_secs(15),
        "ended after {took:?}, before the grace period: {}",
        text(&o)
    );
    assert!(!out.join("compare.json").exists(), "{}", text(&o));
}

/// A long two-rank comparison (the fault tests' job), started with each rank marked in its
/// environment so that the test can find the ranks' pids.
struct LongCompare {
    child: std::process::Child,
    out: std::path::PathBuf,
    tmp: std::path::PathBuf,
    mark: String,
}

impl LongCompare {
    fn start(name: &str) -> Self {
        let d = scratch(name);
        let out = d.join("out");
        let tmp = d.join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let id = format!("{name}-{}", std::process::id());
        let spec = long_spec();
        let child = mpirun(
            2,
            120,
            &[
                "compare",
                &spec,
                "--with",
                "clip_value",
                "--seeds",
                "2",
                "--steps",
                "3000",
                "-q",
                "--out",
                &out.display().to_string(),
            ],
        )
        .env("TMPDIR", &tmp)
        .env("GRADGUARD_TEST_MARK", &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
        LongCompare {
            child,
            out,
            tmp,
            mark: format!("GRADGUARD_TEST_MARK={id}"),
        }
    }

    /// Waits until rank 1 runs a job (its scratch directory holds a job's directory), then
    /// returns the pids of `ranks`.
    fn wait_until_rank_one_runs(&mut self, ranks: &[u32]) -> Vec<u32> {
        let started = Instant::now();
        loop {
            if rank_one_busy(&self.tmp) {
                let pids: Option<Vec<u32>> =
                    ranks.iter().map(|&r| rank_pid(&self.mark, r)).collect();
                if let Some(pids) = pids {
                    return pids;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mpirun ended ({status}) before rank 1 ran a job");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "rank 1 never started a job"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
