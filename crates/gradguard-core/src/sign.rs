//! Signs of exploding gradients, and the findings that report them.

use serde::{Deserialize, Serialize};

/// A sign of exploding gradients. The first six are the classic checklist; the last four
/// are finer signs: where a non-finite value first appears, and where an explosion starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// The loss stays poor: after a warm-up it does not fall below a fraction of its start.
    LossNotConverging,
    /// The loss swings from update to update.
    LossUnstable,
    /// The loss is NaN or infinite.
    LossNonfinite,
    /// The weights change a lot from update to update (large ||dw|| / ||w||).
    WeightsChangeLarge,
    /// A weight became NaN or infinite.
    WeightsNonfinite,
    /// A layer's error gradient norm stays above 1.0.
    GradNormAboveOne,
    /// A gradient value is NaN or infinite (often a step before the loss is).
    GradNonfinite,
    /// The global gradient norm jumps against its recent history.
    GradSpike,
    /// Gradient norms grow geometrically across layers (or across time steps).
    GradGrowthAcrossLayers,
    /// A recurrent weight's spectral radius or largest singular value is above 1.
    RecurrentRadiusAboveOne,
}

impl Sign {
    /// Every sign, classic ones first.
    pub const ALL: [Sign; 10] = [
        Sign::LossNotConverging,
        Sign::LossUnstable,
        Sign::LossNonfinite,
        Sign::WeightsChangeLarge,
        Sign::WeightsNonfinite,
        Sign::GradNormAboveOne,
        Sign::GradNonfinite,
        Sign::GradSpike,
        Sign::GradGrowthAcrossLayers,
        Sign::RecurrentRadiusAboveOne,
    ];

    /// The six classic signs, in checklist order.
    pub const CLASSIC: [Sign; 6] = [
        Sign::LossNotConverging,
        Sign::LossUnstable,
        Sign::LossNonfinite,
        Sign::WeightsChangeLarge,
        Sign::WeightsNonfinite,
        Sign::GradNormAboveOne,
    ];

    /// The snake_case name used in specs, logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Sign::LossNotConverging => "loss_not_converging",
            Sign::LossUnstable => "loss_unstable",
            Sign::LossNonfinite => "loss_nonfinite",
            Sign::WeightsChangeLarge => "weights_change_large",
            Sign::WeightsNonfinite => "weights_nonfinite",
            Sign::GradNormAboveOne => "grad_norm_above_one",
            Sign::GradNonfinite => "grad_nonfinite",
            Sign::GradSpike => "grad_spike",
            Sign::GradGrowthAcrossLayers => "grad_growth_across_layers",
            Sign::RecurrentRadiusAboveOne => "recurrent_radius_above_one",
        }
    }

    /// The sign's name in plain words, for checklists.
    pub fn describe(self) -> &'static str {
        match self {
            Sign::LossNotConverging => "the loss stays poor",
            Sign::LossUnstable => "the loss swings from update to update",
            Sign::LossNonfinite => "the loss became NaN or infinite",
            Sign::WeightsChangeLarge => "the weights change a lot at each update",
            Sign::WeightsNonfinite => "a weight became NaN or infinite",
            Sign::GradNormAboveOne => "a layer's error gradient stays above 1.0",
            Sign::GradNonfinite => "a gradient became NaN or infinite",
            Sign::GradSpike => "the gradient norm spikes",
            Sign::GradGrowthAcrossLayers => "gradients grow across layers or time steps",
            Sign::RecurrentRadiusAboveOne => "a recurrent weight's spectral radius is above 1",
        }
    }

    /// Whether this sign alone proves the run exploded (a non-finite loss, gradient or
    /// weight). The other signs are warnings: real, but also seen early in healthy runs.
    pub fn is_decisive(self) -> bool {
        matches!(
            self,
            Sign::LossNonfinite | Sign::GradNonfinite | Sign::WeightsNonfinite
        )
    }

    /// Whether this is one of the six classic signs.
    pub fn is_classic(self) -> bool {
        Sign::CLASSIC.contains(&self)
    }
}

impl std::fmt::Display for Sign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a detector saw: a sign, when, where, how much, against which threshold, in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The sign.
    pub sign: Sign,
    /// The step (optimiser update, from 1) at which it was seen.
    pub step: u64,
    /// The layer or tensor implicated, when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The measured value (non-finite values are written as strings in JSON).
    #[serde(with = "crate::float::lossy")]
    pub value: f64,
    /// The threshold it was compared with.
    #[serde(with = "crate::float::lossy")]
    pub threshold: f64,
    /// One sentence a person understands.
    pub message: String,
}

impl Finding {
    /// A finding with every field given.
    pub fn new(
        sign: Sign,
        step: u64,
        layer: Option<&str>,
        value: f64,
        threshold: f64,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            sign,
            step,
            layer: layer.map(str::to_string),
            value,
            threshold,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Sign::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: Sign = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(Sign::CLASSIC.iter().filter(|s| s.is_decisive()).count(), 2);
    }

    #[test]
    fn finding_serialises_non_finite_value() {
        let f = Finding::new(
            Sign::LossNonfinite,
            9,
            None,
            f64::INFINITY,
            0.0,
            "loss is inf",
        );
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"value\":\"inf\""), "{json}");
        let back: Finding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}
