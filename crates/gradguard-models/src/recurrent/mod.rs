//! Recurrent layers (RNN, LSTM, GRU) as one fused op on dfdx's tape (work in progress).
