//! Clipping against the memory-bandwidth limit, single thread.
//!
//! For each shape (10^7 and 10^8 f32 values in 100 tensors, 10^7 in 1000 tensors, and 10^4
//! tensors of 10 values for the per-tensor cost) the same group measures:
//! - `baseline_sum_sq`: one read pass (sum of squares in f64): the floor of any norm;
//! - `baseline_copy`: one read-and-write pass (copy into another buffer): the floor of any
//!   in-place rewrite. `sum_sq + copy` is the two-pass limit of norm clipping;
//! - `clip_global_norm/norm+clip`: grads-only norm (as `clip_grad_norm_` computes it) then the
//!   remedy, which scales every value (every iteration clips by 0.999);
//! - `clip_global_norm/norm+no_clip`: the same when no clipping is needed (one read pass);
//! - `clip_global_norm/clip`: the remedy alone, statistics given (how the loop runs it);
//! - `clip_norm/norm+clip`: per-tensor clipping, every tensor clipped;
//! - `clip_value/clip`: the remedy alone (one clamp-and-measure pass), statistics given;
//! - `measure_grads_and_weights`: the loop's fused `StepStats::measure` (gradients and weights).
//!
//! Run: `cargo bench -p gradguard-remedies --bench clipping -- --sample-size 10 --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gradguard_core::kernels::slice_stats;
use gradguard_core::{ParamView, Remedy, RemedyContext, Role, StepStats};
use gradguard_remedies::{ClipGlobalNorm, ClipNorm, ClipValue};

struct Data {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    weights: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn make(tensors: usize, total: usize) -> Data {
    let per = total / tensors;
    let mut s = 42u64;
    Data {
        names: (0..tensors).map(|i| format!("layers.{i}.weight")).collect(),
        shapes: (0..tensors).map(|_| vec![per]).collect(),
        weights: (0..tensors)
            .map(|_| (0..per).map(|_| lcg(&mut s)).collect())
            .collect(),
        grads: (0..tensors)
            .map(|_| (0..per).map(|_| lcg(&mut s)).collect())
            .collect(),
    }
}

fn view<'a>(
    names: &'a [String],
    shapes: &'a [Vec<usize>],
    w: &'a [Vec<f32>],
    g: &'a mut [Vec<f32>],
) -> ParamView<'a> {
    let mut v = ParamView::with_capacity(names.len());
    for (((n, s), w), g) in names.iter().zip(shapes).zip(w).zip(g.iter_mut()) {
        v.push(n, s, Role::Weight, w, g)
            .expect("bench data is consistent");
    }
    v
}

/// Grads-only statistics (what `clip_grad_norm_` reads): one read pass over the gradients.
fn grads_only_stats(v: &ParamView<'_>, stats: &mut StepStats) {
    for (s, p) in stats.params.iter_mut().zip(v.iter()) {
        let m = slice_stats(p.grads);
        s.grad_sum_sq = m.sum_sq;
        s.grad_norm = m.sum_sq.sqrt();
        s.grad_max_abs = m.max_abs as f64;
        s.grad_nonfinite = m.nonfinite;
    }
    stats.refresh_totals();
}

fn sum_sq(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let c = x.chunks_exact(8);
    let r = c.remainder();
    for c in c {
        for l in 0..8 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + r.iter().map(|&v| v as f64 * v as f64).sum::<f64>()
}

/// Each clipping iteration below shrinks the gradients (to 0.999 of a norm), so over many
/// iterations they decay towards zero (and, for `clip_norm`, the threshold with them). When
/// the smallest tensor norm of the previous iteration's statistics fell below 1e-6, every
/// gradient is scaled back up by 1e6: one extra pass about every 14 000 iterations, so the
/// figures stay those of clipping normal values (no subnormals, no zero threshold).
fn keep_gradients_normal(v: &mut ParamView<'_>, stats: &StepStats) {
    let smallest = stats
        .params
        .iter()
        .map(|p| p.grad_norm)
        .fold(f64::INFINITY, f64::min);
    if smallest < 1e-6 {
        for p in v.iter_mut() {
            p.grads.iter_mut().for_each(|g| *g *= 1e6);
        }
    }
}

fn bench_shape(c: &mut Criterion, label: &str, tensors: usize, total: usize) {
    let mut d = make(tensors, total);
    let mut dst: Vec<Vec<f32>> = d.grads.iter().map(|g| vec![0.0; g.len()]).collect();
    let mut g = c.benchmark_group(format!("clip/{label}"));
    g.throughput(Throughput::Bytes((total * 4) as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    g.bench_function("baseline_sum_sq", |b| {
        b.iter(|| d.grads.iter().map(|x| sum_sq(black_box(x))).sum::<f64>())
    });
    g.bench_function("baseline_copy", |b| {
        b.iter(|| {
            for (o, i) in dst.iter_mut().zip(&d.grads) {
                o.copy_from_slice(black_box(i));
            }
            black_box(&dst);
        })
    });
    drop(dst);

    let Data {
        names,
        shapes,
        weights,
        grads,
    } = &mut d;
    let mut v = view(names, shapes, weights, grads);
    let mut stats = StepStats::measure(&v);
    let given = stats.clone();

    g.bench_function("measure_grads_and_weights", |b| {
        b.iter(|| stats.measure_into(black_box(&v)))
    });

    let mut clip = ClipGlobalNorm::new(1.0);
    g.bench_function("clip_global_norm/norm+clip", |b| {
        b.iter(|| {
            keep_gradients_normal(&mut v, &stats);
            grads_only_stats(&v, &mut stats);
            clip.max_norm = stats.grad_norm * 0.999;
            let mut ctx = RemedyContext::new(1, 0.0, &mut v, &mut stats);
            black_box(clip.apply(&mut ctx).expect("finite"));
        })
    });
    g.bench_function("clip_global_norm/norm+no_clip", |b| {
        b.iter(|| {
            grads_only_stats(&v, &mut stats);
            clip.max_norm = stats.grad_norm * 2.0;
            let mut ctx = RemedyContext::new(1, 0.0, &mut v, &mut stats);
            black_box(clip.apply(&mut ctx).expect("finite"));
        })
    });
    grads_only_stats(&v, &mut stats);
    let given_now = stats.clone();
    clip.max_norm = given_now.grad_norm * 0.999;
    g.bench_function("clip_global_norm/clip", |b| {
        b.iter(|| {
            stats.clone_from(&given_now);
            let mut ctx = RemedyContext::new(1, 0.0, &mut v, &mut stats);
            black_box(clip.apply(&mut ctx).expect("finite"));
        })
    });
    let mut per = ClipNorm::new(1.0);
    g.bench_function("clip_norm/norm+clip", |b| {
        b.iter(|| {
            keep_gradients_normal(&mut v, &stats);
            grads_only_stats(&v, &mut stats);
            per.max_norm = stats
                .params
                .iter()
                .map(|p| p.grad_norm)
                .fold(f64::INFINITY, f64::min)
                * 0.999;
            let mut ctx = RemedyContext::new(1, 0.0, &mut v, &mut stats);
            black_box(per.apply(&mut ctx).expect("finite"));
        })
    });
    let mut value = ClipValue::new(0.5);
    g.bench_function("clip_value/clip", |b| {
        b.iter(|| {
            stats.clone_from(&given);
            let mut ctx = RemedyContext::new(1, 0.0, &mut v, &mut stats);
            black_box(value.apply(&mut ctx).expect("finite"));
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_shape(c, "100x1e7", 100, 10_000_000);
    bench_shape(c, "1000x1e7", 1000, 10_000_000);
    // per-tensor overhead: divide by 10^4
    bench_shape(c, "10000x10", 10_000, 100_000);
    bench_shape(c, "100x1e8", 100, 100_000_000);
}

criterion_group!(clipping, benches);
criterion_main!(clipping);
