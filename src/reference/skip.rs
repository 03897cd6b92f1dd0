//! CPU reference of `shaders/skip.wgsl`: the model's output skip term (`--skip wiener` and
//! `--skip mixture`): y = E + q (x - A) on the patch tokens, with E the skip's noise estimate
//! from the noisy patch A and q the standard deviation of what it misses.

use crate::config::{Skip, BACKGROUND_FRAC, INK_MEAN, INK_VAR, PIXEL_LO, PIXEL_MEAN, PIXEL_VAR};
use crate::reference::model::Real;

/// The smallest s = 1 - a^n the mixture uses (n = 0 has s = 0).
pub const S_MIN: f64 = 1e-6;

/// The linear estimate's factors for pixels of variance `var` at a^n = `an`, s = `s`:
/// c = s / (a^2n var + s^2) scales A - a^n mean; q = sqrt(a^2n var / (a^2n var + s^2)).
fn linear(an: f64, s: f64, var: f64) -> (f64, f64) {
    let sig = an * an * var;
    let den = sig + s * s;
    (s / den, (sig / den).sqrt())
}

/// The Wiener skip's factors (c, q) at a^n = `an` (s = 1 - a^n, the pixels' global mean and
/// variance): c (A - a^n MEAN) is the linear noise estimate, q the size of what it misses.
pub fn factors(an: f64) -> (f64, f64) {
    linear(an, 1.0 - an, PIXEL_VAR as f64)
}

/// The linear estimate's factor c alone.
pub fn factor(an: f64) -> f64 {
    factors(an).0
}

/// The mixture skip's posterior of the noise of one pixel of noisy value `a` at a^n = `an`:
/// (its mean E, its standard deviation q, the weight w of "background"). The prior: the pixel
/// is PIXEL_LO with probability BACKGROUND_FRAC, else N(INK_MEAN, INK_VAR).
pub fn mixture(a: f64, an: f64) -> (f64, f64, f64) {
    let (bg, frac) = (PIXEL_LO as f64, BACKGROUND_FRAC as f64);
    let (ink_mean, ink_var) = (INK_MEAN as f64, INK_VAR as f64);
    let s = (1.0 - an).max(S_MIN);
    let (c1, q1) = linear(an, s, ink_var);
    let v1 = an * an * ink_var + s * s;
    let (d0, d1) = (a - an * bg, a - an * ink_mean);
    // log(frac N(a; an bg, s^2)) - log((1 - frac) N(a; an ink_mean, v1)).
    let odds = (frac / (1.0 - frac)).ln() - d0 * d0 / (2.0 * s * s) - s.ln()
        + d1 * d1 / (2.0 * v1)
        + 0.5 * v1.ln();
    let w = 1.0 / (1.0 + (-odds.clamp(-80.0, 80.0)).exp());
    let (e0, e1) = (d0 / s, c1 * d1);
    let e = w * e0 + (1.0 - w) * e1;
    let q = ((1.0 - w) * q1 * q1 + w * (1.0 - w) * (e0 - e1) * (e0 - e1)).sqrt();
    (e, q, w)
}

/// (E, q) of the skip `kind` for a pixel of noisy value `a` at a^n = `an`.
pub fn estimate(kind: Skip, a: f64, an: f64) -> (f64, f64) {
    match kind {
        Skip::Identity => (a, 1.0),
        Skip::Wiener => {
            let (c, q) = factors(an);
            (c * (a - an * PIXEL_MEAN as f64), q)
        }
        Skip::Mixture => {
            let (e, q, _) = mixture(a, an);
            (e, q)
        }
    }
}

/// x [B, T, D], tokens [B, T, D] -> y [B, T, D]: for the patch tokens t < T - 1,
/// y = E + q (x - A) with A the token and a^n = tokens[b, T - 1, 0]; the conditioning token
/// is copied.
pub fn skip_forward<F: Real>(
    kind: Skip,
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
        for i in b * t * d..(b * t + t - 1) * d {
            let a = tokens[i].to_f64();
            let (e, q) = estimate(kind, a, an);
            y[i] = F::from_f64(e + q * (x[i].to_f64() - a));
        }
    }
    y
}

/// dy [B, T, D], tokens -> dx [B, T, D] = q dy on the patch tokens, dy on the conditioning
/// token.
pub fn skip_backward<F: Real>(
    kind: Skip,
    dy: &[F],
    tokens: &[F],
    batch: usize,
    t: usize,
    d: usize,
) -> Vec<F> {
    assert_eq!(dy.len(), batch * t * d, "dy: expected [B, T, D]");
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let mut dx = dy.to_vec();
    for b in 0..batch {
        let an = tokens[(b * t + t - 1) * d].to_f64();
        for i in b * t * d..(b * t + t - 1) * d {
            let q = estimate(kind, tokens[i].to_f64(), an).1;
            dx[i] = F::from_f64(q * dy[i].to_f64());
        }
    }
    dx
}
