//! What a checkpoint costs (issue 12, resume): writing and loading the reference MLP
//! 784-256-256-10 (269k parameters) with Adam's two moments, plus the two rollback snapshots a
//! `rollback` remedy keeps by default, and a 4 KB Guard-state blob: 9 copies of the
//! parameters, 9.7 MB. Writing includes the fsync of the atomic write, so it depends on the
//! disk as much as on gradguard.
//!
//! Run: `cargo bench -p gradguard-models --bench checkpoint`

use criterion::{criterion_group, criterion_main, Criterion};
use gradguard_models::tasks::{Dataset, Targets};
use gradguard_models::{ModelSpec, TaskData, TrainSpec, Trainer};

fn setup() -> Trainer {
    let model: ModelSpec =
        toml::from_str("kind = \"mlp\"\nhidden = [256, 256]\nactivation = \"relu\"")
            .expect("model spec");
    let train: TrainSpec = toml::from_str(
        "optimizer = { kind = \"adam\", lr = 0.001 }\nbatch_size = 64\nloss = \"cross_entropy\"",
    )
    .expect("train spec");
    let mut rng = gradguard_models::rng::Rng64::new(0, 0);
    let n = 64 * 4;
    let x: Vec<f32> = (0..n * 784).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.below(10) as f32).collect();
    let data = TaskData {
        train: Dataset { n, x, y },
        test: Dataset {
            n: 0,
            x: Vec::new(),
            y: Vec::new(),
        },
        steps: 1,
        input: 784,
        outputs: 10,
        targets: Targets::Classes,
    };
    let mut t = Trainer::from_data(&model, data, &train, 0).expect("trainer");
    for _ in 0..3 {
        t.step_gradients().expect("step");
        t.apply_update(1.0).expect("update");
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut trainer = setup();
    let ring = [trainer.snapshot(), trainer.snapshot()];
    let refs: Vec<_> = ring.iter().collect();
    let blob = vec![7u8; 4096];
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ck.safetensors");
    c.bench_function("checkpoint_mlp_784_256_256_10_adam/write", |b| {
        b.iter(|| {
            trainer
                .save_checkpoint_with(&path, &refs, &[("guard", &blob)])
                .expect("write")
        })
    });
    c.bench_function("checkpoint_mlp_784_256_256_10_adam/load", |b| {
        b.iter(|| trainer.load_checkpoint_with(&path).expect("load"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
