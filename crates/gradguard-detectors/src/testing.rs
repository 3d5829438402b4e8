//! Test helpers: synthetic step statistics without real tensors.

use gradguard_core::{ParamStats, ParamUpdate, Role, StepStats, UpdateStats};

/// One synthetic tensor: name, role, gradient norm, weight norm.
pub(crate) fn param(name: &str, role: Role, grad_norm: f64, weight_norm: f64) -> ParamStats {
    ParamStats {
        name: name.to_string(),
        role,
        numel: 4,
        grad_sum_sq: grad_norm * grad_norm,
        grad_norm,
        grad_max_abs: grad_norm,
        grad_nonfinite: (!grad_norm.is_finite()) as usize,
        weight_sum_sq: weight_norm * weight_norm,
        weight_nonfinite: (!weight_norm.is_finite()) as usize,
    }
}

/// Step statistics from tensors, with the totals refreshed.
pub(crate) fn stats(params: Vec<ParamStats>) -> StepStats {
    let mut s = StepStats {
        params,
        ..StepStats::default()
    };
    s.refresh_totals();
    s
}

/// An update with the given per-tensor ratios (weight norm 1, so update_norm = ratio).
pub(crate) fn update(step: u64, ratios: &[(&str, f64)]) -> UpdateStats {
    UpdateStats {
        step,
        lr: 0.1,
        params: ratios
            .iter()
            .map(|&(n, r)| ParamUpdate {
                name: n.to_string(),
                update_norm: r,
                weight_norm: 1.0,
                weight_nonfinite: (!r.is_finite()) as usize,
            })
            .collect(),
        withheld: None,
    }
}

use gradguard_core::{Detector, Diagnosis, Event, Observation, ParamView, Series};

use crate::diagnoser::Diagnoser;

/// One synthetic step: loss, tensors (name, role, grad norm, weight norm), per-tensor update
/// ratios of the previous update, series, and optionally a live recurrent weight
/// (name, shape, values) for detectors that need weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct SynthStep {
    pub loss: f64,
    pub layers: Vec<(String, Role, f64, f64)>,
    pub ratios: Option<Vec<f64>>,
    pub series: Vec<Series>,
    pub recurrent: Option<(String, Vec<usize>, Vec<f32>)>,
}

/// Runs `detectors` live over `steps` (step numbers from 1), building events as the pipeline
/// does, and diagnoses them.
pub(crate) fn run_live(
    steps: &[SynthStep],
    detectors: &mut [Box<dyn Detector>],
) -> (Vec<Event>, Diagnosis) {
    run_live_with(steps, detectors, Diagnoser::default())
}

/// [`run_live`] with a prepared diagnoser (initial growth, learning figures).
pub(crate) fn run_live_with(
    steps: &[SynthStep],
    detectors: &mut [Box<dyn Detector>],
    mut diagnoser: Diagnoser,
) -> (Vec<Event>, Diagnosis) {
    let mut events = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let step = i as u64 + 1;
        let st = stats(
            s.layers
                .iter()
                .map(|(n, r, g, w)| param(n, *r, *g, *w))
                .collect(),
        );
        let names: Vec<(&str, f64)> = match &s.ratios {
            Some(r) => s
                .layers
                .iter()
                .zip(r)
                .map(|(l, &r)| (l.0.as_str(), r))
                .collect(),
            None => Vec::new(),
        };
        let up = update(step - 1, &names);
        let mut obs = Observation::new(step, s.loss, &st);
        if s.ratios.is_some() {
            obs.update = Some(&up);
        }
        obs.series = &s.series;
        let mut grads = s
            .recurrent
            .as_ref()
            .map(|r| vec![0.0f32; r.2.len()])
            .unwrap_or_default();
        let mut view = ParamView::new();
        if let Some((name, shape, values)) = &s.recurrent {
            view.push(name, shape, Role::RecurrentWeight, values, &mut grads)
                .unwrap();
            obs.view = Some(&view);
        }
        let mut findings = Vec::new();
        for d in detectors.iter_mut() {
            d.observe(&obs, &mut findings);
        }
        let mut e = Event::from_stats(step, s.loss, &st, obs.update);
        e.series = s.series.clone();
        e.findings = findings;
        diagnoser.observe_event(&e);
        events.push(e);
    }
    (events, diagnoser.finish())
}

fn mlp_layers(g: f64, w: f64, bias_g: f64) -> Vec<(String, Role, f64, f64)> {
    vec![
        ("layers.0.weight".into(), Role::Weight, g, w),
        ("layers.0.bias".into(), Role::Bias, bias_g / 2.0, w),
        ("layers.1.weight".into(), Role::Weight, g * 2.0, w),
        ("layers.1.bias".into(), Role::Bias, bias_g / 4.0, w),
    ]
}

/// The classic unscaled-target regression with SGD and momentum, shaped like the PyTorch
/// reference runs: ratio 2-2.8 at the first updates, a layer above 1.0 from the start, loss
/// swings, the loss overflows to inf at step 9 while gradients are finite (~1e33), then the
/// gradients and (one update later) the weights are NaN.
pub(crate) fn exploding_regression() -> Vec<SynthStep> {
    let loss = [
        2.0e4,
        1.5e4,
        3.1e4,
        8.0e3,
        9.0e4,
        5.0e5,
        3.0e7,
        2.0e12,
        f64::INFINITY,
        f64::NAN,
        f64::NAN,
        f64::NAN,
    ];
    let g = [
        2e2,
        1.5e2,
        4e2,
        1e2,
        1e3,
        5e3,
        1e5,
        1e9,
        1e33,
        f64::NAN,
        f64::NAN,
        f64::NAN,
    ];
    let ratio = [
        0.0,
        2.0,
        2.8,
        5.0,
        12.0,
        80.0,
        600.0,
        2e4,
        1e7,
        f64::NAN,
        f64::NAN,
        f64::NAN,
    ];
    (0..12)
        .map(|i| SynthStep {
            loss: loss[i],
            layers: mlp_layers(g[i], if i >= 9 { f64::NAN } else { 3.0 }, g[i]),
            ratios: (i > 0).then(|| vec![ratio[i]; 4]),
            ..Default::default()
        })
        .collect()
}

/// A healthy run of the same model: the error gradient is above 1.0 for the first 8 steps
/// and the loss swings once (+150% at step 50), then everything is calm.
pub(crate) fn healthy_regression() -> Vec<SynthStep> {
    (1..=300)
        .map(|s| {
            let mut loss = (-(s as f64) / 100.0).exp() + 0.05;
            if s == 50 {
                loss *= 2.5;
            }
            let bias_g = if s <= 8 { 6.0 } else { 0.6 };
            let ratio = 0.2 * (-(s as f64) / 20.0).exp() + 1e-3;
            SynthStep {
                loss,
                layers: mlp_layers(0.5, 3.0, bias_g),
                ratios: (s > 1).then(|| vec![ratio; 4]),
                ..Default::default()
            }
        })
        .collect()
}

/// `scale` times a rotation in each 2x2 block.
pub(crate) fn rotation(n: usize, scale: f32) -> Vec<f32> {
    crate::linalg::tests::scaled_rotation(n, scale, 0.5)
}

/// A tanh RNN wrecked without NaN: sigma(W_hh) 2 at step 1, one update moves W_hh by 1.5e4
/// times its norm, after which W_hh has radius 3e4 and gradients look normal. The model
/// measures ||dL/dh_t|| over 40 time steps, growing 1.3x per step backwards from step 2.
pub(crate) fn wrecked_rnn() -> Vec<SynthStep> {
    let names = [
        "rnn.0.weight_ih",
        "rnn.0.weight_hh",
        "rnn.0.bias_ih",
        "rnn.0.bias_hh",
        "head.weight",
        "head.bias",
    ];
    let roles = [
        Role::Weight,
        Role::RecurrentWeight,
        Role::Bias,
        Role::Bias,
        Role::Weight,
        Role::Bias,
    ];
    (1..=30u64)
        .map(|s| {
            let growth: f64 = if s >= 2 { 1.3 } else { 1.0 };
            let values: Vec<f64> = (0..40).map(|t| growth.powi(39 - t)).collect();
            SynthStep {
                loss: 1.0 + 0.01 * (s % 3) as f64,
                layers: names
                    .iter()
                    .zip(roles)
                    .map(|(n, r)| {
                        (
                            n.to_string(),
                            r,
                            0.8,
                            if s >= 2 && r == Role::RecurrentWeight {
                                3e4
                            } else {
                                2.0
                            },
                        )
                    })
                    .collect(),
                ratios: (s > 1).then(|| {
                    names
                        .iter()
                        .map(|n| {
                            if s == 2 && n.contains("weight_hh") {
                                1.5e4
                            } else {
                                1e-3
                            }
                        })
                        .collect()
                }),
                series: vec![Series {
                    name: "rnn.0 dL/dh_t".into(),
                    axis: gradguard_core::SeriesAxis::TimeSteps,
                    values,
                }],
                recurrent: Some((
                    "rnn.0.weight_hh".into(),
                    vec![4, 4],
                    rotation(4, if s >= 2 { 3e4 } else { 2.0 }),
                )),
            }
        })
        .collect()
}
