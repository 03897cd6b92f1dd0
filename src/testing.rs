//! Inputs shared by the tests, the kernel-development benches and `check`, so that a kernel is
//! tried on the same data everywhere; the comparison itself lives in [`crate::math::verify`].

pub use crate::math::verify::{assert_close, compare, uniform_data};

/// A `--skip pixel-mixture` prior [3, pd] unlike the global one, for tests: background
/// fractions in [0.02, 0.9998] (near-certain background too), ink means in [-0.3, 0.4], ink
/// variances in [0.001, 0.2].
pub fn random_prior(pd: usize, seed: u64) -> Vec<f32> {
    let u = uniform_data(3 * pd, seed);
    let to01 = |v: f32| (v + 1.0) / 2.0;
    let mut p = Vec::with_capacity(3 * pd);
    p.extend(u[..pd].iter().map(|&v| 0.02 + 0.9798 * to01(v)));
    p.extend(u[pd..2 * pd].iter().map(|&v| -0.3 + 0.7 * to01(v)));
    p.extend(u[2 * pd..].iter().map(|&v| 0.001 + 0.199 * to01(v)));
    p
}

/// GELU inputs: mostly in [-4, 4], every 97th value out at +-(40..60), the saturated tails
/// (the GELU tests and `check`).
pub fn gelu_inputs(n: usize, seed: u64) -> Vec<f32> {
    uniform_data(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 97 == 3 {
                50.0 * v + 10.0 * v.signum()
            } else {
                4.0 * v
            }
        })
        .collect()
}

/// Gradients of mixed magnitudes (1e-3 .. 10), every 17th exactly zero (the Adam tests and
/// `check`).
pub fn mixed_gradients(n: usize, seed: u64) -> Vec<f32> {
    uniform_data(n, seed)
        .iter()
        .enumerate()
        .map(|(i, x)| {
            if i % 17 == 3 {
                0.0
            } else {
                x * 10f32.powi(i as i32 % 5 - 3)
            }
        })
        .collect()
}
