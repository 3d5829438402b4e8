//! What each reporter costs per training step (the `event` call), for an MLP-like model
//! (6 tensors: 20-25-1 has 4; a deeper one 6) and an LSTM-like one (5 tensors), with no
//! findings (the common step). Output goes to files in a temporary directory, as in a run.
//!
//! `cargo bench -p gradguard-report --bench reporters`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gradguard_core::{Event, LayerRecord, ParamInfo, Reporter, Role, RunInfo};
use gradguard_report::{ConsoleReporter, HtmlReporter, JsonlReporter, TensorboardReporter};

fn event(step: u64, names: &[&str]) -> Event {
    Event {
        step,
        epoch: Some(1 + step / 16),
        loss: 0.731 + 1e-4 * step as f64,
        penalty: None,
        grad_norm: 1.234_567 + 1e-3 * (step % 17) as f64,
        grad_norm_after: Some(1.0),
        held_out_loss: None,
        grad_nonfinite: 0,
        lr: Some(0.01),
        layers: names
            .iter()
            .enumerate()
            .map(|(i, n)| LayerRecord {
                name: n.to_string(),
                grad_norm: 0.5 + i as f64 * 0.1234567,
                grad_max_abs: 0.05 + i as f64 * 0.01,
                grad_nonfinite: 0,
                weight_norm: 3.3 + i as f64,
                update_ratio: Some(1.2345e-3 * (1 + i) as f64),
            })
            .collect(),
        series: Vec::new(),
        findings: Vec::new(),
        actions: Vec::new(),
        applied: true,
    }
}

fn bench_shape(c: &mut Criterion, shape: &str, names: &[&str]) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let info = RunInfo {
        name: "bench".into(),
        seed: 0,
        out_dir: tmp.path().to_path_buf(),
        params: names
            .iter()
            .map(|n| ParamInfo {
                name: n.to_string(),
                shape: vec![1],
                role: Role::Weight,
            })
            .collect(),
        clip_threshold: Some(1.0),
    };
    let reporters: Vec<(&str, Box<dyn Reporter>)> = vec![
        ("jsonl", Box::new(JsonlReporter::default())),
        ("html", Box::new(HtmlReporter::default())),
        ("tensorboard", Box::new(TensorboardReporter::default())),
        (
            "console_lines",
            Box::new(ConsoleReporter::default().with_output(Box::new(std::io::sink()))),
        ),
    ];
    for (kind, mut r) in reporters {
        r.start(&info).expect("start");
        let mut step = 0u64;
        c.bench_function(&format!("{shape}/{kind}/event"), |b| {
            b.iter(|| {
                step += 1;
                r.event(black_box(&event(step, names))).expect("event");
            })
        });
    }
    c.bench_function(&format!("{shape}/serde_json_to_vec_only"), |b| {
        let e = event(7, names);
        let mut buf = Vec::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&e)).expect("serialise");
            black_box(buf.len());
        })
    });
    c.bench_function(&format!("{shape}/build_event_only"), |b| {
        let mut step = 0u64;
        b.iter(|| {
            step += 1;
            black_box(event(step, names));
        })
    });
}

fn reporters(c: &mut Criterion) {
    bench_shape(
        c,
        "mlp6",
        &[
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias",
            "head.weight",
            "head.bias",
        ],
    );
    bench_shape(
        c,
        "lstm5",
        &[
            "lstm.0.weight_ih",
            "lstm.0.weight_hh",
            "lstm.0.bias",
            "head.weight",
            "head.bias",
        ],
    );
}

criterion_group!(benches, reporters);
criterion_main!(benches);
