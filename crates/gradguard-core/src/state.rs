//! [`PluginState`]: the history a plugin keeps between steps, saved in checkpoints so that a
//! resumed run continues exactly where the interrupted one was.
//!
//! A detector or remedy that keeps history (a window of norms, a streak, an EMA) implements
//! [`Detector::save_state`](crate::Detector::save_state) and
//! [`Detector::restore_state`](crate::Detector::restore_state) (the same on
//! [`Remedy`](crate::Remedy)), usually in two lines each:
//!
//! ```
//! use gradguard_core::{PluginState, StateError, Window};
//!
//! struct MyDetector { ring: Window, streak: u32 }
//!
//! impl MyDetector {
//!     fn save_state(&self) -> Result<Option<PluginState>, StateError> {
//!         PluginState::encode(&(&self.ring, self.streak)).map(Some)
//!     }
//!     fn restore_state(&mut self, state: &PluginState) -> Result<(), StateError> {
//!         (self.ring, self.streak) = state.decode()?;
//!         Ok(())
//!     }
//! }
//! # let mut d = MyDetector { ring: Window::new(3), streak: 2 };
//! # d.ring.push(1.5);
//! # let s = d.save_state().unwrap().unwrap();
//! # let mut e = MyDetector { ring: Window::default(), streak: 0 };
//! # e.restore_state(&s).unwrap();
//! # assert_eq!((e.ring, e.streak), (d.ring, d.streak));
//! ```
//!
//! The encoding is CBOR ([ciborium](https://docs.rs/ciborium)): serde, self-describing (so
//! `skip_serializing_if` and untagged types work as in JSON), and exact for every `f64`,
//! NaN and infinities included, which JSON cannot do.
//! The bytes are opaque to gradguard: it stores them in the checkpoint beside the plugin's
//! kind and position and gives them back to the same kind on resume.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::window::Window;

/// A plugin's saved history: opaque bytes, written by [`PluginState::encode`] and read back
/// by [`PluginState::decode`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginState(Vec<u8>);

/// Why a plugin's state could not be saved or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl PluginState {
    /// Encodes `value` (any serde type: a tuple of the fields to keep is the usual choice).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, StateError> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes)
            .map_err(|e| StateError(format!("could not encode the state: {e}")))?;
        Ok(PluginState(bytes))
    }

    /// Decodes what [`PluginState::encode`] wrote, as the same type. Bytes that do not decode
    /// as `T` (another plugin's state, a damaged checkpoint) are an error, never a panic.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StateError> {
        ciborium::from_reader(self.0.as_slice())
            .map_err(|e| StateError(format!("the saved state does not decode: {e}")))
    }

    /// Wraps bytes read from a checkpoint.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        PluginState(bytes)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl StateError {
    /// The error for a plugin given a state although it keeps none.
    pub fn unexpected(kind: &str) -> Self {
        StateError(format!(
            "`{kind}` keeps no state, but the checkpoint holds one for it"
        ))
    }
}

/// A [`Window`] is saved as its capacity and its values, oldest first.
#[derive(Serialize, Deserialize)]
struct WindowRepr {
    capacity: u64,
    values: Vec<f64>,
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowRepr {
            capacity: self.capacity() as u64,
            values: self.iter().collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Window {
    /// Restores the values in arrival order. The capacity is not allocated beyond the values
    /// read (a damaged capacity cannot ask for memory); it is checked to hold them.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = WindowRepr::deserialize(d)?;
        let capacity = usize::try_from(repr.capacity)
            .map_err(|_| serde::de::Error::custom("window capacity too large"))?;
        if repr.values.len() > capacity {
            return Err(serde::de::Error::custom(format!(
                "a window of capacity {capacity} cannot hold {} values",
                repr.values.len()
            )));
        }
        Ok(Window::from_values(capacity, repr.values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_window_round_trips_in_arrival_order() {
        let mut w = Window::new(3);
        for x in [1.0, f64::NAN, 3.0, f64::INFINITY, -0.0] {
            w.push(x);
        }
        let s = PluginState::encode(&w).unwrap();
        let back: Window = s.decode().unwrap();
        let bits = |w: &Window| w.iter().map(f64::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&w));
        assert_eq!(bits(&back), [3.0f64, f64::INFINITY, -0.0].map(f64::to_bits));
        assert_eq!(back.capacity(), 3);
        // It behaves as the original from here on: the next push drops 3.0.
        let (mut a, mut b) = (w, back);
        a.push(7.0);
        b.push(7.0);
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(bits(&b), [f64::INFINITY, -0.0, 7.0].map(f64::to_bits));
    }

    #[test]
    fn damaged_states_are_errors() {
        let s = PluginState::encode(&WindowRepr {
            capacity: 1,
            values: vec![1.0, 2.0],
        })
        .unwrap();
        let e = s.decode::<Window>().unwrap_err();
        assert!(e.0.contains("capacity 1 cannot hold 2"), "{e}");
        let e = PluginState::from_bytes(vec![0xff; 3])
            .decode::<(u32, f64)>()
            .unwrap_err();
        assert!(e.0.contains("does not decode"), "{e}");
        assert!(StateError::unexpected("agc")
            .0
            .contains("`agc` keeps no state"));
    }
}
