// Overlapping patches (docs/model.md §3): extraction, its adjoint, and recomposition.
//
// Geometry comes from override constants set by the host (src/config.rs is the source of
// truth): SIZE (image side), PATCH (P), OVERLAP (O). Derived: WIDTH = P + 2*O (patch side),
// GRID = (SIZE - 2*O) / P (patches per side), DIM = WIDTH^2 (values per patch).
// Patch (i, j) covers rows i*P .. i*P + WIDTH and columns j*P .. j*P + WIDTH; patch c = i*GRID + j.
//
//   patches_forward   images [B, SIZE*SIZE], cond [B]  -> tokens [B, T, DIM]
//                     token t < GRID^2: patch t of the image; token GRID^2 (if T > GRID^2):
//                     DIM copies of cond[b] (the conditioning token).
//   patches_backward  dtokens [B, T, DIM] -> dimages [B, SIZE*SIZE], dcond [B]
//                     gather: each pixel sums the gradients of every patch value that copied
//                     it (one writer per pixel, no atomics); dcond[b] = sum of the
//                     conditioning token's gradients (when T > GRID^2).
//   recompose         ptokens [B, T, DIM] (first GRID^2 tokens) -> image [B, SIZE*SIZE]
//                     each pixel is the average of the patch values covering it.
//
// Threads are 1-D (WG per workgroup); the host spills large counts into the y dimension.

override WG: u32 = 64u;
override SIZE: u32 = 28u;
override PATCH: u32 = 10u;
override OVERLAP: u32 = 4u;
override WIDTH: u32 = PATCH + 2u * OVERLAP;
override GRID: u32 = (SIZE - 2u * OVERLAP) / PATCH;
override DIM: u32 = WIDTH * WIDTH;

struct Params {
    batch: u32,   // B
    tokens: u32,  // T: GRID^2 (patches only) or GRID^2 + 1 (with the conditioning token)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read> cond: array<f32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<f32>;
@group(0) @binding(4) var<storage, read> dtokens: array<f32>;
@group(0) @binding(5) var<storage, read_write> dimages: array<f32>;
@group(0) @binding(6) var<storage, read_write> dcond: array<f32>;
// The model's output, stored as `elem` (f32, or f16 with --precision f16).
@group(0) @binding(7) var<storage, read> ptokens: array<elem>;
@group(0) @binding(8) var<storage, read_write> image: array<f32>;


// Range of patch rows (or columns) i whose span i*PATCH .. i*PATCH + WIDTH holds pixel row y.
fn covering(y: u32) -> vec2<u32> {
    var lo = 0u;
    if (y + 1u > WIDTH) {
        lo = (y + 1u - WIDTH + PATCH - 1u) / PATCH;
    }
    let hi = min(y / PATCH, GRID - 1u);
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(WG)
fn patches_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let per_sample = params.tokens * DIM;
    if (idx >= params.batch * per_sample) {
        return;
    }
    let b = idx / per_sample;
    let r = idx % per_sample;
    let t = r / DIM;
    let d = r % DIM;
    if (t < GRID * GRID) {
        let y = (t / GRID) * PATCH + d / WIDTH;
        let x = (t % GRID) * PATCH + d % WIDTH;
        tokens[idx] = images[b * SIZE * SIZE + y * SIZE + x];
    } else {
        tokens[idx] = cond[b];
    }
}

@compute @workgroup_size(WG)
fn patches_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    let per_sample = SIZE * SIZE + 1u;
    if (idx >= params.batch * per_sample) {
        return;
    }
    let b = idx / per_sample;
    let p = idx % per_sample;
    let base = b * params.tokens * DIM;
    if (p == SIZE * SIZE) {
        var s = 0.0;
        if (params.tokens > GRID * GRID) {
            let c = base + GRID * GRID * DIM;
            for (var d = 0u; d < DIM; d++) {
                s += dtokens[c + d];
            }
        }
        dcond[b] = s;
        return;
    }
    let y = p / SIZE;
    let x = p % SIZE;
    let ri = covering(y);
    let rj = covering(x);
    var s = 0.0;
    for (var i = ri.x; i <= ri.y; i++) {
        for (var j = rj.x; j <= rj.y; j++) {
            let d = (y - i * PATCH) * WIDTH + (x - j * PATCH);
            s += dtokens[base + (i * GRID + j) * DIM + d];
        }
    }
    dimages[b * SIZE * SIZE + p] = s;
}

@compute @workgroup_size(WG)
fn recompose(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.batch * SIZE * SIZE) {
        return;
    }
    let b = idx / (SIZE * SIZE);
    let p = idx % (SIZE * SIZE);
    let y = p / SIZE;
    let x = p % SIZE;
    let ri = covering(y);
    let rj = covering(x);
    let base = b * params.tokens * DIM;
    var s = 0.0;
    for (var i = ri.x; i <= ri.y; i++) {
        for (var j = rj.x; j <= rj.y; j++) {
            let d = (y - i * PATCH) * WIDTH + (x - j * PATCH);
            s += f32(ptokens[base + (i * GRID + j) * DIM + d]);
        }
    }
    let count = f32((ri.y - ri.x + 1u) * (rj.y - rj.x + 1u));
    image[idx] = s / count;
}
