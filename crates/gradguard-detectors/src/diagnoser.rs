//! The diagnosis: from a run's events (live or replayed) to a verdict, the checklist of signs,
//! where it started, and the cures to try.
//!
//! A [`Diagnoser`] sees each [`Event`] (the step's figures plus the detectors' findings and the
//! remedies' actions) and keeps only bounded summaries: per sign its count, first finding and
//! largest value; the first non-finite loss, gradient and weight; the largest gradient norm and
//! update ratio; the first step of the latest streak of precursor signs. Memory does not grow
//! with the run's length. [`Diagnoser::finish`] builds the [`Diagnosis`]. The live run and
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
//! healthy run. Advice about vanishing gradients (e.g. ReLU instead of sigmoid) is never
//! prescribed from signs; it appears only when a measured comparison shows it helping
//! ([`apply_evidence`]).

use gradguard_core::{
    CellName, Cure, CureStatus, Diagnosis, Event, Evidence, Finding, Learning, Prescription,
    RunSummary, Sign, SignSummary, SummaryRemedy, SummarySign, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::util::fmt_num;
use gradguard_core::Role;

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

/// Figures of a run that the diagnosis does not hold, for [`run_summary`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    /// The experiment's name.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Optimiser updates attempted.
    pub steps: u64,
    /// Epochs run.
    pub epochs: u64,
    /// Whether a signal ended the run early.
    pub interrupted: bool,
    /// Final loss over the whole training set (written as null when not finite).
    pub final_train_loss: Option<f64>,
    /// Final held-out loss (written as null when not finite).
    pub final_test_loss: Option<f64>,
    /// The last minibatch's loss.
    pub last_batch_loss: Option<f64>,
    /// The best constant predictor's loss on the training set.
    pub baseline_loss: Option<f64>,
    /// The best constant predictor's loss on the held-out set.
    pub baseline_test_loss: Option<f64>,
    /// Accuracy over the training set (classification).
    pub train_accuracy: Option<f64>,
    /// Accuracy over the held-out set (classification).
    pub test_accuracy: Option<f64>,
}

/// Builds `summary.json`'s contents from a diagnosis, the run's figures and the remedies'
/// activation counts ([`Diagnoser::remedy_activations`]).
pub fn run_summary(
    diagnosis: &Diagnosis,
    figures: &RunFigures,
    remedies: Vec<SummaryRemedy>,
) -> RunSummary {
    RunSummary {
        name: figures.name.clone(),
        seed: figures.seed,
        steps: figures.steps,
        epochs: figures.epochs,
        interrupted: figures.interrupted,
        final_train_loss: figures.final_train_loss.filter(|l| l.is_finite()),
        final_test_loss: figures.final_test_loss.filter(|l| l.is_finite()),
        last_batch_loss: figures.last_batch_loss.filter(|l| l.is_finite()),
        baseline_loss: figures.baseline_loss.filter(|l| l.is_finite()),
        baseline_test_loss: figures.baseline_test_loss.filter(|l| l.is_finite()),
        train_accuracy: figures.train_accuracy,
        test_accuracy: figures.test_accuracy,
        verdict: diagnosis.verdict,
        first_nonfinite_step: diagnosis.first_nonfinite_step,
        max_grad_norm: diagnosis.max_grad_norm,
        signs: diagnosis
            .checklist
            .iter()
            .filter(|s| s.seen)
            .map(|s| SummarySign {
                sign: s.sign,
                first_step: s.first_step.unwrap_or(0),
                count: s.count,
                layer: s.layer.clone(),
            })
            .collect(),
        remedies,
        prescriptions: diagnosis.prescriptions.clone(),
    }
}

#[derive(Clone, Debug, Default)]
struct SignAcc {
    count: u64,
    first: Option<Finding>,
    max_value: Option<f64>,
    max_layer: Option<String>,
}

/// What made the run exploding, first.
#[derive(Clone, Debug)]
enum Decisive {
    Loss {
        step: u64,
        loss: f64,
        layer: Option<String>,
    },
    Grad {
        step: u64,
        layer: Option<String>,
    },
    Weights {
        step: u64,
        layer: String,
    },
    Wrecked {
        step: u64,
        layer: String,
        ratio: f64,
        radius: Option<(f64, String)>,
    },
}

impl Decisive {
    fn step(&self) -> u64 {
        match self {
            Decisive::Loss { step, .. }
            | Decisive::Grad { step, .. }
            | Decisive::Weights { step, .. }
            | Decisive::Wrecked { step, .. } => *step,
        }
    }

    fn phrase(&self) -> String {
        match self {
            Decisive::Loss { loss, .. } => format!("the loss became {}", fmt_num(*loss)),
            Decisive::Grad { layer: Some(l), .. } => {
                format!("the gradient of `{l}` became non-finite")
            }
            Decisive::Grad { layer: None, .. } => "the gradients became non-finite".to_string(),
            Decisive::Weights { layer, .. } => {
                format!("the weights of `{layer}` became non-finite")
            }
            Decisive::Wrecked { layer, ratio, .. } => {
                format!(
                    "an update moved `{layer}` by {} times its norm",
                    fmt_num(*ratio)
                )
            }
        }
    }
}

/// Accumulates a run's events and builds its [`Diagnosis`]. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct Diagnoser {
    rules: DiagnosisRules,
    signs: Vec<SignAcc>,
    steps: u64,
    first_loss: Option<(u64, f64)>,
    first_nonfinite_step: Option<u64>,
    max_grad_norm: f64,
    max_ratio: Option<(f64, u64, String)>,
    max_radius: Option<(f64, u64, String)>,
    /// The first growth-across-time finding: value, series, step.
    time_growth: Option<(f64, String, u64)>,
    /// The first growth-across-layers finding: value, series, step.
    layer_growth: Option<(f64, String, u64)>,
    initial_growth: InitialGrowth,
    learning: Option<Learning>,
    recurrent_names: bool,
    gated_names: bool,
    streak_first: Option<Finding>,
    last_precursor: Option<u64>,
    nonfinite: Option<(Decisive, Option<Finding>)>,
    wreck: Option<(Decisive, Option<Finding>)>,
    remedies: Vec<SummaryRemedy>,
    measured: Vec<MeasuredCure>,
}

impl Default for Diagnoser {
    fn default() -> Self {
        Self::new(DiagnosisRules::default())
    }
}

const PRECURSORS: [Sign; 6] = [
    Sign::GradSpike,
    Sign::GradGrowthAcrossLayers,
    Sign::GradNormAboveOne,
    Sign::RecurrentRadiusAboveOne,
    Sign::WeightsChangeLarge,
    Sign::LossUnstable,
];

/// Growth per layer or time step above which the probe at initialisation blames the
/// initialisation or the depth.
const INIT_GROWTH_BLAME: f64 = 1.1;

const CLIPPING: [&str; 6] = [
    "clip_global_norm",
    "clip_norm",
    "clip_value",
    "agc",
    "autoclip",
    "zclip",
];

fn sign_index(sign: Sign) -> usize {
    Sign::ALL.iter().position(|&s| s == sign).unwrap_or(0)
}

impl Diagnoser {
    /// A diagnoser with the given rules.
    pub fn new(rules: DiagnosisRules) -> Self {
        Diagnoser {
            rules,
            signs: vec![SignAcc::default(); Sign::ALL.len()],
            steps: 0,
            first_loss: None,
            first_nonfinite_step: None,
            max_grad_norm: 0.0,
            max_ratio: None,
            max_radius: None,
            time_growth: None,
            layer_growth: None,
            initial_growth: InitialGrowth::default(),
            learning: None,
            recurrent_names: false,
            gated_names: false,
            streak_first: None,
            last_precursor: None,
            nonfinite: None,
            wreck: None,
            remedies: Vec::new(),
            measured: Vec::new(),
        }
    }

    /// Folds measured cures into the prescriptions built by [`Diagnoser::finish`]
    /// (see [`apply_evidence`]).
    pub fn with_measured_cures(mut self, measured: &[MeasuredCure]) -> Self {
        self.measured = measured.to_vec();
        self
    }

    /// The growth measured at initialisation (the risk probe), the only growth figure besides
    /// the run's own pre-blow-up measurements that may blame the initialisation or the depth.
    pub fn set_initial_growth(&mut self, growth: InitialGrowth) {
        self.initial_growth = growth;
    }

    /// Whether the run learned, measured after training: without it the verdict cannot be
    /// `not_learning` (e.g. an events log from elsewhere).
    pub fn set_learning(&mut self, learning: Learning) {
        self.learning = Some(learning);
    }

    /// Whether a decisive sign has happened: the verdict can no longer be `healthy`.
    pub fn beyond_saving(&self) -> bool {
        self.nonfinite.is_some() || self.wreck.is_some()
    }

    /// The number of events seen.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How often each remedy changed gradients or asked for an action, in order of first use.
    pub fn remedy_activations(&self) -> Vec<SummaryRemedy> {
        self.remedies.clone()
    }

    /// Takes one step's event (with its findings and actions).
    pub fn observe_event(&mut self, e: &Event) {
        self.steps += 1;
        if self.steps == 1 {
            for l in &e.layers {
                let has = |w: &str| crate::util::contains_ignore_case(&l.name, w);
                self.recurrent_names |= Role::from_name(&l.name, None) == Role::RecurrentWeight
                    || has("rnn")
                    || has("lstm")
                    || has("gru");
                self.gated_names |= has("lstm") || has("gru");
            }
        }
        if e.loss.is_finite() && self.first_loss.is_none() {
            self.first_loss = Some((e.step, e.loss));
        }
        if !e.grad_norm.is_nan() && e.grad_norm > self.max_grad_norm {
            self.max_grad_norm = e.grad_norm;
        }
        let grads_bad = e.grad_nonfinite > 0 || !e.grad_norm.is_finite();
        if self.first_nonfinite_step.is_none() && (!e.loss.is_finite() || grads_bad) {
            self.first_nonfinite_step = Some(e.step);
        }
        for l in &e.layers {
            if let Some(r) = l.update_ratio {
                if Role::from_name(&l.name, None) != Role::Bias
                    && !r.is_nan()
                    && self.max_ratio.as_ref().is_none_or(|m| r > m.0)
                {
                    self.max_ratio = Some((r, e.step, l.name.clone()));
                }
            }
        }
        for a in &e.actions {
            if !(a.changed || a.action.severity() > 0) {
                continue;
            }
            match self.remedies.iter_mut().find(|r| r.kind == a.remedy) {
                Some(r) => r.activations += 1,
                None => self.remedies.push(SummaryRemedy {
                    kind: a.remedy.clone(),
                    activations: 1,
                }),
            }
        }
        self.take_findings(e);
        self.check_decisive(e, grads_bad);
    }

    fn take_findings(&mut self, e: &Event) {
        let mut precursor: Option<&Finding> = None;
        for f in &e.findings {
            let acc = &mut self.signs[sign_index(f.sign)];
            acc.count += 1;
            if acc.first.is_none() {
                acc.first = Some(f.clone());
            }
            if !f.value.is_nan() && acc.max_value.is_none_or(|m| f.value > m) {
                acc.max_value = Some(f.value);
                acc.max_layer = f.layer.clone();
            }
            match f.sign {
                Sign::RecurrentRadiusAboveOne
                    if self.max_radius.as_ref().is_none_or(|m| f.value > m.0) =>
                {
                    self.max_radius = Some((f.value, f.step, f.layer.clone().unwrap_or_default()));
                }
                Sign::GradGrowthAcrossLayers => {
                    let layer = f.layer.clone().unwrap_or_default();
                    let is_time = e.series.iter().any(|s| {
                        s.axis == gradguard_core::SeriesAxis::TimeSteps && s.name == layer
                    });
                    let slot = if is_time {
                        &mut self.time_growth
                    } else {
                        &mut self.layer_growth
                    };
                    // The first measurement: the one least inflated by a blow-up in progress.
                    if slot.is_none() && f.value.is_finite() {
                        *slot = Some((f.value, layer, f.step));
                    }
                }
                _ => {}
            }
            if let Some(rank) = PRECURSORS.iter().position(|&s| s == f.sign) {
                let better = match precursor {
                    None => true,
                    Some(p) => {
                        rank < PRECURSORS
                            .iter()
                            .position(|&s| s == p.sign)
                            .unwrap_or(usize::MAX)
                    }
                };
                if better {
                    precursor = Some(f);
                }
            }
        }
        if self.nonfinite.is_some() {
            return;
        }
        if let Some(p) = precursor {
            let new_streak = self
                .last_precursor
                .is_none_or(|last| e.step.saturating_sub(last) > self.rules.origin_gap);
            if new_streak {
                self.streak_first = Some(p.clone());
            }
            self.last_precursor = Some(e.step);
        }
    }

    fn check_decisive(&mut self, e: &Event, grads_bad: bool) {
        if self.nonfinite.is_none() {
            let bad_grad_layer = || {
                e.layers
                    .iter()
                    .find(|l| l.grad_nonfinite > 0 || !l.grad_norm.is_finite())
                    .map(|l| l.name.clone())
            };
            let d = if !e.loss.is_finite() {
                Some(Decisive::Loss {
                    step: e.step,
                    loss: e.loss,
                    layer: if grads_bad { bad_grad_layer() } else { None },
                })
            } else if grads_bad {
                Some(Decisive::Grad {
                    step: e.step,
                    layer: bad_grad_layer(),
                })
            } else {
                e.layers
                    .iter()
                    .find(|l| !l.weight_norm.is_finite())
                    .map(|l| Decisive::Weights {
                        step: e.step,
                        layer: l.name.clone(),
                    })
            };
            if let Some(d) = d {
                self.nonfinite = Some((d, self.streak_first.clone()));
            }
        }
        if self.wreck.is_none() {
            if let Some((ratio, _, layer)) = &self.max_ratio {
                let radius = self
                    .max_radius
                    .as_ref()
                    .filter(|r| r.0 >= self.rules.wrecked_radius);
                let wrecked = *ratio >= self.rules.wrecked_update_ratio
                    || (*ratio >= self.rules.wrecked_ratio_with_radius && radius.is_some());
                if wrecked {
                    let d = Decisive::Wrecked {
                        step: e.step,
                        layer: layer.clone(),
                        ratio: *ratio,
                        radius: radius.map(|r| (r.0, r.2.clone())),
                    };
                    self.wreck = Some((d, self.streak_first.clone()));
                }
            }
        }
    }

    /// The decisive event (non-finite first, else wrecked weights) and its precursor.
    fn decisive(&self) -> Option<(&Decisive, Option<&Finding>)> {
        self.nonfinite
            .as_ref()
            .or(self.wreck.as_ref())
            .map(|(d, p)| (d, p.as_ref()))
    }

    fn acc(&self, sign: Sign) -> &SignAcc {
        &self.signs[sign_index(sign)]
    }

    fn seen(&self, sign: Sign) -> bool {
        self.acc(sign).count > 0
    }

    fn checklist(&self) -> Vec<SignSummary> {
        Sign::ALL
            .iter()
            .map(|&sign| {
                let a = self.acc(sign);
                SignSummary {
                    sign,
                    seen: a.count > 0,
                    first_step: a.first.as_ref().map(|f| f.step),
                    count: a.count,
                    layer: a.first.as_ref().and_then(|f| f.layer.clone()),
                    first_message: a.first.as_ref().map(|f| f.message.clone()),
                }
            })
            .collect()
    }

    fn describe_precursor(f: &Finding) -> String {
        let what = match f.sign {
            Sign::GradSpike => format!("a gradient spike (norm {})", fmt_num(f.value)),
            Sign::GradNormAboveOne => format!(
                "the error gradient staying above {} (norm {})",
                fmt_num(f.threshold),
                fmt_num(f.value)
            ),
            Sign::GradGrowthAcrossLayers => format!(
                "gradient growth of {}x per layer or time step",
                fmt_num(f.value)
            ),
            Sign::RecurrentRadiusAboveOne => {
                format!("a recurrent spectral radius of {}", fmt_num(f.value))
            }
            Sign::WeightsChangeLarge => {
                format!("an update of {} times the weights' norm", fmt_num(f.value))
            }
            Sign::LossUnstable => format!("a loss swing of {}%", fmt_num(f.value * 100.0)),
            other => other.describe().to_string(),
        };
        match &f.layer {
            Some(l) => format!("{what} on `{l}` at step {}", f.step),
            None => format!("{what} at step {}", f.step),
        }
    }

    /// The verdict, its rule in words, and (for suspect runs) the finding behind it.
    fn verdict(&self) -> (Verdict, String, Option<Finding>) {
        if let Some((d, _)) = self.decisive() {
            let rule = match d {
                Decisive::Loss { step, .. } => format!("{} at step {step}; a non-finite loss is decisive", d.phrase()),
                Decisive::Grad { step, .. } => format!("{} at step {step}; a non-finite gradient is decisive", d.phrase()),
                Decisive::Weights { step, .. } => format!("{} by step {step}; non-finite weights are decisive", d.phrase()),
                Decisive::Wrecked { step, radius, .. } => match radius {
                    Some((r, l)) => format!(
                        "the weights were wrecked without NaN: {} (by step {step}, >= {}) and the recurrent weight `{l}` reached spectral radius {} (>= {})",
                        d.phrase(),
                        fmt_num(self.rules.wrecked_ratio_with_radius),
                        fmt_num(*r),
                        fmt_num(self.rules.wrecked_radius)
                    ),
                    None => format!(
                        "the weights were wrecked without NaN: {} (by step {step}, >= {})",
                        d.phrase(),
                        fmt_num(self.rules.wrecked_update_ratio)
                    ),
                },
            };
            return (Verdict::Exploding, rule, None);
        }
        let wcl = self.acc(Sign::WeightsChangeLarge);
        if let Some(f) = &wcl.first {
            let rule = format!(
                "no decisive sign, but updates moved the weights by more than {} times their norm (first `{}` at step {}, up to {}); healthy runs stay below about 0.25",
                fmt_num(f.threshold),
                f.layer.as_deref().unwrap_or("?"),
                f.step,
                fmt_num(wcl.max_value.unwrap_or(f.value))
            );
            return (Verdict::Suspect, rule, Some(f.clone()));
        }
        let unstable = self.acc(Sign::LossUnstable);
        let fraction = if self.steps > 0 {
            unstable.count as f64 / self.steps as f64
        } else {
            0.0
        };
        if fraction > self.rules.suspect_unstable_fraction {
            let rule = format!(
                "no decisive sign, but the loss swung at {} of {} steps ({}%, above {}%; healthy runs show about 3%)",
                unstable.count,
                self.steps,
                fmt_num(fraction * 100.0),
                fmt_num(self.rules.suspect_unstable_fraction * 100.0)
            );
            return (Verdict::Suspect, rule, unstable.first.clone());
        }
        if let Some((r, step, layer)) = &self.max_radius {
            if *r >= self.rules.wrecked_radius {
                let rule = format!(
                    "no decisive sign, but the recurrent weight `{layer}` reached spectral radius {} at step {step} (>= {})",
                    fmt_num(*r),
                    fmt_num(self.rules.wrecked_radius)
                );
                return (
                    Verdict::Suspect,
                    rule,
                    self.acc(Sign::RecurrentRadiusAboveOne).first.clone(),
                );
            }
        }
        if self.seen(Sign::LossNotConverging) {
            let companion = [
                Sign::GradSpike,
                Sign::WeightsChangeLarge,
                Sign::LossUnstable,
                Sign::GradGrowthAcrossLayers,
            ]
            .into_iter()
            .find(|&s| self.seen(s));
            if let Some(c) = companion {
                let rule = format!(
                    "no decisive sign, but the loss did not converge and {} ({})",
                    c.describe(),
                    c.as_str()
                );
                return (Verdict::Suspect, rule, self.acc(c).first.clone());
            }
        }
        if let Some(l) = self.learning.filter(|l| !l.learned()) {
            let rule = format!(
                "no sign of exploding gradients decided the run, but it did not learn: {}",
                l.describe()
            );
            return (Verdict::NotLearning, rule, None);
        }
        let warnings: Vec<String> = Sign::ALL
            .iter()
            .filter(|&&s| self.seen(s))
            .map(|&s| format!("{} x{}", s.as_str(), self.acc(s).count))
            .collect();
        let mut rule = if warnings.is_empty() {
            "no sign of exploding gradients".to_string()
        } else {
            format!(
                "no decisive sign; the warnings seen ({}) are within what healthy runs show",
                warnings.join(", ")
            )
        };
        match &self.learning {
            Some(l) => rule.push_str(&format!("; it learned: {}", l.describe())),
            None => rule.push_str("; whether it learned was not measured"),
        }
        (Verdict::Healthy, rule, None)
    }

    fn origin(&self, verdict: Verdict, suspect_by: Option<&Finding>) -> Option<String> {
        match (self.decisive(), verdict) {
            (Some((d, precursor)), _) => {
                let step = d.step();
                let layer = match d {
                    Decisive::Loss { layer: Some(l), .. } => {
                        format!(" (first non-finite gradient in `{l}`)")
                    }
                    _ => String::new(),
                };
                Some(match precursor {
                    Some(p) if p.step < step => format!(
                        "{}, {} step(s) before {} (step {step}){layer}",
                        Self::describe_precursor(p),
                        step - p.step,
                        d.phrase()
                    ),
                    Some(p) => format!(
                        "{}, at the same step as {}{layer}",
                        Self::describe_precursor(p),
                        d.phrase()
                    ),
                    None => format!("{} at step {step}{layer}, with no earlier sign", d.phrase()),
                })
            }
            (None, Verdict::Suspect) => suspect_by.map(Self::describe_precursor),
            _ => None,
        }
    }

    fn prescriptions(&self, verdict: Verdict, suspect_by: Option<&Finding>) -> Vec<Prescription> {
        let mut out: Vec<(u32, Prescription)> = Vec::new();
        let mut add = |score: u32, cure: Cure, reason: String| {
            if !out.iter().any(|(_, p)| p.remedy.kind() == cure.kind()) {
                out.push((score, Prescription::untested(cure, reason)));
            }
        };
        if verdict == Verdict::Healthy {
            return Vec::new();
        }
        let remedy = |kind: &str| Cure::Remedy(kind.to_string());
        let activations = |kind: &str| {
            self.remedies
                .iter()
                .find(|r| r.kind == kind)
                .map(|r| r.activations)
                .unwrap_or(0)
        };
        // Where the trouble showed first, for reasons.
        let first_sign = self
            .decisive()
            .and_then(|(_, p)| p)
            .or(self.streak_first.as_ref());
        let first_where = first_sign
            .map(|f| format!(" (first sign: {})", Self::describe_precursor(f)))
            .unwrap_or_default();
        // The blow-up's onset: the first sign of the streak that led to the decisive event
        // (or the sign that made the run suspect). Growth measured after it is inflated by the
        // blow-up itself and cannot say what caused it.
        let onset = match self.decisive() {
            Some((d, p)) => Some(p.map_or(d.step(), |p| p.step.min(d.step()))),
            None => suspect_by.map(|f| f.step),
        };
        let before_onset = |step: u64| onset.is_none_or(|o| step <= o);
        let blowup = onset
            .map(|s| format!(", before the blow-up's first sign at step {s}"))
            .unwrap_or_default();

        if let Some((step, l0)) = self.first_loss {
            if l0 >= self.rules.large_initial_loss {
                add(
                    100,
                    Cure::StandardiseTargets,
                    format!(
                        "the first loss was {} (step {step}, >= {}): a regression target far from unit scale makes the first gradients huge; standardise the targets (subtract the training mean, divide by the training standard deviation) so the loss starts near 1",
                        fmt_num(l0),
                        fmt_num(self.rules.large_initial_loss)
                    ),
                );
            }
        }
        if verdict == Verdict::NotLearning {
            // No sign of explosion decided this run: the cures of explosion are not its cures.
            return out.into_iter().map(|(_, p)| p).collect();
        }
        let clipped: Vec<(&str, u64)> = CLIPPING
            .iter()
            .map(|&k| (k, activations(k)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if clipped.is_empty() {
            add(
                80,
                remedy("clip_global_norm"),
                format!(
                    "the global gradient norm reached {}{first_where}; clipping all gradients together to a fixed norm (max_norm = 1.0, as PyTorch's clip_grad_norm_) bounds every update while keeping its direction",
                    fmt_num(self.max_grad_norm)
                ),
            );
        } else {
            let (k, n) = clipped[0];
            add(
                50,
                remedy("clip_global_norm"),
                format!(
                    "clipping (`{k}`) was active and clipped {n} step(s), and the run was still {}: the other cures address the cause",
                    verdict.as_str()
                ),
            );
        }
        if verdict == Verdict::Exploding || self.seen(Sign::WeightsChangeLarge) {
            let why = match &self.acc(Sign::WeightsChangeLarge).first {
                Some(f) => format!(
                    "an update moved `{}` by {} times its norm at step {}: a learning rate 10x smaller makes every update 10x smaller",
                    f.layer.as_deref().unwrap_or("?"),
                    fmt_num(f.value),
                    f.step
                ),
                None => "each update is the learning rate times the gradient: a learning rate 10x smaller makes every update 10x smaller".to_string(),
            };
            add(60, Cure::SmallerLr, why);
        }
        let recurrent =
            self.recurrent_names || self.max_radius.is_some() || self.time_growth.is_some();
        if recurrent {
            let measured = match (&self.time_growth, &self.initial_growth.per_time_step) {
                (Some((f, name, step)), _) if *f > 1.0 && before_onset(*step) => {
                    Some((*f, format!("`{name}` grew {}x per time step at step {step}{blowup}", fmt_num(*f))))
                }
                (_, Some((f, name))) if *f > 1.0 => Some((
                    *f,
                    format!("`{name}` grew {}x per time step at initialisation (the probe, before step 1)", fmt_num(*f)),
                )),
                _ => None,
            };
            match measured {
                Some((f, what)) => {
                    let window = (10f64.ln() / f.ln()).floor().clamp(1.0, 1e6) as usize;
                    add(
                        78,
                        Cure::TruncatedBptt { window },
                        format!(
                            "the gradient of {what}, 10x every {window} steps: truncating backpropagation through time to about {window} steps bounds the product of Jacobians"
                        ),
                    );
                }
                None => add(
                    65,
                    Cure::TruncatedBptt {
                        window: gradguard_core::cure::DEFAULT_BPTT_WINDOW,
                    },
                    "the model is recurrent: backpropagation through time multiplies one Jacobian per time step; truncating it to a window bounds that product (no growth through time was measured before the blow-up)".to_string(),
                ),
            }
            // The radius as first measured, at or before the blow-up's first sign: a radius
            // read after an update wrecked W_hh says nothing about what would have helped.
            let first_radius = self
                .acc(Sign::RecurrentRadiusAboveOne)
                .first
                .as_ref()
                .filter(|f| before_onset(f.step) && f.value.is_finite());
            if !self.gated_names {
                let radius = first_radius
                    .map(|f| {
                        format!(
                            " (`{}` had spectral radius {} at step {})",
                            f.layer.as_deref().unwrap_or("?"),
                            fmt_num(f.value),
                            f.step
                        )
                    })
                    .unwrap_or_default();
                add(
                    72,
                    Cure::Cell { to: CellName::Lstm },
                    format!("a plain RNN multiplies its gradient by W_hh at every time step{radius}; an LSTM cell's additive cell state and gates make it grow far less through time (docs/CLAIMS.md, C1, at initialisation with T = 100: 1.05x per step at radius 3 against 1.34x for a plain RNN); whether it also learns is what verification measures"),
                );
            }
        }
        // The initialisation or the depth is blamed only on growth measured before the
        // blow-up: at initialisation by the probe, or in the run before the first spike.
        let layer_growth = match (&self.initial_growth.per_layer, &self.layer_growth) {
            (Some((f, n)), _) if *f > INIT_GROWTH_BLAME => Some(format!(
                "the error signal grew {}x per layer over {n} layers at initialisation (the probe, before step 1)",
                fmt_num(*f)
            )),
            (Some(_), _) => None,
            (None, Some((f, layer, step))) if before_onset(*step) => Some(format!(
                "the error signal grew {}x per layer from `{layer}` at step {step}{blowup}",
                fmt_num(*f)
            )),
            (None, _) => None,
        };
        if let Some(what) = layer_growth {
            add(
                76,
                Cure::SmallerInitGain { to: None },
                format!("{what}: a smaller initialisation gain brings each layer's Jacobian norm nearer 1"),
            );
            add(
                74,
                Cure::FewerLayers,
                format!("{what}: fewer layers shorten the product of layer Jacobians"),
            );
        }
        if let Some((d, _)) = &self.nonfinite {
            let skipped = activations("skip_nonfinite");
            if skipped > 0 {
                add(
                    20,
                    remedy("skip_nonfinite"),
                    format!("already active: it acted at {skipped} step(s) and kept non-finite updates out of the weights; it guards the weights but does not cure the cause"),
                );
            } else {
                add(
                    20,
                    remedy("skip_nonfinite"),
                    format!("{} at step {}: skipping updates whose loss or gradients are non-finite keeps NaN out of the weights; a guard, not a cure: the cause remains", d.phrase(), d.step()),
                );
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.0));
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// Builds the diagnosis of everything observed so far.
    ///
    /// Prescriptions (none for a healthy run; for a run that did not learn, only
    /// `standardise_targets` when its first loss was huge), most fitting first, each
    /// `untested` until a run measures it: `standardise_targets` when the first loss was huge (an unscaled
    /// regression target); `clip_global_norm` always (or a note that clipping was active);
    /// `smaller_lr` for an exploding run or large weight changes; for recurrent models
    /// `truncated_bptt` (its window from the growth per time step measured at or before the
    /// blow-up's first sign, or at initialisation), `cell=lstm` for plain RNNs (never
    /// `l2`: in the claims book's runs, C10, a penalty stopped no explosion); `smaller_init_gain` and `fewer_layers` only when the error signal grew layer
    /// by layer at initialisation (the probe) or, without a probe, before the blow-up;
    /// `skip_nonfinite` last, as a guard, when something became non-finite. Measured cures
    /// then re-rank them ([`apply_evidence`]). Callers that know the spec drop the cures that
    /// do not apply to it.
    pub fn finish(&self) -> Diagnosis {
        let (verdict, rule, suspect_by) = self.verdict();
        let mut d = Diagnosis {
            verdict,
            rule,
            checklist: self.checklist(),
            origin: self.origin(verdict, suspect_by.as_ref()),
            prescriptions: self.prescriptions(verdict, suspect_by.as_ref()),
            first_nonfinite_step: self.first_nonfinite_step,
            max_grad_norm: self.max_grad_norm,
        };
        if !self.measured.is_empty() {
            apply_evidence(&mut d, &self.measured);
        }
        d
    }
}

fn status_class(s: CureStatus) -> u8 {
    match s {
        CureStatus::Works => 0,
        CureStatus::Partly => 1,
        CureStatus::Untested => 2,
        CureStatus::Fails => 3,
    }
}

/// Attaches measured evidence to the prescriptions and ranks them by what the cures did:
/// `works` first (lowest median held-out loss against the constant predictor first), then
/// `partly` (most seeds healthy first), then `untested` in their order from the signs, then
/// `fails`. A measured failure is never ranked above a measured success. A cure measured
/// `works` that the signs did not prescribe is added (for a run that was not healthy), with
/// that measurement as its reason: the only way advice outside the signs (e.g. another
/// activation) is offered. Matching is by cure label first, then by kind.
pub fn apply_evidence(diagnosis: &mut Diagnosis, measured: &[MeasuredCure]) {
    let find = |c: &Cure| {
        measured
            .iter()
            .find(|m| m.cure == *c)
            .or_else(|| measured.iter().find(|m| m.cure.kind() == c.kind()))
    };
    let mut ranked: Vec<(u8, f64, usize, Prescription)> = Vec::new();
    for (i, p) in diagnosis.prescriptions.iter().enumerate() {
        let mut p = p.clone();
        if let Some(m) = find(&p.remedy) {
            p.remedy = m.cure.clone();
            p.evidence = m.evidence.clone();
        }
        ranked.push((
            status_class(p.evidence.status),
            order_key(&p.evidence),
            i,
            p,
        ));
    }
    if diagnosis.verdict != Verdict::Healthy {
        for m in measured {
            let known = ranked.iter().any(|r| r.3.remedy.kind() == m.cure.kind());
            if !known && m.evidence.status == CureStatus::Works {
                let i = ranked.len();
                ranked.push((
                    0,
                    order_key(&m.evidence),
                    i,
                    Prescription {
                        remedy: m.cure.clone(),
                        reason:
                            "not prescribed from the signs, but it made every seed healthy when run"
                                .to_string(),
                        evidence: m.evidence.clone(),
                    },
                ));
            }
        }
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    diagnosis.prescriptions = ranked.into_iter().map(|r| r.3).collect();
}

/// Within a status: most seeds healthy first, then the lowest held-out loss against the
/// constant predictor. Untested keep their order (key 0).
fn order_key(e: &Evidence) -> f64 {
    if e.status == CureStatus::Untested {
        return 0.0;
    }
    let unhealthy = (e.seeds_run - e.seeds_healthy.min(e.seeds_run)) as f64;
    let ratio = e
        .median_test_loss_vs_baseline
        .filter(|r| r.is_finite())
        .unwrap_or(1e300)
        .min(1e300);
    // seeds dominate: a ratio is below 1e300, so one more unhealthy seed always ranks lower.
    unhealthy * 1e301 + ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_detectors;
    use crate::testing::{exploding_regression, healthy_regression, run_live, wrecked_rnn};

    #[test]
    fn exploding_regression_is_diagnosed_with_origin_and_prescriptions() {
        let (_, d) = run_live(&exploding_regression(), &mut default_detectors());
        assert_eq!(d.verdict, Verdict::Exploding);
        assert_eq!(
            d.rule,
            "the loss became inf at step 9; a non-finite loss is decisive"
        );
        assert_eq!(d.first_nonfinite_step, Some(9));
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
}
