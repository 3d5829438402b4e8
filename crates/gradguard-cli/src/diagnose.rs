//! `gradguard diagnose EVENTS.jsonl`: the diagnosis of a run, offline, from its events log.
//!
//! A thin wrapper over [`gradguard_detectors::diagnose_events_with`]: the log may be
//! gradguard's own (`events.jsonl` of a run) or written by another framework following
//! docs/EVENTS.md. Malformed lines are reported on stderr with their line number and the rest
//! of the log is still diagnosed (`--strict` makes them an error). The diagnosis is printed in
//! plain words, or as JSON with `--json`. Exit status: 0 when a diagnosis was made, whatever
//! its verdict; an error (unreadable file, no valid line, `--strict` with malformed lines) is
//! returned to the caller, which exits 1.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use gradguard_detectors::{diagnose_events_with, DiagnosisRules, LineError, OfflineOptions};

/// Arguments of `gradguard diagnose`.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Diagnose a run offline from its events log (events.jsonl)",
    long_about = "Reads an events log (one JSON event per line, the schema of docs/EVENTS.md: \
gradguard's own events.jsonl or one written by another framework), replays the detectors that \
need no live weights, and prints the diagnosis: the verdict and the rule behind it, the checklist \
of the signs of exploding gradients (first step, count, layer), where it started, and what to try. \
Malformed lines are reported with their line number; the rest of the log is still diagnosed.\n\n\
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
}

/// Runs `gradguard diagnose`: writes the diagnosis to `out` and the malformed-line warnings to
/// `err`.
pub fn run(args: &DiagnoseArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let shown = args.events.display().to_string();
    let reader: Box<dyn BufRead> = if args.events.as_os_str() == "-" {
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
    let (diagnosis, malformed) = diagnose_events_with(reader, options)
        .with_context(|| format!("cannot diagnose {shown}"))?;
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
        for e in &malformed {
            writeln!(err, "warning: {shown}: {e} (line skipped)")
                .context("cannot write to stderr")?;
        }
        write!(out, "{}", diagnosis.to_plain_words()).context("cannot write the diagnosis")?;
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
        };
        let e = format!("{:#}", run_on(args).0.unwrap_err());
        assert!(
            e.contains("cannot diagnose") && e.contains("no valid event in the log"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }
}
