//! Finite-difference gradient checks of whole networks: every MLP activation, every loss,
//! and stacked recurrent networks of each cell kind (which also checks how this crate wires
//! the recurrent layers: weight syncing, gradient collection, the last-step selection and
//! the head). Criterion, per tensor: ||g_fd - g|| <= 1e-2 * max(||g_fd||, 1e-3), with central
//! differences (step 3e-3) of the f32 forward pass evaluated in f64.

use crate::network::Network;
use crate::ops::loss_and_grad;
use crate::rng::Rng64;
use crate::spec::{LossKind, ModelSpec};

fn spec(text: &str) -> ModelSpec {
    toml::from_str(text).unwrap()
}

fn eval_loss(
    net: &Network,
    x: &[f32],
    shape: (usize, usize, usize),
    y: &[f32],
    loss: LossKind,
    every: bool,
    cols: usize,
) -> f64 {
    let mut states = vec![None; net.recurrent_layers()];
    let pred = net.predict(x.to_vec(), shape, &mut states, every).unwrap();
    loss_and_grad(loss, &pred, y, cols, false, &mut Vec::new())
}

#[allow(clippy::too_many_arguments)]
fn check(
    model: &str,
    steps: usize,
    input: usize,
    outputs: usize,
    rows: usize,
    loss: LossKind,
    every: bool,
    seed: u64,
) {
    let m = spec(model);
    let mut net = Network::build(&m, steps, input, outputs, seed).unwrap();
    let mut rng = Rng64::new(seed, 99);
    let shape = (steps, rows, input);
    let x: Vec<f32> = (0..steps * rows * input)
        .map(|_| rng.normal() as f32)
        .collect();
    let n_targets = match (loss, every) {
        (LossKind::CrossEntropy, true) => steps * rows,
        (LossKind::CrossEntropy, false) => rows,
        (_, true) => steps * rows * outputs,
        (_, false) => rows * outputs,
    };
    let y: Vec<f32> = (0..n_targets)
        .map(|_| match loss {
            LossKind::CrossEntropy => rng.below(outputs) as f32,
            LossKind::Bce => rng.uniform() as f32,
            LossKind::Mse => rng.normal() as f32,
        })
        .collect();
    net.store.zero_grads();
    let mut states = vec![None; net.recurrent_layers()];
    net.loss_and_gradients(x.clone(), shape, &y, loss, &mut states, every)
        .unwrap();
    let h = 3e-3f32;
    for i in 0..net.store.slots.len() {
        let analytic = net.store.grads_mut(i).unwrap().clone();
        let name = net.store.slots[i].info.name.clone();
        let mut fd = vec![0f64; analytic.len()];
        for (j, fd_j) in fd.iter_mut().enumerate() {
            let w0 = net.store.slots[i].w[j];
            net.store.weights_mut(i)[j] = w0 + h;
            net.sync_recurrent();
            let lp = eval_loss(&net, &x, shape, &y, loss, every, outputs);
            net.store.weights_mut(i)[j] = w0 - h;
            net.sync_recurrent();
            let lm = eval_loss(&net, &x, shape, &y, loss, every, outputs);
            net.store.weights_mut(i)[j] = w0;
            net.sync_recurrent();
            *fd_j = (lp - lm) / ((w0 + h) as f64 - (w0 - h) as f64);
        }
        let diff: f64 = fd
            .iter()
            .zip(&analytic)
            .map(|(a, &b)| (a - b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = fd.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!(
            diff <= 1e-2 * norm.max(1e-3),
            "{model} / {loss:?}: `{name}` gradient differs from finite differences: |fd - g| = {diff:e}, |fd| = {norm:e}\nfd = {fd:?}\ng = {analytic:?}"
        );
    }
}

#[test]
fn mlp_each_activation_mse() {
    for act in ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"] {
        let model = format!("kind = \"mlp\"\nhidden = [5, 4]\nactivation = \"{act}\"\ninit = {{ scheme = \"glorot_uniform\", gain = 1.5 }}");
        check(&model, 1, 3, 2, 6, LossKind::Mse, false, 11);
    }
    let model = "kind = \"mlp\"\nhidden = [5, 4]\nactivations = [{ kind = \"leaky_relu\", slope = 0.2 }, { kind = \"elu\", alpha = 0.5 }]";
    check(model, 1, 3, 2, 6, LossKind::Mse, false, 12);
}

#[test]
fn mlp_each_loss() {
    let model = "kind = \"mlp\"\nhidden = [6]\nactivation = \"tanh\"";
    check(model, 1, 4, 3, 5, LossKind::CrossEntropy, false, 3);
    check(model, 1, 4, 3, 5, LossKind::Bce, false, 4);
    check(model, 1, 4, 3, 5, LossKind::Mse, false, 5);
    // a linear model (no hidden layer) and a sequence flattened into an MLP
    check(
        "kind = \"mlp\"\nhidden = []",
        1,
        4,
        2,
        3,
        LossKind::Mse,
        false,
        6,
    );
    check(model, 3, 2, 1, 4, LossKind::Mse, false, 7);
}

#[test]
fn recurrent_stacks_each_cell() {
    for kind in ["rnn", "lstm", "gru"] {
        let model = format!("kind = \"{kind}\"\nhidden = 4\nlayers = 2\nrecurrent_init = {{ scheme = \"orthogonal\", gain = 0.9 }}");
        check(&model, 5, 3, 2, 3, LossKind::Mse, false, 21);
        check(&model, 4, 3, 3, 2, LossKind::CrossEntropy, true, 22);
    }
}
