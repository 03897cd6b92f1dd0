//! CPU reference of `shaders/skip.wgsl`: the model's output skip term (`--skip wiener`).

use crate::config::{PIXEL_MEAN, PIXEL_VAR};
use crate::reference::model::Real;

/// The factors (c, q) for the conditioning value `an` = a^n, s = 1 - a^n: c = s / (a^2n VAR +
/// s^2) scales the linear noise estimate c (A - a^n MEAN); q = sqrt(a^2n VAR / (a^2n VAR +
/// s^2)), the size of what it misses, scales the network's contribution.
pub fn factors(an: f64) -> (f64, f64) {
    let s = 1.0 - an;
    let sig = an * an * PIXEL_VAR as f64;
    let den = sig + s * s;
    (s / den, (sig / den).sqrt())
}

/// The linear estimate's factor c alone.
pub fn factor(an: f64) -> f64 {
    factors(an).0
}

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: for the patch tokens t < T - 1,
/// y = c (A - a^n MEAN) + q (x - A) with A the token and a^n = tokens[b, T - 1, 0]; the
/// conditioning token is copied.
pub fn skip_forward<F: Real>(x: &[F], tokens: &[F], batch: usize, t: usize, d: usize) -> Vec<F> {
    assert_eq!(x.len(), batch * t * d, "x: expected [B, T, D]");
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let mut y = x.to_vec();
    for b in 0..batch {
        let an = tokens[(b * t + t - 1) * d].to_f64();
        let (c, q) = factors(an);
        for i in b * t * d..(b * t + t - 1) * d {
            let a = tokens[i].to_f64();
            y[i] = F::from_f64(c * (a - an * PIXEL_MEAN as f64) + q * (x[i].to_f64() - a));
        }
    }
    y
}

/// dy [B, T, D], tokens -> dx [B, T, D] = q dy on the patch tokens, dy on the conditioning
/// token.
pub fn skip_backward<F: Real>(dy: &[F], tokens: &[F], batch: usize, t: usize, d: usize) -> Vec<F> {
    assert_eq!(dy.len(), batch * t * d, "dy: expected [B, T, D]");
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let mut dx = dy.to_vec();
    for b in 0..batch {
        let q = factors(tokens[(b * t + t - 1) * d].to_f64()).1;
        for i in b * t * d..(b * t + t - 1) * d {
            dx[i] = F::from_f64(q * dy[i].to_f64());
        }
    }
    dx
}
