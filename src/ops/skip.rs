//! Host side of `shaders/skip.wgsl`: the model's output skip term
//! (`--skip wiener|mixture|pixel-mixture`).

use super::{check_count, expect_len};
use crate::config::{Skip, BACKGROUND_FRAC, INK_MEAN, INK_VAR, PIXEL_LO, PIXEL_MEAN, PIXEL_VAR};

/// The global pixel prior as override constants, in the names skip.wgsl and sample.wgsl share:
/// background level LO with probability BG_FRAC, else ink N(INK_MEAN, INK_VAR).
pub const PRIOR_CONSTANTS: [(&str, f64); 4] = [
    ("LO", PIXEL_LO as f64),
    ("BG_FRAC", BACKGROUND_FRAC as f64),
    ("INK_MEAN", INK_MEAN as f64),
    ("INK_VAR", INK_VAR as f64),
];
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::math::prior::S_MIN;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    tokens: u32,
    patches: u32,
    dim: u32,
}

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: the patch tokens get y = E + q (x - A),
/// E the skip `kind`'s noise estimate from A and q the size of what it misses (see the
/// shader); the conditioning token (t = P = T - 1) is copied. `prior` [3, T - 1, D] (the
/// parameter tensor `skip.prior`) is required by `pixel-mixture`, refused by the others.
#[allow(clippy::too_many_arguments)]
pub fn skip_forward(
    gpu: &Gpu,
    kind: Skip,
    prior: Option<&GpuTensor>,
    x: &GpuTensor,
    tokens: &GpuTensor,
    y: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    dispatch(gpu, kind, prior, "skip_forward", x, tokens, y, batch, t, d)
}

/// dy [B, T, D], tokens [B, T, D] -> dx [B, T, D] = q dy on the patch tokens (dy on the
/// conditioning token): the gradient w.r.t. the last layer's output (`prior` as in
/// [`skip_forward`]).
#[allow(clippy::too_many_arguments)]
pub fn skip_backward(
    gpu: &Gpu,
    kind: Skip,
    prior: Option<&GpuTensor>,
    dy: &GpuTensor,
    tokens: &GpuTensor,
    dx: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    dispatch(
        gpu,
        kind,
        prior,
        "skip_backward",
        dy,
        tokens,
        dx,
        batch,
        t,
        d,
    )
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    gpu: &Gpu,
    kind: Skip,
    prior: Option<&GpuTensor>,
    entry: &str,
    x: &GpuTensor,
    tokens: &GpuTensor,
    y: &GpuTensor,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<Dispatch> {
    if kind == Skip::Identity {
        return Err(Error::config(format!(
            "{entry}: the identity skip has no kernel"
        )));
    }
    if batch == 0 || t < 2 || d == 0 {
        return Err(Error::config(format!(
            "{entry}: need B >= 1, T >= 2, D >= 1, got B={batch} T={t} D={d}"
        )));
    }
    let n = batch * t * d;
    check_count(entry, n)?;
    for v in [x, tokens, y] {
        expect_len(entry, v, n)?;
    }
    let per_pixel = kind == Skip::PixelMixture;
    match prior {
        Some(p) if per_pixel => expect_len(entry, p, 3 * (t - 1) * d)?,
        None if !per_pixel => {}
        _ => {
            return Err(Error::config(format!(
                "{entry}: the {kind:?} skip {} a prior",
                if per_pixel { "needs" } else { "takes no" }
            )))
        }
    }
    let [lo, frac, ink_mean, ink_var] = PRIOR_CONSTANTS;
    let constants = [
        ("WG", WG_1D as f64),
        (
            "MIXTURE",
            matches!(kind, Skip::Mixture | Skip::PixelMixture) as u8 as f64,
        ),
        ("PER_PIXEL", per_pixel as u8 as f64),
        ("MEAN", PIXEL_MEAN as f64),
        ("VAR", PIXEL_VAR as f64),
        lo,
        frac,
        ink_mean,
        ink_var,
        ("S_MIN", S_MIN),
    ];
    let p = Params {
        n: n as u32,
        tokens: t as u32,
        patches: (t - 1) as u32,
        dim: d as u32,
    };
    super::dispatch_1d(
        gpu,
        "skip",
        entry,
        &constants,
        &p,
        n,
        // Without a prior the shader never reads binding 4: x stands in.
        &[(1, x), (2, tokens), (3, y), (4, prior.unwrap_or(x))],
        &[1, 3, 4],
    )
}
