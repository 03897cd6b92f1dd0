//! Checkpoints in safetensors format: named f32 tensors for the weights (and optionally EMA
//! weights and Adam's m and v), plus JSON metadata with the configuration and the training
//! state. Written to a temporary file, synced, then renamed: a crash never leaves a torn file.
//!
//! Tensor names: `params.<name>`, `ema.<name>`, `adam_m.<name>`, `adam_v.<name>` where `<name>`
//! is a tensor of [`ParamLayout`] (e.g. `layer0.w_qkv`).

use crate::error::{Error, Result};
pub use crate::files::write_atomic;
use crate::model::ParamLayout;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub mod run;
pub use run::{read_run_config, read_state_bytes, RunConfig, RunState};

/// Marks our files and their version.
pub const FORMAT: &str = "wgpu-diffusion/1";

/// The flat buffers a checkpoint may hold, each `layout.total` long.
#[derive(Clone, Debug, Default)]
pub struct Buffers {
    pub params: Vec<f32>,
    pub ema: Option<Vec<f32>>,
    pub adam_m: Option<Vec<f32>>,
    pub adam_v: Option<Vec<f32>>,
}

const GROUPS: [&str; 4] = ["params", "ema", "adam_m", "adam_v"];

/// Writes `buffers` with `meta` (any JSON object: config and state) to `path` atomically.
pub fn save(
    path: &Path,
    layout: &ParamLayout,
    buffers: &Buffers,
    meta: &serde_json::Value,
) -> Result<()> {
    let groups: [Option<&Vec<f32>>; 4] = [
        Some(&buffers.params),
        buffers.ema.as_ref(),
        buffers.adam_m.as_ref(),
        buffers.adam_v.as_ref(),
    ];
    let mut views = Vec::new();
    for (group, data) in GROUPS.iter().zip(groups) {
        let Some(data) = data else { continue };
        assert_eq!(data.len(), layout.total, "{group} buffer length");
        for t in &layout.tensors {
            let bytes: &[u8] = bytemuck::cast_slice(&data[t.range()]);
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .map_err(|e| Error::io(format!("checkpoint tensor {group}.{}: {e}", t.name)))?;
            views.push((format!("{group}.{}", t.name), view));
        }
    }
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("meta".to_string(), meta.to_string());
    let bytes = safetensors::serialize(views, Some(info)).map_err(|e| {
        Error::io(format!(
            "cannot serialise checkpoint {}: {e}",
            path.display()
        ))
    })?;
    write_atomic(path, &bytes)
}

/// A loaded checkpoint: its metadata and the buffers it holds, in `layout`'s flat order.
pub struct Loaded {
    pub meta: serde_json::Value,
    pub buffers: Buffers,
}

/// Reads only the metadata (to learn the configuration before building a layout).
pub fn read_meta(path: &Path) -> Result<serde_json::Value> {
    read_meta_bytes(&read(path)?, &path.display().to_string())
}

/// [`read_meta`] of a checkpoint's bytes; `name` names it in errors.
pub fn read_meta_bytes(bytes: &[u8], name: &str) -> Result<serde_json::Value> {
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(name, e))?;
    meta_of(name, md.metadata())
}

/// The file's bytes, or an error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::checkpoint(format!("cannot read checkpoint {}: {e}", path.display())))
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> Error {
    Error::checkpoint(format!(
        "checkpoint {name} is corrupt or not a safetensors file: {e}"
    ))
}

fn meta_of(name: &str, info: &Option<HashMap<String, String>>) -> Result<serde_json::Value> {
    let info = info.as_ref().ok_or_else(|| {
        Error::checkpoint(format!(
            "{} is a safetensors file but not a wgpu-diffusion checkpoint (no metadata)",
            name
        ))
    })?;
    match info.get("format") {
        Some(f) if f == FORMAT => {}
        other => {
            return Err(Error::checkpoint(format!(
                "{} has format {:?}, expected {FORMAT}",
                name,
                other.map(|s| s.as_str()).unwrap_or("none")
            )))
        }
    }
    let meta = info
        .get("meta")
        .ok_or_else(|| Error::checkpoint(format!("{} has no 'meta' entry", name)))?;
    serde_json::from_str(meta).map_err(|e| corrupt(name, e))
}

/// Loads a checkpoint, checking every tensor of `layout` against the file (a missing tensor
/// or a shape mismatch means the file is from another configuration).
pub fn load(path: &Path, layout: &ParamLayout) -> Result<Loaded> {
    load_bytes(&read(path)?, &path.display().to_string(), layout)
}

/// [`load`] of a checkpoint's bytes; `name` names it in errors.
pub fn load_bytes(bytes: &[u8], name: &str, layout: &ParamLayout) -> Result<Loaded> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(name, e))?;
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(name, e))?;
    let meta = meta_of(name, md.metadata())?;
    let mut out: [Option<Vec<f32>>; 4] = Default::default();
    for (gi, group) in GROUPS.iter().enumerate() {
        let present = layout
            .tensors
            .iter()
            .any(|t| st.tensor(&format!("{group}.{}", t.name)).is_ok());
        if !present {
            if gi == 0 {
                return Err(Error::checkpoint(format!(
                    "{} holds no model weights for this configuration",
                    name
                )));
            }
            continue;
        }
        let mut flat = vec![0.0f32; layout.total];
        for t in &layout.tensors {
            let name = format!("{group}.{}", t.name);
            let v = st.tensor(&name).map_err(|_| {
                Error::checkpoint(format!(
                    "{} lacks tensor {name}: it is from another configuration",
                    name
                ))
            })?;
            if v.dtype() != Dtype::F32 || v.shape() != t.shape.as_slice() {
                return Err(Error::checkpoint(format!(
                    "{}: tensor {name} is {:?} {:?}, this configuration needs F32 {:?}",
                    name,
                    v.dtype(),
                    v.shape(),
                    t.shape
                )));
            }
            let vals: Vec<f32> = bytemuck::pod_collect_to_vec(v.data());
            flat[t.range()].copy_from_slice(&vals);
        }
        out[gi] = Some(flat);
    }
    let [params, ema, adam_m, adam_v] = out;
    Ok(Loaded {
        meta,
        buffers: Buffers {
            params: params.unwrap(),
            ema,
            adam_m,
            adam_v,
        },
    })
}
