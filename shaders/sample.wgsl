// Inverse diffusion (docs/model.md §5): the per-step kernels of the sampling loop. The loop runs
// entirely on the GPU: the step counter lives in `state`, so every step is the same sequence
// of dispatches and all steps are recorded into one command buffer with no host writes.
//
// table [steps] of vec4 (src/sample/mod.rs Schedule::step_table): per step k,
// (u = a'^(n'-k), keep = a'^s with s the step's scale, c0, c1).
//
// One step k (0-based, of `steps`), with the model call in between:
//   sample_cond      state [1], table -> cond [B]: cond[b] = table[k].x (= a'^(n'-k))
//   sample_snapshot  image [B, PIXELS] -> traj [(steps + 1), PIXELS]: traj[k] = image of digit 0
//   (patches_forward(image, cond) -> tokens; model forward; recompose -> nhat)
//   sample_guide     (with --guide, at the main model's steps, after the guide's own
//                    patches, forward and recompose -> nhat_guide [B, PIXELS]):
//                    nhat = nhat_guide + params.weight * (nhat - nhat_guide)
//                    (autoguidance: the step moves away from what the weaker model predicts;
//                    classifier-free guidance runs the same entry with N_uncond in place of
//                    nhat_guide and the --cfg weight in its own uniform)
//   sample_update    image, nhat [B, PIXELS] -> image = (image - nhat * (1 - keep)) / keep,
//                    keep = table[k].y. With params.clip (`--clip`), nhat is
//                    first replaced by the noise that the clamped digit estimate implies:
//                    u = a'^n = table[k].x, X_hat = clamp((A - (1 - u) nhat) / u, LO, HI),
//                    nhat' = (A - u X_hat) / (1 - u) (DDPM's x0 clipping; unchanged when
//                    X_hat is in range)
//                    With --background N (steps k >= params.bg_from, the levels <= N), nhat is
//                    first blended with the exact noise of a background pixel:
//                    nhat' = w (A - u LO) / s + (1 - w) nhat, s = 1 - u, w the posterior that
//                    the pixel is background under the mixture prior of `--skip mixture`
//                    (background LO with probability BG_FRAC, else ink N(INK_MEAN, INK_VAR)),
//                    before the clipping
//   sample_update_stochastic  (with --eta > 0, after fill_normal_counted drew z [B, PIXELS]
//                    at RNG step k): as sample_update, then
//                    image += table[k].z * nhat + table[k].w * z
//                    (Schedule::noise_coefs: part of the predicted noise swapped for fresh
//                    noise, DDIM's eta)
//   sample_tick      state[0] += 1 (one thread)
// After the last step, one more sample_snapshot stores the final digit 0 at traj[steps].

override WG: u32 = 64u;
override PIXELS: u32 = 784u;
override LO: f32 = -0.5;
override HI: f32 = 0.5;
override BG_FRAC: f32 = 0.8;
override INK_MEAN: f32 = 0.0;
override INK_VAR: f32 = 1.0;

struct Params {
    batch: u32,   // B
    steps: u32,   // n'
    clip: u32,    // 1: clamp the digit estimate to [LO, HI]
    bg_from: u32, // the first step of --background's blend (steps: never)
    weight: f32, // sample_guide's weight: --guidance W, or --cfg in the cfg uniform
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> state_rw: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> cond: array<f32>;
@group(0) @binding(5) var<storage, read_write> image: array<f32>;
@group(0) @binding(6) var<storage, read> nhat: array<f32>;
@group(0) @binding(7) var<storage, read_write> traj: array<f32>;
@group(0) @binding(8) var<storage, read> z: array<f32>;
@group(0) @binding(10) var<storage, read_write> nhat_rw: array<f32>;
@group(0) @binding(11) var<storage, read> nhat_guide: array<f32>;


// This step's row of the table: (u, keep, c0, c1).
fn step_row() -> vec4<f32> {
    return table[min(state[0], params.steps - 1u)];
}

@compute @workgroup_size(WG)
fn sample_cond(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = linear_index(gid, nwg);
    if (b >= params.batch) {
        return;
    }
    cond[b] = step_row().x;
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

// The posterior weight that a pixel of noisy value a at level u (s = 1 - u > 0) is
// background, from the log-odds of BG_FRAC N(a; u LO, s^2) against
// (1 - BG_FRAC) N(a; u INK_MEAN, u^2 INK_VAR + s^2) (the prelude's mixture_log_odds, as
// skip.wgsl's mixture).
fn background_weight(a: f32, u: f32, s: f32) -> f32 {
    let odds = mixture_log_odds(a, u, s, LO, vec3<f32>(BG_FRAC, INK_MEAN, INK_VAR));
    return 1.0 / (1.0 + exp(-clamp(odds, -80.0, 80.0)));
}

// The predicted noise of element i, blended with a background pixel's from step bg_from on,
// then with params.clip the noise of the clamped estimate.
fn noise_estimate(i: u32) -> f32 {
    var n = nhat[i];
    let u = step_row().x;
    let a = image[i];
    if (state[0] >= params.bg_from) {
        let s = 1.0 - u;
        let w = background_weight(a, u, s);
        n = w * (a - u * LO) / s + (1.0 - w) * n;
    }
    if (params.clip == 0u) {
        return n;
    }
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
    let keep = step_row().y;
    let n = noise_estimate(i);
    image[i] = (image[i] - n * (1.0 - keep)) / keep;
}

@compute @workgroup_size(WG)
fn sample_update_stochastic(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.batch * PIXELS) {
        return;
    }
    let t = step_row();
    let n = noise_estimate(i);
    image[i] = (image[i] - n * (1.0 - t.y)) / t.y + t.z * n + t.w * z[i];
}

@compute @workgroup_size(WG)
fn sample_guide(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.batch * PIXELS) {
        return;
    }
    let g = nhat_guide[i];
    nhat_rw[i] = g + params.weight * (nhat_rw[i] - g);
}

@compute @workgroup_size(1)
fn sample_tick() {
    state_rw[0] = state_rw[0] + 1u;
}
