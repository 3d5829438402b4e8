//! Issue 12, item 8: `gradguard grads apply` killed (SIGKILL) at any point mid-write never
//! tears a file: the input stays intact, and the output (or, with `--in-place`, the input's
//! name) holds either the old bytes or the complete result, never a mix, and no temporary file
//! is left once a run completes.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradguard-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A safetensors file of `tensors` F32 tensors of `n` values each (written by hand).
fn big_dump(path: &Path, tensors: usize, n: usize) {
    let mut header = String::from("{");
    for t in 0..tensors {
        let (a, b) = (t * n * 4, (t + 1) * n * 4);
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"g{t:03}\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[{a},{b}]}}"
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + tensors * n * 4);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for t in 0..tensors {
        for i in 0..n {
            bytes.extend_from_slice(&(((i * 31 + t) % 1000) as f32 * 0.01).to_le_bytes());
        }
    }
    std::fs::write(path, bytes).expect("write dump");
}

fn apply(grads: &Path, out: &Path, in_place: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradguard"));
    c.args(["grads", "apply", "--remedy"])
        .arg(r#"{"kind":"clip_global_norm","max_norm":1.0}"#)
        .arg("--grads")
        .arg(grads)
        .arg("--out")
        .arg(out);
    if in_place {
        c.arg("--in-place");
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

#[test]
fn a_kill_mid_write_never_tears_the_input_or_the_output() {
    let dir = scratch("tear");
    let input = dir.join("g.safetensors");
    big_dump(&input, 32, 1 << 20); // 128 MiB
    let original = std::fs::read(&input).unwrap();
    let expected_path = dir.join("expected.safetensors");
    let t0 = std::time::Instant::now();
    assert!(apply(&input, &expected_path, false)
        .status()
        .unwrap()
        .success());
    let full = t0.elapsed();
    let expected = std::fs::read(&expected_path).unwrap();
    assert_ne!(expected, original, "clipping changed the dump");
    // kill at points spread over a whole run
    for k in 1..=6u32 {
        let delay = full * k / 7;
        for in_place in [false, true] {
            let out = if in_place {
                input.clone()
            } else {
                dir.join("out.safetensors")
            };
            let _ = std::fs::remove_file(dir.join("out.safetensors"));
            let mut child = apply(&input, &out, in_place).spawn().unwrap();
            std::thread::sleep(delay);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            let now = std::fs::read(&input).unwrap();
            if in_place {
                assert!(
                    now == original || now == expected,
                    "killed after {delay:?}: the input is torn ({} bytes)",
                    now.len()
                );
                // restore the original for the next round
                std::fs::write(&input, &original).unwrap();
            } else {
                assert!(now == original, "killed after {delay:?}: the input changed");
                if let Ok(o) = std::fs::read(&out) {
                    assert!(o == expected, "killed after {delay:?}: a torn output");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
