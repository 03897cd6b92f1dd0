// The model's output skip term (`--skip wiener`, our addition to SPEC §3; the seed's output is
// the last layer's x itself). B samples, T tokens (P = g^2 patch tokens, then the conditioning
// token whose values are all a^n), D token width.
//
//   skip_forward  x [B, T, D] (the last layer's output), tokens [B, T, D] (the model's input:
//                 noisy patches A and the conditioning token) -> y [B, T, D]
//                 for t < P:  y = x + (c - 1) A - c a^n MEAN,
//                             c = s / (a^2n VAR + s^2), s = 1 - a^n, a^n = tokens[b, P, 0]
//                 for t = P:  y = x
//                 With x = A + (learned terms) (the x_start residual), y = c (A - a^n MEAN) +
//                 (learned terms): c (A - a^n MEAN) is the best linear estimate of the noise N
//                 in A = a^n X + s N for pixels X of mean MEAN and variance VAR.
//   (backward)    the added term does not depend on any weight: dx = dy, no kernel.
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

@compute @workgroup_size(WG)
fn skip_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= params.n) {
        return;
    }
    let row = params.tokens * params.dim;
    let b = idx / row;
    let t = (idx % row) / params.dim;
    if (t >= params.patches) {
        y[idx] = x[idx];
        return;
    }
    let an = tokens[b * row + params.patches * params.dim];
    let s = 1.0 - an;
    let c = s / (an * an * VAR + s * s);
    y[idx] = x[idx] + (c - 1.0) * tokens[idx] - c * an * MEAN;
}
