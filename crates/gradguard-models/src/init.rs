//! Weight initialisers (see [`InitScheme`] for each formula). Deterministic from the seed.

use crate::linalg::orthonormal_columns;
use crate::rng::Rng64;
use crate::spec::{InitScheme, InitSpec};

/// Fills a `[fan_out, fan_in]` row-major matrix according to `spec` (formulas on
/// [`InitScheme`]'s variants). A fan of 0 counts as 1, so an empty matrix never divides by 0.
pub fn init_matrix(spec: &InitSpec, fan_out: usize, fan_in: usize, rng: &mut Rng64) -> Vec<f32> {
    let n = fan_out * fan_in;
    let g = spec.gain;
    let fi = fan_in.max(1) as f64;
    let fsum = (fan_in + fan_out).max(1) as f64;
    let uniform = |a: f64, rng: &mut Rng64| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * a) as f32)
            .collect()
    };
    let normal = |s: f64, rng: &mut Rng64| -> Vec<f32> {
        (0..n).map(|_| (rng.normal() * s) as f32).collect()
    };
    match spec.scheme {
        InitScheme::GlorotUniform => uniform(g * (6.0 / fsum).sqrt(), rng),
        InitScheme::GlorotNormal => normal(g * (2.0 / fsum).sqrt(), rng),
        InitScheme::HeUniform => uniform(g * (6.0 / fi).sqrt(), rng),
        InitScheme::HeNormal => normal(g * (2.0 / fi).sqrt(), rng),
        InitScheme::LecunUniform => uniform(g * (3.0 / fi).sqrt(), rng),
        InitScheme::LecunNormal => normal(g * (1.0 / fi).sqrt(), rng),
        InitScheme::Normal => normal(g * spec.std, rng),
        InitScheme::Orthogonal => orthogonal(fan_out, fan_in, g, rng),
    }
}

/// A `rows × cols` (semi-)orthogonal matrix times `gain`, as PyTorch's `orthogonal_`: the Q
/// factor of a Gaussian matrix (of the transpose when `rows < cols`), signs fixed so that
/// diag(R) > 0. Rows (or columns, whichever are fewer) are orthonormal.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut Rng64) -> Vec<f32> {
    let (r, c) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut a: Vec<f64> = (0..r * c).map(|_| rng.normal()).collect();
    orthonormal_columns(&mut a, r, c);
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let v = if rows >= cols {
                a[i * c + j]
            } else {
                a[j * c + i]
            };
            out[i * cols + j] = (v * gain) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_and_columns() {
        let mut rng = Rng64::new(3, 0);
        for (rows, cols) in [(6, 6), (8, 3), (3, 8)] {
            let w = orthogonal(rows, cols, 2.0, &mut rng);
            // the smaller dimension's vectors are orthogonal with norm 2
            let (nvec, len) = if rows >= cols {
                (cols, rows)
            } else {
                (rows, cols)
            };
            let get = |v: usize, e: usize| -> f64 {
                if rows >= cols {
                    w[e * cols + v] as f64
                } else {
                    w[v * cols + e] as f64
                }
            };
            for p in 0..nvec {
                for q in 0..nvec {
                    let dot: f64 = (0..len).map(|e| get(p, e) * get(q, e)).sum();
                    let want = if p == q { 4.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "{rows}x{cols} {p},{q}: {dot}");
                }
            }
        }
    }

    fn spec(scheme: InitScheme, gain: f64, std: f64) -> InitSpec {
        InitSpec { scheme, gain, std }
    }

    /// Mean of x² (the variance about the known mean 0).
    fn second_moment(w: &[f32]) -> f64 {
        w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64
    }

    /// Checks the sample second moment of `w` against `var` within 5 standard errors of the
    /// estimator: Var(x²) = 2 var² for a centred normal and 4 a⁴ / 45 = 0.8 var² for U(-a, a).
    fn assert_variance(name: &str, w: &[f32], var: f64, uniform: bool) {
        let n = w.len() as f64;
        let se = if uniform {
            (0.8f64).sqrt() * var / n.sqrt()
        } else {
            2f64.sqrt() * var / n.sqrt()
        };
        let got = second_moment(w);
        assert!(
            (got - var).abs() < 5.0 * se,
            "{name}: variance {got}, expected {var} ± {}",
            5.0 * se
        );
    }

    /// All values within ±a, and the largest within 1% of a (so the bound is the right one).
    fn assert_bound(name: &str, w: &[f32], a: f64) {
        let max = w.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
        assert!(
            max <= a * (1.0 + 1e-6),
            "{name}: {max} exceeds the bound {a}"
        );
        assert!(max > 0.99 * a, "{name}: largest {max}, bound {a}");
    }

    /// Every scheme at fan_out 100, fan_in 50 (10 000 values) with gain 1 and gain 2;
    /// expected values computed by hand:
    ///
    /// | scheme         | bound a                  | variance (gain 1) |
    /// |----------------|--------------------------|-------------------|
    /// | glorot_uniform | sqrt(6/150) = 0.2        | 0.04/3            |
    /// | glorot_normal  | -                        | 2/150             |
    /// | he_uniform     | sqrt(6/50) = sqrt(0.12)  | 0.12/3 = 0.04     |
    /// | he_normal      | -                        | 2/50 = 0.04       |
    /// | lecun_uniform  | sqrt(3/50) = sqrt(0.06)  | 0.06/3 = 0.02     |
    /// | lecun_normal   | -                        | 1/50 = 0.02       |
    /// | normal std 0.5 | -                        | 0.25              |
    #[test]
    fn scales_follow_the_formulas() {
        use InitScheme::*;
        let cases: [(InitScheme, Option<f64>, f64); 7] = [
            (GlorotUniform, Some(0.2), 0.04 / 3.0),
            (GlorotNormal, None, 2.0 / 150.0),
            (HeUniform, Some(0.12f64.sqrt()), 0.04),
            (HeNormal, None, 0.04),
            (LecunUniform, Some(0.06f64.sqrt()), 0.02),
            (LecunNormal, None, 0.02),
            (Normal, None, 0.25),
        ];
        let mut rng = Rng64::new(1, 0);
        for (scheme, bound, var) in cases {
            for gain in [1.0, 2.0] {
                let name = format!("{scheme:?} gain {gain}");
                let w = init_matrix(&spec(scheme, gain, 0.5), 100, 50, &mut rng);
                assert_eq!(w.len(), 5000);
                assert_variance(&name, &w, var * gain * gain, bound.is_some());
                if let Some(a) = bound {
                    assert_bound(&name, &w, a * gain);
                }
            }
        }
    }

    /// he_uniform at gain 1/sqrt(2) is the former definition (bound sqrt(3 / fan_in)) at
    /// gain 1: the same values from the same generator (at fan_in 20, as the demos' first
    /// layer, the two bounds are the same f64).
    #[test]
    fn he_uniform_is_the_former_definition_at_gain_over_sqrt_2() {
        let old_bound = (3.0f64 / 20.0).sqrt();
        let w = init_matrix(
            &spec(InitScheme::HeUniform, std::f64::consts::FRAC_1_SQRT_2, 0.0),
            30,
            20,
            &mut Rng64::new(7, 0),
        );
        let mut rng = Rng64::new(7, 0);
        let old: Vec<f32> = (0..600)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * old_bound) as f32)
            .collect();
        assert_eq!(w, old);
    }
}
