//! The persistent parameter store: every weight and gradient buffer of a model, allocated
//! once, lent to gradguard-core's [`ParamView`] without copying.
//!
//! Weights are `Arc<Vec<f32>>` so that a taped forward pass can keep a cheap handle for its
//! backward; gradients are `Arc<Mutex<Vec<f32>>>` written by the backward ops. Between steps
//! (after the backward ran, its closures dropped) the store holds the only handles, so the
//! view borrows the buffers directly.

use std::sync::{Arc, Mutex};

use gradguard_core::{ParamInfo, ParamView, Role, WeightStats};

use crate::error::ModelError;

/// Mutable weights and gradients of one tensor.
pub(crate) type WeightsAndGrads<'a> = (&'a mut Vec<f32>, &'a mut Vec<f32>);

/// One parameter tensor: description, weights, gradients.
#[derive(Debug)]
pub(crate) struct Slot {
    pub info: ParamInfo,
    pub w: Arc<Vec<f32>>,
    pub g: Arc<Mutex<Vec<f32>>>,
    /// Statistics of the current weights measured by the optimiser pass that wrote them;
    /// `None` once anything else may have changed them. Lent to the view, so that the step
    /// statistics read only the gradients.
    pub known: Option<WeightStats>,
}

/// Every parameter of a model, in a stable order.
#[derive(Debug, Default)]
pub(crate) struct ParamStore {
    pub slots: Vec<Slot>,
}

impl ParamStore {
    /// Adds a parameter with initial weights; returns its index.
    pub fn add(&mut self, name: String, shape: Vec<usize>, role: Role, w: Vec<f32>) -> usize {
        debug_assert_eq!(w.len(), shape.iter().product::<usize>());
        let g = vec![0.0; w.len()];
        self.slots.push(Slot {
            info: ParamInfo { name, shape, role },
            w: Arc::new(w),
            g: Arc::new(Mutex::new(g)),
            known: None,
        });
        self.slots.len() - 1
    }

    /// Sets every gradient to zero.
    pub fn zero_grads(&mut self) {
        for s in &mut self.slots {
            match Arc::get_mut(&mut s.g) {
                Some(m) => m.get_mut().unwrap_or_else(|e| e.into_inner()).fill(0.0),
                None => s.g.lock().unwrap_or_else(|e| e.into_inner()).fill(0.0),
            }
        }
    }

    /// Mutable weights of parameter `i` (copied first only if a pass still holds a handle).
    /// Forgets the known statistics of those weights.
    pub fn weights_mut(&mut self, i: usize) -> &mut Vec<f32> {
        self.slots[i].known = None;
        Arc::make_mut(&mut self.slots[i].w)
    }

    /// The gradient buffer of parameter `i`, exclusively.
    pub fn grads_mut(&mut self, i: usize) -> Result<&mut Vec<f32>, ModelError> {
        let name = self.slots[i].info.name.clone();
        Arc::get_mut(&mut self.slots[i].g)
            .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
            .ok_or_else(|| {
                ModelError::Internal(format!("gradient of `{name}` is still held by a pass"))
            })
    }

    /// Records the statistics of parameter `i`'s weights, as just measured by the pass that
    /// wrote them (call after [`ParamStore::pairs_mut`]).
    pub fn set_weight_stats(&mut self, i: usize, stats: WeightStats) {
        if let Some(s) = self.slots.get_mut(i) {
            s.known = Some(stats);
        }
    }

    /// Weights and gradients of every parameter, for the optimiser. Forgets the known weight
    /// statistics (see [`ParamStore::set_weight_stats`]).
    pub fn pairs_mut(&mut self) -> Result<Vec<WeightsAndGrads<'_>>, ModelError> {
        let mut out = Vec::with_capacity(self.slots.len());
        for s in &mut self.slots {
            s.known = None;
            let name = &s.info.name;
            let g = Arc::get_mut(&mut s.g)
                .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
                .ok_or_else(|| {
                    ModelError::Internal(format!("gradient of `{name}` is still held by a pass"))
                })?;
            debug_assert_eq!(
                Arc::strong_count(&s.w),
                1,
                "a pass still holds the weights of `{name}`"
            );
            out.push((Arc::make_mut(&mut s.w), g));
        }
        Ok(out)
    }

    /// A zero-copy view of every parameter.
    pub fn view(&mut self) -> Result<ParamView<'_>, ModelError> {
        let mut v = ParamView::with_capacity(self.slots.len());
        for s in &mut self.slots {
            let name = &s.info.name;
            let g = Arc::get_mut(&mut s.g)
                .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
                .ok_or_else(|| {
                    ModelError::Internal(format!("gradient of `{name}` is still held by a pass"))
                })?;
            v.push_with_weight_stats(&s.info.name, &s.info.shape, s.info.role, &s.w, g, s.known)
                .map_err(|e| ModelError::Internal(e.to_string()))?;
        }
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
