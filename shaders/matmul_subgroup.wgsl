// The subgroup GEMM, compiled only on adapters with subgroups. The kernel table puts
// shaders/matmul.wgsl in front of this file (params, load_a/load_b, the register arrays acc4
// and bq, flush_all), so that adapters without subgroups never see a subgroup operation.
//
//   matmul_subgroup    v4: v3's register blocking (REG_LANES threads side by side along N, each
//                      REG_ROWS rows x REG_COLS consecutive columns as vec4 accumulators, one step
//                      of K at a time), with op(A) shared through subgroup shuffles instead of
//                      loaded by every thread: for each chunk of S = subgroup_size steps of K,
//                      lane l loads op(A)[row, p0 + l] for its REG_ROWS rows (consecutive lanes,
//                      consecutive addresses when A is not transposed), and step s takes
//                      lane s's values with subgroupShuffle. B comes as scalar loads.
//   matmul_subgroup4   v4 loading B as vec4s (binding 6 instead of 2): the host uses it when
//                      B is not transposed and N and B's offset are multiples of 4.
// Every thread of a subgroup runs the same rows and the same chunks, so the shuffles see all
// lanes active: the host makes REG_LANES a multiple of the adapter's largest subgroup size (then
// no subgroup is partial).
// Buffers as in matmul.wgsl: 0 params, 1 A, 2 B (6 as vec4), 3 bias, 4 C.
// The two entry points differ only in how they load a row of B (each its own function, so
// that each binds only the buffer it reads), as matmul_tiled and matmul_tiled4 do.

// ra[i] = op(A)[row0 + i, p0 + lane]: this lane's share of the chunk of K at p0.
var<private> ra: array<f32, MAX_SIDE>;

// Loads this lane's share of the chunk at p0. Lanes past K read the last step (no step takes
// their values: a chunk runs min(S, K - p0) steps); rows past M read the last valid one (their
// outputs are dropped by flush).
fn load_a_chunk(row0: u32, p0: u32, lane: u32) {
    let p = min(p0 + lane, params.k - 1u);
    for (var i = 0u; i < REG_ROWS; i++) {
        ra[i] = load_a(min(row0 + i, params.m - 1u), p);
    }
}

// acc4 += op(A)[rows, p0 + s] x bq, the values of A taken from lane s.
fn shuffle_fma(s: u32) {
    let nq = REG_COLS / 4u;
    for (var i = 0u; i < REG_ROWS; i++) {
        let av = vec4<f32>(subgroupShuffle(ra[i], s));
        for (var q = 0u; q < nq; q++) {
            acc4[i * nq + q] = fma(av, bq[q], acc4[i * nq + q]);
        }
    }
}

// bq[q] = op(B)[p, col0 + 4q .. col0 + 4q + 4] from scalar loads; columns past N read the last
// valid one (their outputs are dropped by flush).
fn load_b_row(p: u32, col0: u32) {
    let last = params.n - 1u;
    for (var q = 0u; q < REG_COLS / 4u; q++) {
        let c = col0 + 4u * q;
        bq[q] = vec4<f32>(load_b(p, min(c, last)), load_b(p, min(c + 1u, last)),
                          load_b(p, min(c + 2u, last)), load_b(p, min(c + 3u, last)));
    }
}

// load_b_row with vec4 loads (B is [K, N], N % 4 == 0).
fn load_b_row4(p: u32, col0: u32) {
    let n = params.n;
    for (var q = 0u; q < REG_COLS / 4u; q++) {
        bq[q] = load_b4((p * n + min(col0 + 4u * q, n - 4u)) / 4u);
    }
}

@compute @workgroup_size(REG_LANES)
fn matmul_subgroup(@builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32,
                   @builtin(subgroup_size) sg: u32) {
    let row0 = row_tile(wid, nwg) * REG_ROWS;
    let col0 = (wid.x * REG_LANES + lid.x) * REG_COLS;
    for (var p0 = 0u; p0 < params.k; p0 += sg) {
        load_a_chunk(row0, p0, lane);
        for (var s = 0u; s < min(sg, params.k - p0); s++) {
            load_b_row(p0 + s, col0);
            shuffle_fma(s);
        }
    }
    flush_all(row0, col0);
}

@compute @workgroup_size(REG_LANES)
fn matmul_subgroup4(@builtin(local_invocation_id) lid: vec3<u32>,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32,
                    @builtin(subgroup_size) sg: u32) {
    let row0 = row_tile(wid, nwg) * REG_ROWS;
    let col0 = (wid.x * REG_LANES + lid.x) * REG_COLS;
    for (var p0 = 0u; p0 < params.k; p0 += sg) {
        load_a_chunk(row0, p0, lane);
        for (var s = 0u; s < min(sg, params.k - p0); s++) {
            load_b_row4(p0 + s, col0);
            shuffle_fma(s);
        }
    }
    flush_all(row0, col0);
}
