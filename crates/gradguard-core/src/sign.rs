//! Signs of exploding gradients, and the findings that report them.
//!
//! Ten signs are built in. A plugin may declare its own with [`declare_sign!`](crate::declare_sign)
//! (a name and a description): its findings then carry [`Sign::Declared`], and the sign
//! appears in the diagnosis' checklist, in summary.json and in report.html like a built-in
//! one. A declared sign is a warning: it never decides the verdict alone (only the
//! non-finite signs do, see [`Sign::is_decisive`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sign a plugin declares: its snake_case name (in specs, logs and summaries) and what it
/// means in plain words (for checklists). See [`declare_sign!`](crate::declare_sign).
#[derive(Debug)]
pub struct SignInfo {
    /// The snake_case name, unique among all signs.
    pub name: &'static str,
    /// What it means, in plain words (e.g. "the loss stopped moving").
    pub description: &'static str,
}

/// A registered declared sign (what [`declare_sign!`](crate::declare_sign) submits).
#[derive(Debug)]
pub struct DeclaredSign(pub &'static SignInfo);

inventory::collect!(DeclaredSign);

/// Declares a sign for a plugin's findings: a `static` [`SignInfo`] named `$id`, registered
/// so that summaries and logs that name it can be read back. Use it as `Sign::Declared(&$id)`.
///
/// ```
/// use gradguard_core::{declare_sign, Finding, Sign};
/// declare_sign!(LOSS_PLATEAU, "loss_plateau", "the loss stopped moving");
/// let f = Finding::new(Sign::Declared(&LOSS_PLATEAU), 7, None, 1.0, 0.5, "flat for 50 steps");
/// assert_eq!(f.sign.as_str(), "loss_plateau");
/// assert_eq!(Sign::from_name("loss_plateau"), Some(Sign::Declared(&LOSS_PLATEAU)));
/// ```
///
/// A name equal to a built-in sign's, or declared twice, is refused by
/// [`Sign::check_declared`] (which `gradguard plugins` and the registration tests call).
#[macro_export]
macro_rules! declare_sign {
    ($id:ident, $name:expr, $description:expr) => {
        /// A sign declared with `declare_sign!`.
        pub static $id: $crate::SignInfo = $crate::SignInfo {
            name: $name,
            description: $description,
        };
        $crate::__private::inventory::submit! { $crate::DeclaredSign(&$id) }
    };
}

/// A sign of exploding gradients. The first six are the classic checklist; the next four
/// are finer signs: where a non-finite value first appears, and where an explosion starts;
/// [`Sign::Declared`] is a plugin's own. Serialised as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A sign a plugin declared with [`declare_sign!`](crate::declare_sign).
    Declared(&'static SignInfo),
}

impl PartialEq for SignInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for SignInfo {}
impl std::hash::Hash for SignInfo {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.name.hash(h);
    }
}
impl PartialOrd for SignInfo {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SignInfo {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(other.name)
    }
}

impl Serialize for Sign {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sign {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Sign::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Sign::all().iter().map(|s| s.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown sign `{name}`, expected one of: {}",
                known.join(", ")
            ))
        })
    }
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

    /// The signs plugins declared, by name (the first of a name, and none named like a
    /// built-in sign: [`Sign::check_declared`] reports those).
    pub fn declared() -> Vec<Sign> {
        let mut v: Vec<&'static SignInfo> = inventory::iter::<DeclaredSign>
            .into_iter()
            .map(|d| d.0)
            .filter(|i| !Sign::ALL.iter().any(|s| s.as_str() == i.name))
            .collect();
        v.sort();
        v.dedup();
        v.into_iter().map(Sign::Declared).collect()
    }

    /// Every sign: the built-in ones ([`Sign::ALL`]), then the declared ones by name.
    pub fn all() -> Vec<Sign> {
        let mut v = Sign::ALL.to_vec();
        v.extend(Sign::declared());
        v
    }

    /// The sign called `name` (built-in or declared).
    pub fn from_name(name: &str) -> Option<Sign> {
        Sign::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == name)
            .or_else(|| Sign::declared().into_iter().find(|s| s.as_str() == name))
    }

    /// Errors naming every declared sign whose name is a built-in sign's, declared twice
    /// (with different descriptions or from two places), or not snake_case.
    pub fn check_declared() -> Result<(), String> {
        let mut problems = Vec::new();
        let mut seen: Vec<&'static SignInfo> = Vec::new();
        for d in inventory::iter::<DeclaredSign> {
            let i = d.0;
            if Sign::ALL.iter().any(|s| s.as_str() == i.name) {
                problems.push(format!("`{}` is a built-in sign's name", i.name));
            } else if seen
                .iter()
                .any(|o| o.name == i.name && !std::ptr::eq(*o, i))
            {
                problems.push(format!("`{}` is declared twice", i.name));
            }
            if i.name.is_empty()
                || !i
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.push(format!("`{}` is not a snake_case name", i.name));
            }
            seen.push(i);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("declared signs: {}", problems.join("; ")))
        }
    }

    /// The snake_case name used in specs, logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Sign::Declared(info) => info.name,
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
            Sign::Declared(info) => info.description,
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

    crate::declare_sign!(TEST_PLATEAU, "test_plateau", "the loss stopped moving");

    #[test]
    fn declared_signs_round_trip_and_join_the_list() {
        let s = Sign::Declared(&TEST_PLATEAU);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"test_plateau\"");
        let back: Sign = serde_json::from_str("\"test_plateau\"").unwrap();
        assert_eq!(back, s);
        assert_eq!(s.describe(), "the loss stopped moving");
        assert!(!s.is_decisive() && !s.is_classic());
        let all = Sign::all();
        assert_eq!(&all[..10], &Sign::ALL);
        assert!(all.contains(&s));
        assert_eq!(Sign::check_declared(), Ok(()));
        let e = serde_json::from_str::<Sign>("\"no_such_sign\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown sign `no_such_sign`") && e.contains("test_plateau"),
            "{e}"
        );
        // Ordered after every built-in sign... by name among declared ones.
        assert!(Sign::RecurrentRadiusAboveOne < s);
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
