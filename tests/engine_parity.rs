//! The Guard is the same step whatever loop drives it: a plain loop over copied `Vec<f32>`
//! buffers (no dfdx type reaches the Guard) writes exactly the events.jsonl that
//! `run_experiment` writes for the same spec, seed and gradients — findings, actions, withheld
//! updates and the stop at non-finite gradients (or a withheld non-finite update) included.

use std::path::{Path, PathBuf};

use gradguard::core::{ParamView, Role, RunInfo, WeightStats};
use gradguard::detectors::{default_detectors, RunFigures};
use gradguard::engine::{Guard, NoCheckpoints, StepInput};
use gradguard::models::Trainer;
use gradguard::pipeline::{run_experiment, ExperimentSpec, RunOptions, SpecFormat};
use gradguard::report::JsonlReporter;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradguard-parity-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn spec(text: &str) -> ExperimentSpec {
    gradguard::pipeline::link_plugins();
    ExperimentSpec::parse(text, SpecFormat::Toml, Path::new("parity.toml")).expect("spec")
}

/// Drives a Guard from plain slices: every step the trainer's weights and gradients are
/// copied into owned buffers, the Guard sees only those, and the remedied gradients are
/// copied back before the trainer's optimiser applies them.
fn slice_loop(text: &str, out: &Path) -> Vec<String> {
    let mut s = spec(text);
    let mut trainer = Trainer::new(&s.model, &s.task, &s.train, s.seed).expect("trainer");
    let remedies = std::mem::take(&mut s.remedies);
    let mut guard = Guard::new(
        default_detectors(),
        remedies,
        vec![Box::new(JsonlReporter::default())],
    );
    let info = RunInfo {
        name: s.name.clone(),
        seed: s.seed,
        out_dir: out.to_path_buf(),
        params: trainer.param_infos(),
        clip_threshold: None,
    };
    guard.start(info, &mut NoCheckpoints).expect("start");
    let (mut names, mut shapes, mut roles) = (Vec::new(), Vec::new(), Vec::new());
    let mut w: Vec<Vec<f32>> = Vec::new();
    let mut g: Vec<Vec<f32>> = Vec::new();
    let mut known: Vec<Option<WeightStats>> = Vec::new();
    while !trainer.finished() {
        let info = trainer.step_gradients().expect("step");
        {
            let view = trainer.view().expect("view");
            if names.is_empty() {
                for p in view.iter() {
                    names.push(p.name.to_string());
                    shapes.push(p.shape.to_vec());
                    roles.push(p.role);
                    w.push(vec![0.0f32; p.weights.len()]);
                    g.push(vec![0.0f32; p.grads.len()]);
                    known.push(None);
                }
            }
            for (i, p) in view.iter().enumerate() {
                w[i].copy_from_slice(p.weights);
                g[i].copy_from_slice(p.grads);
                known[i] = p.known_weight_stats;
            }
        }
        let decision = {
            let mut plain = ParamView::with_capacity(names.len());
            for (i, gi) in g.iter_mut().enumerate() {
                let role: Role = roles[i];
                plain
                    .push_with_weight_stats(&names[i], &shapes[i], role, &w[i], gi, known[i])
                    .expect("shape");
            }
            let input = StepInput {
                step: trainer.steps_done(),
                loss: info.loss,
                epoch: Some(info.position.epoch + 1),
                lr: Some(trainer.lr()),
                series: trainer.series(),
                held_out_loss: None,
            };
            guard.step(input, &mut plain)
        };
        let update = if decision.apply {
            let mut view = trainer.view().expect("view");
            for (i, p) in view.iter_mut().enumerate() {
                p.grads.copy_from_slice(&g[i]);
            }
            drop(view);
            Some(trainer.apply_update(decision.lr_scale).expect("update"))
        } else {
            trainer.skip();
            None
        };
        let end = guard
            .after_update(update, &mut NoCheckpoints)
            .expect("after");
        if end.stop.is_some() {
            break;
        }
    }
    guard.finish(&RunFigures::default()).expect("finish");
    lines(&out.join("events.jsonl"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn pipeline_events(text: &str, out: &Path) -> Vec<String> {
    let opts = RunOptions {
        out_dir: Some(out.to_path_buf()),
        console: Some(false),
        ..RunOptions::default()
    };
    run_experiment(spec(text), &opts).expect("run");
    lines(&out.join("events.jsonl"))
}

fn assert_same_events(name: &str, text: &str) -> Vec<String> {
    let dir = scratch(name);
    let a = pipeline_events(text, &dir.join("pipeline"));
    let b = slice_loop(text, &dir.join("slices"));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len(), "{name}: step counts differ");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{name}: event {} differs", i + 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
    a
}

#[test]
fn a_slice_loop_writes_the_pipelines_events_while_clipping() {
    let events = assert_same_events(
        "clip",
        r#"
name = "parity-clip"
seed = 3
[model]
kind = "mlp"
hidden = [16, 16]
[task]
kind = "regression"
n_features = 8
target_scale = 50.0
[train]
optimizer = { kind = "sgd", lr = 0.05 }
steps = 40
[[remedies]]
kind = "clip_global_norm"
max_norm = 1.0
"#,
    );
    // The remedy acted: the comparison covered edited gradients, not only measurements.
    assert!(events.iter().any(|l| l.contains("\"clip_global_norm\"")));
}

#[test]
fn a_slice_loop_writes_the_pipelines_events_through_an_explosion() {
    let events = assert_same_events(
        "explode",
        r#"
name = "parity-explode"
seed = 1
[model]
kind = "mlp"
hidden = [32, 32, 32]
[task]
kind = "regression"
n_features = 8
target_scale = 1000.0
[train]
optimizer = { kind = "sgd", lr = 0.5 }
steps = 60
"#,
    );
    // It exploded and stopped early, the same way in both loops: at the first non-finite
    // gradient (or an update the optimiser withheld), which was not applied, so no weight
    // ever became non-finite.
    assert!(events.len() < 60, "{} steps", events.len());
    let last = events.last().expect("events");
    assert!(
        last.contains("grad_nonfinite") || last.contains("weights_nonfinite"),
        "{last}"
    );
    assert!(last.contains("\"applied\":false"), "{last}");
    assert!(events
        .iter()
        .all(|l| !l.contains("\"weight_nonfinite\":1") && !l.contains("\"weights_nonfinite\":1")));
}

#[test]
fn a_slice_loop_writes_the_pipelines_events_for_an_lstm_with_time_series() {
    let events = assert_same_events(
        "lstm",
        r#"
name = "parity-lstm"
seed = 2
[model]
kind = "lstm"
hidden = 8
[task]
kind = "adding"
seq_len = 12
n_samples = 256
[train]
optimizer = { kind = "adam", lr = 0.01 }
batch_size = 16
steps = 25
[[remedies]]
kind = "clip_norm"
max_norm = 0.1
"#,
    );
    assert!(events.iter().any(|l| l.contains("\"series\"")));
}
