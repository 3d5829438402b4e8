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
