// The MNIST classifier's own ops: ReLU and softmax cross-entropy, forward and
// backward, and the predicted label. Its dense layers are matmul.wgsl's GEMM.
// B samples (rows), C classes, n elements.
//
//   relu_forward           x [n] -> y [n]: y = max(x, 0)
//   relu_backward          x [n] (the forward's input), dy [n] -> dx [n]: dx = dy * [x > 0]
//   softmax_xent_forward   logits [B, C], labels [B] u32 -> probs [B, C], losses [B]
//                          probs[b, :] = softmax(logits[b, :]) (max-shifted),
//                          losses[b] = logsumexp(logits[b, :]) - logits[b, labels[b]].
//                          One thread per row (three passes over its C logits). A label >= C
//                          names no class: its loss is the logsumexp alone (and its one-hot
//                          row is zero in the backward), matching the CPU reference.
//   xent_mean              losses_in [B] -> history[slot] = mean over b of losses_in[b].
//                          ONE workgroup of RWG threads: each strides over the B terms, four at
//                          a time, with a compensated (Kahan) sum, then a tree in workgroup
//                          memory; no atomics (as loss.wgsl's mse_forward).
//   softmax_xent_backward  probs_in [B, C], labels [B] -> dlogits [B, C]
//                          dlogits[b, c] = (probs_in[b, c] - [c == labels[b]]) * scale,
//                          scale = 1 / B (the gradient of the mean loss).
//   argmax                 logits [B, C] -> pred [B] u32: the first index of the row's maximum
//                          (the predicted label). One thread per row.
//
// Threads are 1-D (WG per workgroup, except xent_mean); the host spills large counts into the
// y dimension. Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535 loop
// iterations in all have run: the host refuses sizes that would pass it there.

override WG: u32 = 64u;

struct Params {
    n: u32,        // elements (threads) of the elementwise entries
    batch: u32,    // B
    classes: u32,  // C
    slot: u32,     // xent_mean: history slot written
    scale: f32,    // xent_mean and softmax_xent_backward: 1 / B (f64 on the host)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read> logits: array<f32>;
@group(0) @binding(6) var<storage, read> labels: array<u32>;
@group(0) @binding(7) var<storage, read_write> probs: array<f32>;
@group(0) @binding(8) var<storage, read_write> losses: array<f32>;
@group(0) @binding(9) var<storage, read> losses_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> history: array<f32>;
@group(0) @binding(11) var<storage, read> probs_in: array<f32>;
@group(0) @binding(12) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(13) var<storage, read_write> pred: array<u32>;



@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    y[idx] = max(x[idx], 0.0);
}

@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    dx[idx] = select(0.0, dy[idx], x[idx] > 0.0);
}

@compute @workgroup_size(WG)
fn softmax_xent_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = linear_index(gid, nwg);
    if (b >= params.batch) {
        return;
    }
    let c = params.classes;
    let row = b * c;
    var m = logits[row];
    for (var j = 1u; j < c; j++) {
        m = max(m, logits[row + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < c; j++) {
        let e = exp(logits[row + j] - m);
        probs[row + j] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < c; j++) {
        probs[row + j] = probs[row + j] * inv;
    }
    let label = labels[b];
    var picked = -m; // no class: the loss is log(s) + m, the logsumexp
    if (label < c) {
        picked = logits[row + label] - m;
    }
    losses[b] = log(s) - picked;
}

@compute @workgroup_size(RWG)
fn xent_mean(@builtin(local_invocation_index) lid: u32) {
    let n = params.batch;
    var sc = vec2<f32>(0.0, 0.0); // (sum, Kahan compensation)
    // Four terms per iteration (fewer loop iterations: llvmpipe's cap).
    for (var e0 = lid * 4u; e0 < n; e0 += RWG * 4u) {
        let e1 = min(e0 + 1u, n - 1u);
        let e2 = min(e0 + 2u, n - 1u);
        let e3 = min(e0 + 3u, n - 1u);
        let v1 = select(0.0, losses_in[e1], e0 + 1u < n);
        let v2 = select(0.0, losses_in[e2], e0 + 2u < n);
        let v3 = select(0.0, losses_in[e3], e0 + 3u < n);
        let q = (losses_in[e0] + v1) + (v2 + v3);
        sc = kahan_add(sc, q);
    }
    let total = workgroup_sum(lid, sc.x);
    if (lid == 0u) {
        history[params.slot] = total * params.scale;
    }
}

@compute @workgroup_size(WG)
fn softmax_xent_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.n) {
        return;
    }
    let b = idx / params.classes;
    let j = idx % params.classes;
    let hot = select(0.0, 1.0, labels[b] == j);
    dlogits[idx] = (probs_in[idx] - hot) * params.scale;
}

@compute @workgroup_size(WG)
fn argmax(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = linear_index(gid, nwg);
    if (b >= params.batch) {
        return;
    }
    let row = b * params.classes;
    var best = 0u;
    var m = logits[row];
    for (var j = 1u; j < params.classes; j++) {
        let v = logits[row + j];
        if (v > m) {
            m = v;
            best = j;
        }
    }
    pred[b] = best;
}
