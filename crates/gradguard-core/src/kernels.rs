//! Slice kernels for the fused statistics pass.
//!
//! # Accuracy and range
//! Each f32 is widened to f64 before it is squared. The product of two f32 values is exact in
//! f64 (24 + 24 significand bits fit in 53), and the largest f32 (3.4e38) squares to 1.2e77,
//! far below f64's 1.8e308, so values near 1e30 (or even f32::MAX) never overflow. Sums run in
//! eight independent f64 lanes (which also lets the compiler vectorise) over blocks of
//! [`BLOCK`] elements, and the block sums are added into the total: the rounding error is
//! bounded by about (n / 8 / BLOCK + BLOCK) * 2^-53 relative, i.e. below 1e-12 for 10^8
//! elements. Non-finite values are counted exactly by their exponent bits; the maximum of
//! |x| ignores NaN (comparisons with NaN are false) but keeps infinities.

/// Elements summed per block before the block sum joins the running total.
pub const BLOCK: usize = 4096;

const LANES: usize = 8;
const EXP_MASK: u32 = 0x7f80_0000;

/// Statistics of one slice: sum of squares (f64), max |x| ignoring NaN, count of non-finite values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SliceStats {
    /// Sum of x^2 in f64 (NaN or inf when a value is).
    pub sum_sq: f64,
    /// Largest |x|, ignoring NaN (infinite when a value is infinite).
    pub max_abs: f32,
    /// Number of NaN or infinite values.
    pub nonfinite: usize,
}

/// Whether the CPU has AVX2 (checked once; `is_x86_feature_detected!` caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[inline]
fn block_stats(x: &[f32]) -> SliceStats {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked above); the function only reads `x`.
        return unsafe { block_stats_avx2(x) };
    }
    block_stats_portable(x)
}

/// The same loop compiled with AVX2 enabled, so that LLVM widens the f32 -> f64 conversions
/// and accumulations to 256-bit vectors (the baseline x86-64 target only has SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_stats_avx2(x: &[f32]) -> SliceStats {
    block_stats_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fused_block_avx2(g: &[f32], w: &[f32]) -> (SliceStats, f64, usize) {
    fused_block_portable(g, w)
}

#[inline]
fn fused_block(g: &[f32], w: &[f32]) -> (SliceStats, f64, usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked above); the function only reads its slices.
        return unsafe { fused_block_avx2(g, w) };
    }
    fused_block_portable(g, w)
}

#[inline(always)]
fn block_stats_portable(x: &[f32]) -> SliceStats {
    let mut acc = [0.0f64; LANES];
    let mut mx = [0.0f32; LANES];
    let mut bad = [0u32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let v = c[l];
            let d = v as f64;
            acc[l] += d * d;
            let a = v.abs();
            mx[l] = if a > mx[l] { a } else { mx[l] };
            bad[l] += ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32;
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        let d = v as f64;
        acc[l] += d * d;
        let a = v.abs();
        mx[l] = if a > mx[l] { a } else { mx[l] };
        bad[l] += ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32;
    }
    SliceStats {
        sum_sq: acc.iter().sum(),
        max_abs: mx.iter().fold(0.0f32, |m, &a| if a > m { a } else { m }),
        nonfinite: bad.iter().map(|&b| b as usize).sum(),
    }
}

/// Sum of squares, max |x| and non-finite count of `x`, in one read pass.
pub fn slice_stats(x: &[f32]) -> SliceStats {
    let mut out = SliceStats::default();
    for block in x.chunks(BLOCK) {
        let b = block_stats(block);
        out.sum_sq += b.sum_sq;
        if b.max_abs > out.max_abs {
            out.max_abs = b.max_abs;
        }
        out.nonfinite += b.nonfinite;
    }
    out
}

/// Statistics of gradients and weights of one tensor, computed in one pass over both slices.
/// Returns `(grad stats, weight sum of squares, weight non-finite count)`.
pub fn fused_stats(grads: &[f32], weights: &[f32]) -> (SliceStats, f64, usize) {
    let mut g_out = SliceStats::default();
    let mut w_sq = 0.0f64;
    let mut w_bad = 0usize;
    let n = grads.len().min(weights.len());
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let g = &grads[start..end];
        let w = &weights[start..end];
        let b = fused_block(g, w);
        g_out.sum_sq += b.0.sum_sq;
        if b.0.max_abs > g_out.max_abs {
            g_out.max_abs = b.0.max_abs;
        }
        g_out.nonfinite += b.0.nonfinite;
        w_sq += b.1;
        w_bad += b.2;
        start = end;
    }
    // Lengths always agree in a ParamView; a longer gradient slice is still measured whole.
    if grads.len() > n {
        let rest = slice_stats(&grads[n..]);
        g_out.sum_sq += rest.sum_sq;
        g_out.max_abs = g_out.max_abs.max(rest.max_abs);
        g_out.nonfinite += rest.nonfinite;
    }
    (g_out, w_sq, w_bad)
}

#[inline(always)]
fn fused_block_portable(g: &[f32], w: &[f32]) -> (SliceStats, f64, usize) {
    let mut acc = [0.0f64; LANES];
    let mut wacc = [0.0f64; LANES];
    let mut mx = [0.0f32; LANES];
    let mut bad = [0u32; LANES];
    let mut wbad = [0u32; LANES];
    let gc = g.chunks_exact(LANES);
    let wc = w.chunks_exact(LANES);
    let (gr, wr) = (gc.remainder(), wc.remainder());
    for (cg, cw) in gc.zip(wc) {
        for l in 0..LANES {
            let v = cg[l];
            let d = v as f64;
            acc[l] += d * d;
            let a = v.abs();
            mx[l] = if a > mx[l] { a } else { mx[l] };
            bad[l] += ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32;
            let u = cw[l];
            let e = u as f64;
            wacc[l] += e * e;
            wbad[l] += ((u.to_bits() & EXP_MASK) == EXP_MASK) as u32;
        }
    }
    for (l, (&v, &u)) in gr.iter().zip(wr).enumerate() {
        let d = v as f64;
        acc[l] += d * d;
        let a = v.abs();
        mx[l] = if a > mx[l] { a } else { mx[l] };
        bad[l] += ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32;
        let e = u as f64;
        wacc[l] += e * e;
        wbad[l] += ((u.to_bits() & EXP_MASK) == EXP_MASK) as u32;
    }
    (
        SliceStats {
            sum_sq: acc.iter().sum(),
            max_abs: mx.iter().fold(0.0f32, |m, &a| if a > m { a } else { m }),
            nonfinite: bad.iter().map(|&b| b as usize).sum(),
        },
        wacc.iter().sum(),
        wbad.iter().map(|&b| b as usize).sum(),
    )
}

/// Multiplies every value by `c` in place.
pub fn scale_in_place(x: &mut [f32], c: f32) {
    for v in x.iter_mut() {
        *v *= c;
    }
}

/// Sets every non-finite value to 0 in place; returns how many were replaced.
pub fn zero_nonfinite(x: &mut [f32]) -> usize {
    let mut n = 0;
    for v in x.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let s = slice_stats(&[3.0, -4.0]);
        assert_eq!(
            s,
            SliceStats {
                sum_sq: 25.0,
                max_abs: 4.0,
                nonfinite: 0
            }
        );
        let s = slice_stats(&[]);
        assert_eq!(s, SliceStats::default());
        let s = slice_stats(&[1.0, f32::NAN, f32::INFINITY, -2.0, f32::NEG_INFINITY]);
        assert_eq!(s.nonfinite, 3);
        assert_eq!(s.max_abs, f32::INFINITY);
        assert!(s.sum_sq.is_nan());
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let x = vec![1e30f32; 1000];
        let s = slice_stats(&x);
        let norm = s.sum_sq.sqrt();
        let expected = (1e30f32 as f64) * (1000f64).sqrt();
        assert!(
            ((norm - expected) / expected).abs() < 1e-12,
            "{norm} vs {expected}"
        );
        let s = slice_stats(&[f32::MAX, f32::MAX]);
        assert!(s.sum_sq.is_finite());
    }

    #[test]
    fn fused_matches_separate() {
        let g: Vec<f32> = (0..10_007)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        let w: Vec<f32> = (0..10_007)
            .map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.1)
            .collect();
        let (gs, wsq, wbad) = fused_stats(&g, &w);
        let gs2 = slice_stats(&g);
        let ws2 = slice_stats(&w);
        assert!((gs.sum_sq - gs2.sum_sq).abs() <= 1e-12 * gs2.sum_sq);
        assert_eq!(gs.max_abs, gs2.max_abs);
        assert!((wsq - ws2.sum_sq).abs() <= 1e-12 * ws2.sum_sq);
        assert_eq!(wbad, 0);
    }

    #[test]
    fn dispatched_and_portable_agree_bit_for_bit() {
        let x: Vec<f32> = (0..5003)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.7e-3)
            .collect();
        let w: Vec<f32> = x.iter().map(|v| v * 3.0 + 1.0).collect();
        assert_eq!(block_stats(&x), block_stats_portable(&x));
        let (a, b) = (fused_block(&x, &w), fused_block_portable(&x, &w));
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.to_bits(), b.1.to_bits());
        assert_eq!(a.2, b.2);
    }

    #[test]
    fn zeroes_nonfinite() {
        let mut x = [1.0, f32::NAN, -f32::INFINITY, 2.0];
        assert_eq!(zero_nonfinite(&mut x), 2);
        assert_eq!(x, [1.0, 0.0, 0.0, 2.0]);
    }
}
