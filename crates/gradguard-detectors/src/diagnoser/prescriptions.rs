//! The prescriptions: one table of rules over what the [`Diagnoser`] accumulated, then
//! [`apply_evidence`] to re-rank them by what the cures did when run.
//!
//! Each [`Rule`] is a condition over the [`Facts`], the cure, its reason and a base rank.
//! Every rule whose condition holds prescribes its cure; higher ranks come first, and a cure
//! kind is prescribed once (its highest-ranked rule). A healthy run gets none. For a run that
//! did not learn only the rules that hold without a sign of explosion apply
//! (`standardise_targets`): the cures of an explosion are not its cures.

use gradguard_core::{
    CellName, Cure, CureStatus, Diagnosis, Evidence, Finding, Prescription, Sign, Verdict,
};

use super::verdict::Decisive;
use super::{Diagnoser, MeasuredCure};
use crate::util::fmt_num;

/// Growth per layer or time step above which the probe at initialisation blames the
/// initialisation or the depth.
const INIT_GROWTH_BLAME: f64 = 1.1;

/// One prescription rule: when `when` holds, `cure` is prescribed for `reason`, ranked by
/// `rank` (higher first).
struct Rule {
    /// The base rank: the higher, the more fitting.
    rank: u32,
    /// Whether the rule applies to the run.
    when: fn(&Facts<'_>) -> bool,
    /// What to prescribe.
    cure: fn(&Facts<'_>) -> Cure,
    /// Why, with the figure that led to it and where and when it was measured.
    reason: fn(&Facts<'_>) -> String,
}

/// The prescription rules, most fitting first. Growth across layers or time steps counts only
/// when measured at initialisation (the probe) or at or before the blow-up's first sign
/// (growth measured later is inflated by the blow-up itself). Never prescribed from signs:
/// `l2` (in the claims book's runs, C10, a penalty stopped no explosion) and advice about
/// vanishing gradients (offered only when measured to work, [`apply_evidence`]).
const RULES: &[Rule] = &[
    Rule {
        rank: 100,
        when: |f| f.large_first_loss.is_some(),
        cure: |_| Cure::StandardiseTargets,
        reason: |f| {
            let (step, l0) = f.large_first_loss.unwrap_or_default();
            format!(
                "the first loss was {} (step {step}, >= {}): a regression target far from unit scale makes the first gradients huge; standardise the targets (subtract the training mean, divide by the training standard deviation) so the loss starts near 1",
                fmt_num(l0),
                fmt_num(f.d.rules.large_initial_loss)
            )
        },
    },
    Rule {
        rank: 80,
        when: |f| f.explosion && f.clipped.is_none(),
        cure: |_| remedy("clip_global_norm"),
        reason: |f| {
            format!(
                "the global gradient norm reached {}{}; clipping all gradients together to a fixed norm (max_norm = 1.0, as PyTorch's clip_grad_norm_) bounds every update while keeping its direction",
                fmt_num(f.d.max_grad_norm),
                f.first_where
            )
        },
    },
    Rule {
        rank: 78,
        when: |f| f.explosion && f.recurrent && f.time_growth.is_some(),
        cure: |f| Cure::TruncatedBptt {
            window: f.bptt_window(),
        },
        reason: |f| {
            let what = f.time_growth.as_ref().map_or("", |t| t.1.as_str());
            let window = f.bptt_window();
            format!(
                "the gradient of {what}, 10x every {window} steps: truncating backpropagation through time to about {window} steps bounds the product of Jacobians"
            )
        },
    },
    Rule {
        rank: 76,
        when: |f| f.explosion && f.layer_growth.is_some(),
        cure: |_| Cure::SmallerInitGain { to: None },
        reason: |f| {
            format!(
                "{}: a smaller initialisation gain brings each layer's Jacobian norm nearer 1",
                f.layer_growth.as_deref().unwrap_or_default()
            )
        },
    },
    Rule {
        rank: 74,
        when: |f| f.explosion && f.layer_growth.is_some(),
        cure: |_| Cure::FewerLayers,
        reason: |f| {
            format!(
                "{}: fewer layers shorten the product of layer Jacobians",
                f.layer_growth.as_deref().unwrap_or_default()
            )
        },
    },
    Rule {
        rank: 72,
        when: |f| f.explosion && f.recurrent && !f.d.gated_names,
        cure: |_| Cure::Cell { to: CellName::Lstm },
        reason: |f| {
            // The radius as first measured, at or before the blow-up's first sign: a radius
            // read after an update wrecked W_hh says nothing about what would have helped.
            let radius =
                f.d.acc(Sign::RecurrentRadiusAboveOne)
                    .first
                    .as_ref()
                    .filter(|r| f.before_onset(r.step) && r.value.is_finite())
                    .map(|r| {
                        format!(
                            " (`{}` had spectral radius {} at step {})",
                            r.layer.as_deref().unwrap_or("?"),
                            fmt_num(r.value),
                            r.step
                        )
                    })
                    .unwrap_or_default();
            format!("a plain RNN multiplies its gradient by W_hh at every time step{radius}; an LSTM cell's additive cell state and gates make it grow far less through time (docs/CLAIMS.md, C1, at initialisation with T = 100: 1.05x per step at radius 3 against 1.34x for a plain RNN); whether it also learns is what verification measures")
        },
    },
    Rule {
        rank: 65,
        when: |f| f.explosion && f.recurrent && f.time_growth.is_none(),
        cure: |_| Cure::TruncatedBptt {
            window: gradguard_core::cure::DEFAULT_BPTT_WINDOW,
        },
        reason: |_| {
            "the model is recurrent: backpropagation through time multiplies one Jacobian per time step; truncating it to a window bounds that product (no growth through time was measured before the blow-up)".to_string()
        },
    },
    Rule {
        rank: 60,
        when: |f| {
            f.explosion && (f.verdict == Verdict::Exploding || f.d.seen(Sign::WeightsChangeLarge))
        },
        cure: |_| Cure::SmallerLr,
        reason: |f| {
            match &f.d.acc(Sign::WeightsChangeLarge).first {
            Some(w) => format!(
                "an update moved `{}` by {} times its norm at step {}: a learning rate 10x smaller makes every update 10x smaller",
                w.layer.as_deref().unwrap_or("?"),
                fmt_num(w.value),
                w.step
            ),
            None => "each update is the learning rate times the gradient: a learning rate 10x smaller makes every update 10x smaller".to_string(),
        }
        },
    },
    Rule {
        rank: 50,
        when: |f| f.explosion && f.clipped.is_some(),
        cure: |_| remedy("clip_global_norm"),
        reason: |f| {
            let (k, n) = f.clipped.unwrap_or_default();
            format!(
                "clipping (`{k}`) was active and clipped {n} step(s), and the run was still {}: the other cures address the cause",
                f.verdict.as_str()
            )
        },
    },
    Rule {
        rank: 20,
        when: |f| f.explosion && f.nonfinite.is_some() && f.activations("skip_nonfinite") > 0,
        cure: |_| remedy("skip_nonfinite"),
        reason: |f| {
            format!(
                "already active: it acted at {} step(s) and kept non-finite updates out of the weights; it guards the weights but does not cure the cause",
                f.activations("skip_nonfinite")
            )
        },
    },
    Rule {
        rank: 20,
        when: |f| f.explosion && f.nonfinite.is_some() && f.activations("skip_nonfinite") == 0,
        cure: |_| remedy("skip_nonfinite"),
        reason: |f| {
            match f.nonfinite {
            Some(d) => format!("{} at step {}: skipping updates whose loss or gradients are non-finite keeps NaN out of the weights; a guard, not a cure: the cause remains", d.phrase(), d.step()),
            None => String::new(),
        }
        },
    },
];

/// A remedy kind as a cure.
fn remedy(kind: &str) -> Cure {
    Cure::Remedy(kind.to_string())
}

/// What the rules read: the accumulator, and the figures derived from it once.
struct Facts<'a> {
    /// Everything accumulated.
    d: &'a Diagnoser,
    /// The run's verdict (never healthy here).
    verdict: Verdict,
    /// Whether a sign of explosion decided the verdict (exploding or suspect; not
    /// `not_learning`).
    explosion: bool,
    /// The first finite loss and its step, when it was at least `large_initial_loss`.
    large_first_loss: Option<(u64, f64)>,
    /// The first event that became non-finite.
    nonfinite: Option<&'a Decisive>,
    /// `" (first sign: ...)"`: where the trouble showed first, or empty.
    first_where: String,
    /// The blow-up's onset: the first sign of the streak that led to the decisive event (or
    /// the sign that made the run suspect).
    onset: Option<u64>,
    /// The first clipping remedy that acted (by what it declared of itself) and how often.
    clipped: Option<(&'a str, u64)>,
    /// Whether the model is recurrent (by its tensors' names, a radius or growth through time).
    recurrent: bool,
    /// Growth per time step measured before the blow-up or at initialisation, and where.
    time_growth: Option<(f64, String)>,
    /// Growth per layer measured at initialisation or before the blow-up, in words.
    layer_growth: Option<String>,
}

impl<'a> Facts<'a> {
    fn new(d: &'a Diagnoser, verdict: Verdict, suspect_by: Option<&Finding>) -> Self {
        let first_sign = d
            .decisive()
            .and_then(|(_, p)| p)
            .or(d.streak_first.as_ref());
        let first_where = first_sign
            .map(|f| format!(" (first sign: {})", Diagnoser::describe_precursor(f)))
            .unwrap_or_default();
        let onset = match d.decisive() {
            Some((dec, p)) => Some(p.map_or(dec.step(), |p| p.step.min(dec.step()))),
            None => suspect_by.map(|f| f.step),
        };
        let clipped = d.clipping.iter().find_map(|kind| {
            d.remedies
                .iter()
                .find(|r| r.kind == *kind && r.activations > 0)
                .map(|r| (r.kind.as_str(), r.activations))
        });
        let mut facts = Facts {
            d,
            verdict,
            explosion: matches!(verdict, Verdict::Exploding | Verdict::Suspect),
            large_first_loss: d
                .first_loss
                .filter(|(_, l0)| *l0 >= d.rules.large_initial_loss),
            nonfinite: d.nonfinite.as_ref().map(|(dec, _)| dec),
            first_where,
            onset,
            clipped,
            recurrent: d.recurrent_names || d.max_radius.is_some() || d.time_growth.is_some(),
            time_growth: None,
            layer_growth: None,
        };
        let blowup = onset
            .map(|s| format!(", before the blow-up's first sign at step {s}"))
            .unwrap_or_default();
        facts.time_growth = match (&d.time_growth, &d.initial_growth.per_time_step) {
            (Some((f, name, step)), _) if *f > 1.0 && facts.before_onset(*step) => Some((
                *f,
                format!(
                    "`{name}` grew {}x per time step at step {step}{blowup}",
                    fmt_num(*f)
                ),
            )),
            (_, Some((f, name))) if *f > 1.0 => Some((
                *f,
                format!(
                    "`{name}` grew {}x per time step at initialisation (the probe, before step 1)",
                    fmt_num(*f)
                ),
            )),
            _ => None,
        };
        // The initialisation or the depth is blamed only on growth measured before the
        // blow-up: at initialisation by the probe, or in the run before the first spike.
        facts.layer_growth = match (&d.initial_growth.per_layer, &d.layer_growth) {
            (Some((f, n)), _) if *f > INIT_GROWTH_BLAME => Some(format!(
                "the error signal grew {}x per layer over {n} layers at initialisation (the probe, before step 1)",
                fmt_num(*f)
            )),
            (Some(_), _) => None,
            (None, Some((f, layer, step))) if facts.before_onset(*step) => Some(format!(
                "the error signal grew {}x per layer from `{layer}` at step {step}{blowup}",
                fmt_num(*f)
            )),
            (None, _) => None,
        };
        facts
    }

    /// Whether `step` is at or before the blow-up's onset (always, without one).
    fn before_onset(&self, step: u64) -> bool {
        self.onset.is_none_or(|o| step <= o)
    }

    /// How often the remedy `kind` changed gradients or asked for an action.
    fn activations(&self, kind: &str) -> u64 {
        self.d
            .remedies
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.activations)
            .unwrap_or(0)
    }

    /// The truncation window from the measured growth per time step: the steps it takes to
    /// grow 10x, `floor(ln 10 / ln f)`, at least 1.
    fn bptt_window(&self) -> usize {
        let f = self.time_growth.as_ref().map_or(10.0, |t| t.0);
        (10f64.ln() / f.ln()).floor().clamp(1.0, 1e6) as usize
    }
}

impl Diagnoser {
    /// The prescriptions of [`RULES`] that hold, highest rank first, each kind once, each
    /// `untested`.
    pub(super) fn prescriptions(
        &self,
        verdict: Verdict,
        suspect_by: Option<&Finding>,
    ) -> Vec<Prescription> {
        if verdict == Verdict::Healthy {
            return Vec::new();
        }
        let facts = Facts::new(self, verdict, suspect_by);
        let mut held: Vec<&Rule> = RULES.iter().filter(|r| (r.when)(&facts)).collect();
        held.sort_by_key(|r| std::cmp::Reverse(r.rank));
        let mut out: Vec<Prescription> = Vec::new();
        for rule in held {
            let cure = (rule.cure)(&facts);
            if !out.iter().any(|p| p.remedy.kind() == cure.kind()) {
                out.push(Prescription::untested(cure, (rule.reason)(&facts)));
            }
        }
        out
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
