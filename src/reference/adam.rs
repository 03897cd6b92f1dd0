//! CPU reference of `shaders/adam.wgsl`: one tf.keras 2.x Adam step and the weights' EMA,
//! with the same f32 arithmetic as the shader (the step size comes from
//! [`AdamConfig::lr_t`], in f64).

pub use crate::math::optim::{ema_decay_at, AdamConfig};

/// Step `t` (1-based) of Adam on `params` in place, updating the moments `m`, `v`:
/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr_t m / (sqrt(v) + eps).
pub fn adam_step(
    config: &AdamConfig,
    t: u64,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = params.len();
    assert!(grads.len() == n && m.len() == n && v.len() == n);
    let lr_t = config.lr_t(t) as f32;
    let (b1, b2) = (config.beta1, config.beta2);
    let (c1, c2) = (1.0 - b1, 1.0 - b2);
    for i in 0..n {
        let g = grads[i];
        m[i] = b1 * m[i] + c1 * g;
        v[i] = b2 * v[i] + c2 * (g * g);
        params[i] -= lr_t * m[i] / (v[i].sqrt() + config.epsilon);
    }
}

/// ema = decay * ema + (1 - decay) * params.
pub fn ema(decay: f32, params: &[f32], ema: &mut [f32]) {
    assert_eq!(params.len(), ema.len());
    for (e, &p) in ema.iter_mut().zip(params) {
        *e = decay * *e + (1.0 - decay) * p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first step moves every parameter by about lr against the sign of its gradient (the
    /// bias-corrected m / sqrt(v) is g / |g|), whatever the gradient's size (while epsilon is
    /// negligible next to sqrt(v) = |g| sqrt(1 - beta2)).
    #[test]
    fn first_step_is_lr_times_sign() {
        let config = AdamConfig::keras(1e-3);
        let grads = [0.1, -2.0, 50.0, 0.0];
        let mut p = [0.0f32; 4];
        let (mut m, mut v) = ([0.0; 4], [0.0; 4]);
        adam_step(&config, 1, &mut p, &grads, &mut m, &mut v);
        for (i, (&pi, &g)) in p.iter().zip(&grads).enumerate() {
            let want = if g == 0.0 { 0.0 } else { -1e-3 * g.signum() };
            assert!((pi - want).abs() < 1e-6, "[{i}] {pi} vs {want}");
        }
    }

    /// lr_t follows Keras' formula: lr sqrt(1 - b2^t) / (1 - b1^t).
    #[test]
    fn step_size_matches_keras_formula() {
        let config = AdamConfig::keras(1e-4);
        let lr_1 = 1e-4 * (1.0 - 0.999f64).sqrt() / (1.0 - 0.9f64);
        // (The f32 betas, widened, differ from 0.9 and 0.999 in the 8th digit.)
        assert!(
            (config.lr_t(1) / lr_1 - 1.0).abs() < 1e-5,
            "{}",
            config.lr_t(1)
        );
        assert!((config.lr_t(1_000_000) - 1e-4).abs() < 1e-9);
    }

    #[test]
    fn ema_moves_towards_params() {
        let mut e = [1.0f32, 0.0];
        ema(0.75, &[0.0, 4.0], &mut e);
        assert_eq!(e, [0.75, 1.0]);
    }
}
