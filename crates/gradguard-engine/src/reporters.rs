//! The standard reporters, and how a spec's reporters join them.

use gradguard_core::Reporter;
use gradguard_report::{ConsoleReporter, HtmlReporter, JsonlReporter, SummaryReporter};

/// The standard reporters: console (when `console`; only the final diagnosis when `quiet`),
/// events.jsonl, summary.json, report.html.
pub fn default_reporters(console: bool, quiet: bool, total_steps: u64) -> Vec<Box<dyn Reporter>> {
    let mut v: Vec<Box<dyn Reporter>> = Vec::new();
    if console {
        let mut c = ConsoleReporter::default().with_total_steps(total_steps);
        c.quiet = quiet;
        v.push(Box::new(c));
    }
    v.push(Box::new(JsonlReporter::default()));
    v.push(Box::new(SummaryReporter::default()));
    v.push(Box::new(HtmlReporter::default()));
    v
}

/// The defaults with the spec's reporters added: a listed reporter whose kind is among the
/// defaults takes that default's place (so a spec can reconfigure it), any other is appended.
pub fn merge_reporters(
    defaults: Vec<Box<dyn Reporter>>,
    listed: Vec<Box<dyn Reporter>>,
) -> Vec<Box<dyn Reporter>> {
    // Each default with whether a listed reporter already took its place.
    let mut slots: Vec<(Box<dyn Reporter>, bool)> =
        defaults.into_iter().map(|d| (d, false)).collect();
    let mut extra = Vec::new();
    for r in listed {
        // Two listed reporters of a default kind: the first replaces it, the next is added.
        match slots
            .iter_mut()
            .find(|(d, taken)| !*taken && d.typetag_name() == r.typetag_name())
        {
            Some(slot) => *slot = (r, true),
            None => extra.push(r),
        }
    }
    slots.into_iter().map(|(r, _)| r).chain(extra).collect()
}
