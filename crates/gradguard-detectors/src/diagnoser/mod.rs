//! The diagnosis: from a run's events (live or replayed) to a verdict, the checklist of signs,
//! where it started, and the cures to try.
//!
//! A [`Diagnoser`] sees each [`Event`](gradguard_core::Event) (the step's figures plus the detectors' findings and the
//! remedies' actions) and keeps only bounded summaries: per sign its count, first finding and
//! largest value; the first non-finite loss, gradient and weight; the largest gradient norm and
//! update ratio; the first step of the latest streak of precursor signs. Memory does not grow
//! with the run's length. [`Diagnoser::finish`] builds the [`Diagnosis`](gradguard_core::Diagnosis). The live run and
//! `gradguard diagnose` feed the same events to the same code, so they agree.
//!
//! # Verdict rules (defaults in [`DiagnosisRules`])
//!
//! The PyTorch reference runs measured how specific each sign is; the rules follow:
//!
//! 1. **`exploding`** when a decisive sign happened: the loss became NaN/inf; a gradient became
//!    non-finite; a weight became non-finite (from the events, whatever detectors ran); or the
//!    weights were **wrecked without NaN**: an update moved a weight matrix by at least
//!    `wrecked_update_ratio` (1000) times its norm, or by at least `wrecked_ratio_with_radius`
//!    (10) times while a recurrent weight's spectral radius reached `wrecked_radius` (10).
//!    Healthy runs never exceeded an update ratio of 0.23; the tanh RNN wrecked by one step
//!    had σ_max(W_hh) go from 2 to ~3e4.
//! 2. **`suspect`** when no decisive sign but a warning that healthy runs did not show:
//!    `weights_change_large` (ratio above 1 by default, 4x the largest healthy ratio); more than
//!    `suspect_unstable_fraction` (10%) of the steps with a loss swing (healthy: ~3.4% of
//!    updates swung by more than 100%); a recurrent spectral radius of `wrecked_radius` or
//!    more; or `loss_not_converging` together with a gradient spike, a large weight change, a
//!    loss swing or gradient growth.
//! 3. **`healthy`** otherwise. `grad_norm_above_one` fired in every healthy seed (early in
//!    training), a few loss swings and gradient spikes happen in healthy runs, and a radius
//!    above 1 only makes growth possible: they are reported in the checklist as warnings but do
//!    not change the verdict on their own.
//!
//! # Origin
//! Precursor signs (spike, gradient above 1, growth, radius, large weight change, loss swing)
//! form streaks: a finding more than `origin_gap` (20) steps after the previous precursor
//! starts a new streak. The origin is the first finding of the streak in progress when the
//! first decisive event happened ("a gradient spike on `lstm.0.weight_hh` at step 41, 12 steps
//! before the loss became NaN (step 53)"), or the decisive event itself when nothing preceded
//! it. For a `suspect` run it is the first finding of the sign that made it suspect.
//!
//! # Prescriptions
//! Ranked from what was seen, each with its reason (see [`Diagnoser::finish`]); none for a
//! healthy run. The rules are one table in `prescriptions.rs`: per row a condition over the
//! accumulated facts, the cure, its reason and a base rank. "Clipping was active" is read from
//! what the remedies declared of themselves ([`gradguard_core::ActionRecord::clips`]), not from
//! their kinds' names. Advice about vanishing gradients (e.g. ReLU instead of sigmoid) is never
//! prescribed from signs; it appears only when a measured comparison shows it helping
//!
//! # Files
//! - `accumulator.rs`: the [`Diagnoser`]: what it keeps of each event, and [`Diagnoser::finish`].
//! - `verdict.rs`: what is decisive, the verdict and its rule in words, the origin.
//! - `prescriptions.rs`: the prescription table and [`apply_evidence`].
//! - `summary.rs`: [`RunFigures`] and [`run_summary`] (`summary.json`).

use gradguard_core::{Cure, Evidence};
use serde::{Deserialize, Serialize};

mod accumulator;
mod prescriptions;
mod summary;
mod verdict;

pub use accumulator::Diagnoser;
pub use prescriptions::apply_evidence;
pub use summary::{run_summary, RunFigures};

/// The thresholds of the verdict and origin rules (see the [module documentation](self)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosisRules {
    /// An update ratio ||dw||/||w|| at least this large wrecks the weights on its own.
    pub wrecked_update_ratio: f64,
    /// An update ratio at least this large wrecks the weights when a recurrent radius reached
    /// `wrecked_radius`.
    pub wrecked_ratio_with_radius: f64,
    /// A recurrent spectral radius at least this large (with a large update: wrecked; alone: suspect).
    pub wrecked_radius: f64,
    /// Fraction of steps with a loss swing above which a run is suspect.
    pub suspect_unstable_fraction: f64,
    /// A first finite loss at least this large suggests an unscaled regression target.
    pub large_initial_loss: f64,
    /// Precursor findings further apart than this many steps start a new streak.
    pub origin_gap: u64,
}

impl Default for DiagnosisRules {
    fn default() -> Self {
        DiagnosisRules {
            wrecked_update_ratio: 1000.0,
            wrecked_ratio_with_radius: 10.0,
            wrecked_radius: 10.0,
            suspect_unstable_fraction: 0.1,
            large_initial_loss: 100.0,
            origin_gap: 20,
        }
    }
}

/// The measured outcome of one cure (from verification or `compare`), to rank the
/// prescriptions by what the cure did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredCure {
    /// The cure that was run.
    pub cure: Cure,
    /// What its runs showed.
    pub evidence: Evidence,
}

/// Growth of the error signal measured at initialisation (gradguard's risk probe, before the
/// first update), for attributing an explosion to the initialisation or the depth.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitialGrowth {
    /// Geometric-mean growth per layer, output back to input, and the number of layers.
    pub per_layer: Option<(f64, usize)>,
    /// Geometric-mean growth per time step of the fastest-growing recurrent layer, and its
    /// series name.
    pub per_time_step: Option<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_detectors;
    use crate::testing::{exploding_regression, healthy_regression, run_live, wrecked_rnn};
    use gradguard_core::{CureStatus, Diagnosis, Learning, Sign, SummaryRemedy, Verdict};

    #[test]
    fn exploding_regression_is_diagnosed_with_origin_and_prescriptions() {
        let (_, d) = run_live(&exploding_regression(), &mut default_detectors());
        assert_eq!(d.verdict, Verdict::Exploding);
        assert_eq!(
            d.rule,
            "the loss became inf at step 9; a non-finite loss is decisive"
        );
        assert_eq!(d.first_nonfinite_step, Some(9));
        assert_eq!(d.verdict_step, Some(9), "the decisive step");
        let nf = d.sign(Sign::LossNonfinite).unwrap();
        assert_eq!((nf.seen, nf.first_step, nf.count), (true, Some(9), 4));
        let w = d.sign(Sign::WeightsNonfinite).unwrap();
        assert_eq!(
            (w.first_step, w.count, w.layer.as_deref()),
            (Some(10), 4, Some("layers.0.weight"))
        );
        let g = d.sign(Sign::GradNormAboveOne).unwrap();
        assert_eq!(
            (g.first_step, g.layer.as_deref()),
            (Some(5), Some("layers.0.bias"))
        );
        let wcl = d.sign(Sign::WeightsChangeLarge).unwrap();
        assert_eq!((wcl.first_step, wcl.count), (Some(2), 2));
        let lu = d.sign(Sign::LossUnstable).unwrap();
        assert_eq!((lu.first_step, lu.count), (Some(3), 5));
        assert_eq!(
            d.origin.as_deref(),
            Some("an update of 2 times the weights' norm on `layers.0.weight` at step 2, 7 step(s) before the loss became inf (step 9)")
        );
        let kinds: Vec<String> = d.prescriptions.iter().map(|p| p.remedy.label()).collect();
        assert_eq!(
            kinds,
            vec![
                "standardise_targets",
                "clip_global_norm",
                "smaller_lr",
                "skip_nonfinite"
            ]
        );
        assert!(d
            .prescriptions
            .iter()
            .all(|p| p.evidence.status == CureStatus::Untested));
        assert!(
            d.prescriptions[0]
                .reason
                .starts_with("the first loss was 2.00e4 (step 1, >= 100)"),
            "{}",
            d.prescriptions[0].reason
        );
        // Global norm at step 9: 1e33 * sqrt(1 + 1/4 + 4 + 1/16).
        assert!((d.max_grad_norm / (1e33 * 5.3125f64.sqrt()) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn healthy_run_with_early_warnings_stays_healthy() {
        let (_, d) = run_live(&healthy_regression(), &mut default_detectors());
        assert_eq!(d.verdict, Verdict::Healthy, "{}", d.rule);
        assert!(d.sign(Sign::GradNormAboveOne).unwrap().seen);
        assert_eq!(d.sign(Sign::LossUnstable).unwrap().first_step, Some(50));
        assert!(d.rule.contains("grad_norm_above_one x2"), "{}", d.rule);
        assert!(d.prescriptions.is_empty());
        assert_eq!(d.origin, None);
        assert_eq!(d.first_nonfinite_step, None);
    }

    #[test]
    fn a_quiet_run_that_did_not_learn_is_not_healthy() {
        let run = |final_train_loss: f64| {
            let mut dg = Diagnoser::default();
            dg.set_learning(Learning {
                final_train_loss,
                baseline_loss: 32_000.0,
                margin: Learning::DEFAULT_MARGIN,
            });
            let (_, d) =
                crate::testing::run_live_with(&healthy_regression(), &mut default_detectors(), dg);
            d
        };
        let d = run(27_000.0);
        assert_eq!(d.verdict, Verdict::NotLearning, "{}", d.rule);
        assert!(
            d.rule
                .contains("final loss over the whole training set 2.70e4 against 3.20e4"),
            "{}",
            d.rule
        );
        let d = run(15_999.0);
        assert_eq!(d.verdict, Verdict::Healthy, "{}", d.rule);
        assert!(d.rule.contains("it learned"), "{}", d.rule);
        // without a measurement the rule says so
        let (_, d) = run_live(&healthy_regression(), &mut default_detectors());
        assert!(
            d.rule.ends_with("whether it learned was not measured"),
            "{}",
            d.rule
        );
    }

    #[test]
    fn the_initialisation_is_blamed_only_on_growth_before_the_blow_up() {
        // The exploding regression's layer growth is measured once its gradients blew up:
        // with a probe at initialisation measuring decay, nothing blames the init or depth.
        let mut dg = Diagnoser::default();
        dg.set_initial_growth(InitialGrowth {
            per_layer: Some((0.58, 2)),
            per_time_step: None,
        });
        let (_, d) =
            crate::testing::run_live_with(&exploding_regression(), &mut default_detectors(), dg);
        assert!(d
            .prescriptions
            .iter()
            .all(|p| !matches!(p.remedy, Cure::SmallerInitGain { .. } | Cure::FewerLayers)));
        // Growth at initialisation blames the init gain first, then the depth, with the
        // figure and where it was measured.
        let mut dg = Diagnoser::default();
        dg.set_initial_growth(InitialGrowth {
            per_layer: Some((1.8, 11)),
            per_time_step: None,
        });
        let (_, d) =
            crate::testing::run_live_with(&exploding_regression(), &mut default_detectors(), dg);
        let kinds: Vec<String> = d.prescriptions.iter().map(|p| p.remedy.label()).collect();
        let gain = kinds.iter().position(|k| k == "smaller_init_gain").unwrap();
        let depth = kinds.iter().position(|k| k == "fewer_layers").unwrap();
        assert_eq!(depth, gain + 1, "{kinds:?}");
        assert!(d.prescriptions[gain]
            .reason
            .starts_with("the error signal grew 1.8x per layer over 11 layers at initialisation (the probe, before step 1)"));
    }

    #[test]
    fn rnn_wrecked_without_nan_is_exploding_and_prescribes_recurrent_cures() {
        // Radius checked every 10 steps (default 100) so that the escalation at step 11 shows.
        let mut detectors = default_detectors();
        detectors.pop();
        detectors.push(Box::new(crate::RecurrentRadiusAboveOne::new(1.0, 10, 50)));
        let (_, d) = run_live(&wrecked_rnn(), &mut detectors);
        assert_eq!(d.verdict, Verdict::Exploding, "{}", d.rule);
        assert!(d.rule.starts_with("the weights were wrecked without NaN: an update moved `rnn.0.weight_hh` by 1.50e4 times its norm"), "{}", d.rule);
        let r = d.sign(Sign::RecurrentRadiusAboveOne).unwrap();
        assert_eq!(
            (r.first_step, r.count, r.layer.as_deref()),
            (Some(1), 2, Some("rnn.0.weight_hh"))
        );
        let g = d.sign(Sign::GradGrowthAcrossLayers).unwrap();
        assert_eq!(
            (g.first_step, g.layer.as_deref()),
            (Some(4), Some("rnn.0 dL/dh_t"))
        );
        assert_eq!(d.first_nonfinite_step, None);
        let kinds: Vec<String> = d.prescriptions.iter().map(|p| p.remedy.label()).collect();
        assert_eq!(
            kinds,
            vec![
                "clip_global_norm",
                "cell=lstm",
                "truncated_bptt=20",
                "smaller_lr"
            ]
        );
        // The growth through time (1.3x per step) was first measured at step 4, after the
        // update of step 2 wrecked W_hh: it cannot size the window.
        assert!(
            d.prescriptions[2]
                .reason
                .contains("no growth through time was measured before the blow-up"),
            "{}",
            d.prescriptions[2].reason
        );
        // Measured at initialisation, the same growth sizes it: 10x after
        // floor(ln 10 / ln 1.3) = 8 steps.
        let mut dg = Diagnoser::default();
        dg.set_initial_growth(InitialGrowth {
            per_layer: None,
            per_time_step: Some((1.3, "rnn.0 dL/dh_t".into())),
        });
        let mut fresh = default_detectors();
        fresh.pop();
        fresh.push(Box::new(crate::RecurrentRadiusAboveOne::new(1.0, 10, 50)));
        let (_, d2) = crate::testing::run_live_with(&wrecked_rnn(), &mut fresh, dg);
        let p = &d2.prescriptions[1];
        assert_eq!(p.remedy.label(), "truncated_bptt=8");
        assert!(
            p.reason
                .contains("grew 1.3x per time step at initialisation")
                && p.reason.contains("about 8 steps"),
            "{}",
            p.reason
        );
        assert!(
            d.origin.as_deref().unwrap_or("").starts_with(
                "a recurrent spectral radius of 2 on `rnn.0.weight_hh` at step 1, 1 step(s) before"
            ),
            "{:?}",
            d.origin
        );
    }

    #[test]
    fn suspect_from_large_weight_changes_and_measured_effects_rerank() {
        let mut steps = healthy_regression();
        for s in steps.iter_mut().skip(100).take(3) {
            s.ratios = Some(vec![1.5; 4]);
        }
        let (_, d) = run_live(&steps, &mut default_detectors());
        assert_eq!(d.verdict, Verdict::Suspect, "{}", d.rule);
        assert!(
            d.rule.contains("first `layers.0.weight` at step 101"),
            "{}",
            d.rule
        );
        assert_eq!(
            d.verdict_step,
            Some(101),
            "the finding that made it suspect"
        );
        assert_eq!(
            d.origin.as_deref(),
            Some("an update of 1.5 times the weights' norm on `layers.0.weight` at step 101")
        );
        let kinds: Vec<String> = d.prescriptions.iter().map(|p| p.remedy.label()).collect();
        assert_eq!(kinds, vec!["clip_global_norm", "smaller_lr"]);
        let measured = |cure: &str, healthy: usize, ratio: f64| MeasuredCure {
            cure: Cure::parse(cure).unwrap(),
            evidence: Evidence {
                status: match healthy {
                    0 => CureStatus::Fails,
                    3 => CureStatus::Works,
                    _ => CureStatus::Partly,
                },
                seeds_healthy: healthy,
                seeds_run: 3,
                median_test_loss: Some(ratio * 10.0),
                median_test_loss_vs_baseline: Some(ratio),
                without_cure_vs_baseline: None,
                note: String::new(),
            },
        };
        let mut m = d.clone();
        apply_evidence(
            &mut m,
            &[
                measured("clip_global_norm", 0, 0.01),
                measured("activation=relu", 3, 0.1),
                measured("smaller_lr", 3, 0.05),
                measured("fewer_layers", 1, 0.02),
            ],
        );
        let kinds: Vec<String> = m.prescriptions.iter().map(|p| p.remedy.label()).collect();
        // works (by loss), then the failure last even though its loss is lowest; a partly
        // cure not prescribed is not added, a working one is.
        assert_eq!(
            kinds,
            vec!["smaller_lr", "activation=relu", "clip_global_norm"]
        );
        assert!(m.prescriptions[1]
            .reason
            .starts_with("not prescribed from the signs"));
        assert_eq!(m.prescriptions[2].evidence.status, CureStatus::Fails);
        assert!(m.to_plain_words().contains(
            "1. smaller_lr [works: 3/3 seeds healthy, median held-out loss 0.05x the constant predictor's]"
        ));
    }

    #[test]
    fn summary_from_diagnosis() {
        let (_, d) = run_live(&exploding_regression(), &mut default_detectors());
        let figures = RunFigures {
            name: "regression-sgd".into(),
            seed: 7,
            steps: 12,
            epochs: 1,
            final_train_loss: Some(f64::NAN),
            final_test_loss: Some(0.5),
            ..RunFigures::default()
        };
        let s = run_summary(
            &d,
            &figures,
            vec![SummaryRemedy {
                kind: "clip_norm".into(),
                activations: 3,
            }],
        );
        assert_eq!(s.final_train_loss, None);
        assert_eq!(s.final_test_loss, Some(0.5));
        assert_eq!(s.verdict, Verdict::Exploding);
        assert_eq!(s.first_nonfinite_step, Some(9));
        assert_eq!(s.signs.len(), d.checklist.iter().filter(|c| c.seen).count());
        assert_eq!(s.prescriptions, d.prescriptions);
    }

    #[test]
    fn clipping_is_known_by_what_the_remedy_declared_not_by_its_name() {
        use gradguard_core::{Action, ActionRecord, ClipScope, RemedyCapabilities};
        let (events, _) = run_live(&exploding_regression(), &mut default_detectors());
        let diagnose = |record: &ActionRecord| {
            let mut dg = Diagnoser::default();
            for e in &events {
                let mut e = e.clone();
                if e.step <= 3 {
                    e.actions.push(record.clone());
                }
                dg.observe_event(&e);
            }
            dg.finish()
        };
        let clip_reason = |d: &Diagnosis| {
            d.prescriptions
                .iter()
                .find(|p| p.remedy.label() == "clip_global_norm")
                .map(|p| p.reason.clone())
                .unwrap_or_default()
        };
        // A remedy of a kind gradguard never heard of that declares it clips.
        let caps = RemedyCapabilities::NONE.clipping(ClipScope::PerUnit);
        let mine = ActionRecord::new("my_unit_clip", &caps, true, Action::Continue);
        let d = diagnose(&mine);
        assert!(
            clip_reason(&d)
                .starts_with("clipping (`my_unit_clip`) was active and clipped 3 step(s)"),
            "{}",
            clip_reason(&d)
        );
        // A record that declares nothing is no clipping, whatever its kind is called.
        let plain = ActionRecord::new(
            "clip_norm",
            &RemedyCapabilities::NONE,
            true,
            Action::Continue,
        );
        let d = diagnose(&plain);
        assert!(
            clip_reason(&d).starts_with("the global gradient norm reached"),
            "{}",
            clip_reason(&d)
        );
        assert_eq!(d.prescriptions[1].remedy.label(), "clip_global_norm");
    }
}
