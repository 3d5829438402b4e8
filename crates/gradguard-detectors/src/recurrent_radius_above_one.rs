//! `recurrent_radius_above_one`: the spectral radius and the largest singular value of each
//! recurrent weight matrix ([`Role::RecurrentWeight`]), by power iteration, above 1.
//!
//! **Why.** Backpropagation through time multiplies the hidden-to-hidden Jacobian
//! `W_hhᵀ diag(f'(z_t))` once per time step; with a spectral radius above 1 the gradient can
//! grow geometrically with the sequence length. A tanh RNN can also be wrecked without any
//! NaN: in the reference run one full-BPTT SGD step pushed `σ_max(W_hh)` from 2 to ~3e4 and
//! saturated every unit, after which gradient norms looked normal (~1). This detector sees it.
//!
//! **Gates.** A weight of shape `[H, H]` is one block. PyTorch stacks the gates of gated cells
//! along the rows: LSTM `weight_hh` is `[4H, H]` (input, forget, cell, output gates), GRU
//! `[3H, H]` (reset, update, new). Such a `[G·H, H]` matrix is measured as `G` square
//! `H x H` blocks, each on its own, and the finding reports the block with the largest
//! spectral radius (its gate index in the message). Gates multiply the recurrent path by
//! sigmoid outputs below 1, so for gated cells a block radius above 1 is a weaker warning than
//! for a plain RNN. Other shapes (not 2-D, rows not a multiple of columns) are skipped.
//!
//! **Rule.** At step 1 and every `every` steps after (`step ≡ 1 mod every`), for each recurrent
//! weight in `obs.view`: `ρ` = spectral radius (Gelfand power iteration, `iterations` steps,
//! see [`crate::linalg`]) and `σ` = largest singular value, maximised over gate blocks. Fires
//! when `ρ > threshold · (1 + 1e-3)` ([`RADIUS_TOLERANCE`]; a NaN `ρ` counts), with `value = ρ`, `threshold`, and `σ` in the
//! message. It then stays quiet for that tensor until `ρ` at least doubles (a further
//! escalation, reported again) or falls back to the threshold (re-armed).
//! Without live weights (`obs.view` is None, e.g. replaying a log) it does nothing.
//!
//! **Parameters (defaults).** `threshold = 1.0`, `every = 200`, `iterations = 40`.
//!
//! **Cost.** `3·iterations` matrix-vector products per block per check (ρ: one per iteration,
//! σ: two); for an LSTM `weight_hh` with H = 128 (4 gates, 8 M multiply-adds) about 3 ms per
//! check on the 2-core reference machine (criterion bench `recurrent_radius_check`), i.e.
//! about 15 µs per step per recurrent layer with `every = 200`. Scratch
//! vectors are reused: no allocation once warmed up. A sudden wreck between checks is still
//! caught at once by the update ratio (`weights_change_large` and the diagnosis' wreck rule).

use gradguard_core::{
    describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo, PluginState,
    Role, Sign, StateError,
};
use serde::{Deserialize, Serialize};

use crate::linalg::{gate_blocks, sigma_max, spectral_radius, Block, Scratch};
use crate::util::{fmt_num, positive, require};

/// Relative margin above `threshold` before the detector fires: an orthogonal `W_hh` (radius
/// exactly 1, the default recurrent init) stored in f32 and measured by power iteration can
/// read a hair above 1, which is not a sign of anything.
pub const RADIUS_TOLERANCE: f64 = 1e-3;

fn d_threshold() -> f64 {
    1.0
}
fn d_every() -> u64 {
    200
}
fn d_iterations() -> usize {
    40
}

/// Spectral radius and largest singular value of a (possibly gate-stacked) recurrent weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecurrentRadius {
    /// Largest spectral radius over the gate blocks.
    pub spectral_radius: f64,
    /// Largest singular value over the gate blocks.
    pub sigma_max: f64,
    /// Number of gate blocks (1 for a plain RNN).
    pub gates: usize,
    /// Index of the block with the largest spectral radius.
    pub worst_gate: usize,
}

/// Measures a recurrent weight of `shape` (`[H, H]` or `[G*H, H]`), or None for other shapes
/// or when `values` is shorter than the shape says.
pub fn measure_recurrent(
    shape: &[usize],
    values: &[f32],
    iterations: usize,
    scratch: &mut Scratch,
) -> Option<RecurrentRadius> {
    let gates = gate_blocks(shape)?;
    let n = shape[1];
    if values.len() < gates * n * n {
        return None;
    }
    let mut out = RecurrentRadius {
        spectral_radius: 0.0,
        sigma_max: 0.0,
        gates,
        worst_gate: 0,
    };
    for g in 0..gates {
        let b = Block {
            data: values,
            n,
            row0: g * n,
        };
        let rho = spectral_radius(b, iterations, scratch);
        let sigma = sigma_max(b, iterations, scratch);
        // NaN wins (a non-finite block is the worst news), then the larger value.
        if !out.spectral_radius.is_nan() && (rho.is_nan() || rho > out.spectral_radius) {
            out.spectral_radius = rho;
            out.worst_gate = g;
        }
        if !out.sigma_max.is_nan() && (sigma.is_nan() || sigma > out.sigma_max) {
            out.sigma_max = sigma;
        }
    }
    Some(out)
}

/// Fires when a recurrent weight's spectral radius exceeds the threshold. See the
/// [module documentation](self).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentRadiusAboveOne {
    /// Spectral radius above which it fires.
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    /// Check at step 1 and every `every` steps (>= 1).
    #[serde(default = "d_every")]
    pub every: u64,
    /// Power-iteration steps per estimate.
    #[serde(default = "d_iterations")]
    pub iterations: usize,
    #[serde(skip)]
    scratch: Scratch,
    /// Per view index: the radius last reported (0 = armed).
    #[serde(skip)]
    reported: Vec<f64>,
}

impl Default for RecurrentRadiusAboveOne {
    fn default() -> Self {
        RecurrentRadiusAboveOne {
            threshold: d_threshold(),
            every: d_every(),
            iterations: d_iterations(),
            scratch: Scratch::default(),
            reported: Vec::new(),
        }
    }
}

impl RecurrentRadiusAboveOne {
    /// A detector with every parameter given (the defaults are in [`Default`] and the module
    /// documentation).
    pub fn new(threshold: f64, every: u64, iterations: usize) -> Self {
        RecurrentRadiusAboveOne {
            threshold,
            every,
            iterations,
            ..Default::default()
        }
    }
}

#[typetag::serde(name = "recurrent_radius_above_one")]
impl Detector for RecurrentRadiusAboveOne {
    fn validate(&self) -> Result<(), String> {
        positive("threshold", self.threshold)?;
        require(self.every >= 1, "every", "at least 1", self.every)?;
        require(
            self.iterations >= 1,
            "iterations",
            "at least 1",
            self.iterations,
        )
    }

    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let Some(view) = obs.view else { return };
        if !(obs.step.max(1) - 1).is_multiple_of(self.every.max(1)) {
            return;
        }
        if self.reported.len() != view.len() {
            self.reported.clear();
            self.reported.resize(view.len(), 0.0);
        }
        for (i, p) in view.iter().enumerate() {
            if p.role != Role::RecurrentWeight {
                continue;
            }
            let Some(r) = measure_recurrent(p.shape, p.weights, self.iterations, &mut self.scratch)
            else {
                continue;
            };
            let rho = r.spectral_radius;
            let above = rho > self.threshold * (1.0 + RADIUS_TOLERANCE) || rho.is_nan();
            if !above {
                self.reported[i] = 0.0;
                continue;
            }
            let last = self.reported[i];
            let report = last == 0.0 || (rho.is_nan() && !last.is_nan()) || rho >= 2.0 * last;
            if !report {
                continue;
            }
            self.reported[i] = rho;
            let gate = if r.gates > 1 {
                format!(" (gate block {} of {})", r.worst_gate, r.gates)
            } else {
                String::new()
            };
            findings.push(Finding::new(
                Sign::RecurrentRadiusAboveOne,
                obs.step,
                Some(p.name),
                rho,
                self.threshold,
                format!(
                    "the recurrent weight `{}` has spectral radius {}{gate} and largest singular value {} at step {}: an upper bound, not a measurement: the gradient through time can grow by at most the largest singular value per step (times the activation's derivative, at most 1 for tanh); saturation and gates lower the actual growth, which grad_growth_across_layers measures",
                    p.name,
                    fmt_num(rho),
                    fmt_num(r.sigma_max),
                    obs.step
                ),
            ));
        }
    }

    fn reset(&mut self) {
        self.reported.iter_mut().for_each(|r| *r = 0.0);
    }

    fn save_state(&self) -> Result<Option<PluginState>, StateError> {
        PluginState::encode(&self.reported).map(Some)
    }

    fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
        self.reported = state.decode()?;
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "recurrent_radius_above_one",
    summary: "Every N steps, fires when a recurrent weight's spectral radius (power iteration; gate blocks of [G*H, H] measured separately) exceeds a threshold; reports the largest singular value too.",
    params: &[
        ParamDoc { name: "threshold", default: Some("1.0"), doc: "spectral radius above which it fires" },
        ParamDoc { name: "every", default: Some("200"), doc: "check at step 1 and every `every` steps" },
        ParamDoc { name: "iterations", default: Some("40"), doc: "power-iteration steps per estimate" },
    ],
    example: "every = 1, iterations = 100",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::tests::scaled_rotation;
    use crate::testing::{param, stats};
    use gradguard_core::ParamView;

    fn observe_with(
        d: &mut RecurrentRadiusAboveOne,
        step: u64,
        whh: &[f32],
        shape: &[usize],
    ) -> Vec<Finding> {
        let mut g = vec![0.0f32; whh.len()];
        let wih = [0.5f32; 4];
        let mut gih = [0.0f32; 4];
        let s_ih = [2usize, 2];
        let mut view = ParamView::new();
        view.push("rnn.0.weight_ih", &s_ih, Role::Weight, &wih, &mut gih)
            .unwrap();
        view.push("rnn.0.weight_hh", shape, Role::RecurrentWeight, whh, &mut g)
            .unwrap();
        let s = stats(vec![
            param("rnn.0.weight_ih", Role::Weight, 1.0, 1.0),
            param("rnn.0.weight_hh", Role::RecurrentWeight, 1.0, 1.0),
        ]);
        let mut obs = Observation::new(step, 1.0, &s);
        obs.view = Some(&view);
        let mut found = Vec::new();
        d.observe(&obs, &mut found);
        found
    }

    #[test]
    fn fires_on_the_check_step_and_on_escalation_only() {
        let mut d = RecurrentRadiusAboveOne {
            every: 5,
            ..Default::default()
        };
        let shape = [8usize, 8];
        let healthy = scaled_rotation(8, 0.9, 0.3);
        let grown = scaled_rotation(8, 2.0, 0.3);
        let wrecked = scaled_rotation(8, 3e4, 0.3);
        let mut steps = Vec::new();
        for step in 1..=30u64 {
            let m = match step {
                1..=5 => &healthy,
                6..=20 => &grown,
                _ => &wrecked,
            };
            for f in observe_with(&mut d, step, m, &shape) {
                assert_eq!(f.layer.as_deref(), Some("rnn.0.weight_hh"));
                steps.push((f.step, (f.value / 1e3 * 1e4).round() / 1e4 * 1e3));
            }
        }
        // Checks at 1, 6, 11, 16, 21, 26: grown first seen at 6, wrecked at 21.
        assert_eq!(
            steps,
            vec![(6, 2.0), (21, 3e4)],
            "values rounded to 4 digits"
        );
    }

    #[test]
    fn lstm_gate_blocks_are_measured_separately() {
        let h = 4;
        let mut m = Vec::new();
        for (g, scale) in [0.5f32, 0.5, 3.0, 0.5].iter().enumerate() {
            let _ = g;
            m.extend(scaled_rotation(h, *scale, 0.4));
        }
        let mut d = RecurrentRadiusAboveOne::default();
        let found = observe_with(&mut d, 1, &m, &[4 * h, h]);
        assert_eq!(found.len(), 1);
        assert!((found[0].value - 3.0).abs() < 1e-4);
        assert!(
            found[0].message.contains("gate block 2 of 4"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn quiet_on_a_contractive_matrix_and_without_view() {
        let mut d = RecurrentRadiusAboveOne {
            every: 1,
            ..Default::default()
        };
        let m = scaled_rotation(8, 0.9, 1.1);
        for step in 1..=20 {
            assert!(observe_with(&mut d, step, &m, &[8, 8]).is_empty());
        }
        let s = stats(vec![param(
            "rnn.0.weight_hh",
            Role::RecurrentWeight,
            1.0,
            1.0,
        )]);
        let mut found = Vec::new();
        d.observe(&Observation::new(1, 1.0, &s), &mut found);
        assert!(found.is_empty());
    }
}
