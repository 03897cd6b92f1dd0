// The training loss (docs/model.md §4): the mean squared error of the predicted noise, weighted per
// sample by its level, into an on-GPU loss history, and its gradient. B samples, T tokens
// (P = g^2 patch tokens + 1 conditioning token), D token width.
//
//   mse_forward   pred [B, T, D] (the model output), truth [B, P, D] (the target), tokens
//                 [B, T, D] (the model's input: a^n of sample b at tokens[b, P, 0])
//                 -> history[slot] = mean over (b, t < P, d) of
//                    w_b (pred[b, t, d] - truth[b, t, d])^2
//                 (the conditioning token t = P is ignored); w_b = level_weight(b), 1 unless
//                 WEIGHT_MAX > 1 (`--loss-weight-max`). ONE workgroup of RWG threads:
//                 each strides over the B*P*D terms, four at a time, with a compensated
//                 (Kahan) sum, then the prelude's workgroup_sum; no atomics. The host sets
//                 `slot` per step and reads the history every N steps.
//   mse_backward  pred [B, T, D], truth [B, P, D], tokens -> dout [B, T, D]
//                 dout[b, t, d] = 2 w_b (pred - truth) / (B P D) for t < P, 0 for t = P.
//
// mse_backward's threads are 1-D (WG per workgroup); the host spills large counts into the y
// dimension. Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535 loop
// iterations in all have run: the host refuses sizes that would pass it there.

override WG: u32 = 64u;
// The loss weight's cap W (1: the plain mean) and the training pixels' variance.
override WEIGHT_MAX: f32 = 1.0;
override VAR: f32 = 1.0;

struct Params {
    n: u32,        // elements (threads) of mse_backward
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
@group(0) @binding(9) var<storage, read> pred: array<f32>;
@group(0) @binding(10) var<storage, read> truth: array<f32>;
@group(0) @binding(11) var<storage, read_write> history: array<f32>;
@group(0) @binding(12) var<storage, read_write> dout: array<f32>;

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

@compute @workgroup_size(RWG)
fn mse_forward(@builtin(local_invocation_index) lid: u32) {
    let per = params.patches * params.dim;
    let n = params.batch * per;
    let row = params.tokens * params.dim;
    var sc = vec2<f32>(0.0, 0.0); // (sum, Kahan compensation)
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
        sc = kahan_add(sc, q);
    }
    let total = workgroup_sum(lid, sc.x);
    if (lid == 0u) {
        history[params.slot] = total * params.scale;
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
