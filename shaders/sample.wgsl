// Inverse diffusion (SPEC §5): the per-step kernels of the sampling loop. The loop runs
// entirely on the GPU: the step counter lives in `state`, so every step is the same sequence
// of dispatches and all steps are recorded into one command buffer with no host writes.
//
// One step k (0-based, of `steps`), with the model call in between:
//   sample_cond      state [1], table [steps] -> cond [B]: cond[b] = table[k] (= a'^(n'-k))
//   sample_snapshot  image [B, PIXELS] -> traj [(steps + 1), PIXELS]: traj[k] = image of digit 0
//   (patches_forward(image, cond) -> tokens; model forward; recompose -> nhat)
//   sample_update    image, nhat [B, PIXELS] -> image = (image - nhat * (1 - keep)) / keep,
//                    keep = a'^s (s: the step scale). With params.clip (`--clip`), nhat is
//                    first replaced by the noise that the clamped digit estimate implies:
//                    u = a'^n = table[k], X_hat = clamp((A - (1 - u) nhat) / u, LO, HI),
//                    nhat' = (A - u X_hat) / (1 - u) (DDPM's x0 clipping; unchanged when
//                    X_hat is in range)
//   sample_update_stochastic  (with --eta > 0, after fill_normal_counted drew z [B, PIXELS]
//                    at RNG step k): as sample_update, then
//                    image += coef[k].x * nhat + coef[k].y * z, coef [steps] of vec2
//                    (src/sample.rs Schedule::noise_coefs: part of the predicted noise
//                    swapped for fresh noise, DDIM's eta)
//   sample_tick      state[0] += 1 (one thread)
// After the last step, one more sample_snapshot stores the final digit 0 at traj[steps].

override WG: u32 = 64u;
override PIXELS: u32 = 784u;
override LO: f32 = -0.5;
override HI: f32 = 0.5;

struct Params {
    batch: u32,   // B
    steps: u32,   // n'
    keep: f32,    // a'^s
    clip: u32,    // 1: clamp the digit estimate to [LO, HI]
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> state_rw: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read_write> cond: array<f32>;
@group(0) @binding(5) var<storage, read_write> image: array<f32>;
@group(0) @binding(6) var<storage, read> nhat: array<f32>;
@group(0) @binding(7) var<storage, read_write> traj: array<f32>;
@group(0) @binding(8) var<storage, read> z: array<f32>;
@group(0) @binding(9) var<storage, read> coef: array<vec2<f32>>;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn sample_cond(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = linear_index(gid, nwg);
    if (b >= params.batch) {
        return;
    }
    cond[b] = table[min(state[0], params.steps - 1u)];
}

@compute @workgroup_size(WG)
fn sample_snapshot(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = linear_index(gid, nwg);
    if (p >= PIXELS) {
        return;
    }
    traj[min(state[0], params.steps) * PIXELS + p] = image[p];
}

// The predicted noise of element i, or with params.clip the noise of the clamped estimate.
fn noise_estimate(i: u32) -> f32 {
    let n = nhat[i];
    if (params.clip == 0u) {
        return n;
    }
    let u = table[min(state[0], params.steps - 1u)];
    let a = image[i];
    let x = clamp((a - (1.0 - u) * n) / u, LO, HI);
    return (a - u * x) / (1.0 - u);
}

@compute @workgroup_size(WG)
fn sample_update(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.batch * PIXELS) {
        return;
    }
    let n = noise_estimate(i);
    image[i] = (image[i] - n * (1.0 - params.keep)) / params.keep;
}

@compute @workgroup_size(WG)
fn sample_update_stochastic(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.batch * PIXELS) {
        return;
    }
    let c = coef[min(state[0], params.steps - 1u)];
    let n = noise_estimate(i);
    image[i] = (image[i] - n * (1.0 - params.keep)) / params.keep + c.x * n + c.y * z[i];
}

@compute @workgroup_size(1)
fn sample_tick() {
    state_rw[0] = state_rw[0] + 1u;
}
