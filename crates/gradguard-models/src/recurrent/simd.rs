//! Vectorisable element-wise math for the gate kernels, and the runtime CPU dispatch they use.
//!
//! `exp`, `sigmoid` and `tanh` here are branch-free polynomial versions (Cephes `expf` / `tanhf`
//! coefficients) written so that LLVM turns loops over slices into SIMD code; libm's scalar calls
//! would block that. Accuracy: `exp` within about 2 ulp on [-87, 88]; `tanh` within about 2e-7
//! absolute (relative near 0, thanks to the small-argument polynomial); `sigmoid` within about
//! 3e-7 relative. NaN inputs give NaN outputs (the clamps are written so that NaN passes through),
//! so non-finite values are never hidden from the detectors downstream.

/// Compiles a kernel once per SIMD tier (AVX-512, AVX2+FMA) and portable, and runs the best
/// one for this CPU: gradguard's one dispatch pattern, [`gradguard_core::multiversion!`]
/// (which also honours `GRADGUARD_FORCE_PORTABLE=1`). The body is an `#[inline(always)]`
/// inner function whose slice parameters LLVM treats as non-aliasing, which is what lets the
/// loops vectorise.
pub(crate) use gradguard_core::multiversion;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding it rounds to the nearest integer and leaves that integer in the low bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for f32, vectorisable. Inputs are clamped to [-87.3, 88.3] (so the result is finite and
/// normal); NaN stays NaN.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published Cephes coefficients, kept verbatim
pub(crate) fn exp(x: f32) -> f32 {
    // Written as comparisons so that NaN fails both and passes through unchanged.
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    let t = x.mul_add(LOG2E, ROUND_MAGIC);
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let n = t - ROUND_MAGIC;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let e = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    e * scale
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Hyperbolic tangent: a Cephes polynomial for |x| < 0.625, `1 - 2 / (e^{2x} + 1)` otherwise.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published Cephes coefficients, kept verbatim
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x * x;
    let mut p = -5.704_988_7e-3_f32;
    p = p.mul_add(z, 2.063_908_9e-2);
    p = p.mul_add(z, -5.373_971_6e-2);
    p = p.mul_add(z, 1.333_144_2e-1);
    p = p.mul_add(z, -3.333_328_2e-1);
    let small = (p * z).mul_add(x, x);
    let large = 1.0 - 2.0 / (exp(2.0 * x) + 1.0);
    if z < 0.390_625 {
        small
    } else {
        large
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sigmoid_tanh_match_libm() {
        let mut worst = [0.0f64; 3];
        let mut x = -30.0f32;
        while x < 30.0 {
            let e = (x as f64).exp();
            worst[0] = worst[0].max(((exp(x) as f64 - e) / e).abs());
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            worst[1] = worst[1].max(((sigmoid(x) as f64 - s) / s).abs());
            let t = (x as f64).tanh();
            let err = (tanh(x) as f64 - t).abs() / t.abs().max(1e-30);
            worst[2] = worst[2].max(err);
            x += 0.001_3;
        }
        assert!(worst[0] < 5e-7, "exp rel err {}", worst[0]);
        assert!(worst[1] < 5e-7, "sigmoid rel err {}", worst[1]);
        assert!(worst[2] < 5e-7, "tanh rel err {}", worst[2]);
    }

    #[test]
    fn extremes_and_nan() {
        assert_eq!(sigmoid(1e30), 1.0);
        assert!(sigmoid(-1e30) < 1e-37);
        assert_eq!(tanh(1e30), 1.0);
        assert_eq!(tanh(-1e30), -1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(sigmoid(f32::NAN).is_nan());
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(0.0), 0.0);
        assert!((tanh(1e-8) - 1e-8).abs() < 1e-15);
    }
}
