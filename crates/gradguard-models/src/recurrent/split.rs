//! The batch split of a recurrent layer across threads.
//!
//! The rows of a batch are independent through time (h_t of row b depends only on row b), so
//! the whole forward recurrence and the whole reverse loop of the backward pass of a group of
//! rows can run on one thread with no synchronisation between time steps. The batch is cut
//! into fixed **lanes** of [`LANE_ROWS`] rows whatever the thread count; a thread takes a
//! contiguous group of lanes. Reductions over the batch (the bias gradients, the per-step norms
//! of dL/dh_t) are summed per lane and then over lanes in lane order, so their bits do not
//! depend on how lanes were grouped, that is on the thread count. Products by W_hh are computed
//! per group of rows, and gemm gives every row the same bits whatever the other rows of the call
//! (`matmul::determinism_tests`), as long as no call has a single row: no lane has one row
//! unless the whole batch does.

use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;

/// Rows per lane (the last lane takes the remainder; a one-row remainder joins the lane
/// before it).
pub(crate) const LANE_ROWS: usize = 8;

/// Multiply-adds of a layer's recurrent products (steps x batch x G*H x H) below which the
/// layer runs on one thread: a fork-join costs a few microseconds, about what 1 M
/// multiply-adds take on one core.
pub(crate) const MIN_SPLIT_WORK: usize = 1 << 20;

/// The lanes of a batch of `batch` rows, as row ranges in order (one empty lane when
/// `batch == 0`).
pub(crate) fn lanes(batch: usize) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(batch / LANE_ROWS + 1);
    let mut start = 0;
    while start < batch {
        let mut end = (start + LANE_ROWS).min(batch);
        if batch - end == 1 {
            end = batch;
        }
        out.push(start..end);
        start = end;
    }
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// How many groups of lanes to run at once: the current rayon pool's threads, at most one per
/// lane, and one when the work is too small to pay for a fork-join.
pub(crate) fn groups(n_lanes: usize, work: usize) -> usize {
    if work < MIN_SPLIT_WORK {
        return 1;
    }
    rayon::current_num_threads().clamp(1, n_lanes.max(1))
}

/// Splits `n_lanes` lanes into `groups` contiguous ranges of lane indices, in order.
pub(crate) fn lane_groups(n_lanes: usize, groups: usize) -> Vec<Range<usize>> {
    let g = groups.clamp(1, n_lanes.max(1));
    (0..g)
        .map(|i| i * n_lanes / g..(i + 1) * n_lanes / g)
        .collect()
}

/// Runs `f` on each group (on the current rayon pool when there are several, inline when one)
/// and returns the results in the groups' order.
pub(crate) fn run_groups<R: Send>(
    groups: &[Range<usize>],
    f: impl Fn(Range<usize>) -> R + Sync,
) -> Vec<R> {
    if groups.len() == 1 {
        vec![f(groups[0].clone())]
    } else {
        groups.par_iter().map(|g| f(g.clone())).collect()
    }
}

/// A buffer of `slots x batch` rows of `width` values that several groups write at once, each
/// only in its own batch rows (row `slot * batch + b`).
#[derive(Clone, Copy)]
pub(crate) struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    width: usize,
    batch: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: SharedRows hands out slices only through `rows`, whose contract requires the slices
// alive at once (on any thread) to be disjoint; f32 is Send + Sync.
unsafe impl Send for SharedRows<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    /// Shares `buf`, a `[slots * batch, width]` row-major buffer, for the length of its borrow.
    pub fn new(buf: &'a mut [f32], width: usize, batch: usize) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            width,
            batch,
            _borrow: PhantomData,
        }
    }

    /// Rows `b` of slot `slot`: `[(slot * batch + b.start) * width, (slot * batch + b.end) * width)`.
    ///
    /// # Safety
    /// No other slice returned by this buffer (on this or another thread) that overlaps the
    /// returned one may be alive while it is: callers take, per slot, only the rows of their
    /// own lane group, and never the same slot's rows twice at once.
    ///
    /// # Panics
    /// When the rows lie outside the buffer (checked before any pointer arithmetic).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn rows(&self, slot: usize, b: Range<usize>) -> &'a mut [f32] {
        let start = (slot * self.batch + b.start) * self.width;
        let end = (slot * self.batch + b.end) * self.width;
        assert!(
            start <= end && end <= self.len,
            "SharedRows: rows out of range"
        );
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract above; the buffer
        // outlives 'a.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_cover_the_batch_without_one_row_lanes() {
        assert_eq!(lanes(0), vec![0..0]);
        assert_eq!(lanes(1), vec![0..1]);
        assert_eq!(lanes(8), vec![0..8]);
        assert_eq!(lanes(9), vec![0..9]);
        assert_eq!(lanes(10), vec![0..8, 8..10]);
        assert_eq!(lanes(32), vec![0..8, 8..16, 16..24, 24..32]);
        for b in 1..100 {
            let l = lanes(b);
            assert_eq!(l[0].start, 0);
            assert_eq!(l.last().map(|r| r.end), Some(b));
            assert!(l.windows(2).all(|w| w[0].end == w[1].start));
            assert!(b == 1 || l.iter().all(|r| r.len() >= 2));
        }
    }

    #[test]
    fn lane_groups_are_contiguous_and_cover_every_lane() {
        assert_eq!(lane_groups(4, 2), vec![0..2, 2..4]);
        assert_eq!(lane_groups(4, 3), vec![0..1, 1..2, 2..4]);
        assert_eq!(lane_groups(2, 8), vec![0..1, 1..2]);
        assert_eq!(lane_groups(1, 1), vec![0..1]);
    }
}
