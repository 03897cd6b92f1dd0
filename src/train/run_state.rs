//! What a training checkpoint says about its run: the configuration that defines it, where it
//! stands, and the rate and levels it ran at.

use crate::checkpoint::{self, Buffers};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::ParamLayout;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What defines a run: a checkpoint can only be resumed with the same values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub alpha: f32,
    pub n_max: u32,
    pub batch_images: u32,
    pub repeat: u32,
    pub seed: u64,
    pub train_images: usize,
    pub val_count: usize,
}

/// Where a run stands; saved in every checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Steps done.
    pub step: u64,
    /// Current epoch (0-based) and steps done within it.
    pub epoch: u32,
    pub epoch_step: u64,
    pub best_val: Option<f32>,
    pub best_epoch: Option<u32>,
    pub epochs_without_improvement: u32,
    /// Seconds of training before this process (for the metrics' clock).
    pub seconds: f64,
    pub finished: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) kind: String,
    pub(super) config: RunConfig,
    pub(super) state: RunState,
    pub(super) lr: f32,
    /// The training levels' upper end (`--level-max`; like the rate, it may change on
    /// --resume); absent in older checkpoints, which drew 0..=n_max.
    #[serde(default)]
    pub(super) level_max: Option<u32>,
}

impl RunState {
    /// Closes an epoch with validation loss `val`: the best so far is kept, early stopping
    /// (`patience` epochs without a better loss) and the last of `epochs` finish the run.
    /// Returns whether `val` is the best so far.
    pub fn end_epoch(&mut self, val: f32, patience: u32, epochs: u32) -> bool {
        let improved = self.best_val.is_none_or(|b| val < b);
        if improved {
            self.best_val = Some(val);
            self.best_epoch = Some(self.epoch);
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
        }
        self.epoch += 1;
        self.epoch_step = 0;
        self.finished = self.epochs_without_improvement >= patience || self.epoch >= epochs;
        improved
    }
}

/// Where a --resume starts: the checkpoint's state and buffers, after checking that it is of
/// the same configuration (all but `--loss-weight-max`) and holds the optimizer state; and a
/// note for the log when the rate, the levels or the loss weight change.
pub(super) fn resume(
    path: &Path,
    config: &RunConfig,
    layout: &ParamLayout,
    lr: f32,
    level_max: u32,
) -> Result<(RunState, Buffers, String)> {
    if !path.exists() {
        return Err(Error::checkpoint(format!(
            "--resume: no checkpoint at {}",
            path.display()
        )));
    }
    let meta = read_state(path)?;
    // The loss weight is the objective, not the model: like the rate, it may change.
    let mut stored = meta.config.clone();
    let weight_before = stored.model.loss_weight_max;
    stored.model.loss_weight_max = config.model.loss_weight_max;
    if stored != *config {
        return Err(Error::checkpoint(format!(
            "{} is from another configuration: {}",
            path.display(),
            config_diff(config, &stored)
        )));
    }
    let b = checkpoint::load(path, layout)?.buffers;
    if b.adam_m.is_none() || b.adam_v.is_none() || b.ema.is_none() {
        return Err(Error::checkpoint(format!(
            "{} lacks the optimizer state needed to resume",
            path.display()
        )));
    }
    let mut note = String::new();
    if meta.lr != lr {
        note = format!(" at lr {lr} (it ran at lr {} before)", meta.lr);
    }
    let before = meta.level_max.unwrap_or(config.n_max);
    if before != level_max {
        note += &format!(", drawing levels 0..={level_max} (0..={before} before)");
    }
    let mut state = meta.state;
    if weight_before != config.model.loss_weight_max {
        note += &format!(
            ", loss weight <= {} (<= {weight_before} before; the best validation loss restarts)",
            config.model.loss_weight_max
        );
        // The validation loss is weighed by W too: losses before and after do not compare.
        state.best_val = None;
        state.epochs_without_improvement = 0;
    }
    Ok((state, b, note))
}

/// The run configuration stored in a checkpoint (to sample from it or resume it).
pub fn read_run_config(path: &Path) -> Result<RunConfig> {
    Ok(read_state(path)?.config)
}

fn read_state(path: &Path) -> Result<Meta> {
    let meta = checkpoint::read_meta(path)?;
    serde_json::from_value(meta).map_err(|e| {
        Error::checkpoint(format!(
            "{} is not a training checkpoint of this version: {e}",
            path.display()
        ))
    })
}

/// Names the fields in which two run configurations differ.
fn config_diff(a: &RunConfig, b: &RunConfig) -> String {
    let (ja, jb) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    let mut diffs = Vec::new();
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let null = serde_json::Value::Null;
                let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
                for k in keys {
                    let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, va, vb, out);
                }
            }
            _ if a != b => out.push(format!("{prefix} {b} (checkpoint) vs {a} (flags)")),
            _ => {}
        }
    }
    walk("", &ja, &jb, &mut diffs);
    diffs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::RunState;

    /// Best epoch, patience and the epoch limit, over a made-up series of validation losses.
    #[test]
    fn end_epoch_keeps_the_best_and_stops() {
        let mut s = RunState::default();
        let vals = [0.5, 0.4, 0.45, 0.41, 0.39, 0.4, 0.42];
        let mut improved = Vec::new();
        for v in vals {
            improved.push(s.end_epoch(v, 2, 100));
            if s.finished {
                break;
            }
        }
        assert_eq!(improved, [true, true, false, false]);
        assert_eq!((s.best_epoch, s.best_val), (Some(1), Some(0.4)));
        assert_eq!((s.epoch, s.epochs_without_improvement), (4, 2));
        assert!(s.finished, "two epochs without a better loss");
        // The epoch limit finishes a run that still improves.
        let mut s = RunState::default();
        assert!(s.end_epoch(1.0, 5, 2) && !s.finished);
        assert!(s.end_epoch(0.9, 5, 2) && s.finished);
        assert_eq!(s.epoch_step, 0);
    }
}
