//! The model, task and training parts of an experiment spec (serde, TOML or JSON).
//!
//! The pipeline's top-level spec is `{ name, seed, model, task, train, detectors, remedies,
//! reporters }`; this module defines `model` ([`ModelSpec`]), `task` ([`TaskSpec`]) and
//! `train` ([`TrainSpec`]). Every struct rejects unknown keys, every default is documented on
//! its field, and [`validate`] checks values and the combination of the three, returning every
//! problem with its key path (e.g. `model.hidden[2] must be > 0`).
//!
//! ```toml
//! [model]
//! kind = "lstm"            # mlp | rnn | lstm | gru
//! hidden = 64
//! layers = 1
//! forget_bias = 1.0
//! recurrent_init = { scheme = "orthogonal", gain = 1.0 }
//!
//! [task]
//! kind = "adding"
//! seq_len = 50
//!
//! [train]
//! optimizer = { kind = "adam", lr = 0.001 }
//! batch_size = 32
//! steps = 500
//! bptt = { window = 20 }
//! ```

mod model;
mod task;
mod train;
mod validation;

pub use model::{Activation, InitScheme, InitSpec, MlpSpec, ModelSpec, RecurrentSpec};
pub use task::{AddingTask, CopyTask, CsvSeriesTask, CsvTask, RegressionTask, SineTask, TaskSpec};
pub use train::{BpttSpec, CheckpointSpec, LossKind, OptimizerSpec, ScheduleSpec, TrainSpec};
pub use validation::validate;

// Serde defaults shared by the parts.
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::ModelSpec;

    pub(crate) fn parse_model(s: &str) -> Result<ModelSpec, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::parse_model;
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let t: TrainSpec = toml::from_str("").unwrap();
        assert_eq!(t, TrainSpec::default());
        let t: TrainSpec = toml::from_str("optimizer = { kind = \"adam\" }").unwrap();
        assert_eq!(
            t.optimizer,
            OptimizerSpec::Adam {
                lr: 0.001,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8
            }
        );
        let r: ModelSpec = parse_model("kind = \"gru\"\nhidden = 8\n").unwrap();
        let ModelSpec::Gru(r) = r else {
            panic!("not gru")
        };
        assert_eq!(
            (r.layers, r.recurrent_init, r.forget_bias),
            (1, InitSpec::orthogonal(), None)
        );
        let c: TaskSpec =
            toml::from_str("kind = \"csv\"\npath = \"a.csv\"\ntargets = [\"y\"]\n").unwrap();
        let TaskSpec::Csv(c) = c else {
            panic!("not csv")
        };
        assert!(!c.standardize_features && !c.standardize_targets && c.shuffle_rows);
        assert_eq!(c.train_fraction, 0.8);
    }
}
