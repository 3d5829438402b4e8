//! `gradguard diagnose EVENTS.jsonl`: the diagnosis of a run, offline, from its events log.
//!
//! A thin wrapper over [`gradguard_detectors::diagnose_events_with`]: the log may be
//! gradguard's own (`events.jsonl` of a run) or written by another framework following
//! docs/EVENTS.md. Malformed lines are reported on stderr with their line number and the rest
//! of the log is still diagnosed (`--strict` makes them an error). The diagnosis is printed in
//! plain words, or as JSON with `--json`; `--summary FILE` also writes a summary.json for it.
//! Exit status: 0 when a diagnosis was made, whatever its verdict; 3 ([`crate::Incomplete`])
//! when lines were skipped and the verdict would be `healthy` (a skipped line may have held
//! the sign); an error (unreadable file, no valid line, `--strict` with malformed lines) is
//! returned to the caller, which exits 1.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use gradguard_core::Reporter;
use gradguard_core::Verdict;
use gradguard_detectors::{
    diagnose_events_observed, run_summary, DiagnosisRules, LineError, OfflineOptions, RunFigures,
};

/// The report page for `--html PATH`: an HTML reporter writing PATH, started for a run named
/// after the log.
fn start_page(path: &std::path::Path, name: &str) -> Result<gradguard_report::HtmlReporter> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or_else(|| {
            crate::UserError(format!(
                "{}: expected a file name for --html",
                path.display()
            ))
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut page = gradguard_report::HtmlReporter::default();
    page.file = file;
    let info = gradguard_core::RunInfo {
        name: name.to_string(),
        seed: 0,
        out_dir: dir,
        params: Vec::new(),
        clip_threshold: None,
    };
    page.start(&info)
        .map_err(|e| crate::UserError(format!("cannot write {}: {e}", path.display())))?;
    Ok(page)
}

/// Arguments of `gradguard diagnose`.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Diagnose a run offline from its events log (events.jsonl)",
    long_about = "Reads an events log (one JSON event per line, the schema of docs/EVENTS.md: \
gradguard's own events.jsonl or one written by another framework), replays the detectors that \
need no live weights, and prints the diagnosis: the verdict and the rule behind it, the checklist \
of the signs of exploding gradients (first step, count, layer), where it started, and what to try. \
Malformed lines are reported with their line number; the rest of the log is still diagnosed. \
Python's bare NaN, Infinity and -Infinity tokens are read as numbers.\n\n\
Exit status: 0 when the log was diagnosed, whatever the verdict; 3 when lines were skipped and \
the verdict would be healthy (the diagnosis is incomplete: a skipped line may hold the sign); \
1 for an unreadable log, a log without a valid event, or any malformed line with --strict.\n\n\
Example: gradguard diagnose runs/rnn-long-sequences/events.jsonl"
)]
pub struct DiagnoseArgs {
    /// The events log; `-` reads standard input.
    #[arg(value_name = "EVENTS.jsonl")]
    pub events: PathBuf,
    /// Print the diagnosis (and the malformed lines) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Use only the findings written in the log; do not replay the default detectors
    /// (for a run whose spec listed other detectors).
    #[arg(long)]
    pub no_replay: bool,
    /// Fail (exit 1) when any line is malformed, instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
    /// Also write a summary.json for the log (steps = events read; figures only the log holds).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// For a TensorBoard log (a `*tfevents*` file, or a directory of them): which tags hold
    /// the loss (`loss=TAG`), the global gradient norm (`grad_norm=TAG`) and the per-tensor
    /// norms (`layers=PREFIX`); repeatable. Default: the conventions of docs/EVENTS.md.
    #[arg(long = "tag", value_name = "KIND=TAG")]
    pub tags: Vec<String>,
    /// Also write a report page for the log (the charts and diagnosis a run's report.html
    /// shows).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Runs `gradguard diagnose`: writes the diagnosis to `out` and the malformed-line warnings to
/// `err`, without colour.
pub fn run(args: &DiagnoseArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    run_colored(args, out, err, false)
}

/// [`run`], with the plain-words diagnosis coloured when `colored` (the verdict line and
/// the signs seen, as the console reporter does: [`gradguard_report::color`]).
pub fn run_colored(
    args: &DiagnoseArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    colored: bool,
) -> Result<()> {
    let shown = args.events.display().to_string();
    let reader: Box<dyn BufRead> = if crate::tb_log::is_tensorboard(&args.events) {
        // A TensorBoard log: its scalars become the same events a JSON-lines log holds.
        let tags = crate::tb_log::TagChoice::parse(&args.tags)?;
        let events = crate::tb_log::read_tensorboard(&args.events, &tags)?;
        let mut text = Vec::new();
        for e in &events {
            serde_json::to_writer(&mut text, e).context("cannot serialise an event")?;
            text.push(b'\n');
        }
        Box::new(std::io::Cursor::new(text))
    } else if args.events.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(&args.events)
            .with_context(|| format!("cannot open the events log {shown}"))?;
        // A device or directory is no log (`/dev/zero` would be read forever); pipes and
        // regular files are.
        let kind = file
            .metadata()
            .with_context(|| format!("cannot read the events log {shown}"))?
            .file_type();
        use std::os::unix::fs::FileTypeExt;
        if kind.is_dir() || kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
            return Err(crate::UserError(format!(
                "{shown}: not a regular file or pipe: expected an events log (JSON lines)"
            ))
            .into());
        }
        Box::new(BufReader::new(file))
    };
    let options = OfflineOptions {
        replay: !args.no_replay,
        detectors: None,
        rules: DiagnosisRules::default(),
    };
    let name = match args.events.file_stem() {
        Some(stem) if args.events.as_os_str() != "-" => stem.to_string_lossy().into_owned(),
        _ => "stdin".to_string(),
    };
    let mut page = match &args.html {
        Some(path) => Some(start_page(path, &name)?),
        None => None,
    };
    let mut page_error = None;
    let report = diagnose_events_observed(reader, options, |event| {
        if let Some(p) = page.as_mut() {
            if let Err(e) = p.event(event) {
                page_error.get_or_insert(e);
            }
        }
    })
    .with_context(|| format!("cannot diagnose {shown}"))?;
    let (diagnosis, malformed) = (&report.diagnosis, &report.malformed);
    if args.strict && !malformed.is_empty() {
        let list: Vec<String> = malformed
            .iter()
            .take(10)
            .map(LineError::to_string)
            .collect();
        bail!(
            "{shown}: {} malformed line(s) (--strict):\n  {}",
            malformed.len(),
            list.join("\n  ")
        );
    }
    if args.json {
        let lines: Vec<serde_json::Value> = malformed
            .iter()
            .map(|e| serde_json::json!({ "line": e.line, "message": e.message }))
            .collect();
        let value = serde_json::json!({ "diagnosis": diagnosis, "malformed_lines": lines });
        let text =
            serde_json::to_string_pretty(&value).context("cannot serialise the diagnosis")?;
        writeln!(out, "{text}").context("cannot write the diagnosis")?;
    } else {
        for e in malformed {
            writeln!(err, "warning: {shown}: {e} (line skipped)")
                .context("cannot write to stderr")?;
        }
        let words = diagnosis.to_plain_words();
        let words = if colored {
            gradguard_report::color::paint_diagnosis(&words, diagnosis.verdict)
        } else {
            words
        };
        write!(out, "{words}").context("cannot write the diagnosis")?;
    }
    let figures = RunFigures {
        name,
        steps: report.events,
        last_batch_loss: report.last_loss,
        ..RunFigures::default()
    };
    let summary = run_summary(diagnosis, &figures, Vec::new());
    if let (Some(mut p), Some(path)) = (page, &args.html) {
        let end = gradguard_core::RunEnd {
            diagnosis,
            summary: &summary,
        };
        if let Some(e) = page_error.take() {
            return Err(crate::UserError(format!("cannot write {}: {e}", path.display())).into());
        }
        p.finish(&end)
            .map_err(|e| crate::UserError(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.summary {
        let text =
            serde_json::to_string_pretty(&summary).context("cannot serialise the summary")?;
        gradguard_report::write_atomically(path, text.as_bytes())
            .map_err(|e| crate::UserError(format!("cannot write the summary: {e}")))?;
    }
    if report.malformed_count > 0 && diagnosis.verdict == Verdict::Healthy {
        return Err(crate::Incomplete(format!(
            "{shown}: the diagnosis is incomplete: {} line(s) were skipped, and a skipped line \
may hold a sign, so the run is not called healthy",
            report.malformed_count
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "gradguard-diagnose-{}-{name}.jsonl",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run_on(args: DiagnoseArgs) -> (Result<()>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = run(&args, &mut out, &mut err);
        (
            r,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const LOG: &str = concat!(
        r#"{"step":1,"loss":2.0,"grad_norm":1.0,"layers":[{"name":"l.weight","grad_norm":1.0,"grad_max_abs":0.5,"weight_norm":2.0}]}"#,
        "\n",
        r#"{"step":2,"loss":"#,
        "\n",
        r#"{"step":3,"loss":"NaN","grad_norm":"inf","grad_nonfinite":1,"layers":[{"name":"l.weight","grad_norm":"inf","grad_max_abs":"inf","grad_nonfinite":1,"weight_norm":2.0}]}"#,
        "\n"
    );

    #[test]
    fn prints_the_diagnosis_and_reports_malformed_lines() {
        let path = temp_log("plain", LOG);
        let args = DiagnoseArgs {
            events: path.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let (r, out, err) = run_on(args);
        r.unwrap();
        assert!(
            out.starts_with("Verdict: exploding (the loss became NaN at step 3"),
            "{out}"
        );
        assert!(out.contains("[x] loss_nonfinite"), "{out}");
        assert!(err.contains(": line 2: column"), "{err}");
        let args = DiagnoseArgs {
            events: path.clone(),
            json: true,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let (r, out, _) = run_on(args);
        r.unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["diagnosis"]["verdict"], "exploding");
        assert_eq!(v["malformed_lines"][0]["line"], 2);
        let args = DiagnoseArgs {
            events: path.clone(),
            json: false,
            no_replay: false,
            strict: true,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let (r, _, _) = run_on(args);
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("1 malformed line(s) (--strict)") && e.contains("line 2:"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn missing_file_and_empty_log_are_errors_naming_the_file() {
        let args = DiagnoseArgs {
            events: "/nonexistent/events.jsonl".into(),
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let e = format!("{:#}", run_on(args).0.unwrap_err());
        assert!(
            e.contains("cannot open the events log /nonexistent/events.jsonl"),
            "{e}"
        );
        let path = temp_log("empty", "\n\n");
        let args = DiagnoseArgs {
            events: path.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let e = format!("{:#}", run_on(args).0.unwrap_err());
        assert!(
            e.contains("cannot diagnose") && e.contains("no valid event in the log"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }

    const HEALTHY_WITH_BAD_LINE: &str = concat!(
        r#"{"step":1,"loss":2.0,"grad_norm":1.0,"layers":[{"name":"l.weight","grad_norm":1.0,"grad_max_abs":0.5,"weight_norm":2.0}]}"#,
        "\n",
        "not json\n",
        r#"{"step":2,"loss":1.5,"grad_norm":0.9,"layers":[{"name":"l.weight","grad_norm":0.9,"grad_max_abs":0.5,"weight_norm":2.0}]}"#,
        "\n"
    );

    #[test]
    fn a_healthy_verdict_with_skipped_lines_is_incomplete_and_a_summary_is_written() {
        let path = temp_log("incomplete", HEALTHY_WITH_BAD_LINE);
        let summary = path.with_extension("summary.json");
        let args = DiagnoseArgs {
            events: path.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: Some(summary.clone()),
            html: None,
            tags: Vec::new(),
        };
        let (r, out, _) = run_on(args);
        assert!(out.starts_with("Verdict: healthy"), "{out}");
        let e = r.unwrap_err();
        assert!(e.downcast_ref::<crate::Incomplete>().is_some(), "{e:#}");
        assert!(
            e.to_string().contains("incomplete: 1 line(s) were skipped"),
            "{e}"
        );
        let s: gradguard_core::RunSummary =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s.steps, 2);
        assert_eq!(s.verdict, Verdict::Healthy);
        assert_eq!(s.last_batch_loss, Some(1.5));
        // The same log without the bad line: a complete healthy diagnosis.
        let good: String = HEALTHY_WITH_BAD_LINE.replace("not json\n", "");
        let path2 = temp_log("complete", &good);
        let args = DiagnoseArgs {
            events: path2.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        run_on(args).0.unwrap();
        // Skipped lines beside an exploding verdict do not make it incomplete.
        let path3 = temp_log("exploding-bad", LOG);
        let args = DiagnoseArgs {
            events: path3.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: Some(summary.clone()),
            html: None,
            tags: Vec::new(),
        };
        run_on(args).0.unwrap();
        let s: gradguard_core::RunSummary =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s.verdict, Verdict::Exploding);
        for p in [path, path2, path3, summary] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn html_writes_the_report_page_of_any_log() {
        let path = temp_log("page", LOG);
        let page = path.with_extension("report.html");
        let args = DiagnoseArgs {
            events: path.clone(),
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: Some(page.clone()),
            tags: Vec::new(),
        };
        let (r, out, _) = run_on(args);
        r.expect("diagnosed");
        assert!(out.starts_with("Verdict: exploding"), "{out}");
        let html = std::fs::read_to_string(&page).expect("the page was written");
        assert!(html.contains("<svg"), "the page draws the log's curves");
        assert!(
            html.to_lowercase().contains("exploding"),
            "the page states the verdict"
        );
        // Step 3's non-finite gradient, replayed from the log, is on the page.
        assert!(html.contains("grad_nonfinite") || html.contains("loss_nonfinite"));
        for p in [path, page] {
            let _ = std::fs::remove_file(p);
        }
    }
}
