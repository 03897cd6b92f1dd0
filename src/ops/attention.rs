//! Host side of `shaders/attention.wgsl`: the multi-head self-attention core
//! (`softmax(Q K^T / sqrt(K)) V` per sample and head) and its backward pass.
//!
//! `qkv` is [B*T, 3*H*K] (Q | K | V side by side, head h at columns h*K..(h+1)*K of each
//! block), `o` / `d_o` are [B*T, H*K], `probs` is [B, H, T, T].

use super::expect_len;
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

pub use crate::math::shapes::AttentionShape;

/// The shape is one the kernels handle on this adapter.
fn check(s: &AttentionShape, gpu: &Gpu, op: &str, iterations: u64) -> Result<()> {
    if s.batch == 0 || s.tokens == 0 || s.heads == 0 || s.key_dim == 0 {
        return Err(Error::config(format!(
            "{op}: batch, tokens, heads and key_dim must all be >= 1, got {s:?}"
        )));
    }
    if s.tokens > MAX_TOKENS {
        return Err(Error::config(format!(
            "{op}: {} tokens, more than the {MAX_TOKENS} the attention kernels handle",
            s.tokens
        )));
    }
    if let Some(cap) = loop_cap(gpu) {
        if iterations > cap {
            return Err(Error::adapter(format!(
                "{op}: T={} K={} needs {iterations} loop iterations per invocation, over \
                 the {cap} that {} runs before it silently ends loops",
                s.tokens, s.key_dim, gpu.info.name
            )));
        }
    }
    // Every index the kernels form must fit a u32.
    let biggest = s.qkv_len().max(s.probs_len());
    if biggest as u64 > u32::MAX as u64 {
        return Err(Error::config(format!(
            "{op}: {s:?} needs {biggest} elements in one tensor, over the 2^32 a kernel can \
             index"
        )));
    }
    Ok(())
}

/// Most tokens the attention kernels handle (`MAX_T` in the shader).
pub const MAX_TOKENS: usize = 1024;

/// The adapter's per-invocation loop-iteration cap ([`Gpu::loop_cap`]).
pub fn loop_cap(gpu: &Gpu) -> Option<u64> {
    gpu.loop_cap()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    tokens: u32,
    heads: u32,
    key_dim: u32,
    scale: f32,
    _pad: [u32; 3],
}

fn params(gpu: &Gpu, s: &AttentionShape) -> wgpu::Buffer {
    gpu.uniform(
        "attention-params",
        &Params {
            batch: s.batch as u32,
            tokens: s.tokens as u32,
            heads: s.heads as u32,
            key_dim: s.key_dim as u32,
            scale: s.scale() as f32,
            _pad: [0; 3],
        },
    )
}

/// qkv [B*T, 3HK] -> o [B*T, HK], probs [B, H, T, T]. One thread per (sample, head, query).
pub fn attention_forward(
    gpu: &Gpu,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    o: &GpuTensor,
    probs: &GpuTensor,
) -> Result<Dispatch> {
    check(shape, gpu, "attention_forward", shape.loop_iterations().0)?;
    expect_len("attention_forward", qkv, shape.qkv_len())?;
    expect_len("attention_forward", o, shape.o_len())?;
    expect_len("attention_forward", probs, shape.probs_len())?;
    let k = gpu.kernel("attention", "attention_forward", &[("WG", WG_1D as f64)])?;
    let p = params(gpu, shape);
    let threads = (shape.batch * shape.heads * shape.tokens) as u64;
    let groups = gpu.groups_1d(threads, WG_1D)?;
    gpu.dispatch(
        &k,
        &[
            (0, p.as_entire_binding()),
            (1, qkv.bind()),
            (2, o.bind()),
            (3, probs.bind()),
        ],
        groups,
    )
}

/// qkv [B*T, 3HK], probs [B, H, T, T] (from the forward pass), d_o [B*T, HK]
/// -> dqkv [B*T, 3HK] (written, not accumulated). One workgroup per (sample, head).
pub fn attention_backward(
    gpu: &Gpu,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    probs: &GpuTensor,
    d_o: &GpuTensor,
    dqkv: &GpuTensor,
) -> Result<Dispatch> {
    check(shape, gpu, "attention_backward", shape.loop_iterations().1)?;
    expect_len("attention_backward", qkv, shape.qkv_len())?;
    expect_len("attention_backward", probs, shape.probs_len())?;
    expect_len("attention_backward", d_o, shape.o_len())?;
    expect_len("attention_backward", dqkv, shape.qkv_len())?;
    let k = gpu.kernel(
        "attention",
        "attention_backward",
        &[("BWG", shape.backward_workgroup() as f64)],
    )?;
    let p = params(gpu, shape);
    // One workgroup per (sample, head).
    let groups = gpu.groups_1d((shape.batch * shape.heads) as u64, 1)?;
    gpu.dispatch(
        &k,
        &[
            (0, p.as_entire_binding()),
            (1, qkv.bind()),
            (4, probs.bind()),
            (5, d_o.bind()),
            (6, dqkv.bind()),
        ],
        groups,
    )
}
