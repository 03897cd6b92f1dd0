// Multi-head self-attention core (docs/model.md §3): per sample b and head h,
//   S = Q K^T * scale (scale = 1/sqrt(KEY_DIM)), P = softmax over the keys of each row of S,
//   O = P V.
// B samples, T tokens, H heads, K key dim, HK = H*K, M = B*T rows. Head h is columns
// h*K .. (h+1)*K of each of the Q, K, V blocks.
//
//   attention_forward   qkv [M, 3*HK] (Q | K | V side by side)
//                       -> o [M, HK] (heads concatenated), probs_out [B, H, T, T] (P, kept for
//                       the backward pass). One thread per (b, h, query row i): scores are
//                       written to its own row of probs_out, then max-subtracted, exponentiated
//                       and normalised in place (numerically stable softmax), then O_i = P_i V.
//                       No private arrays: T is limited only by MAX_T (the backward's).
//   attention_backward  qkv [M, 3*HK], probs [B, H, T, T], d_o [M, HK] -> dqkv [M, 3*HK]
//                       dP_ij = dO_i . V_j,  delta_i = sum_k P_ik dP_ik,
//                       dS_ij = P_ij (dP_ij - delta_i),
//                       dQ_i = scale * sum_j dS_ij K_j,  dK_j = scale * sum_i dS_ij Q_i,
//                       dV_j = sum_i P_ij dO_i.
//                       One workgroup of BWG threads per (b, h); thread lid handles rows
//                       r = lid, lid + BWG, ... (T <= MAX_T). First each row's delta goes to
//                       workgroup memory; then, gather: the thread of row r owns and writes
//                       dQ_r, dK_r, dV_r of head h (no atomics), O(T K) work per row.
//
//   attention_forward_tile, attention_backward_tile
//                       v2, for T <= TILE_T: one workgroup of AWG threads per (b, h) holds the
//                       T x T matrices in workgroup memory. Forward: S_ij = scale Q_i . K_j
//                       (threads over the (i, j) pairs), the softmax of each row, then
//                       O_ic = sum_j P_ij V_jc (threads over the (i, c) pairs). Backward: P and
//                       dP_ij = dO_i . V_j, then delta_i, then dS in place, then dQ, dK and dV
//                       (threads over the (r, c) pairs), each output accumulated in registers
//                       and written once. v1 writes its partial sums to memory for every
//                       (j, c) and leaves most lanes idle at small T; what costs most on
//                       CPU adapters, where every per-lane address is a gather or a scatter.
//
// Forward threads are 1-D (WG per workgroup); the host spills large counts into the y
// dimension. Forward thread index = (b * H + h) * T + row; backward workgroup index = b * H + h.
//
// Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535 loop iterations in
// all have run (LP_MAX_TGSI_LOOP_ITERATIONS, shared by all loops): the host refuses shapes
// that would pass it there.

override WG: u32 = 64u;
// Threads per (b, h) workgroup of attention_backward (the host picks the power of two >= T,
// clamped to 8..64), and the most tokens it handles (its workgroup memory holds one value per row).
override BWG: u32 = 64u;
const MAX_T: u32 = 1024u;

var<workgroup> delta: array<f32, MAX_T>;

// v2: threads per (b, h) workgroup, and the most tokens (the host's ATTENTION_TILE_TOKENS).
override AWG: u32 = 64u;
override TILE_T: u32 = 32u;
var<workgroup> tile_s: array<f32, TILE_T * TILE_T>;  // S then P (forward); dP then dS (backward)
var<workgroup> tile_p: array<f32, TILE_T * TILE_T>;  // P (backward)
var<workgroup> tile_row: array<f32, TILE_T>;         // delta (backward)

struct Params {
    batch: u32,    // B
    tokens: u32,   // T
    heads: u32,    // H
    key_dim: u32,  // K
    scale: f32,    // 1 / sqrt(K), computed in f64 by the host
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// qkv and o are stored as `elem` (f32, or f16 with --precision f16); scores, the softmax,
// the probabilities and every sum are f32.
@group(0) @binding(1) var<storage, read> qkv: array<elem>;
@group(0) @binding(2) var<storage, read_write> o: array<elem>;
@group(0) @binding(3) var<storage, read_write> probs_out: array<f32>;
@group(0) @binding(4) var<storage, read> probs: array<f32>;
@group(0) @binding(5) var<storage, read> d_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;

// Element i of qkv, in f32.
fn qkv_at(i: u32) -> f32 {
    return f32(qkv[i]);
}

// Dot product of K values of qkv starting at a and b.
fn dot_qkv(a: u32, b: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < params.key_dim; c++) {
        s += qkv_at(a + c) * qkv_at(b + c);
    }
    return s;
}

// Dot product of K values of d_o starting at a with K values of qkv starting at b.
fn dot_do_qkv(a: u32, b: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < params.key_dim; c++) {
        s += d_o[a + c] * qkv_at(b + c);
    }
    return s;
}

@compute @workgroup_size(WG)
fn attention_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let t = params.tokens;
    let h_count = params.heads;
    let k = params.key_dim;
    if (idx >= params.batch * h_count * t) {
        return;
    }
    let i = idx % t;
    let bh = idx / t;
    let h = bh % h_count;
    let b = bh / h_count;
    let hk = h_count * k;
    let stride = 3u * hk;
    let sample = b * t;
    let q = (sample + i) * stride + h * k;     // Q_i
    let kb = sample * stride + hk + h * k;     // K_j at kb + j * stride
    let vb = kb + hk;                          // V_j at vb + j * stride
    let prow = idx * t;                        // probs[b, h, i, :]

    var mx = dot_qkv(q, kb) * params.scale;
    probs_out[prow] = mx;
    for (var j = 1u; j < t; j++) {
        let s = dot_qkv(q, kb + j * stride) * params.scale;
        probs_out[prow + j] = s;
        mx = max(mx, s);
    }
    var sum = 0.0;
    for (var j = 0u; j < t; j++) {
        let e = exp(probs_out[prow + j] - mx);
        probs_out[prow + j] = e;
        sum += e;
    }
    for (var j = 0u; j < t; j++) {
        probs_out[prow + j] = probs_out[prow + j] / sum;
    }
    let orow = (sample + i) * hk + h * k;
    for (var c = 0u; c < k; c++) {
        var acc = 0.0;
        for (var j = 0u; j < t; j++) {
            acc += probs_out[prow + j] * qkv_at(vb + j * stride + c);
        }
        o[orow + c] = elem(acc);
    }
}

@compute @workgroup_size(BWG)
fn attention_backward(@builtin(local_invocation_index) lid: u32,
                      @builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let bh = wid.x + wid.y * nwg.x;    // (b, h) of this workgroup: uniform
    let t = params.tokens;
    let h_count = params.heads;
    let k = params.key_dim;
    if (bh >= params.batch * h_count) {
        return;
    }
    let h = bh % h_count;
    let b = bh / h_count;
    let hk = h_count * k;
    let stride = 3u * hk;
    let sample = b * t;
    let qb = sample * stride + h * k;   // Q_i at qb + i * stride
    let kb = qb + hk;                   // K_j at kb + j * stride
    let vb = kb + hk;                   // V_j at vb + j * stride
    let ob = sample * hk + h * k;       // dO_i at ob + i * hk
    let pb = bh * t * t;                // P_ij at pb + i * t + j

    // delta_i = sum_j P_ij dP_ij for every row, shared through workgroup memory.
    for (var i = lid; i < t; i += BWG) {
        var d = 0.0;
        for (var j = 0u; j < t; j++) {
            d += probs[pb + i * t + j] * dot_do_qkv(ob + i * hk, vb + j * stride);
        }
        delta[i] = d;
    }
    workgroupBarrier();

    for (var r = lid; r < t; r += BWG) {
        let dq = qb + r * stride;        // this thread's outputs: dQ_r, dK_r, dV_r
        let dk = dq + hk;
        let dv = dk + hk;
        let dor = ob + r * hk;
        let vr = vb + r * stride;
        for (var c = 0u; c < k; c++) {
            dqkv[dq + c] = 0.0;
            dqkv[dk + c] = 0.0;
            dqkv[dv + c] = 0.0;
        }
        for (var j = 0u; j < t; j++) {
            // Row r of dS: dQ_r += scale dS_rj K_j.
            let ds_rj = probs[pb + r * t + j] * (dot_do_qkv(dor, vb + j * stride) - delta[r]);
            // Column r of dS (j plays i): dK_r += scale dS_jr Q_j, dV_r += P_jr dO_j.
            let p_jr = probs[pb + j * t + r];
            let doj = ob + j * hk;
            let ds_jr = p_jr * (dot_do_qkv(doj, vr) - delta[j]);
            let a = ds_rj * params.scale;
            let e = ds_jr * params.scale;
            let kj = kb + j * stride;
            let qj = qb + j * stride;
            for (var c = 0u; c < k; c++) {
                dqkv[dq + c] += a * qkv_at(kj + c);
                dqkv[dk + c] += e * qkv_at(qj + c);
                dqkv[dv + c] += p_jr * d_o[doj + c];
            }
        }
    }
}

// ---- v2: one workgroup per (b, h), the T x T matrices in workgroup memory ------------------

// Offsets of head h of sample b: Q_i at .q + i * stride (K_j, V_j likewise), dO_i at
// .o + i * hk, P_ij at .p + i * t + j.
struct Head {
    q: u32,
    k: u32,
    v: u32,
    o: u32,
    p: u32,
    stride: u32,
    hk: u32,
}

fn head(bh: u32) -> Head {
    let t = params.tokens;
    let hk = params.heads * params.key_dim;
    let b = bh / params.heads;
    let h = bh % params.heads;
    let q = b * t * 3u * hk + h * params.key_dim;
    return Head(q, q + hk, q + 2u * hk, b * t * hk + h * params.key_dim, bh * t * t, 3u * hk, hk);
}

@compute @workgroup_size(AWG)
fn attention_forward_tile(@builtin(local_invocation_index) lid: u32,
                          @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let bh = wid.x + wid.y * nwg.x;    // uniform in the workgroup
    if (bh >= params.batch * params.heads) {
        return;
    }
    let t = params.tokens;
    let k = params.key_dim;
    let hd = head(bh);
    for (var e = lid; e < t * t; e += AWG) {
        let i = e / t;
        let j = e % t;
        tile_s[e] = dot_qkv(hd.q + i * hd.stride, hd.k + j * hd.stride) * params.scale;
    }
    workgroupBarrier();
    for (var i = lid; i < t; i += AWG) {
        var mx = tile_s[i * t];
        for (var j = 1u; j < t; j++) {
            mx = max(mx, tile_s[i * t + j]);
        }
        var sum = 0.0;
        for (var j = 0u; j < t; j++) {
            let x = exp(tile_s[i * t + j] - mx);
            tile_s[i * t + j] = x;
            sum += x;
        }
        for (var j = 0u; j < t; j++) {
            let p = tile_s[i * t + j] / sum;
            tile_s[i * t + j] = p;
            probs_out[hd.p + i * t + j] = p;
        }
    }
    workgroupBarrier();
    for (var e = lid; e < t * k; e += AWG) {
        let i = e / k;
        let c = e % k;
        var acc = 0.0;
        for (var j = 0u; j < t; j++) {
            acc += tile_s[i * t + j] * qkv_at(hd.v + j * hd.stride + c);
        }
        o[hd.o + i * hd.hk + c] = elem(acc);
    }
}

@compute @workgroup_size(AWG)
fn attention_backward_tile(@builtin(local_invocation_index) lid: u32,
                           @builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>) {
    let bh = wid.x + wid.y * nwg.x;    // uniform in the workgroup
    if (bh >= params.batch * params.heads) {
        return;
    }
    let t = params.tokens;
    let k = params.key_dim;
    let hd = head(bh);
    // P, and dP_ij = dO_i . V_j.
    for (var e = lid; e < t * t; e += AWG) {
        let i = e / t;
        let j = e % t;
        tile_p[e] = probs[hd.p + e];
        tile_s[e] = dot_do_qkv(hd.o + i * hd.hk, hd.v + j * hd.stride);
    }
    workgroupBarrier();
    // delta_i = sum_j P_ij dP_ij.
    for (var i = lid; i < t; i += AWG) {
        var d = 0.0;
        for (var j = 0u; j < t; j++) {
            d += tile_p[i * t + j] * tile_s[i * t + j];
        }
        tile_row[i] = d;
    }
    workgroupBarrier();
    // dS_ij = P_ij (dP_ij - delta_i), in place.
    for (var e = lid; e < t * t; e += AWG) {
        tile_s[e] = tile_p[e] * (tile_s[e] - tile_row[e / t]);
    }
    workgroupBarrier();
    // dQ_rc = scale sum_j dS_rj K_jc, dK_rc = scale sum_j dS_jr Q_jc, dV_rc = sum_j P_jr dO_jc.
    for (var e = lid; e < t * k; e += AWG) {
        let r = e / k;
        let c = e % k;
        var dq = 0.0;
        var dk = 0.0;
        var dv = 0.0;
        for (var j = 0u; j < t; j++) {
            dq += tile_s[r * t + j] * qkv_at(hd.k + j * hd.stride + c);
            dk += tile_s[j * t + r] * qkv_at(hd.q + j * hd.stride + c);
            dv += tile_p[j * t + r] * d_o[hd.o + j * hd.hk + c];
        }
        dqkv[hd.q + r * hd.stride + c] = dq * params.scale;
        dqkv[hd.k + r * hd.stride + c] = dk * params.scale;
        dqkv[hd.v + r * hd.stride + c] = dv;
    }
}
