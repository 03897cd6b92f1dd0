//! Host side of `shaders/skip.wgsl`: the model's output skip term (`--skip wiener`).

use super::{check_count, expect_len};
use crate::config::{PIXEL_MEAN, PIXEL_VAR};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    tokens: u32,
    patches: u32,
    dim: u32,
}

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: the patch tokens get
/// y = c (A - a^n MEAN) + q (x - A) (see the shader), the conditioning token (t = P = T - 1)
/// is copied.
pub fn skip_forward(
    gpu: &Gpu,
    x: &GpuTensor,
    tokens: &GpuTensor,
    y: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    dispatch(gpu, "skip_forward", x, tokens, y, batch, t, d)
}

/// dy [B, T, D], tokens [B, T, D] -> dx [B, T, D] = q dy on the patch tokens (dy on the
/// conditioning token): the gradient w.r.t. the last layer's output.
pub fn skip_backward(
    gpu: &Gpu,
    dy: &GpuTensor,
    tokens: &GpuTensor,
    dx: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    dispatch(gpu, "skip_backward", dy, tokens, dx, batch, t, d)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    gpu: &Gpu,
    entry: &str,
    x: &GpuTensor,
    tokens: &GpuTensor,
    y: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    if batch == 0 || t < 2 || d == 0 {
        return Err(Error::config(format!(
            "{entry}: need B >= 1, T >= 2, D >= 1, got B={batch} T={t} D={d}"
        )));
    }
    let n = batch * t * d;
    check_count(entry, n)?;
    for v in [x, tokens, y] {
        expect_len(entry, v, n)?;
    }
    let constants = [
        ("WG", WG_1D as f64),
        ("MEAN", PIXEL_MEAN as f64),
        ("VAR", PIXEL_VAR as f64),
    ];
    let p = Params {
        n: n as u32,
        tokens: t as u32,
        patches: (t - 1) as u32,
        dim: d as u32,
    };
    super::dispatch_1d(
        gpu,
        "skip",
        entry,
        &constants,
        &p,
        n,
        &[(1, x), (2, tokens), (3, y)],
    )
}
