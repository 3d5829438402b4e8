//! Weight initialisers (see [`InitScheme`] for each formula). Deterministic from the seed.

use crate::linalg::orthonormal_columns;
use crate::rng::Rng64;
use crate::spec::{InitScheme, InitSpec};

/// Fills a `[fan_out, fan_in]` row-major matrix according to `spec`.
pub fn init_matrix(spec: &InitSpec, fan_out: usize, fan_in: usize, rng: &mut Rng64) -> Vec<f32> {
    let n = fan_out * fan_in;
    let g = spec.gain;
    match spec.scheme {
        InitScheme::GlorotUniform => {
            let a = g * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * a) as f32)
                .collect()
        }
        InitScheme::HeUniform => {
            let a = g * (3.0 / fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * a) as f32)
                .collect()
        }
        InitScheme::HeNormal => {
            let s = g * (2.0 / fan_in.max(1) as f64).sqrt();
            (0..n).map(|_| (rng.normal() * s) as f32).collect()
        }
        InitScheme::Normal => {
            let s = g * spec.std;
            (0..n).map(|_| (rng.normal() * s) as f32).collect()
        }
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

    #[test]
    fn scales_follow_the_formulas() {
        let mut rng = Rng64::new(1, 0);
        let spec = InitSpec {
            scheme: InitScheme::GlorotUniform,
            gain: 2.0,
            std: 0.0,
        };
        let w = init_matrix(&spec, 100, 50, &mut rng);
        let a = 2.0 * (6.0f64 / 150.0).sqrt();
        assert!(w.iter().all(|&x| (x as f64).abs() <= a));
        let max = w.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
        assert!(max > 0.95 * a, "{max} vs {a}");
        let spec = InitSpec {
            scheme: InitScheme::HeNormal,
            gain: 1.0,
            std: 0.0,
        };
        let w = init_matrix(&spec, 200, 100, &mut rng);
        let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var - 0.02).abs() < 0.002, "{var}");
        let spec = InitSpec {
            scheme: InitScheme::Normal,
            gain: 1.0,
            std: 0.5,
        };
        let w = init_matrix(&spec, 100, 100, &mut rng);
        let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var - 0.25).abs() < 0.02, "{var}");
    }
}
