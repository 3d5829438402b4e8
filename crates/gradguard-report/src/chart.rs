//! Line charts as inline SVG, drawn with `plotters`' SVG backend.
//!
//! No system fonts are needed: with plotters' default features off, text is laid out with
//! its built-in estimate and written as SVG `<text>` elements that the browser renders
//! with its own fonts.
//!
//! A chart has lines (each drawn as segments that break at non-finite values), optional
//! horizontal reference lines (e.g. the clip threshold, dashed), and a legend in a column
//! to the right of the plot so it never hides data. A log-scale chart plots `log10(y)` and
//! labels the ticks `1e-3`, `1`, `1e3`... Values that cannot be drawn are shown, not
//! dropped: NaN and ±inf as crosses on the top edge, and on a log scale values <= 0 as
//! circles on the bottom edge, each in its line's colour, with a legend entry.
//!
//! Steps are integers: the x axis labels whole steps only, each once. Vertical markers
//! ([`Marker`], e.g. the first sign, the first non-finite step) are drawn as labelled dotted
//! lines. Up to [`MAX_LINES`] lines get distinct styles (ten colours, solid then dashed);
//! further lines are not drawn, and the legend says how many. Legend labels wrap instead of
//! being cut.
//!
//! Points carry tooltips without JavaScript: an invisible circle with an SVG `<title>`
//! (`loss, step 12: 0.345`, the value written by [`gradguard_core::float::fmt_short`], NaN
//! and inf included) that browsers show on hover, and each marker's line carries its label.
//! To keep pages small on long runs, tooltips go on a bounded number of the points actually
//! drawn (after [`BoundedSeries`]' decimation): every point of a line when it has at most its
//! share of [`MAX_TIPS`] (at most [`MAX_TIPS_PER_LINE`]), otherwise evenly spaced points plus
//! the line's largest and smallest values and its first non-finite one.

use gradguard_core::ReportError;
use plotters::prelude::*;

use crate::html_page::escape;
use crate::series::BoundedSeries;

/// Colours of successive lines (the Tableau 10 palette).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The most lines a chart draws with distinct styles (ten colours, solid then dashed).
pub const MAX_LINES: usize = 20;

/// The most points of one chart that carry a `<title>` tooltip, shared among its lines.
pub const MAX_TIPS: usize = 400;

/// The most points of one line that carry a `<title>` tooltip.
pub const MAX_TIPS_PER_LINE: usize = 100;

/// A vertical marker at a step, with its label (drawn dotted, labelled on the plot and in the
/// legend).
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// The step.
    pub step: u64,
    /// What happened there, e.g. `first sign: grad_spike`.
    pub label: String,
}

/// One line of a chart.
#[derive(Clone, Debug, Default)]
pub struct Line {
    /// Its legend label.
    pub label: String,
    /// Runs of finite points (step, value).
    pub segments: Vec<Vec<(u64, f64)>>,
    /// Points whose value is NaN or ±inf.
    pub nonfinite: Vec<(u64, f64)>,
    /// A shaded band behind the line, (step, low, high) with finite bounds (e.g. the min and
    /// max over seeds around a median); empty for none.
    pub band: Vec<(u64, f64, f64)>,
}

impl Line {
    /// A line from a bounded series.
    pub fn from_series(label: impl Into<String>, series: &BoundedSeries) -> Self {
        Line {
            label: label.into(),
            segments: series.segments(),
            nonfinite: series.nonfinite_points(),
            band: Vec::new(),
        }
    }

    /// A line from raw points, broken at non-finite values.
    pub fn from_points(label: impl Into<String>, points: &[(u64, f64)]) -> Self {
        let mut segments = vec![Vec::new()];
        let mut nonfinite = Vec::new();
        for &(step, v) in points {
            if v.is_finite() {
                if let Some(segment) = segments.last_mut() {
                    segment.push((step, v));
                }
            } else {
                nonfinite.push((step, v));
                if !segments.last().is_none_or(Vec::is_empty) {
                    segments.push(Vec::new());
                }
            }
        }
        segments.retain(|s| !s.is_empty());
        Line {
            label: label.into(),
            segments,
            nonfinite,
            band: Vec::new(),
        }
    }

    fn finite_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.segments
            .iter()
            .flatten()
            .map(|p| p.1)
            .chain(self.band.iter().flat_map(|b| [b.1, b.2]))
            .filter(|v| v.is_finite())
    }

    fn steps(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments
            .iter()
            .flatten()
            .map(|p| p.0)
            .chain(self.nonfinite.iter().map(|p| p.0))
    }
}

/// A horizontal reference line (drawn dashed).
#[derive(Clone, Debug)]
pub struct HLine {
    /// Its legend label.
    pub label: String,
    /// Its height.
    pub value: f64,
}

/// A line chart. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// What the y axis measures.
    pub y_desc: String,
    /// Plot log10(y).
    pub log_y: bool,
    /// The lines.
    pub lines: Vec<Line>,
    /// Reference lines.
    pub hlines: Vec<HLine>,
    /// Width in pixels, legend included.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// What the x axis counts (`step` unless set).
    pub x_desc: String,
    /// Vertical markers.
    pub markers: Vec<Marker>,
    /// Draw only these steps (inclusive), e.g. a panel zoomed on the steps around a
    /// breakdown; `None`: every step of the lines.
    pub x_window: Option<(u64, u64)>,
}

impl Chart {
    /// An empty chart, 960 x 360 pixels.
    pub fn new(title: impl Into<String>, y_desc: impl Into<String>, log_y: bool) -> Self {
        Chart {
            title: title.into(),
            y_desc: y_desc.into(),
            log_y,
            lines: Vec::new(),
            hlines: Vec::new(),
            width: 960,
            height: 360,
            x_desc: "step".into(),
            markers: Vec::new(),
            x_window: None,
        }
    }

    /// Whether any line has anything to draw.
    pub fn has_data(&self) -> bool {
        self.lines
            .iter()
            .any(|l| !l.segments.is_empty() || !l.nonfinite.is_empty())
    }

    /// The chart as an `<svg>` element.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        let mut svg = String::new();
        let tips = self.draw(&mut svg).map_err(|e| {
            ReportError::Other(format!("drawing the chart \"{}\": {e}", self.title))
        })?;
        if !tips.is_empty() {
            // On top of everything plotters drew, so hovering reaches them.
            let at = svg.rfind("</svg>").unwrap_or(svg.len());
            let mut group = String::from("<g class=\"tips\" fill=\"#000\" fill-opacity=\"0\">\n");
            for tip in &tips {
                group.push_str(tip);
                group.push('\n');
            }
            group.push_str("</g>\n");
            svg.insert_str(at, &group);
        }
        Ok(svg)
    }

    /// The band of `line` as closed outlines in plot coordinates (the high edge forward, the
    /// low edge back), one per run of consecutive drawable points inside [x0, x1].
    fn band_runs(&self, line: &Line, x0: f64, x1: f64) -> Vec<Vec<(f64, f64)>> {
        let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new()];
        for &(step, lo, hi) in &line.band {
            let x = step as f64;
            let drawable = (x0..=x1).contains(&x);
            match (drawable, self.plot_y(lo), self.plot_y(hi)) {
                (true, Some(l), Some(h)) => runs.last_mut().map_or((), |r| r.push((x, l, h))),
                _ => {
                    if runs.last().is_some_and(|r| !r.is_empty()) {
                        runs.push(Vec::new());
                    }
                }
            }
        }
        runs.into_iter()
            .filter(|r| r.len() >= 2)
            .map(|r| {
                let mut outline: Vec<(f64, f64)> = r.iter().map(|p| (p.0, p.2)).collect();
                outline.extend(r.iter().rev().map(|p| (p.0, p.1)));
                outline
            })
            .collect()
    }

    /// y in plot coordinates (log10 on a log chart); None when not drawable there.
    fn plot_y(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            None
        } else if self.log_y {
            (v > 0.0).then(|| v.log10())
        } else {
            Some(v)
        }
    }

    fn y_range(&self) -> (f64, f64) {
        let ys = self
            .lines
            .iter()
            .flat_map(|l| l.finite_values())
            .chain(self.hlines.iter().map(|h| h.value))
            .filter_map(|v| self.plot_y(v));
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        if lo > hi {
            return (0.0, 1.0);
        }
        if self.log_y {
            let (lo, hi) = (lo.floor(), hi.ceil());
            if lo == hi {
                (lo - 1.0, hi + 1.0)
            } else {
                (lo, hi)
            }
        } else if lo == hi {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - pad, hi + pad)
        } else {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        }
    }

    fn x_range(&self) -> (f64, f64) {
        if let Some((lo, hi)) = self.x_window {
            return if lo >= hi {
                (lo as f64 - 1.0, hi as f64 + 1.0)
            } else {
                (lo as f64, hi as f64)
            };
        }
        let (lo, hi) = self
            .lines
            .iter()
            .flat_map(|l| l.steps())
            .fold((u64::MAX, 0u64), |(a, b), s| (a.min(s), b.max(s)));
        if lo > hi {
            (0.0, 1.0)
        } else if lo == hi {
            (lo as f64 - 1.0, hi as f64 + 1.0)
        } else {
            (lo as f64, hi as f64)
        }
    }

    /// Draws the chart into `svg` and returns the tooltip elements (see the module docs),
    /// in the SVG's pixel coordinates, for [`Chart::to_svg`] to add on top.
    fn draw(&self, svg: &mut String) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let legend_width = 250u32.min(self.width / 3);
        let root = SVGBackend::with_string(svg, (self.width, self.height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_horizontally(self.width - legend_width);
        let (x0, x1) = self.x_range();
        let (y0, y1) = self.y_range();
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, ("sans-serif", 21))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let log_y = self.log_y;
        let y_fmt = move |v: &f64| -> String {
            if !log_y {
                return crate::format_number(*v);
            }
            if (v - v.round()).abs() < 1e-9 {
                match v.round() as i64 {
                    0 => "1".into(),
                    1 => "10".into(),
                    e => format!("1e{e}"),
                }
            } else {
                // Only whole decades are labelled; the grid shows the rest.
                String::new()
            }
        };
        // Steps are whole numbers: only whole ticks are labelled, so no label repeats.
        let x_fmt = |v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        };
        let y_desc = if self.log_y {
            format!("{} (log scale)", self.y_desc)
        } else {
            self.y_desc.clone()
        };
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(y_desc)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;

        let mut legend: Vec<(String, RGBColor, Glyph)> = Vec::new();
        let in_window = |s: u64| (s as f64) >= x0 && (s as f64) <= x1;
        // Bands first, so every line is drawn over them.
        for (i, line) in self.lines.iter().take(MAX_LINES).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for run in self.band_runs(line, x0, x1) {
                chart.draw_series(std::iter::once(Polygon::new(run, color.mix(0.16).filled())))?;
            }
        }
        for (i, line) in self.lines.iter().take(MAX_LINES).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let dashed = i >= PALETTE.len();
            for seg in &line.segments {
                let pts: Vec<(f64, f64)> = seg
                    .iter()
                    .filter(|p| in_window(p.0))
                    .filter_map(|&(s, v)| self.plot_y(v).map(|y| (s as f64, y)))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                if pts.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(pts[0], 2, color.filled())))?;
                } else if dashed {
                    chart.draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2)))?;
                } else {
                    chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
                }
            }
            let glyph = if dashed { Glyph::Dashed } else { Glyph::Line };
            legend.push((line.label.clone(), color, glyph));
        }
        if self.lines.len() > MAX_LINES {
            legend.push((
                format!(
                    "+{} more series not drawn (every value is in events.jsonl)",
                    self.lines.len() - MAX_LINES
                ),
                RGBColor(120, 120, 120),
                Glyph::None,
            ));
        }
        for m in &self.markers {
            let x = m.step as f64;
            if x < x0 || x > x1 {
                continue;
            }
            let color = RGBColor(90, 90, 90);
            let style = ShapeStyle {
                color: color.to_rgba(),
                filled: false,
                stroke_width: 1,
            };
            chart.draw_series(DashedLineSeries::new(vec![(x, y0), (x, y1)], 2, 4, style))?;
            let at = chart.backend_coord(&(x, y1));
            plot_area.draw(&Text::new(
                format!("{}", m.step),
                (at.0 + 3, at.1 + 4),
                ("sans-serif", 13).into_font().color(&color),
            ))?;
            legend.push((
                format!("step {}: {}", m.step, m.label),
                color,
                Glyph::Marker,
            ));
        }
        for (j, h) in self.hlines.iter().enumerate() {
            if let Some(y) = self.plot_y(h.value) {
                let color = RGBColor(60, 60, 60);
                let style = ShapeStyle {
                    color: color.to_rgba(),
                    filled: false,
                    stroke_width: 2,
                };
                chart.draw_series(DashedLineSeries::new(
                    vec![(x0, y), (x1, y)],
                    8,
                    5 + j as u32 * 3,
                    style,
                ))?;
                legend.push((h.label.clone(), color, Glyph::Dashed));
            }
        }
        // Non-finite values: crosses on the top edge, in each line's colour.
        let mut any_nonfinite = false;
        let mut any_nonpositive = false;
        for (i, line) in self.lines.iter().take(MAX_LINES).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let crosses: Vec<_> = line
                .nonfinite
                .iter()
                .filter(|p| in_window(p.0))
                .map(|&(s, _)| Cross::new((s as f64, y1), 5, color.stroke_width(2)))
                .collect();
            any_nonfinite |= !crosses.is_empty();
            chart.draw_series(crosses)?;
            if self.log_y {
                let circles: Vec<_> = line
                    .segments
                    .iter()
                    .flatten()
                    .filter(|p| p.1 <= 0.0 && in_window(p.0))
                    .map(|&(s, _)| Circle::new((s as f64, y0), 4, color.stroke_width(2)))
                    .collect();
                any_nonpositive |= !circles.is_empty();
                chart.draw_series(circles)?;
            }
        }
        if any_nonfinite {
            legend.push((
                "NaN / inf (top edge)".into(),
                RGBColor(0, 0, 0),
                Glyph::Cross,
            ));
        }
        if any_nonpositive {
            legend.push((
                "<= 0 (bottom edge)".into(),
                RGBColor(0, 0, 0),
                Glyph::Circle,
            ));
        }
        if !self.has_data() {
            let (w, h) = plot_area.dim_in_pixel();
            plot_area.draw(&Text::new(
                "no data",
                (w as i32 / 2 - 25, h as i32 / 2),
                ("sans-serif", 16)
                    .into_font()
                    .color(&RGBColor(120, 120, 120)),
            ))?;
        }
        let mut tips = Vec::new();
        let drawn = self.lines.len().min(MAX_LINES);
        let per_line = (MAX_TIPS / drawn.max(1)).min(MAX_TIPS_PER_LINE);
        for line in self.lines.iter().take(MAX_LINES) {
            // Every point drawn, where it is drawn: finite values on the line, non-finite
            // ones on the top edge, values <= 0 of a log chart on the bottom edge.
            let mut points: Vec<(u64, f64)> = line
                .segments
                .iter()
                .flatten()
                .chain(&line.nonfinite)
                .copied()
                .filter(|p| in_window(p.0))
                .collect();
            points.sort_by_key(|p| p.0);
            for k in tip_indices(&points, per_line) {
                let (step, v) = points[k];
                let y = if v.is_finite() {
                    self.plot_y(v).unwrap_or(y0)
                } else {
                    y1
                };
                let (px, py) = chart.backend_coord(&(step as f64, y));
                tips.push(format!(
                    "<circle cx=\"{px}\" cy=\"{py}\" r=\"5\"><title>{}</title></circle>",
                    escape(&format!(
                        "{}, step {step}: {}",
                        line.label,
                        crate::format_number(v)
                    ))
                ));
            }
        }
        for m in &self.markers {
            let x = m.step as f64;
            if x < x0 || x > x1 {
                continue;
            }
            let (px, top) = chart.backend_coord(&(x, y1));
            let (_, bottom) = chart.backend_coord(&(x, y0));
            tips.push(format!(
                "<line x1=\"{px}\" y1=\"{top}\" x2=\"{px}\" y2=\"{bottom}\" stroke=\"#000\" stroke-opacity=\"0\" stroke-width=\"7\"><title>{}</title></line>",
                escape(&format!("step {}: {}", m.step, m.label))
            ));
        }
        draw_legend(&legend_area, &legend)?;
        root.present()?;
        Ok(tips)
    }
}

/// Which of `points` (sorted by step) carry a tooltip: all of them when there are at most
/// `budget`, else `budget` of them: the largest and smallest finite values, the first
/// non-finite one, and the rest evenly spaced from the first point to the last.
fn tip_indices(points: &[(u64, f64)], budget: usize) -> Vec<usize> {
    let n = points.len();
    if n <= budget {
        return (0..n).collect();
    }
    if budget == 0 {
        return Vec::new();
    }
    let finite = || points.iter().enumerate().filter(|(_, p)| p.1.is_finite());
    let mut chosen = std::collections::BTreeSet::new();
    chosen.extend(
        finite()
            .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(i, _)| i),
    );
    chosen.extend(
        finite()
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(i, _)| i),
    );
    chosen.extend(points.iter().position(|p| !p.1.is_finite()));
    let even = budget.saturating_sub(chosen.len()).max(1);
    for j in 0..even {
        if chosen.len() >= budget {
            break;
        }
        let k = if even == 1 {
            0
        } else {
            j * (n - 1) / (even - 1)
        };
        chosen.insert(k);
    }
    chosen.into_iter().take(budget).collect()
}

#[derive(Clone, Copy)]
enum Glyph {
    Line,
    Dashed,
    Cross,
    Circle,
    Marker,
    None,
}

/// `label` cut into lines of at most `width` characters, at spaces where it can be.
fn wrap(label: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in label.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let need = cur.chars().count() + usize::from(!cur.is_empty()) + word.chars().count();
        if need > width && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor, Glyph)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let row = 20;
    let top = 45;
    let (w, h) = area.dim_in_pixel();
    let max_rows = ((h as i32 - top - 10) / row).max(1) as usize;
    let max_chars = ((w as i32 - 40) / 8).max(8) as usize;
    let mut used = 0usize;
    for (k, (label, color, glyph)) in entries.iter().enumerate() {
        let lines = wrap(label, max_chars);
        let y = top + row * used as i32;
        if used + lines.len() >= max_rows && k + 1 < entries.len() {
            let rest = entries.len() - k;
            let text = format!("... and {rest} more");
            area.draw(&Text::new(
                text,
                (8, y - 7),
                ("sans-serif", 17).into_font().color(&BLACK),
            ))?;
            break;
        }
        match glyph {
            Glyph::Line => area.draw(&PathElement::new(
                vec![(4, y), (28, y)],
                color.stroke_width(3),
            ))?,
            Glyph::Dashed => {
                area.draw(&PathElement::new(
                    vec![(4, y), (12, y)],
                    color.stroke_width(2),
                ))?;
                area.draw(&PathElement::new(
                    vec![(18, y), (28, y)],
                    color.stroke_width(2),
                ))?;
            }
            Glyph::Cross => area.draw(&Cross::new((16, y), 5, color.stroke_width(2)))?,
            Glyph::Circle => area.draw(&Circle::new((16, y), 4, color.stroke_width(2)))?,
            Glyph::Marker => area.draw(&PathElement::new(
                vec![(16, y - 8), (16, y + 8)],
                color.stroke_width(2),
            ))?,
            Glyph::None => {}
        }
        for (r, text) in lines.iter().enumerate() {
            area.draw(&Text::new(
                text.clone(),
                (34, y - 7 + row * r as i32),
                ("sans-serif", 17).into_font().color(&BLACK),
            ))?;
        }
        used += lines.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::svg_text;

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn draws_lines_threshold_legend_and_markers() {
        let mut c = Chart::new("Gradient norm", "L2 norm", true);
        c.lines.push(Line::from_points(
            "global",
            &[(1, 0.5), (2, 5.0), (3, 50.0), (4, f64::NAN), (5, 0.0)],
        ));
        c.hlines.push(HLine {
            label: "clip threshold 1".into(),
            value: 1.0,
        });
        let svg = c.to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        // Title, axis description, legend labels are SVG text, with no font files involved.
        assert!(svg.contains(&svg_text("Gradient norm")));
        assert!(svg.contains(&svg_text("L2 norm (log scale)")));
        assert!(svg.contains(&svg_text("clip threshold 1")));
        assert!(svg.contains(&svg_text("NaN / inf (top edge)")));
        assert!(svg.contains(&svg_text("&lt;= 0 (bottom edge)")));
        // Log ticks are labelled as powers of ten: the data spans 1e-1 .. 1e2.
        assert!(
            svg.contains(&svg_text("1e-1")) && svg.contains(&svg_text("1e2")),
            "{svg}"
        );
        assert!(count(&svg, "<polyline") >= 2, "line + dashed threshold");
    }

    #[test]
    fn line_breaks_at_non_finite_values() {
        let l = Line::from_points("x", &[(1, 1.0), (2, f64::INFINITY), (3, 3.0), (4, 4.0)]);
        assert_eq!(l.segments, vec![vec![(1, 1.0)], vec![(3, 3.0), (4, 4.0)]]);
        assert_eq!(l.nonfinite, vec![(2, f64::INFINITY)]);
    }

    #[test]
    fn empty_chart_says_so() {
        let c = Chart::new("Update ratio", "ratio", true);
        let svg = c.to_svg().unwrap();
        assert!(svg.contains(&svg_text("no data")));
    }

    #[test]
    fn ranges() {
        let mut c = Chart::new("t", "y", false);
        c.lines.push(Line::from_points("a", &[(3, 2.0), (9, 4.0)]));
        assert_eq!(c.x_range(), (3.0, 9.0));
        let (lo, hi) = c.y_range();
        assert!((lo - 1.9).abs() < 1e-12 && (hi - 4.1).abs() < 1e-12);
        c.log_y = true;
        assert_eq!(c.y_range(), (0.0, 1.0)); // log10 2 .. log10 4 -> decades 0 .. 1
    }

    #[test]
    fn short_axes_label_each_step_once() {
        let mut c = Chart::new("loss", "loss", false);
        c.lines.push(Line::from_points(
            "loss",
            &[(1, 30.5), (2, 20.5), (3, 10.5)],
        ));
        let svg = c.to_svg().unwrap();
        for step in ["1", "2", "3"] {
            assert_eq!(count(&svg, &svg_text(step)), 1, "tick {step} once: {svg}");
        }
    }

    #[test]
    fn markers_are_drawn_labelled_and_listed() {
        let mut c = Chart::new("loss", "loss", false);
        c.lines
            .push(Line::from_points("loss", &[(1, 3.0), (5, 2.0), (9, 1.0)]));
        c.markers.push(Marker {
            step: 5,
            label: "first sign: grad_spike".into(),
        });
        c.markers.push(Marker {
            step: 40,
            label: "outside the axis".into(),
        });
        let svg = c.to_svg().unwrap();
        // The legend entry (wrapped at the legend's width) and the step on the plot.
        assert!(
            svg.contains("step 5: first sign:") && svg.contains(&svg_text("grad_spike")),
            "{svg}"
        );
        assert!(
            !svg.contains("outside the axis"),
            "a marker off the axis is not drawn"
        );
    }

    #[test]
    fn long_legend_labels_wrap_instead_of_being_cut() {
        let label = "clip_global_norm (3/3 healthy, median held-out loss 0.0123 = 0.05x the constant predictor's)";
        let mut c = Chart::new("loss", "loss", false);
        c.lines
            .push(Line::from_points(label, &[(1, 3.0), (2, 2.0)]));
        let svg = c.to_svg().unwrap();
        assert!(!svg.contains('…'), "nothing is cut");
        for word in label.split(' ').filter(|w| !w.contains('\'')) {
            assert!(svg.contains(word), "{word} missing");
        }
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn twenty_lines_get_distinct_styles_and_more_are_counted() {
        let mut c = Chart::new("per tensor", "norm", false);
        for i in 0..23u64 {
            c.lines.push(Line::from_points(
                format!("t{i}"),
                &[(1, i as f64), (2, i as f64 + 1.0)],
            ));
        }
        let svg = c.to_svg().unwrap();
        // The legend is longer than the chart: its last row counts the entries left out.
        assert!(svg.contains("more"), "{svg}");
        assert!(!svg.contains(&svg_text("t20")));
        let mut c2 = Chart::new("tall", "norm", false);
        c2.height = 900;
        c2.lines = c.lines.clone();
        let svg = c2.to_svg().unwrap();
        assert!(svg.contains("+3 more series not drawn"), "{svg}");
        // Ten solid lines, ten dashed ones (drawn as many short segments).
        assert!(count(&svg, "<polyline") > 20);
    }

    /// The `<title>` elements of `svg`, in order.
    fn titles(svg: &str) -> Vec<&str> {
        svg.split("<title>")
            .skip(1)
            .filter_map(|t| t.split("</title>").next())
            .collect()
    }

    #[test]
    fn points_and_markers_carry_title_tooltips() {
        let mut c = Chart::new("loss", "loss", true);
        c.lines.push(Line::from_points(
            "loss <train>",
            &[
                (1, 30.5),
                (2, 0.012345),
                (3, f64::NAN),
                (4, 0.0),
                (5, 1234.5678),
            ],
        ));
        c.markers.push(Marker {
            step: 3,
            label: "first non-finite value".into(),
        });
        let svg = c.to_svg().unwrap();
        assert_eq!(
            titles(&svg),
            [
                "loss &lt;train&gt;, step 1: 30.5",
                "loss &lt;train&gt;, step 2: 0.0123",
                "loss &lt;train&gt;, step 3: NaN",
                "loss &lt;train&gt;, step 4: 0",
                "loss &lt;train&gt;, step 5: 1235",
                "step 3: first non-finite value",
            ],
            "{svg}"
        );
        // Hover targets, invisible, on top of the drawing, inside the <svg>.
        let tips = svg.find("<g class=\"tips\"").unwrap();
        assert!(tips < svg.rfind("</svg>").unwrap() && svg.trim_end().ends_with("</svg>"));
        assert!(svg[tips..].starts_with("<g class=\"tips\" fill=\"#000\" fill-opacity=\"0\">"));
        // Each tooltip sits where its point is drawn: the NaN on the top edge, the 0 of this
        // log chart on the bottom edge, the finite values in between.
        let cy = |k: usize| -> i32 {
            let circle = svg[tips..].split("<circle").nth(k + 1).unwrap();
            let v = circle.split("cy=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        let ys: Vec<i32> = (0..5).map(cy).collect();
        let top = *ys.iter().min().unwrap();
        let bottom = *ys.iter().max().unwrap();
        assert_eq!(
            (ys[2], ys[3]),
            (top, bottom),
            "NaN on top, 0 at the bottom: {ys:?}"
        );
        assert!(
            ys[4] < ys[0] && ys[0] < ys[1],
            "1235 above 30.5 above 0.0123: {ys:?}"
        );
    }

    #[test]
    fn tooltips_are_bounded_on_long_series() {
        let mut pts: Vec<(u64, f64)> = (1..=5000).map(|s| (s, 1.0 + (s % 13) as f64)).collect();
        pts[3332].1 = 1e6; // step 3333: the spike keeps its tooltip
        pts[4000].1 = f64::INFINITY; // step 4001
        pts[17].1 = 1e-3; // step 18: the smallest value
        let k = tip_indices(&pts, 100);
        assert!(k.len() <= 100 && k.len() >= 95, "{}", k.len());
        for must in [0, 4999, 3332, 4000, 17] {
            assert!(k.contains(&must), "index {must}");
        }
        assert!(k.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tip_indices(&pts[..7], 100), (0..7).collect::<Vec<_>>());
        assert!(tip_indices(&pts, 0).is_empty());
        assert!(tip_indices(&pts, 2).len() <= 2);

        let mut c = Chart::new("per tensor", "norm", true);
        for i in 0..25 {
            c.lines.push(Line::from_points(format!("t{i}"), &pts));
        }
        let svg = c.to_svg().unwrap();
        let n = titles(&svg).len();
        assert!((MAX_TIPS / 2..=MAX_TIPS).contains(&n), "{n} tooltips");
        assert!(svg.contains("<title>t0, step 3333: 1.00e6</title>"));
        assert!(svg.contains("<title>t19, step 4001: inf</title>"));
        assert!(
            !svg.contains("<title>t20,"),
            "lines not drawn get no tooltip"
        );
        let mut one = Chart::new("one", "norm", true);
        one.lines.push(Line::from_points("x", &pts));
        let n = titles(&one.to_svg().unwrap()).len();
        assert!(
            (MAX_TIPS_PER_LINE - 5..=MAX_TIPS_PER_LINE).contains(&n),
            "{n}"
        );
    }

    #[test]
    fn a_zoomed_chart_gives_tooltips_only_inside_its_window() {
        let mut c = Chart::new("zoom", "loss", false);
        let pts: Vec<(u64, f64)> = (1..=300).map(|s| (s, s as f64 * 0.5)).collect();
        c.lines.push(Line::from_points("loss", &pts));
        c.x_window = Some((10, 20));
        let svg = c.to_svg().unwrap();
        let t = titles(&svg);
        assert_eq!(t.len(), 11, "{t:?}");
        assert_eq!(t[0], "loss, step 10: 5");
        assert_eq!(t[10], "loss, step 20: 10");
    }

    #[test]
    fn a_window_zooms_on_its_steps() {
        let mut c = Chart::new("zoom", "loss", false);
        let pts: Vec<(u64, f64)> = (1..=300).map(|s| (s, s as f64)).collect();
        c.lines.push(Line::from_points("loss", &pts));
        c.x_window = Some((1, 10));
        assert_eq!(c.x_range(), (1.0, 10.0));
        assert!((c.y_range().1 - 300.0).abs() > 1.0 || c.y_range().1 > 0.0);
        let svg = c.to_svg().unwrap();
        assert!(svg.contains(&svg_text("10")));
    }
}
