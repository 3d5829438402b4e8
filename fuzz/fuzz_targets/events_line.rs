//! The events-log line parser: any bytes in, an event, a blank line or an error out, never a
//! panic. The same bytes are then read as a whole log (line splitting, Python's `NaN` and
//! `Infinity` tokens, the replay detectors and the diagnosis).
#![no_main]

use gradguard::detectors::offline::{diagnose_events_report, parse_event_line, OfflineOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_event_line(data);
    if let Ok(report) = diagnose_events_report(data, OfflineOptions::default()) {
        assert!(report.events > 0, "a diagnosed log holds an event");
    }
});
