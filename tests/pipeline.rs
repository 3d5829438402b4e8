//! End-to-end runs: outputs, verdicts, determinism, compare, offline diagnosis.

use std::path::{Path, PathBuf};
use std::process::Command;

use gradguard::core::{CureStatus, Event, RunSummary, Verdict};
use gradguard::pipeline::compare::{parse_cures, run_compare, variants, CompareOptions};
use gradguard::pipeline::demos::demo;
use gradguard::pipeline::run::VerifyOptions;
use gradguard::pipeline::{run_experiment, ExperimentSpec, RunOptions};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gradguard-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn quiet(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: Some(out.to_path_buf()),
        console: Some(false),
        quiet: true,
        ..RunOptions::default()
    }
}

fn summary(dir: &Path) -> RunSummary {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary parses")
}

#[test]
fn exploding_demo_is_diagnosed_and_its_prescriptions_carry_measured_evidence() {
    let d = demo("regression-sgd").expect("demo");
    let out = scratch("regression");
    let mut opts = quiet(&out);
    opts.verify = Some(VerifyOptions {
        budget_s: None,
        ..VerifyOptions::default()
    });
    let outcome = run_experiment(d.spec().expect("spec"), &opts).expect("run");
    for f in ["summary.json", "events.jsonl", "report.html", "spec.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let s = summary(&out);
    assert_eq!(s.verdict, Verdict::Exploding);
    let first = s.first_nonfinite_step.expect("first non-finite step");
    // PyTorch and Keras go NaN around the 8th-10th update on this setup.
    assert!((5..=15).contains(&first), "first non-finite step {first}");
    assert!(s.signs.iter().any(|x| x.sign.as_str() == "loss_nonfinite"));
    // The f32 gradients overflow while the f64 loss is still finite: grad_nonfinite names
    // that step live, and it is the summary's first non-finite step.
    let grad = s
        .signs
        .iter()
        .find(|x| x.sign.as_str() == "grad_nonfinite")
        .expect("grad_nonfinite seen");
    assert_eq!(grad.first_step, first);
    assert!(grad.layer.is_some());
    assert_eq!(outcome.summary, s);
    // The baseline: predicting the training targets' mean, in the targets' (unscaled) units.
    let baseline = s.baseline_loss.expect("baseline");
    assert!(baseline > 1e3, "baseline {baseline}");

    // Every prescription was verified (the top 4) or says why not; measured successes come
    // first, and no measured failure is ranked above a measured success.
    let labels: Vec<String> = s.prescriptions.iter().map(|p| p.remedy.label()).collect();
    let status: Vec<CureStatus> = s.prescriptions.iter().map(|p| p.evidence.status).collect();
    for p in s.prescriptions.iter().take(4) {
        assert_eq!(p.evidence.seeds_run, 3, "{}: {:?}", p.remedy, p.evidence);
    }
    let last_works = status.iter().rposition(|s| *s == CureStatus::Works);
    let first_fails = status.iter().position(|s| *s == CureStatus::Fails);
    if let (Some(w), Some(f)) = (last_works, first_fails) {
        assert!(w < f, "{labels:?} {status:?}");
    }
    let evidence = |label: &str| {
        s.prescriptions
            .iter()
            .find(|p| p.remedy.label() == label)
            .map(|p| p.evidence.clone())
            .unwrap_or_else(|| panic!("{label} not prescribed: {labels:?}"))
    };
    for cure in ["clip_global_norm", "standardise_targets"] {
        let e = evidence(cure);
        assert_eq!(e.status, CureStatus::Works, "{cure}: {e:?}");
        assert!(
            e.median_test_loss_vs_baseline.expect("ratio") < 0.5,
            "{cure}: {e:?}"
        );
    }
    // skip_nonfinite guards the weights but does not cure: measured, it fails.
    assert_eq!(evidence("skip_nonfinite").status, CureStatus::Fails);
    // A one-hidden-layer MLP whose probe measured no growth: neither depth nor init is blamed.
    assert!(
        !labels
            .iter()
            .any(|l| l == "fewer_layers" || l == "smaller_init_gain"),
        "{labels:?}"
    );
    let verification = outcome.verification.expect("verification ran");
    assert!(verification.html.is_file());

    let spec = d.spec().expect("spec");
    let cures = parse_cures(
        &[
            "clip_global_norm",
            "clip_norm",
            "clip_value",
            "standardise_targets",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    )
    .expect("cures");
    let cmp = run_compare(
        variants(&spec, &cures).expect("variants"),
        &scratch("regression-compare"),
        &CompareOptions {
            seeds: vec![1, 2, 3],
            ..CompareOptions::default()
        },
    )
    .expect("compare");
    assert_eq!(cmp.variants.len(), 5);
    assert_eq!(cmp.outcomes[0].evidence.status, CureStatus::Fails);
    for o in &cmp.outcomes[1..] {
        assert_eq!(o.evidence.status, CureStatus::Works, "{}", o.name);
        for seed in &o.seeds {
            // healthy means it learned: the whole training set's loss is under half the
            // constant predictor's.
            let (train, base) = (
                seed.summary.final_train_loss.expect("train loss"),
                seed.summary.baseline_loss.expect("baseline"),
            );
            assert!(
                train < 0.5 * base,
                "{} seed {}: {train} vs {base}",
                o.name,
                seed.seed
            );
        }
    }
    assert!(gradguard::pipeline::compare::cure_found(&cmp));
    for v in &cmp.variants[1..] {
        assert!(v.name.ends_with("(3/3 healthy)"), "{}", v.name);
        assert!(v.summary.final_test_loss.is_some(), "{}", v.name);
    }
    // compare ranks the `none` run's prescriptions by what the cures did.
    let ranked = cmp.ranked.as_ref().expect("ranked diagnosis");
    assert_eq!(ranked.prescriptions[0].evidence.status, CureStatus::Works);
    assert!(cmp.html.is_file());
    assert!(cmp.table.contains("standardise_targets"));
}

/// The regularization demo measures what its comments claim, and compare credits no cure
/// whose runs did not learn: over seeds 1-3 a penalty explodes on exactly the seeds where no
/// penalty explodes; where the run survives (seed 1) L1 and L2 shrink the final weight norm
/// at least 1.5x; clipping keeps every seed finite but does not let every seed learn.
#[test]
fn regularization_demo_credits_no_cure_whose_runs_did_not_learn() {
    let d = demo("regularization").expect("demo");
    let spec = d.spec().expect("spec");
    let with: Vec<String> = d.compare_with.iter().map(|s| s.to_string()).collect();
    let cmp = run_compare(
        variants(&spec, &parse_cures(&with).expect("cures")).expect("variants"),
        &scratch("regularization-compare"),
        &CompareOptions {
            seeds: vec![1, 2, 3],
            ..CompareOptions::default()
        },
    )
    .expect("compare");
    let names: Vec<&str> = cmp.variants.iter().map(|v| v.name.as_str()).collect();
    assert!(
        names[1].starts_with("l1") && names[2].starts_with("l2"),
        "{names:?}"
    );
    let healthy = |i: usize| {
        let e = &cmp.outcomes[i].evidence;
        (e.seeds_healthy, e.seeds_run)
    };
    let none = healthy(0);
    assert!(
        none.0 < none.1,
        "no penalty should explode on some seed: {none:?}"
    );
    assert_eq!(healthy(1), none, "l1");
    assert_eq!(healthy(2), none, "l2");
    // Every seed counted healthy learned; no variant is credited unless all seeds did.
    for o in &cmp.outcomes {
        for seed in &o.seeds {
            if seed.summary.verdict == Verdict::Healthy {
                let train = seed.summary.final_train_loss.expect("train loss");
                let base = seed.summary.baseline_loss.expect("baseline");
                assert!(train < 0.5 * base, "{} seed {}", o.name, seed.seed);
            }
        }
        assert_eq!(
            o.evidence.status == CureStatus::Works,
            o.seeds
                .iter()
                .all(|s| s.summary.verdict == Verdict::Healthy),
            "{}",
            o.name
        );
    }
    let clip = &cmp.outcomes[3];
    assert_eq!(clip.name, "clip_global_norm");
    assert!(
        clip.seeds
            .iter()
            .all(|s| s.summary.first_nonfinite_step.is_none()),
        "clipping keeps every seed finite"
    );
    assert!(
        clip.seeds
            .iter()
            .any(|s| s.summary.verdict == Verdict::NotLearning),
        "clipping at max_norm 1 leaves a seed that did not learn: {:?}",
        clip.seeds
            .iter()
            .map(|s| s.summary.verdict)
            .collect::<Vec<_>>()
    );
    assert!(!gradguard::pipeline::compare::cure_found(&cmp));
    let w = |i: usize| cmp.variants[i].final_weight_norm.expect("weight norm");
    assert_eq!(
        cmp.variants[0].summary.verdict,
        Verdict::Healthy,
        "seed 1 survives"
    );
    assert!(w(1) * 1.5 < w(0), "l1: {} vs none {}", w(1), w(0));
    assert!(w(2) * 1.5 < w(0), "l2: {} vs none {}", w(2), w(0));
    assert!(cmp.table.contains("final weight norm"));
}

#[test]
fn same_spec_and_seed_give_identical_events() {
    let d = demo("regression-sgd").expect("demo");
    let spec_text = d.spec;
    let mut logs = Vec::new();
    for i in 0..2 {
        let mut spec = ExperimentSpec::parse(
            spec_text,
            gradguard::pipeline::SpecFormat::Toml,
            Path::new("<t>"),
        )
        .expect("spec");
        spec.remedies.push(
            serde_json::from_str(r#"{"kind":"clip_global_norm","max_norm":1.0}"#).expect("remedy"),
        );
        let out = scratch(&format!("determinism-{i}"));
        let mut opts = quiet(&out);
        opts.steps = Some(60);
        run_experiment(spec, &opts).expect("run");
        logs.push(std::fs::read(out.join("events.jsonl")).expect("events"));
    }
    assert!(logs[0].len() > 1000);
    assert!(
        logs[0] == logs[1],
        "events.jsonl differs between two identical runs"
    );
}

#[test]
fn offline_diagnosis_reproduces_the_run() {
    let d = demo("regression-sgd").expect("demo");
    let out = scratch("offline");
    let outcome = run_experiment(d.spec().expect("spec"), &quiet(&out)).expect("run");
    let bin = env!("CARGO_BIN_EXE_gradguard");
    let res = Command::new(bin)
        .args(["diagnose", "--json"])
        .arg(out.join("events.jsonl"))
        .output()
        .expect("run");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    let offline: gradguard::core::Diagnosis =
        serde_json::from_value(v.get("diagnosis").cloned().unwrap_or(v.clone()))
            .expect("diagnosis json");
    assert_eq!(offline.verdict, outcome.diagnosis.verdict);
    assert_eq!(
        offline.first_nonfinite_step,
        outcome.diagnosis.first_nonfinite_step
    );
    assert_eq!(offline.checklist, outcome.diagnosis.checklist);
    assert_eq!(offline.prescriptions, outcome.diagnosis.prescriptions);
}

#[test]
fn exploding_rnn_names_a_recurrent_layer_and_lstm_with_clipping_is_healthy() {
    let d = demo("rnn-long-sequences").expect("demo");
    let out = scratch("rnn");
    let mut opts = quiet(&out);
    opts.steps = Some(150);
    let outcome = run_experiment(d.spec().expect("spec"), &opts).expect("run");
    let diag = &outcome.diagnosis;
    assert_ne!(diag.verdict, Verdict::Healthy, "{}", diag.to_plain_words());
    let named = diag.checklist.iter().filter(|s| s.seen).any(|s| {
        s.layer
            .as_deref()
            .map(|l| l.starts_with("rnn."))
            .unwrap_or(false)
    });
    assert!(
        named,
        "no recurrent layer named:\n{}",
        diag.to_plain_words()
    );
    assert!(
        diag.prescriptions
            .iter()
            .any(|p| p.remedy.label() == "clip_global_norm"),
        "{}",
        diag.to_plain_words()
    );

    let healthy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs/lstm-adding-clipped.json");
    let spec = ExperimentSpec::load(&healthy).expect("spec");
    let out = scratch("lstm");
    let outcome = run_experiment(spec, &quiet(&out)).expect("run");
    assert_eq!(
        outcome.diagnosis.verdict,
        Verdict::Healthy,
        "{}",
        outcome.diagnosis.to_plain_words()
    );
    // The tensorboard reporter wrote an event file.
    let tb = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        });
    assert!(tb, "no TensorBoard file in {}", out.display());
}

#[test]
fn run_command_writes_outputs_and_exits_zero_on_exploding() {
    let out = scratch("cli-run");
    let spec = scratch("cli-spec").join("regression-sgd.toml");
    std::fs::write(&spec, demo("regression-sgd").expect("demo").spec).expect("write");
    // Not -q: the diagnosis on stdout is what this test reads (-q would print nothing).
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(summary(&out).verdict, Verdict::Exploding);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("Verdict: exploding"), "{stdout}");
    // The run was fast, so its prescriptions were verified within the default budget.
    assert!(
        stdout.contains("Verification: the top prescriptions"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1. clip_global_norm [works: 3/3 seeds healthy"),
        "{stdout}"
    );

    // Without verification the advice says it is untested; `gradguard verify` then runs it
    // from the run directory and writes the evidence into summary.json.
    let out2 = scratch("cli-run-unverified");
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["-q", "run", "--no-verify"])
        .arg(&spec)
        .arg("--out")
        .arg(&out2)
        .output()
        .expect("run");
    assert_eq!(res.status.code(), Some(0));
    let before = summary(&out2);
    assert!(before
        .prescriptions
        .iter()
        .all(|p| p.evidence.status == CureStatus::Untested));
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["verify", "--top", "2", "--seeds", "2"])
        .arg(&out2)
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let after = summary(&out2);
    let measured: Vec<usize> = after
        .prescriptions
        .iter()
        .map(|p| p.evidence.seeds_run)
        .collect();
    assert_eq!(
        measured.iter().filter(|&&n| n == 2).count(),
        2,
        "{measured:?}"
    );
    assert!(
        stdout.contains("What to try, ranked by these runs:"),
        "{stdout}"
    );
    // A directory that is not a run is a clear error, exit 1.
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .arg("verify")
        .arg(scratch("not-a-run"))
        .output()
        .expect("verify");
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("spec.json"));
}

/// `gradguard probe --json` on a recurrent spec over the adding task (30 steps).
fn probe_json(dir: &Path, model: &str) -> serde_json::Value {
    let path = dir.join(format!("{}.toml", model.len()));
    let spec = format!(
        "name = \"p\"\n[model]\n{model}\n[task]\nkind = \"adding\"\nseq_len = 30\nn_samples = 64\n"
    );
    std::fs::write(&path, spec).expect("write");
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["probe", "--json"])
        .arg(&path)
        .output()
        .expect("probe");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    serde_json::from_slice(&res.stdout).expect("json")
}

#[test]
fn probe_reports_rnn_radius_and_low_risk_lstm() {
    let dir = scratch("probe");
    let v = probe_json(
        &dir,
        "kind = \"rnn\"\nhidden = 16\nrecurrent_init = { scheme = \"orthogonal\", gain = 4.0 }",
    );
    let radius = v["recurrent"][0]["spectral_radius"]
        .as_f64()
        .expect("radius");
    assert!((radius - 4.0).abs() < 0.2, "radius {radius}");
    assert_eq!(v["risk"], "high", "{v}");
    let v = probe_json(&dir, "kind = \"lstm\"\nhidden = 16");
    assert_eq!(v["risk"], "low", "{v}");
}

#[test]
fn probe_fail_on_gates_on_the_risk() {
    let dir = scratch("probe-fail-on");
    let path = dir.join("rnn.toml");
    std::fs::write(
        &path,
        "name = \"p\"\n[model]\nkind = \"rnn\"\nhidden = 16\nrecurrent_init = { scheme = \"orthogonal\", gain = 4.0 }\n[task]\nkind = \"adding\"\nseq_len = 30\nn_samples = 64\n",
    )
    .expect("write");
    let lstm = dir.join("lstm.toml");
    std::fs::write(
        &lstm,
        "name = \"p\"\n[model]\nkind = \"lstm\"\nhidden = 16\n[task]\nkind = \"adding\"\nseq_len = 30\nn_samples = 64\n",
    )
    .expect("write");
    let code = |spec: &Path, level: &str| {
        let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .args(["probe", "--fail-on", level])
            .arg(spec)
            .output()
            .expect("probe");
        (
            res.status.code(),
            String::from_utf8_lossy(&res.stderr).into_owned(),
        )
    };
    let (c, err) = code(&path, "high");
    assert_eq!(c, Some(1), "{err}");
    assert!(
        err.contains("risk of explosion at initialisation is high"),
        "{err}"
    );
    assert_eq!(code(&path, "medium").0, Some(1));
    assert_eq!(code(&lstm, "medium").0, Some(0));
    assert_eq!(code(&lstm, "high").0, Some(0));
}

fn events(dir: &Path) -> Vec<gradguard::core::Event> {
    gradguard::report::read_events_jsonl(dir.join("events.jsonl")).expect("events")
}

#[test]
fn skip_nonfinite_keeps_weights_finite_then_escalates() {
    let d = demo("regression-sgd").expect("demo");
    let mut spec = d.spec().expect("spec");
    spec.remedies.push(
        serde_json::from_str(r#"{"kind":"skip_nonfinite","max_consecutive":3}"#).expect("remedy"),
    );
    let out = scratch("skip");
    let outcome = run_experiment(spec, &quiet(&out)).expect("run");
    let evs = events(&out);
    // Every step with a non-finite loss or gradient was withheld; no weight ever became non-finite.
    for e in &evs {
        if !e.loss.is_finite() || e.grad_nonfinite > 0 {
            assert!(!e.applied, "step {} applied a non-finite update", e.step);
        }
        for l in &e.layers {
            assert!(
                l.weight_norm.is_finite(),
                "step {}: {} non-finite weights",
                e.step,
                l.name
            );
        }
    }
    // The unscaled regression keeps exploding, so the guard escalates and stops the run.
    let skipped = evs.iter().filter(|e| !e.applied).count();
    assert!(skipped >= 3, "{skipped} skipped steps");
    assert!(outcome.stopped_early.is_some());
    assert!(evs
        .iter()
        .any(|e| e.actions.iter().any(|a| a.action.name() == "stop")));
}

/// The same run with no remedy, guarded (the default) and unguarded (the claims book's mode):
/// guarded, no non-finite update is ever applied and no weight becomes non-finite; unguarded,
/// the non-finite update is applied as PyTorch's `optimizer.step()` would, and the weights
/// turn non-finite.
#[test]
fn unguarded_runs_apply_what_the_guard_withholds() {
    let d = demo("regression-sgd").expect("demo");
    let run = |unguarded: bool, name: &str| {
        let out = scratch(name);
        let opts = RunOptions {
            unguarded,
            ..quiet(&out)
        };
        run_experiment(d.spec().expect("spec"), &opts).expect("run");
        events(&out)
    };
    let guarded = run(false, "guarded");
    assert!(
        guarded.iter().any(|e| e.grad_nonfinite > 0),
        "the demo must explode"
    );
    for e in &guarded {
        if e.grad_nonfinite > 0 {
            assert!(
                !e.applied,
                "guarded step {} applied a non-finite update",
                e.step
            );
        }
        assert!(
            e.layers.iter().all(|l| l.weight_norm.is_finite()),
            "step {}",
            e.step
        );
    }
    let unguarded = run(true, "unguarded");
    assert!(
        unguarded.iter().any(|e| e.grad_nonfinite > 0 && e.applied),
        "unguarded: no non-finite update was applied"
    );
    assert!(
        unguarded
            .iter()
            .any(|e| e.layers.iter().any(|l| !l.weight_norm.is_finite())),
        "unguarded: the weights never became non-finite"
    );
}

#[test]
fn rollback_restores_a_checkpoint_and_continues() {
    let d = demo("regression-sgd").expect("demo");
    let mut spec = d.spec().expect("spec");
    spec.remedies.push(
        serde_json::from_str(
            r#"{"kind":"rollback","every":2,"keep":2,"skip_batches":1,"max_rollbacks":2}"#,
        )
        .expect("remedy"),
    );
    let out = scratch("rollback");
    run_experiment(spec, &quiet(&out)).expect("run");
    let evs = events(&out);
    let rollbacks: Vec<u64> = evs
        .iter()
        .filter(|e| e.actions.iter().any(|a| a.action.name() == "rollback"))
        .map(|e| e.step)
        .collect();
    assert!(!rollbacks.is_empty(), "no rollback happened");
    // After a rollback the step counter restarts from the checkpoint: steps are not monotonic.
    let first = rollbacks[0];
    let next = evs
        .iter()
        .skip_while(|e| e.step != first)
        .nth(1)
        .expect("a step after the rollback");
    assert!(
        next.step <= first,
        "step {} after rollback at {first}",
        next.step
    );
    // Bad updates were never applied: every step whose loss or gradients are non-finite was
    // withheld. The run must hold such steps, or this check would prove nothing.
    let bad: Vec<&Event> = evs
        .iter()
        .filter(|e| !e.loss.is_finite() || e.grad_nonfinite > 0)
        .collect();
    assert!(
        !bad.is_empty(),
        "the run had no non-finite step: the check below would be vacuous"
    );
    for e in &bad {
        assert!(
            !e.applied,
            "step {} (loss {}, {} non-finite gradient values) was applied",
            e.step, e.loss, e.grad_nonfinite
        );
    }
}

#[test]
fn every_example_spec_runs_and_writes_its_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/specs") {
        let path = entry.expect("entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml" | "json")
        ) {
            continue;
        }
        let spec = ExperimentSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = scratch(&format!("example-{n}"));
        let mut opts = quiet(&out);
        opts.steps = Some(15);
        let outcome =
            run_experiment(spec, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for f in ["summary.json", "events.jsonl", "report.html", "spec.json"] {
            assert!(out.join(f).is_file(), "{}: {f} missing", path.display());
        }
        assert!(outcome.summary.steps >= 1);
        // spec.json names its data file absolutely, so `gradguard verify` works from anywhere.
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("spec.json")).expect("spec.json"),
        )
        .expect("spec.json parses");
        if let Some(p) = written["task"]["path"].as_str() {
            assert!(Path::new(p).is_absolute() && Path::new(p).is_file(), "{p}");
        }
        n += 1;
    }
    assert!(n >= 4);
}

#[test]
fn exploding_rnn_names_the_nonfinite_step_and_a_recurrent_tensor() {
    // (Before the post-remedy check stopped such runs, the NaN update was applied and the loss
    // became NaN a step later.)
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs/rnn-nan.toml");
    let spec = ExperimentSpec::load(&path).expect("spec");
    let out = scratch("rnn-nan");
    let outcome = run_experiment(spec, &quiet(&out)).expect("run");
    let diag = &outcome.diagnosis;
    assert_eq!(
        diag.verdict,
        Verdict::Exploding,
        "{}",
        diag.to_plain_words()
    );
    // The gradient through time overflows first: the run stops at that step (the update from
    // non-finite gradients is withheld, so the weights and the loss never become NaN).
    let sign = diag
        .sign(gradguard::core::Sign::GradNonfinite)
        .expect("checklist entry");
    assert!(sign.seen, "{}", diag.to_plain_words());
    let log = events(&out);
    let first_bad = log.iter().find(|e| e.grad_nonfinite > 0).map(|e| e.step);
    assert_eq!(sign.first_step, first_bad);
    let last = log.last().expect("events");
    assert_eq!(
        Some(last.step),
        first_bad,
        "the run stops at the first non-finite gradient"
    );
    assert!(!last.applied);
    assert!(log.iter().all(|e| e.loss.is_finite()));
    let layer = sign.layer.as_deref().unwrap_or("");
    assert!(layer.starts_with("rnn."), "layer {layer}");
    assert!(
        diag.prescriptions
            .iter()
            .any(|p| p.remedy.label() == "clip_global_norm"),
        "{}",
        diag.to_plain_words()
    );
}

/// Every cure the diagnosis can prescribe (every remedy kind and every structural cure) is
/// runnable by `compare` on a spec it applies to, and says why where it does not apply.
#[test]
fn every_prescribable_cure_runs_in_compare() {
    let parse = |text: &str| {
        ExperimentSpec::parse(
            text,
            gradguard::pipeline::SpecFormat::Toml,
            Path::new("<t>"),
        )
        .expect("spec")
    };
    let mlp = parse(
        "name = \"mlp\"\n[model]\nkind = \"mlp\"\nhidden = [8, 8]\nactivation = \"sigmoid\"\ninit = { scheme = \"glorot_uniform\", gain = 2.0 }\n[task]\nkind = \"regression\"\nn_samples = 64\nn_features = 4\n[train]\nbatch_size = 8\nsteps = 4\n",
    );
    let rnn = parse(
        "name = \"rnn\"\n[model]\nkind = \"rnn\"\nhidden = 4\nlayers = 2\n[task]\nkind = \"adding\"\nseq_len = 30\nn_samples = 64\n[train]\nbatch_size = 8\nsteps = 4\n",
    );
    let cures = gradguard::pipeline::cures::every_cure();
    // every remedy kind and every structural cure name is in the list
    for name in gradguard::core::cure::STRUCTURAL_CURES {
        assert!(cures.iter().any(|c| c.kind() == name), "{name}");
    }
    for kind in gradguard::core::registry::registered_kinds(gradguard::core::Family::Remedy) {
        assert!(cures.iter().any(|c| c.kind() == kind), "{kind}");
    }
    let out = scratch("every-cure");
    for cure in &cures {
        let spec = [&mlp, &rnn]
            .into_iter()
            .find(|s| gradguard::pipeline::cures::applies_to(cure, s))
            .unwrap_or_else(|| panic!("{cure} applies to neither spec"));
        let vs = variants(spec, std::slice::from_ref(cure)).expect("variants");
        let cmp = run_compare(
            vs,
            &out.join(cure.label()),
            &CompareOptions {
                seeds: vec![1],
                steps: Some(4),
                stop_when_beyond_saving: true,
                ..CompareOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{cure}: {e}"));
        let o = &cmp.outcomes[1];
        assert_eq!(o.cure.as_ref(), Some(cure));
        assert_eq!(o.evidence.seeds_run, 1, "{cure}");
        assert_ne!(o.evidence.status, CureStatus::Untested, "{cure}");
    }
    // A cure that does not apply says why, and compare refuses it.
    let one_layer = parse(
        "name = \"one\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[task]\nkind = \"regression\"\n[train]\nsteps = 2\n",
    );
    let err = variants(
        &one_layer,
        &parse_cures(&["fewer_layers".into()]).expect("cure"),
    )
    .err()
    .expect("fewer_layers does not apply");
    assert!(err.to_string().contains("one hidden layer"), "{err}");
}

/// A regression whose targets are near unit scale is never prescribed `standardise_targets`,
/// and no prescription of any run is a cure that does not apply to its spec.
#[test]
fn prescriptions_only_name_cures_that_apply() {
    let d = demo("deep-mlp").expect("demo");
    let spec = d.spec().expect("spec");
    let out = scratch("deep-mlp");
    let outcome = run_experiment(d.spec().expect("spec"), &quiet(&out)).expect("run");
    assert_eq!(outcome.diagnosis.verdict, Verdict::Exploding);
    let labels: Vec<String> = outcome
        .diagnosis
        .prescriptions
        .iter()
        .map(|p| p.remedy.label())
        .collect();
    assert!(
        !labels.iter().any(|l| l == "standardise_targets"),
        "{labels:?}"
    );
    for p in &outcome.diagnosis.prescriptions {
        assert!(
            gradguard::pipeline::cures::applies_to(&p.remedy, &spec),
            "{}",
            p.remedy
        );
    }
    // The init gain is blamed first among structural cures, on the growth the probe measured
    // at initialisation, and the reason says where it was measured.
    let gain = outcome
        .diagnosis
        .prescriptions
        .iter()
        .find(|p| p.remedy.label() == "smaller_init_gain")
        .expect("smaller_init_gain prescribed");
    assert!(
        gain.reason
            .contains("at initialisation (the probe, before step 1)"),
        "{}",
        gain.reason
    );
}

/// Writes `long.toml` in `dir`: a small MLP regression of 10^8 steps (the tests stop it),
/// with `extra` appended (e.g. a remedy table).
fn long_spec(dir: &Path, extra: &str) -> PathBuf {
    let spec = dir.join("long.toml");
    std::fs::write(
        &spec,
        format!("name = \"long\"\n[model]\nkind = \"mlp\"\nhidden = [16]\n[task]\nkind = \"regression\"\nn_features = 8\ntarget_scale = 0.01\n[train]\nsteps = 100000000\n{extra}"),
    )
    .expect("spec");
    spec
}

/// Polls `ready` every 20 ms; fails with `what` after 60 s.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ctrl-C (SIGINT) or SIGTERM: the run finishes its step, writes every output (summary.json
/// with `interrupted: true`, report.html, whole lines of events.jsonl), prints the diagnosis
/// and exits 130 (143 for SIGTERM).
#[test]
fn a_signal_ends_the_run_with_every_output_written() {
    let dir = scratch("signal");
    let spec = long_spec(
        &dir,
        "[[remedies]]\nkind = \"clip_global_norm\"\nmax_norm = 1.0\n",
    );
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let out = dir.join(format!("out{signal}"));
        let child = Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .args(["run", "--no-verify"])
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Wait until the run has logged a few hundred steps.
        let events = out.join("events.jsonl");
        wait_until("the run logged nothing", || {
            std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0) >= 20_000
        });
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let res = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&res.stdout);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(code), "{stdout}\n{stderr}");
        assert!(stderr.contains("interrupted by signal"), "{stderr}");
        // The diagnosis was printed, and every output is whole.
        assert!(stdout.contains("Verdict: "), "{stdout}");
        let s = summary(&out);
        assert!(s.interrupted);
        assert!(s.steps > 100 && s.steps < 100_000_000, "{}", s.steps);
        assert!(out.join("report.html").is_file());
        let text = std::fs::read_to_string(&events).expect("events");
        assert!(text.ends_with('\n'));
        let lines = text.lines().count() as u64;
        assert_eq!(lines, s.steps, "one whole line per step");
        for line in text.lines() {
            serde_json::from_str::<gradguard::core::Event>(line).expect("a whole event");
        }
    }
}

/// Gradients are re-checked after the last remedy: a penalty that makes finite gradients
/// infinite (clip_global_norm, then l2 = 1e300) gets its update withheld, and no weight ever
/// becomes non-finite.
#[test]
fn a_remedy_that_makes_gradients_non_finite_gets_its_update_withheld() {
    let text = "name = \"huge-penalty\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[task]\nkind = \"regression\"\nn_samples = 64\nn_features = 4\ntarget_scale = 0.01\n[train]\nsteps = 5\n[[remedies]]\nkind = \"clip_global_norm\"\nmax_norm = 1.0\n[[remedies]]\nkind = \"l2\"\nl2 = 1e300\n";
    let spec = ExperimentSpec::parse(
        text,
        gradguard::pipeline::SpecFormat::Toml,
        Path::new("<t>"),
    )
    .expect("spec");
    let out = scratch("huge-penalty");
    run_experiment(spec, &quiet(&out)).expect("run");
    let evs = events(&out);
    assert_eq!(evs.len(), 5);
    for e in &evs {
        // finite before the remedies, not after: withheld by the loop's own check
        assert!(e.grad_norm.is_finite(), "step {}", e.step);
        assert!(
            !e.grad_norm_after.expect("after").is_finite(),
            "step {}: the penalty should overflow",
            e.step
        );
        assert!(!e.applied, "step {} applied a non-finite update", e.step);
        assert!(e
            .actions
            .iter()
            .any(|a| a.remedy == gradguard::pipeline::run::POST_REMEDY_CHECK));
        for l in &e.layers {
            assert!(l.weight_norm.is_finite(), "step {}: {}", e.step, l.name);
        }
    }
}

/// Two runs never write into one directory: the second is refused at once, naming the
/// process that holds it; once the first ends, the directory is free again.
#[test]
fn a_second_run_on_a_busy_directory_is_refused() {
    let dir = scratch("busy");
    let spec = long_spec(&dir, "");
    let out = dir.join("out");
    let first = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["-q", "run", "--no-verify"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until("the first run did not start", || {
        out.join("events.jsonl").is_file()
    });
    let second = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["-q", "run", "--no-verify", "--steps", "3"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("second run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is in use by another gradguard run (process {})",
            first.id()
        )),
        "{stderr}"
    );
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill");
    let status = first.wait_with_output().expect("wait").status;
    assert_eq!(status.code(), Some(130));
    // The lock went with the process: the directory takes a new run.
    // (--overwrite: the directory holds the first run's outputs, see issue 13's rule.)
    let third = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["-q", "run", "--no-verify", "--overwrite", "--steps", "3"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("third run");
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_eq!(summary(&out).steps, 3);
}

fn tiny_spec(extra: &str) -> ExperimentSpec {
    let text = format!(
        r#"name = "tiny"
{extra}
[model]
kind = "mlp"
hidden = [4]
[task]
kind = "regression"
n_features = 3
[train]
batch_size = 8
steps = 3
[[reporters]]
kind = "tensorboard"
"#
    );
    ExperimentSpec::parse(
        &text,
        gradguard::pipeline::spec_error::SpecFormat::Toml,
        Path::new("tiny.toml"),
    )
    .expect("spec")
}

fn has_tfevents(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .expect("out")
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
}

#[test]
fn spec_reporters_add_to_the_defaults_unless_default_reporters_is_false() {
    let out = scratch("reporters-add");
    run_experiment(tiny_spec(""), &quiet(&out)).expect("run");
    for f in ["summary.json", "events.jsonl", "report.html"] {
        assert!(
            out.join(f).is_file(),
            "{f} missing beside a tensorboard reporter"
        );
    }
    assert!(
        has_tfevents(&out),
        "no TensorBoard file in {}",
        out.display()
    );

    let out = scratch("reporters-only");
    run_experiment(tiny_spec("default_reporters = false"), &quiet(&out)).expect("run");
    for f in ["summary.json", "events.jsonl", "report.html"] {
        assert!(
            !out.join(f).exists(),
            "{f} written with default_reporters = false"
        );
    }
    assert!(
        has_tfevents(&out),
        "no TensorBoard file in {}",
        out.display()
    );
}

#[test]
fn compare_json_prints_the_comparison_and_compare_json_is_written() {
    let dir = scratch("compare-json");
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        "name = \"tiny\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\nn_features = 3\n[train]\nbatch_size = 8\nsteps = 3\n",
    )
    .expect("write");
    let out = dir.join("out");
    let res = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args([
            "compare",
            "--json",
            "--with",
            "clip_global_norm",
            "--seeds",
            "2",
        ])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("compare");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("stdout is JSON");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).expect("file"))
            .expect("compare.json is JSON");
    assert_eq!(v, written);
    assert!(out.join("compare.html").is_file());
    let variants = v["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2, "{v}");
    assert_eq!(variants[0]["name"], "none");
    assert!(variants[0]["cure"].is_null(), "{v}");
    assert_eq!(variants[1]["cure"], "clip_global_norm");
    for var in variants {
        let seeds = var["seeds"].as_array().expect("seeds");
        assert_eq!(seeds.len(), 2, "{v}");
        for s in seeds {
            assert!(s["verdict"].is_string(), "{s}");
            for k in [
                "final_train_loss",
                "final_test_loss",
                "baseline_test_loss",
                "first_nonfinite_step",
            ] {
                assert!(s.get(k).is_some(), "{k} missing in {s}");
            }
        }
        assert!(var["evidence"]["status"].is_string(), "{var}");
    }
}

/// Reruns never overwrite or mix: without --out every run gets its own directory under
/// runs/<name>/ with `latest` pointing at the newest; --out on a used directory is refused
/// unless --overwrite.
#[test]
fn each_rerun_gets_its_own_directory_and_a_used_out_is_refused() {
    let dir = scratch("rerun");
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        "name = \"tiny\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\nn_features = 2\nn_samples = 64\n[train]\nsteps = 3\n",
    )
    .expect("spec");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .current_dir(&dir)
            .args(["-q", "run", "--no-verify"])
            .arg(&spec)
            .args(extra)
            .output()
            .expect("run")
    };
    for _ in 0..2 {
        let res = run(&[]);
        assert_eq!(
            res.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    let root = dir.join("runs/tiny");
    let mut runs: Vec<String> = std::fs::read_dir(&root)
        .expect("runs/tiny")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(summary(&root.join(r)).steps, 3);
    }
    let latest = std::fs::canonicalize(root.join("latest")).expect("latest");
    assert_eq!(
        latest,
        std::fs::canonicalize(root.join(&runs[1])).expect("newest")
    );

    let out = dir.join("out");
    assert_eq!(run(&["--out", "out"]).status.code(), Some(0));
    let res = run(&["--out", "out"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not empty") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert!(
        out.join("events.jsonl").is_file(),
        "the refused run touched nothing"
    );
    let res = run(&["--out", "out", "--overwrite", "--steps", "2"]);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(summary(&out).steps, 2);
    let lines = std::fs::read_to_string(out.join("events.jsonl")).expect("events");
    assert_eq!(
        lines.lines().count(),
        2,
        "no line of the earlier run is left"
    );
}

/// `train.eval_every`: the held-out loss is evaluated every N steps, recorded in those steps'
/// events (absent from the others) and drawn in report.html at each evaluation.
#[test]
fn eval_every_records_and_draws_the_held_out_loss() {
    let out = scratch("eval-every");
    let text = "name = \"tiny\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\n\
                kind = \"regression\"\nn_features = 3\n[train]\nbatch_size = 8\nsteps = 7\n\
                eval_every = 3\n";
    let spec = ExperimentSpec::parse(
        text,
        gradguard::pipeline::spec_error::SpecFormat::Toml,
        Path::new("tiny.toml"),
    )
    .expect("spec");
    run_experiment(spec, &quiet(&out)).expect("run");
    let log = std::fs::read_to_string(out.join("events.jsonl")).expect("events.jsonl");
    let mut evaluated = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let step = v["step"].as_u64().expect("step");
        match v.get("held_out_loss") {
            Some(h) => {
                let h = h.as_f64().expect("a finite held-out loss");
                assert!(h > 0.0, "step {step}: {h}");
                evaluated.push((step, h));
            }
            None => assert!(
                !step.is_multiple_of(3),
                "step {step} should carry the held-out loss"
            ),
        }
    }
    assert_eq!(
        evaluated.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 6],
        "{log}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    for (step, h) in &evaluated {
        let title = format!(
            "<title>held-out loss, step {step}: {}</title>",
            gradguard::core::float::fmt_short(*h)
        );
        assert!(html.contains(&title), "{title}");
    }
    // Without eval_every, nothing changes: no held-out loss in the events.
    let plain = scratch("eval-every-off");
    run_experiment(tiny_spec(""), &quiet(&plain)).expect("run");
    let log = std::fs::read_to_string(plain.join("events.jsonl")).expect("events.jsonl");
    assert!(!log.contains("held_out_loss"), "{log}");
}

/// `compare` runs its variant x seed runs on several threads: the comparison is the same
/// for any number of them (every figure, every evidence, the table), since each run is
/// deterministic per seed.
#[test]
fn a_comparison_is_the_same_on_one_thread_and_on_several() {
    let d = demo("regression-sgd").expect("demo");
    let spec = d.spec().expect("spec");
    let cures =
        parse_cures(&["clip_global_norm".to_string(), "clip_value".to_string()]).expect("cures");
    let run = |jobs: usize, name: &str| {
        run_compare(
            variants(&spec, &cures).expect("variants"),
            &scratch(name),
            &CompareOptions {
                seeds: vec![1, 2],
                steps: Some(40),
                jobs,
                ..CompareOptions::default()
            },
        )
        .expect("compare")
    };
    let one = run(1, "jobs-1");
    let three = run(3, "jobs-3");
    assert_eq!(one.table.lines().count(), three.table.lines().count());
    // The wall-time column differs; everything else is the same.
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.rsplit_once("  ").map_or(l, |(a, _)| a).to_string())
            .collect()
    };
    assert_eq!(strip(&one.table), strip(&three.table));
    assert_eq!(one.to_json(), three.to_json());
    for (x, y) in one.outcomes.iter().zip(&three.outcomes) {
        assert_eq!(x.name, y.name);
        for (s, t) in x.seeds.iter().zip(&y.seeds) {
            // Debug text: NaN figures compare equal there.
            assert_eq!(
                format!("{:?}", s.summary),
                format!("{:?}", t.summary),
                "{} seed {}",
                x.name,
                s.seed
            );
        }
    }
}

/// A run's results do not depend on its thread count: an LSTM big enough for the batch split
/// (steps x batch x 4H x H above a million multiply-adds) with a dense head, and an MLP whose
/// first product (64 x 512 x 784) runs on gemm's parallelism and whose 400k-weight tensor
/// updates in chunks, write
/// the same events.jsonl and summary on 1, 2 and 3 threads, and the same on 2 threads twice.
#[test]
fn a_run_is_the_same_on_any_number_of_threads() {
    let text = r#"
name = "threads"
seed = 5
[model]
kind = "lstm"
hidden = 48
layers = 2
[task]
kind = "adding"
seq_len = 24
n_samples = 256
[train]
optimizer = { kind = "adam", lr = 0.01 }
batch_size = 32
steps = 12
[[remedies]]
kind = "clip_global_norm"
max_norm = 1.0
"#;
    let mlp = r#"
name = "threads-mlp"
seed = 5
[model]
kind = "mlp"
hidden = [512, 256]
[task]
kind = "regression"
n_features = 784
n_samples = 512
[train]
optimizer = { kind = "adam", lr = 0.001 }
batch_size = 64
steps = 12
"#;
    for (text, tag) in [(text, "lstm"), (mlp, "mlp")] {
        let run = |threads: usize, name: &str| {
            let out = scratch(&format!("{tag}-{name}"));
            let spec = ExperimentSpec::parse(
                text,
                gradguard::pipeline::spec_error::SpecFormat::Toml,
                Path::new("threads.toml"),
            )
            .expect("spec");
            run_experiment(
                spec,
                &RunOptions {
                    threads: std::num::NonZeroUsize::new(threads),
                    ..quiet(&out)
                },
            )
            .expect("run");
            let events = std::fs::read_to_string(out.join("events.jsonl")).expect("events.jsonl");
            assert_eq!(events.lines().count(), 12);
            (events, format!("{:?}", summary(&out)))
        };
        let one = run(1, "threads-1");
        for (threads, name) in [(2, "threads-2"), (3, "threads-3"), (2, "threads-2b")] {
            let many = run(threads, name);
            assert!(
                one.0 == many.0,
                "{tag}: events.jsonl differs on {threads} threads"
            );
            assert_eq!(one.1, many.1, "{tag}: summary differs on {threads} threads");
        }
    }
}

/// How `compare` shares the cores between runs at once (jobs) and threads per run.
#[test]
fn compare_shares_the_cores_between_jobs_and_threads() {
    use std::num::NonZeroUsize;
    let n = |v: usize| NonZeroUsize::new(v).expect("nonzero");
    let plan = |jobs: usize, threads: Option<usize>, runs: usize, cores: usize| {
        let p = CompareOptions {
            jobs,
            threads: threads.map(n),
            ..CompareOptions::default()
        }
        .plan(runs, n(cores))
        .expect("plan");
        (p.workers, p.threads.get())
    };
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return; // the environment counts as --threads; the cases below assume it unset
    }
    // Default: runs first, the cores left over go to each run's threads.
    assert_eq!(plan(0, None, 12, 8), (8, 1));
    assert_eq!(plan(0, None, 2, 8), (2, 4));
    assert_eq!(plan(0, None, 3, 8), (3, 2));
    assert_eq!(plan(0, None, 1, 1), (1, 1));
    // --threads given: as many runs at once as fit.
    assert_eq!(plan(0, Some(4), 12, 8), (2, 4));
    assert_eq!(plan(0, Some(16), 12, 8), (1, 16));
    // --jobs given: the threads fill the cores.
    assert_eq!(plan(2, None, 12, 8), (2, 4));
    assert_eq!(plan(16, None, 12, 8), (12, 1));
    // Both given: as given (never more workers than runs).
    assert_eq!(plan(4, Some(4), 12, 8), (4, 4));
    assert_eq!(plan(4, Some(4), 2, 8), (2, 4));
}
