//! CPU reference of `shaders/skip.wgsl`: the model's output skip term (`--skip wiener`).

use crate::config::{PIXEL_MEAN, PIXEL_VAR};

/// The noise-level factor c = s / (a^2n VAR + s^2), s = 1 - a^n, of the skip term, for the
/// conditioning value `an` = a^n (in f64).
pub fn factor(an: f64) -> f64 {
    let s = 1.0 - an;
    s / (an * an * PIXEL_VAR as f64 + s * s)
}

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: for the patch tokens t < T - 1,
/// y = x + (c - 1) A - c a^n MEAN with A the token and a^n = tokens[b, T - 1, 0]; the
/// conditioning token is copied. Generic over the storage type like the model's reference.
pub fn skip_forward<F: crate::reference::model::Real>(
    x: &[F],
    tokens: &[F],
    batch: usize,
    t: usize,
    d: usize,
) -> Vec<F> {
    assert_eq!(x.len(), batch * t * d, "x: expected [B, T, D]");
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let mut y = x.to_vec();
    for b in 0..batch {
        let an = tokens[(b * t + t - 1) * d].to_f64();
        let c = factor(an);
        for i in b * t * d..(b * t + t - 1) * d {
            y[i] = F::from_f64(
                x[i].to_f64() + (c - 1.0) * tokens[i].to_f64() - c * an * PIXEL_MEAN as f64,
            );
        }
    }
    y
}
