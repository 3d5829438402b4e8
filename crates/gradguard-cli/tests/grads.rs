//! `gradguard grads stats` and `gradguard grads apply` on files written by the Python
//! safetensors package (fixtures in crates/gradguard-dump/tests/fixtures, made by
//! make_fixtures.py there), and the error of every bad-file case.

#[allow(dead_code)]
#[path = "../src/grads.rs"]
mod grads;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: grads::GradsCommand,
}

/// A fresh scratch directory for one test (no tempfile dependency in this crate).
fn scratch(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gradguard-grads-test-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir is writable");
    d
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../gradguard-dump/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tensor<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tensors"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .expect("tensor in report")
}

fn run(args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(std::iter::once("grads").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    grads::run_to(&cli.cmd, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn stats_table_and_json() {
    let g = fixture("grads_f32.safetensors");
    let p = fixture("params_f32.safetensors");
    let text = run(&["stats", "--grads", &g, "--params", &p]).unwrap();
    assert!(
        text.contains(
            "4 tensors, 23 values; global L2 norm 1.300961e1, inf norm 1.200000e1, 0 non-finite"
        ),
        "{text}"
    );
    assert!(text.contains("weight norm"), "{text}");
    let json = run(&[
        "stats",
        "--grads",
        &fixture("grads_bf16.safetensors"),
        "--json",
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!((v["global_l2"].as_f64().unwrap() - 13.009611831257688).abs() < 1e-12);
    let t = tensor(&v, "layers.0.weight");
    assert_eq!(t["dtype"], "BF16");
    assert_eq!(t["l2"], 5.0);
    assert_eq!(t["max_abs"], 4.0);
    assert_eq!(tensor(&v, "head.bias")["l2"], 0.5);
}

#[test]
fn apply_writes_a_clipped_dump_of_the_same_dtype() {
    let dir = scratch("apply_writes_a_clipped_dump_of_the_same_dtype");
    for dt in ["f32", "f16", "bf16", "f64"] {
        let out = dir.join(format!("clipped_{dt}.safetensors"));
        let out_s = out.to_str().unwrap();
        let msg = run(&[
            "apply",
            "--remedy",
            r#"{"kind":"clip_global_norm","max_norm":1.0}"#,
            "--grads",
            &fixture(&format!("grads_{dt}.safetensors")),
            "--out",
            out_s,
        ])
        .unwrap();
        assert!(
            msg.starts_with("clip_global_norm: global L2 norm 1.300961e1 -> "),
            "{msg}"
        );
        assert!(msg.contains("(changed); wrote "), "{msg}");
        let json = run(&["stats", "--grads", out_s, "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let tol = if dt == "f16" || dt == "bf16" {
            1e-2
        } else {
            1e-6
        };
        assert!(
            (v["global_l2"].as_f64().unwrap() - 1.0).abs() < tol,
            "{dt}: {json}"
        );
        let t = tensor(&v, "layers.0.weight");
        assert_eq!(t["dtype"], dt.to_uppercase());
        assert_eq!(t["shape"], serde_json::json!([3, 4]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apply_from_a_toml_file_with_params() {
    let dir = scratch("apply_from_a_toml_file_with_params");
    let spec = dir.join("l2.toml");
    std::fs::write(&spec, "kind = \"l2\"\nl2 = 0.5\n").unwrap();
    let out = dir.join("o.safetensors");
    let msg = run(&[
        "apply",
        "--remedy",
        spec.to_str().unwrap(),
        "--grads",
        &fixture("grads_f32.safetensors"),
        "--params",
        &fixture("params_f32.safetensors"),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    // penalty = 0.5 * (12 + 6) weights of 1.0 (biases left out) = 9.
    assert!(msg.contains("penalty 9.000000e0"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_bad_file_is_a_clear_error() {
    let dir = scratch("every_bad_file_is_a_clear_error");
    let out = dir.join("o.safetensors");
    let out_s = out.to_str().unwrap();
    let clip = r#"{"kind":"clip_global_norm","max_norm":1.0}"#;
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(fixture("grads_f32.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let header = dir.join("header.safetensors");
    let mut bad = bytes.clone();
    bad[8] = b'x';
    std::fs::write(&header, &bad).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "stats".into(),
                "--grads".into(),
                fixture("absent.safetensors"),
            ],
            "cannot read ",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                truncated.display().to_string(),
            ],
            "truncated",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                header.display().to_string(),
            ],
            "not a valid safetensors file",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                fixture("grads_i32.safetensors"),
            ],
            "has dtype I32",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                fixture("grads_f64_out_of_range.safetensors"),
            ],
            "outside the f32 range",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                fixture("grads_f32.safetensors"),
                "--params".into(),
                fixture("params_bad_shape_f32.safetensors"),
            ],
            "has shape [4, 3] in the params but [3, 4] in the grads",
        ),
        (
            vec![
                "stats".into(),
                "--grads".into(),
                fixture("grads_f32.safetensors"),
                "--params".into(),
                fixture("params_f64.safetensors"),
            ],
            "has dtype F64 in the params but F32 in the grads",
        ),
        (
            vec![
                "apply".into(),
                "--remedy".into(),
                clip.into(),
                "--grads".into(),
                fixture("grads_nonfinite_f32.safetensors"),
                "--out".into(),
                out_s.into(),
            ],
            "withholds the update (skip_step",
        ),
        (
            vec![
                "apply".into(),
                "--remedy".into(),
                r#"{"kind":"agc"}"#.into(),
                "--grads".into(),
                fixture("grads_f32.safetensors"),
                "--out".into(),
                out_s.into(),
            ],
            "needs the weights",
        ),
        (
            vec![
                "apply".into(),
                "--remedy".into(),
                r#"{"kind":"clip_globl_norm"}"#.into(),
                "--grads".into(),
                fixture("grads_f32.safetensors"),
                "--out".into(),
                out_s.into(),
            ],
            "unknown variant `clip_globl_norm`",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = run(&args).unwrap_err();
        assert!(e.contains(expect), "{args:?}: {e}");
    }
    assert!(!out.exists(), "nothing is written when apply fails");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apply_refuses_to_overwrite_its_input_unless_in_place() {
    let dir = scratch("apply_refuses_to_overwrite_its_input_unless_in_place");
    let copy = dir.join("g.safetensors");
    std::fs::copy(fixture("grads_f32.safetensors"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let path = copy.to_str().unwrap();
    let remedy = r#"{"kind":"clip_global_norm","max_norm":1.0}"#;
    let err = run(&["apply", "--remedy", remedy, "--grads", path, "--out", path]).unwrap_err();
    assert!(
        err.contains("is the --grads file: pass --in-place"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the input was touched"
    );
    run(&[
        "apply",
        "--remedy",
        remedy,
        "--grads",
        path,
        "--out",
        path,
        "--in-place",
    ])
    .unwrap();
    let json = run(&["stats", "--grads", path, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        (v["global_l2"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{json}"
    );
    // no temporary file is left beside it
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The refusal sees through links: `--out` a symbolic link to `--grads`, or a hard link to it
/// (same device and inode, another path), is the input. And `--in-place` writes exactly the
/// bytes `--out` elsewhere writes.
#[cfg(unix)]
#[test]
fn apply_refuses_links_to_its_input_and_in_place_equals_out() {
    let dir = scratch("apply_refuses_links_to_its_input_and_in_place_equals_out");
    let g = dir.join("g.safetensors");
    std::fs::copy(fixture("grads_f32.safetensors"), &g).unwrap();
    let before = std::fs::read(&g).unwrap();
    let (sym, hard) = (dir.join("sym.safetensors"), dir.join("hard.safetensors"));
    std::os::unix::fs::symlink(&g, &sym).unwrap();
    std::fs::hard_link(&g, &hard).unwrap();
    let remedy = r#"{"kind":"clip_global_norm","max_norm":1.0}"#;
    let gp = g.to_str().unwrap();
    for out in [&sym, &hard] {
        let err = run(&[
            "apply",
            "--remedy",
            remedy,
            "--grads",
            gp,
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(err.contains("is the --grads file"), "{err}");
        assert_eq!(std::fs::read(&g).unwrap(), before, "the input was touched");
    }
    let elsewhere = dir.join("out.safetensors");
    run(&[
        "apply",
        "--remedy",
        remedy,
        "--grads",
        gp,
        "--out",
        elsewhere.to_str().unwrap(),
    ])
    .unwrap();
    run(&[
        "apply",
        "--remedy",
        remedy,
        "--grads",
        gp,
        "--out",
        gp,
        "--in-place",
    ])
    .unwrap();
    assert_ne!(std::fs::read(&g).unwrap(), before, "clipping changed it");
    assert_eq!(
        std::fs::read(&g).unwrap(),
        std::fs::read(&elsewhere).unwrap(),
        "--in-place and --out differ"
    );
    // the hard link still holds the old bytes: the rewrite replaced the name, not the inode
    assert_eq!(std::fs::read(&hard).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}
