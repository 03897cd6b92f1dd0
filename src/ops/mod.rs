//! Host side of each op: checks shapes, builds the specialised pipeline and the bind group
//! once, and returns a prepared [`Dispatch`](crate::gpu::Dispatch) (or an op struct holding
//! one, when a small per-step value must be updated).

pub mod adam;
pub mod attention;
pub mod classifier;
pub mod gelu;
pub mod gemm;
pub mod label;
pub mod loss;
pub mod matmul;
pub mod noise;
pub mod patches;
pub mod rows;
pub mod skip;
pub mod tune;

use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Elem, Gpu, GpuTensor};

/// A 1-D dispatch of `shader`'s `entry` over `threads` threads in groups of `WG_1D` (spilling
/// into y for large counts), specialised with `constants`, with its uniform `params` at
/// binding 0 and `bindings` after it: the set-up every elementwise op shares. The bindings
/// numbered in `elem_bindings` are those the shader declares `array<elem>`: their tensors'
/// storage type (one for all) picks the shader's variant.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_1d<P: bytemuck::Pod>(
    gpu: &Gpu,
    shader: &str,
    entry: &str,
    constants: &[(&str, f64)],
    params: &P,
    threads: usize,
    bindings: &[(u32, &GpuTensor)],
    elem_bindings: &[u32],
) -> Result<Dispatch> {
    let elem = elem_of(entry, bindings, elem_bindings)?;
    let k = gpu.kernel_of(shader, entry, constants, elem)?;
    let u = gpu.uniform(&format!("{entry}-params"), params);
    let mut entries = vec![(0, u.as_entire_binding())];
    entries.extend(bindings.iter().map(|(b, t)| (*b, t.bind())));
    gpu.dispatch(&k, &entries, gpu.groups_1d(threads as u64, WG_1D)?)
}

/// The storage type shared by the tensors of `bindings` numbered in `elem_bindings` (f32 when
/// there are none); an error when they differ, or when any other binding is not 4-byte.
pub(crate) fn elem_of(
    op: &str,
    bindings: &[(u32, &GpuTensor)],
    elem_bindings: &[u32],
) -> Result<Elem> {
    let (elems, plain): (Vec<_>, Vec<_>) = bindings
        .iter()
        .partition(|(b, _)| elem_bindings.contains(b));
    if let Some((_, t)) = plain.iter().find(|(_, t)| t.elem != Elem::F32) {
        return Err(Error::gpu(format!(
            "{op}: tensor {} is {}, where the kernel reads 4-byte elements",
            t.label,
            t.elem.name()
        )));
    }
    let elems: Vec<&GpuTensor> = elems.iter().map(|(_, t)| *t).collect();
    Elem::of(op, &elems)
}

/// Errors unless `t` holds exactly `len` elements.
pub(crate) fn expect_len(op: &str, t: &GpuTensor, len: usize) -> Result<()> {
    if t.len() != len {
        return Err(Error::gpu(format!(
            "{op}: tensor {} has {} elements, expected {len}",
            t.label,
            t.len()
        )));
    }
    Ok(())
}

/// Errors unless `n` elements can be indexed by a u32 in the kernels (with room to stride).
pub(crate) fn check_count(op: &str, n: usize) -> Result<()> {
    if n as u64 >= (u32::MAX - 1024) as u64 {
        return Err(Error::config(format!(
            "{op}: {n} elements, more than a kernel can index with 32 bits"
        )));
    }
    Ok(())
}

/// Errors when an invocation would run more loop iterations than the adapter allows
/// ([`Gpu::loop_cap`]: past it the shader silently stops, giving wrong results). Every op
/// guards its loops through this one function.
pub(crate) fn check_loops(gpu: &Gpu, op: &str, iterations: u64) -> Result<()> {
    match gpu.loop_cap() {
        Some(cap) if iterations > cap => Err(Error::adapter(format!(
            "{op}: needs {} loop iterations per invocation, over the {} that {} runs before \
             it silently ends loops",
            thousands(iterations),
            thousands(cap),
            gpu.info.name
        ))),
        _ => Ok(()),
    }
}

/// `65535` as `65,535`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
