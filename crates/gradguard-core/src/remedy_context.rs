//! What a remedy sees and may change at one step, and the only ways it may change it.
//!
//! A remedy never holds the gradients and the step's statistics apart: every edit goes through
//! a [`RemedyContext`] method that keeps [`StepStats`] exact and marks the step as changed
//! itself. A remedy that forgets nothing cannot desynchronise the statistics every later
//! remedy, detector and report reads.
//!
//! | edit | how the statistics stay true |
//! |---|---|
//! | [`RemedyContext::scale_all`] | analytically (each norm times the factor really applied), or re-measured when a value is non-finite |
//! | [`RemedyContext::scale_param`] | the same, for one tensor |
//! | [`RemedyContext::edit_param`] | the tensor is re-measured when the edit guard drops |
//! | [`RemedyContext::edit_each`] | per tensor: kept, scaled, re-measured, or the statistics the remedy's fused kernel returned (checked in debug builds) |
//! | [`RemedyContext::add_penalty`] | a penalty term beside the loss (its gradient is an edit above) |
//! | [`RemedyContext::framework_edit`] | the framework that keeps the gradients applies a typed edit and updates them |
//!
//! When another framework keeps the gradients ([`GradientFramework`], e.g. CUDA tensors in
//! PyTorch), `scale_all` and `scale_param` go to it; typed edits ([`GradEdit`]) go to it
//! through [`RemedyContext::framework_edit`]; `edit_each` and `edit_param`, which lend the
//! values, are only possible when they are on the host ([`RemedyContext::values_on_host`]):
//! otherwise they do nothing and the step stops with an error naming the remedy.

use crate::framework::{EditOutcome, GradEdit, GradientFramework};
use crate::kernels::{applied_factor, scale, SliceStats};
use crate::param::{Param, ParamView};
use crate::sign::Finding;
use crate::stats::{ParamStats, StepStats};

/// What a remedy sees and may change at one step (see the [module](self) for the edits).
pub struct RemedyContext<'c, 'v> {
    step: u64,
    loss: f64,
    view: &'c mut ParamView<'v>,
    stats: &'c mut StepStats,
    findings: &'c [Finding],
    penalty: f64,
    changed: bool,
    framework: Option<&'c mut dyn GradientFramework>,
    problem: Option<String>,
}

/// What [`RemedyContext::edit_each`]'s closure did to one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TensorEdit {
    /// Nothing: the gradients are as they were.
    Keep,
    /// Multiply the tensor's gradients by this factor. The closure leaves the gradients
    /// untouched; the context scales them with [`scale`] and updates the statistics.
    Scale(f64),
    /// The closure changed the gradients: the context re-measures the tensor.
    Edited,
    /// The closure changed the gradients and returns the statistics of what it wrote, measured
    /// in the same pass (e.g. a clamp that measures as it writes). Debug builds check them
    /// against a fresh measurement.
    Measured(SliceStats),
}

impl<'c, 'v> RemedyContext<'c, 'v> {
    /// A context for `step` with no findings. `stats` must be the statistics of `view`
    /// ([`StepStats::measure_into`]).
    pub fn new(
        step: u64,
        loss: f64,
        view: &'c mut ParamView<'v>,
        stats: &'c mut StepStats,
    ) -> Self {
        RemedyContext {
            step,
            loss,
            view,
            stats,
            findings: &[],
            penalty: 0.0,
            changed: false,
            framework: None,
            problem: None,
        }
    }

    /// The same context with the framework that keeps the gradients (see
    /// [`crate::framework`]). Without one, every edit runs on the view's host slices.
    pub fn with_framework(mut self, framework: &'c mut dyn GradientFramework) -> Self {
        self.framework = Some(framework);
        self
    }

    /// Whether the gradient values are host slices in [`RemedyContext::view`] (always, unless
    /// a framework keeps them elsewhere, e.g. on a GPU).
    pub fn values_on_host(&self) -> bool {
        self.framework.as_ref().is_none_or(|f| f.values_on_host())
    }

    /// Hands `edit` to the framework that keeps the gradients. `Some(x)`: it was handled
    /// (applied: `x` is the factor applied, or `sum |w|` for
    /// [`GradEdit::AddPenaltyGrad`]; refused: 1, the refusal recorded for the loop, which
    /// stops the step); `None`: no framework, or one that leaves this edit to the host
    /// kernels, so the caller applies it to the view itself.
    pub fn framework_edit(&mut self, edit: GradEdit) -> Option<f64> {
        let fw = self.framework.as_deref_mut()?;
        match fw.edit(&edit, self.stats) {
            Ok(EditOutcome::Applied { factor }) => {
                self.changed = true;
                Some(factor)
            }
            Ok(EditOutcome::Penalised { sum_abs }) => {
                self.changed = true;
                Some(sum_abs)
            }
            Ok(EditOutcome::Unchanged) => Some(1.0),
            Ok(EditOutcome::ScaleOnHost { factor }) if fw.values_on_host() => {
                Some(self.host_scale_all(factor))
            }
            Ok(EditOutcome::Declined) if fw.values_on_host() => None,
            Ok(EditOutcome::Declined | EditOutcome::ScaleOnHost { .. }) => {
                self.problem = Some(format!(
                    "the framework left the edit {edit:?} to the host, but the gradients are not on the host"
                ));
                Some(1.0)
            }
            Err(e) => {
                self.problem = Some(e.0);
                Some(1.0)
            }
        }
    }

    /// Why the last remedy's edit could not be carried out (the framework refused it, or the
    /// remedy asked for values that are not on the host), and clears it. The loop stops the
    /// step with it.
    pub fn take_problem(&mut self) -> Option<String> {
        self.problem.take()
    }

    fn values_not_on_host(&mut self, what: &str) {
        self.problem = Some(format!(
            "it {what}, but the gradients are kept by a framework off the host (e.g. CUDA tensors); this remedy runs on host (CPU) gradients only"
        ));
    }

    /// The same context with what the detectors found at this step.
    pub fn with_findings(mut self, findings: &'c [Finding]) -> Self {
        self.findings = findings;
        self
    }

    /// The step (optimiser updates counted from 1).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The step's training loss (before any penalty).
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The step's statistics, true for the gradients as they are now.
    pub fn stats(&self) -> &StepStats {
        self.stats
    }

    /// The parameters, read-only (edit them through the context's methods).
    pub fn view(&self) -> &ParamView<'v> {
        self.view
    }

    /// What the detectors found at this step.
    pub fn findings(&self) -> &[Finding] {
        self.findings
    }

    /// The penalty terms (L1/L2) remedies added to the loss this step.
    pub fn penalty(&self) -> f64 {
        self.penalty
    }

    /// Whether a gradient changed since the last [`RemedyContext::take_changed`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Whether a gradient changed since the last call, and clears the mark (the loop calls it
    /// after each remedy to know which remedies acted).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Multiplies every gradient by `c` ([`scale`]: in f32, or in f64 for a factor below f32's
    /// normal range). Returns the factor really applied ([`applied_factor`]).
    ///
    /// The statistics scale analytically (norms by |c|, sums of squares by c²) when every
    /// gradient and `c` are finite, and are re-measured otherwise.
    pub fn scale_all(&mut self, c: f64) -> f64 {
        if let Some(applied) = self.framework_edit(GradEdit::ScaleAll { factor: c }) {
            return applied;
        }
        self.host_scale_all(c)
    }

    fn host_scale_all(&mut self, c: f64) -> f64 {
        for p in self.view.iter_mut() {
            scale(p.grads, c);
        }
        let applied = applied_factor(c);
        if self.stats.grads_finite() && c.is_finite() {
            self.stats.scale_all(applied);
        } else {
            for i in 0..self.view.len() {
                self.stats.remeasure_param(i, self.view);
            }
        }
        self.changed = true;
        applied
    }

    /// Multiplies the gradients of tensor `index` by `c`, as [`RemedyContext::scale_all`] does
    /// for every tensor. Returns the factor applied; 1 (and nothing changed) for an index out
    /// of range.
    pub fn scale_param(&mut self, index: usize, c: f64) -> f64 {
        if index >= self.param_count() {
            return 1.0;
        }
        let applied = self.scale_one(index, c);
        self.stats.refresh_totals();
        applied
    }

    fn scale_one(&mut self, index: usize, c: f64) -> f64 {
        let edit = GradEdit::ScaleParam { index, factor: c };
        if let Some(applied) = self.framework_edit(edit) {
            return applied;
        }
        scale(self.view.params_mut()[index].grads, c);
        let applied = applied_factor(c);
        if self.stats.params[index].grad_nonfinite == 0 && c.is_finite() {
            self.stats.scale_param(index, applied);
        } else {
            let s = &mut self.stats.params[index];
            StepStats::fill_param(s, &self.view.params()[index]);
        }
        self.changed = true;
        applied
    }

    /// Lends tensor `index` for an arbitrary edit of its gradients; the tensor is re-measured
    /// and the step marked changed when the guard drops (so edit, then let it go). `None` for
    /// an index out of range.
    pub fn edit_param(&mut self, index: usize) -> Option<ParamEdit<'_, 'v>> {
        if !self.values_on_host() {
            self.values_not_on_host("edits one tensor's gradient values");
            return None;
        }
        if index >= self.view.len().min(self.stats.params.len()) {
            return None;
        }
        Some(ParamEdit {
            index,
            view: &mut *self.view,
            stats: &mut *self.stats,
            changed: &mut self.changed,
        })
    }

    /// Visits every tensor with its statistics; the closure says what it did
    /// ([`TensorEdit`]), and the context keeps the statistics true accordingly, refreshing
    /// the totals once at the end. The way to edit many tensors in one pass.
    pub fn edit_each(&mut self, mut f: impl FnMut(&ParamStats, &mut Param<'v>) -> TensorEdit) {
        if !self.values_on_host() {
            self.values_not_on_host("edits gradient values");
            return;
        }
        let n = self.view.len().min(self.stats.params.len());
        let mut any = false;
        for i in 0..n {
            let edit = f(&self.stats.params[i], &mut self.view.params_mut()[i]);
            match edit {
                TensorEdit::Keep => continue,
                TensorEdit::Scale(c) => {
                    self.scale_one(i, c);
                }
                TensorEdit::Edited => {
                    StepStats::fill_param(&mut self.stats.params[i], &self.view.params()[i]);
                }
                TensorEdit::Measured(m) => {
                    debug_check_measured(&m, self.view.params()[i].grads);
                    let s = &mut self.stats.params[i];
                    s.grad_sum_sq = m.sum_sq;
                    s.grad_norm = m.sum_sq.sqrt();
                    s.grad_max_abs = m.max_abs as f64;
                    s.grad_nonfinite = m.nonfinite;
                }
            }
            any = true;
        }
        if any {
            self.changed = true;
            self.stats.refresh_totals();
        }
    }

    /// Multiplies the gradients of every tensor for which `factor` returns `Some(c)` by `c`
    /// (as [`RemedyContext::scale_param`]), refreshing the totals once. Reads statistics
    /// only, so it also runs where the values are not on the host.
    pub fn scale_each(&mut self, mut factor: impl FnMut(&ParamStats) -> Option<f64>) {
        let mut any = false;
        for i in 0..self.param_count() {
            if let Some(c) = factor(&self.stats.params[i]) {
                self.scale_one(i, c);
                any = true;
            }
        }
        if any {
            self.stats.refresh_totals();
        }
    }

    /// How many tensors the step has (the statistics' count; the view's too when the values
    /// are on the host).
    pub fn param_count(&self) -> usize {
        if self.values_on_host() {
            self.view.len().min(self.stats.params.len())
        } else {
            self.stats.params.len()
        }
    }

    /// Adds a penalty term (e.g. `l2 * Σw²`) to the step's loss as reported beside it. The
    /// penalty's gradient is a separate edit of the gradients.
    pub fn add_penalty(&mut self, value: f64) {
        self.penalty += value;
    }
}

/// A tensor lent for editing by [`RemedyContext::edit_param`]; re-measured when dropped.
pub struct ParamEdit<'e, 'v> {
    index: usize,
    view: &'e mut ParamView<'v>,
    stats: &'e mut StepStats,
    changed: &'e mut bool,
}

impl<'v> std::ops::Deref for ParamEdit<'_, 'v> {
    type Target = Param<'v>;
    fn deref(&self) -> &Param<'v> {
        &self.view.params()[self.index]
    }
}

impl<'v> std::ops::DerefMut for ParamEdit<'_, 'v> {
    fn deref_mut(&mut self) -> &mut Param<'v> {
        &mut self.view.params_mut()[self.index]
    }
}

impl Drop for ParamEdit<'_, '_> {
    fn drop(&mut self) {
        self.stats.remeasure_param(self.index, self.view);
        *self.changed = true;
    }
}

/// In debug builds, checks that statistics a fused kernel returned match a fresh measurement
/// (same non-finite count and max |g|, sum of squares within the kernels' error).
#[inline]
fn debug_check_measured(m: &SliceStats, grads: &[f32]) {
    if cfg!(debug_assertions) {
        let fresh = crate::kernels::slice_stats(grads);
        let close = |a: f64, b: f64| {
            a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 2e-6 * a.abs().max(b.abs())
        };
        debug_assert!(
            m.nonfinite == fresh.nonfinite
                && (m.max_abs == fresh.max_abs || m.nonfinite > 0)
                && (close(m.sum_sq, fresh.sum_sq) || m.nonfinite > 0),
            "a remedy's fused kernel returned statistics {m:?} that do not match its gradients ({fresh:?})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::Role;

    const S2: [usize; 1] = [2];
    const S3: [usize; 1] = [3];
    const S1: [usize; 1] = [1];

    fn shape(n: usize) -> &'static [usize] {
        match n {
            1 => &S1,
            2 => &S2,
            _ => &S3,
        }
    }

    fn view<'a>(
        g1: &'a mut [f32],
        g2: &'a mut [f32],
        w1: &'a [f32],
        w2: &'a [f32],
    ) -> ParamView<'a> {
        let mut v = ParamView::new();
        v.push("a", shape(g1.len()), Role::Weight, w1, g1)
            .expect("shape");
        v.push("b", shape(g2.len()), Role::Bias, w2, g2)
            .expect("shape");
        v
    }

    fn assert_true_stats(ctx: &RemedyContext<'_, '_>) {
        let fresh = StepStats::measure(ctx.view());
        assert_eq!(ctx.stats().grad_nonfinite, fresh.grad_nonfinite);
        assert!(
            (ctx.stats().grad_sum_sq - fresh.grad_sum_sq).abs()
                <= 1e-9 * fresh.grad_sum_sq.max(1.0)
        );
        assert_eq!(ctx.stats().grad_max_abs, fresh.grad_max_abs);
    }

    #[test]
    fn every_edit_keeps_the_statistics_true_and_marks_the_change() {
        let (mut g1, mut g2) = (vec![3.0f32, 4.0], vec![1.0f32, -2.0, 2.0]);
        let (w1, w2) = (vec![1.0f32; 2], vec![0.5f32; 3]);
        let mut v = view(&mut g1, &mut g2, &w1, &w2);
        let mut stats = StepStats::measure(&v);
        let mut ctx = RemedyContext::new(1, 0.5, &mut v, &mut stats);
        assert!(!ctx.changed());
        // ||g|| = sqrt(25 + 9) = sqrt(34); scaling by 0.5 gives 0.5 * sqrt(34).
        assert_eq!(ctx.scale_all(0.5), 0.5);
        assert!((ctx.stats().grad_norm - 0.5 * 34f64.sqrt()).abs() < 1e-12);
        assert!(ctx.take_changed());
        assert!(!ctx.changed());
        assert_true_stats(&ctx);
        // One tensor: a = [1.5, 2] times 2 = [3, 4] (sum of squares 25); b = [0.5, -1, 1] (2.25).
        ctx.scale_param(0, 2.0);
        assert_eq!(ctx.stats().grad_sum_sq, 25.0 + 2.25);
        assert_true_stats(&ctx);
        // An arbitrary edit is re-measured when the guard drops.
        {
            let mut e = ctx.edit_param(1).expect("in range");
            e.grads[0] = 10.0;
        }
        assert_eq!(ctx.stats().grad_max_abs, 10.0);
        assert_eq!(ctx.stats().grad_sum_sq, 25.0 + 100.0 + 1.0 + 1.0);
        assert!(ctx.take_changed());
        // Per tensor in one pass: keep a, zero b and report what was written.
        ctx.edit_each(|_, p| {
            if p.name == "b" {
                p.grads.iter_mut().for_each(|g| *g = 0.0);
                TensorEdit::Measured(crate::kernels::slice_stats(p.grads))
            } else {
                TensorEdit::Keep
            }
        });
        assert_eq!(ctx.stats().grad_sum_sq, 25.0);
        assert!(ctx.changed());
        assert_true_stats(&ctx);
        ctx.add_penalty(0.25);
        ctx.add_penalty(0.5);
        assert_eq!(ctx.penalty(), 0.75);
        assert!(ctx.edit_param(2).is_none());
        assert_eq!(ctx.scale_param(7, 0.1), 1.0);
    }

    #[test]
    fn scaling_non_finite_gradients_re_measures() {
        let (mut g1, mut g2) = (vec![f32::INFINITY, 1.0], vec![2.0f32]);
        let (w1, w2) = (vec![1.0f32; 2], vec![0.5f32]);
        let mut v = view(&mut g1, &mut g2, &w1, &w2);
        let mut stats = StepStats::measure(&v);
        let mut ctx = RemedyContext::new(3, f64::NAN, &mut v, &mut stats);
        // inf * 0 is NaN (IEEE, as PyTorch): counted, not tracked analytically.
        ctx.scale_all(0.0);
        assert_eq!(ctx.stats().grad_nonfinite, 1);
        assert!(ctx.stats().grad_sum_sq.is_nan());
        assert_eq!(ctx.stats().params[1].grad_sum_sq, 0.0);
        ctx.edit_each(|s, p| {
            if s.grad_nonfinite > 0 {
                p.grads.iter_mut().for_each(|g| *g = 0.0);
                TensorEdit::Edited
            } else {
                TensorEdit::Scale(2.0)
            }
        });
        assert_eq!(ctx.stats().grad_nonfinite, 0);
        assert_eq!(ctx.stats().grad_sum_sq, 0.0);
        assert_eq!(ctx.step(), 3);
    }
}
