//! Resuming a run from its checkpoint.

use crate::checkpoint::run::{read_state, Meta, RunConfig, RunState};
use crate::checkpoint::{self, Buffers};
use crate::error::{Error, Result};
use crate::model::ParamLayout;
use std::path::Path;

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
    let meta = check(path, config)?;
    let weight_before = meta.config.model.loss_weight_max;
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

/// The checkpoint's metadata, after checking that it is of configuration `config` (all but
/// the loss weight, which is the objective, not the model: like the rate, it may change).
pub(super) fn check(path: &Path, config: &RunConfig) -> Result<Meta> {
    let meta = read_state(path)?;
    let mut stored = meta.config.clone();
    stored.model.loss_weight_max = config.model.loss_weight_max;
    if stored != *config {
        return Err(Error::checkpoint(format!(
            "{} is from another configuration: {}",
            path.display(),
            config_diff(config, &stored)
        )));
    }
    Ok(meta)
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
