//! proptest strategies for random parameter data.

use gradguard_core::Role;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::data::{OwnedParam, OwnedParams};

/// Sizes of the random data.
#[derive(Clone, Copy, Debug)]
pub struct ParamsConfig {
    /// At most this many tensors (at least 1).
    pub max_tensors: usize,
    /// Tensors have rank 0 to `max_rank`.
    pub max_rank: usize,
    /// Each dimension is 1 to `max_dim`.
    pub max_dim: usize,
}

impl Default for ParamsConfig {
    fn default() -> Self {
        ParamsConfig {
            max_tensors: 6,
            max_rank: 3,
            max_dim: 5,
        }
    }
}

/// A finite f32: often 0, often in [-10, 10], and often ±m * 10^e with e in [-30, 30], so
/// that 1e-30 and 1e30 values (and mixes of both) are covered.
pub fn finite_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        2 => Just(0.0f32),
        6 => -10.0f32..10.0f32,
        3 => (any::<bool>(), -30i32..=30, 1.0f32..10.0f32)
            .prop_map(|(neg, e, m)| if neg { -m } else { m } * 10f32.powi(e)),
    ]
}

fn tensor(cfg: ParamsConfig) -> impl Strategy<Value = OwnedParam> {
    vec(1..=cfg.max_dim.max(1), 0..=cfg.max_rank)
        .prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            let role = match shape.len() {
                0 => Just(Role::Other).boxed(),
                1 => prop_oneof![Just(Role::Bias), Just(Role::Weight), Just(Role::Other)].boxed(),
                _ => prop_oneof![Just(Role::Weight), Just(Role::RecurrentWeight)].boxed(),
            };
            (
                Just(shape),
                role,
                vec(finite_value(), n),
                vec(finite_value(), n),
            )
        })
        .prop_map(|(shape, role, weights, grads)| OwnedParam {
            name: String::new(),
            shape,
            role,
            weights,
            grads,
        })
}

/// A long rank-1 tensor (1,024 to 5,000 values, past the statistics kernels' 1,024-value
/// AVX-512 sub-blocks and 4,096-value blocks): values in [-10, 10] times one power of ten per
/// tensor from 1e-20 to 1e20, so that some tensors take the kernels' f32 fast path (max |x| in
/// [2^-50, 2^60]) and others their exact fallback.
fn long_tensor() -> impl Strategy<Value = OwnedParam> {
    (1024usize..=5000, -20i32..=20)
        .prop_flat_map(|(n, e)| {
            let scaled = move || (-10.0f32..10.0).prop_map(move |v| v * 10f32.powi(e));
            (vec(scaled(), n), vec(scaled(), n))
        })
        .prop_map(|(weights, grads)| OwnedParam {
            name: String::new(),
            shape: vec![grads.len()],
            role: Role::Weight,
            weights,
            grads,
        })
}

/// Random parameters with finite weights and gradients; tensor `i` is named
/// `layers.{i}.weight` or `layers.{i}.bias` after its role. One case in eight also holds a
/// long tensor (1,024 to 5,000 values) so that the statistics kernels' fast paths and their
/// fallbacks see random data too.
pub fn params(cfg: ParamsConfig) -> impl Strategy<Value = OwnedParams> {
    (
        vec(tensor(cfg), 1..=cfg.max_tensors.max(1)),
        prop::option::weighted(0.125, long_tensor()),
    )
        .prop_map(|(mut ps, long)| {
            ps.extend(long);
            ps
        })
        .prop_map(|mut ps| {
            for (i, p) in ps.iter_mut().enumerate() {
                p.name = match p.role {
                    Role::Bias => format!("layers.{i}.bias"),
                    Role::RecurrentWeight => format!("layers.{i}.weight_hh"),
                    Role::Other => format!("layers.{i}.scale"),
                    Role::Weight => format!("layers.{i}.weight"),
                };
            }
            OwnedParams { params: ps }
        })
}

/// Like [`params`], with 1 to 3 gradient values replaced by NaN, +inf or -inf.
pub fn params_with_nonfinite(cfg: ParamsConfig) -> impl Strategy<Value = OwnedParams> {
    params(cfg)
        .prop_flat_map(|p| {
            let total: usize = p.params.iter().map(|t| t.grads.len()).sum();
            let bad = prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)];
            (Just(p), vec((0..total, bad), 1..=3))
        })
        .prop_map(|(mut p, hits)| {
            for (mut k, v) in hits {
                for t in &mut p.params {
                    if k < t.grads.len() {
                        t.grads[k] = v;
                        break;
                    }
                    k -= t.grads.len();
                }
            }
            p
        })
}
