//! What a probe at initialisation hands from the bridge that measured it (gradguard-models'
//! `Trainer::probe`, or any framework's) to the code that judges it (gradguard-detectors'
//! `probe`): data only, defined once so both sides speak the same type.

use serde::{Deserialize, Serialize};

/// A recurrent (hidden-to-hidden) weight matrix at initialisation, row-major.
///
/// Its shape is `[H, H]` for a plain RNN or `[G*H, H]` for gate-stacked cells (PyTorch's
/// LSTM `weight_hh` `[4H, H]`, GRU `[3H, H]`); [`RecurrentMatrix::gates`] reads the number of
/// gate blocks from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecurrentMatrix {
    /// Its parameter name, e.g. `rnn.0.weight_hh`.
    pub name: String,
    /// `[H, H]` or `[G*H, H]`.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl RecurrentMatrix {
    /// The number of square gate blocks stacked in its rows (see [`gate_blocks`]): 1 for a
    /// plain RNN, 4 for an LSTM, 3 for a GRU; None when the shape is not `[G*H, H]`.
    pub fn gates(&self) -> Option<usize> {
        gate_blocks(&self.shape)
    }
}

/// How a recurrent weight of shape `[rows, cols]` splits into square gate blocks:
/// `Some(gates)` when `cols > 0` and `rows = gates * cols` (1 for a plain RNN's `[H, H]`,
/// 4 for PyTorch's LSTM `weight_hh` `[4H, H]` stacked as input, forget, cell, output gates,
/// 3 for its GRU `[3H, H]` as reset, update, new gates); None otherwise.
pub fn gate_blocks(shape: &[usize]) -> Option<usize> {
    match shape {
        [rows, cols] if *cols > 0 && *rows > 0 && rows % cols == 0 => Some(rows / cols),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_come_from_the_shape() {
        let m = |shape: Vec<usize>| RecurrentMatrix {
            name: "rnn.0.weight_hh".into(),
            values: vec![0.0; shape.iter().product()],
            shape,
        };
        assert_eq!(m(vec![4, 4]).gates(), Some(1));
        assert_eq!(m(vec![16, 4]).gates(), Some(4));
        assert_eq!(m(vec![12, 4]).gates(), Some(3));
        assert_eq!(m(vec![10, 4]).gates(), None);
        assert_eq!(m(vec![4]).gates(), None);
        assert_eq!(m(vec![0, 0]).gates(), None);
    }
}
