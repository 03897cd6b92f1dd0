//! Host side of `shaders/loss.wgsl`: the MSE loss (`MseForward`, which writes into an on-GPU
//! loss history, and `mse_backward`), weighted per sample by its level.

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

/// Threads of the one `mse_forward` workgroup (`RWG` in the shader).
const MSE_THREADS: u64 = crate::gpu::kernels::REDUCE_WG as u64;

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
        &[],
    )
}
