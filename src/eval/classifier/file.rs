//! The classifier's file: weights, metadata and the FID's reference statistics in one
//! safetensors file, written atomically, read once, trained again when it is of an older
//! format.

use super::{layout, param_count, train, Classifier, ClassifierMeta, ClassifierSettings, FEATURES};
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::eval::fid;
use crate::gpu::Gpu;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Marks classifier files and their version.
pub const FORMAT: &str = "wgpu-diffusion-classifier/2";
/// Names of the cached FID reference statistics in the classifier file.
const STATS_MEAN: &str = "fid.test_mean";
const STATS_COV: &str = "fid.test_cov";

impl Classifier {
    /// Writes the weights and metadata to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut views = Vec::new();
        for (name, off, shape) in layout() {
            let len: usize = shape.iter().product();
            let bytes: &[u8] = bytemuck::cast_slice(&self.params[off..off + len]);
            let view = TensorView::new(Dtype::F32, shape, bytes)
                .map_err(|e| Error::io(format!("classifier tensor {name}: {e}")))?;
            views.push((name.to_string(), view));
        }
        let d = self.test_stats.dim();
        let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (mean_bytes, cov_bytes) = (
            f64_bytes(&self.test_stats.mean),
            f64_bytes(&self.test_stats.cov),
        );
        for (name, shape, bytes) in [
            (STATS_MEAN, vec![d], &mean_bytes),
            (STATS_COV, vec![d, d], &cov_bytes),
        ] {
            let view = TensorView::new(Dtype::F64, shape, bytes)
                .map_err(|e| Error::io(format!("classifier tensor {name}: {e}")))?;
            views.push((name.to_string(), view));
        }
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| Error::io(format!("classifier metadata: {e}")))?;
        let info = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("meta".to_string(), meta),
        ]);
        let bytes = safetensors::serialize(views, Some(info))
            .map_err(|e| Error::io(format!("cannot serialise {}: {e}", path.display())))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", dir.display())))?;
        }
        crate::checkpoint::write_atomic(path, &bytes)
    }

    /// Reads a file written by [`Classifier::save`]; any problem is a checkpoint error (exit 2).
    pub fn load(path: &Path) -> Result<Classifier> {
        Classifier::from_bytes(path, &read_file(path)?)
    }

    /// Parses the bytes of a classifier file (`path` names it in errors).
    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Classifier> {
        let bad = |m: String| {
            Error::checkpoint(format!(
                "classifier {} is corrupt or not a classifier file ({m}); delete it or pass --retrain",
                path.display()
            ))
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let info = md.metadata().clone().unwrap_or_default();
        if info.get("format").map(|s| s.as_str()) != Some(FORMAT) {
            return Err(bad(format!("format is not {FORMAT}")));
        }
        let meta: ClassifierMeta =
            serde_json::from_str(info.get("meta").ok_or_else(|| bad("no metadata".into()))?)
                .map_err(|e| bad(e.to_string()))?;
        let mut params = vec![0.0f32; param_count()];
        for (name, off, shape) in layout() {
            let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let len: usize = shape.iter().product();
            for (dst, c) in params[off..off + len]
                .iter_mut()
                .zip(t.data().chunks_exact(4))
            {
                *dst = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        if params.iter().any(|v| !v.is_finite()) {
            return Err(bad("non-finite weights".into()));
        }
        let read_f64 = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            if t.dtype() != Dtype::F64 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F64 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let v: Vec<f64> = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("non-finite values in {name}")));
            }
            Ok(v)
        };
        let test_stats = fid::Stats {
            mean: read_f64(STATS_MEAN, &[FEATURES])?,
            cov: read_f64(STATS_COV, &[FEATURES, FEATURES])?,
            n: meta.test_images,
        };
        Ok(Classifier {
            params,
            meta,
            test_stats,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::checkpoint(format!("cannot read classifier {}: {e}", path.display())))
}

/// Whether `bytes` are a classifier file of an older version of this program (its format
/// names another version): the cache is then stale and is trained again rather than refused.
fn is_stale(bytes: &[u8]) -> bool {
    let Ok((_, md)) = SafeTensors::read_metadata(bytes) else {
        return false;
    };
    let format = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned())
        .unwrap_or_default();
    format.starts_with("wgpu-diffusion-classifier/") && format != FORMAT
}

/// The cached classifier at `path`, read once, before any long work starts: `None` when the
/// file is absent or stale (of an older format: it will be trained again), an error when it
/// is anything else that does not load (corrupt, not a classifier).
pub fn read_cached(path: &Path) -> Result<Option<Classifier>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_file(path)?;
    if is_stale(&bytes) {
        return Ok(None);
    }
    Classifier::from_bytes(path, &bytes).map(Some)
}

/// `cached` (from [`read_cached`]) or, when there is none, a classifier trained now with
/// `settings` and cached at `path`. The flag says whether it was trained now.
pub fn cached_or_train(
    gpu: &Gpu,
    path: &Path,
    cached: Option<Classifier>,
    mnist: &Mnist,
    settings: &ClassifierSettings,
) -> Result<(Classifier, bool)> {
    if let Some(c) = cached {
        return Ok((c, false));
    }
    let c = train(gpu, mnist, settings)?;
    c.save(path)?;
    Ok((c, true))
}
