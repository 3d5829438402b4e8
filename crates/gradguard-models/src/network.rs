//! Networks with runtime sizes: an MLP or stacked recurrent layers, plus a linear head.
//!
//! Parameters live in a [`ParamStore`] (the master copy the optimiser updates and the view
//! lends out). Dense layers read and write the store directly; recurrent layers keep their
//! own dfdx tensors, which are synchronised from the store after every change
//! ([`Network::sync_recurrent`]) and whose gradients are copied into the store after each
//! backward pass.

use std::sync::{Arc, Mutex};

use dfdx::prelude::{Backward, Cpu, NoneTape, OwnedTape, Tape, Tensor, TensorFromVec};
use dfdx::tensor::{Gradients, Trace};
use gradguard_core::Role;

use crate::error::ModelError;
use crate::init::{init_matrix, orthogonal};
use crate::ops::{dense, last_step, loss, DenseRef};
use crate::params::{add_measured, ParamStore};
use crate::recurrent::{CellKind, RecurrentLayer, RecurrentState};
use crate::rng::Rng64;
use crate::spec::{Activation, InitScheme, InitSpec, LossKind, ModelSpec};

/// Indices of one dense layer's parameters in the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DenseIdx {
    pub w: usize,
    pub b: usize,
    pub fan_in: usize,
    pub fan_out: usize,
    pub act: Activation,
}

/// One recurrent layer and the store indices of `[weight_ih, weight_hh, bias_ih, bias_hh]`.
pub(crate) struct RecurrentSlot {
    pub layer: RecurrentLayer,
    pub idx: [usize; 4],
}

/// The part before the head.
pub(crate) enum Body {
    Mlp(Vec<DenseIdx>),
    Recurrent { layers: Vec<RecurrentSlot> },
}

/// A model: body, head, parameters.
pub(crate) struct Network {
    pub dev: Cpu,
    pub store: ParamStore,
    pub body: Body,
    pub head: DenseIdx,
    /// ||dL/dz|| per dense layer (MLP layers then head), written by the last backward pass.
    pub signals: Arc<Mutex<Vec<f64>>>,
    /// Whether the backward measures each parameter gradient in its last write (off by
    /// default: see `Trainer::set_measure_grads_in_backward`).
    pub measure_grads: bool,
}

fn add_dense(
    store: &mut ParamStore,
    prefix: &str,
    fan_in: usize,
    fan_out: usize,
    act: Activation,
    init: &InitSpec,
    rng: &mut Rng64,
) -> DenseIdx {
    let w = store.add(
        format!("{prefix}.weight"),
        vec![fan_out, fan_in],
        Role::Weight,
        init_matrix(init, fan_out, fan_in, rng),
    );
    let b = store.add(
        format!("{prefix}.bias"),
        vec![fan_out],
        Role::Bias,
        vec![0.0; fan_out],
    );
    DenseIdx {
        w,
        b,
        fan_in,
        fan_out,
        act,
    }
}

impl Network {
    /// Builds and initialises the model for `input` features per step (for an MLP:
    /// `steps * input` flattened inputs) and `outputs` output units.
    pub fn build(
        spec: &ModelSpec,
        steps: usize,
        input: usize,
        outputs: usize,
        seed: u64,
    ) -> Result<Self, ModelError> {
        spec.validate()?;
        let mut rng = Rng64::new(seed, 0x1a17);
        let dev = Cpu::default();
        let mut store = ParamStore::default();
        let (body, last, head_init) = match spec {
            ModelSpec::Mlp(m) => {
                let mut layers = Vec::new();
                let mut fan_in = steps * input;
                for (i, (&h, act)) in m.hidden.iter().zip(m.layer_activations()).enumerate() {
                    layers.push(add_dense(
                        &mut store,
                        &format!("layers.{i}"),
                        fan_in,
                        h,
                        act,
                        &m.init,
                        &mut rng,
                    ));
                    fan_in = h;
                }
                (Body::Mlp(layers), fan_in, m.output_init.unwrap_or(m.init))
            }
            ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => {
                let cell = match spec {
                    ModelSpec::Rnn(_) => CellKind::Rnn,
                    ModelSpec::Lstm(_) => CellKind::Lstm,
                    _ => CellKind::Gru,
                };
                let g = cell.gates();
                let h = r.hidden;
                let mut layers = Vec::new();
                let mut fan_in = input;
                for l in 0..r.layers {
                    let p = format!("{}.{l}", spec.kind_name());
                    // W_ih: each gate block initialised on its own (fan_out = H), as Keras does per gate.
                    let mut w_ih = Vec::with_capacity(g * h * fan_in);
                    let mut w_hh = Vec::with_capacity(g * h * h);
                    for _ in 0..g {
                        w_ih.extend(init_matrix(&r.init, h, fan_in, &mut rng));
                    }
                    for _ in 0..g {
                        let block = match r.recurrent_init.scheme {
                            InitScheme::Orthogonal => {
                                orthogonal(h, h, r.recurrent_init.gain, &mut rng)
                            }
                            _ => init_matrix(&r.recurrent_init, h, h, &mut rng),
                        };
                        w_hh.extend(block);
                    }
                    let mut b_ih = vec![0.0; g * h];
                    if cell == CellKind::Lstm {
                        b_ih[h..2 * h].fill(r.forget_bias.unwrap_or(1.0));
                    }
                    let i0 = store.add(
                        format!("{p}.weight_ih"),
                        vec![g * h, fan_in],
                        Role::Weight,
                        w_ih,
                    );
                    let i1 = store.add(
                        format!("{p}.weight_hh"),
                        vec![g * h, h],
                        Role::RecurrentWeight,
                        w_hh,
                    );
                    let i2 = store.add(format!("{p}.bias_ih"), vec![g * h], Role::Bias, b_ih);
                    let i3 = store.add(
                        format!("{p}.bias_hh"),
                        vec![g * h],
                        Role::Bias,
                        vec![0.0; g * h],
                    );
                    let layer = RecurrentLayer::new(&dev, cell, fan_in, h);
                    layers.push(RecurrentSlot {
                        layer,
                        idx: [i0, i1, i2, i3],
                    });
                    fan_in = h;
                }
                (
                    Body::Recurrent { layers },
                    h,
                    r.output_init.unwrap_or(r.init),
                )
            }
        };
        let head = add_dense(
            &mut store,
            "head",
            last,
            outputs,
            Activation::Identity,
            &head_init,
            &mut rng,
        );
        let n_dense = match &body {
            Body::Mlp(l) => l.len() + 1,
            Body::Recurrent { .. } => 1,
        };
        let mut net = Network {
            dev,
            store,
            body,
            head,
            signals: Arc::new(Mutex::new(vec![0.0; n_dense])),
            measure_grads: false,
        };
        net.sync_recurrent();
        Ok(net)
    }

    /// Copies the store's weights into the recurrent layers' tensors.
    pub fn sync_recurrent(&mut self) {
        if let Body::Recurrent { layers, .. } = &mut self.body {
            for s in layers {
                s.layer.weight_ih.copy_from(&self.store.slots[s.idx[0]].w);
                s.layer.weight_hh.copy_from(&self.store.slots[s.idx[1]].w);
                s.layer.bias_ih.copy_from(&self.store.slots[s.idx[2]].w);
                s.layer.bias_hh.copy_from(&self.store.slots[s.idx[3]].w);
            }
        }
    }

    fn dense_ref(&self, d: &DenseIdx, signal: Option<usize>) -> DenseRef {
        let s = &self.store.slots;
        DenseRef {
            w: s[d.w].w.clone(),
            b: s[d.b].w.clone(),
            gw: s[d.w].g.clone(),
            gb: s[d.b].g.clone(),
            fan_in: d.fan_in,
            fan_out: d.fan_out,
            act: d.act,
            signal: signal.map(|i| (self.signals.clone(), i)),
            measure: self.measure_grads,
        }
    }

    /// Number of recurrent layers (0 for an MLP).
    pub fn recurrent_layers(&self) -> usize {
        match &self.body {
            Body::Mlp(_) => 0,
            Body::Recurrent { layers, .. } => layers.len(),
        }
    }

    /// One bias per layer, input layer first and the head last, as indices into the store:
    /// a dense layer's bias, a recurrent layer's `bias_ih` (its gradient is the layer's
    /// error signal summed over the batch and the time steps; `bias_hh` would count the
    /// layer twice).
    pub fn layer_biases(&self) -> Vec<usize> {
        let mut out: Vec<usize> = match &self.body {
            Body::Mlp(layers) => layers.iter().map(|d| d.b).collect(),
            Body::Recurrent { layers, .. } => layers.iter().map(|s| s.idx[2]).collect(),
        };
        out.push(self.head.b);
        out
    }

    fn mlp_forward<T: Tape<f32, Cpu>>(
        &self,
        layers: &[DenseIdx],
        x: Tensor<(usize, usize), f32, Cpu, T>,
    ) -> Result<Tensor<(usize, usize), f32, Cpu, T>, ModelError> {
        let mut h = x;
        for (i, l) in layers.iter().enumerate() {
            h = dense(h, &self.dense_ref(l, Some(i)), i > 0)?;
        }
        dense(
            h,
            &self.dense_ref(&self.head, Some(layers.len())),
            !layers.is_empty(),
        )
    }

    /// Runs the recurrent stack over time-major `x` `[T, B, I]` from `states` (updated in
    /// place with the final, detached states) and applies the head to the last step
    /// (`[B, O]`) or to every step (`[T*B, O]`).
    fn recurrent_forward<T: Tape<f32, Cpu>>(
        &self,
        layers: &[RecurrentSlot],
        x: Tensor<(usize, usize, usize), f32, Cpu, T>,
        states: &mut [Option<RecurrentState>],
        every_step: bool,
    ) -> Result<Tensor<(usize, usize), f32, Cpu, T>, ModelError> {
        let mut h = x;
        for (l, s) in layers.iter().enumerate() {
            let (out, st) = s.layer.forward(h, states[l].as_ref(), l > 0);
            states[l] = Some(st);
            h = out;
        }
        let head = self.dense_ref(&self.head, Some(0));
        if every_step {
            dense(h, &head, true)
        } else {
            dense(last_step(h)?, &head, true)
        }
    }

    /// Forward pass without gradient: the model's outputs, row-major `[rows, O]`.
    /// `x` is `[B, F]` for an MLP and time-major `[T, B, I]` for recurrent models.
    pub fn predict(
        &self,
        x: Vec<f32>,
        shape: (usize, usize, usize),
        states: &mut [Option<RecurrentState>],
        every_step: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let (t, b, i) = shape;
        let out = match &self.body {
            Body::Mlp(layers) => {
                let x: Tensor<(usize, usize), f32, Cpu, NoneTape> =
                    self.dev.try_tensor_from_vec(x, (b, t * i))?;
                self.mlp_forward(layers, x)?
            }
            Body::Recurrent { layers, .. } => {
                let x = self.dev.try_tensor_from_vec(x, (t, b, i))?;
                self.recurrent_forward(layers, x, states, every_step)?
            }
        };
        Ok(out.as_vec())
    }

    /// Advances recurrent `states` over `x` (time-major `[T, B, I]`) without gradient
    /// (the untaped prefix of truncated BPTT).
    pub fn advance_states(
        &self,
        x: Vec<f32>,
        shape: (usize, usize, usize),
        states: &mut [Option<RecurrentState>],
    ) -> Result<(), ModelError> {
        if let Body::Recurrent { layers, .. } = &self.body {
            let mut h: Tensor<(usize, usize, usize), f32, Cpu, NoneTape> =
                self.dev.try_tensor_from_vec(x, shape)?;
            for (l, s) in layers.iter().enumerate() {
                let (out, st) = s.layer.forward(h, states[l].as_ref(), false);
                states[l] = Some(st);
                h = out;
            }
        }
        Ok(())
    }

    /// Forward, loss and backward: gradients are ADDED to the store's buffers (zero them
    /// first for a fresh step). Returns the loss.
    pub fn loss_and_gradients(
        &mut self,
        x: Vec<f32>,
        shape: (usize, usize, usize),
        target: &[f32],
        kind: LossKind,
        states: &mut [Option<RecurrentState>],
        every_step: bool,
    ) -> Result<f64, ModelError> {
        let (t, b, i) = shape;
        let (value, grads) = match &self.body {
            Body::Mlp(layers) => {
                let x: Tensor<(usize, usize), f32, Cpu, NoneTape> =
                    self.dev.try_tensor_from_vec(x, (b, t * i))?;
                let x: Tensor<(usize, usize), f32, Cpu, OwnedTape<f32, Cpu>> = x.leaky_traced();
                let out = self.mlp_forward(layers, x)?;
                let (l, value) = loss(out, target, kind)?;
                (value, l.try_backward()?)
            }
            Body::Recurrent { layers, .. } => {
                let x: Tensor<(usize, usize, usize), f32, Cpu, NoneTape> =
                    self.dev.try_tensor_from_vec(x, (t, b, i))?;
                let x = x.leaky_traced();
                let out = self.recurrent_forward(layers, x, states, every_step)?;
                let (l, value) = loss(out, target, kind)?;
                (value, l.try_backward()?)
            }
        };
        self.collect_recurrent_grads(grads)?;
        Ok(value)
    }

    fn collect_recurrent_grads(
        &mut self,
        mut grads: Gradients<f32, Cpu>,
    ) -> Result<(), ModelError> {
        let Body::Recurrent { layers, .. } = &self.body else {
            return Ok(());
        };
        let mut pairs: Vec<(usize, Vec<f32>)> = Vec::with_capacity(layers.len() * 4);
        for s in layers {
            let l = &s.layer;
            pairs.push((
                s.idx[0],
                std::mem::take(&mut **grads.get_or_alloc_mut(&l.weight_ih)?),
            ));
            pairs.push((
                s.idx[1],
                std::mem::take(&mut **grads.get_or_alloc_mut(&l.weight_hh)?),
            ));
            pairs.push((
                s.idx[2],
                std::mem::take(&mut **grads.get_or_alloc_mut(&l.bias_ih)?),
            ));
            pairs.push((
                s.idx[3],
                std::mem::take(&mut **grads.get_or_alloc_mut(&l.bias_hh)?),
            ));
        }
        for (i, g) in pairs {
            let dst = self.store.grad_buf_mut(i)?;
            if g.len() != dst.values().len() {
                continue;
            }
            if self.measure_grads {
                // the last write of this gradient: measured chunk by chunk as it is added
                dst.write_measured(|d| add_measured(d, &g));
            } else {
                for (d, v) in dst.values_mut().iter_mut().zip(&g) {
                    *d += v;
                }
            }
        }
        Ok(())
    }

    /// Per-time-step gradient norms ||dL/dh_t|| of each recurrent layer from the last backward.
    pub fn time_grad_norms(&self) -> Vec<(String, Vec<f64>)> {
        match &self.body {
            Body::Mlp(_) => Vec::new(),
            Body::Recurrent { layers, .. } => layers
                .iter()
                .enumerate()
                .map(|(l, s)| {
                    let kind = match s.layer.cell {
                        CellKind::Rnn => "rnn",
                        CellKind::Lstm => "lstm",
                        CellKind::Gru => "gru",
                    };
                    (format!("{kind}.{l}"), s.layer.time_grad_norms())
                })
                .collect(),
        }
    }

    /// The error-signal norms ||dL/dz_l|| of the MLP's dense layers (head last) from the last
    /// backward pass; empty for recurrent models.
    pub fn layer_signal_norms(&self) -> Vec<f64> {
        match &self.body {
            Body::Mlp(_) => self
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            Body::Recurrent { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(net: &Network, name: &str) -> Vec<f32> {
        let s = net
            .store
            .slots
            .iter()
            .find(|s| s.info.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        s.w.as_ref().clone()
    }

    fn build(model: &str, steps: usize) -> Network {
        let spec: ModelSpec = toml::from_str(model).unwrap();
        Network::build(&spec, steps, 6, 3, 11).unwrap()
    }

    /// `output_init` initialises the head only; absent, the head uses `init` as before.
    #[test]
    fn head_uses_output_init() {
        for (kind, size, hidden_name) in [
            ("mlp", "hidden = [40]", "layers.0.weight"),
            ("lstm", "hidden = 40", "lstm.0.weight_ih"),
        ] {
            let base = format!("kind = \"{kind}\"\n{size}\ninit = {{ scheme = \"he_normal\" }}\n");
            let plain = build(&base, 2);
            let same = build(
                &format!("{base}output_init = {{ scheme = \"he_normal\" }}\n"),
                2,
            );
            let zero = build(
                &format!("{base}output_init = {{ scheme = \"normal\", std = 0.0 }}\n"),
                2,
            );
            let glorot = build(
                &format!("{base}output_init = {{ scheme = \"glorot_uniform\", gain = 1.0 }}\n"),
                2,
            );
            // the same initialiser spelled out draws the same head
            assert_eq!(
                weights(&plain, "head.weight"),
                weights(&same, "head.weight")
            );
            // the hidden weights are untouched by output_init
            for n in [&same, &zero, &glorot] {
                assert_eq!(weights(&plain, hidden_name), weights(n, hidden_name));
            }
            assert!(weights(&zero, "head.weight").iter().all(|&w| w == 0.0));
            // head 3 x 40: glorot bound sqrt(6 / 43); he_normal (std sqrt(2/40) = 0.22)
            // would exceed it for some of the 120 values
            let bound = (6.0f64 / 43.0).sqrt();
            let g = weights(&glorot, "head.weight");
            assert!(g.iter().all(|&w| (w as f64).abs() <= bound), "{kind}");
            assert_ne!(g, weights(&plain, "head.weight"));
            let max = weights(&plain, "head.weight")
                .iter()
                .fold(0f32, |m, &w| m.max(w.abs())) as f64;
            assert!(max > bound, "{kind}: he_normal head max {max}");
        }
    }
}
