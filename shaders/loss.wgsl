// The model's small ops (SPEC §3): positional embedding, residual adds, and the MSE loss.
// B samples, T tokens (P = g^2 patch tokens + 1 conditioning token), D token width.
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
//                 and the sampler read; C = D or HK)
//   drop_cond_add a_in [B, T, C], y [B, P, C] -> y += drop_cond(a_in) (the residual x_start)
//   pad_cond      a_in [B, P, C] -> y [B, T, C]: a_in at t < P, 0 at the conditioning row:
//                 drop_cond's backward (its adjoint), and the way back to [B, T, C] in the
//                 forward pass (one writer per element)
//   mse_forward   pred [B, T, D] (the model output), truth [B, P, D] (the target), tokens
//                 [B, T, D] (the model's input: a^n of sample b at tokens[b, P, 0])
//                 -> history[slot] = mean over (b, t < P, d) of
//                    w_b (pred[b, t, d] - truth[b, t, d])^2
//                 (the conditioning token t = P is ignored); w_b = level_weight(b), 1 unless
//                 WEIGHT_MAX > 1 (`--loss-weight-max`). ONE workgroup of RWG threads:
//                 each strides over the B*P*D terms, four at a time, with a compensated
//                 (Kahan) sum, then a tree in workgroup memory; no atomics. The host sets `slot` per step and
//                 reads the history every N steps.
//   mse_backward  pred [B, T, D], truth [B, P, D], tokens -> dout [B, T, D]
//                 dout[b, t, d] = 2 w_b (pred - truth) / (B P D) for t < P, 0 for t = P.
//
// Threads are 1-D (WG per workgroup, except mse_forward); the host spills large counts into
// the y dimension. Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535
// loop iterations in all have run: the host refuses sizes that would pass it there.

override WG: u32 = 64u;
// The loss weight's cap W (1: the plain mean) and the training pixels' variance.
override WEIGHT_MAX: f32 = 1.0;
override VAR: f32 = 1.0;
const RWG: u32 = 256u;

struct Params {
    n: u32,        // elements (threads) of the elementwise entries
    batch: u32,    // B
    tokens: u32,   // T
    patches: u32,  // P (tokens the loss sees)
    dim: u32,      // D
    slot: u32,     // mse_forward: history slot written
    scale: f32,    // mse_forward: 1 / (B P D); mse_backward: 2 / (B P D) (f64 on the host)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> tokens: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<f32>;
@group(0) @binding(3) var<storage, read_write> x_start: array<f32>;
@group(0) @binding(4) var<storage, read> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dpos: array<f32>;
@group(0) @binding(6) var<storage, read> a_in: array<f32>;
@group(0) @binding(7) var<storage, read> b_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
@group(0) @binding(9) var<storage, read> pred: array<f32>;
@group(0) @binding(10) var<storage, read> truth: array<f32>;
@group(0) @binding(11) var<storage, read_write> history: array<f32>;
@group(0) @binding(12) var<storage, read_write> dout: array<f32>;

var<workgroup> partial: array<f32, RWG>;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Sample b's loss weight min(1 / q^2, WEIGHT_MAX), q^2 = u^2 VAR / (u^2 VAR + s^2) with
// u = a^n (its conditioning token) and s = 1 - u: EDM's 1 / c_out^2 for the Wiener skip,
// capped. The comparison avoids dividing by u^2 VAR = 0 (pure noise gets the cap).
fn level_weight(b: u32) -> f32 {
    if (WEIGHT_MAX <= 1.0) {
        return 1.0;
    }
    let u = tokens[b * params.tokens * params.dim + params.patches * params.dim];
    let sig = u * u * VAR;
    let s = 1.0 - u;
    let num = sig + s * s;
    if (num >= WEIGHT_MAX * sig) {
        return WEIGHT_MAX;
    }
    return num / sig;
}

@compute @workgroup_size(WG)
fn add_pos(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    x_start[idx] = tokens[idx] + pos[idx % (params.tokens * params.dim)];
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
    y[idx] = a_in[idx] + b_in[idx];
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = y[idx] + a_in[idx];
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
    y[idx] = y[idx] + a_in[patch_row_index(idx)];
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
        y[idx] = 0.0;
    }
}

@compute @workgroup_size(RWG)
fn mse_forward(@builtin(local_invocation_index) lid: u32) {
    let per = params.patches * params.dim;
    let n = params.batch * per;
    let row = params.tokens * params.dim;
    var s = 0.0;
    var comp = 0.0;
    // Four terms per iteration (fewer loop iterations: see llvmpipe's cap in ops/loss.rs).
    for (var e0 = lid * 4u; e0 < n; e0 += RWG * 4u) {
        let e1 = min(e0 + 1u, n - 1u);
        let e2 = min(e0 + 2u, n - 1u);
        let e3 = min(e0 + 3u, n - 1u);
        let d0 = pred[(e0 / per) * row + e0 % per] - truth[e0];
        let d1 = select(0.0, pred[(e1 / per) * row + e1 % per] - truth[e1], e0 + 1u < n);
        let d2 = select(0.0, pred[(e2 / per) * row + e2 % per] - truth[e2], e0 + 2u < n);
        let d3 = select(0.0, pred[(e3 / per) * row + e3 % per] - truth[e3], e0 + 3u < n);
        let q = (level_weight(e0 / per) * d0 * d0 + level_weight(e1 / per) * d1 * d1)
            + (level_weight(e2 / per) * d2 * d2 + level_weight(e3 / per) * d3 * d3);
        // Kahan-compensated running sum.
        let term = q - comp;
        let next = s + term;
        comp = (next - s) - term;
        s = next;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = RWG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        history[params.slot] = partial[0] * params.scale;
    }
}

@compute @workgroup_size(WG)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    let row = params.tokens * params.dim;
    let b = idx / row;
    let r = idx % row;
    let per = params.patches * params.dim;
    if (r < per) {
        dout[idx] = params.scale * level_weight(b) * (pred[idx] - truth[b * per + r]);
    } else {
        dout[idx] = 0.0;
    }
}
