// GELU (tanh form), the activation of the optional feed-forward block (`--mlp F`, an extension
// to docs/model.md §3; the seed has none). Elementwise over n values:
//
//   gelu_forward   x [n] -> y [n]
//                  y = 0.5 x (1 + tanh(u)),  u = c (x + 0.044715 x^3),  c = sqrt(2 / pi)
//   gelu_backward  x [n], dy [n] -> dx [n]   (x is the forward's input)
//                  dx = dy (0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx),
//                  du/dx = c (1 + 3 * 0.044715 x^2)
//
// u is clamped to [-U_MAX, U_MAX] before tanh (tanh is +-1 to f32 precision there), so that
// no driver's tanh sees an argument whose exp overflows; du/dx is 0 where the clamp holds. One thread per element, 1-D groups of
// WG spilling into y for large n.

override WG: u32 = 64u;
const C: f32 = 0.7978845608028654;   // sqrt(2 / pi)
const A: f32 = 0.044715;
const U_MAX: f32 = 10.0;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// x and y are stored as `elem` (f32, or f16 with --precision f16); the math is f32.
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;


fn u_of(v: f32) -> f32 {
    return C * (v + A * v * v * v);
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    let v = f32(x[i]);
    y[i] = elem(0.5 * v * (1.0 + tanh(clamp(u_of(v), -U_MAX, U_MAX))));
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    let v = f32(x[i]);
    let u = u_of(v);
    let t = tanh(clamp(u, -U_MAX, U_MAX));
    // du/dx, zero where the clamp holds (the derivative of what forward computes).
    let du = select(0.0, C * (1.0 + 3.0 * A * v * v), abs(u) < U_MAX);
    let grad = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du;
    dx[i] = dy[i] * grad;
}
