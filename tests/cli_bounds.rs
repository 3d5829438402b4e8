//! Counts from the command line are bounded before anything runs: a huge `--seeds` or
//! `--verify` is a usage error (exit 2) naming the range, not hours of runs or an abort.

use std::process::Command;

fn usage_error(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(args)
        .output()
        .expect("gradguard runs");
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn counts_are_bounded() {
    let e = usage_error(&["compare", "x.toml", "--seeds", "1000000000"]);
    assert!(e.contains("1000000000 is not in 1..=1000"), "{e}");
    let e = usage_error(&["run", "x.toml", "--verify", "100000"]);
    assert!(e.contains("100000 is not in 0..=64"), "{e}");
    let e = usage_error(&["run", "x.toml", "--verify-seeds", "0"]);
    assert!(e.contains("0 is not in 1..=1000"), "{e}");
    let e = usage_error(&["run", "x.toml", "--verify-budget=-1"]);
    assert!(e.contains("expected a number of seconds >= 0"), "{e}");
    let e = usage_error(&["run", "x.toml", "--verify-budget", "NaN"]);
    assert!(e.contains("expected a number of seconds >= 0"), "{e}");
    let e = usage_error(&["claims", "--seeds", "5000"]);
    assert!(e.contains("5000 is not in 1..=1000"), "{e}");
    let e = usage_error(&["verify", "d", "--top", "0"]);
    assert!(e.contains("0 is not in 1..=64"), "{e}");
}

/// A spec whose sizes would need more memory than the budget is refused by `check` (and so
/// before any run) with the key path and the estimate; `--max-memory` sets the budget.
#[test]
fn specs_beyond_the_memory_budget_are_refused_before_allocation() {
    let dir = std::env::temp_dir().join(format!("gradguard-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let huge = dir.join("huge.toml");
    std::fs::write(
        &huge,
        "name = \"huge\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[task]\nkind = \"regression\"\nn_samples = 10000000000000\n",
    )
    .expect("write");
    for cmd in ["check", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .arg(cmd)
            .arg(&huge)
            .output()
            .expect("gradguard runs");
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {e}");
        assert!(
            e.contains("task.n_samples") && e.contains("above the memory budget"),
            "{cmd}: {e}"
        );
    }
    let small = dir.join("small.toml");
    std::fs::write(
        &small,
        "name = \"small\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[task]\nkind = \"regression\"\n",
    )
    .expect("write");
    let ok = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .arg("check")
        .arg(&small)
        .output()
        .expect("gradguard runs");
    assert_eq!(ok.status.code(), Some(0));
    let refused = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["check", "--max-memory", "10kB"])
        .arg(&small)
        .output()
        .expect("gradguard runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("memory budget of 10.0 kB"));
    let e = usage_error(&["check", "--max-memory", "lots", "x.toml"]);
    assert!(e.contains("expected a size such as 8GiB"), "{e}");
}

/// A mistyped demo or cure gets a suggestion.
#[test]
fn typos_get_a_suggestion() {
    let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["demo", "deep-mpl"])
        .output()
        .expect("gradguard runs");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("unknown demo `deep-mpl` (did you mean `deep-mlp`?)"),
        "{e}"
    );
}
