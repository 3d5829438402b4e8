//! Structural cures: rewrites of an experiment spec (used by `compare` and named by
//! prescriptions). Each returns a new spec or says why it does not apply.
//!
//! | cure | rewrite |
//! |---|---|
//! | `fewer_layers` | an MLP keeps the first half of its hidden layers (at least one); a stacked recurrent model keeps one layer |
//! | `smaller_batch` | `train.batch_size` halved (at least 1) |
//! | `truncated_bptt { window }` | `train.bptt = { window }` (recurrent models only; default window 20) |
//! | `activation { to }` | every MLP hidden activation becomes `to` (default `relu`) |
//! | `cell { to }` | a recurrent model's cell becomes `to` (default `lstm`) |

use gradguard_models::spec::{Activation, BpttSpec, ModelSpec};
use gradguard_models::CellKind;
use serde::{Deserialize, Serialize};

use crate::spec::ExperimentSpec;

/// A structural cure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cure {
    /// Half the hidden layers (MLP) or one layer (recurrent).
    FewerLayers,
    /// Half the batch size.
    SmallerBatch,
    /// Truncated backpropagation through time with this window.
    TruncatedBptt {
        /// Window length in time steps. Default 20.
        #[serde(default = "default_window")]
        window: usize,
    },
    /// Another activation for every MLP hidden layer.
    Activation {
        /// The new activation. Default relu.
        #[serde(default = "default_activation")]
        to: Activation,
    },
    /// Another recurrent cell.
    Cell {
        /// The new cell. Default lstm.
        #[serde(default = "default_cell")]
        to: CellKind,
    },
}

fn default_window() -> usize {
    20
}
fn default_activation() -> Activation {
    Activation::Relu
}
fn default_cell() -> CellKind {
    CellKind::Lstm
}

/// The names of the structural cures, as `--with` accepts them.
pub const CURE_NAMES: [&str; 5] = [
    "fewer_layers",
    "smaller_batch",
    "truncated_bptt",
    "activation",
    "cell",
];

impl Cure {
    /// The cure's kind name.
    pub fn name(&self) -> &'static str {
        match self {
            Cure::FewerLayers => "fewer_layers",
            Cure::SmallerBatch => "smaller_batch",
            Cure::TruncatedBptt { .. } => "truncated_bptt",
            Cure::Activation { .. } => "activation",
            Cure::Cell { .. } => "cell",
        }
    }

    /// A short label, e.g. `cell=lstm`, `truncated_bptt=20`.
    pub fn label(&self) -> String {
        match self {
            Cure::FewerLayers | Cure::SmallerBatch => self.name().to_string(),
            Cure::TruncatedBptt { window } => format!("truncated_bptt={window}"),
            Cure::Activation { to } => format!("activation={}", to.name()),
            Cure::Cell { to } => format!(
                "cell={}",
                serde_json::to_value(to)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        }
    }

    /// The cure by name with its defaults, or with its one parameter given after `=` (the
    /// same form as [`Cure::label`]): `truncated_bptt=10`, `activation=tanh`, `cell=gru`.
    pub fn by_name(name: &str) -> Option<Cure> {
        if let Some((kind, value)) = name.split_once('=') {
            let (kind, value) = (kind.trim(), value.trim());
            let quoted = serde_json::Value::String(value.to_string());
            return match kind {
                "truncated_bptt" => value
                    .parse()
                    .ok()
                    .filter(|w| *w > 0)
                    .map(|window| Cure::TruncatedBptt { window }),
                "activation" => serde_json::from_value(quoted)
                    .ok()
                    .map(|to| Cure::Activation { to }),
                "cell" => serde_json::from_value(quoted)
                    .ok()
                    .map(|to| Cure::Cell { to }),
                _ => None,
            };
        }
        Some(match name {
            "fewer_layers" => Cure::FewerLayers,
            "smaller_batch" => Cure::SmallerBatch,
            "truncated_bptt" => Cure::TruncatedBptt {
                window: default_window(),
            },
            "activation" => Cure::Activation {
                to: default_activation(),
            },
            "cell" => Cure::Cell { to: default_cell() },
            _ => return None,
        })
    }

    /// Whether the cure changes anything for this spec.
    pub fn applies_to(&self, spec: &ExperimentSpec) -> bool {
        self.apply(spec).is_ok()
    }

    /// Rewrites `spec`; errors say why the cure does not apply.
    pub fn apply(&self, spec: &ExperimentSpec) -> Result<ExperimentSpec, String> {
        let mut out = spec.try_clone().map_err(|e| e.to_string())?;
        match (self, &mut out.model) {
            (Cure::FewerLayers, ModelSpec::Mlp(m)) => {
                if m.hidden.len() <= 1 {
                    return Err("the MLP has one hidden layer or none".into());
                }
                let keep = (m.hidden.len() / 2).max(1);
                m.hidden.truncate(keep);
                if let Some(a) = m.activations.as_mut() {
                    a.truncate(keep);
                }
            }
            (Cure::FewerLayers, ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r)) => {
                if r.layers <= 1 {
                    return Err("the recurrent model has one layer".into());
                }
                r.layers = 1;
            }
            (Cure::SmallerBatch, _) => {
                if out.train.batch_size <= 1 {
                    return Err("the batch size is already 1".into());
                }
                out.train.batch_size = (out.train.batch_size / 2).max(1);
            }
            (Cure::TruncatedBptt { window }, m) => {
                if !m.is_recurrent() {
                    return Err("truncated BPTT needs a recurrent model".into());
                }
                out.train.bptt = Some(BpttSpec { window: *window });
            }
            (Cure::Activation { to }, ModelSpec::Mlp(m)) => {
                if m.layer_activations().iter().all(|a| a == to) {
                    return Err("every layer already uses that activation".into());
                }
                m.activation = Some(*to);
                m.activations = None;
            }
            (Cure::Activation { .. }, _) => return Err("activation applies to MLPs".into()),
            (Cure::Cell { to }, model) => {
                let r = match model {
                    ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => r.clone(),
                    ModelSpec::Mlp(_) => return Err("cell applies to recurrent models".into()),
                };
                let mut r = r;
                let new = match to {
                    CellKind::Rnn => {
                        r.forget_bias = None;
                        ModelSpec::Rnn(r)
                    }
                    CellKind::Lstm => ModelSpec::Lstm(r),
                    CellKind::Gru => {
                        r.forget_bias = None;
                        ModelSpec::Gru(r)
                    }
                };
                if new.kind_name() == model.kind_name() {
                    return Err("the model already uses that cell".into());
                }
                *model = new;
            }
        }
        out.name = format!("{}+{}", spec.name, self.label());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_error::SpecFormat;
    use std::path::Path;

    fn spec(model: &str, train: &str) -> ExperimentSpec {
        let text = format!("name = \"s\"\n[model]\n{model}\n[task]\nkind = \"adding\"\nseq_len = 20\n[train]\n{train}\n");
        let text = if model.contains("mlp") {
            text.replace("kind = \"adding\"\nseq_len = 20", "kind = \"regression\"")
        } else {
            text
        };
        ExperimentSpec::parse(&text, SpecFormat::Toml, Path::new("<t>"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fewer_layers_halves_an_mlp_and_flattens_a_stack() {
        let s = spec(
            "kind = \"mlp\"\nhidden = [8, 8, 8, 8, 8]\nactivation = \"tanh\"",
            "batch_size = 8",
        );
        let out = Cure::FewerLayers.apply(&s).unwrap();
        match out.model {
            ModelSpec::Mlp(m) => assert_eq!(m.hidden, vec![8, 8]),
            _ => panic!("not an mlp"),
        }
        assert_eq!(out.name, "s+fewer_layers");
        let s = spec("kind = \"mlp\"\nhidden = [8]", "batch_size = 8");
        assert!(Cure::FewerLayers.apply(&s).is_err());
        let s = spec("kind = \"lstm\"\nhidden = 4\nlayers = 3", "batch_size = 8");
        match Cure::FewerLayers.apply(&s).unwrap().model {
            ModelSpec::Lstm(r) => assert_eq!(r.layers, 1),
            _ => panic!("not an lstm"),
        }
    }

    #[test]
    fn smaller_batch_and_truncated_bptt() {
        let s = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 9");
        assert_eq!(Cure::SmallerBatch.apply(&s).unwrap().train.batch_size, 4);
        let out = Cure::TruncatedBptt { window: 5 }.apply(&s).unwrap();
        assert_eq!(out.train.bptt, Some(BpttSpec { window: 5 }));
        let s = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 1");
        assert!(Cure::SmallerBatch.apply(&s).is_err());
        let mlp = spec("kind = \"mlp\"\nhidden = [4]", "batch_size = 8");
        assert!(Cure::TruncatedBptt { window: 5 }.apply(&mlp).is_err());
    }

    #[test]
    fn activation_and_cell() {
        let s = spec(
            "kind = \"mlp\"\nhidden = [4, 4]\nactivation = \"sigmoid\"",
            "batch_size = 8",
        );
        let out = Cure::Activation {
            to: Activation::Relu,
        }
        .apply(&s)
        .unwrap();
        match out.model {
            ModelSpec::Mlp(m) => assert_eq!(
                m.layer_activations(),
                vec![Activation::Relu, Activation::Relu]
            ),
            _ => panic!("not an mlp"),
        }
        let relu = spec(
            "kind = \"mlp\"\nhidden = [4]\nactivation = \"relu\"",
            "batch_size = 8",
        );
        assert!(Cure::Activation {
            to: Activation::Relu
        }
        .apply(&relu)
        .is_err());
        let rnn = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 8");
        let out = Cure::Cell { to: CellKind::Lstm }.apply(&rnn).unwrap();
        assert_eq!(out.model.kind_name(), "lstm");
        assert_eq!(out.name, "s+cell=lstm");
        assert!(Cure::Cell { to: CellKind::Rnn }.apply(&rnn).is_err());
        assert!(Cure::Cell { to: CellKind::Lstm }.apply(&relu).is_err());
        // The rewritten specs are still valid specs.
        out.validate(Path::new("<t>")).unwrap();
    }

    #[test]
    fn names_round_trip() {
        for name in CURE_NAMES {
            let c = Cure::by_name(name).unwrap();
            assert_eq!(c.name(), name);
        }
        assert!(Cure::by_name("more_layers").is_none());
        assert_eq!(
            Cure::by_name("truncated_bptt=7"),
            Some(Cure::TruncatedBptt { window: 7 })
        );
        assert_eq!(
            Cure::by_name("activation=tanh"),
            Some(Cure::Activation {
                to: Activation::Tanh
            })
        );
        assert_eq!(
            Cure::by_name("cell=gru"),
            Some(Cure::Cell { to: CellKind::Gru })
        );
        assert!(Cure::by_name("truncated_bptt=0").is_none());
        assert!(Cure::by_name("cell=transformer").is_none());
        for c in [
            Cure::TruncatedBptt { window: 3 },
            Cure::Activation {
                to: Activation::Sigmoid,
            },
            Cure::Cell { to: CellKind::Gru },
        ] {
            assert_eq!(Cure::by_name(&c.label()), Some(c));
        }
    }
}
