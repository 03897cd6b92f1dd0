//! Host side of `shaders/patches.wgsl`: patches_forward, patches_backward, recompose.

use super::expect_len;
use crate::config::Geometry;
use crate::error::Result;
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    tokens: u32,
    _pad: [u32; 2],
}

fn constants(g: &Geometry) -> [(&'static str, f64); 4] {
    [
        ("WG", WG_1D as f64),
        ("SIZE", g.size as f64),
        ("PATCH", g.patch as f64),
        ("OVERLAP", g.overlap as f64),
    ]
}

fn params(gpu: &Gpu, batch: usize, tokens: usize) -> wgpu::Buffer {
    gpu.uniform(
        "patches-params",
        &Params {
            batch: batch as u32,
            tokens: tokens as u32,
            _pad: [0; 2],
        },
    )
}

/// images [B, S*S], cond [B] -> tokens [B, T, D] (T = g^2 or g^2 + 1 with the conditioning
/// token).
pub fn patches_forward(
    gpu: &Gpu,
    g: &Geometry,
    batch: usize,
    tokens: usize,
    images: &GpuTensor,
    cond: &GpuTensor,
    out: &GpuTensor,
) -> Result<Dispatch> {
    expect_len("patches_forward", images, batch * g.pixels() as usize)?;
    expect_len("patches_forward", cond, batch)?;
    expect_len("patches_forward", out, batch * tokens * g.dim() as usize)?;
    let k = gpu.kernel("patches", "patches_forward", &constants(g))?;
    let p = params(gpu, batch, tokens);
    let groups = gpu.groups_1d(out.len() as u64, WG_1D)?;
    gpu.dispatch(
        &k,
        &[
            (0, p.as_entire_binding()),
            (1, images.bind()),
            (2, cond.bind()),
            (3, out.bind()),
        ],
        groups,
    )
}

/// dtokens [B, T, D] -> dimages [B, S*S], dcond [B] (the adjoint of `patches_forward`).
pub fn patches_backward(
    gpu: &Gpu,
    g: &Geometry,
    batch: usize,
    tokens: usize,
    dtokens: &GpuTensor,
    dimages: &GpuTensor,
    dcond: &GpuTensor,
) -> Result<Dispatch> {
    expect_len(
        "patches_backward",
        dtokens,
        batch * tokens * g.dim() as usize,
    )?;
    expect_len("patches_backward", dimages, batch * g.pixels() as usize)?;
    expect_len("patches_backward", dcond, batch)?;
    let k = gpu.kernel("patches", "patches_backward", &constants(g))?;
    let p = params(gpu, batch, tokens);
    let groups = gpu.groups_1d((batch * (g.pixels() as usize + 1)) as u64, WG_1D)?;
    gpu.dispatch(
        &k,
        &[
            (0, p.as_entire_binding()),
            (4, dtokens.bind()),
            (5, dimages.bind()),
            (6, dcond.bind()),
        ],
        groups,
    )
}

/// tokens [B, T, D] (first g^2 tokens) -> images [B, S*S], averaging overlapping pixels.
pub fn recompose(
    gpu: &Gpu,
    g: &Geometry,
    batch: usize,
    tokens: usize,
    ptokens: &GpuTensor,
    image: &GpuTensor,
) -> Result<Dispatch> {
    expect_len("recompose", ptokens, batch * tokens * g.dim() as usize)?;
    expect_len("recompose", image, batch * g.pixels() as usize)?;
    let elem = super::elem_of("recompose", &[(7, ptokens), (8, image)], &[7])?;
    let k = gpu.kernel_of("patches", "recompose", &constants(g), elem)?;
    let p = params(gpu, batch, tokens);
    let groups = gpu.groups_1d(image.len() as u64, WG_1D)?;
    gpu.dispatch(
        &k,
        &[
            (0, p.as_entire_binding()),
            (7, ptokens.bind()),
            (8, image.bind()),
        ],
        groups,
    )
}
