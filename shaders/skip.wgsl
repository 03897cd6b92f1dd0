// The model's output skip term (`--skip wiener`, our addition to SPEC §3; the seed's output is
// the last layer's x itself). B samples, T tokens (P = g^2 patch tokens, then the conditioning
// token whose values are all a^n), D token width. With s = 1 - a^n and pixels X of mean MEAN
// and variance VAR, the best linear estimate of the noise N in A = a^n X + s N is
// c (A - a^n MEAN), c = s / (a^2n VAR + s^2), and what it misses has variance
// q^2 = a^2n VAR / (a^2n VAR + s^2). The network's own contribution R = x - A (x, the last
// layer's output, holds A through the x_start residual) is scaled by q, as EDM preconditions
// its denoiser: R has a unit-scale target at every level, and at high noise, where the
// estimate is nearly exact, R's errors are damped by q (about 0.002 at n = 500).
//
//   skip_forward   x [B, T, D] (the last layer's output), tokens [B, T, D] (the model's input:
//                  noisy patches A and the conditioning token, a^n = tokens[b, P, 0])
//                  -> y [B, T, D]:  y = c (A - a^n MEAN) + q (x - A)   for t < P
//                                   y = x                              for t = P
//   skip_backward  dy [B, T, D], tokens -> dx [B, T, D]: dx = q dy (t < P), dy (t = P)
//
// One thread per element, 1-D groups of WG spilling into y for large counts. MEAN and VAR come
// from the host (config::PIXEL_MEAN / PIXEL_VAR).

override WG: u32 = 64u;
override MEAN: f32 = 0.0;
override VAR: f32 = 1.0;

struct Params {
    n: u32,        // B*T*D
    tokens: u32,   // T
    patches: u32,  // P
    dim: u32,      // D
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// (c, q) for sample b.
fn factors(b: u32) -> vec2<f32> {
    let an = tokens[b * params.tokens * params.dim + params.patches * params.dim];
    let s = 1.0 - an;
    let sig = an * an * VAR;
    let den = sig + s * s;
    return vec2<f32>(s / den, sqrt(sig / den));
}

@compute @workgroup_size(WG)
fn skip_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= params.n) {
        return;
    }
    let row = params.tokens * params.dim;
    let b = idx / row;
    if ((idx % row) / params.dim >= params.patches) {
        y[idx] = x[idx];
        return;
    }
    let f = factors(b);
    let an = tokens[b * row + params.patches * params.dim];
    let a = tokens[idx];
    y[idx] = f.x * (a - an * MEAN) + f.y * (x[idx] - a);
}

// x is bound to dy and y to dx here (same layout as the forward).
@compute @workgroup_size(WG)
fn skip_backward(@builtin(global_invocation_id) gid: vec3<u32>,
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
    y[idx] = factors(idx / row).y * x[idx];
}
