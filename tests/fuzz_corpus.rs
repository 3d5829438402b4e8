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
