//! How many threads a training step uses, and the one rayon pool a run's steps run in.
//!
//! A run builds one [`ThreadPool`] when it starts and runs its whole loop inside it
//! ([`ThreadPool::install`]); no thread is ever spawned per step. Inside the pool the model code
//! asks [`rayon::current_num_threads`] how many threads it may use:
//! - matrix products above a size threshold run on gemm's rayon parallelism (it splits the
//!   output, never the depth of a sum);
//! - each recurrent layer splits its batch into fixed lanes of rows and runs the whole forward
//!   and backward recurrence of each group of lanes on its own thread (the rows of a batch are
//!   independent through time), then sums the per-lane partial reductions in lane order; its
//!   weight-gradient products run as concurrent tasks;
//! - the optimiser updates large tensors in fixed chunks, adding their sums in chunk order.
//!
//! So a step's results are **bit-identical for any number of threads** (tested: the
//! `recurrent` thread tests, the `matmul` determinism tests, the optimiser's chunk test, and
//! whole runs in the workspace's `tests/pipeline.rs`); one thread runs everything on the
//! calling thread with no synchronisation at all.
//!
//! The thread count is, in order: an explicit request (`--threads N`), the environment variable
//! `RAYON_NUM_THREADS` (rayon's own; 0 or unset means the default), or the cores available to
//! the process ([`std::thread::available_parallelism`], which respects CPU affinity and cgroup
//! quotas).

use std::num::NonZeroUsize;

/// Errors from choosing the thread count or building the pool.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// A thread count that is not a whole number of at least 1.
    #[error(
        "{source_name}: `{value}` is not a number of threads (expected a whole number, at least 1)"
    )]
    Invalid {
        /// Where it came from: `--threads` or `RAYON_NUM_THREADS`.
        source_name: String,
        /// The text given.
        value: String,
    },
    /// The operating system refused to start the pool's threads.
    #[error("could not start a pool of {threads} threads: {message}")]
    Build {
        /// The threads asked for.
        threads: usize,
        /// rayon's message.
        message: String,
    },
}

/// Parses a thread count: a whole number, at least 1 (`0`, negatives, fractions and words are
/// refused). `source_name` names where it came from in the error (e.g. `--threads`).
pub fn parse_threads(value: &str, source_name: &str) -> Result<NonZeroUsize, ThreadsError> {
    value
        .trim()
        .parse::<NonZeroUsize>()
        .map_err(|_| ThreadsError::Invalid {
            source_name: source_name.to_string(),
            value: value.to_string(),
        })
}

/// The cores available to this process: [`std::thread::available_parallelism`] (affinity masks
/// and cgroup CPU quotas included), 1 when it cannot tell.
pub fn available_cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The thread count asked for by the environment: `RAYON_NUM_THREADS` when it is set to a
/// number of at least 1; `None` when it is unset, empty or `0` (rayon's "default"). Any other
/// value is an error naming the variable.
pub fn threads_from_env() -> Result<Option<NonZeroUsize>, ThreadsError> {
    match std::env::var("RAYON_NUM_THREADS") {
        Ok(v) if v.trim().is_empty() || v.trim() == "0" => Ok(None),
        Ok(v) => parse_threads(&v, "RAYON_NUM_THREADS").map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(ThreadsError::Invalid {
            source_name: "RAYON_NUM_THREADS".into(),
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

/// The thread count of a run: `requested` when given, else `RAYON_NUM_THREADS`, else
/// [`available_cores`].
pub fn resolve_threads(requested: Option<NonZeroUsize>) -> Result<NonZeroUsize, ThreadsError> {
    match requested {
        Some(n) => Ok(n),
        None => Ok(threads_from_env()?.unwrap_or_else(available_cores)),
    }
}

/// Stack size of the pool's threads: the main thread's usual 8 MiB, since a whole run (with
/// any plugin a user wrote) executes on one of them.
const STACK_BYTES: usize = 8 << 20;

/// The rayon pool a run executes in. Build it once per run (or per worker); see the
/// [module docs](self).
pub struct ThreadPool {
    pool: rayon::ThreadPool,
    threads: NonZeroUsize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// Starts a pool of `threads` worker threads (named `gradguard-<i>`).
    pub fn new(threads: NonZeroUsize) -> Result<Self, ThreadsError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.get())
            .stack_size(STACK_BYTES)
            .thread_name(|i| format!("gradguard-{i}"))
            .build()
            .map_err(|e| ThreadsError::Build {
                threads: threads.get(),
                message: e.to_string(),
            })?;
        Ok(Self { pool, threads })
    }

    /// The number of worker threads.
    pub fn threads(&self) -> NonZeroUsize {
        self.threads
    }

    /// Runs `f` on one of the pool's threads and waits for it; everything `f` runs in parallel
    /// (gemm, the recurrent layers' batch split) uses this pool. Running the whole loop inside
    /// (rather than calling into the pool for each product) is what makes 2 threads pay: a
    /// call from outside a pool costs a cross-thread wake-up each time.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_parse_or_say_what_is_wrong() {
        assert_eq!(parse_threads("4", "--threads").unwrap().get(), 4);
        assert_eq!(parse_threads(" 2 ", "--threads").unwrap().get(), 2);
        for bad in ["0", "-1", "1.5", "two", "", "99999999999999999999999"] {
            let e = parse_threads(bad, "--threads").unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "--threads: `{bad}` is not a number of threads (expected a whole number, at least 1)"
                )
            );
        }
    }

    #[test]
    fn an_explicit_count_wins_and_the_pool_has_it() {
        let two = NonZeroUsize::new(2).unwrap();
        assert_eq!(resolve_threads(Some(two)).unwrap(), two);
        let pool = ThreadPool::new(two).unwrap();
        assert_eq!(pool.threads(), two);
        assert_eq!(pool.install(rayon::current_num_threads), 2);
        let name = pool.install(|| std::thread::current().name().map(str::to_string));
        assert!(name.is_some_and(|n| n.starts_with("gradguard-")));
    }
}
