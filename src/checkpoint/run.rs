//! What a training checkpoint says about its run: the configuration that defines it, where it
//! stands, and the settings it ran with.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::settings::train::TrainSettings;
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
pub struct Meta {
    pub kind: String,
    pub config: RunConfig,
    pub state: RunState,
    pub lr: f32,
    /// The training levels' upper end (`--level-max`; like the rate, it may change on
    /// --resume); absent in older checkpoints, which drew 0..=n_max.
    #[serde(default)]
    pub level_max: Option<u32>,
    /// Every setting of the run as it was last started (absent in older checkpoints).
    #[serde(default)]
    pub settings: Option<TrainSettings>,
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

/// The run configuration stored in a checkpoint (to sample from it or resume it).
pub fn read_run_config(path: &Path) -> Result<RunConfig> {
    Ok(read_state(path)?.config)
}

pub fn read_state(path: &Path) -> Result<Meta> {
    read_state_bytes(&super::read(path)?, &path.display().to_string())
}

/// [`read_state`] of a checkpoint's bytes; `name` names it in errors.
pub fn read_state_bytes(bytes: &[u8], name: &str) -> Result<Meta> {
    let meta = super::read_meta_bytes(bytes, name)?;
    serde_json::from_value(meta).map_err(|e| {
        Error::checkpoint(format!(
            "{name} is not a training checkpoint of this version: {e}"
        ))
    })
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
