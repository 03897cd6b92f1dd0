//! The skip's priors and posteriors, shared by the `skip` kernel's host side, `train` (which
//! computes `pixel-mixture`'s prior from its digits), `eval --loss-by-level` and the CPU
//! reference: the linear (Wiener) estimate's factors, a pixel's two-part prior (background or
//! ink) and the posterior of its noise, and the per-position prior from training digits.

use crate::config::{
    Geometry, Skip, BACKGROUND_FRAC, INK_MEAN, INK_VAR, PIXEL_LO, PIXEL_MEAN, PIXEL_VAR,
};
use crate::math::Real;

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

/// A pixel's two-part prior: background (exactly PIXEL_LO) with probability `frac`, else ink
/// N(`ink_mean`, `ink_var`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelPrior {
    pub frac: f64,
    pub ink_mean: f64,
    pub ink_var: f64,
}

impl PixelPrior {
    /// The prior of every pixel of `--skip mixture` (MNIST's pixels pooled over positions),
    /// and `pixel-mixture`'s before `train` fills in the data's.
    pub const GLOBAL: PixelPrior = PixelPrior {
        frac: BACKGROUND_FRAC as f64,
        ink_mean: INK_MEAN as f64,
        ink_var: INK_VAR as f64,
    };

    /// The prior at offset `j` of a sample's patch tokens in a prior tensor [3, P, D]
    /// (rows: frac, ink mean, ink variance; `pd` = P*D).
    pub fn at<F: Real>(prior: &[F], pd: usize, j: usize) -> PixelPrior {
        PixelPrior {
            frac: prior[j].to_f64(),
            ink_mean: prior[pd + j].to_f64(),
            ink_var: prior[2 * pd + j].to_f64(),
        }
    }
}

/// The mixture skip's posterior of the noise of one pixel of noisy value `a` at a^n = `an`
/// under the global prior ([`PixelPrior::GLOBAL`]): (its mean E, its standard deviation q,
/// the weight w of "background").
pub fn mixture(a: f64, an: f64) -> (f64, f64, f64) {
    mixture_with(a, an, PixelPrior::GLOBAL)
}

/// As [`mixture`] under the prior `p`.
pub fn mixture_with(a: f64, an: f64, p: PixelPrior) -> (f64, f64, f64) {
    let bg = PIXEL_LO as f64;
    let s = (1.0 - an).max(S_MIN);
    let (c1, q1) = linear(an, s, p.ink_var);
    let v1 = an * an * p.ink_var + s * s;
    let (d0, d1) = (a - an * bg, a - an * p.ink_mean);
    // log(frac N(a; an bg, s^2)) - log((1 - frac) N(a; an ink_mean, v1)).
    let odds = (p.frac / (1.0 - p.frac)).ln() - d0 * d0 / (2.0 * s * s) - s.ln()
        + d1 * d1 / (2.0 * v1)
        + 0.5 * v1.ln();
    let lo = odds.clamp(-80.0, 80.0);
    let (w, w1) = (1.0 / (1.0 + (-lo).exp()), 1.0 / (1.0 + lo.exp()));
    let (e0, e1) = (d0 / s, c1 * d1);
    let e = w * e0 + w1 * e1;
    let q = (w1 * q1 * q1 + w * w1 * (e0 - e1) * (e0 - e1)).sqrt();
    (e, q, w)
}

/// (E, q) of the skip `kind` for a pixel of noisy value `a` at a^n = `an`; `pixel-mixture`
/// uses the global prior here (see [`estimate_at`]).
pub fn estimate(kind: Skip, a: f64, an: f64) -> (f64, f64) {
    estimate_at(kind, a, an, PixelPrior::GLOBAL)
}

/// (E, q) of the skip `kind` for a pixel of noisy value `a` at a^n = `an` whose prior, for
/// `pixel-mixture`, is `prior` (the other skips ignore it).
pub fn estimate_at(kind: Skip, a: f64, an: f64, prior: PixelPrior) -> (f64, f64) {
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
        Skip::PixelMixture => {
            let (e, q, _) = mixture_with(a, an, prior);
            (e, q)
        }
    }
}

/// Pseudo-count of the per-position prior: each position's ink mean and variance are shrunk
/// toward the global ones as if PRIOR_PSEUDO more ink pixels of the global statistics had been
/// seen there (a position with little ink keeps a sensible prior), and its background fraction
/// is Laplace's (n_bg + 1) / (n + 2) (never exactly 0 or 1).
pub const PRIOR_PSEUDO: f64 = 16.0;

/// The smallest ink variance of a position's prior.
pub const PRIOR_VAR_MIN: f64 = 1e-4;

/// `pixel-mixture`'s prior from `count` digits `pixels` (u8, [count, SIZE^2], 0 is background):
/// per position the background fraction, ink mean and ink variance (in the model's scale
/// x = p/256 - 0.5, shrunk as [`PRIOR_PSEUDO`] says), laid out as the patch tokens
/// [3, P, D] (rows: fraction, mean, variance), so element j of a sample's patch tokens has
/// its pixel's prior at j, P*D + j and 2 P*D + j.
pub fn pixel_prior(g: &Geometry, pixels: &[u8]) -> Vec<f32> {
    let px = g.pixels() as usize;
    assert!(
        !pixels.is_empty() && pixels.len().is_multiple_of(px),
        "pixels: expected [count, {px}]"
    );
    let n = (pixels.len() / px) as f64;
    let (mut bg, mut sum, mut sq) = (vec![0.0f64; px], vec![0.0f64; px], vec![0.0f64; px]);
    for image in pixels.chunks_exact(px) {
        for (i, &p) in image.iter().enumerate() {
            if p == 0 {
                bg[i] += 1.0;
            } else {
                let x = p as f64 / 256.0 - 0.5;
                sum[i] += x;
                sq[i] += x * x;
            }
        }
    }
    let (gm, gv, k) = (INK_MEAN as f64, INK_VAR as f64, PRIOR_PSEUDO);
    let mut maps = vec![0.0f32; 3 * px];
    for i in 0..px {
        let ink = n - bg[i];
        let mean = (sum[i] + k * gm) / (ink + k);
        let m2 = (sq[i] + k * (gv + gm * gm)) / (ink + k);
        maps[i] = ((bg[i] + 1.0) / (n + 2.0)) as f32;
        maps[px + i] = mean as f32;
        maps[2 * px + i] = (m2 - mean * mean).max(PRIOR_VAR_MIN) as f32;
    }
    // Laid out as the patch tokens: value d of patch c copies pixel i of each row.
    let pd = (g.patches() * g.dim()) as usize;
    let mut out = vec![0.0f32; 3 * pd];
    g.for_each_copy(|c, d, i| {
        for row in 0..3 {
            out[row * pd + c * g.dim() as usize + d] = maps[row * px + i];
        }
    });
    out
}
