//! `gradguard claims`: the claims book.
//!
//! The article this project grew from makes claims about exploding gradients. The book runs
//! one experiment per claim, entirely from real runs (several seeds each), and judges each
//! claim by a rule stated in advance and computed from the numbers, whatever the article
//! says. Each [`Claim`] carries its text, the experiment in words, the rule, the tables of
//! numbers, a [`ClaimVerdict`] and one sentence on why.
//!
//! The rules shared by the "a change helps" claims (C4 to C10) compare a variant with the
//! spec it changes, run under the same seeds, on two things at once: explosion (the number
//! of seeds whose verdict is `exploding`) and learning (the number of seeds whose verdict is
//! `healthy`, which requires the final training loss to be below half the constant
//! predictor's). See [`effect`], [`helps_verdict`] and [`prevents_verdict`].

mod c01_growth;
mod c02_c03_signs;
mod c04_c10_cures;
mod experiments;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gradguard_core::{RunSummary, Verdict};
use serde::{Deserialize, Serialize};

use crate::compare::{CompareError, VariantOutcome};

/// Every claim's id, in book order.
pub const CLAIM_IDS: [&str; 10] = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10"];

/// How a claim fared against its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimVerdict {
    /// Every part of the rule held.
    Supported,
    /// No part of the rule held.
    NotSupported,
    /// Some parts held and some did not.
    Mixed,
}

impl ClaimVerdict {
    /// The verdict in words: `supported`, `not supported` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimVerdict::Supported => "supported",
            ClaimVerdict::NotSupported => "not supported",
            ClaimVerdict::Mixed => "mixed",
        }
    }

    /// `Supported` when all of `n` parts held, `NotSupported` when none did, else `Mixed`.
    pub fn from_parts(held: usize, n: usize) -> ClaimVerdict {
        if n > 0 && held == n {
            ClaimVerdict::Supported
        } else if held == 0 {
            ClaimVerdict::NotSupported
        } else {
            ClaimVerdict::Mixed
        }
    }
}

/// A small table of numbers, already formatted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// What the table shows, one line.
    pub caption: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows, one cell per column.
    pub rows: Vec<Vec<String>>,
}

/// One claim of the book, with its experiment, numbers and verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// `C1` ... `C10`.
    pub id: String,
    /// The claim, as the article makes it.
    pub claim: String,
    /// The experiment in words: model, data, training, what varies.
    pub experiment: String,
    /// The rule the verdict is computed by.
    pub rule: String,
    /// The numbers.
    pub tables: Vec<Table>,
    /// The verdict.
    pub verdict: ClaimVerdict,
    /// One sentence on why, quoting the numbers.
    pub why: String,
    /// Further observations and documented facts (with their sources).
    pub notes: Vec<String>,
    /// The raw numbers behind the tables (per variant, per seed), for machines.
    pub numbers: serde_json::Value,
    /// Wall-clock seconds the claim's runs took.
    pub seconds: f64,
}

/// The whole book.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// Seeds per experiment (seeds 1..=N).
    pub seeds: u64,
    /// The step override every training run used, when one was given (tests only).
    pub steps: Option<u64>,
    /// The claims, in book order.
    pub claims: Vec<Claim>,
    /// Wall-clock seconds of the whole book.
    pub seconds: f64,
}

/// How to run the book.
#[derive(Clone, Debug)]
pub struct ClaimsOptions {
    /// Seeds per experiment (seeds 1..=N). Default 5.
    pub seeds: u64,
    /// The claims to run (ids from [`CLAIM_IDS`]); empty for all.
    pub only: Vec<String>,
    /// Where the runs, claims.md and claims.json go. Default `runs/claims`.
    pub out_dir: PathBuf,
    /// Overrides every training run's number of steps (for quick checks; the book's numbers
    /// are only meaningful without it).
    pub steps: Option<u64>,
    /// Stop after the current step of the current run once this flag is raised.
    pub interrupt: Option<crate::run::Interrupt>,
}

impl Default for ClaimsOptions {
    fn default() -> Self {
        ClaimsOptions {
            seeds: 5,
            only: Vec::new(),
            out_dir: PathBuf::from("runs/claims"),
            steps: None,
            interrupt: None,
        }
    }
}

/// Why the book could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// An id that names no claim.
    #[error("unknown claim `{0}`: the claims are {ids}", ids = CLAIM_IDS.join(", "))]
    UnknownClaim(String),
    /// An experiment's spec is invalid (a bug in the book's embedded specs).
    #[error("claim {0}: {1}")]
    Spec(String, Box<crate::SpecError>),
    /// An experiment's runs failed.
    #[error("claim {0}: {1}")]
    Compare(String, Box<CompareError>),
    /// A measurement at initialisation failed.
    #[error("claim {0}: {1}")]
    Model(String, Box<gradguard_models::ModelError>),
    /// A cure does not apply to the claim's spec (a bug in the book).
    #[error("claim {0}: {1}")]
    Cure(String, String),
    /// Writing the book failed.
    #[error(transparent)]
    Report(#[from] gradguard_core::ReportError),
}

/// Parses a comma-separated list of claim ids (`C1,c3, C10`), in book order without
/// duplicates. Errors name the bad id and list the valid ones.
pub fn parse_ids(list: &str) -> Result<Vec<String>, ClaimsError> {
    let mut wanted = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = CLAIM_IDS
            .iter()
            .find(|id| id.eq_ignore_ascii_case(part))
            .ok_or_else(|| ClaimsError::UnknownClaim(part.to_string()))?;
        wanted.push(*id);
    }
    Ok(CLAIM_IDS
        .iter()
        .filter(|id| wanted.contains(id))
        .map(|id| id.to_string())
        .collect())
}

/// Runs the claims `opts` selects, calling `progress` after each, and returns the book
/// (without writing it: see [`Book::write`]).
pub fn run_claims(
    opts: &ClaimsOptions,
    progress: &mut dyn FnMut(&Claim),
) -> Result<Book, ClaimsError> {
    let started = Instant::now();
    let only: Vec<String> = if opts.only.is_empty() {
        CLAIM_IDS.iter().map(|s| s.to_string()).collect()
    } else {
        parse_ids(&opts.only.join(","))?
    };
    let ctx = experiments::Ctx {
        seeds: (1..=opts.seeds.max(1)).collect(),
        steps: opts.steps,
        out_dir: opts.out_dir.join("runs"),
        interrupt: opts.interrupt.clone(),
    };
    let mut claims = Vec::new();
    for id in &only {
        let t = Instant::now();
        let mut claim = experiments::run(id, &ctx)?;
        claim.seconds = t.elapsed().as_secs_f64();
        progress(&claim);
        claims.push(claim);
    }
    Ok(Book {
        seeds: opts.seeds.max(1),
        steps: opts.steps,
        claims,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Book {
    /// The book as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# The claims book\n\n");
        s.push_str(&format!(
            "Each claim about exploding gradients below is tested by real runs of gradguard ({} seed(s) per experiment, seeds 1..={}{}), and judged by the rule stated with it, computed from the numbers. \
             `exploding`, `healthy`, `not_learning` and `suspect` are gradguard's run verdicts: `healthy` requires that the run learned (its final loss on the whole training set is below half the best constant predictor's). \
             \"Held-out / const\" is the held-out loss divided by the constant predictor's held-out loss (below 1 is better than predicting the mean; a run with no finite held-out loss counts as infinitely bad). \
             The claims are about training as the frameworks do it, so every run here is *unguarded*: gradguard's own post-remedy check and transactional update are off, and an update that no remedy withholds is applied even when it is non-finite, as PyTorch's `optimizer.step()` would apply it (a normal `gradguard run` never writes a non-finite value into the weights). \
             Made by `gradguard claims` in {:.0} s.\n\n",
            self.seeds,
            self.seeds,
            self.steps
                .map(|n| format!(", every run cut to {n} steps: a quick check, not the book's numbers"))
                .unwrap_or_default(),
            self.seconds
        ));
        s.push_str("| claim | verdict | why |\n|---|---|---|\n");
        for c in &self.claims {
            s.push_str(&format!(
                "| [{}](#{}) | **{}** | {} |\n",
                c.id,
                c.id.to_lowercase(),
                c.verdict.as_str(),
                cell(&c.why)
            ));
        }
        for c in &self.claims {
            s.push('\n');
            s.push_str(&c.to_markdown());
        }
        s
    }

    /// Writes `claims.md` and `claims.json` into `dir` (created if needed) and returns
    /// their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), ClaimsError> {
        std::fs::create_dir_all(dir).map_err(|e| gradguard_core::ReportError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let md = dir.join("claims.md");
        let json = dir.join("claims.json");
        gradguard_report::write_atomically(&md, self.to_markdown().as_bytes())?;
        let text =
            serde_json::to_string_pretty(self).map_err(|e| gradguard_core::ReportError::Io {
                path: json.clone(),
                source: std::io::Error::other(e),
            })?;
        gradguard_report::write_atomically(&json, text.as_bytes())?;
        Ok((md, json))
    }
}

impl Claim {
    /// The claim as a Markdown section.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("## {}\n\n", self.id));
        s.push_str(&format!("> {}\n\n", self.claim));
        s.push_str(&format!("**Experiment.** {}\n\n", self.experiment));
        s.push_str(&format!("**Rule.** {}\n\n", self.rule));
        for t in &self.tables {
            if !t.caption.is_empty() {
                s.push_str(&format!("*{}*\n\n", t.caption));
            }
            let cols: Vec<String> = t.columns.iter().map(|c| cell(c)).collect();
            s.push_str(&format!("| {} |\n", cols.join(" | ")));
            s.push_str(&format!("|{}\n", "---|".repeat(t.columns.len())));
            for r in &t.rows {
                let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
                s.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "**Verdict: {}.** {}\n\n",
            self.verdict.as_str(),
            self.why
        ));
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How the seeds of one variant ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Seeds run.
    pub runs: usize,
    /// Seeds whose verdict is `exploding`.
    pub exploding: usize,
    /// Seeds whose verdict is `healthy` (they learned).
    pub healthy: usize,
    /// Seeds whose verdict is `not_learning`.
    pub not_learning: usize,
    /// Seeds whose verdict is `suspect`.
    pub suspect: usize,
}

impl Counts {
    /// Counts the verdicts of `summaries`.
    pub fn of<'a>(summaries: impl IntoIterator<Item = &'a RunSummary>) -> Counts {
        let mut c = Counts::default();
        for s in summaries {
            c.runs += 1;
            match s.verdict {
                Verdict::Exploding => c.exploding += 1,
                Verdict::Healthy => c.healthy += 1,
                Verdict::NotLearning => c.not_learning += 1,
                Verdict::Suspect => c.suspect += 1,
            }
        }
        c
    }
}

/// What a change did against the spec it changes, judged on explosion and learning together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The spec without the change never exploded: there was no explosion to help with.
    NothingToCure,
    /// No seed exploded and every seed learned (`healthy`).
    Cures,
    /// Fewer seeds exploded and more seeds learned than without the change.
    Helps,
    /// Fewer seeds exploded, but no more seeds learned (finite, not trained).
    FiniteOnly,
    /// No fewer seeds exploded.
    NoHelp,
}

impl Effect {
    /// The effect in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::NothingToCure => "nothing to cure",
            Effect::Cures => "cures",
            Effect::Helps => "helps",
            Effect::FiniteOnly => "finite only",
            Effect::NoHelp => "no help",
        }
    }

    /// Whether the change helped on both explosion and learning.
    pub fn helped(self) -> bool {
        matches!(self, Effect::Cures | Effect::Helps)
    }

    /// Whether fewer seeds exploded.
    pub fn fewer_explosions(self) -> bool {
        matches!(self, Effect::Cures | Effect::Helps | Effect::FiniteOnly)
    }
}

/// The effect of a change (`with`) against the spec it changes (`base`), same seeds:
/// `nothing to cure` when `base` never exploded; else `cures` when no seed of `with`
/// exploded and every one learned; `helps` when fewer seeds exploded and more learned;
/// `finite only` when fewer exploded but no more learned; `no help` otherwise.
pub fn effect(base: &Counts, with: &Counts) -> Effect {
    if base.exploding == 0 {
        Effect::NothingToCure
    } else if with.runs > 0 && with.exploding == 0 && with.healthy == with.runs {
        Effect::Cures
    } else if with.exploding < base.exploding && with.healthy > base.healthy {
        Effect::Helps
    } else if with.exploding < base.exploding {
        Effect::FiniteOnly
    } else {
        Effect::NoHelp
    }
}

/// The rule of the "X helps" claims: `supported` when every change tested helped (`cures`
/// or `helps`: fewer explosions AND more seeds learning), `not supported` when none made
/// fewer seeds explode, `mixed` otherwise (some helped, or some only kept runs finite).
pub fn helps_verdict(effects: &[Effect]) -> ClaimVerdict {
    let helped = effects.iter().filter(|e| e.helped()).count();
    let fewer = effects.iter().filter(|e| e.fewer_explosions()).count();
    if !effects.is_empty() && helped == effects.len() {
        ClaimVerdict::Supported
    } else if fewer == 0 {
        ClaimVerdict::NotSupported
    } else {
        ClaimVerdict::Mixed
    }
}

/// The rule of "X prevents explosion" claims: `supported` when every change tested `cures`
/// (no seed exploded and every seed learned), `not supported` when none made fewer seeds
/// explode, `mixed` otherwise.
pub fn prevents_verdict(effects: &[Effect]) -> ClaimVerdict {
    let cured = effects.iter().filter(|e| **e == Effect::Cures).count();
    let fewer = effects.iter().filter(|e| e.fewer_explosions()).count();
    if !effects.is_empty() && cured == effects.len() {
        ClaimVerdict::Supported
    } else if fewer == 0 {
        ClaimVerdict::NotSupported
    } else {
        ClaimVerdict::Mixed
    }
}

pub use crate::compare::median;

/// The numbers of one variant over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantStats {
    /// The variant's name.
    pub name: String,
    /// How the seeds ended.
    pub counts: Counts,
    /// Median over the seeds of held-out loss / the constant predictor's held-out loss
    /// (a seed with no finite held-out loss counts as infinite; `None` when the median is not
    /// finite).
    pub median_test_vs_const: Option<f64>,
    /// Per seed, the first step with a non-finite loss or gradient.
    pub first_nonfinite_steps: Vec<Option<u64>>,
    /// Median over the seeds of the largest global gradient norm (`None` when not finite).
    pub median_max_grad_norm: Option<f64>,
}

impl VariantStats {
    /// The numbers of a compare variant.
    pub fn of(o: &VariantOutcome) -> VariantStats {
        let sums: Vec<&RunSummary> = o.seeds.iter().map(|s| &s.summary).collect();
        VariantStats {
            name: o.name.clone(),
            counts: Counts::of(sums.iter().copied()),
            median_test_vs_const: median(
                sums.iter()
                    .map(|s| test_vs_const(s).unwrap_or(f64::INFINITY))
                    .collect(),
            ),
            first_nonfinite_steps: sums.iter().map(|s| s.first_nonfinite_step).collect(),
            median_max_grad_norm: median(sums.iter().map(|s| s.max_grad_norm).collect()),
        }
    }

    /// The median first non-finite step over the seeds that had one, with how many did.
    pub fn first_nonfinite_text(&self) -> String {
        let steps: Vec<f64> = self
            .first_nonfinite_steps
            .iter()
            .flatten()
            .map(|&s| s as f64)
            .collect();
        if steps.is_empty() {
            "never".into()
        } else {
            format!(
                "{} ({}/{} seeds)",
                median(steps.clone()).map_or("-".into(), |m| format!("{m:.0}")),
                steps.len(),
                self.counts.runs
            )
        }
    }
}

/// Held-out loss / the constant predictor's held-out loss, when both are finite.
pub fn test_vs_const(s: &RunSummary) -> Option<f64> {
    match (s.final_test_loss, s.baseline_test_loss) {
        (Some(t), Some(b)) if t.is_finite() && b.is_finite() && b > 0.0 => Some(t / b),
        _ => None,
    }
}

/// A ratio for tables: gradguard's one number formatter
/// ([`gradguard_core::float::fmt_short`]), `inf` for none.
pub fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "inf".into(), gradguard_core::float::fmt_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(runs: usize, exploding: usize, healthy: usize) -> Counts {
        Counts {
            runs,
            exploding,
            healthy,
            not_learning: runs - exploding - healthy,
            suspect: 0,
        }
    }

    #[test]
    fn effect_weighs_explosion_and_learning() {
        assert_eq!(effect(&c(5, 0, 5), &c(5, 0, 5)), Effect::NothingToCure);
        assert_eq!(effect(&c(5, 5, 0), &c(5, 0, 5)), Effect::Cures);
        assert_eq!(effect(&c(5, 5, 0), &c(5, 2, 3)), Effect::Helps);
        // finite but not learning: fewer explosions, no more healthy seeds
        assert_eq!(effect(&c(5, 5, 0), &c(5, 0, 0)), Effect::FiniteOnly);
        assert_eq!(effect(&c(5, 3, 2), &c(5, 3, 2)), Effect::NoHelp);
        assert_eq!(effect(&c(5, 3, 2), &c(5, 4, 1)), Effect::NoHelp);
        // as many explosions but more learning is still no help with explosion
        assert_eq!(effect(&c(5, 3, 0), &c(5, 3, 2)), Effect::NoHelp);
    }

    #[test]
    fn helps_rule_needs_every_change_to_help() {
        use Effect::*;
        assert_eq!(helps_verdict(&[Cures, Helps]), ClaimVerdict::Supported);
        assert_eq!(helps_verdict(&[Cures, NoHelp]), ClaimVerdict::Mixed);
        assert_eq!(helps_verdict(&[FiniteOnly]), ClaimVerdict::Mixed);
        assert_eq!(
            helps_verdict(&[NoHelp, NothingToCure]),
            ClaimVerdict::NotSupported
        );
        assert_eq!(helps_verdict(&[]), ClaimVerdict::NotSupported);
    }

    #[test]
    fn prevents_rule_needs_every_change_to_cure() {
        use Effect::*;
        assert_eq!(prevents_verdict(&[Cures, Cures]), ClaimVerdict::Supported);
        assert_eq!(prevents_verdict(&[Cures, Helps]), ClaimVerdict::Mixed);
        assert_eq!(prevents_verdict(&[FiniteOnly]), ClaimVerdict::Mixed);
        assert_eq!(prevents_verdict(&[NoHelp]), ClaimVerdict::NotSupported);
    }

    #[test]
    fn parts_and_ids() {
        assert_eq!(ClaimVerdict::from_parts(2, 2), ClaimVerdict::Supported);
        assert_eq!(ClaimVerdict::from_parts(1, 2), ClaimVerdict::Mixed);
        assert_eq!(ClaimVerdict::from_parts(0, 2), ClaimVerdict::NotSupported);
        assert_eq!(parse_ids("c3, C1,C1").unwrap(), vec!["C1", "C3"]);
        let e = parse_ids("C1,C11").unwrap_err().to_string();
        assert!(e.contains("`C11`") && e.contains("C1, C2"), "{e}");
    }

    /// The book end to end on a subset, cut short: every requested claim comes back with a
    /// verdict and numbers, and claims.md / claims.json are written and parse back.
    #[test]
    fn claims_book_smoke() {
        let dir =
            std::env::temp_dir().join(format!("gradguard-claims-smoke-{}", std::process::id()));
        let opts = ClaimsOptions {
            seeds: 1,
            only: vec!["c9".into(), "C2".into(), "C1".into()],
            out_dir: dir.clone(),
            steps: Some(30),
            interrupt: None,
        };
        let mut seen = Vec::new();
        let book = run_claims(&opts, &mut |c| seen.push(c.id.clone())).unwrap();
        assert_eq!(seen, vec!["C1", "C2", "C9"]);
        for c in &book.claims {
            assert!(
                !c.tables.is_empty() && !c.tables[0].rows.is_empty(),
                "{}",
                c.id
            );
            assert!(!c.why.is_empty() && !c.rule.is_empty(), "{}", c.id);
        }
        let (md, json) = book.write(&dir).unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        for id in ["## C1", "## C2", "## C9", "**Verdict: "] {
            assert!(text.contains(id), "{id} missing from claims.md");
        }
        let back: Book = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(back.claims.len(), 3);
        assert_eq!(back.claims[2].verdict, book.claims[2].verdict);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn median_is_finite_or_none() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![1.0, f64::INFINITY]), None);
        assert_eq!(median(vec![1.0, 2.0, f64::INFINITY]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
