//! The optimizer's settings and the EMA's warm-up, shared by `ops::adam` and the CPU
//! reference.

/// Adam hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl AdamConfig {
    /// Keras' defaults (beta1 0.9, beta2 0.999, epsilon 1e-7) with learning rate `lr`.
    pub fn keras(lr: f32) -> AdamConfig {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// The bias-corrected step size of step `t` (1-based), in f64:
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`.
    pub fn lr_t(&self, t: u64) -> f64 {
        assert!(t >= 1, "Adam steps are 1-based, got t = 0");
        let t = t as f64;
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        self.lr as f64 * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t))
    }
}

impl Default for AdamConfig {
    /// Keras' defaults with the learning rate of docs/model.md §4, 1e-4.
    fn default() -> Self {
        AdamConfig::keras(1e-4)
    }
}

/// The EMA's decay at update t (1-based): min(decay, (1 + t) / (10 + t)), the warm-up of
/// TensorFlow's `ExponentialMovingAverage(num_updates=t)`. Without it an average with decay
/// 0.999 still holds 0.999^t of the random initial weights after t steps (37 % after 1,000),
/// which is what the samples of a short run show.
pub fn ema_decay_at(decay: f32, t: u64) -> f32 {
    let warm = (1.0 + t as f64) / (10.0 + t as f64);
    (decay as f64).min(warm) as f32
}
