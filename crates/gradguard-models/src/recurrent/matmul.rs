//! A bounds-checked wrapper over `gemm` 0.19 (AVX-512 on stable Rust) for row-major slices.

use gemm::Parallelism;

/// A matrix operand: a slice and its row and column strides (in elements).
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// Whether a matrix of `r x c` with these strides fits in `len` elements.
fn fits(len: usize, r: usize, c: usize, rs: usize, cs: usize) -> bool {
    r == 0 || c == 0 || (r - 1) * rs + (c - 1) * cs < len
}

/// `dst[m, n] (row-major, row stride dst_rs) = (accumulate ? dst : 0) + lhs[m, k] * rhs[k, n]`.
///
/// `parallel` lets gemm use the current rayon pool; pass it only for large products.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(fits(dst.len(), m, n, dst_rs, 1), "matmul: dst too small");
    assert!(
        fits(lhs.data.len(), m, k, lhs.rs, lhs.cs),
        "matmul: lhs too small"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "matmul: rhs too small"
    );
    let parallelism = if parallel && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above check that every index gemm touches, (i*rs + j*cs) for i < rows
    // and j < cols, lies inside the corresponding slice; `dst` is a unique borrow and cannot
    // alias `lhs`/`rhs` (shared borrows). Strides fit in isize because the slices exist.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_products_match_hand_values() {
        // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut d = [0.0; 4];
        matmul(
            2,
            2,
            2,
            &mut d,
            2,
            false,
            Mat::rows(&a, 2),
            Mat::rows(&b, 2),
            false,
        );
        assert_eq!(d, [19.0, 22.0, 43.0, 50.0]);
        // accumulate a * b^T = [1*5+2*6, 1*7+2*8; 3*5+4*6, 3*7+4*8] = [17 23; 39 53]
        matmul(
            2,
            2,
            2,
            &mut d,
            2,
            true,
            Mat::rows(&a, 2),
            Mat::transposed(&b, 2),
            false,
        );
        assert_eq!(d, [36.0, 45.0, 82.0, 103.0]);
    }
}

#[cfg(test)]
mod determinism_tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// gemm's rayon parallelism splits the output, never the depth, so a product's bits do
    /// not depend on the thread count; and a row of the product does not depend on how many
    /// other rows are computed in the same call (the batch split of the recurrent layers
    /// relies on both).
    #[test]
    fn products_do_not_depend_on_threads_or_row_blocks() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        // (m, n, k, lhs transposed): recurrent steps, dW over all rows (depth > gemm's kc).
        for &(m, n, k, lt) in &[
            (32, 512, 128, false),
            (17, 384, 96, false),
            (512, 128, 1600, true),
            (512, 32, 1600, true),
            (1600, 512, 32, false),
            (64, 32, 32, false),
            (40, 16, 16, false),
            (256, 8, 8, false),
            (128, 96, 32, false),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let lhs = if lt {
                Mat::transposed(&a, m)
            } else {
                Mat::rows(&a, k)
            };
            let mut one = values(m * n, 3);
            let mut par = one.clone();
            matmul(m, n, k, &mut one, n, true, lhs, Mat::rows(&b, n), false);
            pool.install(|| matmul(m, n, k, &mut par, n, true, lhs, Mat::rows(&b, n), true));
            assert!(
                one.iter()
                    .zip(&par)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{n}x{k}: 1 and 3 threads differ"
            );
            // Row-major left operands only: with a transposed one (dW = dZ^T X) and few columns,
            // gemm 0.19 sums row blocks of fewer than 128 rows differently (measured on
            // 512x32x1600), so weight gradients are never cut into row blocks.
            if !lt {
                // Rows in blocks of 2..=m rows give the same bits as one call.
                for block in [2, 3, 8, 16, 64] {
                    let mut blocked = values(m * n, 3);
                    let mut r0 = 0;
                    while r0 < m {
                        let mut r1 = (r0 + block).min(m);
                        if m - r1 == 1 {
                            r1 = m;
                        }
                        matmul(
                            r1 - r0,
                            n,
                            k,
                            &mut blocked[r0 * n..r1 * n],
                            n,
                            true,
                            Mat::rows(&a[r0 * k..r1 * k], k),
                            Mat::rows(&b, n),
                            false,
                        );
                        r0 = r1;
                    }
                    assert!(
                        one.iter()
                            .zip(&blocked)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}x{n}x{k}: blocks of {block} rows differ"
                    );
                }
            }
        }
    }
}
