//! Matrix products over row-major `f32` slices (gemm 0.19) and the f64 orthogonalisation used
//! by the orthogonal initialiser.

/// Multiply-adds (m x n x k) from which a product runs on gemm's rayon parallelism when the
/// current pool has more than one thread. gemm splits the output, never a sum, so the bits are
/// the same on any number of threads (`recurrent::matmul::determinism_tests`). Tuned on the
/// MLP 784-256-256-10 step at 2 threads (BENCHMARKS.md, Threads): with its 12.8 M and 4.2 M
/// multiply-add products parallel the step took 1.09-1.12 ms, with only the 12.8 M one
/// 1.01-1.11 ms, with neither 0.95-0.98 ms (interleaved, load 1.2-1.5): a fork-join that wakes
/// a sleeping worker costs 14-21 us here, more than half of such a product saves. So products
/// of this size stay on one thread; larger ones (a wide layer, a big batch) go parallel.
pub(crate) const PARALLEL_MIN_WORK: usize = 16 << 20;

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` where each operand is described by its row and
/// column strides, so transposes are free. With `accumulate` the product is added to `dst`.
/// Products of at least [`PARALLEL_MIN_WORK`] multiply-adds use every thread of the current
/// rayon pool.
///
/// # Panics
/// Only on an internal bug: when a slice is shorter than its strides imply (checked before the
/// unsafe call, callers derive every size from the same tensor shapes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
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
    let last =
        |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(dst.len() >= last(dst_rs, 1, m, n), "matmul: dst too short");
    assert!(
        lhs.len() >= last(lhs_rs, lhs_cs, m, k),
        "matmul: lhs too short"
    );
    assert!(
        rhs.len() >= last(rhs_rs, rhs_cs, k, n),
        "matmul: rhs too short"
    );
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_WORK
        && rayon::current_num_threads() > 1
    {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee every index gemm touches is inside the slices;
    // `dst` is exclusively borrowed and does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Orthonormalises the columns of `a` (`rows × cols`, row-major, `rows >= cols`) in place by
/// modified Gram-Schmidt (twice, for accuracy), and makes the result equal to the Q of a QR
/// decomposition with a non-negative diagonal of R (PyTorch's sign convention).
pub(crate) fn orthonormal_columns(a: &mut [f64], rows: usize, cols: usize) {
    for j in 0..cols {
        for _pass in 0..2 {
            for p in 0..j {
                let mut dot = 0.0;
                for r in 0..rows {
                    dot += a[r * cols + p] * a[r * cols + j];
                }
                for r in 0..rows {
                    a[r * cols + j] -= dot * a[r * cols + p];
                }
            }
        }
        let norm = (0..rows)
            .map(|r| a[r * cols + j] * a[r * cols + j])
            .sum::<f64>()
            .sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for r in 0..rows {
            a[r * cols + j] *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_plain_and_transposed() {
        // A = [[1,2,3],[4,5,6]] (2x3), B = [[1,0],[0,1],[1,1]] (3x2): A·B = [[4,5],[10,11]].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut c = [0.0f32; 4];
        matmul(2, 2, 3, &mut c, 2, false, &a, 3, 1, &b, 2, 1);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
        // Accumulate Aᵀ·A (3x3) using A's transpose through strides: (AᵀA)[0][0] = 1 + 16.
        let mut d = [1.0f32; 9];
        matmul(3, 3, 2, &mut d, 3, true, &a, 1, 3, &a, 3, 1);
        assert_eq!(d[0], 18.0);
        assert_eq!(d[1], 1.0 + 1.0 * 2.0 + 4.0 * 5.0);
    }

    #[test]
    fn gram_schmidt_gives_orthonormal_columns() {
        let mut a = vec![2.0, 1.0, 0.0, 1.0, 1.0, 3.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5];
        orthonormal_columns(&mut a, 4, 3);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..4).map(|r| a[r * 3 + i] * a[r * 3 + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "{i},{j}: {dot}");
            }
        }
    }
}
