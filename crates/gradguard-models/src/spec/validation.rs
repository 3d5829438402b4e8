//! Validation of a spec's parts and of their combination: every problem found, each with its
//! key path (e.g. `model.hidden[2] must be > 0`).

use super::{
    Activation, InitScheme, InitSpec, LossKind, ModelSpec, OptimizerSpec, ScheduleSpec, TaskSpec,
    TrainSpec,
};
use crate::error::{ModelError, SpecIssue};

struct Issues(Vec<SpecIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecIssue {
            path: path.into(),
            message: message.into(),
        });
    }
    fn positive_f(&mut self, path: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.push(path, format!("must be a finite number > 0 (got {v})"));
        }
    }
    fn fraction(&mut self, path: &str, v: f64) {
        if !(v > 0.0 && v < 1.0) {
            self.push(path, format!("must be strictly between 0 and 1 (got {v})"));
        }
    }
    fn positive_u(&mut self, path: &str, v: usize) {
        if v == 0 {
            self.push(path, "must be > 0");
        }
    }
}

fn check_activation(iss: &mut Issues, path: &str, a: &Activation) {
    match *a {
        Activation::LeakyRelu { slope } if !(slope.is_finite() && slope >= 0.0) => iss.push(
            format!("{path}.slope"),
            format!("must be a finite number >= 0 (got {slope})"),
        ),
        Activation::Elu { alpha } if !(alpha.is_finite() && alpha > 0.0) => iss.push(
            format!("{path}.alpha"),
            format!("must be a finite number > 0 (got {alpha})"),
        ),
        _ => {}
    }
}

fn check_init(iss: &mut Issues, path: &str, i: &InitSpec) {
    if !(i.gain.is_finite() && i.gain >= 0.0) {
        iss.push(
            format!("{path}.gain"),
            format!("must be a finite number >= 0 (got {})", i.gain),
        );
    }
    if i.scheme == InitScheme::Normal && !(i.std.is_finite() && i.std >= 0.0) {
        iss.push(
            format!("{path}.std"),
            format!("must be a finite number >= 0 (got {})", i.std),
        );
    }
}

impl ModelSpec {
    fn check(&self, iss: &mut Issues) {
        match self {
            ModelSpec::Mlp(m) => {
                for (i, &h) in m.hidden.iter().enumerate() {
                    if h == 0 {
                        iss.push(format!("model.hidden[{i}]"), "must be > 0");
                    }
                }
                if m.activation.is_some() && m.activations.is_some() {
                    iss.push("model.activations", "give either `activation` (one for all) or `activations` (one per layer), not both");
                }
                if let Some(a) = &m.activations {
                    if a.len() != m.hidden.len() {
                        iss.push(
                            "model.activations",
                            format!(
                                "has {} entries but model.hidden has {} layers",
                                a.len(),
                                m.hidden.len()
                            ),
                        );
                    }
                    for (i, act) in a.iter().enumerate() {
                        check_activation(iss, &format!("model.activations[{i}]"), act);
                    }
                }
                if let Some(a) = &m.activation {
                    check_activation(iss, "model.activation", a);
                }
                check_init(iss, "model.init", &m.init);
                if let Some(o) = &m.output_init {
                    check_init(iss, "model.output_init", o);
                }
            }
            ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => {
                iss.positive_u("model.hidden", r.hidden);
                iss.positive_u("model.layers", r.layers);
                check_init(iss, "model.init", &r.init);
                check_init(iss, "model.recurrent_init", &r.recurrent_init);
                if let Some(o) = &r.output_init {
                    check_init(iss, "model.output_init", o);
                }
                if let Some(fb) = r.forget_bias {
                    if !matches!(self, ModelSpec::Lstm(_)) {
                        iss.push(
                            "model.forget_bias",
                            format!("applies to lstm only, not {}", self.kind_name()),
                        );
                    } else if !fb.is_finite() {
                        iss.push("model.forget_bias", "must be finite");
                    }
                }
            }
        }
    }

    /// Checks the model's own values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

impl TaskSpec {
    fn check(&self, iss: &mut Issues) {
        match self {
            TaskSpec::Regression(r) => {
                iss.positive_u("task.n_samples", r.n_samples);
                iss.positive_u("task.n_features", r.n_features);
                iss.positive_u("task.n_targets", r.n_targets);
                if !(r.noise.is_finite() && r.noise >= 0.0) {
                    iss.push("task.noise", "must be a finite number >= 0");
                }
                if !r.bias.is_finite() {
                    iss.push("task.bias", "must be finite");
                }
                iss.positive_f("task.target_scale", r.target_scale);
                iss.fraction("task.train_fraction", r.train_fraction);
            }
            TaskSpec::Adding(a) => {
                if a.seq_len < 2 {
                    iss.push("task.seq_len", "must be >= 2");
                }
                iss.positive_u("task.n_samples", a.n_samples);
                iss.fraction("task.train_fraction", a.train_fraction);
            }
            TaskSpec::Copy(c) => {
                if c.symbols < 2 {
                    iss.push("task.symbols", "must be >= 2");
                }
                iss.positive_u("task.length", c.length);
                iss.positive_u("task.n_samples", c.n_samples);
                iss.fraction("task.train_fraction", c.train_fraction);
            }
            TaskSpec::Sine(s) => {
                iss.positive_u("task.seq_len", s.seq_len);
                iss.positive_u("task.n_samples", s.n_samples);
                iss.positive_f("task.min_freq", s.min_freq);
                iss.positive_f("task.max_freq", s.max_freq);
                if s.max_freq < s.min_freq {
                    iss.push("task.max_freq", "must be >= task.min_freq");
                }
                if !(s.noise.is_finite() && s.noise >= 0.0) {
                    iss.push("task.noise", "must be a finite number >= 0");
                }
                iss.fraction("task.train_fraction", s.train_fraction);
            }
            TaskSpec::Csv(c) => {
                if c.targets.is_empty() {
                    iss.push("task.targets", "must name at least one column");
                }
                if let Some(f) = &c.features {
                    if f.is_empty() {
                        iss.push("task.features", "must name at least one column (or be left out: all non-target columns)");
                    }
                    for (i, name) in f.iter().enumerate() {
                        if c.targets.contains(name) {
                            iss.push(
                                format!("task.features[{i}]"),
                                format!("`{name}` is also a target column"),
                            );
                        }
                    }
                }
                if let Some(k) = c.classes {
                    if k < 2 {
                        iss.push("task.classes", "must be >= 2");
                    }
                    if c.targets.len() != 1 {
                        iss.push("task.targets", "must name exactly one column (of class indices) when task.classes is set");
                    }
                    if c.standardize_targets {
                        iss.push(
                            "task.standardize_targets",
                            "cannot standardise class indices (task.classes is set)",
                        );
                    }
                }
                iss.fraction("task.train_fraction", c.train_fraction);
            }
            TaskSpec::CsvSeries(c) => {
                if c.column.is_empty() {
                    iss.push("task.column", "must name a column");
                }
                iss.positive_u("task.window", c.window);
                iss.positive_u("task.horizon", c.horizon);
                iss.fraction("task.train_fraction", c.train_fraction);
            }
        }
    }

    /// Checks the task's own values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

impl TrainSpec {
    fn check(&self, iss: &mut Issues) {
        match self.optimizer {
            OptimizerSpec::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&momentum) {
                    iss.push(
                        "train.optimizer.momentum",
                        format!("must be in [0, 1) (got {momentum})"),
                    );
                }
                if nesterov && momentum <= 0.0 {
                    iss.push(
                        "train.optimizer.nesterov",
                        "needs train.optimizer.momentum > 0",
                    );
                }
            }
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&beta1) {
                    iss.push(
                        "train.optimizer.beta1",
                        format!("must be in [0, 1) (got {beta1})"),
                    );
                }
                if !(0.0..1.0).contains(&beta2) {
                    iss.push(
                        "train.optimizer.beta2",
                        format!("must be in [0, 1) (got {beta2})"),
                    );
                }
                iss.positive_f("train.optimizer.eps", eps);
            }
            OptimizerSpec::Rmsprop {
                lr,
                alpha,
                eps,
                momentum,
            } => {
                iss.positive_f("train.optimizer.lr", lr);
                if !(0.0..1.0).contains(&alpha) {
                    iss.push(
                        "train.optimizer.alpha",
                        format!("must be in [0, 1) (got {alpha})"),
                    );
                }
                iss.positive_f("train.optimizer.eps", eps);
                if !(0.0..1.0).contains(&momentum) {
                    iss.push(
                        "train.optimizer.momentum",
                        format!("must be in [0, 1) (got {momentum})"),
                    );
                }
            }
        }
        match self.schedule {
            Some(ScheduleSpec::Step { step_size, gamma }) => {
                if step_size == 0 {
                    iss.push("train.schedule.step_size", "must be > 0");
                }
                iss.positive_f("train.schedule.gamma", gamma);
            }
            Some(ScheduleSpec::Exponential { gamma }) => {
                iss.positive_f("train.schedule.gamma", gamma)
            }
            Some(ScheduleSpec::Cosine { t_max, eta_min }) => {
                if t_max == 0 {
                    iss.push("train.schedule.t_max", "must be > 0");
                }
                if !(eta_min.is_finite() && eta_min >= 0.0) {
                    iss.push("train.schedule.eta_min", "must be a finite number >= 0");
                }
            }
            None => {}
        }
        iss.positive_u("train.batch_size", self.batch_size);
        if self.epochs.is_some() && self.steps.is_some() {
            iss.push(
                "train.steps",
                "give either train.epochs or train.steps, not both",
            );
        }
        if self.epochs == Some(0) {
            iss.push("train.epochs", "must be > 0");
        }
        if self.steps == Some(0) {
            iss.push("train.steps", "must be > 0");
        }
        if let Some(b) = self.bptt {
            iss.positive_u("train.bptt.window", b.window);
        }
        if self.eval_every == Some(0) {
            iss.push("train.eval_every", "must be > 0");
        }
        if self.checkpoint.keep == 0 {
            iss.push("train.checkpoint.keep", "must be >= 1");
        }
        if !(self.checkpoint.seconds.is_finite() && self.checkpoint.seconds >= 0.0) {
            iss.push(
                "train.checkpoint.seconds",
                "must be a finite number of seconds >= 0",
            );
        }
    }

    /// Checks the training values; returns every issue with its key path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut iss = Issues(Vec::new());
        self.check(&mut iss);
        finish(iss)
    }
}

fn finish(iss: Issues) -> Result<(), ModelError> {
    if iss.0.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Spec(iss.0))
    }
}

/// Validates the three parts and their combination (a sequence-to-sequence task needs a
/// recurrent model, a table needs an MLP, `bptt` needs a recurrent model, cross-entropy needs
/// class targets). Returns every issue found, each with its key path.
pub fn validate(model: &ModelSpec, task: &TaskSpec, train: &TrainSpec) -> Result<(), ModelError> {
    let mut iss = Issues(Vec::new());
    model.check(&mut iss);
    task.check(&mut iss);
    train.check(&mut iss);
    let loss = train.loss_for(task);
    if model.is_recurrent() && !task.is_sequence() {
        iss.push(
            "model.kind",
            format!(
                "`{}` needs a sequence task (adding, copy, sine, csv_series), but task.kind is `{}`",
                model.kind_name(),
                task.kind_name()
            ),
        );
    }
    if !model.is_recurrent() && task.is_many_to_many() {
        iss.push(
            "model.kind",
            format!(
                "task `{}` has a target at every step: use rnn, lstm or gru, not mlp",
                task.kind_name()
            ),
        );
    }
    if train.bptt.is_some() && !model.is_recurrent() {
        iss.push(
            "train.bptt",
            "applies to recurrent models (rnn, lstm, gru) only",
        );
    }
    let classification = matches!(task, TaskSpec::Copy(_))
        || matches!(task, TaskSpec::Csv(c) if c.classes.is_some());
    if loss == LossKind::CrossEntropy && !classification {
        iss.push(
            "train.loss",
            format!(
                "cross_entropy needs class targets (task copy, or csv with classes), not task `{}`",
                task.kind_name()
            ),
        );
    }
    if classification && loss != LossKind::CrossEntropy {
        iss.push(
            "train.loss",
            "a classification task (class-index targets) needs cross_entropy",
        );
    }
    // Sizes that pass one by one must still fit together, before anything is allocated.
    if iss.0.is_empty() {
        if let Err(issue) = crate::footprint::check(model, task, train) {
            iss.0.push(issue);
        }
    }
    finish(iss)
}

#[cfg(test)]
mod tests {
    use crate::spec::test_util::parse_model;
    use crate::spec::*;
    #[test]
    fn validation_names_key_paths() {
        let m =
            parse_model("kind = \"mlp\"\nhidden = [4, 4, 0]\nactivations = [\"relu\"]\n").unwrap();
        let t: TaskSpec = toml::from_str("kind = \"regression\"").unwrap();
        let tr: TrainSpec =
            toml::from_str("optimizer = { kind = \"sgd\", lr = -1.0 }\nbptt = { window = 0 }")
                .unwrap();
        let e = validate(&m, &t, &tr).unwrap_err().to_string();
        for needle in [
            "model.hidden[2] must be > 0",
            "model.activations has 1 entries",
            "train.optimizer.lr must be",
            "train.bptt.window must be > 0",
            "train.bptt applies to recurrent",
        ] {
            assert!(e.contains(needle), "missing `{needle}` in {e}");
        }
    }

    #[test]
    fn combination_rules() {
        let rnn = parse_model("kind = \"rnn\"\nhidden = 8\nforget_bias = 1.0\n").unwrap();
        let reg: TaskSpec = toml::from_str("kind = \"regression\"").unwrap();
        let e = validate(&rnn, &reg, &TrainSpec::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.forget_bias applies to lstm only"), "{e}");
        assert!(e.contains("needs a sequence task"), "{e}");
        let mlp = parse_model("kind = \"mlp\"\nhidden = [8]\n").unwrap();
        let copy: TaskSpec = toml::from_str("kind = \"copy\"").unwrap();
        let e = validate(&mlp, &copy, &TrainSpec::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("use rnn, lstm or gru"), "{e}");
        let never = TrainSpec {
            eval_every: Some(0),
            ..TrainSpec::default()
        };
        let e = validate(&mlp, &reg, &never).unwrap_err().to_string();
        assert!(
            e.contains("train.eval_every") && e.contains("must be > 0"),
            "{e}"
        );
        let every = TrainSpec {
            eval_every: Some(5),
            ..TrainSpec::default()
        };
        validate(&mlp, &reg, &every).expect("eval_every = 5 is valid");
        let bad_checkpoint = TrainSpec {
            checkpoint: crate::CheckpointSpec {
                every: None,
                seconds: f64::NAN,
                keep: 0,
            },
            ..TrainSpec::default()
        };
        let e = validate(&mlp, &reg, &bad_checkpoint)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.checkpoint.keep") && e.contains(">= 1"),
            "{e}"
        );
        assert!(e.contains("train.checkpoint.seconds"), "{e}");
        let ce = TrainSpec {
            loss: Some(LossKind::CrossEntropy),
            ..TrainSpec::default()
        };
        let e = validate(&mlp, &reg, &ce).unwrap_err().to_string();
        assert!(e.contains("cross_entropy needs class targets"), "{e}");
        let adding: TaskSpec = toml::from_str("kind = \"adding\"").unwrap();
        assert!(validate(&mlp, &adding, &TrainSpec::default()).is_ok());
    }
}
