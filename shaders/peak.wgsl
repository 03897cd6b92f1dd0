// A throughput probe: how many f32 FMAs per second the adapter sustains when nothing but
// registers is involved. Benches report kernels as a fraction of this measured ceiling.
//
//   fma_peak  out [threads]: each thread runs ITERS iterations of 8 independent FMA chains
//             (16 flops per iteration) and writes their sum (so nothing is optimised away).
// ITERS stays far below lavapipe's 65,535 loop-iteration limit per invocation.

override WG: u32 = 64u;
override ITERS: u32 = 2048u;

struct Params {
    a: f32,
    b: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let a = params.a;
    let b = params.b;
    var x0 = f32(i) * 1e-7;
    var x1 = x0 + 0.1;
    var x2 = x0 + 0.2;
    var x3 = x0 + 0.3;
    var x4 = x0 + 0.4;
    var x5 = x0 + 0.5;
    var x6 = x0 + 0.6;
    var x7 = x0 + 0.7;
    for (var k = 0u; k < ITERS; k++) {
        x0 = fma(x0, a, b);
        x1 = fma(x1, a, b);
        x2 = fma(x2, a, b);
        x3 = fma(x3, a, b);
        x4 = fma(x4, a, b);
        x5 = fma(x5, a, b);
        x6 = fma(x6, a, b);
        x7 = fma(x7, a, b);
    }
    if (i < arrayLength(&out)) {
        out[i] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    }
}
