//! Host side of each op: checks shapes, builds the specialised pipeline and the bind group
//! once, and returns a prepared [`Dispatch`](crate::gpu::Dispatch) (or an op struct holding
//! one, when a small per-step value must be updated).

pub mod adam;
pub mod attention;
pub mod classifier;
pub mod loss;
pub mod matmul;
pub mod noise;
pub mod patches;

use crate::error::{Error, Result};
use crate::gpu::GpuTensor;

/// Errors unless `t` holds exactly `len` elements.
pub(crate) fn expect_len(op: &str, t: &GpuTensor, len: usize) -> Result<()> {
    if t.len() != len {
        return Err(Error::gpu(format!(
            "{op}: tensor {} has {} elements, expected {len}",
            t.label,
            t.len()
        )));
    }
    Ok(())
}
