//! What the Guard asks of the training loop it runs in: snapshots, restores and skipped
//! batches. The loop implements [`TrainingHost`]; the Guard never knows the framework.

/// An error the training loop reports back to the Guard (restoring a snapshot failed, ...).
pub type HostError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The checkpoint and data requests a [`crate::Guard`] makes of the loop that drives it.
///
/// The Guard decides *when* (a remedy's [`gradguard_core::CheckpointPolicy`]: every `every`
/// good steps, keep `keep`); the loop decides *how* (a copy of the weights and optimiser
/// state in memory, a file, a framework's `state_dict`).
pub trait TrainingHost {
    /// Takes a snapshot of the model and optimiser now, keeping at most `keep` (the oldest
    /// dropped first).
    fn snapshot(&mut self, keep: usize) -> Result<(), HostError>;

    /// Restores the newest snapshot. Returns the number of updates done when it was taken, or
    /// `None` when none is kept (the Guard then stops the run and says why).
    fn restore_newest(&mut self) -> Result<Option<u64>, HostError>;

    /// Skips the next `n` batches of data (after a rollback, the batches that triggered it).
    fn skip_batches(&mut self, n: u64);
}

/// A loop that keeps no snapshots: a rollback request cannot be honoured, so the Guard stops
/// the run at that step and says so. The right host for a loop (e.g. Python's) that handles
/// rollback itself from [`crate::Decision::action`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheckpoints;

impl TrainingHost for NoCheckpoints {
    fn snapshot(&mut self, _keep: usize) -> Result<(), HostError> {
        Ok(())
    }

    fn restore_newest(&mut self) -> Result<Option<u64>, HostError> {
        Ok(None)
    }

    fn skip_batches(&mut self, _n: u64) {}
}
