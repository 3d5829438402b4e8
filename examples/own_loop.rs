//! Your own dfdx training loop with gradguard's Guard, and nothing else of gradguard: the
//! gradients are lent to a `ParamView`; the Guard measures them once, runs every built-in
//! detector, clips like PyTorch's `clip_grad_norm_`, and decides. The loop honours every
//! action the Guard can return:
//!
//! - Continue / ScaleLr: apply the update, at `lr * decision.lr_scale`;
//! - SkipStep: drop the gradients, leave weights and optimiser state alone;
//! - Rollback: the Guard asks this loop's [`TrainingHost`] to restore its newest snapshot
//!   (here: in-memory clones of the model and the optimiser) and to skip batches;
//! - Stop: end the run.
//!
//! At step 120 the loop feeds one poisoned batch (a NaN input), as a corrupt record would:
//! the loss and gradients turn NaN, `rollback` restores the last good snapshot, and training
//! goes on. Only gradguard-core, -detectors, -remedies and -engine are used (through the
//! facade's re-exports; in your project, depend on those crates directly).
//!
//! Run: `cargo run --release --example own_loop`

use dfdx::optim::{Momentum, Sgd, SgdConfig};
use dfdx::prelude::*;
use gradguard::core::{Action, ParamView, Remedy, Role, UpdateStats};
use gradguard::detectors::{default_detectors, RunFigures};
use gradguard::engine::{Guard, HostError, StepInput, TrainingHost};
use gradguard::remedies::{ClipGlobalNorm, Rollback};

type Mlp = (Linear<4, 16>, ReLU, Linear<16, 1>);
type Model = <Mlp as BuildOnDevice<Cpu, f32>>::Built;
type Opt = Sgd<Model, f32, Cpu>;

/// Snapshots for the Guard: clones of the model and the optimiser (momentum included).
struct Host<'a> {
    model: &'a mut Model,
    opt: &'a mut Opt,
    ring: &'a mut Vec<(u64, Model, Opt)>,
    step: u64,
    skipped: &'a mut u64,
}

impl TrainingHost for Host<'_> {
    fn snapshot(&mut self, keep: usize) -> Result<(), HostError> {
        self.ring
            .push((self.step, self.model.clone(), self.opt.clone()));
        if self.ring.len() > keep {
            self.ring.remove(0);
        }
        Ok(())
    }

    fn restore_newest(&mut self) -> Result<Option<u64>, HostError> {
        Ok(self.ring.last().map(|(step, model, opt)| {
            *self.model = model.clone();
            *self.opt = opt.clone();
            *step
        }))
    }

    fn skip_batches(&mut self, n: u64) {
        // One fixed batch here; a real loop would advance its data loader by `n`.
        *self.skipped += n;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<Mlp, f32>();
    let mut grads = model.alloc_grads();
    let base_lr = 0.05;
    let mut opt = Sgd::new(
        &model,
        SgdConfig {
            lr: base_lr,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay: None,
        },
    );

    // y = 100 * sum(x): an unscaled target, so the first gradients are large.
    let x: Tensor<Rank2<64, 4>, f32, _> = dev.sample_normal();
    let y: Tensor<Rank2<64, 1>, f32, _> =
        x.clone().sum::<Rank1<64>, _>().reshape::<Rank2<64, 1>>() * 100.0;
    let mut poisoned = x.as_vec();
    poisoned[0] = f32::NAN;
    let poisoned: Tensor<Rank2<64, 4>, f32, _> = dev.tensor(poisoned);

    let remedies: Vec<Box<dyn Remedy>> = vec![
        Box::new(ClipGlobalNorm::new(1.0)),
        Box::new({
            let mut r = Rollback::default();
            r.every = 10;
            r.skip_batches = 1;
            r
        }),
    ];
    let mut guard = Guard::new(default_detectors(), remedies, Vec::new());
    let mut ring = Vec::new();
    let mut skipped = 0;
    macro_rules! host {
        ($step:expr) => {
            &mut Host {
                model: &mut model,
                opt: &mut opt,
                ring: &mut ring,
                step: $step,
                skipped: &mut skipped,
            }
        };
    }
    let info = gradguard::core::RunInfo {
        name: "own_loop".into(),
        seed: 0,
        out_dir: std::env::temp_dir(),
        params: Vec::new(),
        clip_threshold: None,
    };
    guard.start(info, host!(0))?;

    // Buffers the view borrows: one weight and one gradient Vec per tensor, allocated once.
    let names = ["0.weight", "0.bias", "2.weight", "2.bias"];
    let shapes: [Vec<usize>; 4] = [vec![16, 4], vec![16], vec![1, 16], vec![1]];
    let roles = [Role::Weight, Role::Bias, Role::Weight, Role::Bias];
    let mut w: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut g: Vec<Vec<f32>> = w.clone();
    let mut before = w.clone();

    // The example checks itself (CI fails otherwise): training lowers the loss, and the
    // poisoned batch is rolled back.
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut rollbacks = 0;
    for step in 1..=200u64 {
        let input = if step == 120 {
            poisoned.clone()
        } else {
            x.clone()
        };
        let pred = model.forward_mut(input.traced(grads));
        let loss = mse_loss(pred, y.clone());
        let loss_value = loss.array() as f64;
        if step == 1 {
            first_loss = loss_value;
        }
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

        let decision = {
            let mut view = ParamView::with_capacity(4);
            for (i, gi) in g.iter_mut().enumerate() {
                view.push(names[i], &shapes[i], roles[i], &w[i], gi)?;
            }
            let input = StepInput {
                step,
                loss: loss_value,
                lr: Some(base_lr),
                ..StepInput::default()
            };
            guard.step(input, &mut view)
        };
        for f in guard.findings() {
            println!("step {step}: {}: {}", f.sign, f.message);
        }

        let update = if decision.apply {
            // Write the remedied gradients back and let dfdx's optimiser apply them.
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
            before.clone_from(&w);
            opt.cfg.lr = base_lr * decision.lr_scale;
            opt.update(&mut model, &grads)?;
            model.0.weight.copy_into(&mut w[0]);
            model.0.bias.copy_into(&mut w[1]);
            model.2.weight.copy_into(&mut w[2]);
            model.2.bias.copy_into(&mut w[3]);
            let b: Vec<&[f32]> = before.iter().map(|v| v.as_slice()).collect();
            let a: Vec<&[f32]> = w.iter().map(|v| v.as_slice()).collect();
            Some(UpdateStats::measure(step, opt.cfg.lr, &names, &b, &a))
        } else {
            println!("step {step}: update withheld ({:?})", decision.action);
            None
        };
        model.zero_grads(&mut grads);
        if let Action::Rollback { .. } = decision.action {
            rollbacks += 1;
        }
        let end = guard.after_update(update, host!(step))?;
        if let Some(to) = end.rolled_back_to {
            println!("step {step}: rolled back to the snapshot of step {to}");
        }
        if let Some(why) = end.stop {
            println!("stopped: {why}");
            break;
        }
        if decision.apply {
            last_loss = loss_value;
        }
        if step % 50 == 0 || step == 1 {
            println!(
                "step {step}: loss {loss_value:.4e}, grad norm {:.3e} (after clipping {:.3e})",
                decision.grad_norm_before, decision.grad_norm_after
            );
        }
    }
    let diagnosis = guard.finish(&RunFigures::default())?;
    println!("diagnosis: {:?} ({})", diagnosis.verdict, diagnosis.rule);
    if !(last_loss.is_finite() && last_loss < first_loss) {
        return Err(format!(
            "own_loop's check failed: the loss went from {first_loss:.4e} to {last_loss:.4e}"
        )
        .into());
    }
    if rollbacks != 1 || skipped != 1 {
        return Err(format!(
            "own_loop's check failed: expected one rollback of the poisoned batch, got {rollbacks} (batches skipped: {skipped})"
        )
        .into());
    }
    println!("loss {first_loss:.4e} -> {last_loss:.4e}, 1 rollback: ok");
    Ok(())
}
