//! `--threads` and `RAYON_NUM_THREADS` from the command line: a bad count is refused before
//! anything runs, with a message that names the flag or the variable; a good one runs.

use std::process::Command;

fn gradguard(args: &[&str], env: Option<(&str, &str)>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gradguard"));
    cmd.args(args).env_remove("RAYON_NUM_THREADS");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.output().expect("gradguard runs")
}

#[test]
fn a_bad_thread_count_is_a_usage_error() {
    for cmd in [
        &["run", "x.toml"][..],
        &["compare", "x.toml"],
        &["demo", "regression-sgd"],
        &["resume", "dir"],
    ] {
        for bad in ["0", "-1", "two", "1.5", ""] {
            let flag = format!("--threads={bad}");
            let mut args = cmd.to_vec();
            args.push(&flag);
            let out = gradguard(&args, None);
            let e = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
            assert!(
                e.contains(&format!("--threads: `{bad}` is not a number of threads (expected a whole number, at least 1)")),
                "{args:?}: {e}"
            );
            assert!(!e.contains("panicked"), "{e}");
        }
    }
}

#[test]
fn a_bad_rayon_num_threads_is_refused_before_the_run() {
    let dir = std::env::temp_dir().join(format!("gradguard-cli-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let spec = dir.join("s.toml");
    std::fs::write(
        &spec,
        "name = \"s\"\n[model]\nkind = \"mlp\"\nhidden = [4]\n[task]\nkind = \"regression\"\n[train]\nsteps = 2\n",
    )
    .expect("write");
    let out_dir = dir.join("out");
    let spec = spec.to_str().expect("utf-8 path");
    let out_arg = out_dir.to_str().expect("utf-8 path");
    let out = gradguard(
        &["-q", "run", spec, "--out", out_arg, "--no-verify"],
        Some(("RAYON_NUM_THREADS", "lots")),
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("RAYON_NUM_THREADS: `lots` is not a number of threads"),
        "{e}"
    );
    assert!(
        !out_dir.exists(),
        "nothing is written before the count is checked"
    );
    // A good count, from the flag or the environment (0 is rayon's "default"), runs.
    for (args, env) in [
        (vec!["--threads", "2"], None),
        (vec![], Some(("RAYON_NUM_THREADS", "1"))),
        (vec![], Some(("RAYON_NUM_THREADS", "0"))),
    ] {
        let _ = std::fs::remove_dir_all(&out_dir);
        let mut all = vec!["-q", "run", spec, "--out", out_arg, "--no-verify"];
        all.extend(args);
        let out = gradguard(&all, env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{all:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out_dir.join("summary.json").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
