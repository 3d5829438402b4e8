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
//! ([`apply_measured_effects`]).

use gradguard_core::{
    Diagnosis, Event, Finding, Prescription, RunSummary, Sign, SignSummary, SummaryRemedy,
    SummarySign, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::util::{fmt_num, role_from_name};
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

/// The measured outcome of one cure in a `compare` run, to re-rank the prescriptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredEffect {
    /// The remedy or structural cure (its kind is the leading snake_case word, e.g.
    /// `clip_global_norm` or `cell` in `cell { to = "lstm" }`).
    pub remedy: String,
    /// The verdict of the run with that cure.
    pub verdict: Verdict,
    /// Its final training loss, when finite.
    pub final_loss: Option<f64>,
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
    /// Final training loss (written as null when not finite).
    pub final_train_loss: Option<f64>,
    /// Final held-out loss (written as null when not finite).
    pub final_test_loss: Option<f64>,
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
        final_train_loss: figures.final_train_loss.filter(|l| l.is_finite()),
        final_test_loss: figures.final_test_loss.filter(|l| l.is_finite()),
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
    time_growth: Option<(f64, String)>,
    layer_growth: Option<(f64, String)>,
    recurrent_names: bool,
    gated_names: bool,
    streak_first: Option<Finding>,
    last_precursor: Option<u64>,
    nonfinite: Option<(Decisive, Option<Finding>)>,
    wreck: Option<(Decisive, Option<Finding>)>,
    remedies: Vec<SummaryRemedy>,
    measured: Vec<MeasuredEffect>,
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

/// The kind of a remedy string: its leading snake_case word (`cell { to = "lstm" }` -> `cell`).
pub fn remedy_kind(remedy: &str) -> &str {
    let t = remedy.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    &t[..end]
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

    /// Folds measured `compare` results into the prescriptions built by [`Diagnoser::finish`]
    /// (see [`apply_measured_effects`]).
    pub fn with_measured_effects(mut self, effects: &[MeasuredEffect]) -> Self {
        self.measured = effects.to_vec();
        self
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
                self.recurrent_names |= role_from_name(&l.name) == Role::RecurrentWeight
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
                if role_from_name(&l.name) != Role::Bias
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
                    if slot.as_ref().is_none_or(|m| f.value > m.0) {
                        *slot = Some((f.value, layer));
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
        let warnings: Vec<String> = Sign::ALL
            .iter()
            .filter(|&&s| self.seen(s))
            .map(|&s| format!("{} x{}", s.as_str(), self.acc(s).count))
            .collect();
        let rule = if warnings.is_empty() {
            "no sign of exploding gradients".to_string()
        } else {
            format!(
                "no decisive sign; the warnings seen ({}) are within what healthy runs show",
                warnings.join(", ")
            )
        };
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

    fn prescriptions(&self, verdict: Verdict) -> Vec<Prescription> {
        let mut out: Vec<(u32, Prescription)> = Vec::new();
        let mut add = |score: u32, remedy: &str, reason: String| {
            if !out.iter().any(|(_, p)| p.remedy == remedy) {
                out.push((
                    score,
                    Prescription {
                        remedy: remedy.to_string(),
                        reason,
                    },
                ));
            }
        };
        if verdict == Verdict::Healthy {
            return Vec::new();
        }
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

        if let Some((step, l0)) = self.first_loss {
            if l0 >= self.rules.large_initial_loss {
                add(
                    100,
                    "standardise_targets",
                    format!(
                        "the first loss was {} (step {step}, >= {}): a regression target far from unit scale makes the first gradients huge; standardise the targets (subtract the mean, divide by the standard deviation) so the loss starts near 1",
                        fmt_num(l0),
                        fmt_num(self.rules.large_initial_loss)
                    ),
                );
            }
        }
        if let Some((d, _)) = &self.nonfinite {
            let skipped = activations("skip_nonfinite");
            if skipped > 0 {
                add(
                    40,
                    "skip_nonfinite",
                    format!("already active: it acted at {skipped} step(s) and kept non-finite updates out of the weights; keep it, and cure the cause with the remedies above"),
                );
            } else {
                let d = format!("{} at step {}", d.phrase(), d.step());
                add(
                    90,
                    "skip_nonfinite",
                    format!("{d}: skipping any update whose loss or gradients are non-finite keeps the weights finite (they turn non-finite only when such an update is applied), and stops the run from being lost"),
                );
            }
        }
        let clipped: Vec<(&str, u64)> = CLIPPING
            .iter()
            .map(|&k| (k, activations(k)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if clipped.is_empty() {
            add(
                80,
                "clip_global_norm",
                format!(
                    "the global gradient norm reached {}{first_where}; clipping all gradients together to a fixed norm (e.g. max_norm = 1.0, as PyTorch's clip_grad_norm_) bounds every update while keeping its direction",
                    fmt_num(self.max_grad_norm)
                ),
            );
        } else {
            let (k, n) = clipped[0];
            add(
                50,
                "clip_global_norm",
                format!(
                    "clipping (`{k}`) was active and clipped {n} step(s), and the run was still {}: lower the clipping threshold, or combine it with the structural cures",
                    verdict.as_str()
                ),
            );
        }
        let recurrent =
            self.recurrent_names || self.max_radius.is_some() || self.time_growth.is_some();
        if recurrent {
            let (score, why) = match &self.time_growth {
                Some((f, name)) if *f > 1.0 => {
                    let window = (10f64.ln() / f.ln()).floor().max(1.0);
                    (
                        78,
                        format!(
                            "the gradient of `{name}` grows {}x per time step, 10x every {} steps: truncating backpropagation through time to about {} steps bounds the product of Jacobians",
                            fmt_num(*f),
                            fmt_num(window),
                            fmt_num(window)
                        ),
                    )
                }
                _ => (
                    65,
                    "the model is recurrent: backpropagation through time multiplies one Jacobian per time step; truncating it to a window bounds that product".to_string(),
                ),
            };
            add(score, "truncated_bptt", why);
            if !self.gated_names {
                let radius = self
                    .max_radius
                    .as_ref()
                    .map(|(r, _, l)| format!(" (`{l}` reached spectral radius {})", fmt_num(*r)))
                    .unwrap_or_default();
                add(
                    72,
                    "cell { to = \"lstm\" }",
                    format!("a plain RNN multiplies its gradient by W_hh at every time step{radius}; an LSTM cell's additive cell state and gates keep the gradient bounded"),
                );
            }
            if let Some((r, _, l)) = &self.max_radius {
                add(
                    30,
                    "l2",
                    format!("the recurrent weight `{l}` grew to spectral radius {}: an L2 penalty on the weights holds them smaller", fmt_num(*r)),
                );
            }
        }
        if let Some((f, layer)) = &self.layer_growth {
            add(
                74,
                "fewer_layers",
                format!("the error signal grows {}x per layer from the output back to the input, starting at `{layer}`: fewer layers shorten the product of layer Jacobians", fmt_num(*f)),
            );
            add(
                70,
                "smaller_init_gain",
                format!("the error signal grows {}x per layer: a smaller initialisation gain (e.g. He or Glorot with gain 1) brings each layer's Jacobian norm near 1", fmt_num(*f)),
            );
        }
        if let Some(f) = &self.acc(Sign::WeightsChangeLarge).first {
            add(
                55,
                "lr_backoff",
                format!(
                    "an update moved `{}` by {} times its norm at step {}: a smaller learning rate shrinks every update (lr_backoff lowers it when a sign fires)",
                    f.layer.as_deref().unwrap_or("?"),
                    fmt_num(f.value),
                    f.step
                ),
            );
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.0));
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// Builds the diagnosis of everything observed so far.
    ///
    /// Prescriptions (none for a healthy run), most fitting first:
    /// `standardise_targets` when the first loss was huge (an unscaled regression target);
    /// `skip_nonfinite` when the loss, gradients or weights became non-finite;
    /// `clip_global_norm` always (or advice to lower the threshold when clipping was active);
    /// for recurrent models (names with `rnn`/`lstm`/`gru`/`weight_hh`, a radius finding, or
    /// growth across time) `truncated_bptt` (with a window from the measured growth per time
    /// step), `cell { to = "lstm" }` for plain RNNs, `l2` when a recurrent radius was above 1;
    /// for error signals growing layer by layer `fewer_layers` and `smaller_init_gain`;
    /// `lr_backoff` when the weights changed a lot. Measured effects then re-rank them.
    pub fn finish(&self) -> Diagnosis {
        let (verdict, rule, suspect_by) = self.verdict();
        let mut d = Diagnosis {
            verdict,
            rule,
            checklist: self.checklist(),
            origin: self.origin(verdict, suspect_by.as_ref()),
            prescriptions: self.prescriptions(verdict),
            first_nonfinite_step: self.first_nonfinite_step,
            max_grad_norm: self.max_grad_norm,
        };
        if !self.measured.is_empty() {
            apply_measured_effects(&mut d, &self.measured);
        }
        d
    }
}

/// Re-ranks `diagnosis.prescriptions` by measured effects: cures measured `healthy` first
/// (lowest final loss first), then the unmeasured ones in their order, then those measured
/// `suspect`, then those measured `exploding`; each measured reason gains the measurement.
/// A cure measured `healthy` that was not prescribed is added (with that reason) when the run
/// was not healthy: this is the only way advice outside the signs (e.g. a ReLU activation)
/// is offered. Effects named `none` or `baseline` are ignored. Matching is by kind
/// ([`remedy_kind`]).
pub fn apply_measured_effects(diagnosis: &mut Diagnosis, effects: &[MeasuredEffect]) {
    let effects: Vec<&MeasuredEffect> = effects
        .iter()
        .filter(|e| !matches!(remedy_kind(&e.remedy), "" | "none" | "baseline"))
        .collect();
    let measured_text = |e: &MeasuredEffect| match e.final_loss {
        Some(l) => format!(
            "measured by compare: {}, final loss {}",
            e.verdict.as_str(),
            fmt_num(l)
        ),
        None => format!(
            "measured by compare: {}, no finite final loss",
            e.verdict.as_str()
        ),
    };
    let mut ranked: Vec<(u8, f64, usize, Prescription)> = Vec::new();
    for (i, p) in diagnosis.prescriptions.iter().enumerate() {
        let e = effects
            .iter()
            .find(|e| remedy_kind(&e.remedy) == remedy_kind(&p.remedy));
        let (class, loss, reason) = match e {
            Some(e) => {
                let class = match e.verdict {
                    Verdict::Healthy => 0,
                    Verdict::Suspect => 2,
                    Verdict::Exploding => 3,
                };
                (
                    class,
                    e.final_loss.unwrap_or(f64::INFINITY),
                    format!("{}. {}", p.reason, measured_text(e)),
                )
            }
            None => (1, f64::INFINITY, p.reason.clone()),
        };
        ranked.push((
            class,
            loss,
            i,
            Prescription {
                remedy: p.remedy.clone(),
                reason,
            },
        ));
    }
    if diagnosis.verdict != Verdict::Healthy {
        for e in &effects {
            let known = diagnosis
                .prescriptions
                .iter()
                .any(|p| remedy_kind(&p.remedy) == remedy_kind(&e.remedy));
            if !known
                && e.verdict == Verdict::Healthy
                && !ranked.iter().any(|r| r.3.remedy == e.remedy)
            {
                let i = ranked.len();
                ranked.push((
                    0,
                    e.final_loss.unwrap_or(f64::INFINITY),
                    i,
                    Prescription {
                        remedy: e.remedy.clone(),
                        reason: format!("not prescribed from the signs, but {}", measured_text(e)),
                    },
                ));
            }
        }
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    diagnosis.prescriptions = ranked.into_iter().map(|r| r.3).collect();
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
        let kinds: Vec<&str> = d.prescriptions.iter().map(|p| p.remedy.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "standardise_targets",
                "skip_nonfinite",
                "clip_global_norm",
                "lr_backoff"
            ]
        );
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
        let kinds: Vec<&str> = d.prescriptions.iter().map(|p| p.remedy.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "clip_global_norm",
                "truncated_bptt",
                "cell { to = \"lstm\" }",
                "lr_backoff",
                "l2"
            ]
        );
        // 1.3x per step measured across 40 steps (1.3^(39/39)); 10x after floor(ln 10 / ln 1.3) = 8 steps.
        assert!(
            d.prescriptions[1].reason.contains("about 8 steps"),
            "{}",
            d.prescriptions[1].reason
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
        let kinds: Vec<String> = d.prescriptions.iter().map(|p| p.remedy.clone()).collect();
        assert_eq!(kinds, vec!["clip_global_norm", "lr_backoff"]);
        let mut m = d.clone();
        apply_measured_effects(
            &mut m,
            &[
                MeasuredEffect {
                    remedy: "none".into(),
                    verdict: Verdict::Suspect,
                    final_loss: Some(0.3),
                },
                MeasuredEffect {
                    remedy: "clip_global_norm".into(),
                    verdict: Verdict::Suspect,
                    final_loss: Some(0.2),
                },
                MeasuredEffect {
                    remedy: "activation { to = \"relu\" }".into(),
                    verdict: Verdict::Healthy,
                    final_loss: Some(0.1),
                },
                MeasuredEffect {
                    remedy: "lr_backoff".into(),
                    verdict: Verdict::Healthy,
                    final_loss: Some(0.15),
                },
            ],
        );
        let kinds: Vec<&str> = m.prescriptions.iter().map(|p| p.remedy.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "activation { to = \"relu\" }",
                "lr_backoff",
                "clip_global_norm"
            ]
        );
        assert!(m.prescriptions[0].reason.starts_with(
            "not prescribed from the signs, but measured by compare: healthy, final loss 0.1"
        ));
        assert!(m.prescriptions[2]
            .reason
            .ends_with("measured by compare: suspect, final loss 0.2"));
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
        assert_eq!(remedy_kind("cell { to = \"lstm\" }"), "cell");
    }
}
