//! `grad_spike`: the global gradient norm jumps against robust running statistics.
//!
//! **Rule.** The window holds the last `window` *finite* global gradient norms
//! (`obs.stats.grad_norm`, before remedies). Once it holds at least `min_history` values,
//! with `med` its median and `mad = median(|x − med|)`, the robust scale is
//! `σ = 1.4826 · mad` (the normal-consistent MAD) and the step's norm `g` is a spike when
//!
//! `g > level`, with `level = max(med + z_threshold · σ, min_ratio · med)`.
//!
//! (`min_ratio` keeps a nearly constant history, `mad ≈ 0`, from turning noise into spikes.)
//! `value = g`, `threshold = level`, `layer` = the tensor with the largest gradient norm at that
//! step (where the spike is). The statistics are taken *before* `g` joins the window; a
//! finite `g` then joins it (spikes too: the median is robust to them).
//!
//! **NaN-safe.** A non-finite norm never enters the window and is not reported here (a NaN or
//! infinite gradient makes the loss non-finite, which `loss_nonfinite` reports and the
//! diagnosis records as the first non-finite step). Unlike AutoClip, ZClip or OLMo-core's
//! windows, one NaN cannot poison the statistics.
//!
//! **Parameters (defaults).** `window = 50`, `min_history = 10`, `z_threshold = 6.0`,
//! `min_ratio = 2.0`.
//!
//! **Cost.** O(window) per step: a pass for the window's minimum; the two selections (median,
//! MAD) only when the norm exceeds `min_ratio` times that minimum (a norm below it cannot be a
//! spike, since the level is at least `min_ratio` times the median). Scratch allocated once.

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Sign, StateError, Window,
};
use serde::{Deserialize, Serialize};

use crate::util::{argmax_grad_norm, fmt_num, non_negative, positive, require};

fn d_window() -> usize {
    50
}
fn d_min_history() -> usize {
    10
}
fn d_z() -> f64 {
    6.0
}
fn d_ratio() -> f64 {
    2.0
}

/// Fires when the global gradient norm jumps. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradSpike {
    /// Finite norms kept.
    #[serde(default = "d_window")]
    pub window: usize,
    /// Norms needed before it can fire.
    #[serde(default = "d_min_history")]
    pub min_history: usize,
    /// Robust z-score above which a norm is a spike.
    #[serde(default = "d_z")]
    pub z_threshold: f64,
    /// The norm must also exceed `min_ratio` times the median.
    #[serde(default = "d_ratio")]
    pub min_ratio: f64,
    /// The last finite norms (median and MAD from its scratch: no allocation per step).
    #[serde(skip)]
    ring: Window,
}

impl Default for GradSpike {
    fn default() -> Self {
        GradSpike {
            window: d_window(),
            min_history: d_min_history(),
            z_threshold: d_z(),
            min_ratio: d_ratio(),
            ring: Window::default(),
        }
    }
}

impl GradSpike {
    /// Median and robust sigma (1.4826 MAD) of the window, or None when too short.
    fn robust_stats(&mut self) -> Option<(f64, f64)> {
        if self.ring.is_empty() || self.ring.len() < self.min_history.max(1) {
            return None;
        }
        let (med, mad) = self.ring.median_mad();
        Some((med, 1.4826 * mad))
    }

    fn push(&mut self, g: f64) {
        self.ring.set_capacity(self.window.max(1));
        self.ring.push(g);
    }
}

impl GradSpike {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    #[allow(clippy::too_many_arguments)]
    pub fn new(window: usize, min_history: usize, z_threshold: f64, min_ratio: f64) -> Self {
        GradSpike {
            window,
            min_history,
            z_threshold,
            min_ratio,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "grad_spike")]
impl Detector for GradSpike {
    fn validate(&self) -> Result<(), String> {
        require(self.window >= 2, "window", "at least 2", self.window)?;
        require(
            self.min_history >= 1 && self.min_history <= self.window,
            "min_history",
            "between 1 and `window`",
            self.min_history,
        )?;
        positive("z_threshold", self.z_threshold)?;
        non_negative("min_ratio", self.min_ratio)
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let g = obs.stats.grad_norm;
        if !g.is_finite() {
            return;
        }
        // Shortcut with the same result: the level is at least min_ratio x median, and the
        // median is at least the window's minimum, so a norm at or below min_ratio x minimum
        // cannot be a spike (this skips the two selections in most healthy steps).
        let warm = self.ring.len() >= self.min_history.max(1);
        let window_min = self.ring.min();
        let surely_quiet = warm && self.min_ratio > 0.0 && g <= self.min_ratio * window_min;
        if surely_quiet {
            self.push(g);
            return;
        }
        if let Some((med, sigma)) = self.robust_stats() {
            let level = (med + self.z_threshold * sigma).max(self.min_ratio * med);
            if g > level {
                let layer =
                    argmax_grad_norm(&obs.stats.params).map(|i| obs.stats.params[i].name.as_str());
                let z = if sigma > 0.0 {
                    (g - med) / sigma
                } else {
                    f64::INFINITY
                };
                let place = layer
                    .map(|l| format!(", largest on `{l}`"))
                    .unwrap_or_default();
                findings.push(Finding::new(
                    Sign::GradSpike,
                    obs.step,
                    layer,
                    g,
                    level,
                    format!(
                        "the gradient norm spiked to {} at step {}: {}x the median {} of the last {} steps (robust z = {}){place}",
                        fmt_num(g),
                        obs.step,
                        fmt_num(g / med.max(f64::MIN_POSITIVE)),
                        fmt_num(med),
                        self.ring.len(),
                        fmt_num(z)
                    ),
                ));
            }
        }
        self.push(g);
    }

    fn reset(&mut self) {
        self.ring.clear();
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.ring).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.ring = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "grad_spike",
    summary: "Fires when the global gradient norm exceeds max(median + z x 1.4826 MAD, min_ratio x median) of a window of finite norms (NaN-safe).",
    params: &[
        ParamDoc { name: "window", default: Some("50"), doc: "finite norms kept" },
        ParamDoc { name: "min_history", default: Some("10"), doc: "norms needed before it can fire" },
        ParamDoc { name: "z_threshold", default: Some("6.0"), doc: "robust z-score above which a norm is a spike" },
        ParamDoc { name: "min_ratio", default: Some("2.0"), doc: "a spike must also exceed min_ratio x the median" },
    ],
    example: "window = 100, z_threshold = 8.0",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{param, stats};
    use gradguard_core::Role;

    fn run(d: &mut GradSpike, norms: &[f64]) -> Vec<Finding> {
        let mut found = Vec::new();
        for (i, &n) in norms.iter().enumerate() {
            // The recurrent weight carries most of the norm.
            let s = stats(vec![
                param("lstm.0.weight_ih", Role::Weight, n * 0.6, 1.0),
                param("lstm.0.weight_hh", Role::RecurrentWeight, n * 0.8, 1.0),
            ]);
            d.observe(&Observation::new(i as u64 + 1, 1.0, &s), &mut found);
        }
        found
    }

    #[test]
    fn fires_on_the_spike_at_step_41_and_survives_nan() {
        let mut norms: Vec<f64> = (0..60).map(|i| 1.0 + 0.1 * ((i * 7) % 5) as f64).collect();
        norms[20] = f64::NAN; // never enters the window, never poisons it
        norms[40] = 50.0; // step 41
        let found = run(&mut GradSpike::default(), &norms);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].step, found[0].layer.as_deref()),
            (41, Some("lstm.0.weight_hh"))
        );
        assert!((found[0].value - 50.0).abs() < 1e-9);
        // Hand-computed: the window before step 41 holds 39 finite values of the cycle
        // {1.0, 1.2, 1.4, 1.1, 1.3}: median 1.2, MAD 0.1, level = max(1.2 + 6 * 0.14826, 2.4) = 2.4.
        assert!(
            (found[0].threshold - 2.4).abs() < 1e-9,
            "{}",
            found[0].threshold
        );
    }

    #[test]
    fn quiet_on_noisy_but_healthy_norms() {
        let norms: Vec<f64> = (0..500)
            .map(|i| {
                3.0 * (-(i as f64) / 200.0).exp() * (1.0 + 0.3 * (((i * 37) % 11) as f64 / 11.0))
            })
            .collect();
        assert!(run(&mut GradSpike::default(), &norms).is_empty());
    }

    /// One step with global norm exactly `g` (set by hand, not through a square root).
    fn observe_norm(d: &mut GradSpike, step: u64, g: f64, found: &mut Vec<Finding>) {
        let mut s = stats(vec![param("w", Role::Weight, g, 1.0)]);
        s.grad_norm = g;
        d.observe(&Observation::new(step, 1.0, &s), found);
    }

    /// History where the MAD term sets the level, not `min_ratio`:
    /// sorted 7 8 8 10 10 10 10 12 12 13: median (10 + 10) / 2 = 10;
    /// |x - 10| sorted 0 0 0 0 2 2 2 2 3 3: MAD (2 + 2) / 2 = 2; sigma = 1.4826 * 2 = 2.9652;
    /// level = max(10 + 6 * 2.9652, 2 * 10) = max(27.7912, 20) = 27.7912.
    const MAD_HISTORY: [f64; 10] = [10.0, 12.0, 8.0, 10.0, 13.0, 7.0, 10.0, 10.0, 12.0, 8.0];

    fn level_after_mad_history(g: f64) -> Vec<Finding> {
        let mut d = GradSpike::new(10, 10, 6.0, 2.0);
        let mut found = Vec::new();
        for (i, &n) in MAD_HISTORY.iter().enumerate() {
            observe_norm(&mut d, i as u64 + 1, n, &mut found);
        }
        assert!(found.is_empty(), "{found:?}");
        observe_norm(&mut d, 11, g, &mut found);
        found
    }

    #[test]
    fn mad_term_sets_the_level() {
        // Between the min_ratio level (20) and the MAD level (27.79): quiet. A detector that
        // ignored the MAD term would fire here.
        assert!(level_after_mad_history(25.0).is_empty());
        let found = level_after_mad_history(28.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            (found[0].threshold - 27.7912).abs() < 1e-12,
            "level {}",
            found[0].threshold
        );
        assert_eq!(found[0].value, 28.0);
        // robust z in the message: (28 - 10) / 2.9652 = 6.0704...
        assert!(
            found[0].message.contains("median 10") && found[0].message.contains("robust z = 6.07)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_window_with_no_spread_gives_an_infinite_z() {
        // Ten norms of 1: median 1, MAD 0, level max(1 + 0, 2 * 1) = 2; a norm of 3 fires
        // with z = (3 - 1) / 0 = inf, spelled out in the message.
        let mut d = GradSpike::new(10, 10, 6.0, 2.0);
        let mut found = Vec::new();
        for step in 1..=10 {
            observe_norm(&mut d, step, 1.0, &mut found);
        }
        observe_norm(&mut d, 11, 3.0, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].threshold, 2.0);
        assert!(
            found[0].message.contains("robust z = inf)"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn never_fires_before_min_history() {
        // min_history 5: four norms of 1 are not enough history, whatever comes next.
        let mut d = GradSpike::new(10, 5, 6.0, 2.0);
        let mut found = Vec::new();
        for step in 1..=4 {
            observe_norm(&mut d, step, 1.0, &mut found);
        }
        observe_norm(&mut d, 5, 1e6, &mut found);
        assert!(found.is_empty(), "{found:?}");
        // The fifth norm completed the history: now a jump fires.
        observe_norm(&mut d, 6, 1e6, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn reset_forgets_the_history() {
        let mut d = GradSpike::new(10, 3, 6.0, 2.0);
        let mut found = Vec::new();
        for step in 1..=3 {
            observe_norm(&mut d, step, 1.0, &mut found);
        }
        d.reset();
        // No history after the reset: a jump cannot be judged, so it does not fire.
        observe_norm(&mut d, 4, 100.0, &mut found);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for bad in [
            GradSpike::new(1, 1, 6.0, 2.0),   // window < 2
            GradSpike::new(10, 0, 6.0, 2.0),  // min_history < 1
            GradSpike::new(10, 11, 6.0, 2.0), // min_history > window
            GradSpike::new(10, 5, 0.0, 2.0),  // z_threshold not positive
            GradSpike::new(10, 5, 6.0, -1.0), // min_ratio negative
        ] {
            assert!(bad.validate().is_err(), "{bad:?} passed");
        }
        for good in [
            GradSpike::new(2, 1, 6.0, 2.0),
            GradSpike::new(10, 10, 6.0, 0.0),
        ] {
            assert!(good.validate().is_ok(), "{good:?}: {:?}", good.validate());
        }
    }

    #[test]
    fn boundary_is_strictly_above_the_level() {
        // The level as the detector computes it: med + z * (1.4826 * mad), and min_ratio * med.
        let mad_level = (10.0 + 6.0 * (1.4826 * 2.0f64)).max(2.0 * 10.0);
        assert!((mad_level - 27.7912).abs() < 1e-12);
        for (g, fires) in [
            (mad_level.next_down(), false),
            (mad_level, false),
            (mad_level.next_up(), true),
        ] {
            assert_eq!(level_after_mad_history(g).len(), fires as usize, "g {g:e}");
        }
        // The min_ratio level: a flat history of 5s (MAD 0) has level exactly 2 * 5 = 10.
        for (g, fires) in [
            (10f64.next_down(), false),
            (10.0, false),
            (10f64.next_up(), true),
        ] {
            let mut d = GradSpike::new(10, 10, 6.0, 2.0);
            let mut found = Vec::new();
            for step in 1..=10 {
                observe_norm(&mut d, step, 5.0, &mut found);
            }
            observe_norm(&mut d, 11, g, &mut found);
            assert_eq!(found.len(), fires as usize, "g {g:e}");
        }
    }
}
