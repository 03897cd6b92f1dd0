//! CPU reference of `shaders/skip.wgsl`: the model's output skip term (`--skip wiener`,
//! `mixture` and `pixel-mixture`): y = E + q (x - A) on the patch tokens, with E the skip's
//! noise estimate from the noisy patch A and q the standard deviation of what it misses. The
//! estimates and priors (and [`pixel_prior`], `pixel-mixture`'s prior from training digits) are
//! `math::prior`'s, shared with the GPU side.

use crate::config::Skip;
use crate::math::Real;
// The priors and posteriors themselves are shared with the GPU side.
pub use crate::math::prior::*;

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: for the patch tokens t < T - 1,
/// y = E + q (x - A) with A the token and a^n = tokens[b, T - 1, 0]; the conditioning token
/// is copied. `prior` [3, T - 1, D] (see [`pixel_prior`]) is required by `pixel-mixture`
/// and ignored by the other skips.
pub fn skip_forward<F: Real>(
    kind: Skip,
    prior: Option<&[F]>,
    x: &[F],
    tokens: &[F],
    batch: usize,
    t: usize,
    d: usize,
) -> Vec<F> {
    assert_eq!(x.len(), batch * t * d, "x: expected [B, T, D]");
    let mut y = x.to_vec();
    for_each_patch_element(kind, prior, tokens, batch, t, d, |i, (e, q)| {
        y[i] = F::from_f64(e + q * (x[i].to_f64() - tokens[i].to_f64()));
    });
    y
}

/// dy [B, T, D], tokens -> dx [B, T, D] = q dy on the patch tokens, dy on the conditioning
/// token (`prior` as in [`skip_forward`]).
pub fn skip_backward<F: Real>(
    kind: Skip,
    prior: Option<&[F]>,
    dy: &[F],
    tokens: &[F],
    batch: usize,
    t: usize,
    d: usize,
) -> Vec<F> {
    assert_eq!(dy.len(), batch * t * d, "dy: expected [B, T, D]");
    let mut dx = dy.to_vec();
    for_each_patch_element(kind, prior, tokens, batch, t, d, |i, (_, q)| {
        dx[i] = F::from_f64(q * dy[i].to_f64());
    });
    dx
}

/// Calls `f(i, (E, q))` for every patch-token element i of `tokens` [B, T, D].
fn for_each_patch_element<F: Real>(
    kind: Skip,
    prior: Option<&[F]>,
    tokens: &[F],
    batch: usize,
    t: usize,
    d: usize,
    mut f: impl FnMut(usize, (f64, f64)),
) {
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let pd = (t - 1) * d;
    let prior = match (kind, prior) {
        (Skip::PixelMixture, Some(p)) => {
            assert_eq!(p.len(), 3 * pd, "prior: expected [3, T - 1, D]");
            Some(p)
        }
        (Skip::PixelMixture, None) => panic!("the pixel-mixture skip needs its prior"),
        _ => None,
    };
    for b in 0..batch {
        let an = tokens[(b * t + t - 1) * d].to_f64();
        for j in 0..pd {
            let i = b * t * d + j;
            let p = prior.map_or(PixelPrior::GLOBAL, |p| PixelPrior::at(p, pd, j));
            f(i, estimate_at(kind, tokens[i].to_f64(), an, p));
        }
    }
}
