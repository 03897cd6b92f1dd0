// Random numbers made on the GPU, and the forward (noising) process of docs/model.md §2.
//
// RNG: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), a
// counter-based generator: bits = philox(counter = (index, step, stream, 0), key = seed).
// Same (seed, step, stream, index) -> same bits on every adapter; src/reference/rng.rs is the
// bit-exact CPU mirror. Normals by Box-Muller from the first two words:
//   u1 = (hi24(x) + 1) / 2^24 in (0, 1],  u2 = hi24(y) / 2^24 in [0, 1),
//   z  = sqrt(-2 ln u1) * cos(2*pi*u2 - pi)
// A level n uniform in 0..=n_max: mulhi(x, n_max + 1).
//
//   noise_inject  data [N_img * PIXELS bytes, packed 4 per u32], perm [>= perm_offset + B/R]
//                 -> cond [B], noise [B, PIXELS], noisy [B, PIXELS]
//                 sample b uses image perm[perm_offset + b / repeat]; n_b ~ U{0..=n_max}
//                 (stream + 1, index b); cond[b] = alpha^n_b; noise = N(0,1) (stream, index
//                 b*PIXELS + p); noisy = alpha^n * x + (1 - alpha^n) * noise, x = byte/256 - 0.5.
//   noise_inject_labelled  as noise_inject, and with image_labels [N_img] (u32) -> labels [B]:
//                 labels[b] = NO_LABEL when the second word of the level's bits (stream + 1,
//                 index b) has hi24 < params.drop_below (label dropout with probability
//                 drop_below / 2^24), else image_labels of sample b's image.
//   noise_at_levels  as noise_inject, but n_b = levels[b] is given (the `noise` figure).
//   fill_normal   -> out [count]: out[i] = N(0,1) at (seed, step, stream, perm_offset + i)
//                 (the offset lets a big draw be made in chunks with the same numbers).
//   fill_normal_counted  counter [1] -> out [count]: as fill_normal at step
//                 params.step + counter[0], a step counter kept on the GPU (the sampler's
//                 stochastic steps, all recorded into one command buffer).
//   fill_bits     -> bits [count, 4]: the raw Philox words at (seed, step, stream, i), so tests
//                 can check the generator bit for bit against the CPU mirror.

override WG: u32 = 64u;
override PIXELS: u32 = 784u;
override NO_LABEL: u32 = 10u;

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    count: u32,        // samples B (noise_inject) or values (fill_normal)
    repeat: u32,       // samples per image (noise_inject)
    n_max: u32,
    alpha: f32,
    perm_offset: u32,  // noise_inject: first image in perm; fill_normal: first index
    stream: u32,
    drop_below: u32,   // noise_inject_labelled: label dropout threshold on 24 bits
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var<storage, read> perm: array<u32>;
@group(0) @binding(3) var<storage, read_write> cond: array<f32>;
@group(0) @binding(4) var<storage, read_write> noise: array<f32>;
@group(0) @binding(5) var<storage, read_write> noisy: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> bits: array<u32>;
@group(0) @binding(8) var<storage, read> levels: array<u32>;
@group(0) @binding(9) var<storage, read> counter: array<u32>;
@group(0) @binding(10) var<storage, read> image_labels: array<u32>;
@group(0) @binding(11) var<storage, read_write> labels: array<u32>;

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const TWO_PI: f32 = 6.283185307179586;
const PI: f32 = 3.141592653589793;
const INV_2_24: f32 = 5.9604644775390625e-8;

// High 32 bits of the 64-bit product a*b, from 16-bit halves (WGSL has no 64-bit integers).
fn mulhi(a: u32, b: u32) -> u32 {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let hi0 = mulhi(PHILOX_M0, c.x);
    let lo0 = PHILOX_M0 * c.x;
    let hi1 = mulhi(PHILOX_M1, c.z);
    let lo1 = PHILOX_M1 * c.z;
    return vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        if (r > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        c = philox_round(c, k);
    }
    return c;
}

fn random_bits_at(index: u32, step: u32, stream: u32) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(index, step, stream, 0u),
                         vec2<u32>(params.seed_lo, params.seed_hi));
}

fn random_bits(index: u32, stream: u32) -> vec4<u32> {
    return random_bits_at(index, params.step, stream);
}

fn box_muller(bits: vec4<u32>) -> f32 {
    let u1 = (f32(bits.x >> 8u) + 1.0) * INV_2_24;
    let u2 = f32(bits.y >> 8u) * INV_2_24;
    return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2 - PI);
}


fn pixel(k: u32) -> f32 {
    let byte = (data[k >> 2u] >> ((k & 3u) * 8u)) & 0xFFu;
    return f32(byte) / 256.0 - 0.5;
}

// Writes sample b's pixel p of the noised batch at level n (cond once per sample).
fn inject(idx: u32, n: u32) {
    let b = idx / PIXELS;
    let p = idx % PIXELS;
    let an = pow(params.alpha, f32(n));
    let img = perm[params.perm_offset + b / params.repeat];
    let x = pixel(img * PIXELS + p);
    let z = box_muller(random_bits(idx, params.stream));
    noise[idx] = z;
    noisy[idx] = an * x + (1.0 - an) * z;
    if (p == 0u) {
        cond[b] = an;
    }
}

@compute @workgroup_size(WG)
fn noise_inject(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count * PIXELS) {
        return;
    }
    let b = idx / PIXELS;
    inject(idx, mulhi(random_bits(b, params.stream + 1u).x, params.n_max + 1u));
}

@compute @workgroup_size(WG)
fn noise_inject_labelled(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count * PIXELS) {
        return;
    }
    let b = idx / PIXELS;
    let bits = random_bits(b, params.stream + 1u);
    inject(idx, mulhi(bits.x, params.n_max + 1u));
    if (idx % PIXELS == 0u) {
        var label = image_labels[perm[params.perm_offset + b / params.repeat]];
        if ((bits.y >> 8u) < params.drop_below) {
            label = NO_LABEL;
        }
        labels[b] = label;
    }
}

@compute @workgroup_size(WG)
fn noise_at_levels(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count * PIXELS) {
        return;
    }
    inject(idx, levels[idx / PIXELS]);
}

@compute @workgroup_size(WG)
fn fill_normal(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count) {
        return;
    }
    out[idx] = box_muller(random_bits(params.perm_offset + idx, params.stream));
}

@compute @workgroup_size(WG)
fn fill_normal_counted(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count) {
        return;
    }
    let step = params.step + counter[0];
    out[idx] = box_muller(random_bits_at(params.perm_offset + idx, step, params.stream));
}

@compute @workgroup_size(WG)
fn fill_bits(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (idx >= params.count) {
        return;
    }
    let r = random_bits(idx, params.stream);
    bits[4u * idx] = r.x;
    bits[4u * idx + 1u] = r.y;
    bits[4u * idx + 2u] = r.z;
    bits[4u * idx + 3u] = r.w;
}
