//! Issue 12, item 7: under the default `on_nonfinite` policies, no non-finite value is ever
//! written into the weights, whatever the learning rate or penalty. A property over random
//! specs (model, optimiser, learning rates 1e-2..1e300, a clip, l1/l2 penalties up to 1e300)
//! driving the real Trainer and Guard as `run_experiment` does: after every step every weight
//! is finite.

use std::path::Path;

use gradguard::core::RunInfo;
use gradguard::detectors::default_detectors;
use gradguard::engine::{Guard, NoCheckpoints, StepInput};
use gradguard::models::Trainer;
use gradguard::pipeline::{ExperimentSpec, SpecFormat};
use proptest::prelude::*;

fn optimizer(which: usize, lr: f64) -> String {
    match which {
        0 => format!("{{ kind = \"sgd\", lr = {lr:e} }}"),
        1 => format!("{{ kind = \"sgd\", lr = {lr:e}, momentum = 0.9 }}"),
        2 => format!("{{ kind = \"sgd\", lr = {lr:e}, momentum = 0.9, nesterov = true }}"),
        3 => format!("{{ kind = \"adam\", lr = {lr:e} }}"),
        4 => format!("{{ kind = \"rmsprop\", lr = {lr:e} }}"),
        _ => format!("{{ kind = \"rmsprop\", lr = {lr:e}, momentum = 0.5 }}"),
    }
}

fn spec_text(rnn: bool, which: usize, lr: f64, clip: bool, penalty: Option<(bool, f64)>) -> String {
    let (model, task) = if rnn {
        (
            "kind = \"rnn\"\nhidden = 6",
            "kind = \"adding\"\nseq_len = 5\nn_samples = 64",
        )
    } else {
        (
            "kind = \"mlp\"\nhidden = [8]",
            "kind = \"regression\"\nn_samples = 64\nn_features = 4",
        )
    };
    let mut s = format!(
        "name = \"holes\"\nseed = 3\n[model]\n{model}\n[task]\n{task}\n[train]\noptimizer = {}\nbatch_size = 16\nsteps = 6\n",
        optimizer(which, lr)
    );
    if clip {
        s.push_str("[[remedies]]\nkind = \"clip_global_norm\"\nmax_norm = 1.0\n");
    }
    if let Some((l1, v)) = penalty {
        let key = if l1 { "l1" } else { "l2" };
        s.push_str(&format!("[[remedies]]\nkind = \"{key}\"\n{key} = {v:e}\n"));
    }
    s
}

/// Runs the spec as `run_experiment` does and checks the weights after every step; returns
/// the number of steps whose update was withheld.
fn run_and_check(text: &str) -> Result<usize, TestCaseError> {
    gradguard::pipeline::link_plugins();
    let mut s = ExperimentSpec::parse(text, SpecFormat::Toml, Path::new("holes.toml"))
        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    let mut trainer = Trainer::new(&s.model, &s.task, &s.train, s.seed).expect("trainer");
    let mut guard = Guard::new(
        default_detectors(),
        std::mem::take(&mut s.remedies),
        Vec::new(),
    );
    let info = RunInfo {
        name: s.name.clone(),
        seed: s.seed,
        out_dir: std::env::temp_dir(),
        params: trainer.param_infos(),
        clip_threshold: None,
    };
    guard.start(info, &mut NoCheckpoints).expect("start");
    let mut withheld = 0;
    while !trainer.finished() {
        let step = trainer.step_gradients().expect("step");
        let input = StepInput {
            step: trainer.steps_done(),
            loss: step.loss,
            lr: Some(trainer.lr()),
            ..Default::default()
        };
        let decision = {
            let mut view = trainer.view().expect("view");
            guard.step(input, &mut view)
        };
        let update = if decision.apply {
            Some(
                trainer
                    .apply_update_with_stats(decision.lr_scale, guard.stats())
                    .expect("update"),
            )
        } else {
            trainer.skip();
            None
        };
        let end = guard
            .after_update(update, &mut NoCheckpoints)
            .expect("after");
        let done = trainer.steps_done();
        let view = trainer.view().expect("view");
        for p in view.iter() {
            prop_assert!(
                p.weights.iter().all(|w| w.is_finite()),
                "step {}: `{}` has non-finite weights\n{text}",
                done,
                p.name
            );
        }
        withheld += usize::from(!guard.last_event().expect("event").applied);
        if end.stop.is_some() {
            break;
        }
    }
    Ok(withheld)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn no_nonfinite_weight_is_ever_written(
        rnn in any::<bool>(),
        which in 0usize..6,
        lr_exp in prop_oneof![-2.0f64..1.0, 30.0f64..300.0],
        clip in any::<bool>(),
        penalty in proptest::option::of((any::<bool>(), prop_oneof![-3.0f64..1.0, 30.0f64..300.0])),
    ) {
        let lr = 10f64.powf(lr_exp);
        let penalty = penalty.map(|(l1, e)| (l1, 10f64.powf(e)));
        run_and_check(&spec_text(rnn, which, lr, clip, penalty))?;
    }
}

/// The two holes issue 12 names, by hand: SGD lr 1e39 and Adam lr 1e300 behind
/// `clip_global_norm` (finite, clipped gradients whose update overflows f32), and
/// `clip_global_norm` followed by `l2 = 1e300`.
#[test]
fn the_holes_of_issue_12_are_closed() {
    for text in [
        spec_text(false, 0, 1e39, true, None),
        spec_text(false, 3, 1e300, true, None),
        spec_text(false, 1, 1e300, true, None),
        spec_text(false, 0, 0.01, true, Some((false, 1e300))),
    ] {
        let withheld = run_and_check(&text).unwrap();
        assert!(withheld >= 1, "nothing was withheld:\n{text}");
    }
}
