//! Any bytes in: an error or a spec out, never a panic.
#![no_main]

use std::path::Path;

use gradguard::pipeline::{ExperimentSpec, SpecFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Keep every plugin crate linked so typetag knows all kinds.
    let _ = gradguard::builtin_kinds();
    if let Ok(text) = std::str::from_utf8(data) {
        for format in [SpecFormat::Toml, SpecFormat::Json] {
            let _ = ExperimentSpec::parse(text, format, Path::new("<fuzz>"));
        }
    }
});
