//! Helpers shared by the tests and the kernel-development benches: tolerance comparison that
//! prints the first mismatches, and deterministic test data.

/// Compares `got` with `want` element by element with tolerance `abs + rel * |want|`.
/// Returns a message listing the first mismatches (index, got, want, error) if any.
pub fn compare(name: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: length {} but the reference has {}",
            got.len(),
            want.len()
        ));
    }
    let mut bad = Vec::new();
    let mut count = 0usize;
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = abs + rel * w.abs();
        // Negated on purpose: a NaN error is a mismatch.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(err <= tol) {
            count += 1;
            if bad.len() < 8 {
                bad.push(format!(
                    "  [{i}] got {g:e}, want {w:e}, |err| {err:e} > tol {tol:e}"
                ));
            }
        }
        if err.is_finite() {
            worst = worst.max(err);
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(format!(
            "{name}: {count} of {} values outside abs {abs:e} + rel {rel:e} (max |err| {worst:e}); first mismatches:\n{}",
            got.len(),
            bad.join("\n")
        ))
    }
}

/// Panics with [`compare`]'s message on mismatch (for tests).
#[track_caller]
pub fn assert_close(name: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    if let Err(m) = compare(name, got, want, abs, rel) {
        panic!("{m}");
    }
}

/// `n` deterministic values uniform in [-1, 1).
pub fn uniform_data(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

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
