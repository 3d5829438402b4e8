//! What a remedy is, as typed data: the [`RemedyCapabilities`] a [`Remedy`](crate::Remedy)
//! declares, so other crates decide by what a plugin says of itself instead of by lists of
//! kind names.
//!
//! The diagnosis reads [`RemedyCapabilities::clips`] (carried on every
//! [`ActionRecord`](crate::ActionRecord)) to tell "clipping was active and the run still
//! exploded" from "nothing clipped"; `gradguard grads` reads
//! [`RemedyCapabilities::needs_weights`] to refuse a remedy that needs weights on a dump
//! without them.
//!
//! A remedy in another crate declares itself with the builder methods (the struct is
//! `#[non_exhaustive]`, so new capabilities can be added without breaking it):
//!
//! ```
//! use gradguard_core::{ClipScope, RemedyCapabilities};
//! let caps = RemedyCapabilities::NONE
//!     .clipping(ClipScope::PerUnit)
//!     .reading_weights();
//! assert_eq!(caps.clips, Some(ClipScope::PerUnit));
//! assert!(caps.needs_weights && !caps.penalises);
//! ```

use serde::{Deserialize, Serialize};

/// Which gradients a clipping remedy bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipScope {
    /// The norm of all gradients together (PyTorch's `clip_grad_norm_`; `clip_global_norm`,
    /// `autoclip`, `zclip`).
    GlobalNorm,
    /// Each tensor's norm on its own (Keras' `clipnorm`; `clip_norm`).
    PerTensor,
    /// Each unit's (output row's) norm, against its weights' norm (`agc`).
    PerUnit,
    /// Each value on its own (`clip_value`).
    PerValue,
}

impl ClipScope {
    /// The snake_case name, as written in events.
    pub fn as_str(self) -> &'static str {
        match self {
            ClipScope::GlobalNorm => "global_norm",
            ClipScope::PerTensor => "per_tensor",
            ClipScope::PerUnit => "per_unit",
            ClipScope::PerValue => "per_value",
        }
    }
}

/// What a remedy does, declared by [`Remedy::capabilities`](crate::Remedy::capabilities).
/// The default ([`RemedyCapabilities::NONE`]) declares nothing: no clipping, no weights read,
/// no penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemedyCapabilities {
    /// Which gradients it bounds, when it is a clipping remedy.
    pub clips: Option<ClipScope>,
    /// Whether it reads the weights (e.g. `agc`, the L1/L2 penalties): it cannot act on
    /// gradients alone.
    pub needs_weights: bool,
    /// Whether it adds a penalty term to the loss (and its gradient to the gradients).
    pub penalises: bool,
}

impl RemedyCapabilities {
    /// Nothing declared (the default).
    pub const NONE: RemedyCapabilities = RemedyCapabilities {
        clips: None,
        needs_weights: false,
        penalises: false,
    };

    /// The same, bounding the gradients of `scope`.
    pub const fn clipping(mut self, scope: ClipScope) -> Self {
        self.clips = Some(scope);
        self
    }

    /// The same, reading the weights.
    pub const fn reading_weights(mut self) -> Self {
        self.needs_weights = true;
        self
    }

    /// The same, adding a penalty to the loss.
    pub const fn penalising(mut self) -> Self {
        self.penalises = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_each_capability_and_default_is_none() {
        assert_eq!(RemedyCapabilities::default(), RemedyCapabilities::NONE);
        let c = RemedyCapabilities::NONE
            .clipping(ClipScope::GlobalNorm)
            .penalising();
        assert_eq!(c.clips, Some(ClipScope::GlobalNorm));
        assert!(c.penalises && !c.needs_weights);
        assert_eq!(
            serde_json::to_string(&ClipScope::PerTensor).unwrap(),
            format!("\"{}\"", ClipScope::PerTensor.as_str())
        );
    }
}
