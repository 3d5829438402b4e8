//! `compare` over the ranks of an MPI job (feature `mpi`): `mpirun -np N gradguard compare …`.
//!
//! # How the runs are spread
//!
//! Rank 0 holds the comparison's variant × seed runs in one queue, in order. It hands each
//! other rank one run; whenever a rank sends back a result, rank 0 hands it the next run
//! (dynamic scheduling: a slow run never holds up the others). Rank 0 also runs jobs itself
//! on a second thread, taking them from the same queue: with 2 ranks on 2 cores, a rank 0
//! that only dispatched would leave one core to do all the runs (a speed-up of 1x); its
//! dispatching is a non-blocking probe every few milliseconds, which costs next to no CPU, so
//! its worker thread has its core to itself. The thread that dispatches is the only one that
//! calls MPI (`MPI_THREAD_FUNNELED`); where the MPI library does not provide that, rank 0
//! only dispatches.
//!
//! # What each rank writes
//!
//! Only rank 0 writes into the comparison's directory. Another rank runs a job in a scratch
//! directory of its own (`$TMPDIR/gradguard-rank<R>-<pid>/job-<i>`), sends back the result
//! (summary, diagnosis, curves) and every file the run wrote there (but the run's lock file,
//! `.gradguard.lock`), deletes the job's directory and, at the end, the scratch directory.
//! Rank 0 takes the run directory's lock and writes those files where the run would have
//! written them in a single process, so the output tree is the same, without needing a
//! shared file system. (A spec that names an
//! absolute path for a reporter's file writes that path on whichever rank runs it.)
//!
//! # Messages
//!
//! Byte messages with a tag: [`TAG_JOB`] (rank 0 → rank: a job as CBOR), [`TAG_STOP`] (rank
//! 0 → rank: no more jobs) and [`TAG_RESULT`] (rank → rank 0: a frame holding the CBOR
//! result, then the files' bytes). CBOR keeps every `f64` exact, NaN and infinities included,
//! so rank 0's table, compare.html and compare.json are the single-process ones.
//!
//! # Faults
//!
//! MPI's default error handler aborts the job on a communication error. A rank that dies is
//! seen by the launcher (`mpirun`, `srun`), which ends the other ranks with SIGTERM: their
//! runs stop after the current step, and rank 0 waits at most [`GRACE_AFTER_SIGNAL`] for
//! the results still out, then ends the whole job with `MPI_Abort` rather than
//! `MPI_Finalize`, which would wait for every rank (see [`Launch::finish`]): a rank that
//! died or stopped answering never leaves the job hanging.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gradguard_core::{Diagnosis, ReportError, RunSummary};
use gradguard_report::CompareVariant;
use mpi::environment::{Threading, Universe};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Message, Source, Status};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};

use crate::compare::{Job, JobQueue, JobResult};
use crate::run::{run_experiment, Interrupt, RunError, RunOptions, RunOutcome, LOCK_FILE};
use crate::spec::ExperimentSpec;

/// Tag of a job sent by rank 0 (CBOR, see the [module documentation](self)).
pub const TAG_JOB: i32 = 3;
/// Tag of rank 0's "no more jobs" (empty).
pub const TAG_STOP: i32 = 4;
/// Tag of a result sent to rank 0 (a frame: CBOR result, then the files' bytes).
pub const TAG_RESULT: i32 = 2;

/// The most bytes of files one result carries: an MPI message counts its elements in a C
/// `int`, so a frame must stay under 2 GiB (the head takes far less than the margin left).
pub const MAX_FILES_BYTES: usize = (i32::MAX as usize) - (64 << 20);

/// How long rank 0 still waits for the results out on other ranks once a signal (SIGINT,
/// or the SIGTERM a launcher sends when a rank died) interrupted the comparison.
pub const GRACE_AFTER_SIGNAL: Duration = Duration::from_secs(20);

/// Environment variables that MPI launchers set in every process they start: Open MPI's
/// `mpirun` (`OMPI_COMM_WORLD_SIZE`), MPICH's and Intel MPI's Hydra and Slurm's `srun` with
/// PMI-2 (`PMI_SIZE`), PMIx launchers (`PMIX_RANK`), MVAPICH (`MV2_COMM_WORLD_SIZE`).
pub const LAUNCHER_VARIABLES: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "MV2_COMM_WORLD_SIZE",
];

/// Errors of the distributed executor.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// `MPI_Init_thread` was already called in this process.
    #[error("MPI could not be initialised: it already was, in this process")]
    AlreadyInitialised,
    /// A message from another rank was not what this protocol sends.
    #[error("rank {rank}: unexpected message: {message}")]
    Protocol {
        /// The rank that sent it.
        rank: i32,
        /// What was wrong with it.
        message: String,
    },
    /// The scratch directory could not be made or cleaned.
    #[error("scratch directory {}: {source}", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether an MPI launcher started this process (one of [`LAUNCHER_VARIABLES`] is set). A
/// process started without one never initialises MPI, so it behaves as a build without the
/// feature.
pub fn launched_by_mpi() -> bool {
    LAUNCHER_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// This process's place in an MPI job, cheap to clone. Only the thread that called [`init`]
/// may use it to communicate.
#[derive(Clone, Debug)]
pub struct Cluster {
    rank: i32,
    size: i32,
    root_works: bool,
    /// Rank 0: the other ranks were told to stop (they serve no more jobs).
    released: Arc<AtomicBool>,
    /// Rank 0: some rank never sent back a result; the job must end with `MPI_Abort`.
    lost: Arc<AtomicBool>,
}

impl Cluster {
    /// This process's rank (0 is the one that writes).
    pub fn rank(&self) -> i32 {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.size
    }

    /// Whether this is rank 0.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether rank 0 runs jobs itself besides dispatching (the MPI library provides
    /// `MPI_THREAD_FUNNELED`).
    pub fn root_works(&self) -> bool {
        self.root_works
    }

    /// Rank 0: tells every other rank that no job will come ([`TAG_STOP`]), once; nothing on
    /// other ranks or when it was done already (a comparison does it when it ends).
    pub fn release_workers(&self) {
        if !self.is_root() || self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let world = SimpleCommunicator::world();
        for r in 1..self.size {
            world
                .process_at_rank(r)
                .send_with_tag(&[] as &[u8], TAG_STOP);
        }
    }
}

/// MPI, initialised for the life of the process: dropping it (or [`Launch::finish`])
/// finalises MPI.
pub struct Launch {
    universe: Universe,
    cluster: Cluster,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Launch {
    /// This process's place in the job.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Ends this process's part of the job with `code`. Rank 0 first releases the other
    /// ranks; then, when a rank was lost (it never sent back a result) or `interrupted` (a
    /// signal ended the command on rank 0), it ends the whole job with `MPI_Abort(code)`
    /// instead of `MPI_Finalize`, which waits for every rank and would hang on one that no
    /// longer answers. Otherwise MPI is finalised and `code` returned.
    pub fn finish(self, code: u8, interrupted: bool) -> u8 {
        if self.cluster.is_root() {
            if self.cluster.lost.load(Ordering::SeqCst) || interrupted {
                self.universe.world().abort(i32::from(code.max(1)));
            }
            self.cluster.release_workers();
        }
        drop(self.universe);
        code
    }
}

impl Launch {
    /// Ends the whole job at once with `MPI_Abort(code)`: for a rank that cannot go on
    /// serving (rank 0 would otherwise wait for its results).
    pub fn abort(self, code: i32) -> ! {
        self.universe.world().abort(code.max(1))
    }
}

/// Initialises MPI when an MPI launcher started this process ([`launched_by_mpi`]), asking
/// for `MPI_THREAD_FUNNELED`; `None` otherwise. A job of one rank is returned too: its
/// comparisons run on local threads as without MPI.
pub fn init() -> Result<Option<Launch>, DistributedError> {
    if !launched_by_mpi() {
        return Ok(None);
    }
    let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
        .ok_or(DistributedError::AlreadyInitialised)?;
    let world = universe.world();
    let cluster = Cluster {
        rank: world.rank(),
        size: world.size(),
        root_works: threading != Threading::Single,
        released: Arc::new(AtomicBool::new(false)),
        lost: Arc::new(AtomicBool::new(false)),
    };
    Ok(Some(Launch { universe, cluster }))
}

/// A job as rank 0 sends it.
#[derive(Debug, Serialize, Deserialize)]
struct WireJob {
    index: u64,
    /// The spec as JSON (the form [`ExperimentSpec::try_clone`] goes through).
    spec: String,
    seed: Option<u64>,
    steps: Option<u64>,
    stop_when_beyond_saving: bool,
    unguarded: bool,
    /// Threads of the run's pool, as rank 0's plan chose them (the same bits for any number).
    #[serde(default)]
    threads: Option<std::num::NonZeroUsize>,
}

/// What a run produced, as a rank sends it back.
#[derive(Debug, Serialize, Deserialize)]
struct WireOutcome {
    diagnosis: Diagnosis,
    summary: RunSummary,
    variant: CompareVariant,
    stopped_early: Option<String>,
    interrupted: Option<i32>,
}

/// The head of a result frame; the files' bytes follow it, in this order.
#[derive(Debug, Serialize, Deserialize)]
struct WireResult {
    index: u64,
    outcome: Result<WireOutcome, String>,
    /// Each file the run wrote: its path relative to the run's directory (`/`-separated)
    /// and its length in bytes.
    files: Vec<(String, u64)>,
}

fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Receives the next message (from `from`, or from any rank), probing without blocking and
/// sleeping between probes (50 µs, doubling up to 5 ms): a blocking receive would spin a
/// core that a run needs.
fn receive_polling(
    world: &SimpleCommunicator,
    from: Option<i32>,
    mut give_up: impl FnMut() -> bool,
) -> Option<(Vec<u8>, Status)> {
    let mut wait = Duration::from_micros(50);
    loop {
        let probed: Option<(Message, Status)> = match from {
            Some(r) => world.process_at_rank(r).immediate_matched_probe(),
            None => world.any_process().immediate_matched_probe(),
        };
        if let Some(m) = probed {
            return Some(m.matched_receive_vec::<u8>());
        }
        if give_up() {
            return None;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(5));
    }
}

/// Rank 0: runs a comparison's jobs over the ranks (see the [module documentation](self))
/// and returns their results in the jobs' order. On another rank, or once the other ranks
/// were released, the jobs run here, one at a time.
pub(crate) fn run_jobs(cluster: &Cluster, jobs: Vec<Job>) -> Vec<JobResult> {
    let queue = JobQueue::new(jobs);
    if !cluster.is_root() || cluster.size <= 1 || cluster.released.load(Ordering::SeqCst) {
        queue.work();
        return queue.into_results();
    }
    let interrupt = queue.interrupt();
    std::thread::scope(|s| {
        if cluster.root_works {
            let spawned = std::thread::Builder::new()
                .name("gradguard-compare-rank0".into())
                .stack_size(8 << 20)
                .spawn_scoped(s, || queue.work());
            if let Err(e) = spawned {
                tracing::warn!("rank 0 only dispatches: no thread for its own runs ({e})");
            }
        }
        dispatch(cluster, &queue, interrupt.as_ref());
    });
    queue.into_results()
}

/// Rank 0's side: hands out jobs, takes results, until every other rank was stopped (or,
/// after a signal, until [`GRACE_AFTER_SIGNAL`] ran out).
fn dispatch(cluster: &Cluster, queue: &JobQueue, interrupt: Option<&Interrupt>) {
    let world = SimpleCommunicator::world();
    let size = usize::try_from(cluster.size).unwrap_or(1);
    // Per rank: the job it is running (its index and the directory its files go to).
    let mut out: Vec<Option<(usize, PathBuf)>> = vec![None; size];
    for (r, slot) in out.iter_mut().enumerate().skip(1) {
        *slot = hand_out(&world, r as i32, queue);
    }
    let mut signalled_at: Option<Instant> = None;
    while out.iter().any(Option::is_some) {
        let mut give_up = || {
            interrupt.and_then(Interrupt::signal).is_some()
                && signalled_at.get_or_insert_with(Instant::now).elapsed() > GRACE_AFTER_SIGNAL
        };
        let Some((bytes, status)) = receive_polling(&world, None, &mut give_up) else {
            for (r, slot) in out.iter_mut().enumerate() {
                if let Some((i, _)) = slot.take() {
                    queue.record(
                        i,
                        Err(RunError::Rank {
                            rank: r as i32,
                            message: format!(
                                "no result within {} s of the signal that interrupted the comparison",
                                GRACE_AFTER_SIGNAL.as_secs()
                            ),
                        }),
                    );
                }
            }
            cluster.lost.store(true, Ordering::SeqCst);
            cluster.released.store(true, Ordering::SeqCst);
            return;
        };
        let r = status.source_rank();
        let Some((i, dir)) = usize::try_from(r)
            .ok()
            .and_then(|r| out.get_mut(r))
            .and_then(Option::take)
        else {
            tracing::warn!(
                "rank 0: ignored a message (tag {}) from rank {r}, which runs no job",
                status.tag()
            );
            continue;
        };
        let result = if status.tag() == TAG_RESULT {
            accept_result(&bytes, r, i, &dir)
        } else {
            Err(RunError::Rank {
                rank: r,
                message: format!(
                    "expected a result (tag {TAG_RESULT}), got tag {}",
                    status.tag()
                ),
            })
        };
        queue.record(i, result);
        out[r as usize] = hand_out(&world, r, queue);
    }
    cluster.released.store(true, Ordering::SeqCst);
}

/// Sends rank `r` the next job, or [`TAG_STOP`] when there is none (or it cannot be encoded:
/// its error is then recorded). Returns the job sent.
fn hand_out(world: &SimpleCommunicator, r: i32, queue: &JobQueue) -> Option<(usize, PathBuf)> {
    let dest = world.process_at_rank(r);
    if let Some((i, job)) = queue.next() {
        let dir = job.opts.out_dir.clone().unwrap_or_default();
        match encode_job(i, &job) {
            Ok(bytes) => {
                dest.send_with_tag(&bytes[..], TAG_JOB);
                return Some((i, dir));
            }
            Err(e) => queue.record(i, Err(e)),
        }
    }
    dest.send_with_tag(&[] as &[u8], TAG_STOP);
    None
}

fn encode_job(index: usize, job: &Job) -> Result<Vec<u8>, RunError> {
    let spec = serde_json::to_string(&job.spec).map_err(|e| {
        RunError::Report(ReportError::Other(format!(
            "cannot serialise the spec for another rank: {e}"
        )))
    })?;
    to_cbor(&WireJob {
        index: index as u64,
        spec,
        seed: job.opts.seed,
        steps: job.opts.steps,
        stop_when_beyond_saving: job.opts.stop_when_beyond_saving,
        unguarded: job.opts.unguarded,
        threads: job.opts.threads,
    })
    .map_err(|e| RunError::Report(ReportError::Other(format!("cannot encode a job: {e}"))))
}

/// Rank 0: reads rank `rank`'s result for job `index`, writes the run's files under `dir`
/// and rebuilds the run's outcome.
fn accept_result(
    bytes: &[u8],
    rank: i32,
    index: usize,
    dir: &Path,
) -> Result<RunOutcome, RunError> {
    let bad = |message: String| RunError::Rank { rank, message };
    let (head, mut blobs) = split_frame(bytes).map_err(&bad)?;
    let head: WireResult = ciborium::from_reader(head)
        .map_err(|e| bad(format!("cannot read the result of run {index}: {e}")))?;
    if head.index != index as u64 {
        return Err(bad(format!(
            "sent the result of run {} for run {index}",
            head.index
        )));
    }
    // As the run would have: the directory and its lock file (rank 0 holds it while writing).
    let _lock = crate::run::lock_run_dir(dir)?;
    for (name, len) in &head.files {
        let len = usize::try_from(*len).map_err(|_| bad(format!("file {name}: too large")))?;
        if blobs.len() < len {
            return Err(bad(format!("file {name}: truncated")));
        }
        let (data, rest) = blobs.split_at(len);
        blobs = rest;
        let rel = safe_relative(name).ok_or_else(|| bad(format!("refused file name `{name}`")))?;
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
        }
        std::fs::write(&path, data).map_err(|e| ReportError::io(&path, e))?;
    }
    let o = head.outcome.map_err(bad)?;
    Ok(RunOutcome {
        diagnosis: o.diagnosis,
        summary: o.summary,
        out_dir: dir.to_path_buf(),
        variant: o.variant,
        stopped_early: o.stopped_early,
        verification: None,
        interrupted: o.interrupted,
    })
}

/// A relative path with only normal components (no `..`, no root), or `None`.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    (!name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_))))
        .then(|| p.to_path_buf())
}

/// A frame: the head's length (8 bytes, little-endian), the head, the rest.
fn frame(head: &[u8], blobs: &[Vec<u8>]) -> Vec<u8> {
    let total = 8 + head.len() + blobs.iter().map(Vec::len).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(head);
    for b in blobs {
        out.extend_from_slice(b);
    }
    out
}

fn split_frame(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| format!("a result of {} bytes has no head", bytes.len()))?;
    let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    if rest.len() < len {
        return Err(format!(
            "a result's head claims {len} bytes, {} are there",
            rest.len()
        ));
    }
    Ok(rest.split_at(len))
}

/// Another rank's side: runs the jobs rank 0 sends, in a scratch directory of its own, until
/// rank 0 says stop; returns how many it ran. `interrupt` is handed to every run.
pub fn serve(cluster: &Cluster, interrupt: Option<&Interrupt>) -> Result<usize, DistributedError> {
    let world = SimpleCommunicator::world();
    let scratch = std::env::temp_dir().join(format!(
        "gradguard-rank{}-{}",
        cluster.rank,
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).map_err(|source| DistributedError::Scratch {
        path: scratch.clone(),
        source,
    })?;
    let mut ran = 0;
    let result = loop {
        let Some((bytes, status)) = receive_polling(&world, Some(0), || false) else {
            continue;
        };
        match status.tag() {
            TAG_STOP => break Ok(ran),
            TAG_JOB => {
                let dir = scratch.join(format!("job-{ran}"));
                let reply = run_wire_job(&bytes, &dir, interrupt);
                let _ = std::fs::remove_dir_all(&dir);
                world
                    .process_at_rank(0)
                    .send_with_tag(&reply[..], TAG_RESULT);
                ran += 1;
            }
            tag => {
                break Err(DistributedError::Protocol {
                    rank: 0,
                    message: format!("tag {tag} (expected {TAG_JOB} or {TAG_STOP})"),
                })
            }
        }
    };
    std::fs::remove_dir_all(&scratch).map_err(|source| DistributedError::Scratch {
        path: scratch.clone(),
        source,
    })?;
    result
}

/// Runs one job in `dir` and returns the result frame (every failure is inside it).
fn run_wire_job(bytes: &[u8], dir: &Path, interrupt: Option<&Interrupt>) -> Vec<u8> {
    let (index, outcome) = match ciborium::from_reader::<WireJob, _>(bytes) {
        Err(e) => (u64::MAX, Err(format!("cannot read the job: {e}"))),
        Ok(job) => (job.index, run_job(job, dir, interrupt)),
    };
    let mut files = Vec::new();
    let mut blobs = Vec::new();
    let outcome = match collect_files(dir, dir, &mut files, &mut blobs) {
        Ok(()) => outcome,
        Err(e) => outcome.and(Err(format!("cannot read the run's files: {e}"))),
    };
    let total: usize = blobs.iter().map(Vec::len).sum();
    let (outcome, files, blobs) = if total > MAX_FILES_BYTES {
        let e = format!(
            "the run's files take {total} bytes, more than one MPI message carries ({MAX_FILES_BYTES}); run this comparison without mpirun, or with fewer outputs per run"
        );
        (outcome.and(Err(e)), Vec::new(), Vec::new())
    } else {
        (outcome, files, blobs)
    };
    let head = WireResult {
        index,
        outcome,
        files,
    };
    let head = to_cbor(&head).unwrap_or_else(|e| {
        to_cbor(&WireResult {
            index,
            outcome: Err(format!("cannot encode the result: {e}")),
            files: Vec::new(),
        })
        .unwrap_or_default()
    });
    frame(&head, &blobs)
}

fn run_job(job: WireJob, dir: &Path, interrupt: Option<&Interrupt>) -> Result<WireOutcome, String> {
    let spec: ExperimentSpec = crate::parse_str(
        &job.spec,
        crate::SpecFormat::Json,
        Path::new("<spec from rank 0>"),
    )
    .map_err(|e| e.to_string())?;
    let opts = RunOptions {
        out_dir: Some(dir.to_path_buf()),
        seed: job.seed,
        steps: job.steps,
        console: Some(false),
        quiet: true,
        verify: None,
        stop_when_beyond_saving: job.stop_when_beyond_saving,
        interrupt: interrupt.cloned(),
        unguarded: job.unguarded,
        resume: false,
        threads: job.threads,
    };
    let o = run_experiment(spec, &opts).map_err(|e| e.to_string())?;
    Ok(WireOutcome {
        diagnosis: o.diagnosis,
        summary: o.summary,
        variant: o.variant,
        stopped_early: o.stopped_early,
        interrupted: o.interrupted,
    })
}

/// Every regular file under `dir` (recursively, in name order), except the lock file:
/// names relative to `root`, `/`-separated.
fn collect_files(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, u64)>,
    blobs: &mut Vec<Vec<u8>>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect::<Result<_, _>>()?,
        // A run that failed before it made its directory wrote nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, files, blobs)?;
        } else if kind.is_file() && e.file_name() != LOCK_FILE {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let data = std::fs::read(&path)?;
            files.push((name.join("/"), data.len() as u64));
            blobs.push(data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_into_head_and_files() {
        let f = frame(b"head", &[b"ab".to_vec(), b"c".to_vec()]);
        let (head, rest) = split_frame(&f).expect("frame");
        assert_eq!((head, rest), (&b"head"[..], &b"abc"[..]));
        assert!(split_frame(&f[..5]).is_err());
        let mut lying = f.clone();
        lying[0] = 200;
        assert!(split_frame(&lying)
            .unwrap_err()
            .contains("claims 200 bytes"));
    }

    #[test]
    fn only_plain_relative_names_are_written() {
        assert_eq!(safe_relative("a/b.json"), Some(PathBuf::from("a/b.json")));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_curve_with_non_finite_points_survives_cbor_exactly() {
        let v = CompareVariant {
            name: "none".into(),
            summary: RunSummary {
                name: "s".into(),
                seed: 1,
                steps: 3,
                epochs: 1,
                interrupted: false,
                final_train_loss: Some(f64::NAN),
                final_test_loss: Some(0.1 + 0.2),
                last_batch_loss: Some(f64::INFINITY),
                baseline_loss: None,
                baseline_test_loss: Some(1e-300),
                train_accuracy: None,
                test_accuracy: None,
                verdict: gradguard_core::Verdict::Exploding,
                first_nonfinite_step: Some(3),
                max_grad_norm: f64::NEG_INFINITY,
                signs: Vec::new(),
                remedies: Vec::new(),
                prescriptions: Vec::new(),
            },
            loss: vec![(1, 0.1 + 0.2), (2, f64::INFINITY), (3, f64::NAN)],
            grad_norm: vec![(1, 1.0 / 3.0)],
            weight_norm: vec![(1, 2f64.sqrt())],
            final_weight_norm: Some(std::f64::consts::PI),
            steps_changed: 2,
            wall_time_s: 0.25,
            bands: None,
        };
        let bytes = to_cbor(&v).expect("encode");
        let back: CompareVariant = ciborium::from_reader(&bytes[..]).expect("decode");
        // Debug text: NaN compares equal there, and every digit of every f64 shows.
        assert_eq!(format!("{v:?}"), format!("{back:?}"));
    }
}
