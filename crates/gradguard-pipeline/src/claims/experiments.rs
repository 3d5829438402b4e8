//! The experiments of the claims book, one function per claim, and the helpers they share.

use std::path::{Path, PathBuf};

use gradguard_core::{RunSummary, Sign, Verdict};
use gradguard_models::spec::{Activation, ModelSpec, TaskSpec};
use gradguard_models::Trainer;
use gradguard_report::SummaryReporter;
use serde_json::json;

use super::{
    effect, fmt_ratio, helps_verdict, median, prevents_verdict, Claim, ClaimVerdict, ClaimsError,
    Counts, Effect, Table, VariantStats,
};
use crate::compare::{parse_cures, run_compare, variants, CompareOptions, Variant, VariantOutcome};
use crate::probe::probe_spec;
use crate::spec::ExperimentSpec;
use crate::spec_error::SpecFormat;

const C01_SPEC: &str = include_str!("../../claims/c01-rnn-at-init.toml");
const C03_LSTM_SPEC: &str = include_str!("../../claims/c03-lstm-adding-clipped.toml");

/// What every experiment shares: the seeds, the step override and where runs go.
pub(super) struct Ctx {
    /// The seeds every variant runs under.
    pub seeds: Vec<u64>,
    /// Overrides every training run's steps.
    pub steps: Option<u64>,
    /// `<out>/runs`.
    pub out_dir: PathBuf,
}

/// Runs claim `id`.
pub(super) fn run(id: &str, ctx: &Ctx) -> Result<Claim, ClaimsError> {
    match id {
        "C1" => c01(ctx),
        "C2" => c02(ctx),
        "C3" => c03(ctx),
        "C4" => c04(ctx),
        "C5" => c05(ctx),
        "C6" => c06(ctx),
        "C7" => c07(ctx),
        "C8" => c08(ctx),
        "C9" => c09(ctx),
        "C10" => c10(ctx),
        other => Err(ClaimsError::UnknownClaim(other.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

fn demo_spec(id: &str, name: &str) -> Result<ExperimentSpec, ClaimsError> {
    let demo = crate::demos::demo(name)
        .ok_or_else(|| ClaimsError::Cure(id.into(), format!("no demo `{name}`")))?;
    demo.spec()
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

fn parse_spec(id: &str, text: &str) -> Result<ExperimentSpec, ClaimsError> {
    ExperimentSpec::parse(text, SpecFormat::Toml, Path::new(&format!("<claims:{id}>")))
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

fn copy(id: &str, spec: &ExperimentSpec) -> Result<ExperimentSpec, ClaimsError> {
    spec.try_clone()
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

/// Only summary.json per run: the book reads the summaries, and the charts would cost more
/// than the runs.
fn lean(spec: &mut ExperimentSpec) {
    spec.reporters = Some(vec![Box::new(SummaryReporter::default())]);
}

/// `none` (the spec as given) and one variant per cure label, each with only summary.json.
fn cure_variants(
    id: &str,
    spec: &ExperimentSpec,
    labels: &[&str],
) -> Result<Vec<Variant>, ClaimsError> {
    let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let cures = parse_cures(&labels).map_err(|e| ClaimsError::Compare(id.into(), Box::new(e)))?;
    let mut vs =
        variants(spec, &cures).map_err(|e| ClaimsError::Compare(id.into(), Box::new(e)))?;
    for v in &mut vs {
        lean(&mut v.spec);
    }
    Ok(vs)
}

/// `spec` with one more remedy, given as TOML (`kind = "l2"\nl2 = 0.01`).
fn with_remedy(id: &str, spec: &ExperimentSpec, toml: &str) -> Result<ExperimentSpec, ClaimsError> {
    let r: Box<dyn gradguard_core::Remedy> =
        crate::spec_error::parse_str(toml, SpecFormat::Toml, Path::new(&format!("<claims:{id}>")))
            .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))?;
    let mut out = copy(id, spec)?;
    out.remedies.push(r);
    Ok(out)
}

/// A variant that is a rewritten spec rather than a named cure.
fn custom_variant(name: &str, mut spec: ExperimentSpec) -> Variant {
    lean(&mut spec);
    Variant {
        name: name.into(),
        cure: None,
        spec,
    }
}

fn run_variants(
    id: &str,
    ctx: &Ctx,
    sub: &str,
    vs: Vec<Variant>,
) -> Result<Vec<VariantOutcome>, ClaimsError> {
    let c = run_compare(
        vs,
        &ctx.out_dir.join(id).join(sub),
        &CompareOptions {
            seeds: ctx.seeds.clone(),
            steps: ctx.steps,
            stop_when_beyond_saving: false,
        },
    )
    .map_err(|e| ClaimsError::Compare(id.into(), Box::new(e)))?;
    Ok(c.outcomes)
}

fn stats(outcomes: &[VariantOutcome]) -> Vec<VariantStats> {
    outcomes.iter().map(VariantStats::of).collect()
}

fn find<'a>(s: &'a [VariantStats], name: &str) -> Option<&'a VariantStats> {
    s.iter().find(|v| v.name == name)
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{}/{} exploding, {}/{} healthy",
        c.exploding, c.runs, c.healthy, c.runs
    )
}

/// The standard table of a comparison: per variant its seeds' verdicts, held-out loss
/// against the constant predictor, first non-finite step, and its effect against `base`.
fn variants_table(caption: &str, s: &[VariantStats], base: &str) -> Table {
    let b = find(s, base).map(|v| v.counts);
    Table {
        caption: caption.into(),
        columns: [
            "variant",
            "exploding",
            "healthy",
            "not learning",
            "suspect",
            "median held-out / const",
            "median first non-finite step",
            "effect vs base",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: s
            .iter()
            .map(|v| {
                let n = v.counts.runs;
                vec![
                    if v.name == base {
                        format!("{} (base)", v.name)
                    } else {
                        v.name.clone()
                    },
                    format!("{}/{n}", v.counts.exploding),
                    format!("{}/{n}", v.counts.healthy),
                    format!("{}/{n}", v.counts.not_learning),
                    format!("{}/{n}", v.counts.suspect),
                    fmt_ratio(v.median_test_vs_const),
                    v.first_nonfinite_text(),
                    match (v.name == base, b) {
                        (false, Some(b)) => effect(&b, &v.counts).as_str().to_string(),
                        _ => "-".into(),
                    },
                ]
            })
            .collect(),
    }
}

/// Effects of each named variant against `base`, with its name.
fn effects(s: &[VariantStats], base: &str, names: &[&str]) -> Vec<(String, Effect)> {
    let Some(b) = find(s, base) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| find(s, n).map(|v| (v.name.clone(), effect(&b.counts, &v.counts))))
        .collect()
}

fn effects_text(base: &VariantStats, e: &[(String, Effect)], s: &[VariantStats]) -> String {
    let parts: Vec<String> = e
        .iter()
        .filter_map(|(n, eff)| {
            find(s, n).map(|v| {
                format!(
                    "{n}: {} (held-out/const {}) -> {}",
                    counts_text(&v.counts),
                    fmt_ratio(v.median_test_vs_const),
                    eff.as_str()
                )
            })
        })
        .collect();
    format!(
        "{} had {} (held-out/const {}); {}.",
        base.name,
        counts_text(&base.counts),
        fmt_ratio(base.median_test_vs_const),
        parts.join("; ")
    )
}

const HELPS_RULE: &str = "Each change runs under the same seeds as the spec it changes (the base). Per change: `cures` when no seed exploded and every seed ended healthy (learned); `helps` when fewer seeds exploded AND more seeds ended healthy than the base; `finite only` when fewer exploded but no more learned; `no help` otherwise; `nothing to cure` when the base never exploded. Supported when every change tested cures or helps; not supported when none made fewer seeds explode; mixed otherwise.";

const PREVENTS_RULE: &str = "Each change runs under the same seeds as the base. Supported when every change `cures` (no seed exploded and every seed ended healthy, i.e. learned: finite but untrained does not count as prevented); not supported when none made fewer seeds explode; mixed otherwise.";

/// A "X helps" claim over one comparison.
#[allow(clippy::too_many_arguments)]
fn helps_claim(
    id: &str,
    ctx: &Ctx,
    claim: &str,
    experiment: &str,
    spec: &ExperimentSpec,
    labels: &[&str],
    extra: Vec<Variant>,
    prevents: bool,
) -> Result<(Claim, Vec<VariantStats>), ClaimsError> {
    let mut vs = cure_variants(id, spec, labels)?;
    let mut names: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    for v in extra {
        names.push(v.name.clone());
        vs.push(v);
    }
    let outcomes = run_variants(id, ctx, &spec.name, vs)?;
    let s = stats(&outcomes);
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let e = effects(&s, "none", &name_refs);
    let only: Vec<Effect> = e.iter().map(|x| x.1).collect();
    let verdict = if prevents {
        prevents_verdict(&only)
    } else {
        helps_verdict(&only)
    };
    let why = match find(&s, "none") {
        Some(b) => effects_text(b, &e, &s),
        None => "the base did not run.".into(),
    };
    let claim = Claim {
        id: id.into(),
        claim: claim.into(),
        experiment: experiment.into(),
        rule: if prevents { PREVENTS_RULE } else { HELPS_RULE }.into(),
        tables: vec![variants_table(
            &format!("{} over {} seed(s)", spec.name, ctx.seeds.len()),
            &s,
            "none",
        )],
        verdict,
        why,
        notes: Vec::new(),
        numbers: json!({ spec.name.clone(): &s }),
        seconds: 0.0,
    };
    Ok((claim, s))
}

fn sign_step(s: &RunSummary, sign: Sign) -> Option<u64> {
    s.signs
        .iter()
        .find(|x| x.sign == sign)
        .map(|x| x.first_step)
}

fn opt(x: Option<u64>) -> String {
    x.map_or("never".into(), |v| v.to_string())
}

// ---------------------------------------------------------------------------------------
// C1: growth through time at initialisation
// ---------------------------------------------------------------------------------------

/// Least-squares fit of y = a + b x: (b, R²).
pub(super) fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let r2 = if syy > 0.0 {
        (sxy * sxy) / (sxx * syy)
    } else {
        1.0
    };
    Some((b, r2))
}

/// One C1 measurement: the cell, radius and length, and the medians over the seeds.
#[derive(serde::Serialize)]
struct GrowthRow {
    cell: &'static str,
    radius: f64,
    length: usize,
    /// ||dL/dh_0|| / ||dL/dh_T||, median over seeds.
    ratio: Option<f64>,
    /// exp(-slope) of ln||dL/dh_t|| against t: the factor per step going back.
    factor: Option<f64>,
    /// R² of that fit.
    r2: Option<f64>,
}

/// The R² threshold for "log-norm linear in t".
const C1_R2: f64 = 0.9;

fn c01(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C1";
    let base = parse_spec(id, C01_SPEC)?;
    let radii = [0.5, 1.0, 1.5, 3.0];
    let lengths = [25usize, 50, 100];
    let mut rows: Vec<GrowthRow> = Vec::new();
    for cell in ["rnn", "lstm"] {
        for &radius in &radii {
            for &length in &lengths {
                let mut model = base.model.clone();
                if let ModelSpec::Rnn(r) = &mut model {
                    r.recurrent_init.gain = radius;
                    if cell == "lstm" {
                        model = ModelSpec::Lstm(r.clone());
                    }
                }
                let mut task = base.task.clone();
                if let TaskSpec::Adding(a) = &mut task {
                    a.seq_len = length;
                }
                let (mut ratios, mut factors, mut r2s) = (Vec::new(), Vec::new(), Vec::new());
                for &seed in &ctx.seeds {
                    let model_err = |e| ClaimsError::Model(id.into(), Box::new(e));
                    let mut t =
                        Trainer::new(&model, &task, &base.train, seed).map_err(model_err)?;
                    let report = t.probe(3).map_err(model_err)?;
                    let Some(series) = report.time_step_norms.first() else {
                        continue;
                    };
                    let v = &series.values;
                    if let (Some(first), Some(last)) = (v.first(), v.last()) {
                        ratios.push(if *last > 0.0 { first / last } else { f64::NAN });
                    }
                    let points: Vec<(f64, f64)> = v
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| x.is_finite() && **x > 0.0)
                        .map(|(t, x)| (t as f64, x.ln()))
                        .collect();
                    if let Some((b, r2)) = fit_line(&points) {
                        factors.push((-b).exp());
                        r2s.push(r2);
                    }
                }
                rows.push(GrowthRow {
                    cell,
                    radius,
                    length,
                    ratio: median(ratios),
                    factor: median(factors),
                    r2: median(r2s),
                });
            }
        }
    }
    let rnn: Vec<&GrowthRow> = rows.iter().filter(|r| r.cell == "rnn").collect();
    // Part 1: geometric wherever the norm changed at least tenfold over the sequence.
    let changed: Vec<&&GrowthRow> = rnn
        .iter()
        .filter(|r| r.ratio.is_some_and(|x| x.ln().abs() >= 10f64.ln()))
        .collect();
    let min_r2 = changed
        .iter()
        .filter_map(|r| r.r2)
        .fold(f64::INFINITY, f64::min);
    let geometric = !changed.is_empty() && changed.iter().all(|r| r.r2.is_some_and(|x| x >= C1_R2));
    // Part 2: at every length the factor orders with the radius.
    let ordered = lengths.iter().all(|&l| {
        let f: Vec<Option<f64>> = rnn
            .iter()
            .filter(|r| r.length == l)
            .map(|r| r.factor)
            .collect();
        f.windows(2)
            .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if b > a))
    });
    let verdict = ClaimVerdict::from_parts(usize::from(geometric) + usize::from(ordered), 2);
    let longest = lengths[lengths.len() - 1];
    let factors_at = |cell: &str| -> String {
        rows.iter()
            .filter(|r| r.cell == cell && r.length == longest)
            .map(|r| format!("{} at radius {}", fmt_ratio(r.factor), r.radius))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = format!(
        "Plain RNN: {} of {} configurations whose gradient changed at least tenfold had ln||dL/dh_t|| linear in t with R² >= {C1_R2} (lowest R² {}); per-step factors at T={longest}: {} ({}).",
        changed.iter().filter(|r| r.r2.is_some_and(|x| x >= C1_R2)).count(),
        changed.len(),
        if min_r2.is_finite() { format!("{min_r2:.3}") } else { "-".into() },
        factors_at("rnn"),
        if ordered { "ordered with the radius at every length" } else { "NOT ordered with the radius at every length" },
    );
    let table = Table {
        caption: format!(
            "||dL/dh_t|| at initialisation, medians over {} seed(s); factor = exp(-slope) of the least-squares fit of ln||dL/dh_t|| against t (the growth per step going back in time)",
            ctx.seeds.len()
        ),
        columns: [
            "cell",
            "radius of W_hh",
            "T",
            "||dL/dh_0|| / ||dL/dh_T||",
            "factor per step",
            "R² of the fit",
            "factor / radius",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.cell.to_string(),
                    format!("{}", r.radius),
                    r.length.to_string(),
                    fmt_ratio(r.ratio),
                    fmt_ratio(r.factor),
                    r.r2.map_or("-".into(), |x| format!("{x:.3}")),
                    fmt_ratio(r.factor.map(|f| f / r.radius)),
                ]
            })
            .collect(),
    };
    let big = rnn
        .iter()
        .filter(|r| r.length == longest)
        .max_by(|a, b| a.radius.total_cmp(&b.radius));
    let mut notes = vec![format!(
        "The activation: the backward Jacobian is diag(1 - h_t²) W_hhᵀ, so tanh's derivative shrinks the per-step factor below the radius; the larger the radius, the more the units saturate. At radius {} the measured factor is {} per step ({} of the radius): saturation keeps a large radius from growing the gradient anywhere near radius^T.",
        big.map_or(0.0, |r| r.radius),
        big.map_or("-".into(), |r| fmt_ratio(r.factor)),
        big.map_or("-".into(), |r| fmt_ratio(r.factor.map(|f| f / r.radius))),
    )];
    notes.push(format!(
        "LSTM at the same shape (W_hh orthogonal per gate block at the same gain): per-step factors at T={longest}: {}. Its cell state carries the gradient additively through the forget gate, so the radius of W_hh does not set the growth the way it does for the plain RNN.",
        factors_at("lstm")
    ));
    Ok(Claim {
        id: id.into(),
        claim: "In a recurrent network, gradients grow (or shrink) geometrically with the sequence length, by a factor set by the recurrent weights and the activation.".into(),
        experiment: "No training: a plain tanh RNN (32 units, W_ih Glorot-uniform, W_hh orthogonal times a gain, so its spectral radius is the gain) reads the adding problem (batch 32); three forward/backward passes at initialisation per seed give ||dL/dh_t|| for every time step t (the loss reads only the last step). Varies: the radius (0.5, 1, 1.5, 3) and the sequence length T (25, 50, 100); the same for an LSTM. Spec: crates/gradguard-pipeline/claims/c01-rnn-at-init.toml.".into(),
        rule: format!(
            "Two parts, for the plain RNN. (1) Geometric: in every configuration where ||dL/dh_0|| / ||dL/dh_T|| is at least 10 or at most 0.1, the median R² of the straight-line fit of ln||dL/dh_t|| against t is >= {C1_R2}. (2) Set by the weights: at every length the per-step factor strictly increases with the radius. Supported when both hold, mixed when one does, not supported when neither."
        ),
        tables: vec![table],
        verdict,
        why,
        notes,
        numbers: json!({ "rows": rows }),
        seconds: 0.0,
    })
}

// ---------------------------------------------------------------------------------------
// C2: NaN order
// ---------------------------------------------------------------------------------------

fn order_text(items: &[(&str, Option<u64>)]) -> String {
    let mut seen: Vec<(&str, u64)> = items
        .iter()
        .filter_map(|(n, s)| s.map(|s| (*n, s)))
        .collect();
    if seen.is_empty() {
        return "none non-finite".into();
    }
    seen.sort_by_key(|x| x.1);
    let mut groups: Vec<(u64, Vec<&str>)> = Vec::new();
    for (n, s) in seen {
        match groups.last_mut() {
            Some(g) if g.0 == s => g.1.push(n),
            _ => groups.push((s, vec![n])),
        }
    }
    groups
        .iter()
        .map(|(s, ns)| format!("{} ({s})", ns.join(" + ")))
        .collect::<Vec<_>>()
        .join(" then ")
}

fn c02(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C2";
    let spec = demo_spec(id, "regression-sgd")?;
    let vs = cure_variants(id, &spec, &[])?;
    let outcomes = run_variants(id, ctx, "regression-sgd", vs)?;
    let seeds: Vec<&RunSummary> = outcomes
        .iter()
        .flat_map(|o| o.seeds.iter().map(|s| &s.summary))
        .collect();
    let mut rows = Vec::new();
    let mut per_seed = Vec::new();
    let (mut loss_first, mut grad_first, mut exploded) = (0, 0, 0);
    for s in &seeds {
        let g = sign_step(s, Sign::GradNonfinite);
        let l = sign_step(s, Sign::LossNonfinite);
        let w = sign_step(s, Sign::WeightsNonfinite);
        exploded += usize::from(s.verdict == Verdict::Exploding);
        if let (Some(l), Some(w)) = (l, w) {
            loss_first += usize::from(l < w);
        }
        if let Some(g) = g {
            grad_first += usize::from(l.is_none_or(|l| g < l));
        }
        rows.push(vec![
            s.seed.to_string(),
            s.verdict.as_str().to_string(),
            opt(g),
            opt(l),
            opt(w),
            order_text(&[("gradient", g), ("loss", l), ("weights", w)]),
        ]);
        per_seed.push(json!({"seed": s.seed, "verdict": s.verdict, "grad_nonfinite": g, "loss_nonfinite": l, "weights_nonfinite": w}));
    }
    let n = seeds.len();
    let verdict = ClaimVerdict::from_parts(loss_first, n);
    let why = format!(
        "{exploded}/{n} seeds exploded; the loss became non-finite strictly before the weights in {loss_first}/{n}; the gradient was non-finite before the loss in {grad_first}/{n}."
    );
    Ok(Claim {
        id: id.into(),
        claim: "Exploding gradients make the loss, and then the weights, NaN.".into(),
        experiment: "The classic regression (demo `regression-sgd`: unscaled make_regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, batch 32, 100 epochs), no remedy. Per seed, the first step (optimiser updates from 1) at which gradguard's detectors saw a non-finite gradient (`grad_nonfinite`), loss (`loss_nonfinite`) and weight (`weights_nonfinite`). The loss is computed in f64, the gradients and weights are f32; an update from a non-finite gradient is applied (as PyTorch would), and the run stops one step after the weights are non-finite.".into(),
        rule: "Per seed, the claim's order holds when the loss was first non-finite at a step strictly before the weights. Supported when it holds for every seed, not supported when for none, mixed otherwise.".into(),
        tables: vec![Table {
            caption: "first non-finite step of each quantity, per seed".into(),
            columns: ["seed", "verdict", "gradient", "loss", "weights", "order"]
                .iter()
                .map(|c| c.to_string())
                .collect(),
            rows,
        }],
        verdict,
        why,
        notes: vec![
            "gradguard computes the loss in f64, so a huge but finite f32 prediction still gives a finite loss while the f32 gradient (proportional to the error times the activations) overflows to inf first; a framework computing the loss in f32 would see the loss overflow at about the same step.".into(),
            "The weights become non-finite in the update made from a non-finite gradient; the detectors see them at the next step, where the loss computed from those weights is non-finite too.".into(),
        ],
        numbers: json!({ "seeds": per_seed }),
        seconds: 0.0,
    })
}

// ---------------------------------------------------------------------------------------
// C3: the classic signs, in exploding and in healthy runs
// ---------------------------------------------------------------------------------------

/// A sign is characteristic of explosion when seen in at least this fraction of exploding runs...
const C3_MIN_EXPLODING: f64 = 0.5;
/// ...and in at most this fraction of healthy runs.
const C3_MAX_HEALTHY: f64 = 0.2;

fn sign_words(s: Sign) -> &'static str {
    match s {
        Sign::LossNotConverging => "loss poor",
        Sign::LossUnstable => "loss unstable",
        Sign::LossNonfinite => "loss NaN",
        Sign::WeightsChangeLarge => "weights change a lot",
        Sign::WeightsNonfinite => "weights NaN",
        Sign::GradNormAboveOne => "error gradient consistently above 1.0",
        _ => "",
    }
}

/// Whether a sign seen in `e` of `ne` exploding and `h` of `nh` healthy runs is
/// characteristic of explosion (see [`C3_MIN_EXPLODING`], [`C3_MAX_HEALTHY`]).
pub(super) fn characteristic(e: usize, ne: usize, h: usize, nh: usize) -> bool {
    ne > 0
        && nh > 0
        && e as f64 / ne as f64 >= C3_MIN_EXPLODING
        && h as f64 / nh as f64 <= C3_MAX_HEALTHY
}

fn c03(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C3";
    let reg = demo_spec(id, "regression-sgd")?;
    let deep = demo_spec(id, "deep-mlp")?;
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let lstm = parse_spec(id, C03_LSTM_SPEC)?;
    let mut outcomes = Vec::new();
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "regression-sgd",
            cure_variants(id, &reg, &["clip_global_norm", "standardise_targets"])?,
        )?
        .into_iter()
        .map(|o| ("regression-sgd", o)),
    );
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "deep-mlp",
            cure_variants(id, &deep, &["smaller_init_gain"])?,
        )?
        .into_iter()
        .map(|o| ("deep-mlp", o)),
    );
    outcomes.extend(
        run_variants(id, ctx, "rnn-long-sequences", cure_variants(id, &rnn, &[])?)?
            .into_iter()
            .map(|o| ("rnn-long-sequences", o)),
    );
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "lstm-adding-clipped",
            cure_variants(id, &lstm, &[])?,
        )?
        .into_iter()
        .map(|o| ("lstm-adding-clipped", o)),
    );
    let all: Vec<&RunSummary> = outcomes
        .iter()
        .flat_map(|(_, o)| o.seeds.iter().map(|s| &s.summary))
        .collect();
    let exploding: Vec<&&RunSummary> = all
        .iter()
        .filter(|s| s.verdict == Verdict::Exploding)
        .collect();
    let healthy: Vec<&&RunSummary> = all
        .iter()
        .filter(|s| s.verdict == Verdict::Healthy)
        .collect();
    let (ne, nh) = (exploding.len(), healthy.len());
    let pct = |k: usize, n: usize| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{k}/{n} ({:.0}%)", 100.0 * k as f64 / n as f64)
        }
    };
    let mut rows = Vec::new();
    let mut per_sign = Vec::new();
    let mut held = Vec::new();
    let mut common_in_healthy = Vec::new();
    for sign in Sign::CLASSIC {
        let e = exploding
            .iter()
            .filter(|s| sign_step(s, sign).is_some())
            .count();
        let h = healthy
            .iter()
            .filter(|s| sign_step(s, sign).is_some())
            .count();
        let ch = characteristic(e, ne, h, nh);
        if ch {
            held.push(sign.as_str());
        } else {
            common_in_healthy.push(format!(
                "{} ({} exploding, {} healthy)",
                sign.as_str(),
                pct(e, ne),
                pct(h, nh)
            ));
        }
        rows.push(vec![
            format!("{} (`{}`)", sign_words(sign), sign.as_str()),
            pct(e, ne),
            pct(h, nh),
            if ch { "yes" } else { "no" }.into(),
        ]);
        per_sign.push(
            json!({"sign": sign, "exploding_runs": e, "healthy_runs": h, "characteristic": ch}),
        );
    }
    let config_rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(demo, o)| {
            let c = Counts::of(o.seeds.iter().map(|s| &s.summary));
            vec![
                format!("{demo} + {}", o.name),
                format!("{}/{}", c.exploding, c.runs),
                format!("{}/{}", c.healthy, c.runs),
                format!("{}/{}", c.runs - c.exploding - c.healthy, c.runs),
            ]
        })
        .collect();
    let verdict = ClaimVerdict::from_parts(held.len(), Sign::CLASSIC.len());
    let why = format!(
        "Over {ne} exploding and {nh} healthy runs, {} of the 6 signs are characteristic ({}); not characteristic: {}.",
        held.len(),
        if held.is_empty() { "none".to_string() } else { held.join(", ") },
        if common_in_healthy.is_empty() { "none".to_string() } else { common_in_healthy.join("; ") },
    );
    Ok(Claim {
        id: id.into(),
        claim: "The signs of exploding gradients are: the loss is poor, the loss is unstable, the loss is NaN, the weights change a lot, the weights are NaN, the error gradient stays above 1.0.".into(),
        experiment: "Runs that explode and runs that do not, under gradguard's default detectors, all seeds: `regression-sgd` as given, with `clip_global_norm` (max_norm 1) and with `standardise_targets`; `deep-mlp` as given and with `smaller_init_gain`; `rnn-long-sequences` as given; an LSTM with clipping on the adding problem (claims/c03-lstm-adding-clipped.toml). The runs are pooled by their verdict (exploding or healthy; suspect and not_learning runs are left out), and each sign counted once per run when its detector fired at least once.".into(),
        rule: format!(
            "A sign is characteristic when seen in at least {:.0}% of exploding runs and at most {:.0}% of healthy runs. Supported when all six are characteristic, not supported when none is, mixed otherwise.",
            100.0 * C3_MIN_EXPLODING,
            100.0 * C3_MAX_HEALTHY
        ),
        tables: vec![
            Table {
                caption: "runs where each sign was seen".into(),
                columns: ["sign", "exploding runs", "healthy runs", "characteristic"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows,
            },
            Table {
                caption: "the runs".into(),
                columns: ["configuration", "exploding", "healthy", "other"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows: config_rows,
            },
        ],
        verdict,
        why,
        notes: Vec::new(),
        numbers: json!({ "exploding_runs": ne, "healthy_runs": nh, "signs": per_sign }),
        seconds: 0.0,
    })
}

// ---------------------------------------------------------------------------------------
// C4: depth
// ---------------------------------------------------------------------------------------

fn c04(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C4";
    let deep = demo_spec(id, "deep-mlp")?;
    let (mut claim, s) = helps_claim(
        id,
        ctx,
        "A network with fewer layers is less likely to explode.",
        "",
        &deep,
        &["fewer_layers"],
        Vec::new(),
        false,
    )?;
    let depths = [2usize, 4, 8, 12];
    let mut sweep = Vec::new();
    let mut growth = Vec::new();
    for &d in &depths {
        let mut spec = copy(id, &deep)?;
        if let ModelSpec::Mlp(m) = &mut spec.model {
            m.hidden = vec![32; d];
        }
        let mut factors = Vec::new();
        let mut totals = Vec::new();
        for &seed in &ctx.seeds {
            let r = probe_spec(&spec, 3, Some(seed))
                .map_err(|e| ClaimsError::Model(id.into(), Box::new(e)))?;
            if let Some(g) = r.layer_growth {
                factors.push(g.factor);
                totals.push(g.total);
            }
        }
        growth.push((median(factors), median(totals)));
        sweep.push(custom_variant(&format!("{d} layers"), spec));
    }
    let sw = stats(&run_variants(id, ctx, "depth-sweep", sweep)?);
    let explode: Vec<usize> = sw.iter().map(|v| v.counts.exploding).collect();
    let monotone = explode.windows(2).all(|w| w[1] >= w[0]) && explode.first() < explode.last();
    let fewer = effects(&s, "none", &["fewer_layers"])
        .first()
        .is_some_and(|e| e.1.helped());
    claim.verdict = ClaimVerdict::from_parts(usize::from(fewer) + usize::from(monotone), 2);
    claim.rule = format!(
        "Two parts. (1) `fewer_layers` on deep-mlp, judged by the shared rule: {HELPS_RULE} (2) In a depth sweep at the same initialisation, the number of exploding seeds never falls as depth grows and is larger at the deepest than at the shallowest. Supported when both hold, mixed when one does, not supported when neither."
    );
    claim.experiment = "Demo `deep-mlp`: an MLP of 10 hidden ReLU layers of 32 units, Glorot-uniform at gain 2.5, on a regression (1000 samples, 20 features, targets scaled by 0.01), SGD lr 0.01 momentum 0.9, batch 32, 20 epochs. Varies: `fewer_layers` (the first 5 hidden layers kept), and a sweep of 2, 4, 8 and 12 hidden layers at the same initialisation. The growth of the error signal per layer (and over the network, from the head back to the first layer) is measured at initialisation.".into();
    let mut t = variants_table("depth sweep at the same initialisation", &sw, "");
    t.columns.pop();
    t.columns.push("growth per layer at init".into());
    t.columns.push("growth over the network at init".into());
    for (row, (f, tot)) in t.rows.iter_mut().zip(&growth) {
        row.pop();
        row.push(fmt_ratio(*f));
        row.push(fmt_ratio(*tot));
    }
    claim.tables.push(t);
    claim.why = format!(
        "{} Depth sweep 2/4/8/12: {} seeds exploding ({}).",
        claim.why,
        explode
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        if monotone {
            "rising with depth"
        } else {
            "not rising with depth"
        }
    );
    claim.numbers = json!({ "deep-mlp": s, "depth_sweep": sw, "growth_at_init": growth });
    Ok(claim)
}

// ---------------------------------------------------------------------------------------
// C5 .. C10: the cures
// ---------------------------------------------------------------------------------------

fn c05(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C5";
    let reg = demo_spec(id, "regression-sgd")?;
    let mut b8 = copy(id, &reg)?;
    b8.train.batch_size = 8;
    let (mut claim, s1) = helps_claim(
        id,
        ctx,
        "Smaller batches make exploding gradients less likely.",
        "",
        &reg,
        &["smaller_batch"],
        vec![custom_variant("batch_size=8", b8)],
        false,
    )?;
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let mut r8 = copy(id, &rnn)?;
    r8.train.batch_size = 8;
    let mut vs = cure_variants(id, &rnn, &["smaller_batch"])?;
    vs.push(custom_variant("batch_size=8", r8));
    let s2 = stats(&run_variants(id, ctx, "rnn-long-sequences", vs)?);
    let e1 = effects(&s1, "none", &["smaller_batch", "batch_size=8"]);
    let e2 = effects(&s2, "none", &["smaller_batch", "batch_size=8"]);
    claim.verdict = helps_verdict(&e1.iter().chain(&e2).map(|e| e.1).collect::<Vec<_>>());
    claim.experiment = "Demo `regression-sgd` (unscaled regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, 100 epochs) at batch 32 (as given), 16 (`smaller_batch`) and 8; the number of epochs stays, so a smaller batch makes more updates. Demo `rnn-long-sequences` (plain tanh RNN, W_hh radius 1.5, adding problem of length 100, SGD lr 0.05 momentum 0.9, 300 steps) at batch 32 (as given), 16 and 8, the same number of steps.".into();
    claim.tables.push(variants_table(
        &format!("rnn-long-sequences over {} seed(s)", ctx.seeds.len()),
        &s2,
        "none",
    ));
    if let Some(b) = find(&s2, "none") {
        claim.why = format!(
            "regression-sgd: {} rnn-long-sequences: {}",
            claim.why,
            effects_text(b, &e2, &s2)
        );
    }
    claim.numbers = json!({ "regression-sgd": s1, "rnn-long-sequences": s2 });
    Ok(claim)
}

fn c06(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C6";
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let (claim, _) = helps_claim(
        id,
        ctx,
        "Truncated backpropagation through time makes exploding gradients in recurrent networks less likely.",
        "Demo `rnn-long-sequences`: a plain tanh RNN of 32 units, W_hh orthogonal with spectral radius 1.5, on the adding problem of length 100, SGD lr 0.05 momentum 0.9, batch 32, 300 steps, full BPTT. Varies: gradients through the last 10 (`truncated_bptt=10`) or 20 (`truncated_bptt=20`) steps only.",
        &rnn,
        &["truncated_bptt=10", "truncated_bptt=20"],
        Vec::new(),
        false,
    )?;
    Ok(claim)
}

fn c07(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C7";
    let deep = demo_spec(id, "deep-mlp")?;
    let vs = cure_variants(id, &deep, &["activation=tanh", "activation=sigmoid"])?;
    let s = stats(&run_variants(id, ctx, "deep-mlp", vs)?);
    // ReLU is the change: each saturating activation is its base.
    let relu = find(&s, "none").map(|v| v.counts);
    let mut eff = Vec::new();
    for base in ["activation=tanh", "activation=sigmoid"] {
        if let (Some(b), Some(r)) = (find(&s, base), relu) {
            eff.push((base, effect(&b.counts, &r)));
        }
    }
    let verdict = helps_verdict(&eff.iter().map(|e| e.1).collect::<Vec<_>>());
    // Growth of the error signal per layer at initialisation, per activation and gain.
    let mut growth_rows = Vec::new();
    let mut growth = Vec::new();
    for gain in [2.5, 1.0] {
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            let mut spec = copy(id, &deep)?;
            if let ModelSpec::Mlp(m) = &mut spec.model {
                m.activation = Some(act);
                m.activations = None;
                m.init.gain = gain;
            }
            let mut f = Vec::new();
            let mut tot = Vec::new();
            for &seed in &ctx.seeds {
                let r = probe_spec(&spec, 3, Some(seed))
                    .map_err(|e| ClaimsError::Model(id.into(), Box::new(e)))?;
                if let Some(g) = r.layer_growth {
                    f.push(g.factor);
                    tot.push(g.total);
                }
            }
            let (f, tot) = (median(f), median(tot));
            growth_rows.push(vec![
                act.name().to_string(),
                format!("{gain}"),
                fmt_ratio(f),
                fmt_ratio(tot),
            ]);
            growth.push(json!({"activation": act.name(), "gain": gain, "factor_per_layer": f, "total": tot}));
        }
    }
    let sig = |gain: f64| {
        growth
            .iter()
            .find(|g| g["activation"] == "sigmoid" && g["gain"] == gain)
            .and_then(|g| g["factor_per_layer"].as_f64())
    };
    let mut notes = Vec::new();
    if let (Some(a), Some(b)) = (sig(2.5), sig(1.0)) {
        notes.push(if a < 1.0 && b < 1.0 {
            format!("Sigmoid's error signal shrinks layer by layer ({} per layer at gain 2.5, {} at gain 1): its problem is vanishing, not exploding, gradients.", fmt_ratio(Some(a)), fmt_ratio(Some(b)))
        } else {
            format!("Sigmoid's error signal changes by {} per layer at gain 2.5 and {} at gain 1.", fmt_ratio(Some(a)), fmt_ratio(Some(b)))
        });
    }
    let why = format!(
        "ReLU (as given) had {}; {}.",
        relu.map_or("-".into(), |c| counts_text(&c)),
        eff.iter()
            .filter_map(|(b, e)| find(&s, b).map(|v| format!(
                "against {} ({}): {}",
                b.trim_start_matches("activation="),
                counts_text(&v.counts),
                e.as_str()
            )))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(Claim {
        id: id.into(),
        claim: "Using ReLU instead of sigmoid or tanh makes exploding gradients less likely.".into(),
        experiment: "Demo `deep-mlp` (10 hidden layers of 32 units, Glorot-uniform at gain 2.5, SGD lr 0.01 momentum 0.9, batch 32, 20 epochs) with ReLU (as given), tanh and sigmoid. The growth of the error signal per layer at initialisation is also measured for each activation at gain 2.5 and at the standard gain 1.".into(),
        rule: format!("ReLU is the change, and each saturating activation is a base: {HELPS_RULE}"),
        tables: vec![
            variants_table(&format!("deep-mlp over {} seed(s); the effect column reads against the base `none` (ReLU), the verdict uses ReLU against each activation", ctx.seeds.len()), &s, "none"),
            Table {
                caption: "error-signal growth per layer at initialisation (from the head back to the first layer; medians over the seeds)".into(),
                columns: ["activation", "init gain", "factor per layer", "over the network"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows: growth_rows,
            },
        ],
        verdict,
        why,
        notes,
        numbers: json!({ "deep-mlp": s, "growth_at_init": growth }),
        seconds: 0.0,
    })
}

fn c08(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C8";
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let (claim, _) = helps_claim(
        id,
        ctx,
        "An LSTM instead of a plain RNN makes exploding gradients less likely.",
        "Demo `rnn-long-sequences` (plain tanh RNN of 32 units, W_hh spectral radius 1.5, adding problem of length 100, SGD lr 0.05 momentum 0.9, batch 32, 300 steps, full BPTT) with the cell replaced by an LSTM (`cell=lstm`) or a GRU (`cell=gru`), same initialisers.",
        &rnn,
        &["cell=lstm", "cell=gru"],
        Vec::new(),
        false,
    )?;
    Ok(claim)
}

fn c09(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C9";
    let reg = demo_spec(id, "regression-sgd")?;
    let (mut claim, s) = helps_claim(
        id,
        ctx,
        "Gradient clipping (by norm or by value) prevents exploding gradients. Keras' defaults are clipnorm=1 and clipvalue=0.5.",
        "Demo `regression-sgd` (unscaled regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, batch 32, 100 epochs) without clipping and with `clip_global_norm` (max_norm 1, all gradients together as torch's clip_grad_norm_ and Keras' global_clipnorm), `clip_norm` (max_norm 1 per tensor, as Keras' clipnorm) and `clip_value` (0.5 per element, as Keras' clipvalue).",
        &reg,
        &["clip_global_norm", "clip_norm", "clip_value"],
        Vec::new(),
        true,
    )?;
    let part = |n: &str| {
        find(&s, n).map_or("-".into(), |v| {
            format!(
                "{} (held-out/const {})",
                counts_text(&v.counts),
                fmt_ratio(v.median_test_vs_const)
            )
        })
    };
    claim.notes = vec![
        "Documented fact, not a measurement: Keras 3 optimizers default to clipnorm=None, clipvalue=None and global_clipnorm=None, i.e. no clipping at all (keras/src/optimizers/base_optimizer.py, `BaseOptimizer.__init__` signature); PyTorch clips only when clip_grad_norm_ or clip_grad_value_ is called. So \"clipnorm=1 and clipvalue=0.5\" are example values, not defaults.".into(),
        format!(
            "What those example values do here: max_norm 1 per tensor (`clip_norm`): {}; clip value 0.5 (`clip_value`): {}; max_norm 1 over all gradients (`clip_global_norm`): {}.",
            part("clip_norm"),
            part("clip_value"),
            part("clip_global_norm")
        ),
    ];
    Ok(claim)
}

fn c10(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C10";
    let reg = demo_spec(id, "regularization")?;
    let sgd = demo_spec(id, "regression-sgd")?;
    let labels = ["l1", "l2", "l1=0.01", "l2=0.01"];
    let strong = |spec: &ExperimentSpec| -> Result<Vec<Variant>, ClaimsError> {
        Ok(vec![
            custom_variant(
                "l1=0.01",
                with_remedy(id, spec, "kind = \"l1\"\nl1 = 0.01")?,
            ),
            custom_variant(
                "l2=0.01",
                with_remedy(id, spec, "kind = \"l2\"\nl2 = 0.01")?,
            ),
        ])
    };
    let (mut claim, s1) = helps_claim(
        id,
        ctx,
        "L1 or L2 weight penalties make exploding gradients less likely.",
        "",
        &reg,
        &labels[..2],
        strong(&reg)?,
        false,
    )?;
    let mut vs = cure_variants(id, &sgd, &labels[..2])?;
    vs.extend(strong(&sgd)?);
    let s2 = stats(&run_variants(id, ctx, "regression-sgd", vs)?);
    let mut all: Vec<Effect> = effects(&s1, "none", &labels).iter().map(|e| e.1).collect();
    let e2 = effects(&s2, "none", &labels);
    all.extend(e2.iter().map(|e| e.1));
    claim.verdict = helps_verdict(&all);
    claim.experiment = "Demo `regularization` (the unscaled regression at lr 0.001, MLP 20-25-1 ReLU, SGD momentum 0.9, batch 32, 100 epochs: at the edge of exploding) and demo `regression-sgd` (the same at lr 0.01), each without a penalty, with L1 and with L2 at 0.001 (`l1`, `l2`: the remedies' documented example strengths) and at 0.01 (the strengths the `regularization` demo's comment names); L2 has Keras semantics (the penalty's gradient added to the loss's).".into();
    claim.tables.push(variants_table(
        &format!("regression-sgd over {} seed(s)", ctx.seeds.len()),
        &s2,
        "none",
    ));
    if let Some(b) = find(&s2, "none") {
        claim.why = format!(
            "regularization: {} regression-sgd: {}",
            claim.why,
            effects_text(b, &e2, &s2)
        );
    }
    claim.numbers = json!({ "regularization": s1, "regression-sgd": s2 });
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_line_recovers_slope_and_r2() {
        let pts: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 - 0.5 * t as f64)).collect();
        let (b, r2) = fit_line(&pts).unwrap();
        assert!((b + 0.5).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
        // a zig-zag has no linear trend
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|t| (t as f64, if t % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        assert!(fit_line(&pts).unwrap().1 < 0.1);
        assert!(fit_line(&pts[..2]).is_none());
    }

    #[test]
    fn characteristic_needs_common_in_exploding_and_rare_in_healthy() {
        assert!(characteristic(5, 10, 2, 10));
        assert!(!characteristic(4, 10, 0, 10));
        assert!(!characteristic(10, 10, 3, 10));
        assert!(!characteristic(10, 10, 0, 0));
    }

    #[test]
    fn order_groups_equal_steps() {
        assert_eq!(
            order_text(&[
                ("gradient", Some(3)),
                ("loss", Some(4)),
                ("weights", Some(4))
            ]),
            "gradient (3) then loss + weights (4)"
        );
        assert_eq!(order_text(&[("loss", None)]), "none non-finite");
    }
}
