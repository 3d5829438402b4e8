//! [`Window`]: the last N values of a series in a fixed-capacity ring, with the robust
//! statistics the detectors and remedies that keep histories need.
//!
//! One type for every history (grad_spike, loss_unstable's coefficient mode, autoclip, zclip's
//! warm-up, skip_spike), so that the ring arithmetic and the statistics are written and tested
//! once. The ring and a scratch buffer of the same capacity are allocated once (by
//! [`Window::new`] or the first [`Window::set_capacity`]); pushing and every statistic then
//! allocate nothing.
//!
//! # The statistics, exactly
//! With `x_1..x_n` the values held (`n = len()`):
//! - [`Window::mean`]: `Σx / n`.
//! - [`Window::mean_population_variance`]: `(mean, Σ(x - mean)² / n)` (loss_unstable, zclip).
//! - [`Window::mean_sample_std`]: `(mean, sqrt(Σ(x - mean)² / max(n - 1, 1)))` (skip_spike,
//!   as OLMo-core's `torch.std`).
//! - [`Window::median`]: the middle value of the sorted values, or the mean of the two middle
//!   ones, `0.5 * (lower + upper)`, when `n` is even (grad_spike).
//! - [`Window::median_mad`]: the median and `MAD = median(|x - median|)` (grad_spike).
//! - [`Window::percentile_linear`]: numpy's default (`linear`) percentile: with the values
//!   sorted `s_0 <= ... <= s_{n-1}`, `h = (n - 1) * p / 100`,
//!   `s_floor(h) + (h - floor(h)) * (s_ceil(h) - s_floor(h))` (AutoClip).
//!
//! `median()` and `percentile_linear(50.0)` differ on purpose: for an even count the first is
//! `0.5 * (lower + upper)`, the second `lower + 0.5 * (upper - lower)`, which can differ in the
//! last bit. Each user keeps the definition it documents (and its reference fixtures check).
//!
//! Sums run over the values **in storage order** (the order of the ring's slots, not of
//! arrival), exactly as the hand-written rings this type replaced did, so results are
//! bit-identical to them. The median, MAD and percentile do not depend on the order.
//!
//! An empty window gives NaN for every statistic. Callers keep non-finite values out (every
//! user does: a NaN must not poison a history); the median and percentile order values with
//! `f64::total_cmp`.

/// The last `capacity` values pushed, in a ring allocated once, with a scratch buffer for the
/// order statistics. See the [module documentation](self) for each statistic's formula.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// The values, in storage order (slot `next` holds the oldest once full).
    values: Vec<f64>,
    /// The slot the next push overwrites once the window is full.
    next: usize,
    capacity: usize,
    /// Reused by the median, MAD and percentile (never allocates after the first reserve).
    scratch: Vec<f64>,
}

impl PartialEq for Window {
    /// Same capacity and the same values in the same (arrival) order; the scratch is ignored.
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity && self.iter().eq(other.iter())
    }
}

impl Window {
    /// An empty window of `capacity` values, its ring and scratch allocated now. A window of
    /// capacity 0 holds nothing (every push is dropped).
    pub fn new(capacity: usize) -> Self {
        Window {
            values: Vec::with_capacity(capacity),
            next: 0,
            capacity,
            scratch: Vec::with_capacity(capacity),
        }
    }

    /// A window of `capacity` holding `values` (oldest first, at most `capacity` of them), as
    /// a restored checkpoint gives them. Only the values are allocated now; the ring grows to
    /// `capacity` as values are pushed.
    pub fn from_values(capacity: usize, mut values: Vec<f64>) -> Self {
        values.truncate(capacity);
        // Oldest first: a full ring's oldest value is in slot 0, where the next push goes.
        Window {
            values,
            next: 0,
            capacity,
            scratch: Vec::new(),
        }
    }

    /// How many values the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes the capacity `capacity`: nothing happens when it already is (one comparison, so a
    /// plugin whose window length is a public parameter can call this every step); otherwise
    /// the window is emptied and its buffers are sized once. Plugins deserialised with a
    /// default (empty) window call this before their first push.
    pub fn set_capacity(&mut self, capacity: usize) {
        if capacity == self.capacity {
            return;
        }
        self.clear();
        self.capacity = capacity;
        self.values.reserve_exact(capacity);
        self.scratch.reserve_exact(capacity);
    }

    /// Adds `x`; once `capacity` values are held, `x` replaces the oldest.
    pub fn push(&mut self, x: f64) {
        if self.values.len() < self.capacity {
            self.values.push(x);
        } else if self.capacity > 0 {
            self.values[self.next] = x;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether `capacity` values are held (the next push drops the oldest).
    pub fn is_full(&self) -> bool {
        self.values.len() >= self.capacity
    }

    /// Forgets every value (the buffers are kept).
    pub fn clear(&mut self) {
        self.values.clear();
        self.next = 0;
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.values[self.next..]
            .iter()
            .chain(&self.values[..self.next])
            .copied()
    }

    /// The values in storage order (not arrival order once the ring has wrapped): what the
    /// sums run over.
    pub fn stored(&self) -> &[f64] {
        &self.values
    }

    /// The smallest value (`+inf` when empty).
    pub fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// `Σx / n` (storage order; NaN when empty).
    pub fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }

    /// `Σ(x - mean)²` around `mean`, in storage order.
    fn sum_sq_dev(&self, mean: f64) -> f64 {
        self.values.iter().map(|x| (x - mean) * (x - mean)).sum()
    }

    /// `(mean, Σ(x - mean)² / n)`: the population variance (divides by `n`).
    pub fn mean_population_variance(&self) -> (f64, f64) {
        let mean = self.mean();
        (mean, self.sum_sq_dev(mean) / self.values.len() as f64)
    }

    /// `(mean, sqrt(Σ(x - mean)² / max(n - 1, 1)))`: the sample standard deviation (divides by
    /// `n - 1`, or by 1 for a single value, whose deviation is 0).
    pub fn mean_sample_std(&self) -> (f64, f64) {
        let mean = self.mean();
        let n = self.values.len() as f64;
        (mean, (self.sum_sq_dev(mean) / (n - 1.0).max(1.0)).sqrt())
    }

    /// The median: the middle value, or `0.5 * (lower + upper)` of the two middle values for
    /// an even count (NaN when empty). Uses the scratch buffer: no allocation.
    pub fn median(&mut self) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.values);
        median_in_place(&mut self.scratch)
    }

    /// `(median, MAD)` with `MAD = median(|x - median|)` (the raw MAD; multiply by 1.4826 for
    /// the normal-consistent scale). NaN for both when empty. No allocation.
    pub fn median_mad(&mut self) -> (f64, f64) {
        let med = self.median();
        if med.is_nan() {
            return (f64::NAN, f64::NAN);
        }
        for x in self.scratch.iter_mut() {
            *x = (*x - med).abs();
        }
        (med, median_in_place(&mut self.scratch))
    }

    /// The `p`-th percentile (`p` in [0, 100]) with numpy's default linear interpolation, see
    /// [`percentile_sorted`] (NaN when empty). Sorts a copy in the scratch buffer: no
    /// allocation, O(n log n).
    pub fn percentile_linear(&mut self, p: f64) -> f64 {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.values);
        self.scratch.sort_unstable_by(f64::total_cmp);
        percentile_sorted(&self.scratch, p)
    }
}

/// `p`-th percentile of `sorted` (ascending) with numpy's default linear interpolation:
/// `h = (k - 1) * p / 100`, `s_floor(h) + (h - floor(h)) * (s_ceil(h) - s_floor(h))`.
/// NaN when `sorted` is empty.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let k = sorted.len();
    if k == 0 {
        return f64::NAN;
    }
    let h = (k - 1) as f64 * p / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(k - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Median of `xs`, reordering it (a selection, O(n)): the middle value, or
/// `0.5 * (lower + upper)` for an even count. `xs` must be non-empty.
pub fn median_in_place(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    let mid = n / 2;
    let (_, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if n % 2 == 1 {
        upper
    } else {
        let lower = xs[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(cap: usize, xs: &[f64]) -> Window {
        let mut w = Window::new(cap);
        xs.iter().for_each(|&x| w.push(x));
        w
    }

    #[test]
    fn ring_keeps_the_last_values_in_order() {
        let mut w = Window::new(3);
        assert!(w.is_empty() && !w.is_full());
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            w.push(x);
        }
        assert_eq!((w.len(), w.is_full(), w.capacity()), (3, true, 3));
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![3.0, 4.0, 5.0]);
        // slots: 4 and 5 overwrote 1 and 2
        assert_eq!(w.stored(), &[4.0, 5.0, 3.0]);
        assert_eq!(w.min(), 3.0);
        assert_eq!(w, filled(3, &[3.0, 4.0, 5.0]));
        w.clear();
        assert!(w.is_empty());
        assert_eq!(w.iter().count(), 0);
        w.push(9.0);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![9.0]);
        // capacity 0 holds nothing
        let mut z = Window::new(0);
        z.push(1.0);
        assert!(z.is_empty() && z.is_full());
    }

    #[test]
    fn set_capacity_sizes_once_and_empties_on_change() {
        let mut w = Window::default();
        w.set_capacity(4);
        w.push(1.0);
        w.set_capacity(4);
        assert_eq!(w.len(), 1);
        w.set_capacity(2);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), 2);
    }

    #[test]
    fn mean_and_variances_hand_computed() {
        // 1, 3, 1, 3: mean 2, Σ(x - 2)² = 4: population variance 1, sample std sqrt(4/3).
        let w = filled(4, &[1.0, 3.0, 1.0, 3.0]);
        assert_eq!(w.mean(), 2.0);
        assert_eq!(w.mean_population_variance(), (2.0, 1.0));
        assert_eq!(w.mean_sample_std(), (2.0, (4.0f64 / 3.0).sqrt()));
        // one value: sample std divides by max(0, 1) = 1, giving 0.
        assert_eq!(filled(4, &[5.0]).mean_sample_std(), (5.0, 0.0));
        assert!(Window::new(3).mean().is_nan());
        // 1, 2, 3, 4: mean 2.5, Σ = 5: sample variance 5/3 (skip_spike's std 1.291)
        let (_, s) = filled(4, &[1.0, 2.0, 3.0, 4.0]).mean_sample_std();
        assert!((s - 1.290_994_448_735_805_6).abs() < 1e-15);
    }

    #[test]
    fn median_and_mad_hand_computed() {
        assert_eq!(filled(3, &[5.0, 1.0, 3.0]).median(), 3.0);
        assert_eq!(filled(4, &[4.0, 1.0, 3.0, 2.0]).median(), 2.5);
        // sorted 7 8 8 10 10 10 10 12 12 13: median 10; |x - 10| sorted 0 0 0 0 2 2 2 2 3 3:
        // MAD 2 (grad_spike's MAD_HISTORY).
        let mut w = filled(
            10,
            &[10.0, 12.0, 8.0, 10.0, 13.0, 7.0, 10.0, 10.0, 12.0, 8.0],
        );
        assert_eq!(w.median_mad(), (10.0, 2.0));
        // the window itself is untouched by the selections
        assert_eq!(w.iter().next(), Some(10.0));
        let (m, d) = Window::new(2).median_mad();
        assert!(m.is_nan() && d.is_nan());
    }

    #[test]
    fn percentile_is_numpys_linear() {
        let mut w = filled(5, &[5.0, 3.0, 1.0, 4.0, 2.0]);
        assert_eq!(w.percentile_linear(10.0), 1.4);
        assert_eq!(w.percentile_linear(50.0), 3.0);
        assert_eq!(w.percentile_linear(100.0), 5.0);
        assert_eq!(w.percentile_linear(0.0), 1.0);
        assert_eq!(filled(1, &[7.0]).percentile_linear(10.0), 7.0);
        assert!(Window::new(1).percentile_linear(50.0).is_nan());
        // even count, p = 50: 1 + 0.5 * (2 - 1) (the median's definition differs in form)
        assert_eq!(filled(2, &[1.0, 2.0]).percentile_linear(50.0), 1.5);
    }
}
