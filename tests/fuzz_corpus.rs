//! Replays the committed fuzz corpus (fuzz/corpus/spec): every input parses to a spec or an
//! error, never a panic.

use std::path::Path;

use gradguard::pipeline::{ExperimentSpec, SpecFormat};

#[test]
fn corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/spec");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/spec") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            for format in [SpecFormat::Toml, SpecFormat::Json] {
                let _ = ExperimentSpec::parse(text, format, &path);
            }
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has only {n} inputs");
}
