//! The risk probe: before training, from measurements at initialisation, how likely are the
//! gradients to explode, and where to truncate backpropagation through time.
//!
//! Pure logic: the caller (`gradguard probe SPEC`) runs a few forward/backward passes at
//! initialisation and hands over what it measured in a [`ProbeInput`]; [`probe`] returns a
//! [`ProbeReport`].
//!
//! **What is computed.**
//! - *Growth across layers*: from the layers' error-signal norms (input layer first: bias
//!   gradients or `‖dL/dz_l‖`), `total = first / last` and `factor = total^(1/(L−1))`, with the
//!   layer where growth starts (see [`crate::grad_growth_across_layers::chain_growth`]).
//! - *Growth across time*: the same for each recurrent layer's `‖dL/dh_t‖`, t = 1..T.
//! - *Recurrent weights*: spectral radius `ρ` and largest singular value `σ_max` of each
//!   recurrent matrix, by power iteration; `[G·H, H]` gate-stacked matrices (PyTorch's LSTM
//!   `G = 4`, GRU `G = 3`) are measured per `H x H` gate block and are *gated*; `[H, H]` is a
//!   plain RNN (see [`crate::recurrent_radius_above_one`]).
//!
//! **Risk rules** (the verdict is the highest level any rule gives; each rule that fires adds
//! a reason):
//! - plain recurrent `ρ > 1.2`: **high** (over T steps the gradient can grow like ρ^T:
//!   1.2^50 ≈ 9100); `1 < ρ ≤ 1.2`: **moderate**; `ρ ≤ 1` but `σ_max > 2`: **moderate**
//!   (transient growth of a non-normal matrix);
//! - gated recurrent block `ρ > 2`: **moderate** (gates with sigmoid outputs below 1 damp the
//!   recurrent path, so only a large radius is a warning);
//! - measured growth across time: total `>= 1000`: **high**; `>= 10`: **moderate**;
//! - growth across layers: total `>= 100`: **high**; `>= 10`: **moderate** (a deep ReLU MLP
//!   with initialisation gain 2 measured 129x over 8 layers);
//! - initial global gradient norm `>= 1000`: **high**; `>= 100`: **moderate** (e.g. unscaled
//!   regression targets).
//!
//! **Suggested truncation window.** With `f` the per-step growth factor (the largest measured
//! across time when above 1, else the largest plain-RNN spectral radius when above 1), the
//! gradient passes `growth_threshold` times its value at the last step after
//! `k = floor(ln(growth_threshold) / ln f)` steps back: truncate BPTT to `k` (at least 1). None
//! when `f <= 1`, or when `k` is not shorter than the known sequence length.

use serde::{Deserialize, Serialize};

use gradguard_core::{ParamView, Role, Series, SeriesAxis, StepStats};

use crate::grad_growth_across_layers::chain_growth;
use crate::linalg::Scratch;
use crate::recurrent_radius_above_one::measure_recurrent;
use crate::util::fmt_num;

/// A recurrent weight matrix at initialisation (defined in gradguard-core, shared with the
/// bridges that measure it).
pub use gradguard_core::RecurrentMatrix;

/// What the caller measured at initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInput {
    /// Error-signal norm per layer, input layer first: `(layer name, norm)`.
    #[serde(default)]
    pub layer_grad_norms: Vec<(String, f64)>,
    /// `‖dL/dh_t‖` per time step of each recurrent layer ([`gradguard_core::SeriesAxis::TimeSteps`]).
    #[serde(default)]
    pub time_step_norms: Vec<Series>,
    /// The recurrent weight matrices.
    #[serde(default)]
    pub recurrent_weights: Vec<RecurrentMatrix>,
    /// The global gradient norm at initialisation (mean over the probe's passes), if measured.
    #[serde(default)]
    pub global_grad_norm: Option<f64>,
    /// The training sequence length, if recurrent.
    #[serde(default)]
    pub sequence_length: Option<usize>,
    /// Growth (times the value at the last time step) that the truncation window must stay below.
    pub growth_threshold: f64,
    /// Power-iteration steps.
    pub iterations: usize,
}

impl Default for ProbeInput {
    fn default() -> Self {
        ProbeInput {
            layer_grad_norms: Vec::new(),
            time_step_norms: Vec::new(),
            recurrent_weights: Vec::new(),
            global_grad_norm: None,
            sequence_length: None,
            growth_threshold: 100.0,
            iterations: 200,
        }
    }
}

impl ProbeInput {
    /// Builds the input from one measured pass at initialisation: the layers' error-signal
    /// norms are a [`SeriesAxis::Layers`] series when `series` holds one, else the bias
    /// gradient norms in view order (biases of one layer, same name up to the last `.`, count
    /// once, as in `grad_growth_across_layers`); the time-step norms are the
    /// [`SeriesAxis::TimeSteps`] series; the recurrent weights are copied from the view's
    /// [`Role::RecurrentWeight`] tensors; the global norm is `stats.grad_norm`. To average
    /// several passes, average the fields before calling [`probe`].
    pub fn from_step(
        stats: &StepStats,
        view: &ParamView<'_>,
        series: &[Series],
        sequence_length: Option<usize>,
    ) -> Self {
        let layer_grad_norms = match series.iter().find(|s| s.axis == SeriesAxis::Layers) {
            Some(s) => s
                .values
                .iter()
                .enumerate()
                .map(|(i, &v)| (format!("{}[{i}]", s.name), v))
                .collect(),
            None => {
                let mut out: Vec<(String, f64)> = Vec::new();
                let mut last_prefix: Option<&str> = None;
                for p in stats.params.iter().filter(|p| p.role == Role::Bias) {
                    let prefix = crate::util::layer_prefix(&p.name);
                    if last_prefix == Some(prefix) {
                        continue;
                    }
                    last_prefix = Some(prefix);
                    out.push((p.name.clone(), p.grad_norm));
                }
                out
            }
        };
        ProbeInput {
            layer_grad_norms,
            time_step_norms: series
                .iter()
                .filter(|s| s.axis == SeriesAxis::TimeSteps)
                .cloned()
                .collect(),
            recurrent_weights: view
                .iter()
                .filter(|p| p.role == Role::RecurrentWeight)
                .map(|p| RecurrentMatrix {
                    name: p.name.to_string(),
                    shape: p.shape.to_vec(),
                    values: p.weights.to_vec(),
                })
                .collect(),
            global_grad_norm: Some(stats.grad_norm),
            sequence_length,
            ..Default::default()
        }
    }
}

/// The risk of explosion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// No rule fired.
    Low,
    /// A warning.
    Moderate,
    /// Explosion is likely without a cure.
    High,
}

impl Risk {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Moderate => "moderate",
            Risk::High => "high",
        }
    }
}

/// Growth along a chain (layers or time steps), output end to input end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// What was measured (layer chain or series name).
    pub name: String,
    /// Geometric-mean growth per layer or step.
    pub factor: f64,
    /// First / last.
    pub total: f64,
    /// Chain length.
    pub length: usize,
    /// Where growth starts (layer name, or `t=...`), when a boundary exceeds the factor 1.
    pub start: Option<String>,
}

/// A recurrent matrix's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecurrentReport {
    /// The matrix.
    pub name: String,
    /// Largest spectral radius over gate blocks.
    pub spectral_radius: f64,
    /// Largest singular value over gate blocks.
    pub sigma_max: f64,
    /// Gate blocks (1 = plain RNN).
    pub gates: usize,
    /// The block with the largest radius.
    pub worst_gate: usize,
}

impl RecurrentReport {
    /// Whether the cell is gated (LSTM/GRU-style stacked gates).
    pub fn gated(&self) -> bool {
        self.gates > 1
    }
}

/// The probe's findings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Growth of the error signal across layers, when at least two layers were measured.
    pub layer_growth: Option<Growth>,
    /// Growth across time steps, per recurrent layer measured.
    pub time_growth: Vec<Growth>,
    /// Per recurrent matrix.
    pub recurrent: Vec<RecurrentReport>,
    /// The verdict.
    pub risk: Risk,
    /// Every rule that fired, with its level, in words.
    pub reasons: Vec<(Risk, String)>,
    /// Suggested truncation window for BPTT, in time steps.
    pub suggested_truncation: Option<usize>,
    /// Inputs that could not be used, and why.
    pub skipped: Vec<String>,
}

impl ProbeReport {
    /// The report in plain words, several lines.
    pub fn to_plain_words(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Risk of exploding gradients: {}", self.risk.as_str());
        for (level, why) in &self.reasons {
            let _ = writeln!(out, "  [{}] {why}", level.as_str());
        }
        if let Some(g) = &self.layer_growth {
            let _ = writeln!(
                out,
                "Growth across {} layers: {}x per layer, {}x in total{}",
                g.length,
                fmt_num(g.factor),
                fmt_num(g.total),
                g.start
                    .as_ref()
                    .map(|s| format!(", starting at `{s}`"))
                    .unwrap_or_default()
            );
        }
        for g in &self.time_growth {
            let _ = writeln!(
                out,
                "Growth across {} time steps of `{}`: {}x per step, {}x in total",
                g.length,
                g.name,
                fmt_num(g.factor),
                fmt_num(g.total)
            );
        }
        for r in &self.recurrent {
            let _ = writeln!(
                out,
                "`{}`: spectral radius {}, largest singular value {}{}",
                r.name,
                fmt_num(r.spectral_radius),
                fmt_num(r.sigma_max),
                if r.gated() {
                    format!(" ({} gate blocks, worst {})", r.gates, r.worst_gate)
                } else {
                    String::new()
                }
            );
        }
        if let Some(k) = self.suggested_truncation {
            let _ = writeln!(out, "Suggested truncated-BPTT window: {k} time steps");
        }
        for s in &self.skipped {
            let _ = writeln!(out, "Skipped: {s}");
        }
        out
    }
}

/// Runs the probe's analysis. See the [module documentation](self).
pub fn probe(input: &ProbeInput) -> ProbeReport {
    let mut reasons: Vec<(Risk, String)> = Vec::new();
    let mut skipped = Vec::new();

    let layer_values: Vec<f64> = input.layer_grad_norms.iter().map(|(_, v)| *v).collect();
    let layer_growth = chain_growth(&layer_values, 1.0).map(|g| Growth {
        name: "layers".to_string(),
        factor: g.factor,
        total: g.total,
        length: layer_values.len(),
        start: g.start.map(|i| input.layer_grad_norms[i].0.clone()),
    });
    if input.layer_grad_norms.len() >= 2 && layer_growth.is_none() {
        skipped.push("layer gradient norms: a value is not finite or the last is 0".to_string());
    }
    if let Some(g) = &layer_growth {
        let level = if g.total >= 100.0 {
            Some(Risk::High)
        } else if g.total >= 10.0 {
            Some(Risk::Moderate)
        } else {
            None
        };
        if let Some(level) = level {
            reasons.push((
                level,
                format!(
                    "the error signal grows {}x per layer from the output back to the input ({}x over {} layers){}",
                    fmt_num(g.factor),
                    fmt_num(g.total),
                    g.length,
                    g.start.as_ref().map(|s| format!(", starting at `{s}`")).unwrap_or_default()
                ),
            ));
        }
    }

    let mut time_growth = Vec::new();
    for s in &input.time_step_norms {
        match chain_growth(&s.values, 1.0) {
            Some(g) => {
                let level = if g.total >= 1000.0 {
                    Some(Risk::High)
                } else if g.total >= 10.0 {
                    Some(Risk::Moderate)
                } else {
                    None
                };
                if let Some(level) = level {
                    reasons.push((
                        level,
                        format!(
                            "the gradient of `{}` grows {}x per time step ({}x over {} steps)",
                            s.name,
                            fmt_num(g.factor),
                            fmt_num(g.total),
                            s.values.len()
                        ),
                    ));
                }
                time_growth.push(Growth {
                    name: s.name.clone(),
                    factor: g.factor,
                    total: g.total,
                    length: s.values.len(),
                    start: g.start.map(|i| format!("t={}", i + 1)),
                });
            }
            None => skipped.push(format!(
                "`{}`: fewer than 2 values, a non-finite value, or a last value of 0",
                s.name
            )),
        }
    }

    let mut scratch = Scratch::default();
    let mut recurrent = Vec::new();
    for m in &input.recurrent_weights {
        let Some(r) = measure_recurrent(&m.shape, &m.values, input.iterations, &mut scratch) else {
            skipped.push(format!(
                "`{}`: shape {:?} with {} values is not [H, H] or [G*H, H]",
                m.name,
                m.shape,
                m.values.len()
            ));
            continue;
        };
        let report = RecurrentReport {
            name: m.name.clone(),
            spectral_radius: r.spectral_radius,
            sigma_max: r.sigma_max,
            gates: r.gates,
            worst_gate: r.worst_gate,
        };
        let (rho, sigma) = (r.spectral_radius, r.sigma_max);
        let level_reason = if !rho.is_finite() {
            Some((Risk::High, format!("`{}` holds non-finite values", m.name)))
        } else if report.gated() {
            (rho > 2.0).then(|| {
                (
                    Risk::Moderate,
                    format!(
                        "the gated recurrent weight `{}` has a gate block with spectral radius {} (> 2)",
                        m.name,
                        fmt_num(rho)
                    ),
                )
            })
        } else if rho > 1.2 {
            Some((
                Risk::High,
                format!(
                    "the plain recurrent weight `{}` has spectral radius {} (> 1.2): the gradient can grow about {}x per time step",
                    m.name,
                    fmt_num(rho),
                    fmt_num(rho)
                ),
            ))
        } else if rho > 1.0 {
            Some((
                Risk::Moderate,
                format!(
                    "the plain recurrent weight `{}` has spectral radius {} (> 1)",
                    m.name,
                    fmt_num(rho)
                ),
            ))
        } else if sigma > 2.0 {
            Some((
                Risk::Moderate,
                format!(
                    "`{}` has spectral radius {} but largest singular value {} (> 2): transient growth over a few steps",
                    m.name,
                    fmt_num(rho),
                    fmt_num(sigma)
                ),
            ))
        } else {
            None
        };
        if let Some(lr) = level_reason {
            reasons.push(lr);
        }
        recurrent.push(report);
    }

    if let Some(g) = input.global_grad_norm {
        if !g.is_finite() {
            reasons.push((
                Risk::High,
                format!("the initial gradient norm is {}", fmt_num(g)),
            ));
        } else if g >= 1000.0 {
            reasons.push((Risk::High, format!("the initial gradient norm is {} (>= 1000): check the target scale and the initialisation", fmt_num(g))));
        } else if g >= 100.0 {
            reasons.push((
                Risk::Moderate,
                format!("the initial gradient norm is {} (>= 100)", fmt_num(g)),
            ));
        }
    }

    // Per-step growth for the truncation window.
    let measured = time_growth
        .iter()
        .map(|g| g.factor)
        .filter(|f| f.is_finite())
        .fold(f64::NAN, f64::max);
    let from_radius = recurrent
        .iter()
        .filter(|r| !r.gated())
        .map(|r| r.spectral_radius)
        .filter(|f| f.is_finite())
        .fold(f64::NAN, f64::max);
    let f = if measured > 1.0 {
        measured
    } else {
        from_radius
    };
    let suggested_truncation = if f > 1.0 && input.growth_threshold > 1.0 {
        let k = (input.growth_threshold.ln() / f.ln()).floor().max(1.0) as usize;
        match input.sequence_length {
            Some(t) if k >= t => None,
            _ => Some(k),
        }
    } else {
        None
    };

    let risk = reasons.iter().map(|r| r.0).max().unwrap_or(Risk::Low);
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    ProbeReport {
        layer_growth,
        time_growth,
        recurrent,
        risk,
        reasons,
        suggested_truncation,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rotation;
    use gradguard_core::SeriesAxis;

    fn rnn(scale: f32) -> ProbeInput {
        ProbeInput {
            recurrent_weights: vec![RecurrentMatrix {
                name: "rnn.0.weight_hh".into(),
                shape: vec![16, 16],
                values: rotation(16, scale),
            }],
            sequence_length: Some(100),
            ..Default::default()
        }
    }

    #[test]
    fn radius_four_is_high_risk_with_a_short_window() {
        let r = probe(&rnn(4.0));
        assert!((r.recurrent[0].spectral_radius - 4.0).abs() < 1e-4);
        assert!((r.recurrent[0].sigma_max - 4.0).abs() < 1e-4);
        assert_eq!(r.risk, Risk::High);
        // floor(ln 100 / ln 4) = 3.
        assert_eq!(r.suggested_truncation, Some(3));
        assert!(r
            .to_plain_words()
            .contains("Risk of exploding gradients: high"));
    }

    #[test]
    fn orthogonal_times_point_nine_is_low_risk() {
        let r = probe(&rnn(0.9));
        assert!((r.recurrent[0].spectral_radius - 0.9).abs() < 1e-4);
        assert_eq!(r.risk, Risk::Low);
        assert!(r.reasons.is_empty());
        assert_eq!(r.suggested_truncation, None);
    }

    #[test]
    fn lstm_gate_blocks_with_small_radius_are_low_risk() {
        let h = 8;
        let mut values = Vec::new();
        for _ in 0..4 {
            values.extend(rotation(h, 0.5));
        }
        let input = ProbeInput {
            recurrent_weights: vec![RecurrentMatrix {
                name: "lstm.0.weight_hh".into(),
                shape: vec![4 * h, h],
                values,
            }],
            ..Default::default()
        };
        let r = probe(&input);
        assert_eq!((r.risk, r.recurrent[0].gates), (Risk::Low, 4));
        assert!(r.recurrent[0].gated());
    }

    /// Deterministic pseudo-random values: uniform in [-1, 1).
    fn uniform(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// Independent reference: rho = lim ||A^k||_F^(1/k), by squaring A ten times (k = 1024)
    /// with renormalisation, in f64.
    fn gelfand_by_squaring(a: &[f32], n: usize) -> f64 {
        let mut m: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let mut log_scale = 0.0; // log of the factor divided out, for A^k
        let mut k = 1.0;
        for _ in 0..10 {
            let mut sq = vec![0.0; n * n];
            for i in 0..n {
                for l in 0..n {
                    let x = m[i * n + l];
                    for j in 0..n {
                        sq[i * n + j] += x * m[l * n + j];
                    }
                }
            }
            log_scale *= 2.0;
            k *= 2.0;
            let f = sq.iter().map(|x| x * x).sum::<f64>().sqrt();
            sq.iter_mut().for_each(|x| *x /= f);
            log_scale += f.ln();
            m = sq;
        }
        (log_scale / k).exp()
    }

    #[test]
    fn random_recurrent_weights_match_an_independent_estimate() {
        // A plain RNN with recurrent gain 4: W = 4 / sqrt(3H) * U(-1, 1)·sqrt(3) has entries of
        // variance 16 / H, so rho ~ 4 (circular law); and a PyTorch-initialised LSTM,
        // U(-1/sqrt(H), 1/sqrt(H)): rho ~ 1/sqrt(3) per gate block.
        let h = 48;
        let gain4: Vec<f32> = uniform(h * h, 7)
            .iter()
            .map(|u| (4.0 * 3f64.sqrt() / (h as f64).sqrt() * u) as f32)
            .collect();
        let r = probe(&ProbeInput {
            recurrent_weights: vec![RecurrentMatrix {
                name: "rnn.0.weight_hh".into(),
                shape: vec![h, h],
                values: gain4.clone(),
            }],
            ..Default::default()
        });
        let reference = gelfand_by_squaring(&gain4, h);
        let rho = r.recurrent[0].spectral_radius;
        assert!(
            (rho / reference - 1.0).abs() < 0.03,
            "power iteration {rho} vs squaring {reference}"
        );
        assert!((rho - 4.0).abs() < 0.8, "{rho}");
        // The live detector's default of 40 iterations is within 5% here.
        let mut scratch = Scratch::default();
        let quick = measure_recurrent(&[h, h], &gain4, 40, &mut scratch)
            .unwrap()
            .spectral_radius;
        assert!(
            (quick / reference - 1.0).abs() < 0.05,
            "40 iterations: {quick} vs {reference}"
        );
        assert!(r.recurrent[0].sigma_max > rho);
        assert_eq!(r.risk, Risk::High);

        let lstm: Vec<f32> = uniform(4 * h * h, 11)
            .iter()
            .map(|u| (u / (h as f64).sqrt()) as f32)
            .collect();
        let r = probe(&ProbeInput {
            recurrent_weights: vec![RecurrentMatrix {
                name: "lstm.0.weight_hh".into(),
                shape: vec![4 * h, h],
                values: lstm.clone(),
            }],
            ..Default::default()
        });
        let worst = r.recurrent[0].worst_gate;
        let reference = gelfand_by_squaring(&lstm[worst * h * h..(worst + 1) * h * h], h);
        let rho = r.recurrent[0].spectral_radius;
        assert!(
            (rho / reference - 1.0).abs() < 0.03,
            "power iteration {rho} vs squaring {reference}"
        );
        assert!(rho < 0.8, "{rho}");
        assert_eq!(r.risk, Risk::Low);
    }

    #[test]
    fn measured_growth_across_layers_and_time() {
        // 129x over 8 layers (the deep ReLU MLP with gain 2), and 1.1x per step over 100 steps.
        let total: f64 = 129.0;
        let layers: Vec<(String, f64)> = (0..8)
            .map(|l| (format!("layers.{l}.bias"), total.powf((7 - l) as f64 / 7.0)))
            .collect();
        let values: Vec<f64> = (0..100).map(|t| 1.1f64.powi(99 - t)).collect();
        let input = ProbeInput {
            layer_grad_norms: layers,
            time_step_norms: vec![Series {
                name: "rnn.0 dL/dh_t".into(),
                axis: SeriesAxis::TimeSteps,
                values,
            }],
            global_grad_norm: Some(150.0),
            ..Default::default()
        };
        let r = probe(&input);
        let g = r.layer_growth.as_ref().unwrap();
        assert!(
            (g.total - 129.0).abs() < 1e-9 && (g.factor - 129f64.powf(1.0 / 7.0)).abs() < 1e-12
        );
        assert_eq!(g.start.as_deref(), Some("layers.7.bias"));
        assert!((r.time_growth[0].factor - 1.1).abs() < 1e-12);
        assert_eq!(r.risk, Risk::High);
        assert_eq!(r.reasons.len(), 3);
        // floor(ln 100 / ln 1.1) = 48.
        assert_eq!(r.suggested_truncation, Some(48));
    }

    #[test]
    fn input_from_a_measured_step() {
        let w = rotation(4, 4.0);
        let mut g = vec![0.0f32; 16];
        let (b, mut gb) = (vec![0.0f32; 4], vec![0.0f32; 4]);
        let (b2, mut gb2) = (vec![0.0f32; 4], vec![0.0f32; 4]);
        let (s44, s4) = ([4usize, 4], [4usize]);
        let mut view = ParamView::new();
        view.push("rnn.0.weight_hh", &s44, Role::RecurrentWeight, &w, &mut g)
            .unwrap();
        view.push("rnn.0.bias_ih", &s4, Role::Bias, &b, &mut gb)
            .unwrap();
        view.push("rnn.0.bias_hh", &s4, Role::Bias, &b2, &mut gb2)
            .unwrap();
        let mut stats = StepStats::measure(&view);
        stats.params[1].grad_norm = 3.0;
        stats.params[2].grad_norm = 3.0;
        let series = [Series {
            name: "rnn.0 dL/dh_t".into(),
            axis: SeriesAxis::TimeSteps,
            values: vec![8.0, 4.0, 2.0, 1.0],
        }];
        let input = ProbeInput::from_step(&stats, &view, &series, Some(50));
        assert_eq!(
            input.layer_grad_norms,
            vec![("rnn.0.bias_ih".to_string(), 3.0)]
        );
        assert_eq!(input.recurrent_weights[0].shape, vec![4, 4]);
        let r = probe(&input);
        assert!((r.recurrent[0].spectral_radius - 4.0).abs() < 1e-4);
        // Measured 2x per step wins over the radius: floor(ln 100 / ln 2) = 6.
        assert_eq!(r.suggested_truncation, Some(6));
        assert_eq!(r.risk, Risk::High);
    }

    #[test]
    fn bad_inputs_are_skipped_with_a_reason() {
        let input = ProbeInput {
            recurrent_weights: vec![RecurrentMatrix {
                name: "w".into(),
                shape: vec![3, 2],
                values: vec![0.0; 6],
            }],
            time_step_norms: vec![Series {
                name: "s".into(),
                axis: SeriesAxis::TimeSteps,
                values: vec![1.0, f64::NAN],
            }],
            ..Default::default()
        };
        let r = probe(&input);
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert!(r.skipped[1].contains("shape [3, 2]"));
        assert_eq!(r.risk, Risk::Low);
    }
}
