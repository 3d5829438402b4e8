//! The memory a run needs, estimated from its spec with checked arithmetic before anything
//! is allocated, and the budget it must fit.
//!
//! **Estimate** (bytes; every product is checked, an overflow is an error naming the key):
//! - *data*: `4 · n_samples · (T · inputs + targets per sample)`, for the synthetic tasks from
//!   their sizes; for CSV files `4 ·` the file's byte count (a cell takes at least two bytes of
//!   text and four in memory), times the window for `csv_series` (each sample copies a window);
//! - *parameters*: `16 ·` the parameter count (weights, gradients and up to two optimiser
//!   moments, 4 bytes each): an MLP's `Σ (fan_in · fan_out + fan_out)`, a recurrent layer's
//!   `G·H·(in + H) + 2·G·H` (G = 1, 4, 3 gates for rnn, lstm, gru), plus the head;
//! - *activations*: `4 · 4 ·` rows · (the sum of the layer widths) for an MLP, and
//!   `4 · 4 · rows · T · G·H ·` layers for a recurrent model (the whole-sequence op keeps every
//!   step's gates for the backward), with `rows = max(batch_size, 256)` (evaluation runs 256
//!   rows at a time).
//!
//! **Budget**: half of this machine's memory (`MemTotal` in `/proc/meminfo`; 8 GiB when it
//! cannot be read), or what [`set_budget`] set (`--max-memory` on the command line).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::SpecIssue;
use crate::spec::{ModelSpec, TaskSpec, TrainSpec};
use crate::CellKind;

/// The estimate, by part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The data set in memory.
    pub data: u64,
    /// Weights, gradients and optimiser state.
    pub parameters: u64,
    /// One batch's (or evaluation chunk's) activations.
    pub activations: u64,
}

impl Footprint {
    /// The total, saturating.
    pub fn total(&self) -> u64 {
        self.data
            .saturating_add(self.parameters)
            .saturating_add(self.activations)
    }
}

static BUDGET: AtomicU64 = AtomicU64::new(0);

/// Sets the memory budget in bytes (0 restores the default).
pub fn set_budget(bytes: u64) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// The memory budget in bytes: [`set_budget`]'s, or half of the machine's memory.
pub fn budget() -> u64 {
    match BUDGET.load(Ordering::Relaxed) {
        0 => machine_memory().unwrap_or(16 << 30) / 2,
        b => b,
    }
}

fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count for messages: `1.5 GB`, `160 TB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

struct Checked<'a> {
    key: &'a str,
}

impl Checked<'_> {
    fn mul(&self, a: u64, b: u64) -> Result<u64, SpecIssue> {
        a.checked_mul(b).ok_or_else(|| self.overflow())
    }
    fn add(&self, a: u64, b: u64) -> Result<u64, SpecIssue> {
        a.checked_add(b).ok_or_else(|| self.overflow())
    }
    fn overflow(&self) -> SpecIssue {
        SpecIssue {
            path: self.key.to_string(),
            message: "the sizes overflow 64-bit arithmetic: far too large for any machine".into(),
        }
    }
}

fn n(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// (samples, time steps, inputs, targets per sample) where the spec says them; `None` for
/// sizes only the file knows.
fn task_sizes(task: &TaskSpec) -> (Option<u64>, u64, Option<u64>, u64) {
    match task {
        TaskSpec::Regression(r) => (
            Some(n(r.n_samples)),
            1,
            Some(n(r.n_features)),
            n(r.n_targets),
        ),
        TaskSpec::Adding(a) => (Some(n(a.n_samples)), n(a.seq_len), Some(2), 1),
        TaskSpec::Copy(c) => {
            let t = n(c.length).saturating_mul(2).saturating_add(n(c.delay));
            (
                Some(n(c.n_samples)),
                t,
                Some(n(c.symbols).saturating_add(2)),
                t,
            )
        }
        TaskSpec::Sine(s) => (Some(n(s.n_samples)), n(s.seq_len), Some(1), 1),
        TaskSpec::Csv(c) => (
            None,
            1,
            c.features.as_ref().map(|f| n(f.len())),
            n(c.targets.len()),
        ),
        TaskSpec::CsvSeries(c) => (None, n(c.window), Some(1), 1),
    }
}

fn outputs(task: &TaskSpec) -> u64 {
    match task {
        TaskSpec::Copy(c) => n(c.symbols).saturating_add(1),
        TaskSpec::Csv(c) => c.classes.map(n).unwrap_or(n(c.targets.len())),
        TaskSpec::Regression(r) => n(r.n_targets),
        _ => 1,
    }
}

/// Estimates the memory of a run (see the [module documentation](self)).
pub fn estimate(
    model: &ModelSpec,
    task: &TaskSpec,
    train: &TrainSpec,
) -> Result<Footprint, SpecIssue> {
    let (samples, steps, inputs, targets) = task_sizes(task);
    let inputs_known = inputs.unwrap_or(1);
    // data
    let data = match (samples, task) {
        (Some(s), _) => {
            let c = Checked {
                key: "task.n_samples",
            };
            let per = c.add(c.mul(steps, inputs_known)?, targets)?;
            c.mul(c.mul(s, per)?, 4)?
        }
        (None, TaskSpec::Csv(csv)) => {
            let len = std::fs::metadata(&csv.path).map(|m| m.len()).unwrap_or(0);
            Checked { key: "task.path" }.mul(len, 4)?
        }
        (None, TaskSpec::CsvSeries(csv)) => {
            let len = std::fs::metadata(&csv.path).map(|m| m.len()).unwrap_or(0);
            let c = Checked { key: "task.window" };
            c.mul(c.mul(len, 2)?, c.add(steps, 1)?)?
        }
        (None, _) => 0,
    };
    // parameters and activations
    let out = outputs(task);
    let rows = n(train.batch_size).max(256);
    let (params, acts) = match model {
        ModelSpec::Mlp(m) => {
            let c = Checked {
                key: "model.hidden",
            };
            let mut fan_in = c.mul(steps, inputs_known)?;
            let (mut p, mut widths) = (0u64, 0u64);
            for &h in m.hidden.iter().chain(std::iter::once(&(out as usize))) {
                let h = n(h);
                p = c.add(p, c.add(c.mul(fan_in, h)?, h)?)?;
                widths = c.add(widths, h)?;
                fan_in = h;
            }
            (p, c.mul(c.mul(rows, widths)?, 16)?)
        }
        ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r) => {
            let gates = n(match model {
                ModelSpec::Lstm(_) => CellKind::Lstm.gates(),
                ModelSpec::Gru(_) => CellKind::Gru.gates(),
                _ => CellKind::Rnn.gates(),
            });
            let c = Checked {
                key: "model.hidden",
            };
            let h = n(r.hidden);
            let gh = c.mul(gates, h)?;
            let layers = n(r.layers);
            let mut p = 0u64;
            let mut fan_in = inputs_known;
            for _ in 0..r.layers.min(2) {
                // the first layer reads the inputs, the others the hidden state below
                p = c.add(p, c.add(c.mul(gh, c.add(fan_in, h)?)?, c.mul(gh, 2)?)?)?;
                fan_in = h;
            }
            if layers > 2 {
                let per = c.add(c.mul(gh, c.mul(h, 2)?)?, c.mul(gh, 2)?)?;
                p = c.add(
                    p,
                    Checked {
                        key: "model.layers",
                    }
                    .mul(per, layers - 2)?,
                )?;
            }
            p = c.add(p, c.add(c.mul(h, out)?, out)?)?;
            let a = Checked {
                key: "model.layers",
            };
            let per_layer = c.mul(c.mul(rows, steps)?, gh)?;
            (p, a.mul(a.mul(per_layer, layers)?, 16)?)
        }
    };
    let parameters = Checked {
        key: "model.hidden",
    }
    .mul(params, 16)?;
    Ok(Footprint {
        data,
        parameters,
        activations: acts,
    })
}

/// Checks the estimate against the budget: an error names the largest part's key, the
/// estimate and the budget.
pub fn check(
    model: &ModelSpec,
    task: &TaskSpec,
    train: &TrainSpec,
) -> Result<Footprint, SpecIssue> {
    let f = estimate(model, task, train)?;
    let limit = budget();
    if f.total() > limit {
        let (key, what) = [
            (f.data, "task.n_samples", "the data"),
            (
                f.parameters,
                "model.hidden",
                "the parameters and optimiser state",
            ),
            (f.activations, "train.batch_size", "one batch's activations"),
        ]
        .into_iter()
        .max_by_key(|p| p.0)
        .map(|p| (p.1, p.2))
        .unwrap_or(("model", "the run"));
        let key = match (key, task) {
            ("task.n_samples", TaskSpec::Csv(_)) => "task.path",
            ("task.n_samples", TaskSpec::CsvSeries(_)) => "task.window",
            // Below 256 rows the evaluation chunk, not the batch, sets the rows: the widths
            // are to blame.
            ("train.batch_size", _) if train.batch_size <= 256 => "model.hidden",
            (k, _) => k,
        };
        // A stack deeper than it is wide: the depth is to blame.
        let key = match model {
            ModelSpec::Rnn(r) | ModelSpec::Lstm(r) | ModelSpec::Gru(r)
                if key == "model.hidden" && r.layers > r.hidden =>
            {
                "model.layers"
            }
            _ => key,
        };
        return Err(SpecIssue {
            path: key.to_string(),
            message: format!(
                "the run needs about {} ({} {}; data {}, parameters {}, activations {}), above the memory budget of {} (half of this machine's memory unless --max-memory says otherwise)",
                human_bytes(f.total()),
                what,
                human_bytes(f.data.max(f.parameters).max(f.activations)),
                human_bytes(f.data),
                human_bytes(f.parameters),
                human_bytes(f.activations),
                human_bytes(limit)
            ),
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(model: &str, task: &str, train: &str) -> (ModelSpec, TaskSpec, TrainSpec) {
        (
            toml::from_str(model).unwrap(),
            toml::from_str(task).unwrap(),
            toml::from_str(train).unwrap(),
        )
    }

    #[test]
    fn hand_computed_mlp_estimate() {
        let (m, t, tr) = parts(
            "kind = \"mlp\"\nhidden = [25]",
            "kind = \"regression\"\nn_samples = 1000\nn_features = 20",
            "batch_size = 32",
        );
        let f = estimate(&m, &t, &tr).unwrap();
        // data: 1000 · (1·20 + 1) · 4
        assert_eq!(f.data, 84_000);
        // parameters: (20·25 + 25) + (25·1 + 1) = 551, times 16 bytes
        assert_eq!(f.parameters, 551 * 16);
        // activations: max(32, 256) rows · (25 + 1) widths · 16
        assert_eq!(f.activations, 256 * 26 * 16);
    }

    #[test]
    fn hand_computed_lstm_estimate() {
        let (m, t, tr) = parts(
            "kind = \"lstm\"\nhidden = 8\nlayers = 3",
            "kind = \"adding\"\nseq_len = 10\nn_samples = 100",
            "batch_size = 512",
        );
        let f = estimate(&m, &t, &tr).unwrap();
        assert_eq!(f.data, 100 * (10 * 2 + 1) * 4);
        // layer 1: 32·(2+8) + 64 = 384; layers 2 and 3: 32·16 + 64 = 576 each; head 8 + 1
        assert_eq!(f.parameters, (384 + 576 + 576 + 9) * 16);
        // 512 rows · 10 steps · 32 gate units · 3 layers · 16
        assert_eq!(f.activations, 512 * 10 * 32 * 3 * 16);
    }

    #[test]
    fn hostile_sizes_are_refused_before_allocation() {
        let cases = [
            (
                "kind = \"mlp\"\nhidden = [8]",
                "kind = \"regression\"\nn_samples = 10000000000000",
                "task.n_samples",
            ),
            (
                "kind = \"mlp\"\nhidden = [100000000]",
                "kind = \"regression\"",
                "model.hidden",
            ),
            (
                "kind = \"lstm\"\nhidden = 8\nlayers = 100000000",
                "kind = \"adding\"",
                "model.layers",
            ),
            (
                "kind = \"mlp\"\nhidden = [2305843009213693952]",
                "kind = \"regression\"",
                "model.hidden",
            ),
        ];
        for (model, task, key) in cases {
            let (m, t, tr) = parts(model, task, "batch_size = 32");
            let err = check(&m, &t, &tr).unwrap_err();
            assert_eq!(err.path, key, "{model} / {task}: {}", err.message);
        }
        let (m, t, tr) = parts(
            "kind = \"mlp\"\nhidden = [2305843009213693952, 4]",
            "kind = \"regression\"",
            "batch_size = 32",
        );
        assert!(estimate(&m, &t, &tr)
            .unwrap_err()
            .message
            .contains("overflow"));
    }

    #[test]
    fn the_budget_can_be_set() {
        let (m, t, tr) = parts(
            "kind = \"mlp\"\nhidden = [25]",
            "kind = \"regression\"",
            "batch_size = 32",
        );
        assert!(check(&m, &t, &tr).is_ok());
        assert!(budget() > 0);
        assert_eq!(human_bytes(160_000_000_000_000), "160.0 TB");
        assert_eq!(human_bytes(999), "999 B");
    }
}
