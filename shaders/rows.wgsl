// Row and element ops of the model (docs/model.md §3): the positional embedding, residual adds and
// copies, and the patch rows of [B, T, C] tensors. B samples, T tokens (P = g^2 patch tokens
// + 1 conditioning token), D token width, C a row's width (D or HK).
//
//   add_pos       tokens [B, T, D], pos [T, D] -> x_start [B, T, D]
//                 x_start[b, t, d] = tokens[b, t, d] + pos[t, d]
//   pos_backward  dx [B, T, D] -> dpos [T, D]: dpos[t, d] = sum_b dx[b, t, d]
//                 (gather over the batch: one writer per element)
//   add           a_in [n], b_in [n] -> y [n]: y = a_in + b_in
//   add_inplace   a_in [n], y [n] -> y [n]: y += a_in (residuals, gradient accumulation)
//   copy          a_in [n] -> y [n]: y = a_in
//   drop_cond     a_in [B, T, C] -> y [B, P, C]: the P patch rows of each sample (the last
//                 layer's output projection and feed-forward block see only the rows the loss
//                 and the sampler read)
//   drop_cond_add a_in [B, T, C], y [B, P, C] -> y += drop_cond(a_in) (the residual x_start)
//   pad_cond      a_in [B, P, C] -> y [B, T, C]: a_in at t < P, 0 at the conditioning row:
//                 drop_cond's backward (its adjoint), and the way back to [B, T, C] in the
//                 forward pass (one writer per element)
//
// Threads are 1-D (WG per workgroup); the host spills large counts into the y dimension.
// Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535 loop iterations in
// all have run: the host refuses sizes that would pass it there (pos_backward's loop over B).

override WG: u32 = 64u;

struct Params {
    n: u32,        // elements (threads)
    batch: u32,    // B
    tokens: u32,   // T
    patches: u32,  // P
    dim: u32,      // D, or C for the row ops
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> tokens: array<f32>;
// pos, x_start, a_in, b_in and y are stored as `elem` (f32, or f16 with --precision f16; the
// tokens are always f32), every sum is f32.
@group(0) @binding(2) var<storage, read> pos: array<elem>;
@group(0) @binding(3) var<storage, read_write> x_start: array<elem>;
@group(0) @binding(4) var<storage, read> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dpos: array<f32>;
@group(0) @binding(6) var<storage, read> a_in: array<elem>;
@group(0) @binding(7) var<storage, read> b_in: array<elem>;
@group(0) @binding(8) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(WG)
fn add_pos(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    x_start[idx] = elem(tokens[idx] + f32(pos[idx % (params.tokens * params.dim)]));
}

@compute @workgroup_size(WG)
fn pos_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let per = params.tokens * params.dim;
    if (idx >= per) {
        return;
    }
    var s = 0.0;
    for (var b = 0u; b < params.batch; b++) {
        s += dx[b * per + idx];
    }
    dpos[idx] = s;
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = elem(f32(a_in[idx]) + f32(b_in[idx]));
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = elem(f32(y[idx]) + f32(a_in[idx]));
}

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = a_in[idx];
}

// Element idx of a [B, P, C] tensor -> the same element's index in [B, T, C].
fn patch_row_index(idx: u32) -> u32 {
    let per = params.patches * params.dim;
    return (idx / per) * params.tokens * params.dim + idx % per;
}

@compute @workgroup_size(WG)
fn drop_cond(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = a_in[patch_row_index(idx)];
}

@compute @workgroup_size(WG)
fn drop_cond_add(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = elem(f32(y[idx]) + f32(a_in[patch_row_index(idx)]));
}

@compute @workgroup_size(WG)
fn pad_cond(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    let row = params.tokens * params.dim;
    let per = params.patches * params.dim;
    let r = idx % row;
    if (r < per) {
        y[idx] = a_in[(idx / row) * per + r];
    } else {
        y[idx] = elem(0.0);
    }
}
