//! The `model` part of a spec: the network ([`ModelSpec`]) with its activations ([`Activation`])
//! and initialisers ([`InitSpec`]).

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{one, one_usize};

// ---------------------------------------------------------------------------------------------
// Activations and initialisers
// ---------------------------------------------------------------------------------------------

/// A point-wise activation. Written as a bare name (`"relu"`, `"leaky_relu"` with its default
/// slope) or as a table with parameters (`{ kind = "leaky_relu", slope = 0.1 }`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `slope * x`. `slope` defaults to 0.01 (PyTorch's default) and must be >= 0.
    LeakyRelu {
        /// Slope for negative inputs.
        slope: f32,
    },
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`. `alpha` defaults to 1.0 and must be > 0.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `x` (no activation).
    Identity,
}

impl Activation {
    /// The snake_case name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Identity => "identity",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu { slope: 0.01 },
            "elu" => Activation::Elu { alpha: 1.0 },
            "identity" | "linear" | "none" => Activation::Identity,
            _ => return None,
        })
    }
}

const ACTIVATION_NAMES: &[&str] = &["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"];

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ActivationTable {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu {
        #[serde(default = "default_slope")]
        slope: f32,
    },
    Elu {
        #[serde(default = "default_alpha")]
        alpha: f32,
    },
    #[serde(alias = "linear", alias = "none")]
    Identity,
}

fn default_slope() -> f32 {
    0.01
}
fn default_alpha() -> f32 {
    1.0
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Activation;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an activation name (sigmoid, tanh, relu, leaky_relu, elu, identity) or a table with `kind`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Activation, E> {
                Activation::from_name(v).ok_or_else(|| E::unknown_variant(v, ACTIVATION_NAMES))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Activation, A::Error> {
                let t = ActivationTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    ActivationTable::Sigmoid => Activation::Sigmoid,
                    ActivationTable::Tanh => Activation::Tanh,
                    ActivationTable::Relu => Activation::Relu,
                    ActivationTable::LeakyRelu { slope } => Activation::LeakyRelu { slope },
                    ActivationTable::Elu { alpha } => Activation::Elu { alpha },
                    ActivationTable::Identity => Activation::Identity,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How a weight matrix of shape `[fan_out, fan_in]` is initialised (biases start at zero).
///
/// `gain` multiplies the standard form of every scheme: gain 1 is the scheme as Keras and
/// PyTorch define it, and gain `g` multiplies the scale (bound or standard deviation) by `g`,
/// so the variance by `g²`. The normal schemes are untruncated, as PyTorch's
/// `xavier_normal_` / `kaiming_normal_` (Keras truncates its `*_normal` initialisers at two
/// standard deviations and rescales them; we do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// U(-a, a), `a = gain * sqrt(6 / (fan_in + fan_out))`, variance `a² / 3`
    /// (Keras' default `glorot_uniform`, PyTorch `xavier_uniform_`).
    GlorotUniform,
    /// N(0, s²), `s = gain * sqrt(2 / (fan_in + fan_out))`, untruncated as PyTorch's
    /// `xavier_normal_` (Keras' `glorot_normal` truncates at 2s; we follow PyTorch).
    GlorotNormal,
    /// U(-a, a), `a = gain * sqrt(6 / fan_in)`, variance `2 * gain² / fan_in`: Keras'
    /// `he_uniform` and PyTorch's `kaiming_uniform_(nonlinearity = "relu")`.
    ///
    /// Before this definition `he_uniform` meant `a = gain * sqrt(3 / fan_in)`: an old spec
    /// with gain `g` keeps its meaning with gain `g / sqrt(2)`.
    HeUniform,
    /// N(0, s²), `s = gain * sqrt(2 / fan_in)`, untruncated (PyTorch
    /// `kaiming_normal_(nonlinearity = "relu")`; Keras' `he_normal` truncates).
    HeNormal,
    /// U(-a, a), `a = gain * sqrt(3 / fan_in)`, variance `gain² / fan_in` (Keras'
    /// `lecun_uniform`).
    LecunUniform,
    /// N(0, s²), `s = gain * sqrt(1 / fan_in)`, untruncated (Keras' `lecun_normal`
    /// truncates; we do not).
    LecunNormal,
    /// A (semi-)orthogonal matrix times `gain`, as PyTorch's `orthogonal_` (QR of a Gaussian
    /// matrix, signs fixed by diag(R)). For recurrent weights each gate's H×H block is
    /// orthogonal on its own, so every block has spectral radius exactly `gain`.
    Orthogonal,
    /// N(0, (gain * std)²), untruncated, with `std` from the [`InitSpec`].
    Normal,
}

/// An initialiser: scheme, gain and (for `normal`) the standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// The scheme.
    pub scheme: InitScheme,
    /// Multiplies the scale of the scheme. Default 1.0.
    #[serde(default = "one")]
    pub gain: f64,
    /// Standard deviation for `normal`. Default 0.01; ignored by the other schemes.
    #[serde(default = "default_std")]
    pub std: f64,
}

fn default_std() -> f64 {
    0.01
}

impl InitSpec {
    /// `glorot_uniform` with gain 1 (the default for input weights, as Keras).
    pub fn glorot() -> Self {
        InitSpec {
            scheme: InitScheme::GlorotUniform,
            gain: 1.0,
            std: 0.01,
        }
    }
    /// `orthogonal` with gain 1 (the default for recurrent weights, as Keras).
    pub fn orthogonal() -> Self {
        InitSpec {
            scheme: InitScheme::Orthogonal,
            gain: 1.0,
            std: 0.01,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The network. Input and output sizes come from the task; an output head (a linear layer,
/// no activation) maps the last hidden layer to the task's output size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// A multilayer perceptron.
    Mlp(MlpSpec),
    /// Stacked Elman RNN layers (`h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`).
    Rnn(RecurrentSpec),
    /// Stacked LSTM layers (PyTorch gate order i, f, g, o).
    Lstm(RecurrentSpec),
    /// Stacked GRU layers (PyTorch gate order r, z, n).
    Gru(RecurrentSpec),
}

/// A multilayer perceptron: `hidden` layer sizes, each followed by its activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Sizes of the hidden layers, input side first (may be empty: a linear model). Required.
    pub hidden: Vec<usize>,
    /// One activation for every hidden layer. Default `relu` when `activations` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// One activation per hidden layer (instead of `activation`). Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Vec<Activation>>,
    /// Initialiser of the hidden layers' weight matrices, and of the head's when
    /// `output_init` is absent. Default `{ scheme = "glorot_uniform", gain = 1.0 }`.
    #[serde(default = "InitSpec::glorot")]
    pub init: InitSpec,
    /// Initialiser of the output head's weight matrix. Default: absent, the head uses
    /// `init` (so a spec without it keeps its meaning). Keras' `Dense` default is
    /// `{ scheme = "glorot_uniform", gain = 1.0 }`: a Keras model with a He-initialised hidden
    /// layer and a default output layer is `init = he_uniform` plus
    /// `output_init = glorot_uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_init: Option<InitSpec>,
}

impl MlpSpec {
    /// The activation of each hidden layer.
    pub fn layer_activations(&self) -> Vec<Activation> {
        match (&self.activations, self.activation) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => vec![a; self.hidden.len()],
            (None, None) => vec![Activation::Relu; self.hidden.len()],
        }
    }
}

/// Stacked recurrent layers of one cell kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentSpec {
    /// Hidden size of every layer. Required.
    pub hidden: usize,
    /// Number of stacked layers. Default 1.
    #[serde(default = "one_usize")]
    pub layers: usize,
    /// Initialiser of the input weights `W_ih`, and of the head when `output_init` is absent.
    /// Default `glorot_uniform`, gain 1.
    #[serde(default = "InitSpec::glorot")]
    pub init: InitSpec,
    /// Initialiser of the output head's weight matrix. Default: absent, the head uses `init`
    /// (so a spec without it keeps its meaning). Keras' `Dense` default is `glorot_uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_init: Option<InitSpec>,
    /// Initialiser of the recurrent weights `W_hh`, per gate block. Default `orthogonal`,
    /// gain 1: spectral radius 1. `{ scheme = "orthogonal", gain = 4.0 }` makes a plain RNN
    /// explode.
    #[serde(default = "InitSpec::orthogonal")]
    pub recurrent_init: InitSpec,
    /// LSTM only: the value of the forget-gate bias (entries H..2H of `bias_ih`; `bias_hh`
    /// stays 0). Default 1.0 (Keras' `unit_forget_bias`); rejected for rnn and gru.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_bias: Option<f32>,
}

impl ModelSpec {
    /// `mlp`, `rnn`, `lstm` or `gru`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelSpec::Mlp(_) => "mlp",
            ModelSpec::Rnn(_) => "rnn",
            ModelSpec::Lstm(_) => "lstm",
            ModelSpec::Gru(_) => "gru",
        }
    }

    /// Whether the model reads sequences step by step (rnn, lstm, gru).
    pub fn is_recurrent(&self) -> bool {
        !matches!(self, ModelSpec::Mlp(_))
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::test_util::parse_model;
    use crate::spec::*;
    #[test]
    fn mlp_with_activation_forms() {
        let m = parse_model(
            "kind = \"mlp\"\nhidden = [4, 3]\nactivations = [\"tanh\", { kind = \"leaky_relu\", slope = 0.2 }]\n",
        )
        .unwrap();
        let ModelSpec::Mlp(m) = m else {
            panic!("not mlp")
        };
        assert_eq!(
            m.layer_activations(),
            vec![Activation::Tanh, Activation::LeakyRelu { slope: 0.2 }]
        );
        assert_eq!(m.init, InitSpec::glorot());
        let m = parse_model("kind = \"mlp\"\nhidden = [2]\nactivation = \"elu\"\n").unwrap();
        let ModelSpec::Mlp(m) = m else {
            panic!("not mlp")
        };
        assert_eq!(m.layer_activations(), vec![Activation::Elu { alpha: 1.0 }]);
    }

    #[test]
    fn unknown_keys_and_names_are_errors() {
        let e = parse_model("kind = \"mlp\"\nhidden = [2]\nactivaton = \"relu\"\n").unwrap_err();
        assert!(e.contains("activaton"), "{e}");
        let e = parse_model("kind = \"mlp\"\nhidden = [2]\nactivation = \"swish\"\n").unwrap_err();
        assert!(e.contains("swish"), "{e}");
        let e = parse_model("kind = \"lstm\"\nhidden = 8\nforget = 1.0\n").unwrap_err();
        assert!(e.contains("forget"), "{e}");
        let e =
            toml::from_str::<TrainSpec>("optimizer = { kind = \"adam\", lr = 0.1, beta = 0.9 }")
                .unwrap_err();
        assert!(e.to_string().contains("beta"), "{e}");
    }

    #[test]
    fn output_init_is_optional_and_validated() {
        let m = parse_model("kind = \"mlp\"\nhidden = [4]\n").unwrap();
        let ModelSpec::Mlp(mlp) = &m else {
            panic!("not mlp")
        };
        assert_eq!(mlp.output_init, None);
        // absent stays absent when written back
        let text = toml::to_string(&m).unwrap();
        assert!(!text.contains("output_init"), "{text}");
        let m = parse_model(
            "kind = \"mlp\"\nhidden = [4]\noutput_init = { scheme = \"glorot_uniform\", gain = -1.0 }\n",
        )
        .unwrap();
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("model.output_init.gain must be"), "{e}");
        let r = parse_model(
            "kind = \"gru\"\nhidden = 4\noutput_init = { scheme = \"normal\", std = -0.1 }\n",
        )
        .unwrap();
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("model.output_init.std must be"), "{e}");
        for scheme in [
            "glorot_normal",
            "lecun_uniform",
            "lecun_normal",
            "he_uniform",
        ] {
            let m = parse_model(&format!(
                "kind = \"mlp\"\nhidden = [4]\ninit = {{ scheme = \"{scheme}\" }}\n"
            ));
            assert!(m.is_ok(), "{scheme}: {m:?}");
        }
    }
}
