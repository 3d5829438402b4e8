//! Power iteration for the spectral radius and the largest singular value of a square block
//! of a row-major f32 matrix, with caller-owned scratch (no allocation once warmed up).
//!
//! **Spectral radius** `ρ(A) = max |λ|`. Plain power iteration on a real non-symmetric matrix
//! does not converge when the dominant eigenvalues are a complex pair (common for random
//! recurrent weights: the iterate rotates). Gelfand's formula `ρ = lim ‖A^k v‖^(1/k)` does:
//! the iterate is renormalised each step and the estimate is the geometric mean of the
//! growth `‖A v_k‖` over the second half of the iterations (the first half lets the dominant
//! subspace take over). The error is O(1/iterations) in log ρ for a rotating pair, and
//! exact for a scaled orthogonal matrix.
//!
//! **Largest singular value** `σ_max(A) = sqrt(λ_max(AᵀA))`, by power iteration on `AᵀA`
//! (symmetric positive semi-definite, so it converges monotonically from below).
//!
//! The start vector is fixed (a deterministic pseudo-random unit vector), so results are
//! reproducible. Accumulation is in f64.

/// Scratch space for [`spectral_radius`] and [`sigma_max`]: three vectors of the block size.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    v: Vec<f64>,
    w: Vec<f64>,
    t: Vec<f64>,
}

impl Scratch {
    fn prepare(&mut self, n: usize) {
        for b in [&mut self.v, &mut self.w, &mut self.t] {
            b.clear();
            b.resize(n, 0.0);
        }
        // Deterministic start: an LCG in [0.5, 1.5) so no component is 0 and no sign
        // pattern is special.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut norm = 0.0;
        for x in self.v.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = 0.5 + (state >> 11) as f64 / (1u64 << 53) as f64;
            norm += *x * *x;
        }
        let norm = norm.sqrt();
        self.v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A square `n x n` block of a row-major matrix with `n` columns, starting at row `row0`.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// The whole matrix, row-major, `n` columns.
    pub data: &'a [f32],
    /// Block size (= number of columns).
    pub n: usize,
    /// First row of the block.
    pub row0: usize,
}

impl Block<'_> {
    fn row(&self, i: usize) -> &[f32] {
        let start = (self.row0 + i) * self.n;
        &self.data[start..start + self.n]
    }

    /// out = A v (dot products in 8 independent f64 lanes, so they vectorise)
    fn mul(&self, v: &[f64], out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot(self.row(i), v);
        }
    }

    /// out = Aᵀ v
    fn mul_t(&self, v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (i, &vi) in v.iter().enumerate() {
            for (o, &a) in out.iter_mut().zip(self.row(i)) {
                *o += a as f64 * vi;
            }
        }
    }

    /// Whether the block lies inside `data`.
    pub fn is_valid(&self) -> bool {
        self.n > 0
            && (self.row0 + self.n)
                .checked_mul(self.n)
                .map(|e| e <= self.data.len())
                .unwrap_or(false)
    }
}

fn dot(a: &[f32], v: &[f64]) -> f64 {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let (ac, vc) = (a.chunks_exact(L), v.chunks_exact(L));
    let (ar, vr) = (ac.remainder(), vc.remainder());
    for (x, y) in ac.zip(vc) {
        for l in 0..L {
            acc[l] += x[l] as f64 * y[l];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (&x, &y) in ar.iter().zip(vr) {
        s += x as f64 * y;
    }
    s
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Spectral radius of `block` by `iterations` power-iteration steps (Gelfand estimate).
/// NaN when the block holds a non-finite value; 0 for a nilpotent block.
pub fn spectral_radius(block: Block<'_>, iterations: usize, scratch: &mut Scratch) -> f64 {
    let n = block.n;
    if !block.is_valid() {
        return f64::NAN;
    }
    scratch.prepare(n);
    let iterations = iterations.max(2);
    let burn_in = iterations / 2;
    let mut log_sum = 0.0;
    for k in 0..iterations {
        block.mul(&scratch.v, &mut scratch.w);
        let g = norm(&scratch.w);
        if !g.is_finite() {
            return f64::NAN;
        }
        if g == 0.0 {
            return 0.0;
        }
        if k >= burn_in {
            log_sum += g.ln();
        }
        for (v, w) in scratch.v.iter_mut().zip(&scratch.w) {
            *v = w / g;
        }
    }
    (log_sum / (iterations - burn_in) as f64).exp()
}

/// Largest singular value of `block` by `iterations` power-iteration steps on `AᵀA`.
/// NaN when the block holds a non-finite value.
pub fn sigma_max(block: Block<'_>, iterations: usize, scratch: &mut Scratch) -> f64 {
    let n = block.n;
    if !block.is_valid() {
        return f64::NAN;
    }
    scratch.prepare(n);
    let mut lambda = 0.0;
    for _ in 0..iterations.max(1) {
        block.mul(&scratch.v, &mut scratch.t);
        block.mul_t(&scratch.t, &mut scratch.w);
        let g = norm(&scratch.w);
        if !g.is_finite() {
            return f64::NAN;
        }
        if g == 0.0 {
            return 0.0;
        }
        lambda = g;
        for (v, w) in scratch.v.iter_mut().zip(&scratch.w) {
            *v = w / g;
        }
    }
    lambda.sqrt()
}

/// How a recurrent weight of shape `[rows, cols]` splits into square gate blocks (defined in
/// gradguard-core beside [`gradguard_core::RecurrentMatrix`]).
pub use gradguard_core::gate_blocks;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `scale` times a rotation by `angle` in each 2x2 diagonal block (an orthogonal matrix
    /// with complex eigenvalues), `n` even.
    pub(crate) fn scaled_rotation(n: usize, scale: f32, angle: f32) -> Vec<f32> {
        let mut m = vec![0.0f32; n * n];
        for b in (0..n).step_by(2) {
            let (c, s) = (angle.cos() * scale, angle.sin() * scale);
            m[b * n + b] = c;
            m[b * n + b + 1] = -s;
            m[(b + 1) * n + b] = s;
            m[(b + 1) * n + b + 1] = c;
        }
        m
    }

    #[test]
    fn rotation_scaled_by_four_has_radius_and_sigma_four() {
        let m = scaled_rotation(8, 4.0, 0.7);
        let mut s = Scratch::default();
        let b = Block {
            data: &m,
            n: 8,
            row0: 0,
        };
        assert!((spectral_radius(b, 100, &mut s) - 4.0).abs() < 1e-5);
        assert!((sigma_max(b, 100, &mut s) - 4.0).abs() < 1e-5);
    }

    #[test]
    fn non_normal_triangular_matrix() {
        // Upper triangular: eigenvalues are the diagonal (radius 4), sigma_max is larger.
        let n = 4;
        let diag = [4.0f32, 2.0, -1.0, 0.5];
        let mut m = vec![0.0f32; n * n];
        for i in 0..n {
            m[i * n + i] = diag[i];
            for j in i + 1..n {
                m[i * n + j] = 1.0;
            }
        }
        let mut s = Scratch::default();
        let b = Block {
            data: &m,
            n,
            row0: 0,
        };
        let rho = spectral_radius(b, 200, &mut s);
        assert!((rho - 4.0).abs() / 4.0 < 0.01, "{rho}");
        let sigma = sigma_max(b, 200, &mut s);
        // sigma_max >= the norm of the first row = sqrt(16 + 3) and >= rho.
        assert!(sigma >= 19f64.sqrt() - 1e-9 && sigma > rho, "{sigma}");
        assert!(sigma < 5.5, "{sigma}");
    }

    #[test]
    fn gate_blocks_and_bad_input() {
        assert_eq!(gate_blocks(&[8, 8]), Some(1));
        assert_eq!(gate_blocks(&[32, 8]), Some(4));
        assert_eq!(gate_blocks(&[10, 8]), None);
        assert_eq!(gate_blocks(&[8]), None);
        let m = [1.0f32, f32::NAN, 0.0, 1.0];
        let mut s = Scratch::default();
        assert!(spectral_radius(
            Block {
                data: &m,
                n: 2,
                row0: 0
            },
            10,
            &mut s
        )
        .is_nan());
        assert!(spectral_radius(
            Block {
                data: &m,
                n: 2,
                row0: 1
            },
            10,
            &mut s
        )
        .is_nan());
        let nil = [0.0f32, 1.0, 0.0, 0.0];
        assert_eq!(
            spectral_radius(
                Block {
                    data: &nil,
                    n: 2,
                    row0: 0
                },
                10,
                &mut s
            ),
            0.0
        );
    }
}
