//! Checkpoints in safetensors: weights (`param.<name>`), optimiser state (`optim.<name>.a`,
//! `optim.<name>.b`), carried recurrent states (`state.<layer>.h` / `.c`), and in the
//! metadata the step counters, data cursor and order, RNG state and the model's shape.
//!
//! [`Trainer::save_checkpoint_with`] adds what a resumable run needs besides: the snapshots
//! kept for rollback (the same tensors and metadata under `ring.<i>.`, oldest first) and named
//! byte blobs (`extra.<name>`, U8 tensors, e.g. the Guard's state).
//!
//! Written atomically: to a temporary file unique to the process in the same folder, synced,
//! then renamed over the target, so a crash never leaves a half-written checkpoint. Loading
//! checks that every tensor of the model is present with the same shape (and nothing else),
//! naming the tensor otherwise, and restores the values bit-exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::ModelError;
use crate::optim::OptimState;
use crate::recurrent::RecurrentState;
use crate::trainer::{DataCursor, Snapshot, Trainer};

const FORMAT: &str = "gradguard-checkpoint-1";

/// What a checkpoint holds beside the trainer's own state (see
/// [`Trainer::save_checkpoint_with`]).
#[derive(Debug, Default)]
pub struct CheckpointExtras {
    /// The snapshots kept for rollback, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Named byte blobs.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ck(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Tensors and metadata being collected for one checkpoint file.
struct Writer {
    tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)>,
    meta: HashMap<String, String>,
}

impl Writer {
    /// One training state (the trainer's own with `prefix` "", a snapshot with `ring.<i>.`).
    fn push_state(&mut self, prefix: &str, trainer: &Trainer, snap: &Snapshot) {
        for ((slot, w), st) in trainer
            .net
            .store
            .slots
            .iter()
            .zip(&snap.weights)
            .zip(&snap.optimizer.state)
        {
            let name = &slot.info.name;
            let shape = slot.info.shape.clone();
            self.tensors.push((
                format!("{prefix}param.{name}"),
                shape.clone(),
                bytes_of(w),
                Dtype::F32,
            ));
            for (suffix, v) in [("a", &st.a), ("b", &st.b)] {
                if !v.is_empty() {
                    self.tensors.push((
                        format!("{prefix}optim.{name}.{suffix}"),
                        shape.clone(),
                        bytes_of(v),
                        Dtype::F32,
                    ));
                }
            }
        }
        for (l, s) in snap.states.iter().enumerate() {
            if let Some(s) = s {
                self.tensors.push((
                    format!("{prefix}state.{l}.h"),
                    vec![s.h.len()],
                    bytes_of(&s.h),
                    Dtype::F32,
                ));
                if let Some(c) = &s.c {
                    self.tensors.push((
                        format!("{prefix}state.{l}.c"),
                        vec![c.len()],
                        bytes_of(c),
                        Dtype::F32,
                    ));
                }
            }
        }
        let mut m = |k: &str, v: String| {
            self.meta.insert(format!("{prefix}{k}"), v);
        };
        m("optimizer_t", snap.optimizer.t.to_string());
        m("steps_done", snap.steps_done.to_string());
        m("cursor", json(&snap.cursor));
        m("order", json(&snap.order));
        m("rng", json(&snap.rng.map(|x| x.to_string())));
    }
}

/// Reads one training state written by [`Writer::push_state`] with `prefix`, checked against
/// `trainer`'s model, noting the tensors it used in `used`.
fn read_state(
    path: &Path,
    st: &SafeTensors<'_>,
    meta: &HashMap<String, String>,
    prefix: &str,
    trainer: &Trainer,
    used: &mut HashSet<String>,
) -> Result<Snapshot, ModelError> {
    let get = |k: &str| {
        meta.get(&format!("{prefix}{k}"))
            .ok_or_else(|| ck(path, format!("metadata has no `{prefix}{k}`")))
    };
    let parse_u64 = |k: &str| -> Result<u64, ModelError> {
        get(k)?
            .parse()
            .map_err(|_| ck(path, format!("metadata `{prefix}{k}` is not an integer")))
    };
    let mut weights = Vec::new();
    let mut optim = Vec::new();
    for slot in &trainer.net.store.slots {
        let name = &slot.info.name;
        let key = format!("{prefix}param.{name}");
        let t = st.tensor(&key).map_err(|_| {
            ck(path, format!("has no tensor `{key}` (the model has `{name}`, shape {:?}): the checkpoint is of a different model", slot.info.shape))
        })?;
        if t.dtype() != Dtype::F32 || t.shape() != slot.info.shape.as_slice() {
            return Err(ck(
                path,
                format!("tensor `{key}` has shape {:?} ({:?}) in the checkpoint but {:?} (F32) in the model", t.shape(), t.dtype(), slot.info.shape),
            ));
        }
        weights.push(floats_of(t.data()));
        used.insert(key);
        let mut os = OptimState::default();
        for (suffix, dst) in [("a", &mut os.a), ("b", &mut os.b)] {
            let k = format!("{prefix}optim.{name}.{suffix}");
            if let Ok(t) = st.tensor(&k) {
                if t.dtype() != Dtype::F32 || t.shape() != slot.info.shape.as_slice() {
                    return Err(ck(
                        path,
                        format!(
                            "tensor `{k}` has shape {:?} ({:?}), expected {:?} (F32)",
                            t.shape(),
                            t.dtype(),
                            slot.info.shape
                        ),
                    ));
                }
                *dst = floats_of(t.data());
                used.insert(k);
            }
        }
        optim.push(os);
    }
    let mut states: Vec<Option<RecurrentState>> = vec![None; trainer.states.len()];
    for (l, s) in states.iter_mut().enumerate() {
        let hk = format!("{prefix}state.{l}.h");
        if let Ok(h) = st.tensor(&hk) {
            used.insert(hk);
            let ckey = format!("{prefix}state.{l}.c");
            let c = st.tensor(&ckey).ok().map(|c| {
                used.insert(ckey);
                floats_of(c.data())
            });
            *s = Some(RecurrentState {
                h: floats_of(h.data()),
                c,
            });
        }
    }
    let cursor: DataCursor = serde_json::from_str(get("cursor")?)
        .map_err(|e| ck(path, format!("metadata `{prefix}cursor`: {e}")))?;
    let order: Vec<usize> = serde_json::from_str(get("order")?)
        .map_err(|e| ck(path, format!("metadata `{prefix}order`: {e}")))?;
    if order.len() != trainer.order.len() || order.iter().any(|&i| i >= order.len()) {
        return Err(ck(
            path,
            format!(
                "data order has {} samples, this task has {} (or an index is out of range)",
                order.len(),
                trainer.order.len()
            ),
        ));
    }
    let rng: Vec<String> = serde_json::from_str(get("rng")?)
        .map_err(|e| ck(path, format!("metadata `{prefix}rng`: {e}")))?;
    let rng: Vec<u64> = rng.iter().filter_map(|s| s.parse().ok()).collect();
    let rng: [u64; 4] = rng
        .try_into()
        .map_err(|_| ck(path, format!("metadata `{prefix}rng` must hold 4 integers")))?;
    let t = parse_u64("optimizer_t")?;
    let steps_done = parse_u64("steps_done")?;
    Ok(Snapshot {
        weights,
        optimizer: trainer.opt.with_state(optim, t),
        cursor,
        order,
        rng,
        steps_done,
        states,
    })
}

impl Trainer {
    /// Writes a checkpoint of the whole training state to `path`, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), ModelError> {
        self.save_checkpoint_with(path, &[], &[])
    }

    /// Writes a checkpoint of the whole training state to `path`, atomically, with the
    /// snapshots kept for rollback (oldest first) and named byte blobs (e.g. the Guard's
    /// state). [`Trainer::load_checkpoint_with`] gives them back.
    pub fn save_checkpoint_with(
        &self,
        path: &Path,
        snapshots: &[&Snapshot],
        blobs: &[(&str, &[u8])],
    ) -> Result<(), ModelError> {
        let mut w = Writer {
            tensors: Vec::new(),
            meta: HashMap::new(),
        };
        w.push_state("", self, &self.snapshot());
        // The weight statistics the last update measured (the next step's statistics pass
        // reads them instead of measuring): kept bit-exactly, so a resumed run's events are
        // the uninterrupted run's to the last digit.
        let known: Vec<Option<(String, usize)>> = self
            .net
            .store
            .slots
            .iter()
            .map(|s| {
                s.known
                    .map(|k| (k.sum_sq.to_bits().to_string(), k.nonfinite))
            })
            .collect();
        w.meta
            .insert("known_weight_stats".to_string(), json(&known));
        for (i, snap) in snapshots.iter().enumerate() {
            w.push_state(&format!("ring.{i}."), self, snap);
        }
        for (name, bytes) in blobs {
            w.tensors.push((
                format!("extra.{name}"),
                vec![bytes.len()],
                bytes.to_vec(),
                Dtype::U8,
            ));
        }
        let shapes: Vec<(String, Vec<usize>)> = self
            .net
            .store
            .slots
            .iter()
            .map(|s| (s.info.name.clone(), s.info.shape.clone()))
            .collect();
        w.meta.insert("format".to_string(), FORMAT.to_string());
        w.meta
            .insert("model_kind".to_string(), self.model_kind.to_string());
        w.meta.insert("model_shape".to_string(), json(&shapes));
        w.meta.insert("seed".to_string(), self.seed.to_string());
        w.meta
            .insert("ring".to_string(), snapshots.len().to_string());
        let mut views = Vec::with_capacity(w.tensors.len());
        for (name, shape, data, dtype) in &w.tensors {
            let v = TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| ck(path, format!("tensor `{name}`: {e}")))?;
            views.push((name.clone(), v));
        }
        let bytes =
            safetensors::serialize(views, &Some(w.meta)).map_err(|e| ck(path, e.to_string()))?;
        write_atomically(path, &bytes)
    }

    /// Loads a checkpoint written by [`Trainer::save_checkpoint`] for the same model shape,
    /// restoring weights, optimiser state, counters, data cursor and order, RNG and carried
    /// states exactly. Snapshots and blobs a checkpoint may hold besides are ignored (see
    /// [`Trainer::load_checkpoint_with`]).
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<(), ModelError> {
        self.load_checkpoint_with(path).map(|_| ())
    }

    /// Loads a checkpoint written by [`Trainer::save_checkpoint_with`]: restores the training
    /// state as [`Trainer::load_checkpoint`] does and returns the snapshots and blobs. Every
    /// tensor must belong to the model, a snapshot or a blob; nothing is changed unless the
    /// whole file checks.
    pub fn load_checkpoint_with(&mut self, path: &Path) -> Result<CheckpointExtras, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ck(path, format!("not a safetensors file: {e}")))?;
        let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| ck(path, e.to_string()))?;
        let meta = md.metadata().clone().unwrap_or_default();
        let format = meta
            .get("format")
            .ok_or_else(|| ck(path, "metadata has no `format`"))?;
        if format != FORMAT {
            return Err(ck(path, format!("format `{format}`, expected `{FORMAT}`")));
        }
        let mut used: HashSet<String> = HashSet::new();
        let current = read_state(path, &st, &meta, "", self, &mut used)?;
        let rings: usize = match meta.get("ring") {
            None => 0,
            Some(n) => n
                .parse()
                .map_err(|_| ck(path, "metadata `ring` is not an integer"))?,
        };
        let mut extras = CheckpointExtras::default();
        for i in 0..rings {
            // Each snapshot needs its own tensors: a count beyond them fails here, before
            // anything large is allocated.
            extras.snapshots.push(read_state(
                path,
                &st,
                &meta,
                &format!("ring.{i}."),
                self,
                &mut used,
            )?);
        }
        for name in st.names() {
            if let Some(blob) = name.strip_prefix("extra.") {
                let t = st
                    .tensor(name)
                    .map_err(|e| ck(path, format!("tensor `{name}`: {e}")))?;
                if t.dtype() != Dtype::U8 {
                    return Err(ck(
                        path,
                        format!("blob `{name}` is {:?}, expected U8", t.dtype()),
                    ));
                }
                extras.blobs.insert(blob.to_string(), t.data().to_vec());
                used.insert(name.clone());
            }
        }
        if let Some(extra) = st.names().into_iter().find(|n| !used.contains(*n)) {
            return Err(ck(path, format!("has a tensor `{extra}` that the model does not have: the checkpoint is of a different model")));
        }
        let known: Vec<Option<(String, usize)>> = match meta.get("known_weight_stats") {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| ck(path, format!("metadata `known_weight_stats`: {e}")))?,
            None => Vec::new(),
        };
        let mut known_stats = Vec::with_capacity(known.len().min(self.net.store.slots.len()));
        for k in known.iter().take(self.net.store.slots.len()) {
            known_stats.push(match k {
                Some((bits, nonfinite)) => Some(gradguard_core::WeightStats {
                    sum_sq: f64::from_bits(bits.parse().map_err(|_| {
                        ck(path, "metadata `known_weight_stats` holds a non-integer")
                    })?),
                    nonfinite: *nonfinite,
                }),
                None => None,
            });
        }
        self.restore(&current)?;
        for (i, k) in known_stats.into_iter().enumerate() {
            if let Some(k) = k {
                self.net.store.set_weight_stats(i, k);
            }
        }
        Ok(extras)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp: PathBuf = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let io = |source| ModelError::Io {
        path: tmp.clone(),
        source,
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
