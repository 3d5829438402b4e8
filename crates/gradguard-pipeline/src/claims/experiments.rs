//! What the claims book's experiments share: the context, the dispatch to each claim, spec
//! helpers, running variants, their tables and the shared rule texts.

use std::path::{Path, PathBuf};

use gradguard_core::{RunSummary, Sign};
use gradguard_report::SummaryReporter;
use serde_json::json;

use super::{
    effect, fmt_ratio, helps_verdict, prevents_verdict, Claim, ClaimsError, Counts, Effect, Table,
    VariantStats,
};
use crate::compare::{parse_cures, run_compare, variants, CompareOptions, Variant, VariantOutcome};
use crate::spec::ExperimentSpec;
use crate::spec_error::SpecFormat;

/// What every experiment shares: the seeds, the step override and where runs go.
pub(super) struct Ctx {
    /// The seeds every variant runs under.
    pub seeds: Vec<u64>,
    /// Overrides every training run's steps.
    pub steps: Option<u64>,
    /// `<out>/runs`.
    pub out_dir: PathBuf,
    /// Raised by a signal: the comparisons stop.
    pub interrupt: Option<crate::run::Interrupt>,
}

/// Runs claim `id`.
pub(super) fn run(id: &str, ctx: &Ctx) -> Result<Claim, ClaimsError> {
    match id {
        "C1" => super::c01_growth::c01(ctx),
        "C2" => super::c02_c03_signs::c02(ctx),
        "C3" => super::c02_c03_signs::c03(ctx),
        "C4" => super::c04_c10_cures::c04(ctx),
        "C5" => super::c04_c10_cures::c05(ctx),
        "C6" => super::c04_c10_cures::c06(ctx),
        "C7" => super::c04_c10_cures::c07(ctx),
        "C8" => super::c04_c10_cures::c08(ctx),
        "C9" => super::c04_c10_cures::c09(ctx),
        "C10" => super::c04_c10_cures::c10(ctx),
        other => Err(ClaimsError::UnknownClaim(other.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

pub(super) fn demo_spec(id: &str, name: &str) -> Result<ExperimentSpec, ClaimsError> {
    let demo = crate::demos::demo(name)
        .ok_or_else(|| ClaimsError::Cure(id.into(), format!("no demo `{name}`")))?;
    demo.spec()
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

pub(super) fn parse_spec(id: &str, text: &str) -> Result<ExperimentSpec, ClaimsError> {
    ExperimentSpec::parse(text, SpecFormat::Toml, Path::new(&format!("<claims:{id}>")))
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

pub(super) fn copy(id: &str, spec: &ExperimentSpec) -> Result<ExperimentSpec, ClaimsError> {
    spec.try_clone()
        .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))
}

/// Only summary.json per run: the book reads the summaries, and the charts would cost more
/// than the runs.
pub(super) fn lean(spec: &mut ExperimentSpec) {
    spec.default_reporters = false;
    spec.reporters = Some(vec![Box::new(SummaryReporter::default())]);
}

/// `none` (the spec as given) and one variant per cure label, each with only summary.json.
pub(super) fn cure_variants(
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
pub(super) fn with_remedy(
    id: &str,
    spec: &ExperimentSpec,
    toml: &str,
) -> Result<ExperimentSpec, ClaimsError> {
    let r: Box<dyn gradguard_core::Remedy> =
        crate::spec_error::parse_str(toml, SpecFormat::Toml, Path::new(&format!("<claims:{id}>")))
            .map_err(|e| ClaimsError::Spec(id.into(), Box::new(e)))?;
    let mut out = copy(id, spec)?;
    out.remedies.push(r);
    Ok(out)
}

/// A variant that is a rewritten spec rather than a named cure.
pub(super) fn custom_variant(name: &str, mut spec: ExperimentSpec) -> Variant {
    lean(&mut spec);
    Variant {
        name: name.into(),
        cure: None,
        spec,
    }
}

pub(super) fn run_variants(
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
            interrupt: ctx.interrupt.clone(),
            // The claims are about training as the frameworks do it, without gradguard's
            // guard: a non-finite update is applied as PyTorch would apply it.
            unguarded: true,
            jobs: 0,
            threads: None,
            executor: Default::default(),
        },
    )
    .map_err(|e| ClaimsError::Compare(id.into(), Box::new(e)))?;
    Ok(c.outcomes)
}

pub(super) fn stats(outcomes: &[VariantOutcome]) -> Vec<VariantStats> {
    outcomes.iter().map(VariantStats::of).collect()
}

pub(super) fn find<'a>(s: &'a [VariantStats], name: &str) -> Option<&'a VariantStats> {
    s.iter().find(|v| v.name == name)
}

pub(super) fn counts_text(c: &Counts) -> String {
    format!(
        "{}/{} exploding, {}/{} healthy",
        c.exploding, c.runs, c.healthy, c.runs
    )
}

/// The standard table of a comparison: per variant its seeds' verdicts, held-out loss
/// against the constant predictor, first non-finite step, and its effect against `base`.
pub(super) fn variants_table(caption: &str, s: &[VariantStats], base: &str) -> Table {
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
pub(super) fn effects(s: &[VariantStats], base: &str, names: &[&str]) -> Vec<(String, Effect)> {
    let Some(b) = find(s, base) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| find(s, n).map(|v| (v.name.clone(), effect(&b.counts, &v.counts))))
        .collect()
}

pub(super) fn effects_text(
    base: &VariantStats,
    e: &[(String, Effect)],
    s: &[VariantStats],
) -> String {
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

pub(super) const HELPS_RULE: &str = "Each change runs under the same seeds as the spec it changes (the base). Per change: `cures` when no seed exploded and every seed ended healthy (learned); `helps` when fewer seeds exploded AND more seeds ended healthy than the base; `finite only` when fewer exploded but no more learned; `no help` otherwise; `nothing to cure` when the base never exploded. Supported when every change tested cures or helps; not supported when none made fewer seeds explode; mixed otherwise.";

pub(super) const PREVENTS_RULE: &str = "Each change runs under the same seeds as the base. Supported when every change `cures` (no seed exploded and every seed ended healthy, i.e. learned: finite but untrained does not count as prevented); not supported when none made fewer seeds explode; mixed otherwise.";

/// A "X helps" claim over one comparison.
#[allow(clippy::too_many_arguments)]
pub(super) fn helps_claim(
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

pub(super) fn sign_step(s: &RunSummary, sign: Sign) -> Option<u64> {
    s.signs
        .iter()
        .find(|x| x.sign == sign)
        .map(|x| x.first_step)
}

pub(super) fn opt(x: Option<u64>) -> String {
    x.map_or("never".into(), |v| v.to_string())
}
