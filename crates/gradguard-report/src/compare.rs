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

/// One variant of a comparison. Serde (e.g. CBOR) carries it between the ranks of a
/// distributed comparison; non-finite points survive in binary formats.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// When the variant ran under several seeds ([`CompareVariant::over_seeds`]): the curves
    /// above are then the medians over the seeds, and these are their spreads.
    pub bands: Option<SeedBands>,
}

/// The spread of a variant's curves over seeds: per step, the smallest and largest finite
/// value among the seeds that recorded that step.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedBands {
    /// How many seeds.
    pub seeds: usize,
    /// Training loss: (step, min, max).
    pub loss: Vec<(u64, f64, f64)>,
    /// Global gradient norm: (step, min, max).
    pub grad_norm: Vec<(u64, f64, f64)>,
    /// Global weight norm: (step, min, max).
    pub weight_norm: Vec<(u64, f64, f64)>,
}

/// Points (step, value).
type Curve = Vec<(u64, f64)>;
/// A band: (step, low, high).
type Band = Vec<(u64, f64, f64)>;

/// Per step over several curves: the median of the finite values and their (min, max),
/// plus a NaN point at every step where some curve is not finite (so the chart marks it).
///
/// The median of n sorted finite values is the middle one (n odd) or the mean of the two
/// middle ones (n even); a step where no curve is finite has no median point.
fn median_and_band(curves: &[&[(u64, f64)]]) -> (Curve, Band) {
    let mut steps: Vec<u64> = curves.iter().flat_map(|c| c.iter().map(|p| p.0)).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut cursors = vec![0usize; curves.len()];
    let (mut median, mut band) = (
        Vec::with_capacity(steps.len()),
        Vec::with_capacity(steps.len()),
    );
    let mut values = Vec::with_capacity(curves.len());
    for step in steps {
        values.clear();
        let mut nonfinite = None;
        for (c, at) in curves.iter().zip(cursors.iter_mut()) {
            // Each curve is sorted by step (possibly with repeats after downsampling).
            while *at < c.len() && c[*at].0 < step {
                *at += 1;
            }
            while *at < c.len() && c[*at].0 == step {
                let v = c[*at].1;
                if v.is_finite() {
                    values.push(v);
                } else {
                    nonfinite = Some(v);
                }
                *at += 1;
            }
        }
        if !values.is_empty() {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let m = if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            };
            median.push((step, m));
            band.push((step, values[0], values[n - 1]));
        }
        if let Some(v) = nonfinite {
            median.push((step, v));
        }
    }
    (median, band)
}

impl CompareVariant {
    /// One variant from its runs under several seeds: the first seed's summary, figures and
    /// name, with the loss, gradient-norm and weight-norm curves replaced by their medians
    /// over the seeds and [`CompareVariant::bands`] set (see [`SeedBands`]). One run is
    /// returned as it is.
    pub fn over_seeds(runs: Vec<CompareVariant>) -> Option<CompareVariant> {
        if runs.len() <= 1 {
            return runs.into_iter().next();
        }
        let curves = |f: fn(&CompareVariant) -> &[(u64, f64)]| {
            median_and_band(&runs.iter().map(f).collect::<Vec<_>>())
        };
        let (loss, loss_band) = curves(|v| &v.loss);
        let (grad_norm, grad_band) = curves(|v| &v.grad_norm);
        let (weight_norm, weight_band) = curves(|v| &v.weight_norm);
        let seeds = runs.len();
        let mut first = runs.into_iter().next()?;
        first.loss = loss;
        first.grad_norm = grad_norm;
        first.weight_norm = weight_norm;
        first.bands = Some(SeedBands {
            seeds,
            loss: loss_band,
            grad_norm: grad_band,
            weight_norm: weight_band,
        });
        Some(first)
    }
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
            bands: None,
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

/// The steps a zoomed panel shows when some variant ended early: a variant whose last
/// recorded step is at most a fifth of the longest run's (of at least 50 steps) collapses
/// against the left edge, so the panel shows steps 1 to 5 past the latest such end.
fn early_death_window(variants: &[CompareVariant]) -> Option<(u64, u64)> {
    let last = |v: &CompareVariant| v.loss.iter().map(|p| p.0).max().unwrap_or(0);
    let longest = variants.iter().map(last).max()?;
    let early = variants
        .iter()
        .map(last)
        .filter(|&d| longest >= 50 && d > 0 && d.saturating_mul(5) <= longest)
        .max()?;
    Some((1, early.saturating_add(5).min(longest)))
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
            "{n} variant(s) of the same experiment, each run under seeds {} (per seed, every variant starts from the same weights and data order). Each name counts the seeds that ended healthy; the charts draw the median over the seeds with a band from the smallest to the largest value, the table shows seed {first}.",
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
    let seeds_drawn = variants
        .iter()
        .filter_map(|v| v.bands.as_ref().map(|b| b.seeds))
        .max();
    if let Some(n) = seeds_drawn {
        loss.title = format!("Training loss (median of {n} seeds)");
        norm.title = format!("Global gradient norm before remedies (median of {n} seeds)");
        weights.title = format!("Global weight norm (median of {n} seeds)");
    }
    for v in variants {
        let mut l = Line::from_points(&v.name, &v.loss);
        let mut g = Line::from_points(&v.name, &v.grad_norm);
        let mut w = Line::from_points(&v.name, &v.weight_norm);
        if let Some(b) = &v.bands {
            l.band.clone_from(&b.loss);
            g.band.clone_from(&b.grad_norm);
            w.band.clone_from(&b.weight_norm);
        }
        loss.lines.push(l);
        norm.lines.push(g);
        weights.lines.push(w);
    }
    body.push_str(&format!("<figure>\n{}\n</figure>\n", loss.to_svg()?));
    body.push_str(&format!("<figure>\n{}\n</figure>\n", norm.to_svg()?));
    // Variants that die early collapse against the left edge of a long axis: the loss and
    // norm charts again, zoomed on their steps.
    if let Some(window) = early_death_window(variants) {
        loss.title = format!("Training loss, steps {}-{}", window.0, window.1);
        norm.title = format!("Global gradient norm, steps {}-{}", window.0, window.1);
        for chart in [&mut loss, &mut norm] {
            chart.x_window = Some(window);
        }
        body.push_str(&format!(
            "<figure class=\"zoom\">\n{}\n<p class=\"note\">Zoomed on the steps where variants ended early.</p>\n</figure>\n",
            loss.to_svg()?
        ));
        body.push_str(&format!(
            "<figure class=\"zoom\">\n{}\n</figure>\n",
            norm.to_svg()?
        ));
    }
    body.push_str(&format!("<figure>\n{}\n</figure>\n", weights.to_svg()?));
    body.push_str(
        "<p class=\"note\">NaN or infinite values are drawn as crosses on the top edge in the variant's colour.</p>\n",
    );
    if let Some(n) = seeds_drawn {
        body.push_str(&format!(
            "<p class=\"note\">Each line is the median over the {n} seeds at each step (of the seeds that recorded a finite value there); the shaded band spans the smallest to the largest of those values.</p>\n"
        ));
    }
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
        assert!(seeds_sentence(&v, &[1, 2]).ends_with("the table shows seed 1."));
    }

    #[test]
    fn median_and_band_per_step_by_hand() {
        // Three seeds; the third stops after step 2 and is NaN at step 2.
        let a = [(1, 1.0), (2, 4.0), (3, 9.0)];
        let b = [(1, 3.0), (2, 2.0), (3, 5.0)];
        let c = [(1, 2.0), (2, f64::NAN)];
        let (median, band) = median_and_band(&[&a, &b, &c]);
        // Step 1: {1, 2, 3} -> 2; step 2: {2, 4} -> 3 and a NaN mark; step 3: {5, 9} -> 7.
        assert_eq!(median.len(), 4);
        assert_eq!(median[0], (1, 2.0));
        assert_eq!(median[1], (2, 3.0));
        assert!(median[2].0 == 2 && median[2].1.is_nan());
        assert_eq!(median[3], (3, 7.0));
        assert_eq!(band, [(1, 1.0, 3.0), (2, 2.0, 4.0), (3, 5.0, 9.0)]);
        // A step where no seed is finite has no median point, only the mark.
        let (median, band) = median_and_band(&[&[(1, f64::INFINITY)], &[(1, f64::NAN)]]);
        assert_eq!(median.len(), 1);
        assert!(!median[0].1.is_finite());
        assert!(band.is_empty());
    }

    #[test]
    fn over_seeds_keeps_the_first_seeds_figures_and_medians_the_curves() {
        let v = variants();
        let mut second = v[0].clone();
        second.loss = vec![(1, 10.0), (2, 20.0)];
        second.summary.seed = 99;
        let one = CompareVariant::over_seeds(vec![v[0].clone()]).unwrap();
        assert_eq!(
            format!("{one:?}"),
            format!("{:?}", v[0]),
            "one seed: unchanged"
        );
        let both = CompareVariant::over_seeds(vec![v[0].clone(), second]).unwrap();
        assert_eq!(both.summary, v[0].summary);
        let bands = both.bands.as_ref().unwrap();
        assert_eq!(bands.seeds, 2);
        // event(1, ..) has loss 1.0 (see test_util): step 1 over {1, 10}.
        let l1 = v[0].loss[0].1;
        assert_eq!(both.loss[0], (1, (l1 + 10.0) / 2.0));
        assert_eq!(bands.loss[0], (1, l1.min(10.0), l1.max(10.0)));
        assert_eq!(CompareVariant::over_seeds(Vec::new()), None);
    }

    #[test]
    fn bands_and_a_zoom_for_early_deaths_are_drawn() {
        let v = variants();
        // A long cured variant (200 steps) and one that died at step 12.
        let mut long = v[1].clone();
        long.loss = (1..=200).map(|s| (s, 1.0 / s as f64)).collect();
        let mut dead = v[0].clone();
        dead.loss.truncate(12);
        let seeds: Vec<CompareVariant> = (0..3)
            .map(|k| {
                let mut x = long.clone();
                x.loss.iter_mut().for_each(|p| p.1 *= 1.0 + k as f64 / 10.0);
                x
            })
            .collect();
        let long = CompareVariant::over_seeds(seeds).unwrap();
        assert_eq!(
            early_death_window(&[long.clone(), dead.clone()]),
            Some((1, 17))
        );
        assert_eq!(early_death_window(std::slice::from_ref(&long)), None);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("compare.html");
        render_compare_html(&[dead, long], &[1, 2, 3], &path).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.contains(&svg_text("Training loss (median of 3 seeds)")));
        assert!(html.contains("the shaded band spans the smallest to the largest"));
        assert!(html.matches("<polygon").count() >= 2, "loss and norm bands");
        assert_eq!(html.matches("<figure class=\"zoom\">").count(), 2);
        assert!(html.contains(&svg_text("Training loss, steps 1-17")));
        assert!(html.contains(&svg_text("Global gradient norm, steps 1-17")));
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
        assert!(html.contains("the table shows seed 4."));
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
