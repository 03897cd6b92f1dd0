//! Host side of `shaders/attention.wgsl`: the multi-head self-attention core
//! (`softmax(Q K^T / sqrt(K)) V` per sample and head) and its backward pass.
//!
//! `qkv` is [B*T, 3*H*K] (Q | K | V side by side, head h at columns h*K..(h+1)*K of each
//! block), `o` / `d_o` are [B*T, H*K], `probs` is [B, H, T, T].

use super::expect_len;
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Samples B.
    pub batch: usize,
    /// Tokens per sample T.
    pub tokens: usize,
    /// Heads H.
    pub heads: usize,
    /// Key (and value) dimension K of each head.
    pub key_dim: usize,
}

impl AttentionShape {
    /// Rows M = B*T.
    pub fn rows(&self) -> usize {
        self.batch * self.tokens
    }
    /// H*K: width of `o`, and of each of the Q, K, V blocks of `qkv`.
    pub fn hk(&self) -> usize {
        self.heads * self.key_dim
    }
    /// Elements of `qkv` (and `dqkv`): M * 3HK.
    pub fn qkv_len(&self) -> usize {
        self.rows() * 3 * self.hk()
    }
    /// Elements of `o` (and `d_o`): M * HK.
    pub fn o_len(&self) -> usize {
        self.rows() * self.hk()
    }
    /// Elements of `probs`: B * H * T * T.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.tokens * self.tokens
    }
    /// 1 / sqrt(K).
    pub fn scale(&self) -> f64 {
        1.0 / (self.key_dim as f64).sqrt()
    }

    /// Threads per (sample, head) workgroup of the backward pass: the smallest power of two
    /// >= T, between 8 and 64.
    pub fn backward_workgroup(&self) -> u32 {
        (self.tokens.next_power_of_two() as u32).clamp(8, 64)
    }

    /// Loop iterations one invocation runs: (forward, backward), for [`loop_cap`].
    pub fn loop_iterations(&self) -> (u64, u64) {
        let (t, k) = (self.tokens as u64, self.key_dim as u64);
        let forward = 2 * t * k + 3 * t + k;
        let rows = t.div_ceil(self.backward_workgroup() as u64);
        let backward = rows * (t * (4 * k + 2) + 3 * k);
        (forward, backward)
    }

    fn check(&self, gpu: &Gpu, op: &str, iterations: u64) -> Result<()> {
        let s = self;
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
    shape.check(gpu, "attention_forward", shape.loop_iterations().0)?;
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
    shape.check(gpu, "attention_backward", shape.loop_iterations().1)?;
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
