//! `gradguard probe`: measure a model at initialisation and judge its risk of exploding
//! gradients before any training (the measuring is gradguard-models' `Trainer::probe`, the
//! judging is gradguard-detectors' `probe`).

use gradguard_core::SeriesAxis;
use gradguard_detectors::{probe, InitialGrowth, ProbeInput, ProbeReport};
use gradguard_models::{ModelError, Trainer};

use crate::spec::ExperimentSpec;

/// Runs `passes` forward/backward passes at initialisation (nothing is updated) and returns
/// the risk report.
pub fn probe_spec(
    spec: &ExperimentSpec,
    passes: usize,
    seed: Option<u64>,
) -> Result<ProbeReport, ModelError> {
    let mut trainer = Trainer::new(
        &spec.model,
        &spec.task,
        &spec.train,
        seed.unwrap_or(spec.seed),
    )?;
    probe_trainer(&mut trainer, spec.model.is_recurrent(), passes)
}

/// The risk report of a trainer at its current weights: `passes` forward/backward passes on
/// the next training batches, after which the trainer is exactly as before (weights, data
/// order, random state), so a run can probe itself at initialisation.
pub fn probe_trainer(
    trainer: &mut Trainer,
    recurrent: bool,
    passes: usize,
) -> Result<ProbeReport, ModelError> {
    let infos = trainer.param_infos();
    let measured = trainer.probe(passes.max(1))?;
    let n = measured.passes.len().max(1) as f64;

    // Error signal per layer, input layer first: the model's own per-layer series when it
    // records one, otherwise each layer's bias gradient (the error signal summed over the
    // batch), one bias per layer as the model lists them (`layer_biases`, the head last).
    let mut layer_grad_norms: Vec<(String, f64)> = Vec::new();
    let layer_series = measured
        .passes
        .first()
        .and_then(|p| p.series.iter().position(|s| s.axis == SeriesAxis::Layers));
    if let Some(idx) = layer_series {
        let len = measured.passes[0].series[idx].values.len();
        for i in 0..len {
            let mean = measured
                .passes
                .iter()
                .filter_map(|p| p.series.get(idx)?.values.get(i))
                .sum::<f64>()
                / n;
            layer_grad_norms.push((format!("layer {i}"), mean));
        }
    } else {
        for &i in &measured.layer_biases {
            let Some(info) = infos.get(i) else { continue };
            let mean = measured
                .passes
                .iter()
                .filter_map(|p| p.grad_norms.get(i).map(|g| g.1))
                .sum::<f64>()
                / n;
            layer_grad_norms.push((info.name.clone(), mean));
        }
    }
    // Per-time-step norms: the mean over passes of each recurrent layer's series.
    let mut time_step_norms = Vec::new();
    if let Some(first) = measured.passes.first() {
        for (si, s) in first.series.iter().enumerate() {
            if s.axis != SeriesAxis::TimeSteps {
                continue;
            }
            let mut mean = s.clone();
            for (t, v) in mean.values.iter_mut().enumerate() {
                *v = measured
                    .passes
                    .iter()
                    .filter_map(|p| p.series.get(si)?.values.get(t))
                    .sum::<f64>()
                    / n;
            }
            time_step_norms.push(mean);
        }
    }
    let global = measured
        .passes
        .iter()
        .map(|p| p.grad_norms.iter().map(|g| g.1 * g.1).sum::<f64>().sqrt())
        .sum::<f64>()
        / n;
    let input = ProbeInput {
        layer_grad_norms,
        time_step_norms,
        recurrent_weights: measured.recurrent_weights,
        global_grad_norm: Some(global),
        sequence_length: recurrent.then_some(measured.seq_len),
        ..ProbeInput::default()
    };
    Ok(probe(&input))
}

/// The growth the probe measured, as the diagnosis takes it: per layer for an MLP (from its
/// per-layer error signals; a recurrent model's chain of bias gradients mixes a sum over
/// time steps with the head's, so it is not a per-layer factor) and the fastest growth per
/// time step over the recurrent layers.
pub fn initial_growth(report: &ProbeReport, recurrent: bool) -> InitialGrowth {
    InitialGrowth {
        per_layer: report
            .layer_growth
            .as_ref()
            .filter(|g| !recurrent && g.factor.is_finite())
            .map(|g| (g.factor, g.length)),
        per_time_step: report
            .time_growth
            .iter()
            .filter(|g| g.factor.is_finite())
            .max_by(|a, b| a.factor.total_cmp(&b.factor))
            .map(|g| (g.factor, g.name.clone())),
    }
}
