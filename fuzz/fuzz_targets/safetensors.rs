//! The gradient-dump (safetensors) reader: any bytes in, a dump or an error out, never a
//! panic or an allocation beyond the input. A dump that reads is measured (`grads stats`)
//! and each tensor encoded back to its dtype.
#![no_main]

use gradguard::dump::{report, GradDump};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut dump) = GradDump::from_bytes("<fuzz>".into(), data) {
        for (i, t) in dump.tensors().iter().enumerate() {
            assert_eq!(dump.values(i).len(), t.shape.iter().product::<usize>());
            let _ = dump.encode(i);
        }
        let _ = report(&mut dump, None);
    }
});
