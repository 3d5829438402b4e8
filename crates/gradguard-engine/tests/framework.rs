//! Gradients kept by another framework (`GradientFramework`): which edits reach it, what the
//! statistics and the decision say afterwards, and how a remedy that needs the values stops
//! the step when they are not on the host.

use gradguard_core::{
    Action, EditOutcome, FrameworkError, GradEdit, GradientFramework, ParamView, Remedy, Role,
    RunInfo, StepStats, TensorNorms,
};
use gradguard_detectors::default_detectors;
use gradguard_engine::{Guard, NoCheckpoints, StepInput};
use gradguard_remedies::ClipGlobalNorm;

fn remedy(json: &str) -> Box<dyn Remedy> {
    let _ = ClipGlobalNorm::new(1.0); // links the remedies' registrations
    serde_json::from_str(json).expect("remedy")
}

fn guard(remedies: Vec<Box<dyn Remedy>>) -> Guard {
    let mut g = Guard::new(default_detectors(), remedies, Vec::new());
    let info = RunInfo {
        name: "framework".into(),
        seed: 0,
        out_dir: std::env::temp_dir(),
        params: Vec::new(),
        clip_threshold: None,
    };
    g.start(info, &mut NoCheckpoints).expect("start");
    g
}

fn input(step: u64) -> StepInput {
    StepInput {
        step,
        loss: 1.0,
        ..Default::default()
    }
}

/// A framework that records every edit; off the host it "measures" the given tensors and
/// applies scales and clips to the statistics only (the clip with a fixed coefficient, as a
/// framework computing its own total would).
struct Fake {
    on_host: bool,
    decline: bool,
    tensors: Vec<(f64, f64, usize)>,
    clip_coef: f64,
    edits: Vec<GradEdit>,
    fail_measure: bool,
}

impl Fake {
    fn off_host(tensors: &[(f64, f64, usize)]) -> Self {
        Fake {
            on_host: false,
            decline: false,
            tensors: tensors.to_vec(),
            clip_coef: 0.25,
            edits: Vec::new(),
            fail_measure: false,
        }
    }
}

impl GradientFramework for Fake {
    fn values_on_host(&self) -> bool {
        self.on_host
    }

    fn measure(&mut self, stats: &mut StepStats) -> Result<(), FrameworkError> {
        if self.fail_measure {
            return Err(FrameworkError("the device is gone".into()));
        }
        let names: Vec<String> = (0..self.tensors.len())
            .map(|i| format!("l{i}.weight"))
            .collect();
        stats.set_measured(
            names
                .iter()
                .zip(&self.tensors)
                .map(|(name, &(norm, max, bad))| {
                    let n = TensorNorms {
                        grad_norm: norm,
                        grad_max_abs: max,
                        grad_nonfinite: bad,
                        weight_norm: 1.0,
                        weight_nonfinite: 0,
                    };
                    (name.as_str(), Role::Weight, 4, n)
                }),
        );
        Ok(())
    }

    fn edit(
        &mut self,
        edit: &GradEdit,
        stats: &mut StepStats,
    ) -> Result<EditOutcome, FrameworkError> {
        self.edits.push(*edit);
        if self.decline {
            return Ok(EditOutcome::Declined);
        }
        let factor = match *edit {
            GradEdit::ScaleAll { factor } => {
                stats.scale_all(factor);
                factor
            }
            GradEdit::ScaleParam { index, factor } => {
                stats.scale_param(index, factor);
                stats.refresh_totals();
                factor
            }
            GradEdit::ClipGlobalNorm { .. } => {
                stats.scale_all(self.clip_coef);
                self.clip_coef
            }
            GradEdit::AddPenaltyGrad { .. } => return Ok(EditOutcome::Penalised { sum_abs: 2.0 }),
            GradEdit::Clamp { .. } | GradEdit::ZeroNonFinite | GradEdit::UnitClip { .. } => 1.0,
        };
        Ok(EditOutcome::Applied { factor })
    }
}

/// `clip_global_norm` off the host: the framework gets the clip rule (not a coefficient
/// computed here), and the after-norm is the measured 5 times the coefficient it applied.
#[test]
fn the_global_clip_goes_to_the_framework_with_its_rule() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
    )]);
    let mut fw = Fake::off_host(&[(3.0, 2.0, 0), (4.0, 3.0, 0)]);
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert_eq!(d.grad_norm_before, 5.0);
    assert_eq!(d.grad_norm_after, 1.25);
    assert!(d.apply, "{:?}", d.action);
    assert_eq!(
        fw.edits,
        vec![GradEdit::ClipGlobalNorm {
            max_norm: 1.0,
            norm_type: 2.0
        }]
    );
    g.after_update(None, &mut NoCheckpoints).unwrap();
    let e = g.last_event().unwrap();
    assert_eq!(e.layers.len(), 2);
    assert_eq!(e.layers[1].grad_norm, 4.0);
}

/// Per-tensor clipping reads statistics only, so it runs off the host: one scale per tensor
/// above the bound (norm 4 > 2: 2/4; norm 1: untouched).
#[test]
fn per_tensor_clipping_sends_one_scale_per_tensor_above_the_bound() {
    let mut g = guard(vec![remedy(r#"{"kind":"clip_norm","max_norm":2.0}"#)]);
    let mut fw = Fake::off_host(&[(1.0, 1.0, 0), (4.0, 3.0, 0)]);
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert_eq!(
        fw.edits,
        vec![GradEdit::ScaleParam {
            index: 1,
            factor: 0.5
        }]
    );
    assert!((d.grad_norm_after - 5f64.sqrt()).abs() < 1e-12);
}

/// Value clipping and zeroing are typed edits too.
#[test]
fn clamp_and_zero_are_typed_edits() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_value","clip_value":0.5,"on_nonfinite":"zero"}"#,
    )]);
    let mut fw = Fake::off_host(&[(1.0, 1.0, 0), (f64::NAN, 3.0, 1)]);
    g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert_eq!(
        fw.edits,
        vec![GradEdit::ZeroNonFinite, GradEdit::Clamp { bound: 0.5 }]
    );
}

/// AGC's unit-wise clip and the penalties' gradients are typed edits too: every built-in
/// remedy runs where the gradients live. The L2 penalty's value is l2 * sum w^2 from the
/// statistics (weights of norm 1: 0.5 * 1 = 0.5 per tensor), the L1's uses the framework's
/// sum |w| (2 per tensor here: 0.25 * 2 = 0.5).
#[test]
fn agc_and_penalties_are_typed_edits() {
    let mut g = guard(vec![
        remedy(r#"{"kind":"l1_l2","l1":0.25,"l2":0.5}"#),
        remedy(r#"{"kind":"agc","clip_factor":0.01}"#),
    ]);
    let mut fw = Fake::off_host(&[(3.0, 2.0, 0), (4.0, 3.0, 0)]);
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert!(d.apply, "{:?}", d.action);
    assert_eq!(
        fw.edits,
        vec![
            GradEdit::AddPenaltyGrad {
                index: 0,
                l1: 0.25,
                l2: 0.5
            },
            GradEdit::AddPenaltyGrad {
                index: 1,
                l1: 0.25,
                l2: 0.5
            },
            GradEdit::UnitClip {
                clip_factor: 0.01,
                eps: 1e-3,
                propagate: false
            },
        ]
    );
    g.after_update(None, &mut NoCheckpoints).unwrap();
    let penalty = g.last_event().unwrap().penalty.unwrap();
    assert!((penalty - 2.0).abs() < 1e-12, "{penalty}");
}

/// A remedy that lends itself the values (`edit_each`, as a user's plugin may) cannot run
/// off the host: the step stops with an error naming it, and nothing is applied.
#[test]
fn a_remedy_that_needs_the_values_stops_the_step_naming_itself() {
    let mut g = guard(vec![Box::new(ZeroFirst)]);
    let mut fw = Fake::off_host(&[(3.0, 2.0, 0)]);
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert!(d.stop(), "{:?}", d.action);
    assert!(!d.apply);
    let msg = d.error.expect("an error").to_string();
    assert!(msg.contains("zero_first") && msg.contains("host"), "{msg}");
}

/// A user's remedy that edits values directly.
#[derive(serde::Serialize, serde::Deserialize)]
struct ZeroFirst;

#[typetag::serde(name = "zero_first")]
impl Remedy for ZeroFirst {
    fn apply(
        &mut self,
        ctx: &mut gradguard_core::RemedyContext<'_, '_>,
    ) -> Result<Action, gradguard_core::RemedyError> {
        ctx.edit_each(|_, p| {
            if let Some(v) = p.grads.first_mut() {
                *v = 0.0;
            }
            gradguard_core::TensorEdit::Edited
        });
        Ok(Action::Continue)
    }
}

/// A framework that cannot measure stops the step before any detector or remedy runs.
#[test]
fn a_failed_measurement_stops_the_step() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
    )]);
    let mut fw = Fake::off_host(&[(3.0, 2.0, 0)]);
    fw.fail_measure = true;
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert!(d.stop());
    assert!(fw.edits.is_empty());
    assert!(d.error.unwrap().to_string().contains("the device is gone"));
}

/// Values on the host with a framework that declines: the host kernels apply the edit (the
/// clamp here), after the framework was offered it.
#[test]
fn declined_edits_run_on_the_host_values() {
    let mut g = guard(vec![remedy(r#"{"kind":"clip_value","clip_value":0.5}"#)]);
    let mut fw = Fake::off_host(&[]);
    fw.on_host = true;
    fw.decline = true;
    let (w, mut gr) = (vec![1.0f32, 1.0], vec![3.0f32, -0.25]);
    let d = {
        let mut v = ParamView::new();
        v.push("l.weight", &[2], Role::Weight, &w, &mut gr).unwrap();
        g.step_with_framework(input(1), &mut v, &mut fw)
    };
    assert_eq!(fw.edits, vec![GradEdit::Clamp { bound: 0.5 }]);
    assert_eq!(gr, vec![0.5, -0.25]);
    assert!(d.apply);
    assert_eq!(d.action, Action::Continue);
}

/// Non-finite gradients under the default policy are skipped without any edit.
#[test]
fn nonfinite_gradients_skip_without_edits() {
    let mut g = guard(vec![remedy(
        r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
    )]);
    let mut fw = Fake::off_host(&[(f64::INFINITY, f64::INFINITY, 2)]);
    let d = g.step_with_framework(input(1), &mut ParamView::new(), &mut fw);
    assert!(
        matches!(d.action, Action::SkipStep { .. }),
        "{:?}",
        d.action
    );
    assert!(fw.edits.is_empty());
}
