//! Offline diagnosis of an events log (`events.jsonl`, one [`Event`] per line; schema in
//! docs/EVENTS.md), gradguard's own or one written by another framework.
//!
//! Each line is parsed on its own: a malformed line is reported with its line number and
//! skipped, and the rest of the log is still diagnosed. Blank lines are ignored. The bare
//! tokens `NaN`, `Infinity` and `-Infinity` that Python's `json.dumps` writes are read as the
//! non-finite numbers they stand for ([`python_nonfinite_to_strings`]).
//!
//! **Replay.** Each event is turned back into an [`Observation`] without live weights
//! ([`observation_parts_from_event`]) and the replay detectors (by default
//! [`crate::default_detectors`]; `recurrent_radius_above_one` needs live weights and does
//! nothing here) look at it. Their findings are merged with the findings already in the log:
//! a replayed finding is added only when the event holds no logged finding with the same sign,
//! step and layer. The merged events go through the same [`Diagnoser`] the live run uses, so a
//! log written by a gradguard run with the default detectors gives back exactly the diagnosis
//! the run printed, and a log with no findings at all (another framework's) is diagnosed from
//! its figures. With `replay = false` only the logged findings count (use it for a run whose
//! spec listed other detectors).
//!
//! **Memory.** Streaming: one line and one event at a time; the [`Diagnoser`] keeps bounded
//! summaries. At most [`MAX_LINE_ERRORS`] malformed lines are listed; the last entry then
//! counts the rest.

use std::io::{BufRead, Read};

use gradguard_core::{
    Detector, Diagnosis, Event, Finding, Observation, ParamStats, ParamUpdate, Role, StepStats,
    UpdateStats,
};

use crate::diagnoser::{Diagnoser, DiagnosisRules};

/// At most this many malformed lines are listed one by one.
pub const MAX_LINE_ERRORS: usize = 1000;

/// A line of the log that could not be read as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, e.g. `column 12: missing field `loss``.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an events log could not be diagnosed at all.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    /// Reading failed (the file could not be read further).
    #[error("reading the events log failed after line {line}: {source}")]
    Io {
        /// The last line read completely.
        line: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line longer than [`MAX_LINE_BYTES`]: not an events log (or a special file such as
    /// `/dev/zero`); reading stops there instead of growing without bound.
    #[error("line {line} is longer than {max} bytes: not an events log line (reading stopped)", max = MAX_LINE_BYTES)]
    LineTooLong {
        /// The line's number.
        line: usize,
    },
    /// Not one line was a valid event.
    #[error("no valid event in the log ({lines} line(s), {malformed} malformed){}", first_error.as_ref().map(|e| format!("; first problem: {e}")).unwrap_or_default())]
    NoEvents {
        /// Lines read.
        lines: usize,
        /// Lines that were not valid events.
        malformed: usize,
        /// The first malformed line.
        first_error: Option<LineError>,
    },
}

/// Options of [`diagnose_events_with`].
pub struct OfflineOptions {
    /// Run the replay detectors on each event (default true).
    pub replay: bool,
    /// The replay detectors; `None` = [`crate::default_detectors`].
    pub detectors: Option<Vec<Box<dyn Detector>>>,
    /// The verdict rules.
    pub rules: DiagnosisRules,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions {
            replay: true,
            detectors: None,
            rules: DiagnosisRules::default(),
        }
    }
}

/// Diagnoses an events log with the default options: replay of the default detectors, merged
/// with the logged findings. Returns the diagnosis and the malformed lines.
pub fn diagnose_events<R: BufRead>(
    reader: R,
) -> Result<(Diagnosis, Vec<LineError>), DiagnoseError> {
    diagnose_events_with(reader, OfflineOptions::default())
}

/// Rebuilds step statistics and the previous update from an event, into reused buffers.
///
/// Per tensor: `grad_norm`, `grad_max_abs`, `grad_nonfinite` and the weight norm come from the
/// event (`grad_sum_sq` = `grad_norm²`; `weight_nonfinite` = 1 when the weight norm is not
/// finite, as a log holds no count); the role is guessed from the name
/// ([`Role::from_name`], the rank unknown). The global `grad_norm` and `grad_nonfinite` are the event's own.
/// The update (returned `true` when any tensor has an `update_ratio`) has `update_norm` =
/// ratio and `weight_norm` = 1, so [`ParamUpdate::ratio`] gives back the logged ratio exactly.
pub fn observation_parts_from_event(
    e: &Event,
    stats: &mut StepStats,
    update: &mut UpdateStats,
) -> bool {
    stats.params.truncate(e.layers.len());
    update.params.truncate(e.layers.len());
    let mut has_update = false;
    for (i, l) in e.layers.iter().enumerate() {
        if stats.params.len() <= i {
            stats.params.push(ParamStats::default());
            update.params.push(ParamUpdate {
                name: String::new(),
                update_norm: 0.0,
                weight_norm: 1.0,
                weight_nonfinite: 0,
            });
        }
        let p = &mut stats.params[i];
        if p.name != l.name {
            p.name.clear();
            p.name.push_str(&l.name);
            p.role = Role::from_name(&l.name, None);
        }
        p.grad_norm = l.grad_norm;
        p.grad_sum_sq = l.grad_norm * l.grad_norm;
        p.grad_max_abs = l.grad_max_abs;
        p.grad_nonfinite = l.grad_nonfinite;
        p.weight_sum_sq = l.weight_norm * l.weight_norm;
        p.weight_nonfinite = (!l.weight_norm.is_finite()) as usize;
        let u = &mut update.params[i];
        if u.name != l.name {
            u.name.clear();
            u.name.push_str(&l.name);
        }
        u.update_norm = l.update_ratio.unwrap_or(0.0);
        u.weight_norm = 1.0;
        u.weight_nonfinite = p.weight_nonfinite;
        has_update |= l.update_ratio.is_some();
    }
    stats.refresh_totals();
    stats.grad_norm = e.grad_norm;
    stats.grad_sum_sq = e.grad_norm * e.grad_norm;
    stats.grad_nonfinite = e.grad_nonfinite.max(stats.grad_nonfinite);
    update.step = e.step.saturating_sub(1);
    update.lr = e.lr.unwrap_or(f64::NAN);
    has_update
}

fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = text.strip_suffix(&suffix).unwrap_or(&text);
    format!("column {}: {msg}", e.column())
}

/// The longest line an events log may hold (64 MiB: an event with a few hundred thousand
/// tensors); a longer line stops reading with [`DiagnoseError::LineTooLong`].
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Replaces the bare tokens `NaN`, `Infinity` and `-Infinity` (Python's `json.dumps` writes
/// them for non-finite floats) outside JSON strings by the strings `"NaN"`, `"inf"` and
/// `"-inf"`, which gradguard's number fields accept. Text inside strings (keys and values,
/// escapes included) is left as it is; a token is replaced only when it stands alone (not
/// part of a longer word). Returns the text unchanged (borrowed) when it holds no such token.
pub fn python_nonfinite_to_strings(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut copied = 0usize;
    let mut i = 0usize;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        let before_ok = i == 0 || !word(bytes[i - 1]);
        let mut replaced = false;
        if before_ok {
            for (token, with) in [
                ("-Infinity", "\"-inf\""),
                ("Infinity", "\"inf\""),
                ("NaN", "\"NaN\""),
            ] {
                let end = i + token.len();
                if bytes[i..].starts_with(token.as_bytes())
                    && bytes.get(end).is_none_or(|&c| !word(c))
                {
                    out.push_str(&text[copied..i]);
                    out.push_str(with);
                    copied = end;
                    i = end;
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Parses one line of an events log (its bytes, with or without the newline) into an
/// [`Event`]: `Ok(None)` for a blank line, `Err` with a message (`not UTF-8 text (byte N)`,
/// or the JSON error and its column) for a line that is not an event. Python's bare `NaN`,
/// `Infinity` and `-Infinity` are read as non-finite numbers ([`python_nonfinite_to_strings`]).
/// This is how [`diagnose_events_with`] reads each line; any bytes give `Ok` or `Err`.
pub fn parse_event_line(line: &[u8]) -> Result<Option<Event>, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to() + 1))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str::<Event>(&python_nonfinite_to_strings(text))
        .map(Some)
        .map_err(|e| describe_json_error(&e))
}

/// What reading an events log gave: the diagnosis and what the log held.
#[derive(Clone, Debug)]
pub struct OfflineReport {
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// The malformed lines (at most [`MAX_LINE_ERRORS`] listed, then one entry counting the rest).
    pub malformed: Vec<LineError>,
    /// How many lines were malformed (all of them, listed or not).
    pub malformed_count: usize,
    /// How many events were read.
    pub events: u64,
    /// The last event's step.
    pub last_step: u64,
    /// The last event's loss.
    pub last_loss: Option<f64>,
}

/// Diagnoses an events log with `options`. See the [module documentation](self).
pub fn diagnose_events_with<R: BufRead>(
    reader: R,
    options: OfflineOptions,
) -> Result<(Diagnosis, Vec<LineError>), DiagnoseError> {
    let r = diagnose_events_report(reader, options)?;
    Ok((r.diagnosis, r.malformed))
}

/// Diagnoses an events log with `options` and says what the log held (events read,
/// malformed lines, the last step and loss). See the [module documentation](self).
pub fn diagnose_events_report<R: BufRead>(
    reader: R,
    options: OfflineOptions,
) -> Result<OfflineReport, DiagnoseError> {
    diagnose_events_observed(reader, options, |_| {})
}

/// [`diagnose_events_report`], handing every event read (with the replayed findings merged
/// in) to `on_event` as it goes, e.g. to a reporter that draws the run's report.html.
pub fn diagnose_events_observed<R: BufRead>(
    mut reader: R,
    options: OfflineOptions,
    mut on_event: impl FnMut(&Event),
) -> Result<OfflineReport, DiagnoseError> {
    let mut diagnoser = Diagnoser::new(options.rules);
    let mut detectors = if options.replay {
        options.detectors.unwrap_or_else(crate::default_detectors)
    } else {
        Vec::new()
    };
    let mut errors: Vec<LineError> = Vec::new();
    let mut malformed = 0usize;
    let mut first_error = None;
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut events = 0u64;
    let (mut last_step, mut last_loss) = (0u64, None);
    let mut stats = StepStats::default();
    let mut update = UpdateStats::default();
    let mut replayed: Vec<Finding> = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| DiagnoseError::Io {
                line: line_no,
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > MAX_LINE_BYTES {
            return Err(DiagnoseError::LineTooLong { line: line_no });
        }
        let event = match parse_event_line(&buf) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(message) => {
                malformed += 1;
                let err = LineError {
                    line: line_no,
                    message,
                };
                if first_error.is_none() {
                    first_error = Some(err.clone());
                }
                if errors.len() < MAX_LINE_ERRORS {
                    errors.push(err);
                }
                continue;
            }
        };
        events += 1;
        last_step = event.step;
        last_loss = Some(event.loss);
        if detectors.is_empty() {
            diagnoser.observe_event(&event);
            on_event(&event);
            continue;
        }
        let has_update = observation_parts_from_event(&event, &mut stats, &mut update);
        let mut obs = Observation::new(event.step, event.loss, &stats);
        obs.update = has_update.then_some(&update);
        obs.series = &event.series;
        replayed.clear();
        for d in detectors.iter_mut() {
            d.observe(&obs, &mut replayed);
        }
        replayed.retain(|f| {
            !event
                .findings
                .iter()
                .any(|g| g.sign == f.sign && g.step == f.step && g.layer == f.layer)
        });
        if replayed.is_empty() {
            diagnoser.observe_event(&event);
            on_event(&event);
        } else {
            let mut merged = event;
            merged.findings.append(&mut replayed);
            diagnoser.observe_event(&merged);
            on_event(&merged);
        }
    }
    if malformed > MAX_LINE_ERRORS {
        errors.push(LineError {
            line: line_no,
            message: format!(
                "{} further malformed line(s) not listed",
                malformed - MAX_LINE_ERRORS
            ),
        });
    }
    if events == 0 {
        return Err(DiagnoseError::NoEvents {
            lines: line_no,
            malformed,
            first_error,
        });
    }
    Ok(OfflineReport {
        diagnosis: diagnoser.finish(),
        malformed: errors,
        malformed_count: malformed,
        events,
        last_step,
        last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_line() {
        let e = parse_event_line(b"{\"step\":3,\"loss\":NaN,\"grad_norm\":-Infinity}\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((e.step, e.grad_norm), (3, f64::NEG_INFINITY));
        assert!(e.loss.is_nan());
        assert_eq!(parse_event_line(b" \t\n"), Ok(None));
        assert_eq!(
            parse_event_line(b"{\"step\":1}\xff"),
            Err("not UTF-8 text (byte 11)".to_string())
        );
        let err = parse_event_line(b"{\"step\":1,\"grad_norm\":1}").unwrap_err();
        assert!(err.contains("missing field `loss`"), "{err}");
    }

    #[test]
    fn python_tokens_become_strings_outside_json_strings_only() {
        let line =
            r#"{"NaN":"a NaN, Infinity \" NaN","loss":NaN,"x":[Infinity,-Infinity],"NaNa":1}"#;
        assert_eq!(
            python_nonfinite_to_strings(line),
            r#"{"NaN":"a NaN, Infinity \" NaN","loss":"NaN","x":["inf","-inf"],"NaNa":1}"#
        );
        // Not a token on its own: left alone (serde_json then reports it).
        assert_eq!(python_nonfinite_to_strings("[NaNx, xNaN]"), "[NaNx, xNaN]");
        // Non-ASCII text outside strings (malformed JSON) is copied, never split.
        assert_eq!(python_nonfinite_to_strings("[é NaN, ü]"), "[é \"NaN\", ü]");
        assert!(matches!(
            python_nonfinite_to_strings(r#"{"loss":1.0}"#),
            std::borrow::Cow::Borrowed(_)
        ));
        // An escaped backslash ends before the quote: the string closes there.
        assert_eq!(
            python_nonfinite_to_strings(r#"["\\",NaN]"#),
            r#"["\\","NaN"]"#
        );
    }

    #[test]
    fn a_python_log_with_bare_nan_is_diagnosed() {
        let log = concat!(
            r#"{"step":1,"loss":2.0,"grad_norm":1.0,"layers":[{"name":"l.weight","grad_norm":1.0,"grad_max_abs":0.5,"weight_norm":2.0}]}"#,
            "\n",
            r#"{"step":2,"loss":NaN,"grad_norm":Infinity,"grad_nonfinite":1,"layers":[{"name":"l.weight","grad_norm":Infinity,"grad_max_abs":Infinity,"grad_nonfinite":1,"weight_norm":2.0}]}"#,
            "\n"
        );
        let r = diagnose_events_report(log.as_bytes(), OfflineOptions::default()).unwrap();
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
        assert_eq!((r.events, r.last_step), (2, 2));
        assert_eq!(r.diagnosis.verdict, gradguard_core::Verdict::Exploding);
        assert_eq!(r.diagnosis.first_nonfinite_step, Some(2));
    }

    #[test]
    fn an_endless_line_stops_reading_instead_of_growing() {
        // /dev/zero's bytes, bounded here: one line past the limit, no newline.
        let endless = std::io::repeat(0u8).take(MAX_LINE_BYTES as u64 + 10);
        let err = diagnose_events_with(std::io::BufReader::new(endless), OfflineOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, DiagnoseError::LineTooLong { line: 1 }),
            "{err}"
        );
        assert!(
            err.to_string().contains("longer than 67108864 bytes"),
            "{err}"
        );
    }
    use crate::default_detectors;
    use crate::testing::{
        exploding_regression, healthy_regression, run_live, wrecked_rnn, SynthStep,
    };
    use gradguard_core::Verdict;

    fn to_jsonl(events: &[Event]) -> String {
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    fn check_reproduces(steps: &[SynthStep]) -> Diagnosis {
        let (events, live) = run_live(steps, &mut default_detectors());
        let text = to_jsonl(&events);
        let (offline, errors) = diagnose_events(text.as_bytes()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(offline, live);
        let (logged_only, _) = diagnose_events_with(
            text.as_bytes(),
            OfflineOptions {
                replay: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(logged_only, live);
        live
    }

    #[test]
    fn offline_diagnosis_equals_the_live_one() {
        assert_eq!(
            check_reproduces(&exploding_regression()).verdict,
            Verdict::Exploding
        );
        assert_eq!(
            check_reproduces(&healthy_regression()).verdict,
            Verdict::Healthy
        );
        assert_eq!(check_reproduces(&wrecked_rnn()).verdict, Verdict::Exploding);
    }

    #[test]
    fn replay_rebuilds_the_findings_of_a_log_without_any() {
        // Another framework's log: the same figures, no findings. Every detector that works
        // without live weights finds the same signs at the same steps.
        for steps in [exploding_regression(), healthy_regression()] {
            let (mut events, live) = run_live(&steps, &mut default_detectors());
            events.iter_mut().for_each(|e| e.findings.clear());
            let (offline, _) = diagnose_events(to_jsonl(&events).as_bytes()).unwrap();
            assert_eq!(offline, live);
        }
        // The recurrent radius needs live weights: without the logged findings it is missing.
        let (mut events, live) = run_live(&wrecked_rnn(), &mut default_detectors());
        events.iter_mut().for_each(|e| e.findings.clear());
        let (offline, _) = diagnose_events(to_jsonl(&events).as_bytes()).unwrap();
        assert!(
            live.sign(gradguard_core::Sign::RecurrentRadiusAboveOne)
                .unwrap()
                .seen
        );
        assert!(
            !offline
                .sign(gradguard_core::Sign::RecurrentRadiusAboveOne)
                .unwrap()
                .seen
        );
        assert_eq!(offline.verdict, Verdict::Exploding);
    }

    #[test]
    fn malformed_lines_are_reported_and_the_rest_is_diagnosed() {
        let (events, live) = run_live(&exploding_regression(), &mut default_detectors());
        let mut lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        lines.insert(3, "{\"step\": 3, \"loss\": \"lots\"".into()); // line 4
        lines.insert(6, String::new()); // blank: ignored
        lines.insert(8, "{\"step\":4,\"grad_norm\":1.0}".into()); // line 9: no loss
        lines.push("\u{0}garbage".into());
        let text = lines.join("\n");
        let (offline, errors) = diagnose_events(text.as_bytes()).unwrap();
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![4, 9, 16]
        );
        assert!(
            errors[0].message.contains("invalid value: string \"lots\""),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].message.contains("missing field `loss`"),
            "{}",
            errors[1]
        );
        assert_eq!(
            errors[1].to_string(),
            format!("line 9: {}", errors[1].message)
        );
        assert_eq!(offline, live);
        let bad = [0xffu8, 0xfe, b'\n'];
        let err = diagnose_events(&bad[..]).unwrap_err().to_string();
        assert!(
            err.contains("no valid event in the log (1 line(s), 1 malformed)"),
            "{err}"
        );
        assert!(err.contains("line 1: not UTF-8 text"), "{err}");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    const EVENTS_MD: &str = include_str!("../../../docs/EVENTS.md");

    #[test]
    fn the_example_line_in_docs_events_md_parses_and_is_diagnosed() {
        let after = EVENTS_MD.split("### Example line").nth(1).unwrap();
        let line = after
            .split("```json\n")
            .nth(1)
            .unwrap()
            .split("\n```")
            .next()
            .unwrap();
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!((e.step, e.layers.len(), e.findings.len()), (9, 2, 1));
        assert!(e.loss.is_infinite());
        let (d, errors) = diagnose_events(line.as_bytes()).unwrap();
        assert!(errors.is_empty());
        assert_eq!(d.verdict, gradguard_core::Verdict::Exploding);
    }

    #[test]
    fn the_error_text_quoted_in_docs_events_md_is_what_is_produced() {
        let line = r#"{"step":3,"loss":"lots","grad_norm":1.0}"#;
        let good = r#"{"step":1,"loss":1.0,"grad_norm":1.0}"#;
        let text = format!("{good}\n{good}\n{good}\n{line}\n");
        let (_, errors) = diagnose_events(text.as_bytes()).unwrap();
        let quoted = "line 4: column 23: invalid value: string \"lots\", expected a number, \"NaN\", \"inf\", \"-inf\" or null";
        assert_eq!(errors[0].to_string(), quoted);
        let flat: Vec<&str> = EVENTS_MD.split_whitespace().collect();
        assert!(
            flat.join(" ").contains(quoted),
            "docs/EVENTS.md must quote the real error text"
        );
    }
}
