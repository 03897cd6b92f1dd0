//! Host side of each op: checks shapes, builds the specialised pipeline and the bind group
//! once, and returns a prepared [`Dispatch`](crate::gpu::Dispatch) (or an op struct holding
//! one, when a small per-step value must be updated).

pub mod adam;
pub mod attention;
pub mod classifier;
pub mod gelu;
pub mod loss;
pub mod matmul;
pub mod noise;
pub mod patches;
pub mod skip;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};

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

/// Errors unless `n` elements can be indexed by a u32 in the kernels (with room to stride).
pub(crate) fn check_count(op: &str, n: usize) -> Result<()> {
    if n as u64 >= (u32::MAX - 1024) as u64 {
        return Err(Error::config(format!(
            "{op}: {n} elements, more than a kernel can index with 32 bits"
        )));
    }
    Ok(())
}

/// Errors when an invocation would run more loop iterations than the adapter allows
/// ([`Gpu::loop_cap`]).
pub(crate) fn check_loops(gpu: &Gpu, op: &str, iterations: u64) -> Result<()> {
    match gpu.loop_cap() {
        Some(cap) if iterations > cap => Err(Error::adapter(format!(
            "{op}: needs {iterations} loop iterations per invocation, over the {cap} that {} \
             runs before it silently ends loops",
            gpu.info.name
        ))),
        _ => Ok(()),
    }
}
