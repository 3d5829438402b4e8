//! The comparison of several variants of one experiment (the same seed and data order under
//! different remedies): a console table ([`format_compare_table`]) and an HTML page
//! ([`render_compare_html`]) with one chart overlaying every variant's loss, one overlaying
//! every variant's global gradient norm, one their global weight norm, and the same table.
//!
//! Table columns: variant, verdict, first non-finite step, final train loss, final test
//! loss, max gradient norm (before remedies), final weight norm (the global L2 norm of every
//! weight and bias at the last step, which is where L1 and L2 penalties show), steps changed
//! (steps at which any remedy changed the gradients: clipping, and also L1/L2 penalties,
//! which change every step's gradients without clipping them), wall time. A missing value is shown as `-` (e.g. a final loss
//! that was not finite, which `summary.json` records as null).

use std::path::Path;

use gradguard_core::{Event, ReportError, RunSummary};

use crate::chart::{Chart, Line};
use crate::html_page::{self, escape, opt_number, opt_step, table};
use crate::series::BoundedSeries;

/// One variant of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareVariant {
    /// Its name (e.g. `none`, `clip_global_norm`, `lstm`).
    pub name: String,
    /// Its run summary.
    pub summary: RunSummary,
    /// Training loss per step (non-finite values kept; they are drawn as markers).
    pub loss: Vec<(u64, f64)>,
    /// Global gradient norm before remedies, per step.
    pub grad_norm: Vec<(u64, f64)>,
    /// Global L2 norm of the weights per step, `sqrt(Σ_layers ||w||²)` (non-finite values kept).
    pub weight_norm: Vec<(u64, f64)>,
    /// Global L2 norm of the weights at the last recorded step (`None` before any step).
    pub final_weight_norm: Option<f64>,
    /// Steps at which any remedy changed the gradients (an action with `changed`): clipping
    /// that cut the norm, and also penalties such as L1/L2, which never clip.
    pub steps_changed: u64,
    /// Wall-clock time of the run, seconds.
    pub wall_time_s: f64,
}

/// Collects what a [`CompareVariant`] needs from a stream of events, in bounded memory
/// (min/max downsampling past `max_points`, see [`BoundedSeries`]).
#[derive(Clone, Debug)]
pub struct CompareRecorder {
    loss: BoundedSeries,
    grad_norm: BoundedSeries,
    weight_norm: BoundedSeries,
    final_weight_norm: Option<f64>,
    steps_changed: u64,
}

impl CompareRecorder {
    /// A recorder keeping up to `max_points` points per series before downsampling.
    pub fn new(max_points: usize) -> Self {
        CompareRecorder {
            loss: BoundedSeries::new(max_points),
            grad_norm: BoundedSeries::new(max_points),
            weight_norm: BoundedSeries::new(max_points),
            final_weight_norm: None,
            steps_changed: 0,
        }
    }

    /// Records one step.
    pub fn push(&mut self, e: &Event) {
        self.loss.push(e.step, e.loss);
        self.grad_norm.push(e.step, e.grad_norm);
        let sum_sq: f64 = e.layers.iter().map(|l| l.weight_norm * l.weight_norm).sum();
        self.weight_norm.push(e.step, sum_sq.sqrt());
        self.final_weight_norm = Some(sum_sq.sqrt());
        if e.actions.iter().any(|a| a.changed) {
            self.steps_changed += 1;
        }
    }

    /// The variant, once the run ended.
    pub fn finish(
        self,
        name: impl Into<String>,
        summary: RunSummary,
        wall_time_s: f64,
    ) -> CompareVariant {
        CompareVariant {
            name: name.into(),
            summary,
            loss: all_points(&self.loss),
            grad_norm: all_points(&self.grad_norm),
            weight_norm: all_points(&self.weight_norm),
            final_weight_norm: self.final_weight_norm,
            steps_changed: self.steps_changed,
            wall_time_s,
        }
    }
}

fn all_points(s: &BoundedSeries) -> Vec<(u64, f64)> {
    let mut v = s.points();
    v.extend(s.nonfinite_points());
    v.sort_by_key(|p| p.0);
    v
}

impl CompareVariant {
    /// A variant from a run's events (e.g. read back from its `events.jsonl`).
    pub fn from_events<'a>(
        name: impl Into<String>,
        summary: RunSummary,
        events: impl IntoIterator<Item = &'a Event>,
        wall_time_s: f64,
    ) -> Self {
        let mut rec = CompareRecorder::new(BoundedSeries::DEFAULT_CAPACITY);
        for e in events {
            rec.push(e);
        }
        rec.finish(name, summary, wall_time_s)
    }
}

fn dash(x: Option<String>) -> String {
    x.unwrap_or_else(|| "-".into())
}

/// The held-out loss as a multiple of the best constant predictor's held-out loss (the mean
/// target for MSE, the class prior for cross-entropy): below 1 the model beat predicting a
/// constant. Scale-free, so variants that rescale the targets compare fairly.
pub fn test_loss_vs_baseline(s: &RunSummary) -> Option<f64> {
    match (s.final_test_loss, s.baseline_test_loss) {
        (Some(l), Some(b)) if b > 0.0 && l.is_finite() => Some(l / b),
        _ => None,
    }
}

/// The comparison as a plain-text table for the console (one header line, one line per
/// variant, columns aligned).
pub fn format_compare_table(variants: &[CompareVariant]) -> String {
    let classification = variants.iter().any(|v| v.summary.test_accuracy.is_some());
    let mut headers = vec![
        "variant",
        "verdict",
        "first non-finite",
        "train loss",
        "held-out loss",
        "vs constant",
    ];
    if classification {
        headers.push("held-out acc");
    }
    headers.extend([
        "max grad norm",
        "final weight norm",
        "steps changed",
        "wall time",
    ]);
    let rows: Vec<Vec<String>> = variants
        .iter()
        .map(|v| {
            let s = &v.summary;
            let mut row = vec![
                v.name.clone(),
                s.verdict.as_str().to_string(),
                dash(s.first_nonfinite_step.map(|x| x.to_string())),
                dash(s.final_train_loss.map(crate::format_number)),
                dash(s.final_test_loss.map(crate::format_number)),
                dash(test_loss_vs_baseline(s).map(|r| format!("{}x", crate::format_number(r)))),
            ];
            if classification {
                row.push(dash(s.test_accuracy.map(|a| format!("{:.1}%", a * 100.0))));
            }
            row.extend([
                crate::format_number(s.max_grad_norm),
                dash(v.final_weight_norm.map(crate::format_number)),
                v.steps_changed.to_string(),
                format!("{:.1} s", v.wall_time_s),
            ]);
            row
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w - c.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if i <= 1 {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&headers);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// Writes the comparison page to `path` (its directory is created; the file is written
/// atomically): the table, the overlaid loss, gradient-norm and weight-norm charts, and each
/// variant's signs and prescriptions. `seeds` are the seeds every variant ran under (the
/// figures shown are the first seed's); empty means each variant's own summary seed.
pub fn render_compare_html(
    variants: &[CompareVariant],
    seeds: &[u64],
    path: &Path,
) -> Result<(), ReportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::create_dir(dir)?;
    }
    let html = compare_html(variants, seeds)?;
    crate::write_atomically(path, html.as_bytes())
}

/// The sentence under the title: how many variants, and which seed(s) they ran under.
fn seeds_sentence(variants: &[CompareVariant], seeds: &[u64]) -> String {
    let n = variants.len();
    match seeds {
        [] | [_] => {
            let seed = seeds
                .first()
                .copied()
                .or_else(|| variants.first().map(|v| v.summary.seed))
                .unwrap_or_default();
            format!("{n} variant(s) of the same experiment, with the same seed ({seed}) and data order.")
        }
        [first, ..] => format!(
            "{n} variant(s) of the same experiment, each run under seeds {} (per seed, every variant starts from the same weights and data order). Each name counts the seeds that ended healthy; the table and charts show seed {first}.",
            seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn compare_html(variants: &[CompareVariant], seeds: &[u64]) -> Result<String, ReportError> {
    let experiment = variants.first().map_or("", |v| v.summary.name.as_str());
    let mut body = format!(
        "<h1>gradguard comparison: {}</h1>\n<p>{}</p>\n",
        escape(experiment),
        escape(&seeds_sentence(variants, seeds))
    );
    let rows: Vec<Vec<String>> = variants
        .iter()
        .map(|v| {
            let s = &v.summary;
            vec![
                format!("<code>{}</code>", escape(&v.name)),
                html_page::verdict_badge(s.verdict),
                opt_step(s.first_nonfinite_step),
                opt_number(s.final_train_loss),
                opt_number(s.final_test_loss),
                escape(&dash(
                    test_loss_vs_baseline(s).map(|r| format!("{}x", crate::format_number(r))),
                )),
                escape(&crate::format_number(s.max_grad_norm)),
                escape(&dash(v.final_weight_norm.map(crate::format_number))),
                v.steps_changed.to_string(),
                format!("{:.1} s", v.wall_time_s),
            ]
        })
        .collect();
    body.push_str(&table(
        &[
            "variant",
            "verdict",
            "first non-finite step",
            "final loss, whole training set",
            "held-out loss",
            "held-out vs constant predictor",
            "max grad norm",
            "final weight norm",
            "steps changed",
            "wall time",
        ],
        &rows,
        &[2, 3, 4, 5, 6, 7, 8, 9],
    ));
    let loss_log = variants
        .iter()
        .flat_map(|v| &v.loss)
        .filter(|p| p.1.is_finite())
        .all(|p| p.1 > 0.0);
    let mut loss = Chart::new("Training loss, every variant", "loss", loss_log);
    let mut norm = Chart::new(
        "Global gradient norm (before remedies), every variant",
        "L2 norm",
        true,
    );
    let mut weights = Chart::new("Global weight norm, every variant", "L2 norm", true);
    for v in variants {
        loss.lines.push(Line::from_points(&v.name, &v.loss));
        norm.lines.push(Line::from_points(&v.name, &v.grad_norm));
        weights
            .lines
            .push(Line::from_points(&v.name, &v.weight_norm));
    }
    body.push_str(&format!("<figure>\n{}\n</figure>\n", loss.to_svg()?));
    body.push_str(&format!("<figure>\n{}\n</figure>\n", norm.to_svg()?));
    body.push_str(&format!("<figure>\n{}\n</figure>\n", weights.to_svg()?));
    body.push_str(
        "<p class=\"note\">NaN or infinite values are drawn as crosses on the top edge in the variant's colour.</p>\n",
    );
    body.push_str("<h2>Signs seen per variant</h2>\n");
    let rows: Vec<Vec<String>> = variants
        .iter()
        .map(|v| {
            let signs = v
                .summary
                .signs
                .iter()
                .map(|s| {
                    format!(
                        "<code>{}</code> (step {}, {}x)",
                        s.sign.as_str(),
                        s.first_step,
                        s.count
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let cure = v
                .summary
                .prescriptions
                .first()
                .map_or_else(String::new, |p| {
                    format!("<code>{}</code>", escape(&p.remedy.label()))
                });
            vec![
                format!("<code>{}</code>", escape(&v.name)),
                if signs.is_empty() {
                    "none".into()
                } else {
                    signs
                },
                cure,
            ]
        })
        .collect();
    body.push_str(&table(
        &["variant", "signs (first step, count)", "first prescription"],
        &rows,
        &[],
    ));
    Ok(html_page::page(
        &format!("gradguard comparison: {experiment}"),
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::svg_text;
    use crate::test_util::{event, summary, unwritable_dir};
    use gradguard_core::Verdict;

    pub(crate) fn variants() -> Vec<CompareVariant> {
        let exploding: Vec<Event> = (1..=30).map(|s| event(s, 20)).collect();
        let a = CompareVariant::from_events("none", summary(), &exploding, 1.25);
        let mut cured_summary = summary();
        cured_summary.verdict = Verdict::Healthy;
        cured_summary.first_nonfinite_step = None;
        cured_summary.final_train_loss = Some(0.0123456);
        cured_summary.max_grad_norm = 12.5;
        let mut rec = CompareRecorder::new(100);
        for s in 1..=30 {
            let mut e = event(s, u64::MAX);
            e.grad_norm = e.grad_norm.min(12.5);
            e.layers[0].weight_norm = 0.3; // with the bias' 0.5: sqrt(0.34) = 0.5831
            rec.push(&e);
        }
        vec![a, rec.finish("clip_global_norm", cured_summary, 13.04)]
    }

    #[test]
    fn recorder_counts_changed_steps_and_keeps_nan() {
        let v = variants();
        // event(): a remedy changed the gradients whenever 0.5 * 1.5^step > 1, i.e. from step 2.
        assert_eq!(v[0].steps_changed, 29);
        assert_eq!(v[0].loss.len(), 30);
        assert!(v[0].loss[19].1.is_nan() && v[0].loss[19].0 == 20);
        assert_eq!(v[0].final_weight_norm, Some(4.25f64.sqrt()));
        assert_eq!(v[0].weight_norm.len(), 30);
        assert_eq!(v[0].weight_norm[29], (30, 4.25f64.sqrt()));
        let cured = v[1].final_weight_norm.unwrap();
        assert!((cured - 0.34f64.sqrt()).abs() < 1e-15, "{cured}");
        assert_eq!(
            CompareRecorder::new(4)
                .finish("empty", summary(), 0.0)
                .final_weight_norm,
            None
        );
    }

    #[test]
    fn console_table_is_aligned() {
        let t = format_compare_table(&variants());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "variant           verdict    first non-finite  train loss  held-out loss  vs constant  max grad norm  final weight norm  steps changed  wall time"
        );
        assert_eq!(
            lines[1],
            "none              exploding                20           -           0.25         0.1x           1000               2.06             29      1.2 s"
        );
        assert_eq!(
            lines[2],
            "clip_global_norm  healthy                   -      0.0123           0.25         0.1x           12.5              0.583             29     13.0 s"
        );
    }

    #[test]
    fn seeds_sentence_names_the_seed_shown() {
        let v = variants();
        assert_eq!(
            seeds_sentence(&v, &[]),
            "2 variant(s) of the same experiment, with the same seed (7) and data order."
        );
        assert!(seeds_sentence(&v, &[3]).contains("same seed (3)"));
        assert!(seeds_sentence(&v, &[1, 2]).ends_with("the table and charts show seed 1."));
    }

    #[test]
    fn html_page_overlays_variants() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cmp/compare.html");
        render_compare_html(&variants(), &[4, 5, 6], &path).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains(&svg_text("Global weight norm, every variant")));
        assert!(html.contains(&svg_text("Training loss, every variant")));
        assert!(html.contains("each run under seeds 4, 5, 6 ("));
        assert!(html.contains("the table and charts show seed 4."));
        // Each variant is in the three charts' legends and in both tables.
        assert_eq!(
            html.matches(svg_text("clip_global_norm").as_str()).count(),
            3
        );
        assert!(html.contains("<td><code>clip_global_norm</code></td><td><span class=\"badge healthy\">healthy</span></td>"));
        assert!(html.contains(&svg_text("NaN / inf (top edge)")));
        assert!(html.contains("<td class=\"num\">13.0 s</td>"));
        // Points carry tooltips naming the variant, the step and the value.
        assert!(html.contains("<title>none, step 20: NaN</title>"), "{html}");
        assert!(html.contains("<title>clip_global_norm, step 30: 12.5</title>"));
        let err = render_compare_html(&variants(), &[], &unwritable_dir(tmp.path()).join("c.html"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a_file/out"), "{err}");
    }
}
