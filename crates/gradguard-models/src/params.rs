//! The persistent parameter store: every weight and gradient buffer of a model, allocated
//! once, lent to gradguard-core's [`ParamView`] without copying.
//!
//! Weights are `Arc<Vec<f32>>` so that a taped forward pass can keep a cheap handle for its
//! backward; gradients are `Arc<Mutex<GradBuf>>` written by the backward ops. Between steps
//! (after the backward ran, its closures dropped) the store holds the only handles, so the
//! view borrows the buffers directly.
//!
//! Each gradient buffer carries the statistics of its values when they are known: zeroing
//! knows them (all zero), and the backward ops measure each gradient tensor in their last
//! write of it ([`GradBuf::write_measured`]). Every other way to write the values
//! ([`GradBuf::values_mut`], the optimiser's [`ParamStore::pairs_mut`], a view that lent the
//! gradients mutably) forgets them, so the view never carries stale statistics.

use std::sync::{Arc, Mutex};

use gradguard_core::kernels::SliceStats;
use gradguard_core::{ParamInfo, ParamView, Role, WeightStats};

use crate::error::ModelError;

/// Mutable weights and gradients of one tensor.
pub(crate) type WeightsAndGrads<'a> = (&'a mut Vec<f32>, &'a mut Vec<f32>);

/// A gradient buffer and, when known, the statistics of its values (exactly what
/// `slice_stats` gives on them).
#[derive(Debug)]
pub(crate) struct GradBuf {
    values: Vec<f32>,
    known: Option<SliceStats>,
}

impl GradBuf {
    /// `n` zero gradients (whose statistics are known: all zero).
    pub fn zeros(n: usize) -> Self {
        GradBuf {
            values: vec![0.0; n],
            known: Some(SliceStats::default()),
        }
    }

    /// The gradients.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The gradients, to write in any way: forgets their statistics.
    pub fn values_mut(&mut self) -> &mut Vec<f32> {
        self.known = None;
        &mut self.values
    }

    /// Lets `write` change the gradients and return the statistics of ALL the values after
    /// its write (as `slice_stats` would give them), which are kept until the next write.
    pub fn write_measured(&mut self, write: impl FnOnce(&mut [f32]) -> SliceStats) {
        self.known = None;
        let stats = write(&mut self.values);
        self.known = Some(stats);
    }

    /// Sets every gradient to zero (statistics known: all zero).
    pub fn zero(&mut self) {
        self.values.fill(0.0);
        self.known = Some(SliceStats::default());
    }

    /// The statistics of the gradients, if known.
    pub fn known(&self) -> Option<SliceStats> {
        self.known
    }

    /// Forgets the statistics (the values may have been written elsewhere).
    pub fn forget(&mut self) {
        self.known = None;
    }
}

/// One parameter tensor: description, weights, gradients.
#[derive(Debug)]
pub(crate) struct Slot {
    pub info: ParamInfo,
    pub w: Arc<Vec<f32>>,
    pub g: Arc<Mutex<GradBuf>>,
    /// Statistics of the current weights measured by the optimiser pass that wrote them;
    /// `None` once anything else may have changed them. Lent to the view, so that the step
    /// statistics read only the gradients.
    pub known: Option<WeightStats>,
}

/// Every parameter of a model, in a stable order.
#[derive(Debug, Default)]
pub(crate) struct ParamStore {
    pub slots: Vec<Slot>,
    /// Raised by a view that lent the gradients mutably (see
    /// [`ParamView::watch_grad_writes`]): every gradient statistic is then forgotten.
    grads_lent: bool,
}

fn exclusive<'a>(
    name: &str,
    g: &'a mut Arc<Mutex<GradBuf>>,
) -> Result<&'a mut GradBuf, ModelError> {
    Arc::get_mut(g)
        .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
        .ok_or_else(|| {
            ModelError::Internal(format!("gradient of `{name}` is still held by a pass"))
        })
}

/// Adds `g` into `dst` in chunks, measuring each chunk right after it is written; returns the
/// statistics of all of `dst` (exactly `slice_stats(dst)`).
pub(crate) fn add_measured(dst: &mut [f32], g: &[f32]) -> SliceStats {
    // a whole number of the kernels' blocks, small enough to stay in L1
    const CHUNK: usize = 4096;
    let mut stream = gradguard_core::kernels::StatsStream::new();
    let n = dst.len().min(g.len());
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        for (a, b) in dst[start..end].iter_mut().zip(&g[start..end]) {
            *a += b;
        }
        stream.advance(&dst[..end]);
        start = end;
    }
    stream.finish(dst)
}

impl ParamStore {
    /// Adds a parameter with initial weights; returns its index.
    pub fn add(&mut self, name: String, shape: Vec<usize>, role: Role, w: Vec<f32>) -> usize {
        debug_assert_eq!(w.len(), shape.iter().product::<usize>());
        let g = GradBuf::zeros(w.len());
        self.slots.push(Slot {
            info: ParamInfo { name, shape, role },
            w: Arc::new(w),
            g: Arc::new(Mutex::new(g)),
            known: None,
        });
        self.slots.len() - 1
    }

    /// Sets every gradient to zero (their statistics are then known again).
    pub fn zero_grads(&mut self) {
        for s in &mut self.slots {
            match Arc::get_mut(&mut s.g) {
                Some(m) => m.get_mut().unwrap_or_else(|e| e.into_inner()).zero(),
                None => s.g.lock().unwrap_or_else(|e| e.into_inner()).zero(),
            }
        }
        self.grads_lent = false;
    }

    /// Mutable weights of parameter `i` (copied first only if a pass still holds a handle).
    /// Forgets the known statistics of those weights.
    pub fn weights_mut(&mut self, i: usize) -> &mut Vec<f32> {
        self.slots[i].known = None;
        Arc::make_mut(&mut self.slots[i].w)
    }

    /// The gradient buffer of parameter `i`, exclusively (its values to write through
    /// [`GradBuf::values_mut`] or [`GradBuf::write_measured`]).
    pub fn grad_buf_mut(&mut self, i: usize) -> Result<&mut GradBuf, ModelError> {
        let s = &mut self.slots[i];
        exclusive(&s.info.name, &mut s.g)
    }

    /// The gradients of parameter `i`, exclusively, to write in any way (forgets their
    /// statistics).
    #[cfg(test)]
    pub fn grads_mut(&mut self, i: usize) -> Result<&mut Vec<f32>, ModelError> {
        Ok(self.grad_buf_mut(i)?.values_mut())
    }

    /// Records the statistics of parameter `i`'s weights, as just measured by the pass that
    /// wrote them (call after [`ParamStore::pairs_mut`]).
    pub fn set_weight_stats(&mut self, i: usize, stats: WeightStats) {
        if let Some(s) = self.slots.get_mut(i) {
            s.known = Some(stats);
        }
    }

    /// Weights and gradients of every parameter, for the optimiser. Forgets the known weight
    /// and gradient statistics (see [`ParamStore::set_weight_stats`], [`GradBuf`]).
    pub fn pairs_mut(&mut self) -> Result<Vec<WeightsAndGrads<'_>>, ModelError> {
        let mut out = Vec::with_capacity(self.slots.len());
        for s in &mut self.slots {
            s.known = None;
            let name = &s.info.name;
            let g = exclusive(name, &mut s.g)?.values_mut();
            debug_assert_eq!(
                Arc::strong_count(&s.w),
                1,
                "a pass still holds the weights of `{name}`"
            );
            out.push((Arc::make_mut(&mut s.w), g));
        }
        Ok(out)
    }

    /// A zero-copy view of every parameter, with the statistics of the weights and the
    /// gradients that the store knows (none of the gradients' once an earlier view lent them
    /// mutably). The view raises the store's flag when it lends the gradients mutably.
    pub fn view(&mut self) -> Result<ParamView<'_>, ModelError> {
        let ParamStore { slots, grads_lent } = self;
        let mut v = ParamView::with_capacity(slots.len());
        for s in slots.iter_mut() {
            let buf = exclusive(&s.info.name, &mut s.g)?;
            if *grads_lent {
                buf.forget();
            }
            let known = buf.known();
            let g = &mut buf.values;
            v.push_with_known_stats(
                &s.info.name,
                &s.info.shape,
                s.info.role,
                &s.w,
                g,
                s.known,
                known,
            )
            .map_err(|e| ModelError::Internal(e.to_string()))?;
        }
        *grads_lent = false;
        v.watch_grad_writes(grads_lent);
        Ok(v)
    }

    /// The descriptions of every parameter.
    pub fn infos(&self) -> Vec<ParamInfo> {
        self.slots.iter().map(|s| s.info.clone()).collect()
    }

    /// Copies of every weight buffer.
    pub fn weights_snapshot(&self) -> Vec<Vec<f32>> {
        self.slots.iter().map(|s| s.w.as_ref().clone()).collect()
    }
}
