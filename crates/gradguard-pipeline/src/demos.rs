//! The embedded demos (`gradguard demo --list`).

use std::path::Path;

use crate::spec::ExperimentSpec;
use crate::spec_error::{SpecError, SpecFormat};

/// One embedded demo.
#[derive(Clone, Copy, Debug)]
pub struct Demo {
    /// Its name.
    pub name: &'static str,
    /// What it shows, one line.
    pub summary: &'static str,
    /// The spec (TOML).
    pub spec: &'static str,
    /// The variants `compare` runs for it (remedy kinds and structural cures).
    pub compare_with: &'static [&'static str],
}

impl Demo {
    /// The parsed spec.
    pub fn spec(&self) -> Result<ExperimentSpec, SpecError> {
        ExperimentSpec::parse(
            self.spec,
            SpecFormat::Toml,
            Path::new(&format!("<demo:{}>", self.name)),
        )
    }
}

/// Every demo, the tour's first.
pub const DEMOS: &[Demo] = &[
    Demo {
        name: "regression-sgd",
        summary: "unscaled regression targets + SGD with momentum (the classic Keras setup): NaN within the first epoch; clipping or standardising the targets cures it",
        spec: include_str!("../demos/regression-sgd.toml"),
        compare_with: &[
            "clip_global_norm",
            "clip_norm",
            "clip_value",
            "standardise_targets",
            "smaller_lr",
            "l2",
            "smaller_batch",
        ],
    },
    Demo {
        name: "rnn-long-sequences",
        summary: "plain RNN, 100 steps of full BPTT: W_hh is thrown to a huge radius without any NaN; clipping, truncated BPTT and an LSTM compared",
        spec: include_str!("../demos/rnn-long-sequences.toml"),
        compare_with: &["clip_global_norm", "truncated_bptt", "cell"],
    },
    Demo {
        name: "deep-mlp",
        summary: "10-layer ReLU MLP with init gain 2.5: the error signal grows layer by layer; depth x activation compared",
        spec: include_str!("../demos/deep-mlp.toml"),
        compare_with: &["fewer_layers", "activation=tanh", "activation=sigmoid", "clip_global_norm"],
    },
    Demo {
        name: "regularization",
        summary: "L1 and L2 against none on a regression at the edge of exploding: weight and gradient norms, and whether a penalty stops the explosion",
        spec: include_str!("../demos/regularization.toml"),
        compare_with: &["l1", "l2", "clip_global_norm"],
    },
];

/// The demo called `name`.
pub fn demo(name: &str) -> Option<&'static Demo> {
    DEMOS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_parses_and_validates() {
        for d in DEMOS {
            let spec = d.spec().unwrap_or_else(|e| panic!("demo {}: {e}", d.name));
            assert_eq!(spec.name, d.name);
        }
    }
}
