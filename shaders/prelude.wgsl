// The prelude: what several shaders share, written once. The kernel table (src/gpu/kernels.rs)
// puts it in front of every shader that declares `override WG`, the 1-D workgroup size, after
// `const RWG: u32`, the threads of the one-workgroup reductions (REDUCE_WG there).
//
//   linear_index      the flat index of a 1-D kernel's invocation (grids wider than 65,535
//                     workgroups wrap into y)
//   kahan_add         one term of a Kahan-compensated running sum
//   workgroup_sum     the sum over one workgroup of RWG threads (a tree in workgroup memory):
//                     the reduction behind the loss ring's entries (mse_forward, xent_mean)
//   mixture_log_odds  the log-odds that a noisy pixel is background under a two-part prior
//                     (skip.wgsl's mixtures, sample.wgsl's --background blend)

var<workgroup> partial: array<f32, RWG>;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// sc = (sum, compensation) after adding q.
fn kahan_add(sc: vec2<f32>, q: f32) -> vec2<f32> {
    let term = q - sc.y;
    let next = sc.x + term;
    return vec2<f32>(next, (next - sc.x) - term);
}

// The sum of s over the RWG threads of the workgroup, for every thread. Call it from all of
// them (uniform control flow: it holds barriers).
fn workgroup_sum(lid: u32, s: f32) -> f32 {
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = RWG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// log(frac N(a; u bg, s^2)) - log((1 - frac) N(a; u ink_mean, u^2 ink_var + s^2)): a pixel of
// noisy value a at level u (s = 1 - u > 0) under the prior p = (frac, ink_mean, ink_var), with
// background exactly bg.
fn mixture_log_odds(a: f32, u: f32, s: f32, bg: f32, p: vec3<f32>) -> f32 {
    let v1 = u * u * p.z + s * s;
    let d0 = a - u * bg;
    let d1 = a - u * p.y;
    return log(p.x / (1.0 - p.x)) - d0 * d0 / (2.0 * s * s) - log(s)
        + d1 * d1 / (2.0 * v1) + 0.5 * log(v1);
}
