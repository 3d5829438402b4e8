//! Slice kernels shared by the remedies.
//!
//! Every kernel walks `&[f32]` / `&mut [f32]` once, accumulates in f64 over eight independent
//! lanes (so the compiler vectorises and the rounding error stays near 1e-12 relative, see
//! [`gradguard_core::kernels`]) and allocates nothing. Kernels that change values also return
//! the statistics of the values they wrote, so that a remedy keeps [`gradguard_core::StepStats`]
//! true without a second read pass. They dispatch with [`gradguard_core::multiversion!`], on
//! the same build decision as the measuring kernel.

pub use gradguard_core::kernels::{applied_factor, scale, slice_stats, zero_nonfinite};
use gradguard_core::kernels::{Build, SliceStats};

const LANES: usize = 8;

/// Whether the remedies' kernels run their AVX2 builds: the active build
/// ([`gradguard_core::kernels::active_build`]) covers the AVX2 tier, i.e. the CPU has AVX2 and
/// FMA and `GRADGUARD_FORCE_PORTABLE=1` ([`gradguard_core::kernels::FORCE_PORTABLE_VAR`]) was
/// not set. Decided once per process and cached (one atomic load per call).
pub fn avx2_active() -> bool {
    gradguard_core::kernels::active_build().covers(Build::Avx2)
}

gradguard_core::multiversion! {
    /// Clamps every value to `[-limit, limit]` in place and returns the statistics of the
    /// result, in one pass. NaN passes through unchanged (as in PyTorch's `clamp` and
    /// `jnp.clip`); ±inf become ±limit. `limit` must be finite and non-negative.
    ///
    /// On CPUs with AVX2 an explicit AVX2 loop runs (LLVM does not vectorise the portable one):
    /// it keeps the same eight f64 lanes in the same order, so both give identical results.
    pub fn clamp_measure(x: &mut [f32], limit: f32) -> SliceStats;
    unsafe Avx2 => clamp_measure_avx2,
    Portable => clamp_measure_body,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn clamp_measure_avx2(x: &mut [f32], limit: f32) -> SliceStats {
    use std::arch::x86_64::*;
    let hi = _mm256_set1_ps(limit);
    let lo = _mm256_set1_ps(-limit);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let exp = _mm256_set1_epi32(EXP_MASK as i32);
    let (mut s0, mut s1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut mx = _mm256_setzero_ps();
    let mut bad = _mm256_setzero_si256();
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let p = c.as_mut_ptr();
        // SAFETY: `c` holds exactly 8 f32 values; unaligned loads and stores are used.
        let v = _mm256_loadu_ps(p);
        let y = _mm256_blendv_ps(v, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(v, hi));
        let y = _mm256_blendv_ps(y, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(y, lo));
        _mm256_storeu_ps(p, y);
        let d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(y));
        let d1 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(y));
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
        // max(a, mx) returns mx when a is NaN: NaN is ignored, as in the portable loop.
        mx = _mm256_max_ps(_mm256_and_ps(y, abs_mask), mx);
        let e = _mm256_and_si256(_mm256_castps_si256(y), exp);
        bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(e, exp));
    }
    let mut acc = Acc::new();
    _mm256_storeu_pd(acc.sum_sq.as_mut_ptr(), s0);
    _mm256_storeu_pd(acc.sum_sq.as_mut_ptr().add(4), s1);
    _mm256_storeu_ps(acc.max_abs.as_mut_ptr(), mx);
    _mm256_storeu_si256(acc.bad.as_mut_ptr() as *mut __m256i, bad);
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        let y = if *v > limit {
            limit
        } else if *v < -limit {
            -limit
        } else {
            *v
        };
        *v = y;
        acc.add(l, y);
    }
    acc.finish()
}

// The AVX2 builds below run the same code in the same order as the portable bodies (no FMA),
// so they give the same bits; the AVX2 one does four f64 or eight f32 lanes per instruction,
// which the f64 accumulation needs to keep up with memory.
gradguard_core::multiversion! {
    for [Avx2]
    /// Adds the gradient of an L1/L2 penalty, `g += l1 * sign(w) + 2 * l2 * w` (sign(0) = 0),
    /// in place, in one pass over both slices. Returns the statistics of the new gradients and
    /// `sum |w|` (for the L1 penalty value; the L2 one reads `sum w^2` from the step statistics).
    pub fn add_penalty_grad(g: &mut [f32], w: &[f32], l1: f32, l2: f32) -> (SliceStats, f64) {
        add_penalty_grad_body(g, w, l1, l2)
    }
}

gradguard_core::multiversion! {
    for [Avx2]
    /// Sums of squares of two slices of the same length, in one pass: `(sum g^2, sum w^2)`.
    /// Used per AGC unit (one output row).
    pub fn sum_sq_pair(g: &[f32], w: &[f32]) -> (f64, f64) {
        sum_sq_pair_body(g, w)
    }
}
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

// Portable body of the kernel of the same name without `_body` (see `gradguard_core::multiversion!`).
#[inline(always)]
fn clamp_measure_body(x: &mut [f32], limit: f32) -> SliceStats {
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

// Portable body of the kernel of the same name without `_body` (see `gradguard_core::multiversion!`).
#[inline(always)]
fn add_penalty_grad_body(g: &mut [f32], w: &[f32], l1: f32, l2: f32) -> (SliceStats, f64) {
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

// Portable body of the kernel of the same name without `_body` (see `gradguard_core::multiversion!`).
#[inline(always)]
fn sum_sq_pair_body(g: &[f32], w: &[f32]) -> (f64, f64) {
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
    fn dispatched_kernels_match_the_portable_ones() {
        eprintln!(
            "remedies kernels: dispatched build = {}, compared with portable",
            if avx2_active() { "avx2" } else { "portable" }
        );
        let mut x: Vec<f32> = (0..1003)
            .map(|i| ((i * 7919 % 2001) as f32 - 1000.0) * 0.37)
            .collect();
        x[5] = f32::NAN;
        x[17] = f32::INFINITY;
        x[1001] = f32::NEG_INFINITY;
        x[1002] = f32::NAN;
        let mut y = x.clone();
        let a = clamp_measure(&mut x, 100.0);
        let b = clamp_measure_body(&mut y, 100.0);
        assert_eq!(a.sum_sq.to_bits(), b.sum_sq.to_bits());
        assert_eq!((a.max_abs, a.nonfinite), (b.max_abs, b.nonfinite));
        assert_eq!(a.nonfinite, 2);
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
        let w: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.01).collect();
        let (mut g1, mut g2) = (y.clone(), y.clone());
        for g in [&mut g1, &mut g2] {
            g[5] = 0.0;
            g[1002] = 0.0;
        }
        let p = add_penalty_grad(&mut g1, &w, 0.1, 0.2);
        let q = add_penalty_grad_body(&mut g2, &w, 0.1, 0.2);
        assert_eq!(p.0.sum_sq.to_bits(), q.0.sum_sq.to_bits());
        assert_eq!(p.1.to_bits(), q.1.to_bits());
        assert_eq!(sum_sq_pair(&g1, &w), sum_sq_pair_body(&g1, &w));
        assert!(p.0.sum_sq.is_finite());
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

    /// Random values in segments of one magnitude (ordinary, near 2^60, near 2^-50, huge,
    /// tiny, zeros), mixed signs, and occasionally NaN or ±inf.
    fn random_values() -> impl proptest::strategy::Strategy<Value = Vec<f32>> {
        use proptest::prelude::*;
        prop::collection::vec((0u8..6, 1usize..3000, any::<u64>()), 1..5).prop_map(|segs| {
            let mut out = Vec::new();
            for (class, len, seed) in segs {
                let mut s = seed | 1;
                for _ in 0..len {
                    s ^= s >> 12;
                    s ^= s << 25;
                    s ^= s >> 27;
                    let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
                    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
                    let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
                    let v = match class {
                        0 => sign * unit * 4.0,
                        1 => sign * 2f64.powf(59.0 + 2.0 * unit),
                        2 => sign * 2f64.powf(-51.0 + 2.0 * unit),
                        3 => sign * 1e30 * unit,
                        4 => 0.0,
                        _ => match r % 97 {
                            0 => f64::NAN,
                            1 => f64::INFINITY,
                            2 => f64::NEG_INFINITY,
                            _ => sign * unit,
                        },
                    };
                    out.push(v as f32);
                }
            }
            out
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The dispatched kernels (AVX2 where the CPU has it and GRADGUARD_FORCE_PORTABLE is
        /// not set) give bit-identical results to the portable bodies on random data past
        /// 1024 and 4096 values, and the statistics they return match an f64 reference.
        #[test]
        fn dispatched_kernels_match_portable_on_random_data(x in random_values(), limit in 0.0f32..8.0) {
            static SAY: std::sync::Once = std::sync::Once::new();
            SAY.call_once(|| eprintln!(
                "remedies kernels on random data: dispatched build = {}, compared with portable",
                if avx2_active() { "avx2" } else { "portable" }
            ));
            let (mut a, mut b) = (x.clone(), x.clone());
            let sa = clamp_measure(&mut a, limit);
            let sb = clamp_measure_body(&mut b, limit);
            proptest::prop_assert_eq!(bits(&a), bits(&b));
            proptest::prop_assert_eq!(sa.sum_sq.to_bits(), sb.sum_sq.to_bits());
            proptest::prop_assert_eq!((sa.max_abs, sa.nonfinite), (sb.max_abs, sb.nonfinite));
            // the clamp itself, and its statistics, against a plain reference
            let expect: Vec<f32> = x.iter().map(|&v| if v > limit { limit } else if v < -limit { -limit } else { v }).collect();
            proptest::prop_assert_eq!(bits(&a), bits(&expect));
            proptest::prop_assert_eq!(sa.nonfinite, x.iter().filter(|v| v.is_nan()).count());
            let reference: f64 = expect.iter().filter(|v| !v.is_nan()).map(|&v| v as f64 * v as f64).sum();
            if sa.nonfinite == 0 {
                proptest::prop_assert!((sa.sum_sq - reference).abs() <= 1e-11 * reference);
            }
            let w: Vec<f32> = x.iter().rev().map(|v| if v.is_finite() { v * 0.5 } else { 1.0 }).collect();
            let g: Vec<f32> = expect.iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect();
            let (mut g1, mut g2) = (g.clone(), g.clone());
            let p = add_penalty_grad(&mut g1, &w, 0.1, 0.2);
            let q = add_penalty_grad_body(&mut g2, &w, 0.1, 0.2);
            proptest::prop_assert_eq!(bits(&g1), bits(&g2));
            proptest::prop_assert_eq!(p.0.sum_sq.to_bits(), q.0.sum_sq.to_bits());
            proptest::prop_assert_eq!(p.1.to_bits(), q.1.to_bits());
            let (s1, s2) = sum_sq_pair(&g, &w);
            let (r1, r2) = sum_sq_pair_body(&g, &w);
            proptest::prop_assert_eq!((s1.to_bits(), s2.to_bits()), (r1.to_bits(), r2.to_bits()));
            let mut c1 = g.clone();
            let mut c2 = g.clone();
            scale(&mut c1, 0.37);
            // the portable loop, as `scale` writes it for a normal f32 factor
            c2.iter_mut().for_each(|v| *v *= 0.37f64 as f32);
            proptest::prop_assert_eq!(bits(&c1), bits(&c2));
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
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
