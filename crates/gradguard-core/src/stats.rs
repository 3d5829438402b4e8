//! Step statistics: measured once per step, in one fused pass, and shared by every detector
//! and remedy. See [`crate::kernels`] for how accuracy and range are kept.

use serde::{Deserialize, Serialize};

use crate::kernels::{grad_and_weight_stats, slice_stats, SliceStats};
use crate::param::{Param, ParamView, Role};

/// Gradient and weight statistics of one parameter tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamStats {
    /// The parameter's name.
    pub name: String,
    /// What the tensor is for.
    pub role: Role,
    /// Number of values.
    pub numel: usize,
    /// Sum of g^2 (f64; NaN or inf when a gradient value is).
    pub grad_sum_sq: f64,
    /// L2 norm of the gradient, `sqrt(grad_sum_sq)`.
    pub grad_norm: f64,
    /// Largest |g|, ignoring NaN.
    pub grad_max_abs: f64,
    /// Number of NaN or infinite gradient values.
    pub grad_nonfinite: usize,
    /// Sum of w^2 of the current weights.
    pub weight_sum_sq: f64,
    /// Number of NaN or infinite weight values.
    pub weight_nonfinite: usize,
}

impl Default for ParamStats {
    /// An unnamed tensor with no values (role `other`).
    fn default() -> Self {
        Self::empty()
    }
}

impl ParamStats {
    fn empty() -> Self {
        ParamStats {
            name: String::new(),
            role: Role::Other,
            numel: 0,
            grad_sum_sq: 0.0,
            grad_norm: 0.0,
            grad_max_abs: 0.0,
            grad_nonfinite: 0,
            weight_sum_sq: 0.0,
            weight_nonfinite: 0,
        }
    }

    /// L2 norm of the weights.
    pub fn weight_norm(&self) -> f64 {
        self.weight_sum_sq.sqrt()
    }

    /// A tensor's statistics from figures a framework measured itself (e.g. on a GPU). The
    /// sums of squares are the norms squared (in f64).
    pub fn from_norms(name: &str, role: Role, numel: usize, n: TensorNorms) -> Self {
        let mut s = ParamStats {
            name: name.to_string(),
            role,
            numel,
            ..Self::empty()
        };
        s.set_norms(n);
        s
    }

    /// Sets the gradient and weight figures from a framework's norms (see
    /// [`ParamStats::from_norms`]); name, role and size are kept.
    pub fn set_norms(&mut self, n: TensorNorms) {
        self.grad_sum_sq = n.grad_norm * n.grad_norm;
        self.grad_norm = n.grad_norm;
        self.grad_max_abs = n.grad_max_abs;
        self.grad_nonfinite = n.grad_nonfinite;
        self.weight_sum_sq = n.weight_norm * n.weight_norm;
        self.weight_nonfinite = n.weight_nonfinite;
    }
}

/// One tensor's figures as a framework measures them (see [`ParamStats::from_norms`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TensorNorms {
    /// The gradient's L2 norm.
    pub grad_norm: f64,
    /// The gradient's largest |g|.
    pub grad_max_abs: f64,
    /// How many gradient values are NaN or infinite.
    pub grad_nonfinite: usize,
    /// The weights' L2 norm.
    pub weight_norm: f64,
    /// How many weight values are NaN or infinite.
    pub weight_nonfinite: usize,
}

/// Per-parameter and global statistics of one step's gradients and weights.
///
/// Formulas (n = all values of all tensors):
/// `grad_sum_sq = Σ g²`, `grad_norm = sqrt(grad_sum_sq)` (the global L2 norm of PyTorch's
/// `clip_grad_norm_` with `norm_type=2`), `grad_max_abs = max |g|` (its `norm_type=inf`),
/// `grad_nonfinite = #{g : g is NaN or ±inf}`, `weight_sum_sq = Σ w²`.
/// A NaN gradient makes the norms NaN and an infinite one makes them infinite, as in PyTorch;
/// the exact count of non-finite values is kept separately so that nothing needs to re-scan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// One entry per tensor, in view order.
    pub params: Vec<ParamStats>,
    /// Σ g² over every tensor.
    pub grad_sum_sq: f64,
    /// Global L2 norm of the gradients.
    pub grad_norm: f64,
    /// Global max |g| (the infinity norm), ignoring NaN.
    pub grad_max_abs: f64,
    /// Number of non-finite gradient values over every tensor.
    pub grad_nonfinite: usize,
    /// Σ w² over every tensor.
    pub weight_sum_sq: f64,
    /// Number of non-finite weight values over every tensor.
    pub weight_nonfinite: usize,
}

impl StepStats {
    /// Measures `view` in one pass over the gradients and the weights (neither is read where
    /// the view already carries its statistics, see [`Param::known_weight_stats`] and
    /// [`Param::known_grad_stats`]).
    pub fn measure(view: &ParamView<'_>) -> Self {
        let mut s = StepStats::default();
        s.measure_into(view);
        s
    }

    /// Measures `view` into `self`, reusing its buffers (no allocation once warmed up with
    /// the same parameter names).
    pub fn measure_into(&mut self, view: &ParamView<'_>) {
        self.resize(view.len());
        for (i, p) in view.iter().enumerate() {
            let s = &mut self.params[i];
            Self::rename(s, p.name);
            s.role = p.role;
            Self::fill(s, p, p.known_grad_stats);
        }
        self.refresh_totals();
    }

    /// Sets the statistics of `tensors` (name, role, size and a framework's norms, in view
    /// order), reusing the buffers as [`StepStats::measure_into`] does, and refreshes the
    /// totals: the figures of a step measured elsewhere (e.g. on a GPU).
    pub fn set_measured<'a>(
        &mut self,
        tensors: impl ExactSizeIterator<Item = (&'a str, Role, usize, TensorNorms)>,
    ) {
        self.resize(tensors.len());
        for (s, (name, role, numel, n)) in self.params.iter_mut().zip(tensors) {
            Self::rename(s, name);
            s.role = role;
            s.numel = numel;
            s.set_norms(n);
        }
        self.refresh_totals();
    }

    fn resize(&mut self, n: usize) {
        self.params.truncate(n);
        while self.params.len() < n {
            self.params.push(ParamStats::empty());
        }
    }

    /// Sets `s.name` without allocating when it is already `name`.
    fn rename(s: &mut ParamStats, name: &str) {
        if s.name != name {
            s.name.clear();
            s.name.push_str(name);
        }
    }

    /// Measures one tensor afresh (its gradients always, whatever they were known to be; its
    /// weights unless the view carries their statistics): after a remedy edited it.
    pub(crate) fn fill_param(s: &mut ParamStats, p: &Param<'_>) {
        Self::fill(s, p, None)
    }

    /// Measures one tensor: its gradients unless `known_grads` holds their statistics
    /// already ([`crate::Param::known_grad_stats`]), its weights unless the view carries
    /// theirs ([`crate::Param::known_weight_stats`]).
    fn fill(s: &mut ParamStats, p: &Param<'_>, known_grads: Option<SliceStats>) {
        let (g, wsq, wbad) = match (known_grads, p.known_weight_stats) {
            (Some(g), Some(w)) => (g, w.sum_sq, w.nonfinite),
            (Some(g), None) => {
                let w = slice_stats(p.weights);
                (g, w.sum_sq, w.nonfinite)
            }
            (None, Some(w)) => (slice_stats(p.grads), w.sum_sq, w.nonfinite),
            (None, None) => grad_and_weight_stats(p.grads, p.weights),
        };
        s.numel = p.grads.len();
        s.grad_sum_sq = g.sum_sq;
        s.grad_norm = g.sum_sq.sqrt();
        s.grad_max_abs = g.max_abs as f64;
        s.grad_nonfinite = g.nonfinite;
        s.weight_sum_sq = wsq;
        s.weight_nonfinite = wbad;
    }

    /// Measures parameter `index` again (after a remedy changed its gradients in a way that
    /// cannot be tracked analytically), then refreshes the totals. Always reads the
    /// gradients: known gradient statistics ([`crate::Param::known_grad_stats`]) are never used
    /// here, since the gradients have just changed.
    pub fn remeasure_param(&mut self, index: usize, view: &ParamView<'_>) {
        if let (Some(s), Some(p)) = (self.params.get_mut(index), view.params().get(index)) {
            Self::fill(s, p, None);
        }
        self.refresh_totals();
    }

    /// Recomputes the global figures from the per-parameter ones.
    pub fn refresh_totals(&mut self) {
        let mut sum = 0.0;
        let mut mx = 0.0f64;
        let mut bad = 0;
        let mut wsq = 0.0;
        let mut wbad = 0;
        for s in &self.params {
            sum += s.grad_sum_sq;
            if s.grad_max_abs > mx {
                mx = s.grad_max_abs;
            }
            bad += s.grad_nonfinite;
            wsq += s.weight_sum_sq;
            wbad += s.weight_nonfinite;
        }
        self.grad_sum_sq = sum;
        self.grad_norm = sum.sqrt();
        self.grad_max_abs = mx;
        self.grad_nonfinite = bad;
        self.weight_sum_sq = wsq;
        self.weight_nonfinite = wbad;
    }

    /// Records that every gradient was multiplied by `c` (finite gradients assumed): each
    /// norm scales by |c|, each sum of squares by c².
    pub fn scale_all(&mut self, c: f64) {
        for s in &mut self.params {
            Self::scale_one(s, c);
        }
        self.refresh_totals();
    }

    /// Records that the gradients of parameter `index` were multiplied by `c`.
    /// Call [`StepStats::refresh_totals`] after scaling several parameters.
    pub fn scale_param(&mut self, index: usize, c: f64) {
        if let Some(s) = self.params.get_mut(index) {
            Self::scale_one(s, c);
        }
    }

    fn scale_one(s: &mut ParamStats, c: f64) {
        s.grad_sum_sq *= c * c;
        s.grad_norm *= c.abs();
        s.grad_max_abs *= c.abs();
    }

    /// Whether every gradient value is finite.
    pub fn grads_finite(&self) -> bool {
        self.grad_nonfinite == 0
    }

    /// The first tensor holding a non-finite gradient, if any.
    pub fn first_nonfinite_grad(&self) -> Option<&ParamStats> {
        self.params.iter().find(|s| s.grad_nonfinite > 0)
    }

    /// The first tensor holding a non-finite weight, if any.
    pub fn first_nonfinite_weight(&self) -> Option<&ParamStats> {
        self.params.iter().find(|s| s.weight_nonfinite > 0)
    }

    /// Global L2 norm of the weights.
    pub fn weight_norm(&self) -> f64 {
        self.weight_sum_sq.sqrt()
    }
}

/// What one optimiser update did to one parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamUpdate {
    /// The parameter's name.
    pub name: String,
    /// ||w_new - w_old||₂.
    pub update_norm: f64,
    /// ||w_old||₂, the weights the update started from.
    pub weight_norm: f64,
    /// Number of non-finite weight values after the update.
    pub weight_nonfinite: usize,
}

impl ParamUpdate {
    /// The update ratio ||dw|| / ||w||. When ||w|| is 0 (e.g. zero-initialised biases) the
    /// ratio is ||dw|| / 1e-12 for a non-zero update and 0 for none, so an update that moves
    /// zero weights is reported as large rather than hidden.
    pub fn ratio(&self) -> f64 {
        if self.update_norm == 0.0 {
            0.0
        } else {
            self.update_norm / self.weight_norm.max(1e-12)
        }
    }
}

/// What the last optimiser update did, per parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// The step whose update this was (optimiser updates count from 1).
    pub step: u64,
    /// The learning rate used.
    pub lr: f64,
    /// One entry per tensor, in view order.
    pub params: Vec<ParamUpdate>,
    /// Set when the optimiser withheld this update because it would have written a
    /// non-finite value (a transactional update): nothing was written, and `params` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<WithheldUpdate>,
}

/// An update the optimiser refused to write: the first tensor whose new weights (or new
/// optimiser state) would have been non-finite. The weights and the optimiser state are
/// exactly as they were before the update.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WithheldUpdate {
    /// The tensor's name.
    pub param: String,
    /// How many of its new weights would have been non-finite.
    pub nonfinite_weights: usize,
    /// How many of its new optimiser-state values would have been non-finite.
    pub nonfinite_state: usize,
}

impl UpdateStats {
    /// An update of `step` with room for `n` tensors and none measured yet.
    fn empty(step: u64, lr: f64, n: usize) -> Self {
        UpdateStats {
            step,
            lr,
            params: Vec::with_capacity(n),
            withheld: None,
        }
    }

    /// Measures an update from the weights before and after it, per tensor, in one pass.
    /// `before` and `after` hold one slice per tensor, in the same order as `names`.
    pub fn measure(
        step: u64,
        lr: f64,
        names: &[&str],
        before: &[&[f32]],
        after: &[&[f32]],
    ) -> Self {
        let mut u = UpdateStats::empty(step, lr, names.len());
        for ((name, b), a) in names.iter().zip(before).zip(after) {
            let mut dsq = 0.0f64;
            let mut wsq = 0.0f64;
            let mut bad = 0usize;
            for (&x, &y) in b.iter().zip(a.iter()) {
                let d = y as f64 - x as f64;
                dsq += d * d;
                wsq += x as f64 * x as f64;
                bad += (!y.is_finite()) as usize;
            }
            u.params.push(ParamUpdate {
                name: name.to_string(),
                update_norm: dsq.sqrt(),
                weight_norm: wsq.sqrt(),
                weight_nonfinite: bad,
            });
        }
        u
    }

    /// [`UpdateStats::measure`] for a caller that keeps its own copy of the weights before
    /// the update, with the fast statistics kernel ([`crate::kernels::slice_stats`]) instead
    /// of a scalar f64 loop. Per tensor: `||w_before||` from `before`, then `before` is
    /// overwritten with `after - before` (in f32: exact when the two are within a factor of
    /// 2 of each other, else one rounding) and `||dw||` is measured from it; the weights after
    /// the update are counted for non-finite values only when `dw` is not finite. The norms
    /// carry the kernel's relative error (below 1.1e-6 on AVX-512, 1e-12 otherwise).
    /// Tensors past the shorter of `before`/`after` are not measured.
    pub fn measure_from_copy(
        step: u64,
        lr: f64,
        names: &[&str],
        before: &mut [Vec<f32>],
        after: &[&[f32]],
    ) -> Self {
        let mut u = UpdateStats::empty(step, lr, names.len());
        for ((name, b), a) in names.iter().zip(before.iter_mut()).zip(after) {
            let w = slice_stats(b);
            for (d, &x) in b.iter_mut().zip(a.iter()) {
                *d = x - *d;
            }
            let dw = slice_stats(&b[..a.len().min(b.len())]);
            let bad = if dw.nonfinite > 0 {
                slice_stats(a).nonfinite
            } else {
                0
            };
            u.params.push(ParamUpdate {
                name: name.to_string(),
                update_norm: dw.sum_sq.sqrt(),
                weight_norm: w.sum_sq.sqrt(),
                weight_nonfinite: bad,
            });
        }
        u
    }

    /// The largest update ratio over all tensors, with the tensor's name.
    pub fn max_ratio(&self) -> Option<(&str, f64)> {
        self.params
            .iter()
            .map(|p| (p.name.as_str(), p.ratio()))
            .fold(None, |best, (n, r)| match best {
                Some((_, b)) if b >= r || r.is_nan() => best,
                _ => Some((n, r)),
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn measure_from_copy_agrees_with_measure_and_leaves_the_difference() {
        // Hand-computed: w_before = (3, 4) -> ||w|| = 5; dw = (0.5, -1.5) + 0 -> ||dw|| =
        // sqrt(2.5); the second tensor gains a NaN: one non-finite weight after.
        let b0 = [3.0f32, 4.0];
        let a0 = [3.5f32, 2.5];
        let b1 = [1.0f32, 2.0, 2.0];
        let a1 = [1.0f32, f32::NAN, 2.0];
        let exact = super::UpdateStats::measure(2, 0.1, &["a", "b"], &[&b0, &b1], &[&a0, &a1]);
        let mut copy = vec![b0.to_vec(), b1.to_vec()];
        let fast =
            super::UpdateStats::measure_from_copy(2, 0.1, &["a", "b"], &mut copy, &[&a0, &a1]);
        assert_eq!(fast.params[0].weight_norm, 5.0);
        assert!((fast.params[0].update_norm - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(fast.params[0].update_norm, exact.params[0].update_norm);
        assert_eq!(fast.params[1].weight_norm, 3.0);
        assert!(fast.params[1].update_norm.is_nan());
        assert_eq!(fast.params[1].weight_nonfinite, 1);
        assert_eq!(exact.params[1].weight_nonfinite, 1);
        assert_eq!(copy[0], vec![0.5, -1.5]);
        assert_eq!((fast.step, fast.lr), (2, 0.1));
    }

    use super::*;
    use crate::param::WeightStats;

    fn view_of<'a>(
        names: &'a [String],
        shapes: &'a [Vec<usize>],
        ws: &'a [Vec<f32>],
        gs: &'a mut [Vec<f32>],
    ) -> ParamView<'a> {
        let mut v = ParamView::new();
        for (((n, s), w), g) in names.iter().zip(shapes).zip(ws).zip(gs.iter_mut()) {
            v.push(n, s, Role::Weight, w, g).unwrap();
        }
        v
    }

    #[test]
    fn scaling_keeps_each_tensors_figures_true() {
        let names = vec!["a".to_string(), "b".to_string()];
        let shapes = vec![vec![2usize], vec![1]];
        let ws = vec![vec![1.0f32, 1.0], vec![1.0]];
        let mut gs = vec![vec![3.0f32, -4.0], vec![2.0]];
        let mut s = StepStats::measure(&view_of(&names, &shapes, &ws, &mut gs));
        s.scale_param(0, -0.5);
        s.refresh_totals();
        // a: ||(3, -4)|| = 5 -> 2.5, sum of squares 25 -> 6.25, max |g| 4 -> 2.
        assert_eq!(s.params[0].grad_norm, 2.5);
        assert_eq!(s.params[0].grad_sum_sq, 6.25);
        assert_eq!(s.params[0].grad_max_abs, 2.0);
        assert_eq!(s.params[1].grad_norm, 2.0);
        assert_eq!(s.grad_sum_sq, 10.25);
        assert_eq!(s.grad_max_abs, 2.0);
    }

    #[test]
    fn first_nonfinite_names_the_first_bad_tensor() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let shapes = vec![vec![1usize]; 3];
        let ws = vec![vec![1.0f32], vec![f32::INFINITY], vec![1.0]];
        let mut gs = vec![vec![1.0f32], vec![1.0], vec![f32::NAN]];
        let s = StepStats::measure(&view_of(&names, &shapes, &ws, &mut gs));
        assert_eq!(s.first_nonfinite_grad().map(|p| p.name.as_str()), Some("c"));
        assert_eq!(
            s.first_nonfinite_weight().map(|p| p.name.as_str()),
            Some("b")
        );
        let ws = vec![vec![1.0f32]; 3];
        let mut gs = vec![vec![1.0f32]; 3];
        let s = StepStats::measure(&view_of(&names, &shapes, &ws, &mut gs));
        assert!(s.first_nonfinite_grad().is_none() && s.first_nonfinite_weight().is_none());
    }

    #[test]
    fn weight_norm_is_the_l2_norm_of_the_weights() {
        let names = vec!["w".to_string()];
        let shapes = vec![vec![3usize]];
        let ws = vec![vec![2.0f32, 3.0, 6.0]];
        let mut gs = vec![vec![0.0f32; 3]];
        let s = StepStats::measure(&view_of(&names, &shapes, &ws, &mut gs));
        // sqrt(4 + 9 + 36) = 7.
        assert_eq!(s.params[0].weight_sum_sq, 49.0);
        assert_eq!(s.params[0].weight_norm(), 7.0);
    }

    #[test]
    fn global_weight_norm_spans_every_tensor() {
        let names = vec!["a".to_string(), "b".to_string()];
        let shapes = vec![vec![2usize], vec![1]];
        let ws = vec![vec![2.0f32, 3.0], vec![6.0]];
        let mut gs = vec![vec![0.0f32; 2], vec![0.0]];
        let s = StepStats::measure(&view_of(&names, &shapes, &ws, &mut gs));
        // sqrt((4 + 9) + 36) = 7, while each tensor alone is sqrt(13) or 6.
        assert_eq!(s.weight_norm(), 7.0);
    }

    #[test]
    fn known_weight_stats_replace_reading_the_weights() {
        let (shape, w, wb) = (vec![2usize], vec![1.0f32, 2.0], vec![3.0f32, 4.0]);
        let (mut g, mut gb) = (vec![3.0f32, 4.0], vec![0.0f32, 1.0]);
        let mut v = ParamView::new();
        // a figure that the weights themselves would not give, to see which one is used
        let known = WeightStats {
            sum_sq: 100.0,
            nonfinite: 2,
        };
        v.push_with_weight_stats("a", &shape, Role::Weight, &w, &mut g, Some(known))
            .unwrap();
        v.push_with_weight_stats("b", &shape, Role::Bias, &wb, &mut gb, None)
            .unwrap();
        let s = StepStats::measure(&v);
        assert_eq!(s.params[0].weight_sum_sq, 100.0);
        assert_eq!(s.params[0].weight_nonfinite, 2);
        assert_eq!(s.params[0].grad_norm, 5.0);
        assert_eq!(s.params[1].weight_sum_sq, 25.0);
        assert_eq!(s.weight_sum_sq, 125.0);
        assert_eq!(s.weight_nonfinite, 2);
    }

    /// Known gradient statistics replace reading the gradients, and are dropped (here and in
    /// the bridge's flag) as soon as the view lends the gradients mutably; re-measuring a
    /// parameter never uses them.
    #[test]
    fn known_grad_stats_are_used_until_the_grads_are_lent() {
        let shape = vec![2usize];
        let (w, wb) = (vec![1.0f32, 2.0], vec![3.0f32, 4.0]);
        let (mut g, mut gb) = (vec![3.0f32, 4.0], vec![0.0f32, 1.0]);
        // figures the gradients themselves would not give, to see which one is used
        let known = SliceStats {
            sum_sq: 100.0,
            max_abs: 7.0,
            nonfinite: 0,
        };
        let mut lent = false;
        let mut v = ParamView::new();
        v.push_with_known_stats("a", &shape, Role::Weight, &w, &mut g, None, Some(known))
            .unwrap();
        v.push_with_known_stats("b", &shape, Role::Bias, &wb, &mut gb, None, None)
            .unwrap();
        v.watch_grad_writes(&mut lent);
        let s = StepStats::measure(&v);
        assert_eq!(s.params[0].grad_sum_sq, 100.0);
        assert_eq!(s.params[0].grad_max_abs, 7.0);
        assert_eq!(s.params[0].weight_sum_sq, 5.0);
        assert_eq!(s.params[1].grad_sum_sq, 1.0);
        // reading the parameters keeps them
        assert!(v.params()[0].known_grad_stats.is_some());
        let mut again = s.clone();
        again.remeasure_param(0, &v);
        assert_eq!(
            again.params[0].grad_sum_sq, 25.0,
            "re-measuring reads the gradients"
        );
        v.iter_mut().for_each(|p| p.grads[0] = 6.0);
        assert!(v.iter().all(|p| p.known_grad_stats.is_none()));
        let s = StepStats::measure(&v);
        assert_eq!(s.params[0].grad_sum_sq, 52.0);
        assert_eq!(s.params[1].grad_sum_sq, 37.0);
        drop(v);
        assert!(lent, "the bridge was told");
        let mut lent = false;
        let mut v = ParamView::new();
        v.push_with_known_stats("a", &shape, Role::Weight, &w, &mut g, None, Some(known))
            .unwrap();
        v.watch_grad_writes(&mut lent);
        let _ = v.params_mut();
        assert!(v.params()[0].known_grad_stats.is_none());
        drop(v);
        assert!(lent);
    }

    #[test]
    fn hand_computed_global_and_per_param() {
        let names = vec!["a".to_string(), "b".to_string()];
        let shapes = vec![vec![2], vec![1]];
        let ws = vec![vec![1.0, 2.0], vec![2.0]];
        let mut gs = vec![vec![3.0, 4.0], vec![12.0]];
        let v = view_of(&names, &shapes, &ws, &mut gs);
        let s = StepStats::measure(&v);
        assert_eq!(s.params[0].grad_norm, 5.0);
        assert_eq!(s.params[1].grad_norm, 12.0);
        assert_eq!(s.grad_norm, 13.0);
        assert_eq!(s.grad_max_abs, 12.0);
        assert_eq!(s.weight_sum_sq, 9.0);
        assert_eq!(s.grad_nonfinite, 0);
        let mut t = s.clone();
        t.scale_all(0.5);
        assert_eq!(t.grad_norm, 6.5);
        assert_eq!(t.params[0].grad_max_abs, 2.0);
    }

    #[test]
    fn measure_into_reuses_and_tracks_nonfinite() {
        let names = vec!["a".to_string()];
        let shapes = vec![vec![3]];
        let ws = vec![vec![f32::NAN, 0.0, 0.0]];
        let mut gs = vec![vec![1.0, f32::INFINITY, 0.0]];
        let v = view_of(&names, &shapes, &ws, &mut gs);
        let mut s = StepStats::default();
        s.measure_into(&v);
        s.measure_into(&v);
        assert_eq!(s.params.len(), 1);
        assert_eq!(s.grad_nonfinite, 1);
        assert_eq!(s.weight_nonfinite, 1);
        assert_eq!(s.grad_norm, f64::INFINITY);
        assert_eq!(s.first_nonfinite_grad().map(|p| p.name.as_str()), Some("a"));
    }

    #[test]
    fn update_ratio() {
        let u = UpdateStats::measure(
            1,
            0.1,
            &["w", "b"],
            &[&[3.0, 4.0], &[0.0]],
            &[&[3.0, 4.5], &[0.0]],
        );
        assert!((u.params[0].ratio() - 0.1).abs() < 1e-12);
        assert_eq!(u.params[1].ratio(), 0.0);
        assert_eq!(u.max_ratio().map(|(n, _)| n), Some("w"));
    }

    /// Non-finite weights after the update are counted per tensor (NaN and both infinities),
    /// not the finite ones, and not those before it.
    #[test]
    fn update_counts_the_nonfinite_new_weights() {
        let u = UpdateStats::measure(
            1,
            0.1,
            &["a", "b"],
            &[&[1.0, f32::NAN, 2.0, 3.0], &[f32::INFINITY, 1.0]],
            &[&[f32::NAN, 1.0, f32::NEG_INFINITY, 4.0], &[0.5, 1.0]],
        );
        assert_eq!(u.params[0].weight_nonfinite, 2);
        assert_eq!(u.params[1].weight_nonfinite, 0);
    }

    /// The largest ratio wins wherever it stands; a tie keeps the first tensor, and a NaN
    /// ratio never wins.
    #[test]
    fn max_ratio_finds_the_largest_anywhere() {
        let u = UpdateStats::measure(
            1,
            0.1,
            &["a", "b", "c", "d"],
            // ratios: |5 - 4| / 4 = 0.25, |3 - 2| / 2 = 0.5, NaN, |1 - 2| / 2 = 0.5
            &[&[4.0], &[2.0], &[1.0], &[2.0]],
            &[&[5.0], &[3.0], &[f32::NAN], &[1.0]],
        );
        assert_eq!(u.max_ratio(), Some(("b", 0.5)));
        assert!(u.params[2].ratio().is_nan());
    }
}
