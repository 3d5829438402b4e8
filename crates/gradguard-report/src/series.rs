//! [`BoundedSeries`]: a (step, value) series that keeps memory bounded on long runs.
//!
//! Every point is kept until `capacity` points are stored. Then adjacent buckets are merged
//! in pairs (each bucket now covers twice as many steps) and so on, each time the capacity
//! is reached again. A bucket keeps its smallest and its largest finite value with their
//! steps (min/max decimation), so spikes survive downsampling: a chart drawn from
//! [`BoundedSeries::points`] shows every extreme a full-resolution chart would show.
//! Non-finite values are never dropped silently: each bucket counts them and keeps the
//! first one (step and value), returned by [`BoundedSeries::nonfinite_points`].
//! Memory: `capacity` buckets of 64 bytes, whatever the run length. `push` allocates only
//! when the bucket vector grows to its capacity (once).

/// A bounded, min/max-decimated series. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BoundedSeries {
    capacity: usize,
    width: u64,
    buckets: Vec<Bucket>,
    total: u64,
    nonfinite: u64,
    first_nonfinite: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Raw points added to this bucket.
    raw: u64,
    min: Option<(u64, f64)>,
    max: Option<(u64, f64)>,
    first_nonfinite: Option<(u64, f64)>,
    nonfinite: u64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        raw: 0,
        min: None,
        max: None,
        first_nonfinite: None,
        nonfinite: 0,
    };

    fn add(&mut self, step: u64, value: f64) {
        self.raw += 1;
        if value.is_finite() {
            if self.min.is_none_or(|(_, m)| value < m) {
                self.min = Some((step, value));
            }
            if self.max.is_none_or(|(_, m)| value > m) {
                self.max = Some((step, value));
            }
        } else {
            self.nonfinite += 1;
            if self.first_nonfinite.is_none() {
                self.first_nonfinite = Some((step, value));
            }
        }
    }

    fn merge(a: Bucket, b: Bucket) -> Bucket {
        let pick =
            |x: Option<(u64, f64)>, y: Option<(u64, f64)>, take_y: fn(f64, f64) -> bool| match (
                x, y,
            ) {
                (Some(p), Some(q)) => Some(if take_y(p.1, q.1) { q } else { p }),
                (p, q) => p.or(q),
            };
        Bucket {
            raw: a.raw + b.raw,
            min: pick(a.min, b.min, |p, q| q < p),
            max: pick(a.max, b.max, |p, q| q > p),
            first_nonfinite: a.first_nonfinite.or(b.first_nonfinite),
            nonfinite: a.nonfinite + b.nonfinite,
        }
    }
}

impl Default for BoundedSeries {
    fn default() -> Self {
        BoundedSeries::new(BoundedSeries::DEFAULT_CAPACITY)
    }
}

impl BoundedSeries {
    /// The default number of buckets: every point of runs up to 2000 steps is kept.
    pub const DEFAULT_CAPACITY: usize = 2000;

    /// A series keeping at most `capacity` buckets (rounded up to an even number, at least 4).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(4).next_multiple_of(2);
        BoundedSeries {
            capacity,
            width: 1,
            buckets: Vec::new(),
            total: 0,
            nonfinite: 0,
            first_nonfinite: None,
        }
    }

    /// Adds the value of `step` (steps are expected in increasing order).
    pub fn push(&mut self, step: u64, value: f64) {
        self.total += 1;
        if !value.is_finite() {
            self.nonfinite += 1;
            self.first_nonfinite.get_or_insert(step);
        }
        let last_full = self.buckets.last().is_none_or(|b| b.raw >= self.width);
        if last_full {
            if self.buckets.len() >= self.capacity {
                self.compact();
            }
            self.buckets.push(Bucket::EMPTY);
        }
        if let Some(b) = self.buckets.last_mut() {
            b.add(step, value);
        }
    }

    fn compact(&mut self) {
        let n = self.buckets.len() / 2;
        for i in 0..n {
            self.buckets[i] = Bucket::merge(self.buckets[2 * i], self.buckets[2 * i + 1]);
        }
        if self.buckets.len() % 2 == 1 {
            self.buckets[n] = self.buckets[2 * n];
            self.buckets.truncate(n + 1);
        } else {
            self.buckets.truncate(n);
        }
        self.width *= 2;
    }

    /// How many values were pushed.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many pushed values were NaN or infinite.
    pub fn nonfinite_count(&self) -> u64 {
        self.nonfinite
    }

    /// The first step whose value was NaN or infinite.
    pub fn first_nonfinite_step(&self) -> Option<u64> {
        self.first_nonfinite
    }

    /// How many raw points one stored bucket covers now (1 until the capacity is reached).
    pub fn bucket_width(&self) -> u64 {
        self.width
    }

    /// The finite points to draw, in step order: every point while under capacity; after
    /// that each bucket's minimum and maximum.
    pub fn points(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::with_capacity(self.buckets.len() * 2);
        for b in &self.buckets {
            match (b.min, b.max) {
                (Some(lo), Some(hi)) if lo.0 == hi.0 => out.push(lo),
                (Some(lo), Some(hi)) => {
                    let (a, c) = if lo.0 < hi.0 { (lo, hi) } else { (hi, lo) };
                    out.push(a);
                    out.push(c);
                }
                _ => {}
            }
        }
        out
    }

    /// Runs of finite points between non-finite values, for drawing lines that break at
    /// NaN/inf instead of joining across them.
    pub fn segments(&self) -> Vec<Vec<(u64, f64)>> {
        let mut out: Vec<Vec<(u64, f64)>> = vec![Vec::new()];
        for b in &self.buckets {
            let mut pts = [b.min, b.max];
            if let [Some(lo), Some(hi)] = pts {
                if lo.0 > hi.0 {
                    pts = [Some(hi), Some(lo)];
                } else if lo.0 == hi.0 {
                    pts[1] = None;
                }
            }
            if let Some(cur) = out.last_mut() {
                cur.extend(pts.into_iter().flatten());
            }
            if b.nonfinite > 0 && !out.last().is_none_or(Vec::is_empty) {
                out.push(Vec::new());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// One (step, value) per bucket that held non-finite values: its first one.
    pub fn nonfinite_points(&self) -> Vec<(u64, f64)> {
        self.buckets
            .iter()
            .filter_map(|b| b.first_nonfinite)
            .collect()
    }

    /// The smallest and largest finite value, if any.
    pub fn finite_range(&self) -> Option<(f64, f64)> {
        let lo = self
            .buckets
            .iter()
            .filter_map(|b| b.min.map(|p| p.1))
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .buckets
            .iter()
            .filter_map(|b| b.max.map(|p| p.1))
            .fold(f64::NEG_INFINITY, f64::max);
        (lo <= hi).then_some((lo, hi))
    }

    /// The largest finite value, if any.
    pub fn max_finite(&self) -> Option<f64> {
        self.finite_range().map(|r| r.1)
    }

    /// The last finite point stored.
    pub fn last_finite(&self) -> Option<(u64, f64)> {
        self.buckets
            .iter()
            .rev()
            .find_map(|b| match (b.min, b.max) {
                (Some(a), Some(c)) => Some(if a.0 > c.0 { a } else { c }),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_point_under_capacity() {
        let mut s = BoundedSeries::new(8);
        for step in 1..=8 {
            s.push(step, step as f64 * 0.5);
        }
        assert_eq!(
            s.points(),
            (1..=8).map(|i| (i, i as f64 * 0.5)).collect::<Vec<_>>()
        );
        assert_eq!(s.bucket_width(), 1);
    }

    #[test]
    fn downsamples_by_min_and_max_and_keeps_spikes() {
        let mut s = BoundedSeries::new(8);
        // 1..=32, value 1 except a spike of 100 at step 13 and a dip of -5 at step 27.
        for step in 1..=32u64 {
            let v = match step {
                13 => 100.0,
                27 => -5.0,
                _ => 1.0,
            };
            s.push(step, v);
        }
        // 8 -> compact to 4 buckets of 2 at step 9; to 4 of 4 at step 17 ... width 4 at 32 points.
        assert_eq!(s.bucket_width(), 4);
        let pts = s.points();
        assert!(pts.len() <= 16, "{pts:?}");
        assert!(pts.contains(&(13, 100.0)), "{pts:?}");
        assert!(pts.contains(&(27, -5.0)), "{pts:?}");
        assert!(
            pts.windows(2).all(|w| w[0].0 < w[1].0),
            "not in step order: {pts:?}"
        );
        assert_eq!(s.finite_range(), Some((-5.0, 100.0)));
        assert_eq!(s.len(), 32);
    }

    #[test]
    fn memory_stays_bounded_on_a_long_run() {
        let mut s = BoundedSeries::new(100);
        for step in 1..=1_000_000u64 {
            s.push(step, (step % 997) as f64);
        }
        assert!(s.buckets.len() <= 100);
        assert!(s.points().len() <= 200);
        assert_eq!(s.max_finite(), Some(996.0));
        let (last, _) = s.last_finite().unwrap();
        assert!(last > 1_000_000 - s.bucket_width(), "{last}");
    }

    #[test]
    fn non_finite_values_are_counted_and_break_segments() {
        let mut s = BoundedSeries::new(4);
        for (step, v) in [
            (1, 1.0),
            (2, 2.0),
            (3, f64::NAN),
            (4, 4.0),
            (5, f64::INFINITY),
            (6, f64::NAN),
        ] {
            s.push(step, v);
        }
        assert_eq!(s.nonfinite_count(), 3);
        assert_eq!(s.first_nonfinite_step(), Some(3));
        // capacity 4: after 4 points, pairs merge: [1,2] [3,4] then [5,6].
        assert_eq!(s.bucket_width(), 2);
        let nf = s.nonfinite_points();
        assert_eq!(nf.len(), 2);
        assert_eq!(nf[0].0, 3);
        assert_eq!(nf[1], (5, f64::INFINITY));
        assert_eq!(s.segments(), vec![vec![(1, 1.0), (2, 2.0), (4, 4.0)]]);
        let mut t = BoundedSeries::new(10);
        for (step, v) in [(1, 1.0), (2, f64::NAN), (3, 3.0)] {
            t.push(step, v);
        }
        assert_eq!(t.segments(), vec![vec![(1, 1.0)], vec![(3, 3.0)]]);
    }
}
