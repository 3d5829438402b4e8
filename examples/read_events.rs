//! Reads a run's events.jsonl (gradguard's or one another framework wrote following
//! docs/EVENTS.md), prints the largest gradient norms, and diagnoses the run offline.
//!
//! Run: `cargo run --release --example read_events -- runs/demo/regression-sgd/events.jsonl`
//! (without an argument it first runs the regression-sgd demo into a temporary folder).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use gradguard::detectors::diagnose_events;
use gradguard::pipeline::demos::demo;
use gradguard::pipeline::{run_experiment, RunOptions};
use gradguard::report::read_events_jsonl;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let own_demo = std::env::args_os().nth(1).is_none();
    let path = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let out = std::env::temp_dir().join("gradguard-example-read-events");
            let spec = demo("regression-sgd").ok_or("demo missing")?.spec()?;
            let opts = RunOptions {
                out_dir: Some(out.clone()),
                console: Some(false),
                ..RunOptions::default()
            };
            run_experiment(spec, &opts)?;
            out.join("events.jsonl")
        }
    };
    let events = read_events_jsonl(&path)?;
    if events.is_empty() {
        return Err(format!("{}: no event read", path.display()).into());
    }
    println!("{}: {} step(s)", path.display(), events.len());
    for e in events.iter().take(12) {
        let worst = e
            .layers
            .iter()
            .filter(|l| !l.grad_norm.is_nan())
            .max_by(|a, b| a.grad_norm.total_cmp(&b.grad_norm))
            .map(|l| format!("{} {:.3e}", l.name, l.grad_norm))
            .unwrap_or_else(|| "-".into());
        println!(
            "step {:>4}  loss {:>12.4e}  grad norm {:>12.4e}  largest layer: {worst}",
            e.step, e.loss, e.grad_norm
        );
    }
    let (diagnosis, malformed) = diagnose_events(BufReader::new(File::open(&path)?))?;
    for m in &malformed {
        eprintln!("skipped {m}");
    }
    print!("{}", diagnosis.to_plain_words());
    // The example checks itself on its own demo run: the offline diagnosis must name the
    // explosion the live run saw.
    if own_demo && diagnosis.verdict != gradguard::core::Verdict::Exploding {
        return Err(format!(
            "read_events' check failed: the regression-sgd demo diagnosed offline as {}",
            diagnosis.verdict.as_str()
        )
        .into());
    }
    Ok(())
}
