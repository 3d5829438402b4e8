//! How each [`Cure`] changes an experiment spec. The cure vocabulary itself is
//! `gradguard_core::Cure`, shared with the diagnosis; this module is the one place that
//! knows what a cure does to a spec, and whether it applies.
//!
//! | cure | rewrite | does not apply when |
//! |---|---|---|
//! | a remedy kind (`clip_global_norm`, ...) | the remedy, with its documented example parameters, appended to `remedies` | the kind is not registered, or the spec already uses it |
//! | `standardise_targets` | the task's targets (and inputs) z-scored with training-set statistics ([`TaskSpec::standardise`]) | class targets, a synthetic sequence task, already standardised, or targets and inputs already near unit scale (training mean square within [0.01, 100]) |
//! | `smaller_init_gain[=g]` | with `g`: every initialiser gain above `g` becomes `g`; without: every gain above 1 becomes 1 (the standard form), or, when none is above 1, every gain is halved | with `g`, no gain above `g` |
//! | `smaller_lr` | the optimiser's learning rate divided by 10 | never |
//! | `fewer_layers` | an MLP keeps the first half of its hidden layers (at least one); a stacked recurrent model keeps one layer | one hidden layer (or none), or one recurrent layer |
//! | `smaller_batch` | `train.batch_size` halved (at least 1) | batch size 1 |
//! | `truncated_bptt=W` | `train.bptt = { window = W }` (default 20) | an MLP, or a window not shorter than the sequence |
//! | `cell=C` | the recurrent cell becomes C (default lstm) | an MLP, or already that cell |
//! | `activation=A` | every MLP hidden activation becomes A (default relu) | a recurrent model, or already A everywhere |

use std::path::Path;

use gradguard_core::registry::plugin_info;
use gradguard_core::{CellName, Cure, Family, Remedy};
use gradguard_models::spec::{Activation, BpttSpec, InitSpec, ModelSpec, OptimizerSpec, TaskSpec};
use gradguard_models::tasks::build_task;

use crate::spec::ExperimentSpec;
use crate::spec_error::{parse_str, SpecFormat};

/// Targets or inputs whose training mean square lies in this range count as near unit scale.
pub const UNIT_SCALE_MEAN_SQUARE: (f64, f64) = (0.01, 100.0);

/// The remedy `kind` with its documented example parameters, as a remedy object.
pub fn remedy_with_example(kind: &str) -> Option<Box<dyn Remedy>> {
    let info = plugin_info(Family::Remedy, kind)?;
    let text = if info.example.is_empty() {
        format!("kind = \"{kind}\"")
    } else {
        format!("kind = \"{kind}\"\n{}", info.example.replace(", ", "\n"))
    };
    parse_str::<Box<dyn Remedy>>(&text, SpecFormat::Toml, Path::new("<example>")).ok()
}

/// Parses a cure's label (`clip_global_norm`, `truncated_bptt=10`, `activation=tanh`) and
/// checks it names something that exists: a registered remedy kind or a structural cure
/// with a valid value. Errors list what is accepted.
pub fn parse_cure(label: &str) -> Result<Cure, String> {
    let cure = Cure::parse(label)?;
    match &cure {
        Cure::Remedy(kind) if plugin_info(Family::Remedy, kind).is_none() => {
            let mut known: Vec<String> = gradguard_core::cure::STRUCTURAL_CURES
                .iter()
                .map(|s| s.to_string())
                .collect();
            known.extend(gradguard_core::registry::registered_kinds(Family::Remedy));
            let hint = did_you_mean(kind, known.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            Err(format!(
                "unknown cure `{}`{hint}: expected a remedy kind (see `gradguard plugins`) or one of {}",
                label.trim(),
                known.join(", ")
            ))
        }
        Cure::Activation { to } => activation(to).map(|_| cure.clone()),
        _ => Ok(cure),
    }
}

pub use gradguard_engine::suggest::did_you_mean;

fn activation(name: &str) -> Result<Activation, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        format!("`activation={name}`: expected an activation name (relu, leaky_relu, elu, tanh, sigmoid, identity)")
    })
}

/// Whether the cure changes anything for this spec.
pub fn applies_to(cure: &Cure, spec: &ExperimentSpec) -> bool {
    apply(cure, spec).is_ok()
}

/// Rewrites `spec` with the cure; errors say why it does not apply. The new spec's name is
/// `<name>+<label>`.
pub fn apply(cure: &Cure, spec: &ExperimentSpec) -> Result<ExperimentSpec, String> {
    let mut out = spec.try_clone().map_err(|e| e.to_string())?;
    match (cure, &mut out.model) {
        (Cure::Remedy(kind), _) => {
            if spec.remedies.iter().any(|r| r.typetag_name() == kind) {
                return Err(format!("the spec already uses `{kind}`"));
            }
            let remedy = remedy_with_example(kind)
                .ok_or_else(|| format!("`{kind}` is not a registered remedy kind"))?;
            out.remedies.push(remedy);
        }
        (Cure::StandardiseTargets, _) => {
            let data = build_task(&spec.task, spec.seed).map_err(|e| e.to_string())?;
            let (lo, hi) = UNIT_SCALE_MEAN_SQUARE;
            let far = |ms: f64| !(lo..=hi).contains(&ms);
            let targets = data.target_mean_square();
            let features = data.feature_mean_square();
            if !targets.is_some_and(far) && !far(features) {
                return Err(match targets {
                    Some(t) => format!(
                        "the targets and inputs are already near unit scale (training mean square {} and {})",
                        gradguard_core::float::fmt_short(t),
                        gradguard_core::float::fmt_short(features)
                    ),
                    None => "the targets are classes".to_string(),
                });
            }
            out.task = spec.task.standardise()?;
        }
        (Cure::SmallerInitGain { to }, model) => {
            let inits: Vec<&mut InitSpec> = match model {
                ModelSpec::Mlp(m) => std::iter::once(&mut m.init)
                    .chain(m.output_init.as_mut())
                    .collect(),
                ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => {
                    [&mut r.init, &mut r.recurrent_init]
                        .into_iter()
                        .chain(r.output_init.as_mut())
                        .collect()
                }
            };
            match to {
                Some(g) => {
                    let mut changed = false;
                    for i in inits {
                        if i.gain > *g {
                            i.gain = *g;
                            changed = true;
                        }
                    }
                    if !changed {
                        return Err(format!("no initialiser gain is above {g}"));
                    }
                }
                None => {
                    if inits.iter().any(|i| i.gain > 1.0) {
                        for i in inits {
                            i.gain = i.gain.min(1.0);
                        }
                    } else {
                        for i in inits {
                            i.gain *= 0.5;
                        }
                    }
                }
            }
        }
        (Cure::SmallerLr, _) => {
            let lr = match &mut out.train.optimizer {
                OptimizerSpec::Sgd { lr, .. }
                | OptimizerSpec::Adam { lr, .. }
                | OptimizerSpec::Rmsprop { lr, .. } => lr,
            };
            *lr /= 10.0;
        }
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
            if let Some(t) = sequence_length(&spec.task) {
                if *window >= t {
                    return Err(format!(
                        "a window of {window} does not truncate sequences of {t} steps"
                    ));
                }
            }
            if spec.train.bptt == Some(BpttSpec { window: *window }) {
                return Err(format!("the spec already truncates to {window} steps"));
            }
            out.train.bptt = Some(BpttSpec { window: *window });
        }
        (Cure::Activation { to }, ModelSpec::Mlp(m)) => {
            let to = activation(to)?;
            if m.layer_activations().iter().all(|a| *a == to) {
                return Err("every layer already uses that activation".into());
            }
            m.activation = Some(to);
            m.activations = None;
        }
        (Cure::Activation { .. }, _) => return Err("activation applies to MLPs".into()),
        (Cure::Cell { to }, model) => {
            let mut r = match model {
                ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => r.clone(),
                ModelSpec::Mlp(_) => return Err("cell applies to recurrent models".into()),
            };
            let new = match to {
                CellName::Rnn => {
                    r.forget_bias = None;
                    ModelSpec::Rnn(r)
                }
                CellName::Lstm => ModelSpec::Lstm(r),
                CellName::Gru => {
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
    out.name = format!("{}+{}", spec.name, cure.label());
    Ok(out)
}

/// The sequence length of a synthetic sequence task, when the spec says it.
fn sequence_length(task: &TaskSpec) -> Option<usize> {
    match task {
        TaskSpec::Adding(a) => Some(a.seq_len),
        TaskSpec::Sine(s) => Some(s.seq_len),
        TaskSpec::Copy(c) => Some(2 * c.length + c.delay),
        TaskSpec::CsvSeries(c) => Some(c.window),
        _ => None,
    }
}

/// Every cure `compare` and the verification can run, in one list: each registered remedy
/// kind and each structural cure with its default value. Tests use it to prove that every
/// prescribable cure runs.
pub fn every_cure() -> Vec<Cure> {
    let mut v: Vec<Cure> = gradguard_core::registry::registered_kinds(Family::Remedy)
        .into_iter()
        .map(Cure::Remedy)
        .collect();
    for name in gradguard_core::cure::STRUCTURAL_CURES {
        if let Ok(c) = Cure::parse(name) {
            v.push(c);
        }
    }
    v.push(Cure::Cell { to: CellName::Gru });
    v.push(Cure::Activation { to: "tanh".into() });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(model: &str, train: &str) -> ExperimentSpec {
        let task = if model.contains("mlp") {
            "kind = \"regression\""
        } else {
            "kind = \"adding\"\nseq_len = 20"
        };
        let text = format!("name = \"s\"\n[model]\n{model}\n[task]\n{task}\n[train]\n{train}\n");
        ExperimentSpec::parse(&text, SpecFormat::Toml, Path::new("<t>"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn cure(label: &str) -> Cure {
        parse_cure(label).unwrap()
    }

    #[test]
    fn fewer_layers_halves_an_mlp_and_flattens_a_stack() {
        let s = spec(
            "kind = \"mlp\"\nhidden = [8, 8, 8, 8, 8]\nactivation = \"tanh\"",
            "batch_size = 8",
        );
        let out = apply(&Cure::FewerLayers, &s).unwrap();
        match out.model {
            ModelSpec::Mlp(m) => assert_eq!(m.hidden, vec![8, 8]),
            _ => panic!("not an mlp"),
        }
        assert_eq!(out.name, "s+fewer_layers");
        let s = spec("kind = \"mlp\"\nhidden = [8]", "batch_size = 8");
        assert!(apply(&Cure::FewerLayers, &s).is_err());
        let s = spec("kind = \"lstm\"\nhidden = 4\nlayers = 3", "batch_size = 8");
        match apply(&Cure::FewerLayers, &s).unwrap().model {
            ModelSpec::Lstm(r) => assert_eq!(r.layers, 1),
            _ => panic!("not an lstm"),
        }
    }

    #[test]
    fn smaller_batch_lr_and_truncated_bptt() {
        let s = spec(
            "kind = \"rnn\"\nhidden = 4",
            "batch_size = 9\noptimizer = { kind = \"adam\", lr = 0.004 }",
        );
        assert_eq!(apply(&Cure::SmallerBatch, &s).unwrap().train.batch_size, 4);
        match apply(&Cure::SmallerLr, &s).unwrap().train.optimizer {
            OptimizerSpec::Adam { lr, .. } => assert!((lr - 0.0004).abs() < 1e-15),
            o => panic!("{o:?}"),
        }
        let out = apply(&cure("truncated_bptt=5"), &s).unwrap();
        assert_eq!(out.train.bptt, Some(BpttSpec { window: 5 }));
        assert!(apply(&cure("truncated_bptt=5"), &out).is_err());
        // the adding task here has 20 steps: a window of 20 truncates nothing
        let why = apply(&cure("truncated_bptt=20"), &s).unwrap_err();
        assert!(
            why.contains("does not truncate sequences of 20 steps"),
            "{why}"
        );
        let s1 = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 1");
        assert!(apply(&Cure::SmallerBatch, &s1).is_err());
        let mlp = spec("kind = \"mlp\"\nhidden = [4]", "batch_size = 8");
        assert!(apply(&cure("truncated_bptt=5"), &mlp).is_err());
    }

    #[test]
    fn smaller_init_gain_brings_gains_to_the_standard_form_or_halves_them() {
        let s = spec(
            "kind = \"rnn\"\nhidden = 4\ninit = { scheme = \"glorot_uniform\", gain = 0.8 }\nrecurrent_init = { scheme = \"orthogonal\", gain = 1.5 }",
            "batch_size = 8",
        );
        let gains = |s: &ExperimentSpec| match &s.model {
            ModelSpec::Rnn(r) => (r.init.gain, r.recurrent_init.gain),
            _ => panic!(),
        };
        let out = apply(&Cure::SmallerInitGain { to: None }, &s).unwrap();
        assert_eq!(gains(&out), (0.8, 1.0));
        let out = apply(&Cure::SmallerInitGain { to: None }, &out).unwrap();
        assert_eq!(gains(&out), (0.4, 0.5));
        let out = apply(&cure("smaller_init_gain=0.5"), &s).unwrap();
        assert_eq!(gains(&out), (0.5, 0.5));
        assert!(apply(&cure("smaller_init_gain=2"), &s).is_err());
    }

    #[test]
    fn standardise_targets_applies_only_far_from_unit_scale() {
        let unscaled = spec("kind = \"mlp\"\nhidden = [4]", "batch_size = 8");
        let out = apply(&Cure::StandardiseTargets, &unscaled).unwrap();
        match &out.task {
            TaskSpec::Regression(r) => assert!(r.standardize_targets && r.standardize_features),
            t => panic!("{t:?}"),
        }
        // already standardised
        assert!(apply(&Cure::StandardiseTargets, &out).is_err());
        // near unit scale: targets scaled by 0.01 give a mean square of a few units
        let text = "name = \"s\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\ntarget_scale = 0.01\n[train]\nbatch_size = 8\n";
        let near = ExperimentSpec::parse(text, SpecFormat::Toml, Path::new("<t>")).unwrap();
        let why = apply(&Cure::StandardiseTargets, &near).unwrap_err();
        assert!(why.contains("already near unit scale"), "{why}");
        // sequence tasks have nothing to standardise
        let rnn = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 8");
        assert!(apply(&Cure::StandardiseTargets, &rnn).is_err());
    }

    #[test]
    fn activation_cell_and_remedies() {
        let s = spec(
            "kind = \"mlp\"\nhidden = [4, 4]\nactivation = \"sigmoid\"",
            "batch_size = 8",
        );
        let out = apply(&cure("activation=relu"), &s).unwrap();
        match out.model {
            ModelSpec::Mlp(m) => assert_eq!(
                m.layer_activations(),
                vec![Activation::Relu, Activation::Relu]
            ),
            _ => panic!("not an mlp"),
        }
        assert!(parse_cure("activation=swishy").is_err());
        let relu = spec(
            "kind = \"mlp\"\nhidden = [4]\nactivation = \"relu\"",
            "batch_size = 8",
        );
        assert!(apply(&cure("activation=relu"), &relu).is_err());
        let rnn = spec("kind = \"rnn\"\nhidden = 4", "batch_size = 8");
        let out = apply(&cure("cell=lstm"), &rnn).unwrap();
        assert_eq!(out.model.kind_name(), "lstm");
        assert_eq!(out.name, "s+cell=lstm");
        assert!(apply(&cure("cell=rnn"), &rnn).is_err());
        assert!(apply(&cure("cell=lstm"), &relu).is_err());
        out.validate(Path::new("<t>")).unwrap();
        let clipped = apply(&cure("clip_global_norm"), &relu).unwrap();
        assert_eq!(clipped.remedies.len(), 1);
        assert_eq!(clipped.name, "s+clip_global_norm");
        let why = apply(&cure("clip_global_norm"), &clipped).unwrap_err();
        assert!(why.contains("already uses"), "{why}");
        let why = parse_cure("more_layers").unwrap_err();
        assert!(why.contains("unknown cure `more_layers`"), "{why}");
        assert!(!why.contains("did you mean"), "{why}");
        let why = parse_cure("clip_global_nrom").unwrap_err();
        assert!(why.contains("(did you mean `clip_global_norm`?)"), "{why}");
        let why = parse_cure("standardize_targets").unwrap_err();
        assert!(
            why.contains("(did you mean `standardise_targets`?)"),
            "{why}"
        );
        assert_eq!(did_you_mean("l3", ["l1", "l2", "agc"]), Some("l1"));
        assert!(why.contains("standardise_targets"), "{why}");
    }
}
