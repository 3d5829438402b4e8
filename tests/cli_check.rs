//! `gradguard check` and the spec files: every example spec and demo is valid; malformed
//! specs give the file, line and column, exit 1 and never panic; CSV data is checked; exit
//! statuses of `diagnose` and missing files.

use std::path::{Path, PathBuf};
use std::process::Command;

use gradguard::pipeline::demos::DEMOS;
use gradguard::pipeline::ExperimentSpec;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradguard"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gradguard-cli-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn example_specs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/specs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "json")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_spec_loads_and_checks() {
    let specs = example_specs();
    assert!(specs.len() >= 4, "{specs:?}");
    for path in specs {
        ExperimentSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = bin().arg("check").arg(&path).output().expect("run");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid spec"));
    }
    for d in DEMOS {
        d.spec().unwrap_or_else(|e| panic!("demo {}: {e}", d.name));
    }
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let dir = scratch("malformed");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\n[model]\nkind = \"mlp\"\nhidden = [25, \"wide\"]\n",
    )
    .unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", path.display())), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_kind_and_unknown_key_are_errors() {
    let dir = scratch("unknown");
    let base =
        "name = \"x\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\n";
    let path = dir.join("kind.toml");
    std::fs::write(
        &path,
        format!("{base}[[remedies]]\nkind = \"clip_globl_norm\"\n"),
    )
    .unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clip_globl_norm") && err.contains("clip_global_norm"),
        "{err}"
    );
    assert!(err.contains("remedies[0]"), "{err}");

    let path = dir.join("key.json");
    std::fs::write(
        &path,
        r#"{"name": "x", "model": {"kind": "mlp", "hidden": [4]},
 "task": {"kind": "regression"}, "trian": {}}"#,
    )
    .unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `trian`") && err.contains(":2:"),
        "{err}"
    );
}

#[test]
fn semantic_errors_name_the_key_path() {
    let dir = scratch("semantic");
    let path = dir.join("zero.toml");
    std::fs::write(
        &path,
        "name = \"x\"\n[model]\nkind = \"mlp\"\nhidden = [4, 0]\n[task]\nkind = \"regression\"\n",
    )
    .unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.hidden[1]"), "{err}");
}

#[test]
fn missing_file_bad_extension_and_usage() {
    let out = bin()
        .args(["check", "/nonexistent/spec.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/spec.toml"));
    let out = bin().args(["check", "spec.yaml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let out = bin().args(["check"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["frobnicate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn binary_bytes_are_an_error_not_a_panic() {
    let dir = scratch("bytes");
    let path = dir.join("bin.toml");
    std::fs::write(&path, [0xffu8, 0xfe, 0x00, 0x41, 0x0a]).unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
}

#[test]
fn plugins_lists_every_family() {
    let out = bin().args(["plugins", "--json"]).output().expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let list = v.as_array().expect("array");
    for family in ["detector", "remedy", "reporter"] {
        assert!(list.iter().any(|p| p["family"] == family), "{family}");
    }
    assert!(list
        .iter()
        .all(|p| !p["summary"].as_str().unwrap_or("").is_empty()));
}

#[test]
fn a_missing_or_malformed_csv_fails_check_naming_the_file() {
    let dir = scratch("csv");
    let path = dir.join("csv.toml");
    std::fs::write(
        &path,
        "name = \"c\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"csv\"\npath = \"nowhere.csv\"\ntargets = [\"y\"]\n",
    )
    .unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nowhere.csv"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("valid spec"));
    // `run` names the missing file once too (the error and its source both print it).
    let out = bin()
        .arg("run")
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nowhere.csv"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // The file is there but has no `y` column.
    std::fs::write(dir.join("nowhere.csv"), "a,b\n1,2\n3,4\n").unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nowhere.csv") && err.contains('y'), "{err}");
    // And with the column: valid.
    std::fs::write(dir.join("nowhere.csv"), "a,y\n1,2\n3,4\n5,6\n7,8\n9,10\n").unwrap();
    let out = bin().arg("check").arg(&path).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_spec_says_no_such_file_once() {
    let dir = scratch("missing-spec");
    let path = dir.join("missing.toml");
    for cmd in ["check", "run", "probe"] {
        let out = bin().arg(cmd).arg(&path).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("missing.toml"), "{cmd}: {err}");
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{cmd}: {err}"
        );
    }
}

#[test]
fn diagnose_exits_3_when_skipped_lines_would_leave_the_run_healthy() {
    let dir = scratch("diagnose-incomplete");
    let log = dir.join("events.jsonl");
    let good = r#"{"step":1,"loss":2.0,"grad_norm":1.0,"layers":[]}"#;
    std::fs::write(&log, format!("{good}\nnot json\n")).unwrap();
    let out = bin().arg("diagnose").arg(&log).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("the diagnosis is incomplete"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Verdict: healthy"));
    std::fs::write(&log, format!("{good}\n")).unwrap();
    let out = bin().arg("diagnose").arg(&log).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
}
