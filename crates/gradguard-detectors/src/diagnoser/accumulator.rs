//! The [`Diagnoser`]: what it keeps of each event (bounded summaries), and
//! [`Diagnoser::finish`], which asks the verdict, origin and prescription rules.

use gradguard_core::{
    Diagnosis, Event, Finding, Learning, Role, Sign, SignSummary, SummaryRemedy, Verdict,
};

use super::verdict::Decisive;
use super::{apply_evidence, DiagnosisRules, InitialGrowth, MeasuredCure};

/// Per sign: how often it was found, its first finding and its largest value.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct SignAcc {
    pub(super) count: u64,
    pub(super) first: Option<Finding>,
    pub(super) max_value: Option<f64>,
    pub(super) max_layer: Option<String>,
}

/// Accumulates a run's events and builds its [`Diagnosis`]. See the [module documentation](super).
///
/// It serialises whole (serde), so a checkpoint can hold it and a resumed run diagnose every
/// step, before and after the interruption.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Diagnoser {
    pub(super) rules: DiagnosisRules,
    /// Every sign, built-in then declared ([`Sign::all`]): the checklist's order, and the
    /// index into `signs`.
    #[serde(skip, default = "Sign::all")]
    pub(super) order: Vec<Sign>,
    pub(super) signs: Vec<SignAcc>,
    pub(super) steps: u64,
    pub(super) first_loss: Option<(u64, f64)>,
    pub(super) first_nonfinite_step: Option<u64>,
    pub(super) max_grad_norm: f64,
    pub(super) max_ratio: Option<(f64, u64, String)>,
    pub(super) max_radius: Option<(f64, u64, String)>,
    /// The first growth-across-time finding: value, series, step.
    pub(super) time_growth: Option<(f64, String, u64)>,
    /// The first growth-across-layers finding: value, series, step.
    pub(super) layer_growth: Option<(f64, String, u64)>,
    pub(super) initial_growth: InitialGrowth,
    pub(super) learning: Option<Learning>,
    pub(super) recurrent_names: bool,
    pub(super) gated_names: bool,
    pub(super) streak_first: Option<Finding>,
    pub(super) last_precursor: Option<u64>,
    pub(super) nonfinite: Option<(Decisive, Option<Finding>)>,
    pub(super) wreck: Option<(Decisive, Option<Finding>)>,
    pub(super) remedies: Vec<SummaryRemedy>,
    /// The remedies that acted and declared themselves clipping remedies
    /// ([`gradguard_core::ActionRecord::clips`]), in order of first use.
    pub(super) clipping: Vec<String>,
    pub(super) measured: Vec<MeasuredCure>,
}

impl Default for Diagnoser {
    fn default() -> Self {
        Self::new(DiagnosisRules::default())
    }
}

/// The signs that may start the blow-up's streak (see the module documentation's *Origin*),
/// most telling first.
const PRECURSORS: [Sign; 6] = [
    Sign::GradSpike,
    Sign::GradGrowthAcrossLayers,
    Sign::GradNormAboveOne,
    Sign::RecurrentRadiusAboveOne,
    Sign::WeightsChangeLarge,
    Sign::LossUnstable,
];

impl Diagnoser {
    /// A diagnoser with the given rules.
    pub fn new(rules: DiagnosisRules) -> Self {
        Diagnoser {
            rules,
            order: Sign::all(),
            signs: vec![SignAcc::default(); Sign::all().len()],
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
            clipping: Vec::new(),
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
            if a.clips.is_some() && !self.clipping.contains(&a.remedy) {
                self.clipping.push(a.remedy.clone());
            }
        }
        self.take_findings(e);
        self.check_decisive(e, grads_bad);
    }

    fn take_findings(&mut self, e: &Event) {
        let mut precursor: Option<&Finding> = None;
        for f in &e.findings {
            let i = self.sign_index(f.sign);
            let acc = &mut self.signs[i];
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

    /// The decisive event (non-finite first, else wrecked weights) and its precursor.
    pub(super) fn decisive(&self) -> Option<(&Decisive, Option<&Finding>)> {
        self.nonfinite
            .as_ref()
            .or(self.wreck.as_ref())
            .map(|(d, p)| (d, p.as_ref()))
    }

    /// Where `sign` is counted: its place in [`Sign::all`]. Every declared sign is registered
    /// at link time, so it is there; a sign that is not (which `declare_sign!` cannot make) is
    /// appended rather than miscounted.
    fn sign_index(&mut self, sign: Sign) -> usize {
        match self.order.iter().position(|&s| s == sign) {
            Some(i) => i,
            None => {
                self.order.push(sign);
                self.signs.resize(self.order.len(), SignAcc::default());
                self.order.len() - 1
            }
        }
    }

    pub(super) fn acc(&self, sign: Sign) -> &SignAcc {
        static NONE: SignAcc = SignAcc {
            count: 0,
            first: None,
            max_value: None,
            max_layer: None,
        };
        self.order
            .iter()
            .position(|&s| s == sign)
            .and_then(|i| self.signs.get(i))
            .unwrap_or(&NONE)
    }

    pub(super) fn seen(&self, sign: Sign) -> bool {
        self.acc(sign).count > 0
    }

    fn checklist(&self) -> Vec<SignSummary> {
        self.order
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
            verdict_step: match verdict {
                Verdict::Exploding => self.decisive().map(|(d, _)| d.step()),
                _ => suspect_by.as_ref().map(|f| f.step),
            },
        };
        if !self.measured.is_empty() {
            apply_evidence(&mut d, &self.measured);
        }
        d
    }
}
