//! The cures gradguard can prescribe and `compare` can run: one typed vocabulary.
//!
//! A [`Cure`] is either a remedy plugin (by kind, run with its documented example parameters)
//! or a structural change to the experiment (a smaller learning rate, an LSTM cell, ...).
//! The diagnosis prescribes `Cure` values; `compare` and the verification run them. How a
//! structural cure rewrites a spec lives where specs live (gradguard-pipeline's `cures`),
//! because this crate knows no model.
//!
//! Every cure has one text form, its [label](Cure::label), used by `--with`, in
//! `summary.json` and in the console: `clip_global_norm`, `standardise_targets`,
//! `truncated_bptt=20`, `cell=lstm`, `activation=relu`, `smaller_init_gain=1`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A recurrent cell, as a cure names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellName {
    /// The plain (Elman) RNN cell.
    Rnn,
    /// The LSTM cell.
    Lstm,
    /// The GRU cell.
    Gru,
}

impl CellName {
    /// `rnn`, `lstm` or `gru`.
    pub fn as_str(self) -> &'static str {
        match self {
            CellName::Rnn => "rnn",
            CellName::Lstm => "lstm",
            CellName::Gru => "gru",
        }
    }

    fn parse(s: &str) -> Option<CellName> {
        match s {
            "rnn" => Some(CellName::Rnn),
            "lstm" => Some(CellName::Lstm),
            "gru" => Some(CellName::Gru),
            _ => None,
        }
    }
}

/// One cure. Serialised as its [label](Cure::label).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cure {
    /// A remedy plugin of this kind, with its documented example parameters
    /// (e.g. `clip_global_norm` with `max_norm = 1.0`).
    Remedy(String),
    /// Standardise the regression targets (and inputs far from unit scale) with training-set
    /// statistics.
    StandardiseTargets,
    /// A smaller initialisation gain: set to `to` when given, else every gain above 1 becomes
    /// 1 (the standard form) and gains of 1 or less are halved.
    SmallerInitGain {
        /// The new gain, when given.
        to: Option<f64>,
    },
    /// The learning rate divided by 10.
    SmallerLr,
    /// Half the hidden layers (MLP), or one layer (stacked recurrent).
    FewerLayers,
    /// Half the batch size.
    SmallerBatch,
    /// Truncated backpropagation through time with this window (time steps).
    TruncatedBptt {
        /// The window.
        window: usize,
    },
    /// Another recurrent cell.
    Cell {
        /// The new cell.
        to: CellName,
    },
    /// Another activation for every MLP hidden layer (a name the model spec accepts, e.g.
    /// `relu`, `tanh`, `sigmoid`).
    Activation {
        /// The activation's name.
        to: String,
    },
}

/// The names of the structural cures (everything but remedy kinds), as `--with` takes them.
pub const STRUCTURAL_CURES: [&str; 8] = [
    "standardise_targets",
    "smaller_init_gain",
    "smaller_lr",
    "fewer_layers",
    "smaller_batch",
    "truncated_bptt",
    "cell",
    "activation",
];

/// The default window of `truncated_bptt` without a value.
pub const DEFAULT_BPTT_WINDOW: usize = 20;

impl Cure {
    /// The cure's kind: the remedy kind, or the structural cure's name.
    pub fn kind(&self) -> &str {
        match self {
            Cure::Remedy(k) => k,
            Cure::StandardiseTargets => "standardise_targets",
            Cure::SmallerInitGain { .. } => "smaller_init_gain",
            Cure::SmallerLr => "smaller_lr",
            Cure::FewerLayers => "fewer_layers",
            Cure::SmallerBatch => "smaller_batch",
            Cure::TruncatedBptt { .. } => "truncated_bptt",
            Cure::Cell { .. } => "cell",
            Cure::Activation { .. } => "activation",
        }
    }

    /// The one text form: `kind` or `kind=value`.
    pub fn label(&self) -> String {
        match self {
            Cure::TruncatedBptt { window } => format!("truncated_bptt={window}"),
            Cure::Cell { to } => format!("cell={}", to.as_str()),
            Cure::Activation { to } => format!("activation={to}"),
            Cure::SmallerInitGain { to: Some(g) } => format!("smaller_init_gain={g}"),
            other => other.kind().to_string(),
        }
    }

    /// Whether this is a remedy plugin (as opposed to a change of the experiment).
    pub fn is_remedy(&self) -> bool {
        matches!(self, Cure::Remedy(_))
    }

    /// Parses a label (`kind` or `kind=value`). A name that is not a structural cure is taken
    /// as a remedy kind; whether that kind exists is for the caller to check against the
    /// registry. Errors say what was expected.
    pub fn parse(label: &str) -> Result<Cure, String> {
        let label = label.trim();
        let (kind, value) = match label.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (label, None),
        };
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "`{label}` is not a cure: expected a snake_case name, optionally `=value`"
            ));
        }
        let no_value = |c: Cure| match value {
            None => Ok(c),
            Some(_) => Err(format!("`{kind}` takes no value (got `{label}`)")),
        };
        match kind {
            "standardise_targets" => no_value(Cure::StandardiseTargets),
            "smaller_lr" => no_value(Cure::SmallerLr),
            "fewer_layers" => no_value(Cure::FewerLayers),
            "smaller_batch" => no_value(Cure::SmallerBatch),
            "smaller_init_gain" => match value {
                None => Ok(Cure::SmallerInitGain { to: None }),
                Some(v) => match v.parse::<f64>() {
                    Ok(g) if g.is_finite() && g > 0.0 => Ok(Cure::SmallerInitGain { to: Some(g) }),
                    _ => Err(format!(
                        "`{label}`: the gain must be a finite number > 0 (got `{v}`)"
                    )),
                },
            },
            "truncated_bptt" => match value {
                None => Ok(Cure::TruncatedBptt {
                    window: DEFAULT_BPTT_WINDOW,
                }),
                Some(v) => match v.parse::<usize>() {
                    Ok(w) if w > 0 => Ok(Cure::TruncatedBptt { window: w }),
                    _ => Err(format!(
                        "`{label}`: the window must be a whole number >= 1 (got `{v}`)"
                    )),
                },
            },
            "cell" => {
                let v = value.unwrap_or("lstm");
                CellName::parse(v).map(|to| Cure::Cell { to }).ok_or_else(|| {
                    format!("`{label}`: expected cell=rnn, cell=lstm or cell=gru (got `{v}`)")
                })
            }
            "activation" => {
                let v = value.unwrap_or("relu");
                if v.is_empty() {
                    return Err(format!("`{label}`: expected an activation name"));
                }
                Ok(Cure::Activation { to: v.to_string() })
            }
            _ => match value {
                None => Ok(Cure::Remedy(kind.to_string())),
                Some(_) => Err(format!(
                    "`{label}`: a remedy kind takes no `=value` (its example parameters are used; write a spec for others)"
                )),
            },
        }
    }
}

impl fmt::Display for Cure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl From<Cure> for String {
    fn from(c: Cure) -> String {
        c.label()
    }
}

impl TryFrom<String> for Cure {
    type Error = String;
    fn try_from(s: String) -> Result<Cure, String> {
        // Older summaries wrote `cell { to = "lstm" }`.
        if let Some(rest) = s.strip_prefix("cell {") {
            let to = rest.trim_end_matches('}').trim();
            let to = to
                .trim_start_matches("to")
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            return Cure::parse(&format!("cell={to}"));
        }
        Cure::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let all = [
            Cure::Remedy("clip_global_norm".into()),
            Cure::StandardiseTargets,
            Cure::SmallerInitGain { to: None },
            Cure::SmallerInitGain { to: Some(0.5) },
            Cure::SmallerLr,
            Cure::FewerLayers,
            Cure::SmallerBatch,
            Cure::TruncatedBptt { window: 7 },
            Cure::Cell { to: CellName::Gru },
            Cure::Activation { to: "tanh".into() },
        ];
        for c in all {
            assert_eq!(Cure::parse(&c.label()), Ok(c.clone()), "{}", c.label());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.label()));
            assert_eq!(serde_json::from_str::<Cure>(&json).unwrap(), c);
        }
    }

    #[test]
    fn defaults_and_errors() {
        assert_eq!(
            Cure::parse("truncated_bptt"),
            Ok(Cure::TruncatedBptt { window: 20 })
        );
        assert_eq!(Cure::parse("cell"), Ok(Cure::Cell { to: CellName::Lstm }));
        assert!(Cure::parse("truncated_bptt=0")
            .unwrap_err()
            .contains(">= 1"));
        assert!(Cure::parse("cell=transformer")
            .unwrap_err()
            .contains("cell=gru"));
        assert!(Cure::parse("smaller_lr=3")
            .unwrap_err()
            .contains("no value"));
        assert!(Cure::parse("smaller_init_gain=-1").is_err());
        assert!(Cure::parse("Clip Norm").is_err());
        assert!(Cure::parse("clip_norm=2").is_err());
        assert_eq!(Cure::parse(" l2 "), Ok(Cure::Remedy("l2".into())));
        // the older text form of the cell cure still reads
        let old: Cure = serde_json::from_str("\"cell { to = \\\"lstm\\\" }\"").unwrap();
        assert_eq!(old, Cure::Cell { to: CellName::Lstm });
    }
}
