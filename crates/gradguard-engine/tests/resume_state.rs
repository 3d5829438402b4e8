//! A Guard saved mid-run and restored into a fresh Guard built from the same spec continues
//! exactly as the uninterrupted one: the same events (findings, actions, norms after the
//! remedies, learning-rate scale) and the same diagnosis. This exercises every built-in
//! detector's and stateful remedy's `save_state`/`restore_state` and the diagnoser's.

use gradguard_core::{Detector, Event, ParamView, Remedy, Role, RunInfo, UpdateStats};
use gradguard_detectors::default_detectors;
use gradguard_engine::{Guard, GuardError, NoCheckpoints, StepInput};

/// The remedies with history (and a clip after them), as a spec would list them.
const REMEDIES: &str = r#"[
    {"kind": "skip_nonfinite"},
    {"kind": "zclip", "warmup_steps": 5},
    {"kind": "autoclip", "percentile": 50.0},
    {"kind": "skip_spike", "window": 8},
    {"kind": "lr_backoff", "cooldown": 3},
    {"kind": "clip_global_norm", "max_norm": 4.0}
]"#;

type Plugins = (Vec<Box<dyn Detector>>, Vec<Box<dyn Remedy>>);

fn plugins() -> Plugins {
    let _ = gradguard_remedies::builtin_kinds(); // links the remedies crate (typetag registration)
                                                 // Through JSON, as a resumed run rebuilds them from its spec.json.
    let detectors = serde_json::to_string(&default_detectors()).expect("detectors");
    (
        serde_json::from_str(&detectors).expect("detectors"),
        serde_json::from_str(REMEDIES).expect("remedies"),
    )
}

fn guard() -> Guard {
    let (d, r) = plugins();
    Guard::new(d, r, Vec::new())
}

/// A deterministic stream of gradients with drift, spikes, growth across the layers and a
/// few non-finite steps: every detector has something to count.
fn gradients(step: u64, scale: f32) -> [Vec<f32>; 4] {
    let mut x = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let spike = if step.is_multiple_of(17) { 40.0 } else { 1.0 };
    let growth = 1.0 + step as f32 / 20.0;
    let mut g = [
        (0..6).map(|_| next() * scale * spike).collect::<Vec<f32>>(),
        (0..3).map(|_| next() * scale * growth).collect(),
        (0..6).map(|_| next() * scale * growth * growth).collect(),
        (0..3).map(|_| next() * scale * growth.powi(3)).collect(),
    ];
    if step == 23 || step == 61 {
        g[2][1] = f32::NAN;
    }
    g
}

struct Loop {
    w: [Vec<f32>; 4],
    events: Vec<Event>,
}

impl Loop {
    fn new() -> Self {
        Loop {
            w: [vec![0.5; 6], vec![0.1; 3], vec![-0.3; 6], vec![0.2; 3]],
            events: Vec::new(),
        }
    }

    /// Steps `from..=to` through `guard`, applying SGD as the guard decides.
    fn steps(&mut self, guard: &mut Guard, from: u64, to: u64) {
        let names = ["l1.weight", "l1.bias", "l2.weight", "l2.bias"];
        let roles = [Role::Weight, Role::Bias, Role::Weight, Role::Bias];
        let shapes = [[3usize, 2], [3, 1], [3, 2], [3, 1]];
        for step in from..=to {
            let mut g = gradients(step, 0.8);
            let loss = if step == 61 {
                f64::NAN
            } else {
                1.0 / (1.0 + step as f64 / 10.0) + (step % 5) as f64 * 0.3
            };
            let d = {
                let mut view = ParamView::new();
                for (i, gi) in g.iter_mut().enumerate() {
                    let shape: &[usize] = if roles[i] == Role::Bias {
                        &shapes[i][..1]
                    } else {
                        &shapes[i]
                    };
                    view.push(names[i], shape, roles[i], &self.w[i], gi)
                        .expect("view");
                }
                guard.step(
                    StepInput {
                        step,
                        loss,
                        lr: Some(0.05),
                        ..StepInput::default()
                    },
                    &mut view,
                )
            };
            let update = d.apply.then(|| {
                let before = self.w.clone();
                let lr = 0.05 * d.lr_scale as f32;
                for (w, g) in self.w.iter_mut().zip(&g) {
                    for (w, g) in w.iter_mut().zip(g) {
                        *w -= lr * g;
                    }
                }
                let b: Vec<&[f32]> = before.iter().map(Vec::as_slice).collect();
                let a: Vec<&[f32]> = self.w.iter().map(Vec::as_slice).collect();
                UpdateStats::measure(step, 0.05 * d.lr_scale, &names, &b, &a)
            });
            guard
                .after_update(update, &mut NoCheckpoints)
                .expect("after_update");
            self.events.push(guard.last_event().expect("event").clone());
        }
    }
}

fn info() -> RunInfo {
    RunInfo {
        name: "resume".into(),
        seed: 0,
        out_dir: std::env::temp_dir(),
        params: Vec::new(),
        clip_threshold: None,
    }
}

fn json(events: &[Event]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).expect("event"))
        .collect()
}

#[test]
fn a_restored_guard_continues_exactly_as_the_uninterrupted_one() {
    const N: u64 = 90;
    let mut whole = Loop::new();
    let mut g = guard();
    g.start(info(), &mut NoCheckpoints).expect("start");
    whole.steps(&mut g, 1, N);
    let whole_diagnosis = g.diagnose();
    assert!(
        whole.events.iter().any(|e| !e.findings.is_empty())
            && whole.events.iter().any(|e| !e.actions.is_empty())
            && whole.events.iter().any(|e| !e.applied),
        "the stream must give the plugins something to remember"
    );

    for k in [1u64, 7, 23, 40, 61, 89] {
        let mut first = Loop::new();
        let mut g1 = guard();
        g1.start(info(), &mut NoCheckpoints).expect("start");
        first.steps(&mut g1, 1, k);
        let state = g1.save_state().expect("save");
        // A fresh Guard from the same spec, given the state and the events so far.
        let mut g2 = guard();
        g2.resume(info(), &state, &first.events).expect("resume");
        assert_eq!(g2.steps(), k);
        let mut rest = Loop {
            w: first.w.clone(),
            events: Vec::new(),
        };
        rest.steps(&mut g2, k + 1, N);
        assert_eq!(
            json(&rest.events),
            json(&whole.events[k as usize..]),
            "resumed after step {k}: the events differ"
        );
        assert_eq!(
            format!("{:?}", g2.diagnose()),
            format!("{whole_diagnosis:?}"),
            "resumed after step {k}: the diagnosis differs"
        );
    }
}

#[test]
fn a_guard_without_its_state_does_not_continue_the_same() {
    // The control: a fresh Guard that is only told the past events (no saved state) diverges,
    // so the test above is about the state.
    const K: u64 = 40;
    let mut whole = Loop::new();
    let mut g = guard();
    g.start(info(), &mut NoCheckpoints).expect("start");
    whole.steps(&mut g, 1, 90);
    let mut first = Loop::new();
    let mut g1 = guard();
    g1.start(info(), &mut NoCheckpoints).expect("start");
    first.steps(&mut g1, 1, K);
    let mut fresh = guard();
    fresh.start(info(), &mut NoCheckpoints).expect("start");
    let mut rest = Loop {
        w: first.w,
        events: Vec::new(),
    };
    rest.steps(&mut fresh, K + 1, 90);
    assert_ne!(json(&rest.events), json(&whole.events[K as usize..]));
}

#[test]
fn a_state_from_other_plugins_is_refused_by_name() {
    let mut g1 = guard();
    g1.start(info(), &mut NoCheckpoints).expect("start");
    Loop::new().steps(&mut g1, 1, 5);
    let state = g1.save_state().expect("save");
    let (d, _) = plugins();
    let mut other = Guard::new(d, Vec::new(), Vec::new());
    let e = other.resume(info(), &state, &[]).unwrap_err();
    assert!(matches!(e, GuardError::State(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("remedies [skip_nonfinite, zclip") && text.contains("the spec now lists []"),
        "{text}"
    );
    let damaged = gradguard_core::PluginState::from_bytes(vec![1, 2, 3]);
    let e = guard().resume(info(), &damaged, &[]).unwrap_err();
    assert!(e.to_string().contains("does not decode"), "{e}");
}
