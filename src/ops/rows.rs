//! Host side of `shaders/rows.wgsl`: the model's row and element ops — the positional
//! embedding (`add_pos`, `pos_backward`), elementwise `add` / `add_inplace` / `copy`
//! (residuals and gradient accumulation), and the patch rows of [B, T, C] tensors
//! (`drop_cond`, `drop_cond_add`, `pad_cond`: the last layer works on those only).

use super::{check_count, check_loops, expect_len};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    batch: u32,
    tokens: u32,
    patches: u32,
    dim: u32,
    _pad: [u32; 3],
}

fn constants() -> [(&'static str, f64); 1] {
    [("WG", WG_1D as f64)]
}

/// An elementwise dispatch of `entry` over `threads` threads with `bindings` after the uniform.
fn elementwise(
    gpu: &Gpu,
    entry: &str,
    p: Params,
    threads: usize,
    bindings: &[(u32, &GpuTensor)],
) -> Result<Dispatch> {
    check_count(entry, threads.max(p.n as usize))?;
    super::dispatch_1d(
        gpu,
        "rows",
        entry,
        &constants(),
        &p,
        threads,
        bindings,
        &[2, 3, 6, 7, 8],
    )
}

/// tokens [B, T, D], pos [T, D] -> x_start [B, T, D] = tokens + pos (broadcast over B).
pub fn add_pos(
    gpu: &Gpu,
    tokens: &GpuTensor,
    pos: &GpuTensor,
    x_start: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    let n = batch * t * d;
    expect_len("add_pos", tokens, n)?;
    expect_len("add_pos", pos, t * d)?;
    expect_len("add_pos", x_start, n)?;
    if t * d == 0 {
        return Err(Error::config("add_pos: tokens and width must be >= 1"));
    }
    let p = Params {
        n: n as u32,
        batch: batch as u32,
        tokens: t as u32,
        dim: d as u32,
        ..Default::default()
    };
    elementwise(gpu, "add_pos", p, n, &[(1, tokens), (2, pos), (3, x_start)])
}

/// dx [B, T, D] -> dpos [T, D] = sum over the batch of dx (written, not accumulated).
pub fn pos_backward(
    gpu: &Gpu,
    dx: &GpuTensor,
    dpos: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    expect_len("pos_backward", dx, batch * t * d)?;
    expect_len("pos_backward", dpos, t * d)?;
    let p = Params {
        n: (t * d) as u32,
        batch: batch as u32,
        tokens: t as u32,
        dim: d as u32,
        ..Default::default()
    };
    check_count("pos_backward", batch * t * d)?;
    check_loops(gpu, "pos_backward", batch as u64)?;
    elementwise(gpu, "pos_backward", p, t * d, &[(4, dx), (5, dpos)])
}

fn same_len(op: &str, a: &GpuTensor, b: &GpuTensor) -> Result<usize> {
    expect_len(op, b, a.len())?;
    Ok(a.len())
}

/// y = a + b (elementwise, same lengths).
pub fn add(gpu: &Gpu, a: &GpuTensor, b: &GpuTensor, y: &GpuTensor) -> Result<Dispatch> {
    let n = same_len("add", a, b)?;
    same_len("add", a, y)?;
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    elementwise(gpu, "add", p, n, &[(6, a), (7, b), (8, y)])
}

/// y += a (elementwise, same lengths; `y` and `a` must be different buffers).
pub fn add_inplace(gpu: &Gpu, y: &GpuTensor, a: &GpuTensor) -> Result<Dispatch> {
    let n = same_len("add_inplace", y, a)?;
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    elementwise(gpu, "add_inplace", p, n, &[(6, a), (8, y)])
}

/// dst = src (same lengths).
pub fn copy(gpu: &Gpu, src: &GpuTensor, dst: &GpuTensor) -> Result<Dispatch> {
    let n = same_len("copy", src, dst)?;
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    elementwise(gpu, "copy", p, n, &[(6, src), (8, dst)])
}

/// A [B, T, C] tensor's rows: B samples of T tokens, the first P of them the patch tokens
/// (P = T - 1 in the model: the last is the conditioning token), each C wide.
#[derive(Clone, Copy, Debug)]
pub struct TokenRows {
    pub batch: usize,
    pub tokens: usize,
    pub patches: usize,
    pub width: usize,
}

/// `entry`'s dispatch from x to y, one thread per element of y: [B, T, C] -> [B, P, C], or
/// the other way with `to_all`.
fn rows_op(
    gpu: &Gpu,
    entry: &str,
    x: &GpuTensor,
    y: &GpuTensor,
    r: TokenRows,
    to_all: bool,
) -> Result<Dispatch> {
    let (b, t, p, c) = (r.batch, r.tokens, r.patches, r.width);
    if p == 0 || p >= t || c == 0 {
        return Err(Error::config(format!(
            "{entry}: need 1 <= P < T and C >= 1 (P = {p}, T = {t}, C = {c})"
        )));
    }
    let (x_rows, y_rows) = if to_all { (p, t) } else { (t, p) };
    expect_len(entry, x, b * x_rows * c)?;
    expect_len(entry, y, b * y_rows * c)?;
    let n = b * y_rows * c;
    let prm = Params {
        n: n as u32,
        batch: b as u32,
        tokens: t as u32,
        patches: p as u32,
        dim: c as u32,
        ..Default::default()
    };
    elementwise(gpu, entry, prm, n, &[(6, x), (8, y)])
}

/// x [B, T, C] -> y [B, P, C]: each sample's P patch rows (the conditioning row dropped).
pub fn drop_cond(gpu: &Gpu, x: &GpuTensor, y: &GpuTensor, r: TokenRows) -> Result<Dispatch> {
    rows_op(gpu, "drop_cond", x, y, r, false)
}

/// y [B, P, C] += drop_cond(x [B, T, C]).
pub fn drop_cond_add(gpu: &Gpu, x: &GpuTensor, y: &GpuTensor, r: TokenRows) -> Result<Dispatch> {
    rows_op(gpu, "drop_cond_add", x, y, r, false)
}

/// x [B, P, C] -> y [B, T, C]: x's rows in place, zeros in the conditioning rows (written).
/// drop_cond's backward, and its way back in the forward pass.
pub fn pad_cond(gpu: &Gpu, x: &GpuTensor, y: &GpuTensor, r: TokenRows) -> Result<Dispatch> {
    rows_op(gpu, "pad_cond", x, y, r, true)
}
