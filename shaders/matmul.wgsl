// General matrix multiply and the bias gradient, all matrices row-major (docs/model.md §3:
// every dense layer's forward and backward).
//
//   C[M, N] = op(A) · op(B) (+ bias[N] if HAS_BIAS) (+ C if ACCUMULATE)   (flags in params)
//     op(A) is [M, K]: A is stored [M, K], or [K, M] when TRANS_A.
//     op(B) is [K, N]: B is stored [K, N], or [N, K] when TRANS_B.
//   The dense layer uses:  Y = X·W + b        (no transposes, HAS_BIAS)
//                          dX = dY·Wᵀ (+ dX)  (TRANS_B, ACCUMULATE when the input's gradient
//                                              collects several contributions)
//                          dW = Xᵀ·dY         (TRANS_A)
//
// Kernel versions, kept side by side (each one correct for any M, N, K ≥ 1; the host picks):
//   matmul_naive       v1: one output per thread, NAIVE_WG x NAIVE_WG workgroups. The oracle.
//   matmul_tiled       v2: a TILE_M x TILE_N block of C per workgroup; TILE_K-deep slabs of
//                      op(A) and op(B) staged in workgroup memory, each thread accumulating
//                      THREAD_M x THREAD_N outputs (strided by the thread grid) in registers.
//                      What is fast on real GPUs.
//   matmul_tiled4      v2 staging the slabs with vec4 loads (binding 5 and 6) under the same
//                      alignment conditions as matmul_register4, with TILE_M, TILE_N and
//                      TILE_K multiples of 4.
//   matmul_register    v3: no workgroup memory. A workgroup is REG_LANES threads side by
//                      side along N; each thread owns REG_ROWS rows x REG_COLS consecutive
//                      columns (REG_COLS a multiple of 4) as vec4 accumulators; one step of
//                      K at a time with scalar loads: the fallback for any alignment.
//   matmul_register4   v3 with vec4 loads of A and B (binding 5 and 6 instead of 1 and 2), four
//                      steps of K at a time: the host uses it when A's and B's contiguous
//                      dimension (A: K, or M when TRANS_A; B: N, or K when TRANS_B) is a
//                      multiple of 4 and both views start on a multiple of 4 elements (then K
//                      is a multiple of 4 too, unless TRANS_A and not TRANS_B: a tail of single
//                      steps). REG_ROWS and REG_COLS must be multiples of 4.
//                      What is fast on CPU adapters (lavapipe / llvmpipe), where every load
//                      whose address differs per lane costs a loop over the lanes: 8x8 outputs
//                      per thread do 256 FMAs per 16 vec4 loads (measured ~4-7 GFLOP/s on 2
//                      cores, 15x the naive kernel; 4x4, 8x4 and 16x8 blocks were slower).
//   colsum             db[N] = Σ_m dY[m, N] (+ db if ACCUMULATE), dY bound as B ([M, N]): one
//                      workgroup per COLSUM_COLS columns, COLSUM_ROWS partial sums per column
//                      reduced in workgroup memory; one writer per output, no atomics.
//
// Buffers (group 0): 0 params (uniform), 1 A, 2 B, 3 bias [N] (without a bias the host binds
// A here, never read: the HAS_BIAS flag is off), 4 C [M, N] (read_write), 5 A as vec4, 6 B as
// vec4; all stored as `elem` (f32, or f16 with --precision f16), every product and sum in f32
// (the loads below convert; C is rounded to elem once, in `store`).
// Row tiles are indexed by workgroup_id.y + workgroup_id.z * num_workgroups.y, so the host can
// spill more than 65,535 row tiles into z.
// Register arrays are sized for the largest blocking the host accepts (MAX_ACC accumulators,
// MAX_SIDE values of A or B per step). Loops run to override constants with small bodies so
// that compilers unroll them and the arrays stay in registers; llvmpipe needs that twice over:
// it keeps arrays indexed by a loop it did not unroll in memory, and it stops an invocation
// after 65,535 loop iterations in all (the host refuses work that could get there on CPU
// adapters).

override TRANS_A: bool = false;
override TRANS_B: bool = false;

override NAIVE_WG: u32 = 16u;

override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
override TILE_K: u32 = 16u;
override THREAD_M: u32 = 4u;
override THREAD_N: u32 = 4u;

override REG_ROWS: u32 = 8u;
override REG_COLS: u32 = 8u;
override REG_LANES: u32 = 8u;

override COLSUM_COLS: u32 = 64u;
override COLSUM_ROWS: u32 = 4u;

const MAX_ACC: u32 = 64u;
const MAX_SIDE: u32 = 16u;

// HAS_BIAS and ACCUMULATE are bits of params.flags rather than override constants: they only
// touch the epilogue, and every override combination is one more pipeline to compile, which
// takes seconds on CPU adapters.
const HAS_BIAS_BIT: u32 = 1u;
const ACCUMULATE_BIT: u32 = 2u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,  // HAS_BIAS_BIT | ACCUMULATE_BIT
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read> bias: array<elem>;
@group(0) @binding(4) var<storage, read_write> c: array<elem>;
@group(0) @binding(5) var<storage, read> a4: array<vec4<elem>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<elem>>;

// op(A)[i, p] and op(B)[p, j] (no bounds checks).
fn load_a(i: u32, p: u32) -> f32 {
    if (TRANS_A) {
        return f32(a[p * params.m + i]);
    }
    return f32(a[i * params.k + p]);
}

fn load_b(p: u32, j: u32) -> f32 {
    if (TRANS_B) {
        return f32(b[j * params.k + p]);
    }
    return f32(b[p * params.n + j]);
}

// Elements 4i .. 4i + 4 of A and of B, in f32.
fn load_a4(i: u32) -> vec4<f32> {
    return vec4<f32>(a4[i]);
}

fn load_b4(i: u32) -> vec4<f32> {
    return vec4<f32>(b4[i]);
}

// Writes C[i, j] = acc (+ bias[j]) (+ C[i, j]); the caller checks bounds.
fn store(i: u32, j: u32, acc: f32) {
    var v = acc;
    if ((params.flags & HAS_BIAS_BIT) != 0u) {
        v += f32(bias[j]);
    }
    let idx = i * params.n + j;
    if ((params.flags & ACCUMULATE_BIT) != 0u) {
        v += f32(c[idx]);
    }
    c[idx] = elem(v);
}

fn row_tile(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y + wid.z * nwg.y;
}

// ---- v1: one output per thread -------------------------------------------------------------

@compute @workgroup_size(NAIVE_WG, NAIVE_WG)
fn matmul_naive(@builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = row_tile(wid, nwg) * NAIVE_WG + lid.y;
    let j = wid.x * NAIVE_WG + lid.x;
    if (i >= params.m || j >= params.n) {
        return;
    }
    var s = 0.0;
    for (var p = 0u; p < params.k; p++) {
        s = fma(load_a(i, p), load_b(p, j), s);
    }
    store(i, j, s);
}

// ---- v2: workgroup-memory tiles, register blocking -----------------------------------------

// Slabs of op(A) as [TILE_K][TILE_M] and of op(B) as [TILE_K][TILE_N].
var<workgroup> tile_a: array<f32, TILE_K * TILE_M>;
var<workgroup> tile_b: array<f32, TILE_K * TILE_N>;

// The two entry points differ only in how they stage the slabs (each its own function, so
// that each binds only the buffers it reads). Every loop has a constant trip count, so
// compilers can unroll it (llvmpipe must: it keeps unresolved register-array indices in
// memory, and stops a shader after 65,535 loop iterations in all).
@compute @workgroup_size(TILE_N / THREAD_N, TILE_M / THREAD_M)
fn matmul_tiled(@builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = row_tile(wid, nwg) * TILE_M;
    let col0 = wid.x * TILE_N;
    var acc: array<f32, MAX_ACC>;
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        stage(tile_thread(lid), row0, col0, k0);
        workgroupBarrier();
        slab_fma(&acc, lid);
        workgroupBarrier();
    }
    write_tile(&acc, lid, row0, col0);
}

@compute @workgroup_size(TILE_N / THREAD_N, TILE_M / THREAD_M)
fn matmul_tiled4(@builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = row_tile(wid, nwg) * TILE_M;
    let col0 = wid.x * TILE_N;
    var acc: array<f32, MAX_ACC>;
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        stage4(tile_thread(lid), row0, col0, k0);
        workgroupBarrier();
        slab_fma(&acc, lid);
        workgroupBarrier();
    }
    write_tile(&acc, lid, row0, col0);
}

// This thread's index in its workgroup.
fn tile_thread(lid: vec3<u32>) -> u32 {
    return lid.y * (TILE_N / THREAD_N) + lid.x;
}

// Stages the slabs at depth k0 with scalar loads; consecutive threads read consecutive
// addresses of the stored matrix.
fn stage(t: u32, row0: u32, col0: u32, k0: u32) {
    let threads = (TILE_N / THREAD_N) * (TILE_M / THREAD_M);
    let m = params.m;
    let n = params.n;
    let k = params.k;
    for (var r = 0u; r < (TILE_M * TILE_K + threads - 1u) / threads; r++) {
        let e = t + r * threads;
        if (e < TILE_M * TILE_K) {
            var ii: u32;
            var pp: u32;
            if (TRANS_A) {
                ii = e % TILE_M;
                pp = e / TILE_M;
            } else {
                pp = e % TILE_K;
                ii = e / TILE_K;
            }
            var v = 0.0;
            if (row0 + ii < m && k0 + pp < k) {
                v = load_a(row0 + ii, k0 + pp);
            }
            tile_a[pp * TILE_M + ii] = v;
        }
    }
    for (var r = 0u; r < (TILE_N * TILE_K + threads - 1u) / threads; r++) {
        let e = t + r * threads;
        if (e < TILE_N * TILE_K) {
            var jj: u32;
            var pp: u32;
            if (TRANS_B) {
                pp = e % TILE_K;
                jj = e / TILE_K;
            } else {
                jj = e % TILE_N;
                pp = e / TILE_N;
            }
            var v = 0.0;
            if (col0 + jj < n && k0 + pp < k) {
                v = load_b(k0 + pp, col0 + jj);
            }
            tile_b[pp * TILE_N + jj] = v;
        }
    }
}

// Stages the slabs at depth k0 with vec4 loads along each stored matrix's contiguous
// dimension (matmul_tiled4's conditions, checked by the host: that dimension a multiple of 4,
// the views starting on a multiple of 4, TILE_M, TILE_N and TILE_K multiples of 4). A vec4
// then lies wholly inside or outside the matrix: one bounds check covers it.
fn stage4(t: u32, row0: u32, col0: u32, k0: u32) {
    let threads = (TILE_N / THREAD_N) * (TILE_M / THREAD_M);
    let m = params.m;
    let n = params.n;
    let k = params.k;
    for (var r = 0u; r < (TILE_M * TILE_K / 4u + threads - 1u) / threads; r++) {
        let e = t + r * threads;
        if (e < TILE_M * TILE_K / 4u) {
            var v = vec4<f32>(0.0);
            if (TRANS_A) {
                // A is [K, M]: four consecutive rows of op(A) at depth pp.
                let pp = e / (TILE_M / 4u);
                let ii = 4u * (e % (TILE_M / 4u));
                if (k0 + pp < k && row0 + ii < m) {
                    v = load_a4(((k0 + pp) * m + row0 + ii) / 4u);
                }
                for (var q = 0u; q < 4u; q++) {
                    tile_a[pp * TILE_M + ii + q] = v[q];
                }
            } else {
                // A is [M, K]: four consecutive depths of row ii.
                let ii = e / (TILE_K / 4u);
                let pp = 4u * (e % (TILE_K / 4u));
                if (row0 + ii < m && k0 + pp < k) {
                    v = load_a4(((row0 + ii) * k + k0 + pp) / 4u);
                }
                for (var q = 0u; q < 4u; q++) {
                    tile_a[(pp + q) * TILE_M + ii] = v[q];
                }
            }
        }
    }
    for (var r = 0u; r < (TILE_N * TILE_K / 4u + threads - 1u) / threads; r++) {
        let e = t + r * threads;
        if (e < TILE_N * TILE_K / 4u) {
            var v = vec4<f32>(0.0);
            if (TRANS_B) {
                // B is [N, K]: four consecutive depths of column jj.
                let jj = e / (TILE_K / 4u);
                let pp = 4u * (e % (TILE_K / 4u));
                if (col0 + jj < n && k0 + pp < k) {
                    v = load_b4(((col0 + jj) * k + k0 + pp) / 4u);
                }
                for (var q = 0u; q < 4u; q++) {
                    tile_b[(pp + q) * TILE_N + jj] = v[q];
                }
            } else {
                // B is [K, N]: four consecutive columns at depth pp.
                let pp = e / (TILE_N / 4u);
                let jj = 4u * (e % (TILE_N / 4u));
                if (k0 + pp < k && col0 + jj < n) {
                    v = load_b4(((k0 + pp) * n + col0 + jj) / 4u);
                }
                for (var q = 0u; q < 4u; q++) {
                    tile_b[pp * TILE_N + jj + q] = v[q];
                }
            }
        }
    }
}

// acc += the product of the staged slabs, for this thread's THREAD_M x THREAD_N outputs
// (strided by the thread grid).
fn slab_fma(acc: ptr<function, array<f32, MAX_ACC>>, lid: vec3<u32>) {
    let tx = TILE_N / THREAD_N;
    let ty = TILE_M / THREAD_M;
    var ra: array<f32, MAX_SIDE>;
    var rb: array<f32, MAX_SIDE>;
    for (var pp = 0u; pp < TILE_K; pp++) {
        for (var i = 0u; i < THREAD_M; i++) {
            ra[i] = tile_a[pp * TILE_M + lid.y + i * ty];
        }
        for (var j = 0u; j < THREAD_N; j++) {
            rb[j] = tile_b[pp * TILE_N + lid.x + j * tx];
        }
        for (var i = 0u; i < THREAD_M; i++) {
            for (var j = 0u; j < THREAD_N; j++) {
                (*acc)[i * THREAD_N + j] = fma(ra[i], rb[j], (*acc)[i * THREAD_N + j]);
            }
        }
    }
}

// Writes this thread's outputs of the tile at (row0, col0).
fn write_tile(acc: ptr<function, array<f32, MAX_ACC>>, lid: vec3<u32>, row0: u32, col0: u32) {
    let tx = TILE_N / THREAD_N;
    let ty = TILE_M / THREAD_M;
    for (var i = 0u; i < THREAD_M; i++) {
        for (var j = 0u; j < THREAD_N; j++) {
            let gi = row0 + lid.y + i * ty;
            let gj = col0 + lid.x + j * tx;
            if (gi < params.m && gj < params.n) {
                store(gi, gj, (*acc)[i * THREAD_N + j]);
            }
        }
    }
}

// ---- v3: register blocking, no workgroup memory --------------------------------------------

// Registers of both v3 kernels, indexed only with constants once the loops (bounded by
// override constants, each with a small body) are unrolled: an index the compiler cannot
// resolve would move the arrays to memory.
// acc4[i * (REG_COLS / 4) + q] = C[row0 + i, col0 + 4q .. col0 + 4q + 4];
// matmul_register4: bq[4q + kk] = op(B)[p + kk, col0 + 4q .. col0 + 4q + 4] for the 4-step p;
// matmul_register:  bq[q] = op(B)[p, col0 + 4q .. col0 + 4q + 4].
var<private> acc4: array<vec4<f32>, MAX_SIDE>;
var<private> bq: array<vec4<f32>, MAX_SIDE>;

// acc4[row i] += a.x * bq[p] + a.y * bq[p + 1] + ... with a = op(A)[row0 + i, p .. p + 4].
fn fma_row(i: u32, a: vec4<f32>) {
    let nq = REG_COLS / 4u;
    for (var q = 0u; q < nq; q++) {
        var s = acc4[i * nq + q];
        s = fma(vec4<f32>(a.x), bq[4u * q], s);
        s = fma(vec4<f32>(a.y), bq[4u * q + 1u], s);
        s = fma(vec4<f32>(a.z), bq[4u * q + 2u], s);
        s = fma(vec4<f32>(a.w), bq[4u * q + 3u], s);
        acc4[i * nq + q] = s;
    }
}

// Writes accumulator e (if the blocking has it) to C, dropping rows >= M and columns >= N.
// Called with literal e, so that acc4 is only ever indexed by constants.
fn flush(e: u32, row0: u32, col0: u32) {
    let nq = REG_COLS / 4u;
    if (e >= REG_ROWS * nq) {
        return;
    }
    let i = row0 + e / nq;
    let col = col0 + 4u * (e % nq);
    let v = acc4[e];
    if (i < params.m) {
        if (col < params.n) {
            store(i, col, v.x);
        }
        if (col + 1u < params.n) {
            store(i, col + 1u, v.y);
        }
        if (col + 2u < params.n) {
            store(i, col + 2u, v.z);
        }
        if (col + 3u < params.n) {
            store(i, col + 3u, v.w);
        }
    }
}

@compute @workgroup_size(REG_LANES)
fn matmul_register(@builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let row0 = row_tile(wid, nwg) * REG_ROWS;
    let col0 = (wid.x * REG_LANES + lid.x) * REG_COLS;
    let nq = REG_COLS / 4u;
    // One step of K at a time: bq[q] = op(B)[p, col0 + 4q .. + 4] from scalar loads.
    // Out-of-range rows and columns read the last valid ones; their outputs are dropped.
    for (var p = 0u; p < k; p++) {
        for (var q = 0u; q < nq; q++) {
            let c = col0 + 4u * q;
            bq[q] = vec4<f32>(load_b(p, min(c, n - 1u)), load_b(p, min(c + 1u, n - 1u)),
                              load_b(p, min(c + 2u, n - 1u)), load_b(p, min(c + 3u, n - 1u)));
        }
        for (var i = 0u; i < REG_ROWS; i++) {
            let s = vec4<f32>(load_a(min(row0 + i, m - 1u), p));
            for (var q = 0u; q < nq; q++) {
                acc4[i * nq + q] = fma(s, bq[q], acc4[i * nq + q]);
            }
        }
    }
    flush_all(row0, col0);
}

@compute @workgroup_size(REG_LANES)
fn matmul_register4(@builtin(local_invocation_id) lid: vec3<u32>,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let row0 = row_tile(wid, nwg) * REG_ROWS;
    let col0 = (wid.x * REG_LANES + lid.x) * REG_COLS;
    let nq = REG_COLS / 4u;
    // acc4 starts at zero (private variables are zero-initialised).
    // Out-of-range rows and columns read the last valid ones; their outputs are dropped.
    // K is a multiple of 4 unless A and B are both walked along K by rows (TRANS_A, !TRANS_B):
    // that case ends with a tail of single steps.
    let k4 = k & ~3u;
    for (var p = 0u; p < k4; p += 4u) {
        for (var q = 0u; q < nq; q++) {
            if (TRANS_B) {
                // B is [N, K]: one vec4 along K per column, transposed into 4 rows of bq.
                let c = col0 + 4u * q;
                let v0 = load_b4((min(c, n - 1u) * k + p) / 4u);
                let v1 = load_b4((min(c + 1u, n - 1u) * k + p) / 4u);
                let v2 = load_b4((min(c + 2u, n - 1u) * k + p) / 4u);
                let v3 = load_b4((min(c + 3u, n - 1u) * k + p) / 4u);
                bq[4u * q] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
                bq[4u * q + 1u] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
                bq[4u * q + 2u] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
                bq[4u * q + 3u] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
            } else {
                // B is [K, N], N % 4 == 0.
                let c = min(col0 + 4u * q, n - 4u);
                bq[4u * q] = load_b4((p * n + c) / 4u);
                bq[4u * q + 1u] = load_b4(((p + 1u) * n + c) / 4u);
                bq[4u * q + 2u] = load_b4(((p + 2u) * n + c) / 4u);
                bq[4u * q + 3u] = load_b4(((p + 3u) * n + c) / 4u);
            }
        }
        if (TRANS_A) {
            // A is [K, M], M % 4 == 0: four rows of A, transposed, give 4 rows of op(A).
            for (var iq = 0u; iq < REG_ROWS / 4u; iq++) {
                let r = min(row0 + 4u * iq, m - 4u);
                let v0 = load_a4((p * m + r) / 4u);
                let v1 = load_a4(((p + 1u) * m + r) / 4u);
                let v2 = load_a4(((p + 2u) * m + r) / 4u);
                let v3 = load_a4(((p + 3u) * m + r) / 4u);
                fma_row(4u * iq, vec4<f32>(v0.x, v1.x, v2.x, v3.x));
                fma_row(4u * iq + 1u, vec4<f32>(v0.y, v1.y, v2.y, v3.y));
                fma_row(4u * iq + 2u, vec4<f32>(v0.z, v1.z, v2.z, v3.z));
                fma_row(4u * iq + 3u, vec4<f32>(v0.w, v1.w, v2.w, v3.w));
            }
        } else {
            // A is [M, K], K % 4 == 0.
            for (var i = 0u; i < REG_ROWS; i++) {
                fma_row(i, load_a4((min(row0 + i, m - 1u) * k + p) / 4u));
            }
        }
    }
    if (TRANS_A && !TRANS_B) {
        let z = vec4<f32>(0.0);
        for (var p = k4; p < k; p++) {
            for (var q = 0u; q < nq; q++) {
                bq[4u * q] = load_b4((p * n + min(col0 + 4u * q, n - 4u)) / 4u);
                bq[4u * q + 1u] = z;
                bq[4u * q + 2u] = z;
                bq[4u * q + 3u] = z;
            }
            for (var iq = 0u; iq < REG_ROWS / 4u; iq++) {
                let v = load_a4((p * m + min(row0 + 4u * iq, m - 4u)) / 4u);
                fma_row(4u * iq, vec4<f32>(v.x, 0.0, 0.0, 0.0));
                fma_row(4u * iq + 1u, vec4<f32>(v.y, 0.0, 0.0, 0.0));
                fma_row(4u * iq + 2u, vec4<f32>(v.z, 0.0, 0.0, 0.0));
                fma_row(4u * iq + 3u, vec4<f32>(v.w, 0.0, 0.0, 0.0));
            }
        }
    }
    flush_all(row0, col0);
}

// One call per possible accumulator (MAX_SIDE): no loop the compiler could keep.
fn flush_all(row0: u32, col0: u32) {
    flush(0u, row0, col0);
    flush(1u, row0, col0);
    flush(2u, row0, col0);
    flush(3u, row0, col0);
    flush(4u, row0, col0);
    flush(5u, row0, col0);
    flush(6u, row0, col0);
    flush(7u, row0, col0);
    flush(8u, row0, col0);
    flush(9u, row0, col0);
    flush(10u, row0, col0);
    flush(11u, row0, col0);
    flush(12u, row0, col0);
    flush(13u, row0, col0);
    flush(14u, row0, col0);
    flush(15u, row0, col0);
}

// ---- bias gradient ---------------------------------------------------------------------------

var<workgroup> partial: array<f32, COLSUM_COLS * COLSUM_ROWS>;

@compute @workgroup_size(COLSUM_COLS, COLSUM_ROWS)
fn colsum(@builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let j = (wid.x + wid.y * nwg.x) * COLSUM_COLS + lid.x;
    var s = 0.0;
    if (j < n) {
        for (var r = lid.y; r < m; r += COLSUM_ROWS) {
            s += f32(b[r * n + j]);
        }
    }
    partial[lid.y * COLSUM_COLS + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && j < n) {
        var t = 0.0;
        for (var r = 0u; r < COLSUM_ROWS; r++) {
            t += partial[r * COLSUM_COLS + lid.x];
        }
        if ((params.flags & ACCUMULATE_BIT) != 0u) {
            t += f32(c[j]);
        }
        c[j] = elem(t);
    }
}
