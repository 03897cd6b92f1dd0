// Adam (docs/model.md §4) over the flat parameter buffer in one dispatch, and the EMA of the weights.
//
// The update is tf.keras 2.x `Adam` (optimizer_v2/adam.py with training_ops' ApplyAdam: the
// "epsilon hat" form of Kingma & Ba, end of §2), for step t = 1, 2, ...:
//   lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)       (host, in f64, per step)
//   m    = beta1 * m + (1 - beta1) * g
//   v    = beta2 * v + (1 - beta2) * g^2
//   p   -= lr_t * m / (sqrt(v) + epsilon)
// Keras defaults: lr 1e-3 (the model uses 1e-4), beta1 0.9, beta2 0.999, epsilon 1e-7.
//
//   adam_step  grads [n] -> weights [n], m [n], v [n] updated in place (n = params.n; padding
//              between parameter tensors has zero gradients and so stays put).
//   ema        weights [n] -> ema [n]: ema = decay * ema + (1 - decay) * weights.
//
// Threads are 1-D (WG per workgroup); the host spills large counts into the y dimension.

override WG: u32 = 64u;

struct Params {
    n: u32,
    lr_t: f32,           // adam_step: bias-corrected step size (see above)
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    epsilon: f32,
    decay: f32,          // ema
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> weights: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> ema_out: array<f32>;


@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    let g = grads[i];
    let mi = params.beta1 * m[i] + params.one_minus_beta1 * g;
    let vi = params.beta2 * v[i] + params.one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    weights[i] = weights[i] - params.lr_t * mi / (sqrt(vi) + params.epsilon);
}

@compute @workgroup_size(WG)
fn ema(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    ema_out[i] = params.decay * ema_out[i] + (1.0 - params.decay) * src[i];
}
