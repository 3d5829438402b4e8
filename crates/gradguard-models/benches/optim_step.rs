//! The optimiser update alone, unchecked against transactional (issue 12, item 7): four
//! tensors of 262,144 values (1 Mi parameters), SGD with momentum and Adam.
//! - `unchecked`: `Optimizer::step` (the update as before);
//! - `checked_known`: `Optimizer::step_checked` with max |g| and max |w| known (the pipeline's
//!   case: the bound holds, nothing is read before the update);
//! - `checked_exact`: `step_checked` with nothing known (one exact read-only pass first).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gradguard_models::optim::{Known, Optimizer};
use gradguard_models::OptimizerSpec;

const N: usize = 262_144;

fn bench(c: &mut Criterion) {
    let specs = [
        (
            "sgd_momentum",
            OptimizerSpec::Sgd {
                lr: 1e-3,
                momentum: 0.9,
                nesterov: false,
            },
        ),
        (
            "adam",
            OptimizerSpec::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        ),
    ];
    for (name, spec) in specs {
        let mut w: Vec<Vec<f32>> = (0..4)
            .map(|k| (0..N).map(|i| ((i * 7 + k) % 113) as f32 * 1e-3).collect())
            .collect();
        let mut g: Vec<Vec<f32>> = (0..4)
            .map(|k| {
                (0..N)
                    .map(|i| ((i * 13 + k) % 97) as f32 * 1e-4 - 5e-3)
                    .collect()
            })
            .collect();
        let known = Known {
            grad_max_abs: Some(1e-2),
            weight_max_abs: Some(1e3),
        };
        let mut out = Vec::new();
        for mode in ["unchecked", "checked_known", "checked_exact"] {
            let mut opt = Optimizer::new(spec, None, 4);
            c.bench_function(&format!("optim_1Mi/{name}/{mode}"), |b| {
                b.iter(|| {
                    let mut pairs: Vec<(&mut Vec<f32>, &mut Vec<f32>)> =
                        w.iter_mut().zip(g.iter_mut()).collect();
                    match mode {
                        "unchecked" => opt.step(&mut pairs, 1e-6, &mut out),
                        "checked_known" => opt
                            .step_checked(&mut pairs, 1e-6, |_| known, &mut out)
                            .expect("finite"),
                        _ => opt
                            .step_checked(&mut pairs, 1e-6, |_| Known::default(), &mut out)
                            .expect("finite"),
                    }
                    black_box(&out);
                })
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
