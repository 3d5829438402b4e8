//! A detector plugin defined outside gradguard's crates, registered by typetag, described for
//! `gradguard plugins`, with a sign of its own (`declare_sign!`: it appears in the checklist,
//! summary.json and report.html), and used from a spec.
//!
//! Run: `cargo run --release --example custom_detector`

use std::path::Path;

use gradguard::core::{
    declare_sign, describe_plugin, Detector, Family, Finding, Observation, ParamDoc, PluginInfo,
    Sign,
};
use gradguard::pipeline::{run_experiment, ExperimentSpec, RunOptions, SpecFormat};
use serde::{Deserialize, Serialize};

/// Fires when the global gradient norm exceeds `limit` times the norm of the first step.
///
/// Rule: `||g_t|| > limit * ||g_1||` (finite norms only). Parameters: `limit` (default 100).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormAboveStart {
    #[serde(default = "default_limit")]
    limit: f64,
    #[serde(skip)]
    first: Option<f64>,
}

declare_sign!(
    NORM_ABOVE_START,
    "norm_above_start",
    "the gradient norm grew far above its first value"
);

fn default_limit() -> f64 {
    100.0
}

#[typetag::serde(name = "norm_above_start")]
impl Detector for NormAboveStart {
    fn observe(&mut self, obs: &Observation<'_, '_>, findings: &mut Vec<Finding>) {
        let norm = obs.stats.grad_norm;
        if !norm.is_finite() {
            return;
        }
        let first = *self.first.get_or_insert(norm);
        if norm > self.limit * first {
            findings.push(Finding::new(
                Sign::Declared(&NORM_ABOVE_START),
                obs.step,
                None,
                norm,
                self.limit * first,
                format!(
                    "the gradient norm {norm:.3e} is over {} times its first value",
                    self.limit
                ),
            ));
        }
    }

    fn reset(&mut self) {
        self.first = None;
    }
}

describe_plugin!(PluginInfo {
    family: Family::Detector,
    kind: "norm_above_start",
    summary: "Fires when the global gradient norm exceeds `limit` times its first value.",
    params: &[ParamDoc {
        name: "limit",
        default: Some("100.0"),
        doc: "allowed growth over the first step"
    }],
    example: "limit = 50.0",
});

const SPEC: &str = r#"
name = "custom-detector"
seed = 1

[model]
kind = "mlp"
hidden = [25]
activation = "relu"
# U(±sqrt(3 / fan_in)) for every layer: he_uniform at gain 1/sqrt(2).
init = { scheme = "he_uniform", gain = 0.7071067811865476 }

[task]
kind = "regression"
n_features = 20
noise = 0.1
train_fraction = 0.5

[train]
optimizer = { kind = "sgd", lr = 0.01, momentum = 0.9 }
batch_size = 32
epochs = 1

[[detectors]]
kind = "norm_above_start"
limit = 50.0

[[detectors]]
kind = "loss_nonfinite"
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Name gradguard's plugin crates so their kinds stay linked next to ours.
    let _ = gradguard::builtin_kinds();
    let spec = ExperimentSpec::parse(
        SPEC,
        SpecFormat::Toml,
        Path::new("<custom_detector example>"),
    )?;
    let out = std::env::temp_dir().join("gradguard-example-custom-detector");
    let opts = RunOptions {
        out_dir: Some(out.clone()),
        console: Some(false),
        ..RunOptions::default()
    };
    let outcome = run_experiment(spec, &opts)?;
    let ours = outcome
        .summary
        .signs
        .iter()
        .find(|s| s.sign == Sign::Declared(&NORM_ABOVE_START));
    match ours {
        Some(s) => println!(
            "norm_above_start fired first at step {} ({} time(s))",
            s.first_step, s.count
        ),
        None => return Err("custom_detector's check failed: norm_above_start did not fire".into()),
    }
    // The declared sign is in the checklist (seen), summary.json and report.html.
    let listed = outcome
        .diagnosis
        .checklist
        .iter()
        .any(|c| c.sign.as_str() == "norm_above_start" && c.seen);
    let summary = std::fs::read_to_string(out.join("summary.json"))?;
    let report = std::fs::read_to_string(out.join("report.html"))?;
    if !listed
        || !summary.contains("\"norm_above_start\"")
        || !report.contains("the gradient norm grew far above its first value")
    {
        return Err("custom_detector's check failed: the declared sign is missing from the checklist, summary.json or report.html".into());
    }
    println!(
        "verdict: {}; outputs in {}",
        outcome.summary.verdict.as_str(),
        out.display()
    );
    Ok(())
}
