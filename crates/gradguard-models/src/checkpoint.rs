//! Checkpoints in safetensors: weights (`param.<name>`), optimiser state (`optim.<name>.a`,
//! `optim.<name>.b`), carried recurrent states (`state.<layer>.h` / `.c`), and in the
//! metadata the step counters, data cursor and order, RNG state and the model's shape.
//!
//! Written atomically: to a temporary file in the same folder, flushed, then renamed over the
//! target, so a crash never leaves a half-written checkpoint. Loading checks that every
//! tensor of the model is present with the same shape (and nothing else), naming the tensor
//! otherwise, and restores the values bit-exactly.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::ModelError;
use crate::optim::OptimState;
use crate::recurrent::RecurrentState;
use crate::rng::Rng64;
use crate::trainer::{DataCursor, Trainer};

const FORMAT: &str = "gradguard-checkpoint-1";

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

impl Trainer {
    /// Writes a checkpoint of the whole training state to `path`, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), ModelError> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (slot, st) in self.net.store.slots.iter().zip(self.optim_state()) {
            let name = &slot.info.name;
            owned.push((
                format!("param.{name}"),
                slot.info.shape.clone(),
                bytes_of(&slot.w),
            ));
            if !st.a.is_empty() {
                owned.push((
                    format!("optim.{name}.a"),
                    slot.info.shape.clone(),
                    bytes_of(&st.a),
                ));
            }
            if !st.b.is_empty() {
                owned.push((
                    format!("optim.{name}.b"),
                    slot.info.shape.clone(),
                    bytes_of(&st.b),
                ));
            }
        }
        for (l, s) in self.states.iter().enumerate() {
            if let Some(s) = s {
                owned.push((format!("state.{l}.h"), vec![s.h.len()], bytes_of(&s.h)));
                if let Some(c) = &s.c {
                    owned.push((format!("state.{l}.c"), vec![c.len()], bytes_of(c)));
                }
            }
        }
        let mut views = Vec::with_capacity(owned.len());
        for (name, shape, data) in &owned {
            let v = TensorView::new(Dtype::F32, shape.clone(), data)
                .map_err(|e| ck(path, format!("tensor `{name}`: {e}")))?;
            views.push((name.clone(), v));
        }
        let shapes: Vec<(String, Vec<usize>)> = self
            .net
            .store
            .slots
            .iter()
            .map(|s| (s.info.name.clone(), s.info.shape.clone()))
            .collect();
        let json = |v: &dyn erased::Json| v.to_json();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("model_kind".to_string(), self.model_kind.to_string());
        meta.insert("model_shape".to_string(), json(&shapes));
        meta.insert("seed".to_string(), self.seed.to_string());
        meta.insert("optimizer_t".to_string(), self.opt.t.to_string());
        meta.insert("steps_done".to_string(), self.steps_done.to_string());
        meta.insert("cursor".to_string(), json(&self.cursor));
        meta.insert("order".to_string(), json(&self.order));
        meta.insert(
            "rng".to_string(),
            json(&self.rng.state().map(|x| x.to_string())),
        );
        let bytes =
            safetensors::serialize(views, &Some(meta)).map_err(|e| ck(path, e.to_string()))?;
        write_atomically(path, &bytes)
    }

    /// Loads a checkpoint written by [`Trainer::save_checkpoint`] for the same model shape,
    /// restoring weights, optimiser state, counters, data cursor and order, RNG and carried
    /// states exactly.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<(), ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ck(path, format!("not a safetensors file: {e}")))?;
        let (_, md) = SafeTensors::read_metadata(&bytes).map_err(|e| ck(path, e.to_string()))?;
        let meta = md.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| ck(path, format!("metadata has no `{k}`")))
        };
        if get("format")? != FORMAT {
            return Err(ck(
                path,
                format!("format `{}`, expected `{FORMAT}`", get("format")?),
            ));
        }
        let parse_u64 = |k: &str| -> Result<u64, ModelError> {
            get(k)?
                .parse()
                .map_err(|_| ck(path, format!("metadata `{k}` is not an integer")))
        };
        let mut expected: Vec<String> = Vec::new();
        let mut weights = Vec::new();
        let mut optim = Vec::new();
        for slot in &self.net.store.slots {
            let name = &slot.info.name;
            let key = format!("param.{name}");
            let t = st.tensor(&key).map_err(|_| {
                ck(path, format!("has no tensor `{name}` (the model has it, shape {:?}): the checkpoint is of a different model", slot.info.shape))
            })?;
            if t.dtype() != Dtype::F32 || t.shape() != slot.info.shape.as_slice() {
                return Err(ck(
                    path,
                    format!("tensor `{name}` has shape {:?} ({:?}) in the checkpoint but {:?} (F32) in the model", t.shape(), t.dtype(), slot.info.shape),
                ));
            }
            weights.push(floats_of(t.data()));
            expected.push(key);
            let mut os = OptimState::default();
            for (suffix, dst) in [("a", &mut os.a), ("b", &mut os.b)] {
                let k = format!("optim.{name}.{suffix}");
                if let Ok(t) = st.tensor(&k) {
                    if t.shape() != slot.info.shape.as_slice() {
                        return Err(ck(
                            path,
                            format!(
                                "tensor `{k}` has shape {:?}, expected {:?}",
                                t.shape(),
                                slot.info.shape
                            ),
                        ));
                    }
                    *dst = floats_of(t.data());
                    expected.push(k);
                }
            }
            optim.push(os);
        }
        let mut states: Vec<Option<RecurrentState>> = vec![None; self.states.len()];
        for (l, s) in states.iter_mut().enumerate() {
            if let Ok(h) = st.tensor(&format!("state.{l}.h")) {
                expected.push(format!("state.{l}.h"));
                let c = st.tensor(&format!("state.{l}.c")).ok().map(|c| {
                    expected.push(format!("state.{l}.c"));
                    floats_of(c.data())
                });
                *s = Some(RecurrentState {
                    h: floats_of(h.data()),
                    c,
                });
            }
        }
        if let Some(extra) = st.names().into_iter().find(|n| !expected.contains(n)) {
            return Err(ck(path, format!("has a tensor `{extra}` that the model does not have: the checkpoint is of a different model")));
        }
        let cursor: DataCursor = serde_json::from_str(get("cursor")?)
            .map_err(|e| ck(path, format!("metadata `cursor`: {e}")))?;
        let order: Vec<usize> = serde_json::from_str(get("order")?)
            .map_err(|e| ck(path, format!("metadata `order`: {e}")))?;
        if order.len() != self.order.len() {
            return Err(ck(
                path,
                format!(
                    "data order has {} samples, this task has {}",
                    order.len(),
                    self.order.len()
                ),
            ));
        }
        let rng: Vec<String> = serde_json::from_str(get("rng")?)
            .map_err(|e| ck(path, format!("metadata `rng`: {e}")))?;
        let rng: Vec<u64> = rng.iter().filter_map(|s| s.parse().ok()).collect();
        let rng: [u64; 4] = rng
            .try_into()
            .map_err(|_| ck(path, "metadata `rng` must hold 4 integers"))?;
        let t = parse_u64("optimizer_t")?;
        let steps_done = parse_u64("steps_done")?;
        // everything checked: apply
        for (i, w) in weights.into_iter().enumerate() {
            *self.net.store.weights_mut(i) = w;
        }
        self.net.sync_recurrent();
        self.opt.state = optim;
        self.opt.t = t;
        self.steps_done = steps_done;
        self.cursor = cursor;
        self.order = order;
        self.rng = Rng64::from_state(rng);
        self.states = states;
        self.loaded = None;
        self.net.store.zero_grads();
        Ok(())
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
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
