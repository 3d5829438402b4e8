//! Parameter views: a model's named weights and gradients, borrowed without copying.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::kernels::SliceStats;

/// What a parameter tensor is for. Detectors and remedies use it to pick tensors: L1/L2
/// penalties skip biases, growth across layers reads bias gradients (a layer's error signal
/// summed over the batch), the recurrent-radius detector reads recurrent weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An input-to-output weight matrix (a dense kernel, `W_ih`).
    Weight,
    /// A bias vector.
    Bias,
    /// A hidden-to-hidden weight matrix of a recurrent layer (`W_hh`).
    RecurrentWeight,
    /// Anything else (norm scales, embeddings, ...).
    Other,
}

impl Role {
    /// The snake_case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::RecurrentWeight => "recurrent_weight",
            Role::Other => "other",
        }
    }

    /// Whether the tensor is a weight matrix (input or recurrent), i.e. not a bias or other.
    pub fn is_weight(self) -> bool {
        matches!(self, Role::Weight | Role::RecurrentWeight)
    }

    /// The role of a tensor known only by its name and, when known, its rank: the one rule
    /// for every input that carries no roles (an events log replayed by `gradguard diagnose`,
    /// a safetensors dump read by `gradguard grads`), so both classify a tensor alike.
    ///
    /// The rule reads the name's *leaf*: the part after the last `.` or `/`, without a
    /// trailing TensorFlow output index `:N`, compared ignoring ASCII case.
    ///
    /// 1. A leaf containing `bias` is a [`Role::Bias`] (`fc1.bias`, `lstm.bias_ih_l0`,
    ///    `rnn.0.bias_hh`, Keras `dense/bias:0`, Flax `Dense_0/bias`), whatever the rank.
    /// 2. A leaf containing `weight_hh`, `w_hh` or `recurrent` is a [`Role::RecurrentWeight`]
    ///    (`lstm.weight_hh_l0`, `rnn.0.weight_hh`, Keras `lstm_cell/recurrent_kernel:0`).
    /// 3. Anything else is decided by the rank: a [`Role::Weight`] when `rank` is `Some(r)`
    ///    with `r >= 2` (`fc1.weight`, `dense/kernel:0`, `embedding.weight`), [`Role::Other`]
    ///    when it is `Some(0)` or `Some(1)` (norm scales such as `ln.weight`,
    ///    `bn.running_mean`), and a [`Role::Weight`] when it is `None` (a log records no
    ///    shapes, and the models that write one have no rank-1 tensors but biases).
    ///
    /// Module names are not read, so `recurrent_block.fc.weight` is a plain weight and
    /// `unbiased.weight` is not a bias.
    pub fn from_name(name: &str, rank: Option<usize>) -> Role {
        let leaf = name_leaf(name);
        if contains_ignore_case(leaf, "bias") {
            Role::Bias
        } else if ["weight_hh", "w_hh", "recurrent"]
            .iter()
            .any(|n| contains_ignore_case(leaf, n))
        {
            Role::RecurrentWeight
        } else {
            match rank {
                Some(r) if r < 2 => Role::Other,
                _ => Role::Weight,
            }
        }
    }
}

/// The last component of a tensor name (after the last `.` or `/`), without a trailing
/// `:N` output index (`dense/kernel:0` -> `kernel`).
fn name_leaf(name: &str) -> &str {
    let leaf = name.rfind(['.', '/']).map_or(name, |i| &name[i + 1..]);
    match leaf.rfind(':') {
        Some(i) if i + 1 < leaf.len() && leaf[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &leaf[..i]
        }
        _ => leaf,
    }
}

/// Whether `hay` contains the lowercase ASCII `needle`, ignoring ASCII case (no allocation).
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The static description of one parameter: its name, shape and role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Stable readable name, e.g. `layers.0.weight`, `lstm.0.weight_hh`, `head.bias`.
    pub name: String,
    /// Logical shape, outermost first (`[out, in]` for dense weights, PyTorch layout).
    pub shape: Vec<usize>,
    /// What the tensor is for.
    pub role: Role,
}

impl ParamInfo {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One parameter of a [`ParamView`]: its description plus borrowed weights and gradients.
#[derive(Debug)]
pub struct Param<'a> {
    /// Stable readable name.
    pub name: &'a str,
    /// Logical shape, outermost first.
    pub shape: &'a [usize],
    /// What the tensor is for.
    pub role: Role,
    /// The current weights, row-major, `numel` values.
    pub weights: &'a [f32],
    /// The gradients of the loss with respect to the weights, same layout; remedies edit them in place.
    pub grads: &'a mut [f32],
    /// Statistics of `weights` that the bridge already holds, if any (for example measured by
    /// the optimiser pass that wrote these weights, as gradguard-models does). When present,
    /// [`crate::StepStats`] takes them instead of reading the weights again; they must describe
    /// exactly the values in `weights`. [`ParamView::push`] leaves this `None`.
    pub known_weight_stats: Option<WeightStats>,
    /// Statistics of `grads` that the bridge already holds, if any: measured where the
    /// gradients were produced (gradguard-models measures each gradient tensor in the backward
    /// pass's last write of it, block by block while the block is still in the cache). When
    /// present, [`crate::StepStats::measure_into`] takes them instead of reading the gradients
    /// again, so they must be exactly what [`crate::kernels::slice_stats`] gives on `grads`
    /// (sum of squares, max |g|, non-finite count). The view forgets them as soon as it lends
    /// the gradients mutably ([`ParamView::params_mut`], [`ParamView::iter_mut`]), and
    /// [`crate::StepStats::remeasure_param`] never uses them. [`ParamView::push`] leaves this
    /// `None`.
    pub known_grad_stats: Option<SliceStats>,
}

/// The statistics of a weight tensor that the step statistics need: Σ w² (f64, with the
/// accuracy and range of [`crate::kernels`]) and the number of NaN or infinite values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WeightStats {
    /// Σ w² in f64 (NaN or inf when a weight is).
    pub sum_sq: f64,
    /// Number of NaN or infinite weights.
    pub nonfinite: usize,
}

/// The named parameters of a model, as borrowed slices (zero-copy over the framework's buffers).
///
/// Built once per step by a bridge (see gradguard-models for dfdx, `gradguard grads` for
/// safetensors dumps). [`ParamView::push`] checks that the weights, gradients and shape agree.
///
/// Lending the gradients mutably ([`ParamView::params_mut`], [`ParamView::iter_mut`]) drops
/// every [`Param::known_grad_stats`] and raises the bridge's flag, if it attached one with
/// [`ParamView::watch_grad_writes`], so that no later view can hand out statistics of
/// gradients that may have changed since.
#[derive(Debug, Default)]
pub struct ParamView<'a> {
    params: Vec<Param<'a>>,
    /// The bridge's "the gradients may have been written through a view" flag.
    grads_lent: Option<&'a mut bool>,
}

impl<'a> ParamView<'a> {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty view with room for `n` parameters.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            params: Vec::with_capacity(n),
            grads_lent: None,
        }
    }

    /// Adds a parameter. Errors when `weights`, `grads` and the product of `shape` differ in length.
    pub fn push(
        &mut self,
        name: &'a str,
        shape: &'a [usize],
        role: Role,
        weights: &'a [f32],
        grads: &'a mut [f32],
    ) -> Result<(), CoreError> {
        let numel: usize = shape.iter().product();
        if weights.len() != numel || grads.len() != numel {
            return Err(CoreError::ShapeMismatch {
                name: name.to_string(),
                shape: shape.to_vec(),
                weights: weights.len(),
                grads: grads.len(),
            });
        }
        self.params.push(Param {
            name,
            shape,
            role,
            weights,
            grads,
            known_weight_stats: None,
            known_grad_stats: None,
        });
        Ok(())
    }

    /// Like [`ParamView::push`], with the weight statistics the bridge already holds (see
    /// [`Param::known_weight_stats`]): the statistics pass then reads only the gradients.
    pub fn push_with_weight_stats(
        &mut self,
        name: &'a str,
        shape: &'a [usize],
        role: Role,
        weights: &'a [f32],
        grads: &'a mut [f32],
        weight_stats: Option<WeightStats>,
    ) -> Result<(), CoreError> {
        self.push(name, shape, role, weights, grads)?;
        if let Some(p) = self.params.last_mut() {
            p.known_weight_stats = weight_stats;
        }
        Ok(())
    }

    /// Like [`ParamView::push_with_weight_stats`], with the gradient statistics the bridge
    /// already holds as well (see [`Param::known_grad_stats`]): the statistics pass then reads
    /// nothing for this tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn push_with_known_stats(
        &mut self,
        name: &'a str,
        shape: &'a [usize],
        role: Role,
        weights: &'a [f32],
        grads: &'a mut [f32],
        weight_stats: Option<WeightStats>,
        grad_stats: Option<SliceStats>,
    ) -> Result<(), CoreError> {
        self.push_with_weight_stats(name, shape, role, weights, grads, weight_stats)?;
        if let Some(p) = self.params.last_mut() {
            p.known_grad_stats = grad_stats;
        }
        Ok(())
    }

    /// Attaches the bridge's flag that this view raises (sets to `true`) when it lends the
    /// gradients mutably, so that the bridge forgets the gradient statistics it holds.
    pub fn watch_grad_writes(&mut self, flag: &'a mut bool) {
        self.grads_lent = Some(flag);
    }

    /// The gradients may be written from here on: forget their known statistics, here and
    /// in the bridge.
    fn lend_grads(&mut self) {
        for p in &mut self.params {
            p.known_grad_stats = None;
        }
        if let Some(flag) = self.grads_lent.as_deref_mut() {
            *flag = true;
        }
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the view holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar values over all parameters.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.grads.len()).sum()
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Param<'a>] {
        &self.params
    }

    /// The parameters, mutable (to edit gradients in place). Forgets every known gradient
    /// statistic (see [`Param::known_grad_stats`]).
    pub fn params_mut(&mut self) -> &mut [Param<'a>] {
        self.lend_grads();
        &mut self.params
    }

    /// Iterates the parameters.
    pub fn iter(&self) -> std::slice::Iter<'_, Param<'a>> {
        self.params.iter()
    }

    /// Iterates the parameters mutably. Forgets every known gradient statistic (see
    /// [`Param::known_grad_stats`]).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Param<'a>> {
        self.lend_grads();
        self.params.iter_mut()
    }

    /// The parameter called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Param<'a>> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Owned descriptions of every parameter (name, shape, role).
    pub fn infos(&self) -> Vec<ParamInfo> {
        self.params
            .iter()
            .map(|p| ParamInfo {
                name: p.name.to_string(),
                shape: p.shape.to_vec(),
                role: p.role,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_rejects_mismatched_lengths() {
        let w = [1.0f32; 6];
        let mut g = [0.0f32; 5];
        let shape = [2usize, 3];
        let mut view = ParamView::new();
        let err = view
            .push("layers.0.weight", &shape, Role::Weight, &w, &mut g)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("layers.0.weight"), "{text}");
        assert!(text.contains("[2, 3]"), "{text}");
    }

    #[test]
    fn push_accepts_and_lists() {
        let w = [1.0f32; 6];
        let mut g = [0.0f32; 6];
        let wb = [0.5f32; 2];
        let mut gb = [0.0f32; 2];
        let (s1, s2) = ([2usize, 3], [2usize]);
        let mut view = ParamView::new();
        view.push("l.weight", &s1, Role::Weight, &w, &mut g)
            .unwrap();
        view.push("l.bias", &s2, Role::Bias, &wb, &mut gb).unwrap();
        assert_eq!(view.len(), 2);
        assert_eq!(view.numel(), 8);
        assert_eq!(view.get("l.bias").map(|p| p.role), Some(Role::Bias));
        assert_eq!(view.infos()[0].numel(), 6);
    }

    #[test]
    fn roles_from_names_follow_the_documented_table() {
        use Role::{Bias, Other, RecurrentWeight, Weight};
        let table: &[(&str, Option<usize>, Role)] = &[
            // PyTorch
            ("fc1.weight", Some(2), Weight),
            ("fc1.bias", Some(1), Bias),
            ("bias", Some(1), Bias),
            ("bias", None, Bias),
            ("conv1.weight", Some(4), Weight),
            ("lstm.weight_ih_l0", Some(2), Weight),
            ("lstm.weight_hh_l0", Some(2), RecurrentWeight),
            ("lstm.bias_ih_l0", Some(1), Bias),
            ("lstm.bias_hh_l0", Some(1), Bias),
            ("RNN.Weight_HH_l0", None, RecurrentWeight),
            ("cell.W_hh", Some(2), RecurrentWeight),
            ("ln.weight", Some(1), Other),
            ("bn.running_mean", Some(1), Other),
            ("step", Some(0), Other),
            ("embedding.weight", Some(2), Weight),
            // gradguard's own models
            ("layers.0.weight", Some(2), Weight),
            ("layers.0.bias", Some(1), Bias),
            ("rnn.0.weight_hh", Some(2), RecurrentWeight),
            ("lstm.0.bias_hh", Some(1), Bias),
            ("head.weight", None, Weight),
            // Keras / TensorFlow
            ("dense/kernel:0", Some(2), Weight),
            ("dense/bias:0", Some(1), Bias),
            ("dense/bias:0", None, Bias),
            ("lstm/lstm_cell/kernel:0", Some(2), Weight),
            (
                "lstm/lstm_cell/recurrent_kernel:0",
                Some(2),
                RecurrentWeight,
            ),
            ("lstm/lstm_cell/bias:0", Some(1), Bias),
            // Flax
            ("params/Dense_0/kernel", Some(2), Weight),
            ("params/Dense_0/bias", Some(1), Bias),
            ("params/LayerNorm_0/scale", Some(1), Other),
            // only the leaf is read
            ("unbiased.weight", Some(2), Weight),
            ("recurrent_block.fc.weight", Some(2), Weight),
            ("bias_net.kernel", Some(2), Weight),
            // an unknown rank (an events log) leaves a non-bias, non-recurrent tensor a weight
            ("b", None, Weight),
            ("ln.weight", None, Weight),
        ];
        for &(name, rank, role) in table {
            assert_eq!(Role::from_name(name, rank), role, "{name} rank {rank:?}");
        }
    }

    #[test]
    fn the_leaf_drops_only_a_numeric_output_index() {
        assert_eq!(name_leaf("dense/kernel:0"), "kernel");
        assert_eq!(name_leaf("a.b:12"), "b");
        assert_eq!(name_leaf("a.b:x"), "b:x");
        assert_eq!(name_leaf("a.b:"), "b:");
        assert_eq!(name_leaf("plain"), "plain");
        assert_eq!(name_leaf("trailing."), "");
    }
}
