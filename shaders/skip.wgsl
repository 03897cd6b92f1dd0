// The model's output skip term (`--skip wiener`, `mixture`, `pixel-mixture`: an extension to
// docs/model.md §3; the seed's output is the last layer's x itself). B samples, T tokens (P = g^2 patch
// tokens, then the conditioning token whose values are all a^n), D token width. A noisy pixel is
// A = u X + s N with u = a^n, s = 1 - a^n. The skip term is an estimate E of the noise N from
// A alone, and q, the standard deviation of what E misses; the network's own contribution
// R = x - A (x, the last layer's output, holds A through the x_start residual) is scaled by
// q, as EDM preconditions its denoiser: R has a unit-scale target at every level, and where
// the estimate is nearly exact, R's errors are damped by q.
//
//   wiener  (MIXTURE = false): X of mean MEAN and variance VAR; the best linear estimate
//           E = c (A - u MEAN), c = s / (u^2 VAR + s^2), q^2 = u^2 VAR / (u^2 VAR + s^2)
//           (one q per sample).
//   mixture (MIXTURE = true): X is background (exactly LO) with probability BG_FRAC, else
//           ink of mean INK_MEAN and variance INK_VAR. With the two parts' likelihoods of A,
//           l0 = N(A; u LO, s^2) and l1 = N(A; u INK_MEAN, u^2 INK_VAR + s^2), the posterior
//           weight of background w = BG_FRAC l0 / (BG_FRAC l0 + (1 - BG_FRAC) l1) (from its
//           log-odds), E0 = (A - u LO) / s (exact if background), E1 = c1 (A - u INK_MEAN)
//           (the ink part's linear estimate, c1 and q1 as above with INK_VAR):
//           E = w E0 + (1 - w) E1, q^2 = (1 - w) q1^2 + w (1 - w) (E0 - E1)^2 (per pixel).
//           s is taken as at least S_MIN, so n = 0 (s = 0) stays finite.
//   pixel-mixture (MIXTURE and PER_PIXEL): as mixture, with BG_FRAC, INK_MEAN, INK_VAR of
//           each patch element's own pixel from prior [3, P, D] (rows: fraction, mean,
//           variance, in the patch tokens' layout; P*D = params.patches * params.dim).
//
//   skip_forward   x [B, T, D] (the last layer's output), tokens [B, T, D] (the model's input:
//                  noisy patches A and the conditioning token, u = tokens[b, P, 0])
//                  -> y [B, T, D]:  y = E + q (x - A)   for t < P
//                                   y = x               for t = P
//   skip_backward  dy [B, T, D], tokens -> dx [B, T, D]: dx = q dy (t < P), dy (t = P)
//                  (E and q depend on the input only, not on the weights)
//
// One thread per element, 1-D groups of WG spilling into y for large counts. The statistics
// come from the host (config::PIXEL_MEAN, PIXEL_VAR, BACKGROUND_FRAC, INK_MEAN, INK_VAR,
// PIXEL_LO); without PER_PIXEL, `prior` is bound to any buffer and never read.

override WG: u32 = 64u;
override MIXTURE: bool = false;
override PER_PIXEL: bool = false;
override MEAN: f32 = 0.0;
override VAR: f32 = 1.0;
override LO: f32 = -0.5;
override BG_FRAC: f32 = 0.8;
override INK_MEAN: f32 = 0.0;
override INK_VAR: f32 = 1.0;
override S_MIN: f32 = 1e-6;

struct Params {
    n: u32,        // B*T*D
    tokens: u32,   // T
    patches: u32,  // P
    dim: u32,      // D
}

@group(0) @binding(0) var<uniform> params: Params;
// x, y and the prior (a parameter) are stored as `elem` (f32, or f16 with --precision f16);
// the tokens (the noisy patches and the level u: the model's input) are always f32, so that
// 1 - u keeps its precision near u = 1, where f16 holds u to 2^-11. The math is f32.
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> tokens: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;
@group(0) @binding(4) var<storage, read> prior: array<elem>;

// The linear estimate's factor c and residual q for pixels of variance v.
fn linear(u: f32, s: f32, v: f32) -> vec2<f32> {
    let sig = u * u * v;
    let den = sig + s * s;
    return vec2<f32>(s / den, sqrt(sig / den));
}

// (E, q) for a patch element of value a at level u whose prior (background fraction, ink
// mean, ink variance) is p (used by the mixtures only).
fn estimate(a: f32, u: f32, p: vec3<f32>) -> vec2<f32> {
    if (!MIXTURE) {
        let f = linear(u, 1.0 - u, VAR);
        return vec2<f32>(f.x * (a - u * MEAN), f.y);
    }
    let s = max(1.0 - u, S_MIN);
    let f1 = linear(u, s, p.z);
    let d0 = a - u * LO;
    let d1 = a - u * p.y;
    // Clamped so exp stays finite.
    let odds = mixture_log_odds(a, u, s, LO, p);
    // w and 1 - w each from its own logistic: 1 - w as a difference would round to 0 in
    // f32 when w is within 6e-8 of 1, and q with it.
    let lo = clamp(odds, -80.0, 80.0);
    let w = 1.0 / (1.0 + exp(-lo));
    let w1 = 1.0 / (1.0 + exp(lo));
    let e0 = d0 / s;
    let e1 = f1.x * d1;
    let gap = e0 - e1;
    return vec2<f32>(w * e0 + w1 * e1, sqrt(w1 * f1.y * f1.y + w * w1 * gap * gap));
}

// Element idx's (E, q); for the conditioning token (E, q) = (0, 1): y = x, dx = dy.
fn element(idx: u32) -> vec2<f32> {
    let row = params.tokens * params.dim;
    if ((idx % row) / params.dim >= params.patches) {
        return vec2<f32>(0.0, 1.0);
    }
    let u = tokens[(idx / row) * row + params.patches * params.dim];
    var p = vec3<f32>(BG_FRAC, INK_MEAN, INK_VAR);
    if (PER_PIXEL) {
        let pd = params.patches * params.dim;
        let j = idx % row;
        p = vec3<f32>(f32(prior[j]), f32(prior[pd + j]), f32(prior[2u * pd + j]));
    }
    return estimate(tokens[idx], u, p);
}

@compute @workgroup_size(WG)
fn skip_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= params.n) {
        return;
    }
    let row = params.tokens * params.dim;
    if ((idx % row) / params.dim >= params.patches) {
        y[idx] = x[idx];
        return;
    }
    let f = element(idx);
    y[idx] = elem(f.x + f.y * (f32(x[idx]) - tokens[idx]));
}

// x is bound to dy and y to dx here (same layout as the forward).
@compute @workgroup_size(WG)
fn skip_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= params.n) {
        return;
    }
    y[idx] = elem(element(idx).y * f32(x[idx]));
}
