//! What the `gradguard` binary prints: `-q` leaves stdout empty (even when the spec lists a
//! console reporter) and stderr to errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradguard"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gradguard-cli-output-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A three-step run whose spec lists a console reporter (with progress lines every step).
fn spec_with_console(dir: &std::path::Path) -> PathBuf {
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        "name = \"tiny\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\n\
         n_features = 2\nn_samples = 64\n[train]\nsteps = 3\n\
         [[reporters]]\nkind = \"console\"\nmode = \"lines\"\nevery = 1\n",
    )
    .expect("spec");
    spec
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str], spec: &std::path::Path, out: &std::path::Path) -> Output {
    bin()
        .args(args)
        .arg(spec)
        .arg("--out")
        .arg(out)
        .env_remove("GRADGUARD_LOG")
        .output()
        .expect("gradguard runs")
}

#[test]
fn quiet_run_prints_nothing_even_with_a_listed_console_reporter() {
    let dir = scratch("quiet-run");
    let spec = spec_with_console(&dir);
    // Without -q the listed console reporter talks: progress on stderr, diagnosis on stdout.
    let loud = run(&["run", "--no-verify"], &spec, &dir.join("loud"));
    assert_eq!(loud.status.code(), Some(0), "{}", text(&loud.stderr));
    assert!(
        text(&loud.stdout).contains("Verdict"),
        "{}",
        text(&loud.stdout)
    );
    assert!(
        text(&loud.stderr).contains("step 2 | loss"),
        "{}",
        text(&loud.stderr)
    );

    for flag in ["-q", "--quiet"] {
        let out = dir.join(format!("quiet{flag}"));
        let res = run(&[flag, "run", "--no-verify"], &spec, &out);
        assert_eq!(res.status.code(), Some(0), "{}", text(&res.stderr));
        assert_eq!(text(&res.stdout), "", "{flag}: stdout must be empty");
        assert_eq!(
            text(&res.stderr),
            "",
            "{flag}: no errors, so stderr is empty"
        );
        // Quiet is about the console only: the run's files are all written.
        for file in ["events.jsonl", "summary.json", "report.html"] {
            assert!(out.join(file).is_file(), "{flag}: {file} missing");
        }
    }
}

#[test]
fn quiet_still_reports_errors_on_stderr() {
    let dir = scratch("quiet-errors");
    let res = bin()
        .args(["-q", "run"])
        .arg(dir.join("missing.toml"))
        .output()
        .expect("gradguard runs");
    assert_eq!(res.status.code(), Some(1));
    assert_eq!(text(&res.stdout), "");
    let stderr = text(&res.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("missing.toml"),
        "{stderr}"
    );
    // A used --out directory is refused, loudly, under -q too.
    let spec = spec_with_console(&dir);
    std::fs::create_dir_all(dir.join("used")).unwrap();
    std::fs::write(dir.join("used/keep.txt"), "x").unwrap();
    let res = run(&["-q", "run", "--no-verify"], &spec, &dir.join("used"));
    assert_eq!(res.status.code(), Some(1));
    assert_eq!(text(&res.stdout), "");
    assert!(
        text(&res.stderr).contains("error: "),
        "{}",
        text(&res.stderr)
    );
}

#[test]
fn quiet_silences_other_commands_but_not_requested_json() {
    let dir = scratch("quiet-other");
    let spec = spec_with_console(&dir);
    let check = bin().args(["-q", "check"]).arg(&spec).output().unwrap();
    assert_eq!(check.status.code(), Some(0));
    assert_eq!(text(&check.stdout), "", "check -q: the exit status says it");
    let plain = bin().args(["-q", "plugins"]).output().unwrap();
    assert_eq!(text(&plain.stdout), "");
    // Output asked for as data is still printed.
    let json = bin().args(["-q", "plugins", "--json"]).output().unwrap();
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert!(
        v.as_array().is_some_and(|a| !a.is_empty()) || v.as_object().is_some_and(|o| !o.is_empty()),
        "{v}"
    );
}
