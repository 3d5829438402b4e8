//! `console`: progress while the run trains, the diagnosis in plain words when it ends.
//!
//! Spec: `{ kind = "console" }` or `{ kind = "console", quiet = false, mode = "auto", every = 100 }`.
//!
//! | parameter           | default  | meaning                                                    |
//! |---------------------|----------|------------------------------------------------------------|
//! | `quiet`             | `false`  | no progress and no step lines; only the diagnosis at the end |
//! | `mode`              | `"auto"` | `"bar"`: an indicatif progress bar on stderr; `"lines"`: plain lines on stderr; `"auto"`: the bar when stderr is a terminal, else lines |
//! | `every`             | `100`    | in lines mode, a line every this many steps (0: none)       |
//! | `max_finding_lines` | `100`    | findings printed one per line, at most this many (the rest are counted) |
//! | `total_steps`       | none     | the planned number of steps, for the bar's length and ETA (the pipeline sets it) |
//!
//! The bar shows the step, the loss, the global gradient norm and the latest finding; the
//! first finding of each sign is also printed above it. Lines mode prints
//! `step N | loss L | grad norm G` every `every` steps, the last step, and one line per
//! finding. At `finish` the bar is cleared and the diagnosis is printed on stdout with
//! [`Diagnosis::to_plain_words`](gradguard_core::Diagnosis::to_plain_words), followed by
//! where the outputs are. On a terminal the verdict line and the signs seen are coloured,
//! unless `NO_COLOR` is set or the CLI's `--color` says otherwise ([`crate::color`]).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gradguard_core::{
    describe_plugin, Event, Family, Finding, ParamDoc, PluginInfo, ReportError, Reporter, RunEnd,
    RunInfo, Sign,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleMode {
    /// The bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always the progress bar (indicatif hides it, and the finding lines printed above it,
    /// when stderr is not a terminal).
    Bar,
    /// Always plain lines.
    Lines,
}

/// Progress and the final diagnosis on the console. See the [module docs](self).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleReporter {
    /// Only the diagnosis at the end.
    #[serde(default)]
    pub quiet: bool,
    /// Bar, lines, or decide by whether stderr is a terminal.
    #[serde(default)]
    pub mode: ConsoleMode,
    /// A line every this many steps in lines mode.
    #[serde(default = "default_every")]
    pub every: u64,
    /// At most this many findings printed one per line.
    #[serde(default = "default_max_finding_lines")]
    pub max_finding_lines: u64,
    /// The planned number of steps (for the bar's length).
    #[serde(default)]
    pub total_steps: Option<u64>,
    #[serde(skip)]
    output: Option<Box<dyn Write + Send>>,
    #[serde(skip)]
    state: Option<State>,
}

struct State {
    out_dir: PathBuf,
    name: String,
    bar: Option<ProgressBar>,
    last_message: Option<Instant>,
    latest_finding: Option<String>,
    finding_lines: u64,
    findings_unprinted: u64,
    signs_announced: BTreeSet<Sign>,
    last: Option<(u64, f64, f64)>,
    last_line_step: u64,
}

fn default_every() -> u64 {
    100
}
fn default_max_finding_lines() -> u64 {
    100
}

impl Default for ConsoleReporter {
    fn default() -> Self {
        ConsoleReporter {
            quiet: false,
            mode: ConsoleMode::Auto,
            every: default_every(),
            max_finding_lines: default_max_finding_lines(),
            total_steps: None,
            output: None,
            state: None,
        }
    }
}

fn describe_finding(f: &Finding) -> String {
    match &f.layer {
        Some(l) => format!("step {}: {} on {l}: {}", f.step, f.sign.as_str(), f.message),
        None => format!("step {}: {}: {}", f.step, f.sign.as_str(), f.message),
    }
}

fn step_line(step: u64, loss: f64, grad_norm: f64) -> String {
    format!(
        "step {step} | loss {} | grad norm {}",
        crate::format_number(loss),
        crate::format_number(grad_norm)
    )
}

impl ConsoleReporter {
    /// Sends every line (progress and diagnosis) to `out` instead of stderr/stdout; the bar
    /// is then never used. For tests and for embedding.
    pub fn with_output(mut self, out: Box<dyn Write + Send>) -> Self {
        self.output = Some(out);
        self
    }

    /// Sets the planned number of steps (the bar's length).
    pub fn with_total_steps(mut self, steps: u64) -> Self {
        self.total_steps = Some(steps);
        self
    }

    /// A progress line (stderr, or the custom output). Write errors to a console are ignored
    /// (a closed terminal must not stop training).
    fn progress_line(&mut self, text: &str) {
        match (
            &mut self.output,
            self.state.as_ref().and_then(|s| s.bar.as_ref()),
        ) {
            (Some(out), _) => {
                let _ = writeln!(out, "{text}");
            }
            (None, Some(bar)) => bar.println(text),
            (None, None) => eprintln!("{text}"),
        }
    }

    fn use_bar(&self) -> bool {
        if self.quiet || self.output.is_some() {
            return false;
        }
        match self.mode {
            ConsoleMode::Bar => true,
            ConsoleMode::Lines => false,
            ConsoleMode::Auto => std::io::stderr().is_terminal(),
        }
    }

    fn announce(&mut self, e: &Event) {
        let bar_mode = self.state.as_ref().is_some_and(|s| s.bar.is_some());
        for f in &e.findings {
            let Some(st) = self.state.as_mut() else {
                return;
            };
            st.latest_finding = Some(match &f.layer {
                Some(l) => format!("{} on {l} at step {}", f.sign.as_str(), f.step),
                None => format!("{} at step {}", f.sign.as_str(), f.step),
            });
            // The bar prints the first finding of each sign; lines mode prints every one.
            let wanted = if bar_mode {
                st.signs_announced.insert(f.sign)
            } else {
                true
            };
            if !wanted {
                continue;
            }
            if st.finding_lines < self.max_finding_lines {
                st.finding_lines += 1;
                let text = describe_finding(f);
                self.progress_line(&text);
            } else {
                st.findings_unprinted += 1;
                if st.findings_unprinted == 1 {
                    let text = format!(
                        "(more findings are counted, not printed: max_finding_lines = {})",
                        self.max_finding_lines
                    );
                    self.progress_line(&text);
                }
            }
        }
    }
}

/// The run's final losses against the best constant predictor, one line (empty when none
/// was measured).
fn losses_line(s: &gradguard_core::RunSummary) -> String {
    let n = |x: Option<f64>| x.map_or_else(|| "-".to_string(), crate::format_number);
    if s.final_train_loss.is_none() && s.final_test_loss.is_none() {
        return String::new();
    }
    let mut line = format!(
        "Final loss: {} on the whole training set, {} held out; predicting a constant gives {} and {}",
        n(s.final_train_loss),
        n(s.final_test_loss),
        n(s.baseline_loss),
        n(s.baseline_test_loss)
    );
    if let Some(a) = s.test_accuracy {
        line.push_str(&format!("; held-out accuracy {:.1}%", a * 100.0));
    }
    line.push('\n');
    line
}

#[typetag::serde(name = "console")]
impl Reporter for ConsoleReporter {
    /// Takes in the steps before the checkpoint silently (the bar starts at the checkpoint's
    /// step) and says where the run resumes.
    fn resume(&mut self, run: &RunInfo, past: &[Event]) -> Result<(), ReportError> {
        let quiet = self.quiet;
        self.quiet = true;
        let replayed = self
            .start(run)
            .and_then(|()| past.iter().try_for_each(|e| self.event(e)));
        self.quiet = quiet;
        replayed?;
        let at = past.last().map_or(0, |e| e.step);
        if let Some(bar) = self.state.as_ref().and_then(|st| st.bar.as_ref()) {
            bar.set_position(at);
        }
        if !self.quiet {
            let text = format!(
                "gradguard: resuming {} (seed {}) after step {at}, outputs in {}",
                run.name,
                run.seed,
                run.out_dir.display()
            );
            self.progress_line(&text);
        }
        Ok(())
    }

    fn start(&mut self, run: &RunInfo) -> Result<(), ReportError> {
        let bar = if self.use_bar() {
            let (bar, template) = match self.total_steps {
                Some(n) => (
                    ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                    "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} steps (eta {eta}) {msg}",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    "{spinner} {elapsed_precise} step {pos} {msg}",
                ),
            };
            let style = ProgressStyle::with_template(template)
                .map_err(|e| {
                    ReportError::Other(format!("reporter `console`: progress template: {e}"))
                })?
                .progress_chars("=> ");
            bar.set_style(style);
            Some(bar)
        } else {
            None
        };
        self.state = Some(State {
            out_dir: run.out_dir.clone(),
            name: run.name.clone(),
            bar,
            last_message: None,
            latest_finding: None,
            finding_lines: 0,
            findings_unprinted: 0,
            signs_announced: BTreeSet::new(),
            last: None,
            last_line_step: 0,
        });
        if !self.quiet {
            let text = format!(
                "gradguard: running {} (seed {}), outputs in {}",
                run.name,
                run.seed,
                run.out_dir.display()
            );
            self.progress_line(&text);
        }
        Ok(())
    }

    fn event(&mut self, e: &Event) -> Result<(), ReportError> {
        let Some(st) = self.state.as_mut() else {
            return Err(ReportError::Other(format!(
                "reporter `console`: event at step {} before start",
                e.step
            )));
        };
        st.last = Some((e.step, e.loss, e.grad_norm));
        if self.quiet {
            return Ok(());
        }
        if !e.findings.is_empty() {
            self.announce(e);
        }
        let Some(st) = self.state.as_mut() else {
            return Ok(());
        };
        if let Some(bar) = &st.bar {
            bar.set_position(e.step);
            // The message is rebuilt at most 10 times a second (the bar redraws at 20 Hz).
            let due = st
                .last_message
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if due || !e.findings.is_empty() {
                st.last_message = Some(Instant::now());
                let mut msg = format!(
                    "loss {} | grad norm {}",
                    crate::format_number(e.loss),
                    crate::format_number(e.grad_norm)
                );
                if let Some(f) = &st.latest_finding {
                    msg.push_str(" | latest: ");
                    msg.push_str(f);
                }
                bar.set_message(msg);
            }
        } else if self.every > 0 && e.step.is_multiple_of(self.every) {
            st.last_line_step = e.step;
            let text = step_line(e.step, e.loss, e.grad_norm);
            self.progress_line(&text);
        }
        Ok(())
    }

    fn finish(&mut self, end: &RunEnd<'_>) -> Result<(), ReportError> {
        let Some(st) = self.state.as_mut() else {
            return Err(ReportError::Other(
                "reporter `console`: finish before start".into(),
            ));
        };
        if let Some(bar) = st.bar.take() {
            bar.finish_and_clear();
        }
        let mut text = String::new();
        if !self.quiet {
            if let Some((step, loss, norm)) = st.last {
                if st.last_line_step != step {
                    text.push_str(&step_line(step, loss, norm));
                    text.push('\n');
                }
            }
            if st.findings_unprinted > 0 {
                text.push_str(&format!(
                    "{} finding(s) were not printed (see events.jsonl)\n",
                    st.findings_unprinted
                ));
            }
            text.push_str(&format!("\n{}: {} step(s)\n", st.name, end.summary.steps));
            text.push_str(&losses_line(end.summary));
        }
        // Coloured on a terminal (crate::color): the verdict line and the signs seen.
        let words = end.diagnosis.to_plain_words();
        let colored = match &self.output {
            Some(_) => crate::color::decide(crate::color::color_choice(), false, false),
            None => crate::color::stdout_colored(),
        };
        if colored {
            text.push_str(&crate::color::paint_diagnosis(
                &words,
                end.diagnosis.verdict,
            ));
        } else {
            text.push_str(&words);
        }
        if !self.quiet {
            text.push_str(&format!("Outputs: {}\n", st.out_dir.display()));
        }
        match &mut self.output {
            Some(out) => {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            }
        }
        Ok(())
    }
}

describe_plugin!(PluginInfo {
    family: Family::Reporter,
    kind: "console",
    summary: "Shows progress (a bar on a terminal, plain lines otherwise) and prints the diagnosis in plain words at the end.",
    params: &[
        ParamDoc { name: "quiet", default: Some("false"), doc: "no progress and no step lines; only the diagnosis" },
        ParamDoc { name: "mode", default: Some("\"auto\""), doc: "\"bar\", \"lines\", or \"auto\" (the bar when stderr is a terminal)" },
        ParamDoc { name: "every", default: Some("100"), doc: "in lines mode, a line every this many steps (0: none)" },
        ParamDoc { name: "max_finding_lines", default: Some("100"), doc: "findings printed one per line, at most" },
        ParamDoc { name: "total_steps", default: None, doc: "optional: planned steps, for the bar's length (the pipeline sets it)" },
    ],
    example: "",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{diagnosis, event, run_info, summary};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn run(mut r: ConsoleReporter, steps: u64) -> String {
        let cap = Captured::default();
        r = r.with_output(Box::new(cap.clone()));
        let tmp = tempfile::tempdir().unwrap();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=steps {
            r.event(&event(step, 20)).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        cap.text()
    }

    #[test]
    fn plain_lines_every_n_steps_and_per_finding() {
        let text = run(
            ConsoleReporter {
                every: 10,
                ..Default::default()
            },
            25,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("gradguard: running synthetic (seed 7), outputs in "));
        // step 10: loss = 10/10 + 0.5*1.5^10*0.01 = 1.28833, norm = 0.5*1.5^10 = 28.833
        assert_eq!(lines[1], "step 10 | loss 1.29 | grad norm 28.8");
        assert_eq!(lines[2], "step 20: loss_nonfinite: the loss is NaN");
        assert_eq!(lines[3], "step 20 | loss NaN | grad norm NaN");
        // The last step is printed at the end, then the diagnosis.
        assert_eq!(lines[4], "step 25 | loss NaN | grad norm NaN");
        assert!(
            text.contains("synthetic: 30 step(s)\nFinal loss: - on the whole training set, 0.25 held out; predicting a constant gives 2 and 2.5\nVerdict: exploding"),
            "{text}"
        );
        assert!(text.contains("[x] loss_nonfinite"));
        assert!(text.contains("1. clip_global_norm [untested: not run yet]: bounds the update"));
        assert!(text
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("Outputs: "));
    }

    #[test]
    fn quiet_prints_only_the_diagnosis() {
        let text = run(
            ConsoleReporter {
                quiet: true,
                every: 1,
                ..Default::default()
            },
            25,
        );
        assert!(text.starts_with("Verdict: exploding"), "{text}");
        assert!(!text.contains("step 1 |") && !text.contains("Outputs:"));
    }

    #[test]
    fn finding_lines_are_capped() {
        let cap = Captured::default();
        let mut r = ConsoleReporter {
            every: 0,
            max_finding_lines: 2,
            ..Default::default()
        }
        .with_output(Box::new(cap.clone()));
        let tmp = tempfile::tempdir().unwrap();
        r.start(&run_info(tmp.path())).unwrap();
        for step in 1..=5 {
            let mut e = event(step, 99);
            e.findings.push(Finding::new(
                Sign::GradSpike,
                step,
                Some("layers.0.weight"),
                9.0,
                3.0,
                "spike",
            ));
            r.event(&e).unwrap();
        }
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        let text = cap.text();
        assert_eq!(
            text.matches("grad_spike on layers.0.weight: spike").count(),
            2,
            "{text}"
        );
        assert!(text.contains("(more findings are counted, not printed: max_finding_lines = 2)"));
        assert!(text.contains("3 finding(s) were not printed"));
    }

    #[test]
    fn bar_mode_runs_to_the_end() {
        // On a terminal this draws the bar (check by hand: `script -qc "cargo test -p
        // gradguard-report bar_mode -- --nocapture" /dev/null`); elsewhere indicatif hides it.
        let mut r = ConsoleReporter {
            mode: ConsoleMode::Bar,
            ..Default::default()
        }
        .with_total_steps(30);
        assert!(r.use_bar());
        let tmp = tempfile::tempdir().unwrap();
        r.start(&run_info(tmp.path())).unwrap();
        assert!(r.state.as_ref().unwrap().bar.is_some());
        for step in 1..=30 {
            r.event(&event(step, 20)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = r.state.as_ref().unwrap();
        assert_eq!(st.bar.as_ref().unwrap().position(), 30);
        assert_eq!(
            st.latest_finding.as_deref(),
            Some("loss_nonfinite at step 20")
        );
        let (d, s) = (diagnosis(), summary());
        r.finish(&RunEnd {
            diagnosis: &d,
            summary: &s,
        })
        .unwrap();
        assert!(r.state.as_ref().unwrap().bar.is_none());
    }

    #[test]
    fn spec_and_errors() {
        let r: Box<dyn Reporter> =
            serde_json::from_str(r#"{"kind":"console","mode":"lines","quiet":true}"#).unwrap();
        drop(r);
        let err = serde_json::from_str::<Box<dyn Reporter>>(r#"{"kind":"console","mode":"fancy"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown variant `fancy`"), "{err}");
        let mut r = ConsoleReporter::default();
        assert!(r
            .event(&event(1, 9))
            .unwrap_err()
            .to_string()
            .contains("before start"));
    }
}
