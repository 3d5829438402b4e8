//! Slice kernels shared by the remedies.
//!
//! Every kernel walks `&[f32]` / `&mut [f32]` once, accumulates in f64 over eight independent
//! lanes (so the compiler vectorises and the rounding error stays near 1e-12 relative, see
//! [`gradguard_core::kernels`]) and allocates nothing. Kernels that change values also return
//! the statistics of the values they wrote, so that a remedy keeps [`gradguard_core::StepStats`]
//! true without a second read pass.

use gradguard_core::kernels::SliceStats;
pub use gradguard_core::kernels::{slice_stats, zero_nonfinite};

const LANES: usize = 8;
const EXP_MASK: u32 = 0x7f80_0000;

#[inline(always)]
fn is_nonfinite(v: f32) -> u32 {
    ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32
}

/// Lane accumulators for the statistics of written values.
struct Acc {
    sum_sq: [f64; LANES],
    max_abs: [f32; LANES],
    bad: [u32; LANES],
}

impl Acc {
    #[inline(always)]
    fn new() -> Self {
        Acc {
            sum_sq: [0.0; LANES],
            max_abs: [0.0; LANES],
            bad: [0; LANES],
        }
    }

    #[inline(always)]
    fn add(&mut self, l: usize, v: f32) {
        let d = v as f64;
        self.sum_sq[l] += d * d;
        let a = v.abs();
        self.max_abs[l] = if a > self.max_abs[l] {
            a
        } else {
            self.max_abs[l]
        };
        self.bad[l] += is_nonfinite(v);
    }

    #[inline(always)]
    fn finish(&self) -> SliceStats {
        SliceStats {
            sum_sq: self.sum_sq.iter().sum(),
            max_abs: self
                .max_abs
                .iter()
                .fold(0.0f32, |m, &a| if a > m { a } else { m }),
            nonfinite: self.bad.iter().map(|&b| b as usize).sum(),
        }
    }
}

/// Multiplies every value by `c` in place, in one read-and-write pass.
///
/// The product is taken in f32 when `c` is a normal f32 (or 0, 1, NaN: the IEEE rules apply,
/// so `inf * 0` is NaN as in PyTorch); a coefficient below f32's smallest normal (1.2e-38,
/// which happens when clipping a norm near 1e38 to 1) is applied in f64 so that no precision
/// is lost to subnormal rounding.
pub fn scale(x: &mut [f32], c: f64) {
    let c32 = c as f32;
    if needs_f64(c) {
        for v in x.iter_mut() {
            *v = (*v as f64 * c) as f32;
        }
    } else {
        for v in x.iter_mut() {
            *v *= c32;
        }
    }
}

/// The f64 factor that [`scale`] really applies for `c` (f32-rounded when it multiplies in f32).
pub fn applied_factor(c: f64) -> f64 {
    if needs_f64(c) {
        c
    } else {
        c as f32 as f64
    }
}

/// Whether `c` loses precision (or range) as an f32 factor.
#[inline]
fn needs_f64(c: f64) -> bool {
    let c32 = c as f32;
    (c32 == 0.0 && c != 0.0) || c32.is_subnormal() || (c.is_finite() && !c32.is_finite())
}

/// Clamps every value to `[-limit, limit]` in place and returns the statistics of the result,
/// in one pass. NaN passes through unchanged (as in PyTorch's `clamp` and `jnp.clip`); ±inf
/// become ±limit. `limit` must be finite and non-negative.
pub fn clamp_measure(x: &mut [f32], limit: f32) -> SliceStats {
    let mut acc = Acc::new();
    let lo = -limit;
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (l, v) in c.iter_mut().enumerate() {
            let y = if *v > limit {
                limit
            } else if *v < lo {
                lo
            } else {
                *v
            };
            *v = y;
            acc.add(l, y);
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        let y = if *v > limit {
            limit
        } else if *v < lo {
            lo
        } else {
            *v
        };
        *v = y;
        acc.add(l, y);
    }
    acc.finish()
}

/// Adds the gradient of an L1/L2 penalty, `g += l1 * sign(w) + 2 * l2 * w` (sign(0) = 0), in
/// place, in one pass over both slices. Returns the statistics of the new gradients and
/// `sum |w|` (for the L1 penalty value; the L2 one reads `sum w^2` from the step statistics).
pub fn add_penalty_grad(g: &mut [f32], w: &[f32], l1: f32, l2: f32) -> (SliceStats, f64) {
    let mut acc = Acc::new();
    let mut abs = [0.0f64; LANES];
    let two_l2 = 2.0 * l2;
    let n = g.len().min(w.len());
    let (g, w) = (&mut g[..n], &w[..n]);
    let mut gc = g.chunks_exact_mut(LANES);
    let mut wc = w.chunks_exact(LANES);
    for (cg, cw) in (&mut gc).zip(&mut wc) {
        for l in 0..LANES {
            let u = cw[l];
            let s = if u > 0.0 {
                1.0
            } else if u < 0.0 {
                -1.0
            } else {
                0.0
            };
            let y = cg[l] + l1 * s + two_l2 * u;
            cg[l] = y;
            acc.add(l, y);
            abs[l] += u.abs() as f64;
        }
    }
    for (l, (v, &u)) in gc
        .into_remainder()
        .iter_mut()
        .zip(wc.remainder())
        .enumerate()
    {
        let s = if u > 0.0 {
            1.0
        } else if u < 0.0 {
            -1.0
        } else {
            0.0
        };
        let y = *v + l1 * s + two_l2 * u;
        *v = y;
        acc.add(l, y);
        abs[l] += u.abs() as f64;
    }
    (acc.finish(), abs.iter().sum())
}

/// Sums of squares of two slices of the same length, in one pass: `(sum g^2, sum w^2)`.
/// Used per AGC unit (one output row).
pub fn sum_sq_pair(g: &[f32], w: &[f32]) -> (f64, f64) {
    let mut a = [0.0f64; LANES];
    let mut b = [0.0f64; LANES];
    let gc = g.chunks_exact(LANES);
    let wc = w.chunks_exact(LANES);
    let (gr, wr) = (gc.remainder(), wc.remainder());
    for (cg, cw) in gc.zip(wc) {
        for l in 0..LANES {
            let x = cg[l] as f64;
            let y = cw[l] as f64;
            a[l] += x * x;
            b[l] += y * y;
        }
    }
    for (l, (&x, &y)) in gr.iter().zip(wr).enumerate() {
        a[l] += x as f64 * x as f64;
        b[l] += y as f64 * y as f64;
    }
    (a.iter().sum(), b.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_in_f32_and_tiny_coefficients_in_f64() {
        let mut x = [2.0f32, -4.0, 0.0];
        scale(&mut x, 0.5);
        assert_eq!(x, [1.0, -2.0, 0.0]);
        assert_eq!(applied_factor(0.1), 0.1f32 as f64);
        // 1e38 scaled by 1e-40 (subnormal in f32) keeps its precision: 1e-2.
        let mut y = [1e38f32];
        scale(&mut y, 1e-40);
        assert!((y[0] as f64 - 1e-2).abs() < 1e-8, "{}", y[0]);
        assert_eq!(applied_factor(1e-40), 1e-40);
        // IEEE rules: inf * 0 = NaN, as PyTorch's mul_.
        let mut z = [f32::INFINITY, 3.0];
        scale(&mut z, 0.0);
        assert!(z[0].is_nan());
        assert_eq!(z[1], 0.0);
    }

    #[test]
    fn clamp_measures_what_it_wrote() {
        let mut x = [
            3.0f32,
            -3.0,
            1.0,
            2.0,
            -2.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.5,
            -7.0,
        ];
        let s = clamp_measure(&mut x, 2.0);
        assert_eq!(x, [2.0, -2.0, 1.0, 2.0, -2.0, 2.0, -2.0, 0.5, -2.0]);
        assert_eq!(s.sum_sq, 4.0 * 7.0 + 1.0 + 0.25);
        assert_eq!(s.max_abs, 2.0);
        assert_eq!(s.nonfinite, 0);
        let mut n = [f32::NAN, 5.0];
        let s = clamp_measure(&mut n, 1.0);
        assert!(n[0].is_nan());
        assert_eq!(n[1], 1.0);
        assert_eq!(s.nonfinite, 1);
    }

    #[test]
    fn penalty_gradient_hand_computed() {
        // l1 = 0.1, l2 = 0.5: g += 0.1 * sign(w) + w
        let w = [2.0f32, -1.0, 0.0];
        let mut g = [1.0f32, 1.0, 1.0];
        let (s, abs) = add_penalty_grad(&mut g, &w, 0.1, 0.5);
        assert_eq!(g, [1.0 + 0.1 + 2.0, 1.0 - 0.1 - 1.0, 1.0]);
        assert_eq!(abs, 3.0);
        let expect: f64 = g.iter().map(|&v| (v as f64) * (v as f64)).sum();
        assert_eq!(s.sum_sq, expect);
        assert_eq!(s.max_abs, 3.1);
    }

    #[test]
    fn pair_sums() {
        let g: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let w: Vec<f32> = (0..19).map(|i| -(i as f32) * 2.0).collect();
        let (a, b) = sum_sq_pair(&g, &w);
        let e: f64 = (0..19).map(|i| (i * i) as f64).sum();
        assert_eq!(a, e);
        assert_eq!(b, 4.0 * e);
    }
}
