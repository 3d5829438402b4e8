//! A small pool of `Vec<f32>` buffers, so that a training step reuses its multi-megabyte
//! activation buffers instead of asking malloc (and the kernel, for mmap'd blocks) every step.

use std::sync::{Arc, Mutex};

/// Shared free list of buffers. Cloning shares the list.
#[derive(Clone, Default)]
pub(crate) struct Pool {
    free: Arc<Mutex<Vec<Vec<f32>>>>,
}

/// At most this many idle buffers are kept (a step needs about a dozen per layer).
const MAX_IDLE: usize = 64;

impl Pool {
    /// A buffer of exactly `len` elements with UNSPECIFIED (stale but initialised) contents:
    /// the caller must overwrite every element it reads.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // Prefer an exact fit (no re-initialisation), then the smallest one large enough.
        let pos = free.iter().position(|b| b.len() == len).or_else(|| {
            free.iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        });
        match pos {
            Some(i) => {
                let mut b = free.swap_remove(i);
                b.resize(len, 0.0);
                b
            }
            None => vec![0.0; len],
        }
    }

    /// A buffer of `len` zeros.
    pub fn take_zeroed(&self, len: usize) -> Vec<f32> {
        let mut b = self.take(len);
        b.fill(0.0);
        b
    }

    /// Returns buffers to the pool.
    pub fn give(&self, bufs: impl IntoIterator<Item = Vec<f32>>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for b in bufs {
            if free.len() < MAX_IDLE && b.capacity() > 0 {
                free.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers() {
        let pool = Pool::default();
        let a = pool.take(100);
        let ptr = a.as_ptr();
        pool.give([a]);
        let b = pool.take(100);
        assert_eq!(b.as_ptr(), ptr);
        let z = pool.take_zeroed(10);
        assert!(z.iter().all(|&v| v == 0.0));
    }
}
