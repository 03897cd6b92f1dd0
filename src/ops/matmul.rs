//! The dense layer (`docs/model.md` §3): forward `y = x·w + b` and its backward, on the GEMM
//! kernels of [`crate::ops::gemm`] with the kernel and blocking [`crate::ops::tune`] chooses
//! for each shape. The kernels themselves, their blockings and [`colsum`] are re-exported here
//! so that `ops::matmul` names the whole GEMM surface.

pub use super::gemm::{
    colsum, flops, gemm, gemm_with, Gemm, MatmulKernel, RegisterBlocking, TiledBlocking, Tuning,
    COLSUM_COLS, COLSUM_ROWS, KERNEL_ENV, NAIVE_WG, REGISTER, TILED,
};
use super::tune;
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

/// [`gemm`] with the kernel and blocking that the tuner chooses for this shape
/// ([`tune::choose`]: forced, built-in, cached or timed now).
pub fn gemm_auto(
    gpu: &Gpu,
    spec: Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<Dispatch> {
    let choice = tune::choose(gpu, &spec)?;
    gemm_with(gpu, choice.kernel, &choice.tuning, spec, a, b, bias, c)
}

/// Dense layer forward: `y[m, n] = x[m, k]·w[k, n] (+ bias[n])`, with [`gemm_auto`]'s kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    m: usize,
    k: usize,
    n: usize,
) -> Result<Dispatch> {
    gemm_auto(gpu, Gemm::new(m, k, n), x, w, bias, y)
}

/// Dense layer backward given `dy[m, n]`, with [`gemm_auto`]'s kernels: `dx[m, k] = dy·wᵀ`
/// (added into `dx` when `accumulate_dx`), `dw[k, n] = xᵀ·dy` and `db[n] = Σ_m dy` (both
/// written). Three dispatches, independent of each other.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
    dw: &GpuTensor,
    db: &GpuTensor,
    m: usize,
    k: usize,
    n: usize,
    accumulate_dx: bool,
) -> Result<Vec<Dispatch>> {
    let dx_spec = Gemm {
        m,
        n: k,
        k: n,
        trans_a: false,
        trans_b: true,
        accumulate: accumulate_dx,
    };
    let dw_spec = Gemm {
        m: k,
        n,
        k: m,
        trans_a: true,
        trans_b: false,
        accumulate: false,
    };
    Ok(vec![
        gemm_auto(gpu, dx_spec, dy, w, None, dx)?,
        gemm_auto(gpu, dw_spec, x, dy, None, dw)?,
        colsum(gpu, dy, db, m, n, false)?,
    ])
}
