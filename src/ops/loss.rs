//! Host side of `shaders/loss.wgsl`: the model's small ops — positional embedding
//! (`add_pos`, `pos_backward`), elementwise `add` / `add_inplace` / `copy` (residuals and
//! gradient accumulation), the patch rows of [B, T, C] tensors (`drop_cond`,
//! `drop_cond_add`, `pad_cond`: the last layer works on those only), and the MSE loss (`MseForward`, which writes into an on-GPU loss
//! history, and `mse_backward`).

use super::{check_count, check_loops, expect_len};
use crate::config::PIXEL_VAR;
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
    slot: u32,
    scale: f32,
    _pad: u32,
}

fn constants() -> [(&'static str, f64); 1] {
    [("WG", WG_1D as f64)]
}

/// Threads of the one `mse_forward` workgroup (`RWG` in the shader).
const MSE_THREADS: u64 = 256;

/// An elementwise dispatch of `entry` over `threads` threads with `bindings` after the uniform.
fn elementwise(
    gpu: &Gpu,
    entry: &str,
    p: Params,
    threads: usize,
    bindings: &[(u32, &GpuTensor)],
) -> Result<Dispatch> {
    check_count(entry, threads.max(p.n as usize))?;
    super::dispatch_1d(gpu, "loss", entry, &constants(), &p, threads, bindings)
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

/// The loss's per-sample weight (`--loss-weight-max`): sample b weighs
/// min(1 / q^2, `max`) with q the Wiener skip's residual scale at its a^n, read from the
/// model's input `tokens` [B, T, D] at [b, P, 0] (see `reference::loss::level_weight`);
/// `max` = 1 is the plain mean (the tokens are then bound but not read).
#[derive(Clone, Copy)]
pub struct LevelWeight<'a> {
    pub tokens: &'a GpuTensor,
    pub max: u32,
}

impl LevelWeight<'_> {
    fn constants(&self) -> [(&'static str, f64); 3] {
        [
            ("WG", WG_1D as f64),
            ("WEIGHT_MAX", self.max.max(1) as f64),
            ("VAR", PIXEL_VAR as f64),
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn check_mse(
    op: &str,
    out: &GpuTensor,
    target: &GpuTensor,
    weight: &LevelWeight,
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Result<()> {
    if batch == 0 || p == 0 || d == 0 || p > t || (weight.max > 1 && p == t) {
        return Err(Error::config(format!(
            "{op}: need batch, patches and width >= 1 and patches <= tokens (< tokens with a \
             loss weight, which reads the conditioning token), got B={batch} T={t} P={p} D={d}"
        )));
    }
    expect_len(op, out, batch * t * d)?;
    expect_len(op, target, batch * p * d)?;
    expect_len(op, weight.tokens, batch * t * d)?;
    check_count(op, batch * t * d)
}

/// `mse_forward`, prepared once: mean over (b, t < P, d) of w_b (out - target)^2, out
/// [B, T, D], target [B, P, D], w_b the sample's [`LevelWeight`], written to `history[slot]`;
/// [`MseForward::set_slot`] picks the slot.
pub struct MseForward {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    base: Params,
    history_len: u32,
}

impl MseForward {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        out: &GpuTensor,
        target: &GpuTensor,
        weight: LevelWeight,
        history: &GpuTensor,
        batch: usize,
        t: usize,
        p: usize,
        d: usize,
    ) -> Result<MseForward> {
        check_mse("mse_forward", out, target, &weight, batch, t, p, d)?;
        let n = (batch * p * d) as u64;
        check_loops(gpu, "mse_forward", n.div_ceil(4 * MSE_THREADS) + 8)?;
        if history.is_empty() || history.len() > u32::MAX as usize {
            return Err(Error::config(format!(
                "mse_forward: loss history {} has {} slots",
                history.label,
                history.len()
            )));
        }
        let base = Params {
            n: (batch * p * d) as u32,
            batch: batch as u32,
            tokens: t as u32,
            patches: p as u32,
            dim: d as u32,
            slot: 0,
            scale: (1.0 / (batch * p * d) as f64) as f32,
            _pad: 0,
        };
        let params = gpu.uniform("mse_forward-params", &base);
        let k = gpu.kernel("loss", "mse_forward", &weight.constants())?;
        let dispatch = gpu.dispatch(
            &k,
            &[
                (0, params.as_entire_binding()),
                (1, weight.tokens.bind()),
                (9, out.bind()),
                (10, target.bind()),
                (11, history.bind()),
            ],
            [1, 1, 1],
        )?;
        Ok(MseForward {
            dispatch,
            params,
            base,
            history_len: history.len() as u32,
        })
    }

    /// Sets the history slot (taken modulo the history length: a ring) the next submission
    /// writes the loss to. A 32-byte queue write: no allocation, no readback.
    pub fn set_slot(&self, gpu: &Gpu, slot: u32) {
        let p = Params {
            slot: slot % self.history_len,
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}

/// out [B, T, D], target [B, P, D] -> dout [B, T, D]: 2 w_b (out - target) / (B P D) on the
/// first P tokens, 0 on the rest (the conditioning token); w_b the sample's [`LevelWeight`].
#[allow(clippy::too_many_arguments)]
pub fn mse_backward(
    gpu: &Gpu,
    out: &GpuTensor,
    target: &GpuTensor,
    weight: LevelWeight,
    dout: &GpuTensor,
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Result<Dispatch> {
    check_mse("mse_backward", out, target, &weight, batch, t, p, d)?;
    expect_len("mse_backward", dout, batch * t * d)?;
    let n = batch * t * d;
    let par = Params {
        n: n as u32,
        batch: batch as u32,
        tokens: t as u32,
        patches: p as u32,
        dim: d as u32,
        slot: 0,
        scale: (2.0 / (batch * p * d) as f64) as f32,
        _pad: 0,
    };
    check_count("mse_backward", n)?;
    super::dispatch_1d(
        gpu,
        "loss",
        "mse_backward",
        &weight.constants(),
        &par,
        n,
        &[(1, weight.tokens), (9, out), (10, target), (12, dout)],
    )
}
