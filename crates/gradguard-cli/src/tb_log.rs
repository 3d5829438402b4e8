//! TensorBoard event files as an events log, for `gradguard diagnose`.
//!
//! Many users already log from PyTorch (`SummaryWriter.add_scalar`) or Keras. The scalars of
//! an event file (or of every `*tfevents*` file in a directory), read with gradguard's
//! CRC-checking TFRecord reader, become one event per step:
//!
//! | event field | tag, by convention (first present) | `--tag` to choose |
//! |---|---|---|
//! | loss | `loss`, `train/loss`, `loss/train`, `Loss/train`, `train_loss`, `training_loss` | `--tag loss=TAG` |
//! | global gradient norm | `grad_norm/global`, `grad_norm`, `grad_norm/total`, `gradients/global_norm`, `total_norm`, `grad_norm/all` | `--tag grad_norm=TAG` |
//! | per-tensor gradient norms | every tag `grad_norm/<tensor>` (the rest of the tag names the tensor) | `--tag layers=PREFIX` |
//!
//! Without a global norm tag, the global norm is the root of the per-tensor norms' squares.
//! A TensorBoard log holds norms only: the largest |g| and the weights' norms are not in it, so
//! the signs that need them (`weights_change_large`, `weights_nonfinite`) cannot be seen from
//! such a log; the gradient and loss signs can.
//! A file with no loss tag, or with no gradient norm at all, is refused with the tags it holds.
//! TensorBoard stores scalars as f32: values above 3.4e38 read as infinite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gradguard_core::{Event, LayerRecord};
use gradguard_report::tfrecord::{read_scalars, Scalar};

/// Tags the user chose with `--tag KIND=TAG`.
#[derive(Clone, Debug, Default)]
pub struct TagChoice {
    /// The loss tag.
    pub loss: Option<String>,
    /// The global gradient norm tag.
    pub grad_norm: Option<String>,
    /// The prefix of per-tensor gradient norm tags.
    pub layers: Option<String>,
}

impl TagChoice {
    /// Reads `--tag` values `loss=TAG`, `grad_norm=TAG`, `layers=PREFIX`.
    pub fn parse(values: &[String]) -> Result<TagChoice> {
        let mut t = TagChoice::default();
        for v in values {
            let (kind, tag) = v.split_once('=').ok_or_else(|| {
                crate::UserError(format!(
                    "--tag {v}: expected KIND=TAG with KIND one of loss, grad_norm, layers"
                ))
            })?;
            let slot = match kind {
                "loss" => &mut t.loss,
                "grad_norm" => &mut t.grad_norm,
                "layers" => &mut t.layers,
                other => {
                    return Err(crate::UserError(format!(
                        "--tag {v}: unknown kind `{other}`: expected loss, grad_norm or layers"
                    ))
                    .into())
                }
            };
            *slot = Some(tag.to_string());
        }
        Ok(t)
    }
}

const LOSS_TAGS: [&str; 6] = [
    "loss",
    "train/loss",
    "loss/train",
    "Loss/train",
    "train_loss",
    "training_loss",
];
const NORM_TAGS: [&str; 6] = [
    "grad_norm/global",
    "grad_norm",
    "grad_norm/total",
    "gradients/global_norm",
    "total_norm",
    "grad_norm/all",
];
const LAYER_PREFIX: &str = "grad_norm/";

/// One step's scalars: the loss, the global norm, the per-tensor norms in first-seen order.
type StepScalars = (Option<f64>, Option<f64>, Vec<(String, f64)>);

/// Whether `path` is a TensorBoard event file, or a directory holding some.
pub fn is_tensorboard(path: &Path) -> bool {
    path.is_dir()
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("tfevents"))
}

fn event_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("tfevents"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(crate::UserError(format!(
            "{}: no TensorBoard event file (*tfevents*) in this directory",
            path.display()
        ))
        .into());
    }
    Ok(files)
}

/// The events of a TensorBoard log, one per step, in step order.
pub fn read_tensorboard(path: &Path, tags: &TagChoice) -> Result<Vec<Event>> {
    let mut scalars: Vec<Scalar> = Vec::new();
    for file in event_files(path)? {
        scalars.extend(read_scalars(&file).map_err(|e| crate::UserError(format!("{e}")))?);
    }
    let present: std::collections::BTreeSet<&str> =
        scalars.iter().map(|s| s.tag.as_str()).collect();
    let listed = || present.iter().copied().collect::<Vec<_>>().join(", ");
    let pick = |chosen: &Option<String>, conventional: &[&str]| -> Option<String> {
        match chosen {
            Some(t) => present.contains(t.as_str()).then(|| t.clone()),
            None => conventional
                .iter()
                .find(|t| present.contains(**t))
                .map(|t| t.to_string()),
        }
    };
    let loss_tag = pick(&tags.loss, &LOSS_TAGS).ok_or_else(|| {
        crate::UserError(format!(
            "{}: no loss tag ({}); the file holds: {}; choose one with --tag loss=TAG",
            path.display(),
            tags.loss
                .as_deref()
                .unwrap_or("looked for loss, train/loss, loss/train, ..."),
            listed()
        ))
    })?;
    let norm_tag = pick(&tags.grad_norm, &NORM_TAGS);
    if tags.grad_norm.is_some() && norm_tag.is_none() {
        return Err(crate::UserError(format!(
            "{}: no tag {} (the file holds: {})",
            path.display(),
            tags.grad_norm.as_deref().unwrap_or_default(),
            listed()
        ))
        .into());
    }
    let prefix = tags.layers.as_deref().unwrap_or(LAYER_PREFIX);
    let is_layer = |tag: &str| {
        tag.starts_with(prefix)
            && tag.len() > prefix.len()
            && Some(tag) != norm_tag.as_deref()
            && !NORM_TAGS.contains(&tag)
    };
    let mut steps: BTreeMap<i64, StepScalars> = BTreeMap::new();
    for s in &scalars {
        let v = s.value as f64;
        let entry = steps.entry(s.step).or_default();
        if s.tag == loss_tag {
            entry.0 = Some(v);
        } else if Some(s.tag.as_str()) == norm_tag.as_deref() {
            entry.1 = Some(v);
        } else if is_layer(&s.tag) {
            let name = s.tag[prefix.len()..].to_string();
            match entry.2.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = v,
                None => entry.2.push((name, v)),
            }
        }
    }
    let mut events = Vec::new();
    for (step, (loss, norm, layers)) in steps {
        let Some(loss) = loss else { continue };
        let norm = match norm {
            Some(n) => n,
            None if !layers.is_empty() => layers.iter().map(|(_, n)| n * n).sum::<f64>().sqrt(),
            None => continue,
        };
        let step = u64::try_from(step).unwrap_or(0);
        let nonfinite = |x: f64| usize::from(!x.is_finite());
        let mut event = Event::from_stats(step, loss, &gradguard_core::StepStats::default(), None);
        event.grad_norm = norm;
        event.grad_nonfinite = nonfinite(norm);
        // A TensorBoard log holds norms only: max |g| and the weights' norm are not in it
        // (written as 0, so the weight signs cannot fire on figures that were never measured).
        event.layers = layers
            .into_iter()
            .map(|(name, n)| LayerRecord {
                name,
                grad_norm: n,
                grad_max_abs: 0.0,
                grad_nonfinite: nonfinite(n),
                weight_norm: 0.0,
                update_ratio: None,
            })
            .collect();
        events.push(event);
    }
    if events.is_empty() {
        return Err(crate::UserError(format!(
            "{}: no step holds both the loss ({loss_tag}) and a gradient norm; the file holds: {}; choose them with --tag grad_norm=TAG or --tag layers=PREFIX",
            path.display(),
            listed()
        ))
        .into());
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_report::tfrecord::{
        write_event, TfEvent, TfEventWhat, TfSummary, TfSummaryValue,
    };

    /// A TensorBoard file as PyTorch's SummaryWriter writes it: one event per scalar.
    fn write_log(name: &str, scalars: &[(&str, i64, f32)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gradguard-tb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.out.tfevents.1764576000.host.1.0");
        let mut out = Vec::new();
        let version = TfEvent {
            wall_time: 0.0,
            step: 0,
            what: Some(TfEventWhat::FileVersion("brain.Event:2".into())),
        };
        write_event(&mut out, &version).unwrap();
        for &(tag, step, value) in scalars {
            let e = TfEvent {
                wall_time: 1.0,
                step,
                what: Some(TfEventWhat::Summary(TfSummary {
                    value: vec![TfSummaryValue {
                        tag: tag.into(),
                        simple_value: Some(value),
                    }],
                })),
            };
            write_event(&mut out, &e).unwrap();
        }
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn pytorch_style_tags_become_events_by_convention() {
        let mut scalars = Vec::new();
        for step in 1..=5i64 {
            scalars.push(("Loss/train", step, 1.0 / step as f32));
            scalars.push(("grad_norm/fc1.weight", step, 3.0));
            scalars.push(("grad_norm/fc2.weight", step, 4.0));
            scalars.push(("lr", step, 0.1));
        }
        let path = write_log("convention", &scalars);
        let events = read_tensorboard(&path, &TagChoice::default()).expect("read");
        assert_eq!(events.len(), 5);
        assert_eq!(events[1].step, 2);
        assert_eq!(events[1].loss, 0.5);
        // No global tag: sqrt(3² + 4²) = 5.
        assert_eq!(events[1].grad_norm, 5.0);
        let names: Vec<&str> = events[0].layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["fc1.weight", "fc2.weight"]);
        // The directory reads the same.
        let again = read_tensorboard(path.parent().unwrap(), &TagChoice::default()).expect("dir");
        assert_eq!(again, events);
    }

    #[test]
    fn chosen_tags_win_and_missing_ones_are_named() {
        let scalars = [
            ("my/objective", 1, 2.0f32),
            ("my/gnorm", 1, 7.0),
            ("my/objective", 2, f32::INFINITY),
            ("my/gnorm", 2, f32::NAN),
        ];
        let path = write_log("chosen", &scalars);
        let e = read_tensorboard(&path, &TagChoice::default()).expect_err("no loss tag");
        let msg = e.to_string();
        assert!(
            msg.contains("no loss tag") && msg.contains("the file holds: my/gnorm, my/objective"),
            "{msg}"
        );
        let tags = TagChoice::parse(&["loss=my/objective".into(), "grad_norm=my/gnorm".into()])
            .expect("tags");
        let events = read_tensorboard(&path, &tags).expect("read");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].grad_norm, 7.0);
        assert!(events[1].loss.is_infinite());
        assert!(events[1].grad_norm.is_nan());
        assert_eq!(events[1].grad_nonfinite, 1);
        assert!(TagChoice::parse(&["weights=x".into()]).is_err());
        assert!(TagChoice::parse(&["loss".into()]).is_err());
    }

    #[test]
    fn a_tensorboard_log_is_diagnosed_like_a_json_log() {
        let mut scalars = Vec::new();
        for step in 1..=12i64 {
            let blown = step >= 10;
            scalars.push(("loss", step, if blown { f32::NAN } else { 1.0 }));
            scalars.push((
                "grad_norm/global",
                step,
                if blown { f32::INFINITY } else { 0.5 },
            ));
        }
        let path = write_log("diagnose", &scalars);
        let args = crate::diagnose::DiagnoseArgs {
            events: path,
            json: false,
            no_replay: false,
            strict: false,
            summary: None,
            html: None,
            tags: Vec::new(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        crate::diagnose::run(&args, &mut out, &mut err).expect("diagnosed");
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("Verdict: exploding"), "{out}");
        assert!(out.contains("step 10"), "{out}");
    }
}
