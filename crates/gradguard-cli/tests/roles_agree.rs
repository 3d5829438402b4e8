//! `gradguard grads` (a safetensors dump, shapes known) and `gradguard diagnose` (an events
//! log, names only) give a tensor the same role: both read it with
//! `gradguard_core::Role::from_name`. Only a rank-1 tensor that is neither a bias nor
//! recurrent may differ (`Other` in a dump, `Weight` in a log, which records no shapes).

use std::path::PathBuf;

use gradguard_core::{Event, LayerRecord, Role, StepStats, UpdateStats};
use gradguard_detectors::observation_parts_from_event;
use gradguard_dump::{DumpTensor, GradDump};

/// The role the events-log path (offline diagnosis) gives `name`.
fn role_in_log(name: &str) -> Role {
    let event = Event {
        step: 1,
        epoch: None,
        loss: 1.0,
        penalty: None,
        grad_norm: 1.0,
        grad_norm_after: None,
        held_out_loss: None,
        grad_nonfinite: 0,
        lr: None,
        layers: vec![LayerRecord {
            name: name.to_string(),
            grad_norm: 1.0,
            grad_max_abs: 1.0,
            grad_nonfinite: 0,
            weight_norm: 1.0,
            update_ratio: None,
        }],
        series: Vec::new(),
        findings: Vec::new(),
        actions: Vec::new(),
        applied: true,
    };
    let (mut stats, mut update) = (StepStats::default(), UpdateStats::default());
    observation_parts_from_event(&event, &mut stats, &mut update);
    stats.params[0].role
}

#[test]
fn dump_and_log_classify_tensors_alike() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gradguard-dump/tests/fixtures/grads_f32.safetensors");
    let dump = GradDump::load(&fixture).unwrap();
    let of_rank = |r: usize| dump.tensors().iter().find(|t| t.shape.len() == r);
    let (vector, matrix) = (of_rank(1).unwrap(), of_rank(2).unwrap());
    // (name, its natural rank)
    let table = [
        ("fc1.weight", 2),
        ("fc1.bias", 1),
        ("lstm.weight_ih_l0", 2),
        ("lstm.weight_hh_l0", 2),
        ("lstm.bias_ih_l0", 1),
        ("lstm.bias_hh_l0", 1),
        ("layers.0.bias", 1),
        ("rnn.0.weight_hh", 2),
        ("dense/kernel:0", 2),
        ("dense/bias:0", 1),
        ("lstm/lstm_cell/recurrent_kernel:0", 2),
        ("params/Dense_0/bias", 1),
        ("unbiased.weight", 2),
        ("ln.weight", 1),
    ];
    for (name, rank) in table {
        // The dump's tensor of that rank, renamed.
        let tensor = DumpTensor {
            name: name.to_string(),
            ..(if rank == 1 { vector } else { matrix }).clone()
        };
        let (in_dump, in_log) = (tensor.role(), role_in_log(name));
        assert_eq!(
            in_dump == Role::Bias,
            in_log == Role::Bias,
            "{name}: {in_dump:?} in a dump, {in_log:?} in a log"
        );
        assert_eq!(
            in_dump == Role::RecurrentWeight,
            in_log == Role::RecurrentWeight,
            "{name}: {in_dump:?} in a dump, {in_log:?} in a log"
        );
        if rank >= 2 {
            assert_eq!(in_dump, in_log, "{name}");
        }
    }
}
