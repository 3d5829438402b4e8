//! `grad_growth_across_layers`: gradient norms grow geometrically from the output layer back
//! to the input layer, or across the time steps of a recurrent layer; the per-layer (per-step)
//! growth factor, and where the growth starts.
//!
//! **Across layers.** The chain is the layers' error-signal norms, input layer first:
//! an `obs.series` entry with axis [`SeriesAxis::Layers`] when the model measured one
//! (`‖dL/dz_l‖`), otherwise the gradient norms of the bias tensors ([`Role::Bias`]) in view
//! order (a bias gradient is the layer's error signal summed over the batch). Biases of the
//! same layer (same name up to the last `.`, e.g. `rnn.0.bias_ih` and `rnn.0.bias_hh`, which
//! carry the same signal) count once, as the first of them. *Not* the weight gradients: in
//! deep ReLU MLPs the ratio of first- to last-layer weight gradients hid an explosion (0.16 at
//! depth 8, gain 2) that the error signal showed (129x).
//!
//! **Across time.** Each `obs.series` entry with axis [`SeriesAxis::TimeSteps`]
//! (`‖dL/dh_t‖`, first step first) is a chain of its own; backpropagation runs from the last
//! step to the first.
//!
//! **Rule.** For a chain `v_1 … v_n` (input end first, n >= 2, all finite, `v_n > 0`):
//! `total = v_1 / v_n` and `factor = total^(1/(n−1))` (the geometric-mean growth per layer or
//! step, output to input). The chain grows when `total >= min_total` and
//! `factor > factor_threshold` (`layer_` or `time_` parameters by axis). A streak per chain
//! counts consecutive growing steps; at `patience` it fires once (`value = factor`,
//! `threshold = factor_threshold`) and re-arms when the chain stops growing.
//! Where it starts: scanning from the output end, the first boundary whose own ratio
//! `v_{i−1} / v_i` exceeds the factor threshold; for layers the finding's `layer` is that
//! output-side layer's tensor (its weights amplify the error signal), for time the series name
//! with the time step in the message.
//!
//! **Parameters (defaults).** `layer_factor = 1.5`, `layer_min_total = 10.0`,
//! `time_factor = 1.05`, `time_min_total = 100.0`, `patience = 3`.
//!
//! **Cost.** One pass over the tensors' statistics and the series; index scratch allocated once.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Role, SeriesAxis, Sign, StateError,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, layer_prefix, positive, require};

fn d_layer_factor() -> f64 {
    1.5
}
fn d_layer_total() -> f64 {
    10.0
}
fn d_time_factor() -> f64 {
    1.05
}
fn d_time_total() -> f64 {
    100.0
}
fn d_patience() -> u32 {
    3
}

/// Growth of a chain of norms from its output end back to its input end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChainGrowth {
    /// `v_1 / v_n`.
    pub total: f64,
    /// `total^(1/(n-1))`.
    pub factor: f64,
    /// 0-based index (input-first order) of the output-side element of the first boundary,
    /// scanning from the output end, whose own ratio `v[i-1] / v[i]` exceeds the threshold.
    pub start: Option<usize>,
}

/// Measures the growth of `values` (input end first) against a per-step `factor_threshold`.
/// None when the chain is shorter than 2, holds a negative or non-finite value, or ends at 0.
pub fn chain_growth(values: &[f64], factor_threshold: f64) -> Option<ChainGrowth> {
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return None;
    }
    let last = values[n - 1];
    if last <= 0.0 {
        return None;
    }
    let total = values[0] / last;
    let factor = total.powf(1.0 / (n - 1) as f64);
    let start = (1..n)
        .rev()
        .find(|&i| values[i] > 0.0 && values[i - 1] / values[i] > factor_threshold);
    Some(ChainGrowth {
        total,
        factor,
        start,
    })
}

/// Fires when gradients grow across layers or time steps. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradGrowthAcrossLayers {
    /// Per-layer growth factor above which layers count as growing.
    #[serde(default = "d_layer_factor")]
    pub layer_factor: f64,
    /// Smallest total growth (input / output error signal) that counts.
    #[serde(default = "d_layer_total")]
    pub layer_min_total: f64,
    /// Per-time-step growth factor above which a recurrent layer counts as growing.
    #[serde(default = "d_time_factor")]
    pub time_factor: f64,
    /// Smallest total growth across the sequence that counts.
    #[serde(default = "d_time_total")]
    pub time_min_total: f64,
    /// Consecutive growing steps needed to fire (>= 1).
    #[serde(default = "d_patience")]
    pub patience: u32,
    #[serde(skip)]
    streak: Vec<u32>,
    #[serde(skip)]
    chain: Vec<f64>,
    #[serde(skip)]
    chain_idx: Vec<usize>,
}

impl Default for GradGrowthAcrossLayers {
    fn default() -> Self {
        GradGrowthAcrossLayers {
            layer_factor: d_layer_factor(),
            layer_min_total: d_layer_total(),
            time_factor: d_time_factor(),
            time_min_total: d_time_total(),
            patience: d_patience(),
            streak: Vec::new(),
            chain: Vec::new(),
            chain_idx: Vec::new(),
        }
    }
}

impl GradGrowthAcrossLayers {
    /// Advances streak `slot`; true when it just reached patience.
    fn advance(&mut self, slot: usize, growing: bool) -> bool {
        let s = &mut self.streak[slot];
        if !growing {
            *s = 0;
            return false;
        }
        *s = s.saturating_add(1);
        *s == self.patience.max(1)
    }

    fn layers(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        self.chain.clear();
        self.chain_idx.clear();
        let series = obs.series.iter().find(|s| s.axis == SeriesAxis::Layers);
        match series {
            Some(s) => self.chain.extend_from_slice(&s.values),
            None => {
                let params = &obs.stats.params;
                for (i, p) in params.iter().enumerate() {
                    if p.role != Role::Bias {
                        continue;
                    }
                    if let Some(&j) = self.chain_idx.last() {
                        if layer_prefix(&params[j].name) == layer_prefix(&p.name) {
                            continue;
                        }
                    }
                    self.chain_idx.push(i);
                    self.chain.push(p.grad_norm);
                }
            }
        }
        let g = chain_growth(&self.chain, self.layer_factor);
        let growing = g
            .map(|g| g.total >= self.layer_min_total && g.factor > self.layer_factor)
            .unwrap_or(false);
        if !self.advance(0, growing) {
            return;
        }
        let Some(g) = g else { return };
        let n = self.chain.len();
        let name_of = |i: usize| -> String {
            match series {
                Some(s) => format!("{}[{}]", s.name, i),
                None => obs.stats.params[self.chain_idx[i]].name.clone(),
            }
        };
        let start = g.start.unwrap_or(n - 1);
        let start_name = name_of(start);
        findings.push(Finding::new(
            Sign::GradGrowthAcrossLayers,
            obs.step,
            Some(&start_name),
            g.factor,
            self.layer_factor,
            format!(
                "the error signal grows {}x per layer from the output back to the input over {} layers ({}x in total) for {} steps; the growth starts at `{}` (step {})",
                fmt_num(g.factor),
                n,
                fmt_num(g.total),
                self.patience.max(1),
                start_name,
                obs.step
            ),
        ));
    }
}

impl GradGrowthAcrossLayers {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layer_factor: f64,
        layer_min_total: f64,
        time_factor: f64,
        time_min_total: f64,
        patience: u32,
    ) -> Self {
        GradGrowthAcrossLayers {
            layer_factor,
            layer_min_total,
            time_factor,
            time_min_total,
            patience,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "grad_growth_across_layers")]
impl Detector for GradGrowthAcrossLayers {
    fn validate(&self) -> Result<(), String> {
        positive("layer_factor", self.layer_factor)?;
        positive("layer_min_total", self.layer_min_total)?;
        positive("time_factor", self.time_factor)?;
        positive("time_min_total", self.time_min_total)?;
        require(self.patience >= 1, "patience", "at least 1", self.patience)
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let n_time = obs
            .series
            .iter()
            .filter(|s| s.axis == SeriesAxis::TimeSteps)
            .count();
        if self.streak.len() != 1 + n_time {
            self.streak.clear();
            self.streak.resize(1 + n_time, 0);
        }
        self.layers(obs, findings);
        for (k, s) in obs
            .series
            .iter()
            .filter(|s| s.axis == SeriesAxis::TimeSteps)
            .enumerate()
        {
            let g = chain_growth(&s.values, self.time_factor);
            let growing = g
                .map(|g| g.total >= self.time_min_total && g.factor > self.time_factor)
                .unwrap_or(false);
            if !self.advance(1 + k, growing) {
                continue;
            }
            let Some(g) = g else { continue };
            let t_len = s.values.len();
            let start_t = g.start.unwrap_or(t_len - 1) + 1;
            findings.push(Finding::new(
                Sign::GradGrowthAcrossLayers,
                obs.step,
                Some(&s.name),
                g.factor,
                self.time_factor,
                format!(
                    "the gradient of `{}` grows {}x per time step from t={} back to t=1 ({}x in total) for {} steps; the growth starts at t={} (step {})",
                    s.name,
                    fmt_num(g.factor),
                    t_len,
                    fmt_num(g.total),
                    self.patience.max(1),
                    start_t,
                    obs.step
                ),
            ));
        }
    }

    fn reset(&mut self) {
        self.streak.iter_mut().for_each(|s| *s = 0);
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.streak).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.streak = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "grad_growth_across_layers",
    summary: "Fires when the error signal (bias gradients or a measured series) grows geometrically from the output back to the input, or across time steps; localises where it starts.",
    params: &[
        ParamDoc { name: "layer_factor", default: Some("1.5"), doc: "per-layer growth factor above which layers count as growing" },
        ParamDoc { name: "layer_min_total", default: Some("10.0"), doc: "smallest total growth from output to input that counts" },
        ParamDoc { name: "time_factor", default: Some("1.05"), doc: "per-time-step growth factor above which a recurrent layer counts as growing" },
        ParamDoc { name: "time_min_total", default: Some("100.0"), doc: "smallest total growth across the sequence that counts" },
        ParamDoc { name: "patience", default: Some("3"), doc: "consecutive growing steps needed to fire" },
    ],
    example: "layer_factor = 2.0, patience = 1",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::{Series, StepStats};

    /// A 6-layer MLP whose error signal is 1 at the output and grows 2x per layer from
    /// layer 3 back (layers 5 and 4 are flat): 8, 4, 2, 1, 1, 1 (input first).
    fn mlp(growing: bool) -> StepStats {
        let e = if growing {
            [8.0, 4.0, 2.0, 1.0, 1.0, 1.0]
        } else {
            [1.1, 0.9, 1.0, 1.2, 1.0, 1.0]
        };
        let mut ps = Vec::new();
        for (l, &v) in e.iter().enumerate() {
            // Weight gradients shrink towards the input: they would hide the growth.
            ps.push(param(
                &format!("layers.{l}.weight"),
                Role::Weight,
                0.5 / (l + 1) as f64,
                1.0,
            ));
            ps.push(param(&format!("layers.{l}.bias"), Role::Bias, v, 1.0));
        }
        stats(ps)
    }

    #[test]
    fn chain_growth_hand_computed() {
        let g = chain_growth(&[8.0, 4.0, 2.0, 1.0, 1.0, 1.0], 1.5).unwrap();
        assert_eq!(g.total, 8.0);
        assert!((g.factor - 8f64.powf(0.2)).abs() < 1e-12);
        assert_eq!(g.start, Some(3));
        assert!(chain_growth(&[1.0, f64::NAN], 1.5).is_none());
        assert!(chain_growth(&[1.0, 0.0], 1.5).is_none());
    }

    #[test]
    fn growth_through_a_zero_layer_is_named_at_the_output_end() {
        // Biases 100, 0, 1 (input first): total 100, factor 10 over 2 boundaries, but no
        // single boundary has a ratio (0/1 = 0, and 100/0 is skipped), so the finding names
        // the output end, layers.2.bias.
        let s = stats(
            [100.0, 0.0, 1.0]
                .iter()
                .enumerate()
                .map(|(l, &v)| param(&format!("layers.{l}.bias"), Role::Bias, v, 1.0))
                .collect(),
        );
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 1.05, 100.0, 1);
        let mut found = Vec::new();
        d.observe(&Observation::new(1, 1.0, &s), &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].layer.as_deref(), Some("layers.2.bias"));
        assert!((found[0].value - 10.0).abs() < 1e-12);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let new = GradGrowthAcrossLayers::new;
        for bad in [
            new(0.0, 10.0, 1.05, 100.0, 3),
            new(1.5, 0.0, 1.05, 100.0, 3),
            new(1.5, 10.0, 0.0, 100.0, 3),
            new(1.5, 10.0, 1.05, -1.0, 3),
            new(1.5, 10.0, 1.05, 100.0, 0),
        ] {
            assert!(bad.validate().is_err(), "{bad:?} passed");
        }
        assert!(new(1.5, 10.0, 1.05, 100.0, 1).validate().is_ok());
    }

    /// One step over time-step series of these values (names `s0`, `s1`, ...).
    fn observe_time(
        d: &mut GradGrowthAcrossLayers,
        step: u64,
        chains: &[Vec<f64>],
    ) -> Vec<Finding> {
        let s = stats(vec![param(
            "rnn.0.weight_hh",
            Role::RecurrentWeight,
            1.0,
            1.0,
        )]);
        let series: Vec<Series> = chains
            .iter()
            .enumerate()
            .map(|(k, v)| Series {
                name: format!("s{k}"),
                axis: SeriesAxis::TimeSteps,
                values: v.clone(),
            })
            .collect();
        let mut obs = Observation::new(step, 1.0, &s);
        obs.series = &series;
        let mut found = Vec::new();
        d.observe(&obs, &mut found);
        found
    }

    #[test]
    fn time_growth_needs_both_the_total_and_the_factor() {
        // 1.04 per step over 200 steps: total 1.04^199 = 2456 >= 100, factor 1.04 <= 1.05.
        let slow: Vec<f64> = (0..200).map(|t| 1.04f64.powi(199 - t)).collect();
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 1.05, 100.0, 1);
        assert!(observe_time(&mut d, 1, &[slow]).is_empty());
        // 4, 2, 1: factor exactly 2 (strict >) with time_factor 2: quiet; just below: fires.
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 2.0, 1.0, 1);
        assert!(observe_time(&mut d, 1, &[vec![4.0, 2.0, 1.0]]).is_empty());
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 2.0f64.next_down(), 1.0, 1);
        assert_eq!(observe_time(&mut d, 1, &[vec![4.0, 2.0, 1.0]]).len(), 1);
    }

    #[test]
    fn each_time_series_keeps_its_own_streak() {
        // Two growing series, patience 2: each fires at the second step, independently of
        // the other and of the (quiet) layer chain.
        let up = vec![8.0, 4.0, 2.0, 1.0];
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 1.05, 4.0, 2);
        assert!(observe_time(&mut d, 1, &[up.clone(), up.clone()]).is_empty());
        let found = observe_time(&mut d, 2, &[up.clone(), up]);
        let names: Vec<_> = found.iter().map(|f| f.layer.as_deref()).collect();
        assert_eq!(names, vec![Some("s0"), Some("s1")]);
    }

    #[test]
    fn reset_restarts_the_streaks() {
        let up = vec![8.0, 4.0, 2.0, 1.0];
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 1.05, 4.0, 2);
        assert!(observe_time(&mut d, 1, std::slice::from_ref(&up)).is_empty());
        d.reset();
        assert!(observe_time(&mut d, 2, std::slice::from_ref(&up)).is_empty());
        assert_eq!(observe_time(&mut d, 3, &[up]).len(), 1);
    }

    #[test]
    fn time_growth_through_a_zero_step_starts_at_the_last_step() {
        let mut d = GradGrowthAcrossLayers::new(1.5, 10.0, 1.05, 10.0, 1);
        let found = observe_time(&mut d, 1, &[vec![100.0, 0.0, 1.0]]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.contains("starts at t=3"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn chain_growth_edges() {
        // Halving towards the output: total = 1 / 0.125 = 8 over 3 boundaries, factor
        // 8^(1/3) = 2; every ratio v[i-1] / v[i] is 2, so growth starts at the output end.
        let g = chain_growth(&[1.0, 0.5, 0.25, 0.125], 1.5).unwrap();
        assert_eq!(g.total, 8.0);
        assert!((g.factor - 2.0).abs() < 1e-12, "{}", g.factor);
        assert_eq!(g.start, Some(3));
        // A ratio exactly at the threshold does not count (strict >): 3/2 = 1.5, 2/1 = 2.
        assert_eq!(chain_growth(&[3.0, 2.0, 1.0], 2.0).unwrap().start, None);
        assert_eq!(
            chain_growth(&[3.0, 2.0, 1.0], 2.0f64.next_down())
                .unwrap()
                .start,
            Some(2)
        );
        // A zero inside the chain is allowed, and a boundary whose output side is 0 has no
        // ratio (2 / 0 is not growth): from the output end, 0/1, then 2/0 skipped, then 4/2.
        let g = chain_growth(&[4.0, 2.0, 0.0, 1.0], 1.5).unwrap();
        assert_eq!((g.total, g.start), (4.0, Some(1)));
        // Negative values are not norms.
        assert!(chain_growth(&[1.0, -1.0, 1.0], 1.5).is_none());
        assert!(chain_growth(&[-0.0, 1.0], 1.5).is_some());
        assert!(chain_growth(&[2.0], 1.5).is_none());
    }

    #[test]
    fn fires_after_patience_and_names_where_layer_growth_starts() {
        // Total 8 < 10 by default: use layer_min_total = 5 and layer_factor = 1.4 (8^(1/5) = 1.516).
        let mut d = GradGrowthAcrossLayers {
            layer_min_total: 5.0,
            layer_factor: 1.4,
            ..Default::default()
        };
        let mut found = Vec::new();
        for step in 1..=6 {
            let s = mlp(step >= 2);
            d.observe(&Observation::new(step, 1.0, &s), &mut found);
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].step, found[0].layer.as_deref()),
            (4, Some("layers.3.bias"))
        );
        assert!((found[0].value - 8f64.powf(0.2)).abs() < 1e-12);
    }

    #[test]
    fn fires_on_growth_across_time_steps() {
        let mut d = GradGrowthAcrossLayers {
            patience: 1,
            ..Default::default()
        };
        let s = stats(vec![param(
            "rnn.0.weight_hh",
            Role::RecurrentWeight,
            1.0,
            1.0,
        )]);
        // 60 steps, flat for the last 10, then 1.2x per step backwards: 1.2^49 = 7583 total.
        let values: Vec<f64> = (0..60)
            .map(|t| if t >= 49 { 1.0 } else { 1.2f64.powi(49 - t) })
            .collect();
        let series = [Series {
            name: "rnn.0 dL/dh_t".into(),
            axis: SeriesAxis::TimeSteps,
            values,
        }];
        let mut obs = Observation::new(7, 1.0, &s);
        obs.series = &series;
        let mut found = Vec::new();
        d.observe(&obs, &mut found);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].step, found[0].layer.as_deref()),
            (7, Some("rnn.0 dL/dh_t"))
        );
        assert!(
            found[0].message.contains("starts at t=50"),
            "{}",
            found[0].message
        );
        assert!((found[0].value - 1.2f64.powf(49.0 / 59.0)).abs() < 1e-9);
    }

    #[test]
    fn quiet_on_a_healthy_mlp_and_contractive_rnn() {
        let mut d = GradGrowthAcrossLayers::default();
        let mut found = Vec::new();
        let values: Vec<f64> = (0..60).map(|t| 1.0 + 0.02 * (60 - t) as f64).collect();
        let series = [Series {
            name: "rnn.0 dL/dh_t".into(),
            axis: SeriesAxis::TimeSteps,
            values,
        }];
        for step in 1..=50 {
            let s = mlp(false);
            let mut obs = Observation::new(step, 1.0, &s);
            obs.series = &series;
            d.observe(&obs, &mut found);
        }
        assert!(found.is_empty(), "{found:?}");
    }
}
