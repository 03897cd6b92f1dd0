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

/// (B, P, D) with T = P + 1 for the token-row ops (rows, loss): odd, aligned, the presets'
/// (seed P = 4 D = 324, tiny P = 16 D = 100).
pub const TOKEN_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 4, 5),
    (7, 1, 3),
    (2, 16, 100),
    (5, 4, 324),
    (4, 16, 64),
    (1, 9, 257),
];

/// (B, P, D) for the label embedding: the token shapes, then a batch of 40 over the
/// whole-image model (P = 1, D = 784) and 13 over the tiny preset's width.
pub fn label_shapes() -> impl Iterator<Item = (usize, usize, usize)> {
    TOKEN_SHAPES.into_iter().chain([(40, 1, 784), (13, 4, 100)])
}

/// Labels of `b` samples covering every row of the label table, "no label" included, and
/// one past it (which the kernel must treat as no label).
pub fn label_ids(b: usize) -> Vec<u32> {
    let rows = crate::config::NO_LABEL as usize + 1;
    (0..b).map(|i| ((i * 7 + 3) % (rows + 1)) as u32).collect()
}

/// Element counts for the elementwise ops: one, either side of a 64-wide workgroup, many,
/// and an odd count past a thousand.
pub const ELEMENT_COUNTS: [usize; 5] = [1, 63, 64, 1000, 4099];

/// (B, T, D) for the skip terms: odd, aligned, the seed's geometry (T = 5, D = 324), the
/// tiny preset's (17, 100).
pub const SKIP_SHAPES: [(usize, usize, usize); 6] = [
    (1, 2, 1),
    (3, 5, 7),
    (4, 5, 324),
    (2, 17, 100),
    (5, 10, 64),
    (9, 3, 257),
];

/// (batch, repeat, perm offset, step) of the noise injections: one sample, a batch past the
/// dataset (7 images) with repeats and an offset.
pub const NOISE_INJECTS: [(usize, u32, u32, u32); 3] = [(1, 1, 0, 0), (9, 4, 2, 5), (15, 3, 2, 11)];

/// Noisy patch values A = a^n x + (1 - a^n) N as the model sees them: x background (-0.5)
/// for 60 % of the values, else ink in [0, 0.5]; N uniform in [-2, 2].
pub fn noisy_patches(len: usize, an: f32, seed: u64) -> Vec<f32> {
    let (u, z) = (uniform_data(len, seed), uniform_data(len, seed + 1));
    u.iter()
        .zip(&z)
        .map(|(u, z)| {
            let x = if *u < 0.6 { -0.5 } else { 0.5 * u };
            an * x + (1.0 - an) * 2.0 * z
        })
        .collect()
}

/// Tokens [B, T, D] for the skip terms: noisy patches, and conditioning values a^n from 1
/// (no noise) down to 0.0066 (n = 500 at 0.99), one per sample.
pub fn noisy_tokens(b: usize, t: usize, d: usize) -> Vec<f32> {
    let mut tokens = vec![0.0f32; b * t * d];
    for s in 0..b {
        let an = if b == 1 {
            0.3
        } else {
            1.0 - 0.9934 * s as f32 / (b - 1) as f32
        };
        let row = &mut tokens[s * t * d..(s + 1) * t * d];
        row[..(t - 1) * d].copy_from_slice(&noisy_patches((t - 1) * d, an, 2 + s as u64));
        row[(t - 1) * d..].fill(an);
    }
    tokens
}

/// Tokens [B, T, D] for the loss whose conditioning token (t = T - 1) holds sample b's a^n,
/// from pure noise (0) to none (1), so the loss weights span the cap, values in between and 1.
pub fn tokens_with_levels(b: usize, t: usize, d: usize) -> Vec<f32> {
    let mut tokens = uniform_data(b * t * d, 40);
    for s in 0..b {
        let an = [0.0, 1.0, 0.5, 0.9, 0.2, 0.7, 0.05][s % 7];
        tokens[(s * t + t - 1) * d..(s + 1) * t * d].fill(an);
    }
    tokens
}

/// `count` deterministic 8-bit images of `PIXELS` bytes, every byte value among them.
pub fn images(count: usize) -> Vec<u8> {
    (0..count * crate::config::PIXELS as usize)
        .map(|i| (i * 37 % 256) as u8)
        .collect()
}

/// A permutation of 0..count drawn from `seed`.
pub fn shuffled(count: usize, seed: u64) -> Vec<u32> {
    let keys = uniform_data(count, seed);
    let mut perm: Vec<u32> = (0..count as u32).collect();
    perm.sort_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
    perm
}

/// The relative error of one rounding to f16 (round to nearest: half an ulp, 2^-11 of the
/// value): what an f16 kernel adds to its f32 computation when its inputs are f16 values and
/// it rounds its f32 result once, on the store.
pub const F16_ROUNDING: f32 = 1.0 / 2048.0;

/// The absolute error of one rounding to f16 below its normal range (half the smallest
/// subnormal, 2^-25).
pub const F16_SUBNORMAL: f32 = 1.0 / 33_554_432.0;

/// `v` rounded to the nearest f16 (the `half` crate), back in f32: the inputs an f16 kernel
/// and its f32 reference share, so that their difference is the kernel's own.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// The tolerance (abs, rel) of an f16 kernel whose f32 kernel is held to (abs, rel): one more
/// rounding, of a result already within (abs, rel) of the reference.
pub fn f16_tolerance(abs: f32, rel: f32) -> (f32, f32) {
    (
        abs * (1.0 + F16_ROUNDING) + F16_SUBNORMAL,
        rel + F16_ROUNDING * (1.0 + rel),
    )
}

/// [`noisy_tokens`] at levels a^n close to 1 (0.9995, 0.99, 0.9, then 0.5), where 1 - a^n
/// has few significant bits left if a^n is rounded to f16: what an f16 skip must not do.
pub fn tokens_near_one(b: usize, t: usize, d: usize) -> Vec<f32> {
    let mut tokens = Vec::with_capacity(b * t * d);
    for s in 0..b {
        let an = [0.9995, 0.99, 0.9, 0.5][s % 4];
        tokens.extend(noisy_patches((t - 1) * d, an, 7 + s as u64));
        tokens.extend(std::iter::repeat_n(an, d));
    }
    tokens
}
