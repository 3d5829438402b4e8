//! `html`: `report.html`, one self-contained page a person can read.
//!
//! Spec: `{ kind = "html" }` or `{ kind = "html", file = "report.html", max_points = 2000, max_findings = 200 }`.
//!
//! | parameter      | default         | meaning                                                      |
//! |----------------|-----------------|--------------------------------------------------------------|
//! | `file`         | `"report.html"` | path inside the run's `out_dir` (relative, no `..`)   |
//! | `max_points`   | `2000`          | points kept per series before min/max downsampling (>= 4)    |
//! | `max_findings` | `200`           | findings listed in the page (the rest are counted)           |
//!
//! The page holds, in order: the verdict and the figures at a glance; SVG charts of the
//! training loss (with the held-out loss at each evaluation, when the events carry
//! `held_out_loss`), of the global gradient L2 norm (log scale, before remedies, plus what the
//! optimiser received after remedies when a remedy changed it) with the clip threshold
//! (`RunInfo::clip_threshold`) as a dashed line, of every tensor's gradient norm over time
//! (log scale) and of every tensor's update ratio ||Δw|| / ||w|| (log scale); when the model
//! measured norms along time steps or layers (`Event::series`), one chart per series with
//! its values at the first step, at the step of the largest global norm and at the last
//! step; the checklist of signs; the prescriptions; the remedies' activity; the findings.
//! Plotted points and markers carry `<title>` tooltips (series, step, value; no JavaScript),
//! on a bounded number of points per chart ([`crate::chart`]).
//!
//! Non-finite values are shown, not dropped: a NaN or infinite loss or norm is drawn as a
//! cross on the top edge of its chart and counted under it. Memory is bounded: each series
//! keeps every point up to `max_points`, then min/max per bucket ([`BoundedSeries`]), so a
//! run of any length uses at most about `(2 + 2 * tensors) * max_points * 88` bytes here.
//! The page is written at `finish`, atomically (temporary file + rename); the directory is
//! checked at `start`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gradguard_core::{
    describe_plugin, Event, Family, Finding, ParamDoc, PluginInfo, ReportError, Reporter, RunEnd,
    RunInfo, Series, SeriesAxis,
};
use serde::{Deserialize, Serialize};

use crate::chart::{Chart, HLine, Line};
use crate::html_page::{self, escape, opt_number, opt_step, table};
use crate::series::BoundedSeries;

/// Writes `report.html` at the end of the run. See the [module docs](self).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtmlReporter {
    /// File name inside the run's output directory.
    #[serde(default = "default_file")]
    pub file: String,
    /// Points kept per series before downsampling.
    #[serde(default = "default_max_points")]
    pub max_points: usize,
    /// Findings listed in the page.
    #[serde(default = "default_max_findings")]
    pub max_findings: usize,
    #[serde(skip)]
    state: Option<State>,
}

struct State {
    path: PathBuf,
    run: RunInfo,
    loss: BoundedSeries,
    /// The held-out loss at the steps the loop evaluated it (`Event::held_out_loss`).
    held_out: BoundedSeries,
    grad_norm: BoundedSeries,
    grad_norm_after: BoundedSeries,
    layers: Vec<LayerSeries>,
    findings: Vec<Finding>,
    findings_total: u64,
    not_applied: u64,
    steps_changed: u64,
    actions: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Norms along time steps or layers (`Event::series`) at three steps: the first one, the
    /// one with the largest finite global norm, and the last one.
    series_first: Option<(u64, Vec<Series>)>,
    series_peak: Option<(u64, f64, Vec<Series>)>,
    series_last: Option<(u64, Vec<Series>)>,
}

/// Copies `src` into `dst`, reusing `dst`'s allocations.
fn copy_series(dst: &mut Vec<Series>, src: &[Series]) {
    dst.truncate(src.len());
    for (i, s) in src.iter().enumerate() {
        match dst.get_mut(i) {
            Some(d) => {
                if d.name != s.name {
                    d.name.clone_from(&s.name);
                }
                d.axis = s.axis;
                d.values.clear();
                d.values.extend_from_slice(&s.values);
            }
            None => dst.push(s.clone()),
        }
    }
}

struct LayerSeries {
    name: String,
    grad_norm: BoundedSeries,
    update_ratio: BoundedSeries,
}

fn default_file() -> String {
    "report.html".into()
}
fn default_max_points() -> usize {
    BoundedSeries::DEFAULT_CAPACITY
}
fn default_max_findings() -> usize {
    200
}

impl Default for HtmlReporter {
    fn default() -> Self {
        HtmlReporter {
            file: default_file(),
            max_points: default_max_points(),
            max_findings: default_max_findings(),
            state: None,
        }
    }
}

impl State {
    fn layer_index(&mut self, i: usize, name: &str, cap: usize) -> usize {
        if self.layers.get(i).is_some_and(|l| l.name == name) {
            return i;
        }
        if let Some(j) = self.layers.iter().position(|l| l.name == name) {
            return j;
        }
        self.layers.push(LayerSeries {
            name: name.to_string(),
            grad_norm: BoundedSeries::new(cap),
            update_ratio: BoundedSeries::new(cap),
        });
        self.layers.len() - 1
    }
}

fn nonfinite_note(what: &str, s: &BoundedSeries) -> String {
    let mut notes = Vec::new();
    if s.nonfinite_count() > 0 {
        notes.push(format!(
            "{what} was NaN or infinite at {} step(s), first at step {} (crosses on the top edge).",
            s.nonfinite_count(),
            opt_step(s.first_nonfinite_step())
        ));
    }
    if s.bucket_width() > 1 {
        notes.push(format!(
            "{} steps recorded; each plotted pair of points is the minimum and maximum of {} steps.",
            s.len(),
            s.bucket_width()
        ));
    }
    notes
        .into_iter()
        .map(|n| format!("<p class=\"note\">{}</p>\n", escape(&n)))
        .collect()
}

/// One note for all tensors whose gradient norm was non-finite, and the downsampling.
fn layers_note(layers: &[LayerSeries]) -> String {
    let bad: Vec<&LayerSeries> = layers
        .iter()
        .filter(|l| l.grad_norm.nonfinite_count() > 0)
        .collect();
    let mut out = String::new();
    if let Some(first) = bad
        .iter()
        .filter_map(|l| l.grad_norm.first_nonfinite_step())
        .min()
    {
        let mut names: Vec<&str> = bad.iter().take(5).map(|l| l.name.as_str()).collect();
        if bad.len() > 5 {
            names.push("...");
        }
        let text = format!(
            "The gradient norm of {} tensor(s) was NaN or infinite, first at step {first} ({}); crosses on the top edge.",
            bad.len(),
            names.join(", ")
        );
        out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(&text)));
    }
    if let Some(l) = layers.first().filter(|l| l.grad_norm.bucket_width() > 1) {
        let text = format!(
            "{} steps recorded; each plotted pair of points is the minimum and maximum of {} steps.",
            l.grad_norm.len(),
            l.grad_norm.bucket_width()
        );
        out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(&text)));
    }
    out
}

/// Charts of the norms the model measured along time steps or layers, at the first step,
/// the step with the largest global norm, and the last step.
fn series_section(st: &State) -> Result<String, ReportError> {
    let Some((_, last)) = &st.series_last else {
        return Ok(String::new());
    };
    let mut snapshots: Vec<(String, &[Series])> = Vec::new();
    if let Some((step, s)) = &st.series_first {
        snapshots.push((format!("step {step} (first)"), s));
    }
    if let Some((step, _, s)) = &st.series_peak {
        snapshots.push((format!("step {step} (largest norm)"), s));
    }
    if let Some((step, s)) = &st.series_last {
        snapshots.push((format!("step {step} (last)"), s));
    }
    // The same step can be first, peak and last: keep it once.
    let mut seen_steps = Vec::new();
    snapshots.retain(|(label, _)| {
        let step = label.split(' ').nth(1).unwrap_or("").to_string();
        let fresh = !seen_steps.contains(&step);
        seen_steps.push(step);
        fresh
    });
    let mut out = String::from("<h2>Gradients along time steps and layers</h2>\n");
    for series in last {
        let (title, x_desc) = match series.axis {
            SeriesAxis::TimeSteps => (format!("{} along time steps", series.name), "time step t"),
            SeriesAxis::Layers => (
                format!("{} along layers", series.name),
                "layer (input first)",
            ),
        };
        let mut chart = Chart::new(title, "norm", true);
        chart.x_desc = x_desc.into();
        for (label, snap) in &snapshots {
            if let Some(s) = snap.iter().find(|s| s.name == series.name) {
                let pts: Vec<(u64, f64)> = s
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i as u64 + 1, v))
                    .collect();
                chart.lines.push(Line::from_points(label.as_str(), &pts));
            }
        }
        out.push_str(&figure(&chart, "")?);
    }
    out.push_str(
        "<p class=\"note\">Each line is one step's norms along the axis, as the model measured them. \
         On this log scale a straight slope is geometric growth or decay.</p>\n",
    );
    Ok(out)
}

/// The steps a zoomed panel shows around a breakdown at `broke` in a run of `steps` steps:
/// 10 steps before it to 5 after, when the breakdown sits in the first fifth of the axis
/// (otherwise the whole axis shows it well enough).
fn zoom_window(broke: Option<u64>, steps: u64) -> Option<(u64, u64)> {
    let b = broke?;
    (steps >= 50 && b.saturating_mul(5) <= steps)
        .then(|| (b.saturating_sub(10).max(1), b.saturating_add(5).min(steps)))
}

/// Vertical markers for the loss and norm charts: the first sign any detector reported, the
/// first non-finite step, and the step the verdict rests on ([`Diagnosis::verdict_step`]; one
/// marker names both when it is the first non-finite step).
///
/// [`Diagnosis::verdict_step`]: gradguard_core::Diagnosis::verdict_step
fn markers(
    st: &State,
    s: &gradguard_core::RunSummary,
    d: &gradguard_core::Diagnosis,
) -> Vec<crate::chart::Marker> {
    let mut v = Vec::new();
    if let Some(f) = st.findings.iter().min_by_key(|f| f.step) {
        v.push(crate::chart::Marker {
            step: f.step,
            label: format!("first sign ({})", f.sign.as_str()),
        });
    }
    let verdict = d.verdict_step.map(|step| (step, d.verdict.as_str()));
    if let Some(step) = s.first_nonfinite_step {
        v.push(crate::chart::Marker {
            step,
            label: match verdict {
                Some((at, name)) if at == step => {
                    format!("first non-finite value, the verdict's step ({name})")
                }
                _ => "first non-finite value".into(),
            },
        });
    }
    if let Some((step, name)) = verdict.filter(|&(at, _)| Some(at) != s.first_nonfinite_step) {
        v.push(crate::chart::Marker {
            step,
            label: format!("the verdict's step ({name})"),
        });
    }
    v
}

fn figure(chart: &Chart, note: &str) -> Result<String, ReportError> {
    Ok(format!("<figure>\n{}\n</figure>\n{note}", chart.to_svg()?))
}

impl HtmlReporter {
    /// Renders the page from what was recorded (used by `finish`; public for tools that
    /// replay an events log).
    pub fn render(&self, end: &RunEnd<'_>) -> Result<String, ReportError> {
        let Some(st) = &self.state else {
            return Err(ReportError::Other(format!(
                "reporter `html` ({}): finish before start",
                self.file
            )));
        };
        let s = end.summary;
        let d = end.diagnosis;
        let mut body = format!(
            "<h1>gradguard report: {}</h1>\n<p>Verdict: {} &mdash; {}</p>\n",
            escape(&s.name),
            html_page::verdict_badge(d.verdict),
            escape(&d.rule)
        );
        let glance = vec![
            vec!["seed".into(), s.seed.to_string()],
            vec![
                "steps (optimiser updates attempted)".into(),
                s.steps.to_string(),
            ],
            vec!["epochs".into(), s.epochs.to_string()],
            vec![
                "steps whose update was withheld (skip, rollback, stop)".into(),
                st.not_applied.to_string(),
            ],
            vec![
                "steps where a remedy changed the gradients".into(),
                st.steps_changed.to_string(),
            ],
            vec![
                "first non-finite step".into(),
                opt_step(s.first_nonfinite_step),
            ],
            vec![
                "largest global gradient norm".into(),
                escape(&crate::format_number(s.max_grad_norm)),
            ],
            vec![
                "final loss, whole training set".into(),
                opt_number(s.final_train_loss),
            ],
            vec!["final held-out loss".into(), opt_number(s.final_test_loss)],
            vec![
                "best constant predictor's loss (training / held-out)".into(),
                format!(
                    "{} / {}",
                    opt_number(s.baseline_loss),
                    opt_number(s.baseline_test_loss)
                ),
            ],
            vec!["last minibatch loss".into(), opt_number(s.last_batch_loss)],
            vec!["clip threshold".into(), opt_number(st.run.clip_threshold)],
        ];
        body.push_str("<h2>At a glance</h2>\n");
        body.push_str(&table(&["", ""], &glance, &[1]));

        body.push_str("<h2>Charts</h2>\n");
        let markers = markers(st, s, d);
        let positive = |s: &BoundedSeries| s.finite_range().is_none_or(|(lo, _)| lo > 0.0);
        let loss_log =
            st.loss.finite_range().is_some() && positive(&st.loss) && positive(&st.held_out);
        let mut loss = Chart::new("Training loss", "loss", loss_log);
        loss.lines.push(Line::from_series("loss", &st.loss));
        // The held-out loss, at each evaluation the log recorded, on the same axes.
        if !st.held_out.is_empty() {
            loss.lines
                .push(Line::from_series("held-out loss", &st.held_out));
        }
        loss.markers = markers.clone();
        body.push_str(&figure(&loss, &nonfinite_note("The loss", &st.loss))?);

        let mut norm = Chart::new("Global gradient norm", "L2 norm of all gradients", true);
        norm.lines
            .push(Line::from_series("before remedies", &st.grad_norm));
        if !st.grad_norm_after.is_empty() {
            norm.lines
                .push(Line::from_series("after remedies", &st.grad_norm_after));
        }
        if let Some(t) = st.run.clip_threshold {
            norm.hlines.push(HLine {
                label: format!("clip threshold {}", crate::format_number(t)),
                value: t,
            });
        }
        norm.markers = markers.clone();
        body.push_str(&figure(
            &norm,
            &nonfinite_note("The global gradient norm", &st.grad_norm),
        )?);
        // A run that broke early is squeezed against the left edge of a long axis: the same
        // two charts again, zoomed on the steps around the breakdown.
        if let Some(window) = zoom_window(s.first_nonfinite_step, s.steps) {
            for chart in [&mut loss, &mut norm] {
                chart.title = format!("{} (steps {}-{})", chart.title, window.0, window.1);
                chart.x_window = Some(window);
            }
            body.push_str(&figure(
                &loss,
                "<p class=\"note\">Zoomed on the steps around the first non-finite value.</p>\n",
            )?);
            body.push_str(&figure(&norm, "")?);
        }

        let mut layers = Chart::new("Gradient norm per tensor", "L2 norm", true);
        let mut ratios = Chart::new("Update ratio per tensor", "||Δw|| / ||w||", true);
        for l in &st.layers {
            layers.lines.push(Line::from_series(&l.name, &l.grad_norm));
            ratios
                .lines
                .push(Line::from_series(&l.name, &l.update_ratio));
        }
        let layer_notes = layers_note(&st.layers);
        body.push_str(&figure(&layers, &layer_notes)?);
        body.push_str(&figure(&ratios, "<p class=\"note\">The ratio of the last applied update's norm to the weights' norm; large values mean the weights change a lot at each update.</p>\n")?);

        body.push_str(&series_section(st)?);
        body.push_str(&html_page::diagnosis_section(d));
        body.push_str(&html_page::prescriptions_section(&d.prescriptions));

        body.push_str("<h2>Remedies</h2>\n");
        if s.remedies.is_empty() && st.actions.is_empty() {
            body.push_str("<p class=\"note\">No remedy was configured.</p>\n");
        } else {
            let rows: Vec<Vec<String>> = s
                .remedies
                .iter()
                .map(|r| {
                    let acts = st.actions.get(&r.kind).map_or_else(String::new, |m| {
                        m.iter()
                            .map(|(a, n)| format!("{a}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                    vec![
                        format!("<code>{}</code>", escape(&r.kind)),
                        r.activations.to_string(),
                        escape(&acts),
                    ]
                })
                .collect();
            body.push_str(&table(
                &["remedy", "steps it acted", "what it did"],
                &rows,
                &[1],
            ));
        }

        body.push_str("<h2>Findings</h2>\n");
        if st.findings.is_empty() {
            body.push_str("<p class=\"note\">No detector reported anything.</p>\n");
        } else {
            let rows: Vec<Vec<String>> = st
                .findings
                .iter()
                .map(|f| {
                    vec![
                        f.step.to_string(),
                        format!("<code>{}</code>", f.sign.as_str()),
                        f.layer.as_deref().map_or_else(
                            || "&ndash;".into(),
                            |l| format!("<code>{}</code>", escape(l)),
                        ),
                        escape(&crate::format_number(f.value)),
                        escape(&crate::format_number(f.threshold)),
                        escape(&f.message),
                    ]
                })
                .collect();
            body.push_str(&table(
                &["step", "sign", "layer", "value", "threshold", "message"],
                &rows,
                &[0, 3, 4],
            ));
            let rest = st.findings_total - st.findings.len() as u64;
            if rest > 0 {
                body.push_str(&format!(
                    "<p class=\"note\">{rest} more finding(s) not listed (the first {} are shown; events.jsonl has all).</p>\n",
                    st.findings.len()
                ));
            }
        }
        Ok(html_page::page(&format!("gradguard: {}", s.name), &body))
    }
}

#[typetag::serde(name = "html")]
impl Reporter for HtmlReporter {
    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError> {
        crate::check_file_name("html", "file", &self.file)?;
        crate::create_dir(&run.out_dir)?;
        let path = crate::out_path(&run.out_dir, &self.file);
        crate::probe_writable(&path)?;
        let cap = self.max_points;
        self.state = Some(State {
            path,
            run: run.clone(),
            loss: BoundedSeries::new(cap),
            held_out: BoundedSeries::new(cap),
            grad_norm: BoundedSeries::new(cap),
            grad_norm_after: BoundedSeries::new(cap),
            layers: Vec::new(),
            findings: Vec::new(),
            findings_total: 0,
            not_applied: 0,
            steps_changed: 0,
            actions: BTreeMap::new(),
            series_first: None,
            series_peak: None,
            series_last: None,
        });
        Ok(())
    }

    fn event(&mut self, e: &Event) -> Result<(), ReportError> {
        let cap = self.max_points;
        let Some(st) = self.state.as_mut() else {
            return Err(ReportError::Other(format!(
                "reporter `html` ({}): event at step {} before start",
                self.file, e.step
            )));
        };
        st.loss.push(e.step, e.loss);
        if let Some(h) = e.held_out_loss {
            st.held_out.push(e.step, h);
        }
        st.grad_norm.push(e.step, e.grad_norm);
        if let Some(after) = e.grad_norm_after {
            st.grad_norm_after.push(e.step, after);
        }
        for (i, l) in e.layers.iter().enumerate() {
            let j = st.layer_index(i, &l.name, cap);
            let series = &mut st.layers[j];
            series.grad_norm.push(e.step, l.grad_norm);
            if let Some(r) = l.update_ratio {
                series.update_ratio.push(e.step, r);
            }
        }
        st.findings_total += e.findings.len() as u64;
        let room = self.max_findings.saturating_sub(st.findings.len());
        st.findings.extend(e.findings.iter().take(room).cloned());
        if !e.applied {
            st.not_applied += 1;
        }
        if e.actions.iter().any(|a| a.changed) {
            st.steps_changed += 1;
        }
        if !e.series.is_empty() {
            if st.series_first.is_none() {
                st.series_first = Some((e.step, e.series.clone()));
            }
            if e.grad_norm.is_finite() && st.series_peak.as_ref().is_none_or(|p| e.grad_norm > p.1)
            {
                let peak = st.series_peak.get_or_insert_with(|| (0, 0.0, Vec::new()));
                peak.0 = e.step;
                peak.1 = e.grad_norm;
                copy_series(&mut peak.2, &e.series);
            }
            let last = st.series_last.get_or_insert_with(|| (0, Vec::new()));
            last.0 = e.step;
            copy_series(&mut last.1, &e.series);
        }
        for a in &e.actions {
            let per = st.actions.entry(a.remedy.clone()).or_default();
            let name = if a.changed && a.action.name() == "continue" {
                "changed gradients"
            } else {
                a.action.name()
            };
            *per.entry(name).or_default() += 1;
        }
        Ok(())
    }

    fn finish(&mut self, end: &RunEnd<'_>) -> Result<(), ReportError> {
        let html = self.render(end)?;
        match &self.state {
            Some(st) => crate::write_atomically(&st.path, html.as_bytes()),
            None => Ok(()),
        }
    }
}

describe_plugin!(PluginInfo {
    family: Family::Reporter,
    kind: "html",
    summary: "Writes report.html: SVG charts of loss, gradient norms (log, clip threshold), per-tensor norms and update ratios, the checklist and the cures.",
    params: &[
        ParamDoc { name: "file", default: Some("\"report.html\""), doc: "file name inside the output directory" },
        ParamDoc { name: "max_points", default: Some("2000"), doc: "points kept per series before min/max downsampling" },
        ParamDoc { name: "max_findings", default: Some("200"), doc: "findings listed in the page (the rest are counted)" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::svg_text;
    use crate::test_util::{diagnosis, event, run_info, summary, unwritable_dir};

    /// Renders a synthetic exploding run (NaN from step `nan_from`) of `steps` steps.
    pub(crate) fn render_synthetic(
        dir: &std::path::Path,
        steps: u64,
        nan_from: u64,
        max_points: usize,
    ) -> String {
        let mut r = HtmlReporter {
            max_points,
            ..Default::default()
        };
        r.start(&run_info(dir)).unwrap();
        for step in 1..=steps {
            r.event(&event(step, nan_from)).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        std::fs::read_to_string(dir.join("report.html")).unwrap()
    }

    #[test]
    fn an_early_breakdown_gets_markers_and_a_zoomed_panel() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=300 {
            r.event(&event(step, 20)).unwrap();
        }
        let d = diagnosis();
        let mut s = summary();
        s.steps = 300;
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        // Loss, global norm, their zoomed twins (steps 10-25), per tensor, update ratio.
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(
            html.contains(&svg_text("Training loss (steps 10-25)")),
            "zoom title"
        );
        assert!(html.contains("Zoomed on the steps around the first non-finite value"));
        assert!(
            html.contains("first non-finite"),
            "the marker's legend entry"
        );
        // The verdict rests on step 20, the first non-finite step: one marker names both.
        assert!(
            html.contains("<title>step 20: first non-finite value, the verdict&#39;s step (exploding)</title>"),
            "the combined marker"
        );
        assert!(!html.contains("<title>step 20: the verdict&#39;s step"));
        // A verdict resting on another step gets its own marker.
        let mut d2 = diagnosis();
        d2.verdict_step = Some(24);
        let html = r
            .render(&RunEnd {
                diagnosis: &d2,
                summary: &s,
            })
            .unwrap();
        assert!(html.contains("<title>step 20: first non-finite value</title>"));
        assert!(html.contains("<title>step 24: the verdict&#39;s step (exploding)</title>"));
        assert_eq!(zoom_window(Some(20), 300), Some((10, 25)));
        assert_eq!(zoom_window(Some(3), 300), Some((1, 8)));
        assert_eq!(
            zoom_window(Some(200), 300),
            None,
            "late: the whole axis shows it"
        );
        assert_eq!(zoom_window(None, 300), None);
        assert_eq!(zoom_window(Some(2), 30), None, "short runs need no zoom");
    }

    #[test]
    fn page_has_the_charts_tables_and_markers() {
        let tmp = tempfile::tempdir().unwrap();
        let html = render_synthetic(tmp.path(), 30, 20, 2000);
        assert_eq!(
            html.matches("<svg").count(),
            4,
            "loss, global norm, per tensor, update ratio"
        );
        for title in [
            "Training loss",
            "Global gradient norm",
            "Gradient norm per tensor",
            "Update ratio per tensor",
        ] {
            assert!(html.contains(&svg_text(title)), "{title}");
        }
        assert!(html.contains(&svg_text("clip threshold 1")));
        assert!(html.contains(&svg_text("after remedies")));
        assert!(
            html.contains(&svg_text("layers.0.weight"))
                && html.contains(&svg_text("layers.0.bias"))
        );
        // 11 NaN losses at steps 20..=30: counted and marked.
        assert!(
            html.contains("The loss was NaN or infinite at 11 step(s), first at step 20"),
            "note"
        );
        assert!(
            !html.contains("The gradient norm of 2 tensor(s)"),
            "layer norms stay finite in this run"
        );
        assert!(html.contains(&svg_text("NaN / inf (top edge)")));
        assert!(html.contains("<span class=\"badge exploding\">exploding</span>"));
        assert!(html.contains("<code>clip_global_norm</code>"));
        assert!(html.contains("changed gradients: "));
        assert!(html.contains("the loss is NaN"));
        // Self-contained: the only URL is the SVG namespace name, which is never fetched.
        let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
    }

    #[test]
    fn chart_points_carry_title_tooltips() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        let losses = [2.5, 0.345, 0.012345, f64::NAN];
        for (k, &loss) in losses.iter().enumerate() {
            let step = k as u64 + 1;
            let mut e = event(step, 99);
            e.loss = loss;
            e.grad_norm = 1234.5678 * step as f64;
            e.findings.clear();
            r.event(&e).unwrap();
        }
        let (d, mut s) = (diagnosis(), summary());
        s.first_nonfinite_step = Some(4);
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        for title in [
            "loss, step 1: 2.5",
            "loss, step 2: 0.345",
            "loss, step 3: 0.0123",
            "loss, step 4: NaN",
            "before remedies, step 3: 3704",
            "after remedies, step 1: 0.75",
            "after remedies, step 2: 1",
            "layers.0.weight, step 2: 0.9",
            "layers.0.bias, step 4: 1.52",
            "layers.0.bias, step 4: 0.008",
            "step 4: first non-finite value",
        ] {
            assert!(
                html.contains(&format!("<title>{title}</title>")),
                "{title} missing"
            );
        }
        // Still no script: the tooltips are the browser's own.
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_held_out_loss_is_drawn_at_each_evaluation() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=30 {
            let mut e = event(step, 99);
            // Evaluated every 10 steps.
            e.held_out_loss = (step % 10 == 0).then_some(3.0 / step as f64);
            r.event(&e).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        // A second series on the loss chart, in the legend, with one point per evaluation.
        assert!(html.contains(&svg_text("held-out loss")), "legend entry");
        for title in [
            "held-out loss, step 10: 0.3",
            "held-out loss, step 20: 0.15",
            "held-out loss, step 30: 0.1",
        ] {
            assert!(html.contains(&format!("<title>{title}</title>")), "{title}");
        }
        assert_eq!(html.matches("<title>held-out loss, step ").count(), 3);
        // Drawn as a line through its three points, in the second line colour (orange
        // #FF7F0E): the loss chart holds such a polyline of three points.
        let orange_point_counts = |html: &str| -> Vec<usize> {
            let chart = html.split("<figure>").nth(1).unwrap().to_string();
            assert!(chart.contains(&svg_text("Training loss")));
            chart
                .split("<polyline")
                .skip(1)
                .filter(|p| p.split('>').next().unwrap().contains("stroke=\"#FF7F0E\""))
                .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
                .map(|pts| pts.split_whitespace().count())
                .collect()
        };
        assert!(
            orange_point_counts(&html).contains(&3),
            "{:?}",
            orange_point_counts(&html)
        );

        // A log without held-out losses draws one line and no legend entry for it.
        let html = render_synthetic(tmp.path(), 30, 99, 2000);
        assert!(!html.contains("held-out loss, step"));
        assert!(!html.contains(&svg_text("held-out loss")));
        assert!(orange_point_counts(&html).is_empty());
    }

    #[test]
    fn non_finite_tensor_norms_get_one_note() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=6 {
            let mut e = event(step, 99);
            if step >= 4 {
                e.layers[1].grad_norm = f64::INFINITY;
            }
            if step >= 5 {
                e.layers[0].grad_norm = f64::NAN;
            }
            r.event(&e).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        assert!(html.contains(
            "The gradient norm of 2 tensor(s) was NaN or infinite, first at step 4 (layers.0.weight, layers.0.bias)"
        ));
    }

    #[test]
    fn series_along_time_steps_are_charted_at_three_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=5u64 {
            let mut e = event(step, 99);
            // The global norm peaks at step 3.
            e.grad_norm = [1.0, 2.0, 9.0, 3.0, 2.5][step as usize - 1];
            let growth = 1.0 + step as f64 * 0.1;
            e.series = vec![Series {
                name: "rnn.0 dL/dh_t".into(),
                axis: SeriesAxis::TimeSteps,
                values: (0..8).map(|t| growth.powi(8 - t)).collect(),
            }];
            r.event(&e).unwrap();
        }
        let st = r.state.as_ref().unwrap();
        assert_eq!(st.series_first.as_ref().unwrap().0, 1);
        assert_eq!(st.series_peak.as_ref().unwrap().0, 3);
        assert_eq!(st.series_last.as_ref().unwrap().0, 5);
        assert_eq!(st.series_last.as_ref().unwrap().1[0].values[7], 1.5);
        let (d, s) = (diagnosis(), summary());
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        assert!(html.contains(&svg_text("rnn.0 dL/dh_t along time steps")));
        assert!(html.contains(&svg_text("time step t")));
        for label in ["step 1 (first)", "step 3 (largest norm)", "step 5 (last)"] {
            assert!(html.contains(&svg_text(label)), "{label}");
        }
    }

    #[test]
    fn long_runs_stay_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter {
            max_points: 64,
            ..Default::default()
        };
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=5000u64 {
            let mut e = event(step, u64::MAX);
            e.grad_norm = if step == 3333 {
                1e6
            } else {
                1.0 + (step % 7) as f64
            };
            e.findings.push(Finding::new(
                gradguard_core::Sign::GradSpike,
                step,
                None,
                2.0,
                1.0,
                "spike",
            ));
            r.event(&e).unwrap();
        }
        let st = r.state.as_ref().unwrap();
        assert!(st.grad_norm.points().len() <= 128);
        assert_eq!(
            st.grad_norm.max_finite(),
            Some(1e6),
            "the spike survives downsampling"
        );
        assert_eq!(st.findings.len(), 200);
        assert_eq!(st.findings_total, 5000);
        let (d, s) = (diagnosis(), summary());
        let html = r
            .render(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap();
        assert!(html.contains("4800 more finding(s) not listed"));
        assert!(html.contains("5000 steps recorded; each plotted pair of points is the minimum and maximum of 128 steps."));
        assert!(html.len() < 400_000, "{} bytes", html.len());
    }

    #[test]
    fn errors_name_the_path_and_never_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = HtmlReporter::default();
        let err = r
            .start(&run_info(&unwritable_dir(tmp.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a_file/out"), "{err}");
        assert!(r.event(&event(1, 9)).is_err());
        let (d, s) = (diagnosis(), summary());
        assert!(r
            .finish(&RunEnd {
                diagnosis: &d,
                summary: &s
            })
            .unwrap_err()
            .to_string()
            .contains("before start"));
        // Directory removed during the run: finish fails naming the temporary file.
        let out = tmp.path().join("gone");
        let mut r = HtmlReporter::default();
        r.start(&run_info(&out)).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        let err = r
            .finish(&RunEnd {
                diagnosis: &d,
                summary: &s,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("gone/.report.html.{}.tmp", std::process::id())),
            "{err}"
        );
    }
}
