//! Property tests of the fused statistics pass against a plain float64 reference.

use gradguard_core::kernels::{active_build, Build};
use gradguard_core::{ParamView, Role, StepStats};
use proptest::prelude::*;

fn reference_norm(tensors: &[Vec<f32>]) -> f64 {
    // Float64 reference with scaling (LAPACK dnrm2 style), independent of the kernel: the
    // scale is a power of two (exact divisions) and the sum is Neumaier-compensated, so its own
    // error (about 2^-53) is far below the 1e-12 checked.
    let max = tensors
        .iter()
        .flatten()
        .fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    if max == 0.0 {
        return 0.0;
    }
    let scale = 2f64.powi(max.log2().floor() as i32);
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for &x in tensors.iter().flatten() {
        let sq = (x as f64 / scale).powi(2);
        let t = sum + sq;
        comp += if sum >= sq {
            (sum - t) + sq
        } else {
            (sq - t) + sum
        };
        sum = t;
    }
    scale * (sum + comp).sqrt()
}

fn measure(tensors: &mut [Vec<f32>]) -> StepStats {
    let names: Vec<String> = (0..tensors.len()).map(|i| format!("t{i}")).collect();
    let shapes: Vec<[usize; 1]> = tensors.iter().map(|t| [t.len()]).collect();
    let weights: Vec<Vec<f32>> = tensors.iter().map(|t| vec![0.5; t.len()]).collect();
    let mut view = ParamView::new();
    for (((n, s), w), g) in names
        .iter()
        .zip(&shapes)
        .zip(&weights)
        .zip(tensors.iter_mut())
    {
        view.push(n, s, Role::Weight, w, g).unwrap();
    }
    StepStats::measure(&view)
}

fn finite_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1.0f32..1.0,
        -1e6f32..1e6,
        (-30i32..30, -1.0f32..1.0).prop_map(|(e, m)| m * 10f32.powi(e)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn norm_matches_f64_reference(mut tensors in prop::collection::vec(prop::collection::vec(finite_value(), 0..300), 1..12)) {
        let s = measure(&mut tensors);
        let r = reference_norm(&tensors);
        let err = if r == 0.0 { s.grad_norm } else { (s.grad_norm - r).abs() / r };
        prop_assert!(err <= 1e-6, "kernel {} vs reference {} (rel {})", s.grad_norm, r, err);
        let max_ref = tensors.iter().flatten().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        prop_assert_eq!(s.grad_max_abs, max_ref);
        // Per-parameter norms add up to the global one.
        let total: f64 = s.params.iter().map(|p| p.grad_sum_sq).sum();
        prop_assert!((total - s.grad_sum_sq).abs() <= 1e-12 * s.grad_sum_sq.max(f64::MIN_POSITIVE));
    }

    #[test]
    fn counts_nonfinite_exactly(
        mut tensors in prop::collection::vec(prop::collection::vec(finite_value(), 1..200), 1..6),
        poison in prop::collection::vec((0usize..6, 0usize..200, 0u8..3), 0..20),
    ) {
        let mut expected = 0usize;
        for (t, i, kind) in poison {
            let t = t % tensors.len();
            let i = i % tensors[t].len();
            if tensors[t][i].is_finite() {
                expected += 1;
            }
            tensors[t][i] = match kind { 0 => f32::NAN, 1 => f32::INFINITY, _ => f32::NEG_INFINITY };
        }
        let s = measure(&mut tensors);
        prop_assert_eq!(s.grad_nonfinite, expected);
        let per: usize = s.params.iter().map(|p| p.grad_nonfinite).sum();
        prop_assert_eq!(per, expected);
        prop_assert_eq!(s.grads_finite(), expected == 0);
    }

    #[test]
    fn huge_values_give_finite_norm(n in 1usize..5000, sign in prop::bool::ANY) {
        let v = if sign { 1e30f32 } else { -1e30f32 };
        let mut tensors = vec![vec![v; n]];
        let s = measure(&mut tensors);
        prop_assert!(s.grad_norm.is_finite());
        let expected = 1e30f32 as f64 * (n as f64).sqrt();
        // 1e30 > 2^60: every build sums these squares exactly in f64 (the AVX-512 build falls
        // back), so the exact builds' 1e-12 holds for all of them.
        prop_assert!(((s.grad_norm - expected) / expected).abs() <= 1e-12);
    }

    /// Tensors past the 1024-value AVX-512 sub-blocks and the 4096-value exact blocks, with
    /// magnitudes around the fast path's switch (2^60, 2^-50), through the public
    /// `StepStats::measure` (the build this process dispatches to).
    #[test]
    fn long_tensors_match_f64_reference(
        mut tensors in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    finite_value(),
                    (59.0f64..61.0, prop::bool::ANY).prop_map(|(e, neg)| (if neg { -1.0 } else { 1.0 } * 2f64.powf(e)) as f32),
                    (-51.0f64..-49.0, prop::bool::ANY).prop_map(|(e, neg)| (if neg { -1.0 } else { 1.0 } * 2f64.powf(e)) as f32),
                ],
                900..9000,
            ),
            1..3,
        )
    ) {
        let s = measure(&mut tensors);
        let r = reference_norm(&tensors);
        // norm tolerance: half the sum-of-squares bound (1.1e-6 AVX-512, exact builds 1e-12)
        let tolerance = if active_build().is_exact() { 1e-12 } else { 5.5e-7 };
        let err = (s.grad_norm - r).abs() / r;
        prop_assert!(err <= tolerance, "{:?}: {} vs {} (rel {:e})", active_build(), s.grad_norm, r, err);
    }
}

#[test]
fn accurate_over_1e8_elements() {
    // 10^8 values of 0.1 (as f32) in 10 tensors: the exact sum of squares is known.
    let x = 0.1f32 as f64;
    let mut tensors: Vec<Vec<f32>> = (0..10).map(|_| vec![0.1f32; 10_000_000]).collect();
    let s = measure(&mut tensors);
    let expected = (1e8 * x * x).sqrt();
    let rel = ((s.grad_norm - expected) / expected).abs();
    // The AVX-512 build squares in f32 within sub-blocks of 1024 values (Σg² within 1.1e-6,
    // the norm within 5.5e-7, whatever the length); the exact f64 builds within 1e-12.
    let build = active_build();
    eprintln!("accurate_over_1e8_elements: build {build:?}, relative error {rel:e}");
    let tolerance = if build == Build::Avx512 {
        5.5e-7
    } else {
        1e-12
    };
    assert!(
        rel <= tolerance,
        "norm {} vs {} (rel {rel})",
        s.grad_norm,
        expected
    );
}
