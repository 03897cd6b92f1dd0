//! Host side of `shaders/label.wgsl`: the label embedding of a class-conditional model
//! (`label_forward` adds a table row to each sample's conditioning token, `label_backward`
//! gathers the table's gradient).

use super::{check_count, check_loops, expect_len};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    tokens: u32,
    dim: u32,
    rows: u32,
}

/// The shapes of a label embedding: B samples of T tokens of width D, a table of `rows` rows.
#[derive(Clone, Copy, Debug)]
pub struct LabelShape {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
    pub rows: usize,
}

impl LabelShape {
    fn check(&self, op: &str, labels: &GpuTensor, table: &GpuTensor) -> Result<Params> {
        let s = *self;
        if s.batch == 0 || s.tokens == 0 || s.dim == 0 || s.rows == 0 {
            return Err(Error::config(format!(
                "{op}: every size must be >= 1, got {s:?}"
            )));
        }
        check_count(op, s.batch * s.tokens * s.dim)?;
        expect_len(op, labels, s.batch)?;
        expect_len(op, table, s.rows * s.dim)?;
        Ok(Params {
            batch: s.batch as u32,
            tokens: s.tokens as u32,
            dim: s.dim as u32,
            rows: s.rows as u32,
        })
    }
}

fn dispatch(
    gpu: &Gpu,
    entry: &str,
    p: Params,
    threads: usize,
    bindings: &[(u32, &GpuTensor)],
) -> Result<Dispatch> {
    let constants = [("WG", WG_1D as f64)];
    super::dispatch_1d(
        gpu,
        "label",
        entry,
        &constants,
        &p,
        threads,
        bindings,
        &[2, 3],
    )
}

/// x_start [B, T, D] += table[labels[b]] on each sample's conditioning row (row T - 1);
/// labels [B] are u32 (a label past the table reads its last row, "no label").
pub fn label_forward(
    gpu: &Gpu,
    s: &LabelShape,
    labels: &GpuTensor,
    table: &GpuTensor,
    x_start: &GpuTensor,
) -> Result<Dispatch> {
    let p = s.check("label_forward", labels, table)?;
    expect_len("label_forward", x_start, s.batch * s.tokens * s.dim)?;
    let b = [(1, labels), (2, table), (3, x_start)];
    dispatch(gpu, "label_forward", p, s.batch * s.dim, &b)
}

/// dtable [ROWS, D] = for each row r, the sum of dx [B, T, D]'s conditioning rows of the
/// samples labelled r (written, not accumulated).
pub fn label_backward(
    gpu: &Gpu,
    s: &LabelShape,
    labels: &GpuTensor,
    dx: &GpuTensor,
    dtable: &GpuTensor,
) -> Result<Dispatch> {
    let p = s.check("label_backward", labels, dtable)?;
    expect_len("label_backward", dx, s.batch * s.tokens * s.dim)?;
    check_loops(gpu, "label_backward", s.batch as u64)?;
    let b = [(1, labels), (4, dx), (5, dtable)];
    dispatch(gpu, "label_backward", p, s.rows * s.dim, &b)
}
