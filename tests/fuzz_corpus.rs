//! Replays the committed fuzz corpus (fuzz/corpus/spec): every input parses to a spec or an
//! error, never a panic; a meaningful share of the corpus parses (so the replay reaches the
//! validation, not only the syntax errors); every spec that parses validates again and
//! survives a JSON round trip; and the hand-written seeds (`seed-*`) that are valid specs parse,
//! while the ones written to be invalid fail with an error.

use std::path::Path;

use gradguard::pipeline::{ExperimentSpec, SpecFormat};

/// Seeds written to be rejected (overflowing or negative numbers, an impossible task).
const INVALID_SEEDS: [&str; 3] = [
    "seed-bad-number.toml",
    "seed-huge.json",
    "seed-negative.toml",
];

/// The fewest fuzzer-found inputs (not `seed-*`) that must parse as a spec in at least one
/// format. Measured: 5 of the 2,035 inputs of the minimised corpus parse (most of it is
/// syntax and type errors, as fuzzing finds them); a parser change that rejects them fails.
const MIN_PARSED_FUZZED: usize = 5;

fn format_of(name: &str) -> SpecFormat {
    if name.ends_with(".json") {
        SpecFormat::Json
    } else {
        SpecFormat::Toml
    }
}

#[test]
fn corpus_never_panics_and_a_share_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/spec");
    let (mut n, mut parsed, mut parsed_fuzzed, mut seeds) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/spec") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("read");
        n += 1;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let mut ok = false;
        for format in [SpecFormat::Toml, SpecFormat::Json] {
            if let Ok(spec) = ExperimentSpec::parse(text, format, &path) {
                ok = true;
                // A parsed spec validates again, and its JSON form parses back.
                spec.validate(&path)
                    .unwrap_or_else(|e| panic!("{name}: parsed but does not validate: {e}"));
                let json = serde_json::to_string(&spec)
                    .unwrap_or_else(|e| panic!("{name}: parsed but does not serialise: {e}"));
                ExperimentSpec::parse(&json, SpecFormat::Json, &path)
                    .unwrap_or_else(|e| panic!("{name}: JSON round trip fails: {e}\n{json}"));
            }
        }
        parsed += ok as usize;
        parsed_fuzzed += (ok && !name.starts_with("seed-")) as usize;
        if name.starts_with("seed-") {
            seeds += 1;
            let result = ExperimentSpec::parse(text, format_of(&name), &path);
            if INVALID_SEEDS.contains(&name.as_str()) {
                assert!(
                    result.is_err(),
                    "{name} was written to be invalid but parses"
                );
            } else {
                result.unwrap_or_else(|e| panic!("valid seed {name} does not parse: {e}"));
            }
        }
    }
    eprintln!(
        "fuzz corpus: {n} inputs, {parsed} parse as a spec ({parsed_fuzzed} found by the fuzzer), {seeds} seeds"
    );
    assert!(n >= 100, "corpus has only {n} inputs");
    assert_eq!(seeds, 11, "the 11 hand-written seeds are in the corpus");
    assert!(
        parsed_fuzzed >= MIN_PARSED_FUZZED,
        "only {parsed_fuzzed} of the fuzzer's inputs parse as a spec"
    );
    assert_eq!(parsed, parsed_fuzzed + 8, "the 8 valid seeds parse");
}

/// Found by the `spec` fuzzer: an empty TOML key (`''`) made the error-position search look
/// for an empty token forever (a hang, not a panic). Now it is an error at once.
#[test]
fn spec_with_an_empty_key_is_an_error_not_a_hang() {
    let text = "''='='\n";
    assert!(ExperimentSpec::parse(text, SpecFormat::Toml, Path::new("hang.toml")).is_err());
    let json = "{\"\": 1}";
    assert!(ExperimentSpec::parse(json, SpecFormat::Json, Path::new("hang.json")).is_err());
}

/// Every file of `fuzz/corpus/<target>`, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// Asserts that the seeds (`seed-*`) of a corpus are exactly `valid` and `invalid`.
fn assert_seeds(files: &[(String, Vec<u8>)], valid: &[&str], invalid: &[&str]) {
    let mut seeds: Vec<&str> = files
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("seed-"))
        .collect();
    seeds.sort();
    let mut expected: Vec<&str> = valid.iter().chain(invalid).copied().collect();
    expected.sort();
    assert_eq!(seeds, expected, "the hand-written seeds are in the corpus");
}

mod events_line {
    use super::*;
    use gradguard::detectors::offline::{diagnose_events_report, parse_event_line, OfflineOptions};

    /// Seeds that are one valid event line: three lines of a real run (`rnn-nan`; the last
    /// one with `"NaN"` strings), Python's bare tokens, the fewest fields.
    const VALID: [&str; 5] = [
        "seed-minimal.jsonl",
        "seed-python-nonfinite.jsonl",
        "seed-run-nan.jsonl",
        "seed-run-step1.jsonl",
        "seed-run-step2.jsonl",
    ];
    /// Seeds written to be rejected as a line.
    const INVALID: [&str; 6] = [
        "seed-bad-step.jsonl",
        "seed-bad-token.jsonl",
        "seed-log-torn-tail.jsonl", // several lines: a log, not a line (checked below)
        "seed-missing-loss.jsonl",
        "seed-not-utf8.jsonl",
        "seed-truncated.jsonl",
    ];
    /// The fewest fuzzer-found inputs that must diagnose as a log (at least one valid event
    /// line). Measured: 221 of the 3,258 fuzzer-found inputs of the minimised corpus; a
    /// parser change that rejects them fails.
    const MIN_PARSED_FUZZED: usize = 221;

    #[test]
    fn corpus_never_panics_and_a_share_parses() {
        let files = corpus("events_line");
        assert_seeds(&files, &VALID, &INVALID);
        let (mut lines, mut logs, mut logs_fuzzed) = (0, 0, 0);
        for (name, bytes) in &files {
            let line = parse_event_line(bytes);
            lines += matches!(line, Ok(Some(_))) as usize;
            let log = diagnose_events_report(&bytes[..], OfflineOptions::default());
            if let Ok(report) = &log {
                assert!(report.events > 0, "{name}: diagnosed without an event");
                logs += 1;
                logs_fuzzed += !name.starts_with("seed-") as usize;
            }
            if VALID.contains(&name.as_str()) {
                let event = line
                    .unwrap_or_else(|e| panic!("valid seed {name} does not parse: {e}"))
                    .unwrap_or_else(|| panic!("valid seed {name} reads as a blank line"));
                // The same line is a log of one event.
                let report = log.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!((report.events, report.last_step), (1, event.step), "{name}");
            } else if INVALID.contains(&name.as_str()) {
                assert!(line.is_err(), "{name} was written to be invalid but parses");
            }
        }
        eprintln!(
            "events_line corpus: {} inputs, {lines} parse as one event, {logs} as a log ({logs_fuzzed} found by the fuzzer)",
            files.len()
        );
        assert!(
            logs_fuzzed >= MIN_PARSED_FUZZED,
            "only {logs_fuzzed} of the fuzzer's inputs diagnose as a log"
        );
    }

    #[test]
    fn seeds_read_as_written() {
        let files = corpus("events_line");
        let get = |n: &str| &files.iter().find(|(name, _)| name == n).expect(n).1;
        // Python's bare tokens are the non-finite numbers they stand for.
        let e = parse_event_line(get("seed-python-nonfinite.jsonl"))
            .unwrap()
            .unwrap();
        assert!(e.loss.is_nan());
        assert_eq!(e.grad_norm, f64::INFINITY);
        assert_eq!(e.layers[0].grad_max_abs, f64::NEG_INFINITY);
        // A log: two events, a blank line skipped, the torn last line malformed.
        let r = diagnose_events_report(
            &get("seed-log-torn-tail.jsonl")[..],
            OfflineOptions::default(),
        )
        .unwrap();
        assert_eq!((r.events, r.last_step, r.malformed_count), (2, 2, 1));
        let err = parse_event_line(get("seed-not-utf8.jsonl")).unwrap_err();
        assert!(err.starts_with("not UTF-8 text"), "{err}");
        let err = parse_event_line(get("seed-missing-loss.jsonl")).unwrap_err();
        assert!(err.contains("missing field `loss`"), "{err}");
    }
}

mod csv {
    use super::*;
    use gradguard::models::tasks::{read_csv_header_from, read_csv_table_from, CsvTable};

    /// Valid seeds and the columns read from them.
    /// (`seed-open-quote.csv` ends inside a quoted cell: the csv crate reads the cell up to
    /// the end of the file, and so does gradguard.)
    const VALID: [(&str, &[&str]); 7] = [
        ("seed-co2-head.csv", &["co2"]),
        ("seed-digits-head.csv", &["p0", "p63"]),
        ("seed-open-quote.csv", &["x", "y"]),
        ("seed-sunspots.csv", &["year", "sunspots"]),
        ("seed-xy-crlf.csv", &["x", "y"]),
        ("seed-xy-plain.csv", &["x", "y"]),
        ("seed-xy-quoted.csv", &["y", "x"]),
    ];
    /// Seeds written to be rejected (read with every column of their header).
    const INVALID: [&str; 6] = [
        "seed-duplicate.csv",
        "seed-empty.csv",
        "seed-header-only.csv",
        "seed-nan-cell.csv",
        "seed-overflow.csv",
        "seed-ragged.csv",
    ];
    /// The fewest fuzzer-found inputs that must read as a table with every column of their
    /// header. Measured: 15 of the 308 fuzzer-found inputs of the minimised corpus.
    const MIN_PARSED_FUZZED: usize = 15;

    fn check(name: &str, t: &CsvTable) {
        assert!(t.rows > 0, "{name}: a table without rows");
        assert_eq!(t.values.len(), t.rows * t.columns.len(), "{name}");
        assert!(t.values.iter().all(|v| v.is_finite()), "{name}");
    }

    fn strings(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| c.to_string()).collect()
    }

    /// Reads `bytes` with every column of its header.
    fn read_all(bytes: &[u8]) -> Result<CsvTable, String> {
        let path = Path::new("<corpus>");
        let header = read_csv_header_from(bytes, path).map_err(|e| e.to_string())?;
        read_csv_table_from(bytes, path, &header).map_err(|e| e.to_string())
    }

    #[test]
    fn corpus_never_panics_and_a_share_parses() {
        let files = corpus("csv");
        let valid: Vec<&str> = VALID.iter().map(|(n, _)| *n).collect();
        assert_seeds(&files, &valid, &INVALID);
        let (mut parsed, mut parsed_fuzzed) = (0, 0);
        for (name, bytes) in &files {
            let all = read_all(bytes);
            if let Ok(t) = &all {
                check(name, t);
                parsed += 1;
                parsed_fuzzed += !name.starts_with("seed-") as usize;
            }
            if let Ok(t) =
                read_csv_table_from(&bytes[..], Path::new("<corpus>"), &strings(&["x", "y"]))
            {
                check(name, &t);
            }
            if let Some((_, columns)) = VALID.iter().find(|(n, _)| n == name) {
                let t = read_csv_table_from(&bytes[..], Path::new(name), &strings(columns))
                    .unwrap_or_else(|e| panic!("valid seed {name} does not read: {e}"));
                check(name, &t);
            } else if INVALID.contains(&name.as_str()) {
                assert!(all.is_err(), "{name} was written to be invalid but reads");
            }
        }
        eprintln!(
            "csv corpus: {} inputs, {parsed} read with every column ({parsed_fuzzed} found by the fuzzer)",
            files.len()
        );
        assert!(
            parsed_fuzzed >= MIN_PARSED_FUZZED,
            "only {parsed_fuzzed} of the fuzzer's inputs read as a table"
        );
    }

    #[test]
    fn seeds_read_as_written() {
        let files = corpus("csv");
        let get = |n: &str| &files.iter().find(|(name, _)| name == n).expect(n).1[..];
        let t = read_csv_table_from(
            get("seed-xy-quoted.csv"),
            Path::new("q.csv"),
            &strings(&["y", "x"]),
        )
        .unwrap();
        assert_eq!(
            (t.rows, t.values),
            (3, vec![2.0, 1.0, 4.0, -350.0, 6.0, 5.0])
        );
        let err = read_all(get("seed-duplicate.csv")).unwrap_err();
        assert!(err.contains("columns 1 and 2 are both named `x`"), "{err}");
        let err = read_all(get("seed-ragged.csv")).unwrap_err();
        assert!(err.contains("line 3") && err.contains("ragged"), "{err}");
        let err = read_all(get("seed-overflow.csv")).unwrap_err();
        assert!(err.contains("not a finite number"), "{err}");
        let err = read_csv_table_from(
            get("seed-xy-plain.csv"),
            Path::new("u.csv"),
            &strings(&["x", "z"]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("u.csv") && err.contains("no column `z`"),
            "{err}"
        );
    }
}

mod safetensors {
    use super::*;
    use gradguard::dump::{report, GradDump};

    /// Valid dumps: written by the Rust `safetensors` crate, and by Python (F16, BF16, F64).
    const VALID: [&str; 5] = [
        "seed-py-bf16.safetensors",
        "seed-py-f16.safetensors",
        "seed-py-f64.safetensors",
        "seed-rust-f32.safetensors",
        "seed-rust-nonfinite.safetensors",
    ];
    /// Seeds written to be rejected.
    const INVALID: [&str; 9] = [
        "seed-empty.safetensors",
        "seed-header-huge.safetensors",
        "seed-header-past-end.safetensors",
        "seed-not-object.safetensors",
        "seed-py-f64-out-of-range.safetensors",
        "seed-rust-i32.safetensors",
        "seed-shape-mismatch.safetensors",
        "seed-short.safetensors",
        "seed-truncated-data.safetensors",
    ];
    /// The fewest fuzzer-found inputs that must read as a dump. Measured: 53 of the 1,043
    /// fuzzer-found inputs of the minimised corpus.
    const MIN_PARSED_FUZZED: usize = 53;

    #[test]
    fn corpus_never_panics_and_a_share_parses() {
        let files = corpus("safetensors");
        assert_seeds(&files, &VALID, &INVALID);
        let (mut parsed, mut parsed_fuzzed) = (0, 0);
        for (name, bytes) in &files {
            let dump = GradDump::from_bytes(name.into(), bytes);
            if let Ok(mut d) = dump {
                for (i, t) in d.tensors().iter().enumerate() {
                    assert_eq!(
                        d.values(i).len(),
                        t.shape.iter().product::<usize>(),
                        "{name}"
                    );
                    let _ = d.encode(i);
                }
                report(&mut d, None).unwrap_or_else(|e| panic!("{name}: no report: {e}"));
                parsed += 1;
                parsed_fuzzed += !name.starts_with("seed-") as usize;
                assert!(
                    !INVALID.contains(&name.as_str()),
                    "{name} was written to be invalid but reads"
                );
            } else if let Err(e) = dump {
                assert!(e.to_string().contains(name.as_str()), "{name}: {e}");
                assert!(
                    !VALID.contains(&name.as_str()),
                    "valid seed {name} does not read: {e}"
                );
            }
        }
        eprintln!(
            "safetensors corpus: {} inputs, {parsed} read as a dump ({parsed_fuzzed} found by the fuzzer)",
            files.len()
        );
        assert!(
            parsed_fuzzed >= MIN_PARSED_FUZZED,
            "only {parsed_fuzzed} of the fuzzer's inputs read as a dump"
        );
    }

    #[test]
    fn seeds_read_as_written() {
        let files = corpus("safetensors");
        let get = |n: &str| &files.iter().find(|(name, _)| name == n).expect(n).1[..];
        let d = GradDump::from_bytes("f32".into(), get("seed-rust-f32.safetensors")).unwrap();
        let names: Vec<(&str, &[usize])> = d
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        // In the order of their data in the file (the crate writes them sorted by name).
        assert_eq!(
            names,
            [("layer.bias", &[2][..]), ("layer.weight", &[2, 3][..])]
        );
        assert_eq!(d.values(0), [1.0, -2.0]);
        let meta = d.metadata.as_ref().unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
        let mut d =
            GradDump::from_bytes("nf".into(), get("seed-rust-nonfinite.safetensors")).unwrap();
        assert_eq!(report(&mut d, None).unwrap().nonfinite, 2);
        for (seed, says) in [
            ("seed-rust-i32.safetensors", "dtype I32"),
            (
                "seed-py-f64-out-of-range.safetensors",
                "outside the f32 range",
            ),
            ("seed-empty.safetensors", "shorter than the 8-byte header"),
            (
                "seed-header-past-end.safetensors",
                "past the end of the file",
            ),
            (
                "seed-truncated-data.safetensors",
                "data section does not match",
            ),
        ] {
            let err = GradDump::from_bytes(seed.into(), get(seed))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{seed}: {err}");
        }
    }
}
