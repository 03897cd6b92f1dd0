//! Host side of `shaders/classifier.wgsl`: the MNIST classifier's own ops — ReLU
//! forward and backward, softmax cross-entropy forward ([`SoftmaxXentForward`]: per-sample
//! losses and probabilities, plus the mean loss written into an on-GPU history slot) and
//! backward, and the predicted label ([`argmax`]). The dense layers are
//! [`matmul_forward`](super::matmul::matmul_forward) /
//! [`matmul_backward`](super::matmul::matmul_backward).
//!
//! A classifier step: `matmul_forward → relu_forward → … → matmul_forward` (logits),
//! `SoftmaxXentForward`, `softmax_xent_backward`, then back through `matmul_backward` and
//! `relu_backward`.

use super::{check_count, check_loops, expect_len};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    batch: u32,
    classes: u32,
    slot: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Threads of the one `xent_mean` workgroup (`RWG` in the shader).
const MEAN_THREADS: u64 = crate::gpu::kernels::REDUCE_WG as u64;

fn constants() -> [(&'static str, f64); 1] {
    [("WG", WG_1D as f64)]
}

/// The output must not share a buffer with an input: one dispatch cannot bind a buffer both
/// read-only and read-write.
fn check_distinct(op: &str, out: &GpuTensor, inputs: &[&GpuTensor]) -> Result<()> {
    for t in inputs {
        if t.buffer == out.buffer {
            return Err(Error::gpu(format!(
                "{op}: output {} shares a buffer with input {}: write into a separate buffer",
                out.label, t.label
            )));
        }
    }
    Ok(())
}

/// Errors unless there is at least one row and one class, and B·C fits the kernels' indices.
fn check_rows(op: &str, batch: usize, classes: usize) -> Result<()> {
    if batch == 0 || classes == 0 {
        return Err(Error::config(format!(
            "{op}: need batch and classes >= 1, got B={batch} C={classes}"
        )));
    }
    check_count(op, batch * classes)
}

/// A dispatch of `entry` over `threads` 1-D threads with `bindings` after the uniform.
fn dispatch(
    gpu: &Gpu,
    entry: &str,
    p: &Params,
    threads: usize,
    bindings: &[(u32, &GpuTensor)],
) -> Result<Dispatch> {
    super::dispatch_1d(
        gpu,
        "classifier",
        entry,
        &constants(),
        p,
        threads,
        bindings,
        &[],
    )
}

fn relu_check(op: &str, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor) -> Result<usize> {
    let n = a.len();
    expect_len(op, b, n)?;
    expect_len(op, out, n)?;
    check_count(op, n)?;
    check_distinct(op, out, &[a, b])?;
    Ok(n)
}

/// x [n] -> y [n] = max(x, 0). `y` must be a different buffer from `x`.
pub fn relu_forward(gpu: &Gpu, x: &GpuTensor, y: &GpuTensor) -> Result<Dispatch> {
    let n = relu_check("relu_forward", x, x, y)?;
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    dispatch(gpu, "relu_forward", &p, n, &[(1, x), (2, y)])
}

/// x [n] (the forward's input), dy [n] -> dx [n] = dy · [x > 0] (written, not accumulated).
pub fn relu_backward(gpu: &Gpu, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) -> Result<Dispatch> {
    let n = relu_check("relu_backward", x, dy, dx)?;
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    dispatch(gpu, "relu_backward", &p, n, &[(1, x), (3, dy), (4, dx)])
}

/// Softmax cross-entropy forward, prepared once: logits [B, C], labels [B] (u32) ->
/// `probs` [B, C] (kept for the backward and for confidences), `losses` [B] (per sample,
/// `logsumexp(logits) − logits[label]`), and the mean loss written to `history[slot]`
/// ([`SoftmaxXentForward::set_slot`] picks the slot). Record [`rows`](Self::rows) then
/// [`mean`](Self::mean) (or [`dispatches`](Self::dispatches)). A label ≥ C names no class:
/// its loss is the logsumexp alone.
pub struct SoftmaxXentForward {
    /// One thread per row: probabilities and per-sample losses.
    pub rows: Dispatch,
    /// One workgroup: the mean of `losses` into `history[slot]`.
    pub mean: Dispatch,
    params: wgpu::Buffer,
    base: Params,
    history_len: u32,
}

impl SoftmaxXentForward {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        logits: &GpuTensor,
        labels: &GpuTensor,
        probs: &GpuTensor,
        losses: &GpuTensor,
        history: &GpuTensor,
        batch: usize,
        classes: usize,
    ) -> Result<SoftmaxXentForward> {
        let op = "softmax_xent_forward";
        check_rows(op, batch, classes)?;
        expect_len(op, logits, batch * classes)?;
        expect_len(op, labels, batch)?;
        expect_len(op, probs, batch * classes)?;
        expect_len(op, losses, batch)?;
        check_distinct(op, probs, &[logits, labels])?;
        check_distinct(op, losses, &[logits, labels])?;
        check_distinct(op, history, &[losses])?;
        if probs.buffer == losses.buffer {
            return Err(Error::gpu(format!(
                "{op}: probs {} and losses {} share a buffer",
                probs.label, losses.label
            )));
        }
        if history.is_empty() || history.len() > u32::MAX as usize {
            return Err(Error::config(format!(
                "{op}: loss history {} has {} slots",
                history.label,
                history.len()
            )));
        }
        check_loops(gpu, op, 3 * classes as u64)?;
        check_loops(
            gpu,
            "xent_mean",
            (batch as u64).div_ceil(4 * MEAN_THREADS) + 8,
        )?;
        let base = Params {
            n: batch as u32,
            batch: batch as u32,
            classes: classes as u32,
            slot: 0,
            scale: (1.0 / batch as f64) as f32,
            _pad: [0; 3],
        };
        let params = gpu.uniform("softmax_xent_forward-params", &base);
        let k = gpu.kernel("classifier", "softmax_xent_forward", &constants())?;
        let rows = gpu.dispatch(
            &k,
            &[
                (0, params.as_entire_binding()),
                (5, logits.bind()),
                (6, labels.bind()),
                (7, probs.bind()),
                (8, losses.bind()),
            ],
            gpu.groups_1d(batch as u64, WG_1D)?,
        )?;
        let k = gpu.kernel("classifier", "xent_mean", &constants())?;
        let mean = gpu.dispatch(
            &k,
            &[
                (0, params.as_entire_binding()),
                (9, losses.bind()),
                (10, history.bind()),
            ],
            [1, 1, 1],
        )?;
        Ok(SoftmaxXentForward {
            rows,
            mean,
            params,
            base,
            history_len: history.len() as u32,
        })
    }

    /// Both dispatches, in order.
    pub fn dispatches(&self) -> [&Dispatch; 2] {
        [&self.rows, &self.mean]
    }

    /// Sets the history slot (taken modulo the history length: a ring) the next submission
    /// writes the mean loss to. A 32-byte queue write: no allocation, no readback.
    pub fn set_slot(&self, gpu: &Gpu, slot: u32) {
        let p = Params {
            slot: slot % self.history_len,
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}

/// probs [B, C] (from [`SoftmaxXentForward`]), labels [B] -> dlogits [B, C] =
/// (probs − onehot(labels)) / B, the gradient of the mean loss (written, not accumulated).
pub fn softmax_xent_backward(
    gpu: &Gpu,
    probs: &GpuTensor,
    labels: &GpuTensor,
    dlogits: &GpuTensor,
    batch: usize,
    classes: usize,
) -> Result<Dispatch> {
    let op = "softmax_xent_backward";
    check_rows(op, batch, classes)?;
    expect_len(op, probs, batch * classes)?;
    expect_len(op, labels, batch)?;
    expect_len(op, dlogits, batch * classes)?;
    check_distinct(op, dlogits, &[probs, labels])?;
    let n = batch * classes;
    let p = Params {
        n: n as u32,
        batch: batch as u32,
        classes: classes as u32,
        scale: (1.0 / batch as f64) as f32,
        ..Default::default()
    };
    dispatch(gpu, op, &p, n, &[(11, probs), (6, labels), (12, dlogits)])
}

/// logits [B, C] -> pred [B] (u32): the first index of each row's maximum (the predicted
/// label; probabilities work as well as logits). Read `pred` back and use [`accuracy`].
pub fn argmax(
    gpu: &Gpu,
    logits: &GpuTensor,
    pred: &GpuTensor,
    batch: usize,
    classes: usize,
) -> Result<Dispatch> {
    let op = "argmax";
    check_rows(op, batch, classes)?;
    expect_len(op, logits, batch * classes)?;
    expect_len(op, pred, batch)?;
    check_distinct(op, pred, &[logits])?;
    check_loops(gpu, op, classes as u64)?;
    let p = Params {
        n: batch as u32,
        batch: batch as u32,
        classes: classes as u32,
        ..Default::default()
    };
    dispatch(gpu, op, &p, batch, &[(5, logits), (13, pred)])
}

/// The fraction of `pred` equal to `labels` (host side, after reading `pred` back); 0 when
/// empty.
pub fn accuracy(pred: &[u32], labels: &[u32]) -> f64 {
    assert_eq!(pred.len(), labels.len(), "accuracy: lengths differ");
    if pred.is_empty() {
        return 0.0;
    }
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / pred.len() as f64
}
