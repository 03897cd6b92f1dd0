// The label embedding of a class-conditional model (`--classes`, an extension of docs/model.md §3):
// row labels[b] of the table is added to sample b's conditioning token (its last row, T - 1).
// B samples, T tokens, D token width, ROWS = the table's rows (the digits and "no label").
//
//   label_forward   labels [B] (u32 < ROWS), table [ROWS, D], x_start [B, T, D] ->
//                   x_start[b, T-1, d] += table[labels[b], d] (in place, after add_pos)
//   label_backward  labels [B], dx [B, T, D] -> dtable [ROWS, D]:
//                   dtable[r, d] = sum over b with labels[b] = r of dx[b, T-1, d]
//                   (a label past the table counts as its last row, as in the forward)
//                   (gather over the batch: one writer per element, no atomics)
//
// Threads are 1-D (WG per workgroup); the host spills large counts into the y dimension and
// refuses batches whose loop would pass lavapipe's loop limit (see rows.wgsl).

override WG: u32 = 64u;

struct Params {
    batch: u32,    // B
    tokens: u32,   // T
    dim: u32,      // D
    rows: u32,     // ROWS
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
// The table (a parameter) and x_start are stored as `elem` (f32, or f16 with --precision
// f16); the sum is f32.
@group(0) @binding(2) var<storage, read> table: array<elem>;
@group(0) @binding(3) var<storage, read_write> x_start: array<elem>;
@group(0) @binding(4) var<storage, read> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dtable: array<f32>;

// Element d of sample b's conditioning row in a [B, T, D] tensor.
fn cond_index(b: u32, d: u32) -> u32 {
    return (b * params.tokens + params.tokens - 1u) * params.dim + d;
}

@compute @workgroup_size(WG)
fn label_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.batch * params.dim) {
        return;
    }
    let b = idx / params.dim;
    let d = idx % params.dim;
    let row = min(labels[b], params.rows - 1u);
    let i = cond_index(b, d);
    x_start[i] = elem(f32(x_start[i]) + f32(table[row * params.dim + d]));
}

@compute @workgroup_size(WG)
fn label_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.rows * params.dim) {
        return;
    }
    let r = idx / params.dim;
    let d = idx % params.dim;
    var s = 0.0;
    for (var b = 0u; b < params.batch; b++) {
        if (min(labels[b], params.rows - 1u) == r) {
            s += dx[cond_index(b, d)];
        }
    }
    dtable[idx] = s;
}
