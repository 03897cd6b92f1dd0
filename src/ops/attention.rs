//! Host side of `shaders/attention.wgsl`: the multi-head self-attention core
//! (`softmax(Q K^T / sqrt(K)) V` per sample and head) and its backward pass.
//!
//! `qkv` is [B*T, 3*H*K] (Q | K | V side by side, head h at columns h*K..(h+1)*K of each
//! block), `o` / `d_o` are [B*T, H*K], `probs` is [B, H, T, T].

use super::{check_loops, expect_len};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Elem, Gpu, GpuTensor};

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
    check_loops(
        gpu,
        &format!("{op}: T={} K={}", s.tokens, s.key_dim),
        iterations,
    )?;
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

/// Most tokens of the v2 kernels (`TILE_T`): their workgroup memory holds two T x T
/// matrices (8 KiB at 32, within every adapter's 16 KiB).
pub const ATTENTION_TILE_TOKENS: usize = 32;
/// Threads per (sample, head) workgroup of the v2 kernels (`AWG`).
pub const ATTENTION_TILE_WG: u32 = 64;

/// Which attention kernels to run (the shader's header describes both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// v1: a thread per query row (forward), a workgroup per (sample, head) with a thread per
    /// row (backward). Any T up to [`MAX_TOKENS`].
    Rows,
    /// v2: a workgroup per (sample, head) with the T x T matrices in workgroup memory, a
    /// thread per output element. T up to [`ATTENTION_TILE_TOKENS`].
    Tile,
}

impl AttentionKernel {
    pub const ALL: [AttentionKernel; 2] = [AttentionKernel::Rows, AttentionKernel::Tile];

    /// The forward's version: v1 (on lavapipe v2's forward ran 1.8x slower at the seed
    /// preset's T = 5, and 3.6x at the fast preset's T = 2; docs/experiments/14).
    pub fn auto_forward(_shape: &AttentionShape) -> AttentionKernel {
        AttentionKernel::Rows
    }

    /// The backward's version: v2 where the shape fits it (1.6x faster than v1 at T = 5 and
    /// 17, 1.2x at T = 2 on lavapipe), else v1.
    pub fn auto_backward(shape: &AttentionShape) -> AttentionKernel {
        if shape.tokens <= ATTENTION_TILE_TOKENS {
            AttentionKernel::Tile
        } else {
            AttentionKernel::Rows
        }
    }
}

/// Loop iterations one v2 invocation runs: (forward, backward).
fn tile_loop_iterations(s: &AttentionShape) -> (u64, u64) {
    let (t, k, wg) = (s.tokens as u64, s.key_dim as u64, ATTENTION_TILE_WG as u64);
    let (pairs, outputs) = ((t * t).div_ceil(wg), (t * k).div_ceil(wg));
    (
        pairs * k + 3 * t + outputs * t,
        pairs * (k + 1) + t * t + outputs * t,
    )
}

/// The kernel and workgroups of `version` for `entry` (`forward` or `backward`).
fn kernel_and_groups(
    gpu: &Gpu,
    s: &AttentionShape,
    version: AttentionKernel,
    entry: &str,
    elem: Elem,
) -> Result<(std::sync::Arc<crate::gpu::Kernel>, [u32; 3])> {
    let op = format!("attention_{entry}");
    let per_head = gpu.groups_1d((s.batch * s.heads) as u64, 1)?;
    match version {
        AttentionKernel::Tile => {
            if s.tokens > ATTENTION_TILE_TOKENS {
                return Err(Error::config(format!(
                    "{op}: the tiled kernel handles at most {ATTENTION_TILE_TOKENS} tokens, got {}",
                    s.tokens
                )));
            }
            let (fwd, bwd) = tile_loop_iterations(s);
            check(s, gpu, &op, if entry == "forward" { fwd } else { bwd })?;
            let c = [
                ("AWG", ATTENTION_TILE_WG as f64),
                ("TILE_T", ATTENTION_TILE_TOKENS as f64),
            ];
            Ok((
                gpu.kernel_of("attention", &format!("{op}_tile"), &c, elem)?,
                per_head,
            ))
        }
        AttentionKernel::Rows if entry == "forward" => {
            check(s, gpu, &op, s.loop_iterations().0)?;
            let k = gpu.kernel_of("attention", &op, &[("WG", WG_1D as f64)], elem)?;
            let threads = (s.batch * s.heads * s.tokens) as u64;
            Ok((k, gpu.groups_1d(threads, WG_1D)?))
        }
        AttentionKernel::Rows => {
            check(s, gpu, &op, s.loop_iterations().1)?;
            let c = [("BWG", s.backward_workgroup() as f64)];
            Ok((gpu.kernel_of("attention", &op, &c, elem)?, per_head))
        }
    }
}

/// qkv [B*T, 3HK] -> o [B*T, HK], probs [B, H, T, T], with [`AttentionKernel::auto_forward`].
pub fn attention_forward(
    gpu: &Gpu,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    o: &GpuTensor,
    probs: &GpuTensor,
) -> Result<Dispatch> {
    let version = AttentionKernel::auto_forward(shape);
    attention_forward_with(gpu, version, shape, qkv, o, probs)
}

/// [`attention_forward`] with the kernel version given.
pub fn attention_forward_with(
    gpu: &Gpu,
    version: AttentionKernel,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    o: &GpuTensor,
    probs: &GpuTensor,
) -> Result<Dispatch> {
    expect_len("attention_forward", qkv, shape.qkv_len())?;
    expect_len("attention_forward", o, shape.o_len())?;
    expect_len("attention_forward", probs, shape.probs_len())?;
    let bindings = [(1, qkv), (2, o), (3, probs)];
    let elem = super::elem_of("attention_forward", &bindings, &[1, 2])?;
    let (k, groups) = kernel_and_groups(gpu, shape, version, "forward", elem)?;
    let p = params(gpu, shape);
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
/// -> dqkv [B*T, 3HK] (written, not accumulated), with [`AttentionKernel::auto_backward`].
pub fn attention_backward(
    gpu: &Gpu,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    probs: &GpuTensor,
    d_o: &GpuTensor,
    dqkv: &GpuTensor,
) -> Result<Dispatch> {
    let version = AttentionKernel::auto_backward(shape);
    attention_backward_with(gpu, version, shape, qkv, probs, d_o, dqkv)
}

/// [`attention_backward`] with the kernel version given.
pub fn attention_backward_with(
    gpu: &Gpu,
    version: AttentionKernel,
    shape: &AttentionShape,
    qkv: &GpuTensor,
    probs: &GpuTensor,
    d_o: &GpuTensor,
    dqkv: &GpuTensor,
) -> Result<Dispatch> {
    expect_len("attention_backward", qkv, shape.qkv_len())?;
    expect_len("attention_backward", probs, shape.probs_len())?;
    expect_len("attention_backward", d_o, shape.o_len())?;
    expect_len("attention_backward", dqkv, shape.qkv_len())?;
    let bindings = [(1, qkv), (4, probs), (5, d_o), (6, dqkv)];
    let elem = super::elem_of("attention_backward", &bindings, &[1])?;
    let (k, groups) = kernel_and_groups(gpu, shape, version, "backward", elem)?;
    let p = params(gpu, shape);
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
