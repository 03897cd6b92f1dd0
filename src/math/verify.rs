//! Checking GPU results against a reference: the tolerance comparison `abs + rel * |want|`
//! that names the first mismatches, and the deterministic inputs the checks feed. The tests,
//! `check` and the GEMM tuner (which checks every candidate against the naive kernel) share it.

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
