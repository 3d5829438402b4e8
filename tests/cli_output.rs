//! What the `gradguard` binary prints: `-q` leaves stdout empty (even when the spec lists a
//! console reporter) and stderr to errors; colour only on a terminal or with `--color
//! always`, never with `NO_COLOR` under `auto`.

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

/// A run's stdout with `args` before the spec, and `NO_COLOR` set to `no_color` (or unset).
fn run_colored(dir: &std::path::Path, name: &str, args: &[&str], no_color: Option<&str>) -> String {
    let spec = spec_with_console(dir);
    let mut cmd = bin();
    cmd.args(args)
        .arg(&spec)
        .arg("--out")
        .arg(dir.join(name))
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let res = cmd.output().expect("gradguard runs");
    assert_eq!(res.status.code(), Some(0), "{}", text(&res.stderr));
    text(&res.stdout)
}

#[test]
fn colour_only_when_asked_or_on_a_terminal_and_never_with_no_color() {
    let dir = scratch("colour");
    // --color always: the verdict line is coloured (bold + the verdict's colour), reset after.
    let always = run_colored(
        &dir,
        "always",
        &["--color", "always", "run", "--no-verify"],
        None,
    );
    let verdict = always
        .lines()
        .find(|l| l.contains("Verdict: "))
        .expect("a verdict line");
    assert!(
        verdict.starts_with("\x1b[1;3") && verdict.ends_with("\x1b[0m"),
        "{verdict:?}"
    );
    // An explicit choice wins over NO_COLOR (no-color.org: user-level choices may override).
    let forced = run_colored(
        &dir,
        "forced",
        &["run", "--no-verify", "--color=always"],
        Some("1"),
    );
    assert!(forced.contains("\x1b["), "{forced}");
    // Tests run piped, so stdout is not a terminal: auto means no colour.
    let piped = run_colored(&dir, "auto", &["run", "--no-verify"], None);
    assert!(
        piped.contains("Verdict: ") && !piped.contains('\x1b'),
        "{piped:?}"
    );
    // NO_COLOR, any non-empty value; --color never.
    let no_color = run_colored(&dir, "no-color", &["run", "--no-verify"], Some("0"));
    assert!(!no_color.contains('\x1b'), "{no_color:?}");
    let never = run_colored(
        &dir,
        "never",
        &["--color", "never", "run", "--no-verify"],
        None,
    );
    assert!(!never.contains('\x1b'), "{never:?}");
    // Stripped of its codes, the coloured output is the plain one (same run, same seed),
    // save for the directory named on the last line.
    let strip = |s: &str| {
        s.replace("\x1b[1;31m", "")
            .replace("\x1b[1;32m", "")
            .replace("\x1b[1;33m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "")
            .replace(&dir.join("always").display().to_string(), "OUT")
            .replace(&dir.join("auto").display().to_string(), "OUT")
    };
    assert_eq!(strip(&always), strip(&piped));
    // A bad value is a usage error.
    let bad = bin()
        .args(["--color", "sometimes", "plugins"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn diagnose_colours_its_verdict_only_when_asked() {
    let dir = scratch("diagnose-colour");
    let log = dir.join("events.jsonl");
    let lines: String = (1..=5)
        .map(|s| {
            let loss = if s == 5 {
                "\"NaN\"".to_string()
            } else {
                format!("{}", 1.0 / s as f64)
            };
            format!("{{\"step\":{s},\"loss\":{loss},\"grad_norm\":1.0}}\n")
        })
        .collect();
    std::fs::write(&log, lines).unwrap();
    let run = |args: &[&str]| {
        let res = bin()
            .args(args)
            .arg("diagnose")
            .arg(&log)
            .env_remove("NO_COLOR")
            .output()
            .expect("gradguard runs");
        text(&res.stdout)
    };
    let always = run(&["--color", "always"]);
    assert!(
        always.starts_with("\x1b[1;31mVerdict: exploding"),
        "{always:?}"
    );
    assert!(
        always.contains("[x] \x1b[31mloss_nonfinite\x1b[0m"),
        "{always:?}"
    );
    let piped = run(&[]);
    assert!(
        piped.starts_with("Verdict: exploding") && !piped.contains('\x1b'),
        "{piped:?}"
    );
}
