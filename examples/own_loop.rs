//! Your own dfdx training loop, with gradguard's detectors and remedies and nothing else of
//! gradguard: the gradients are lent to a `ParamView`, measured once, watched, clipped like
//! PyTorch's `clip_grad_norm_`, and a step with a non-finite loss is skipped.
//!
//! Only gradguard-core, gradguard-detectors and gradguard-remedies are used here (through the
//! facade's re-exports; in your project, depend on those crates directly).
//!
//! Run: `cargo run --release --example own_loop`

use dfdx::optim::{Momentum, Sgd, SgdConfig};
use dfdx::prelude::*;
use gradguard::core::{
    Action, Detector, Observation, ParamView, Remedy, RemedyContext, Role, StepStats,
};
use gradguard::detectors::{LossNonfinite, WeightsChangeLarge};
use gradguard::remedies::ClipGlobalNorm;

type Mlp = (Linear<4, 16>, ReLU, Linear<16, 1>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<Mlp, f32>();
    let mut grads = model.alloc_grads();
    let mut opt = Sgd::new(
        &model,
        SgdConfig {
            lr: 0.05,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay: None,
        },
    );

    // y = 100 * sum(x): an unscaled target, so the first gradients are large.
    let x: Tensor<Rank2<64, 4>, f32, _> = dev.sample_normal();
    let y: Tensor<Rank2<64, 1>, f32, _> =
        x.clone().sum::<Rank1<64>, _>().reshape::<Rank2<64, 1>>() * 100.0;

    let mut clip = ClipGlobalNorm::new(1.0);
    let mut detectors: Vec<Box<dyn Detector>> = vec![
        Box::new(LossNonfinite::default()),
        Box::new(WeightsChangeLarge::default()),
    ];
    let mut stats = StepStats::default();
    let mut findings = Vec::new();

    // Buffers the view borrows: one weight and one gradient Vec per tensor, allocated once.
    let names = ["0.weight", "0.bias", "2.weight", "2.bias"];
    let shapes: [Vec<usize>; 4] = [vec![16, 4], vec![16], vec![1, 16], vec![1]];
    let roles = [Role::Weight, Role::Bias, Role::Weight, Role::Bias];
    let mut w: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut g: Vec<Vec<f32>> = w.clone();

    // The example checks itself: training must lower the loss (CI fails otherwise).
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 1..=200u64 {
        let pred = model.forward_mut(x.clone().traced(grads));
        let loss = mse_loss(pred, y.clone());
        let loss_value = loss.array() as f64;
        if step == 1 {
            first_loss = loss_value;
        }
        last_loss = loss_value;
        grads = loss.backward();

        // Copy weights and gradients out (dfdx keeps tensor storage private).
        model.0.weight.copy_into(&mut w[0]);
        model.0.bias.copy_into(&mut w[1]);
        model.2.weight.copy_into(&mut w[2]);
        model.2.bias.copy_into(&mut w[3]);
        g[0].copy_from_slice(grads.get_or_alloc_mut(&model.0.weight)?);
        g[1].copy_from_slice(grads.get_or_alloc_mut(&model.0.bias)?);
        g[2].copy_from_slice(grads.get_or_alloc_mut(&model.2.weight)?);
        g[3].copy_from_slice(grads.get_or_alloc_mut(&model.2.bias)?);

        let (action, norm_before) = {
            let mut view = ParamView::with_capacity(4);
            for (i, gi) in g.iter_mut().enumerate() {
                view.push(names[i], &shapes[i], roles[i], &w[i], gi)?;
            }
            stats.measure_into(&view);
            let norm_before = stats.grad_norm;
            findings.clear();
            let obs = Observation::new(step, loss_value, &stats);
            for d in detectors.iter_mut() {
                d.observe(&obs, &mut findings);
            }
            let mut ctx = RemedyContext::new(step, loss_value, &mut view, &mut stats)
                .with_findings(&findings);
            (clip.apply(&mut ctx)?, norm_before)
        };
        for f in &findings {
            println!("step {step}: {}: {}", f.sign, f.message);
        }

        if matches!(action, Action::SkipStep { .. }) || !loss_value.is_finite() {
            println!("step {step}: update skipped");
            model.zero_grads(&mut grads);
            continue;
        }
        // Write the clipped gradients back and let dfdx's optimiser apply them.
        grads
            .get_or_alloc_mut(&model.0.weight)?
            .copy_from_slice(&g[0]);
        grads
            .get_or_alloc_mut(&model.0.bias)?
            .copy_from_slice(&g[1]);
        grads
            .get_or_alloc_mut(&model.2.weight)?
            .copy_from_slice(&g[2]);
        grads
            .get_or_alloc_mut(&model.2.bias)?
            .copy_from_slice(&g[3]);
        opt.update(&mut model, &grads)?;
        model.zero_grads(&mut grads);
        if step % 50 == 0 || step == 1 {
            println!("step {step}: loss {loss_value:.4e}, grad norm {norm_before:.3e} (after clipping {:.3e})", stats.grad_norm);
        }
    }
    if !(last_loss.is_finite() && last_loss < first_loss) {
        return Err(format!(
            "own_loop's check failed: the loss went from {first_loss:.4e} to {last_loss:.4e}"
        )
        .into());
    }
    println!("loss {first_loss:.4e} -> {last_loss:.4e}: ok");
    Ok(())
}
