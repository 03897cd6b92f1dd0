//! What a training checkpoint says about its run: the configuration that defines it, where it
//! stands, and the rate and levels it ran at.

use crate::checkpoint;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
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

/// The run configuration stored in a checkpoint (to sample from it or resume it).
pub fn read_run_config(path: &Path) -> Result<RunConfig> {
    Ok(read_state(path)?.config)
}

pub(super) fn read_state(path: &Path) -> Result<Meta> {
    let meta = checkpoint::read_meta(path)?;
    serde_json::from_value(meta).map_err(|e| {
        Error::checkpoint(format!(
            "{} is not a training checkpoint of this version: {e}",
            path.display()
        ))
    })
}

/// Names the fields in which two run configurations differ.
pub(super) fn config_diff(a: &RunConfig, b: &RunConfig) -> String {
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
