//! Host side of `shaders/gelu.wgsl`: the elementwise GELU of the optional feed-forward block
//! and its backward pass.

use super::{check_count, expect_len};
use crate::error::Result;
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

fn dispatch(gpu: &Gpu, entry: &str, n: usize, bindings: &[(u32, &GpuTensor)]) -> Result<Dispatch> {
    check_count(entry, n)?;
    for (_, t) in bindings {
        expect_len(entry, t, n)?;
    }
    let p = Params {
        n: n as u32,
        ..Default::default()
    };
    let wg = [("WG", WG_1D as f64)];
    super::dispatch_1d(gpu, "gelu", entry, &wg, &p, n, bindings, &[1, 2])
}

/// x [n] -> y [n] = gelu(x).
pub fn gelu_forward(gpu: &Gpu, x: &GpuTensor, y: &GpuTensor) -> Result<Dispatch> {
    dispatch(gpu, "gelu_forward", x.len(), &[(1, x), (2, y)])
}

/// x [n] (the forward's input), dy [n] -> dx [n] = dy * gelu'(x) (`dx` is its own buffer:
/// WebGPU refuses one buffer bound both read-only and read-write in a dispatch).
pub fn gelu_backward(gpu: &Gpu, x: &GpuTensor, dy: &GpuTensor, dx: &GpuTensor) -> Result<Dispatch> {
    dispatch(gpu, "gelu_backward", x.len(), &[(1, x), (3, dy), (4, dx)])
}
