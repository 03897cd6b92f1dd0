//! CPU reference of `shaders/loss.wgsl`: the MSE loss (weighted per sample by its noise level
//! with `--loss-weight-max`) with its gradient. Sums in f64.

use crate::config::PIXEL_VAR;

/// The loss weight of a sample at noise level a^n = `an` under `--loss-weight-max W`:
/// min(1 / q^2, W), where q^2 = a^2n VAR / (a^2n VAR + s^2), s = 1 - a^n, is the square of
/// the Wiener skip's residual scale (so 1 / q^2 = 1 + s^2 / (a^2n VAR) >= 1; VAR = the
/// training pixels' variance). EDM weighs its loss by 1 / c_out^2 so that the network's own
/// part has a unit-scale error at every level; W caps it (the levels past a^n ~ 0.2 are nearly
/// pure noise). W = 1 gives 1 everywhere: the seed's plain mean.
pub fn level_weight(an: f64, max: u32) -> f64 {
    if max <= 1 {
        return 1.0;
    }
    let sig = an * an * PIXEL_VAR as f64;
    let s = 1.0 - an;
    let num = sig + s * s;
    if num >= max as f64 * sig {
        max as f64
    } else {
        num / sig
    }
}

/// Each sample's [`level_weight`], its a^n read from the conditioning token of `tokens`
/// [B, T, D] (at [b, T - 1, 0]).
pub fn sample_weights(tokens: &[f64], batch: usize, t: usize, d: usize, max: u32) -> Vec<f64> {
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    (0..batch)
        .map(|b| level_weight(tokens[(b * t + t - 1) * d], max))
        .collect()
}

/// Weighted mean over (b, t < P, d) of w[b] (out[b, t, d] - target[b, t, d])^2, out [B, T, D],
/// target [B, P, D], w [B] (the sample weights: all 1 for the plain mean).
pub fn mse(
    out: &[f32],
    target: &[f32],
    w: &[f64],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> f32 {
    mse_f64(&f64s(out), &f64s(target), w, batch, t, p, d) as f32
}

/// d mse / d out [B, T, D]: 2 w[b] (out - target) / (B P D) on the first P tokens, 0 elsewhere.
pub fn mse_backward(
    out: &[f32],
    target: &[f32],
    w: &[f64],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Vec<f32> {
    mse_backward_f64(&f64s(out), &f64s(target), w, batch, t, p, d)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn mse_f64(
    out: &[f64],
    target: &[f64],
    w: &[f64],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> f64 {
    assert_eq!(out.len(), batch * t * d);
    assert_eq!(target.len(), batch * p * d);
    assert_eq!(w.len(), batch);
    let mut s = 0.0;
    for b in 0..batch {
        for e in 0..p * d {
            let diff = out[b * t * d + e] - target[b * p * d + e];
            s += w[b] * diff * diff;
        }
    }
    s / (batch * p * d) as f64
}

pub fn mse_backward_f64(
    out: &[f64],
    target: &[f64],
    w: &[f64],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Vec<f64> {
    assert_eq!(out.len(), batch * t * d);
    assert_eq!(target.len(), batch * p * d);
    assert_eq!(w.len(), batch);
    let scale = 2.0 / (batch * p * d) as f64;
    let mut g = vec![0.0; out.len()];
    for b in 0..batch {
        for e in 0..p * d {
            g[b * t * d + e] = scale * w[b] * (out[b * t * d + e] - target[b * p * d + e]);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uniform_data;

    #[test]
    fn mse_backward_matches_finite_differences() {
        for (b, p, d) in [(1, 1, 1), (2, 4, 3), (3, 1, 5)] {
            let t = p + 1;
            let out: Vec<f64> = uniform_data(b * t * d, 21)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let target: Vec<f64> = uniform_data(b * p * d, 22)
                .iter()
                .map(|&v| v as f64)
                .collect();
            // Unequal sample weights, as --loss-weight-max gives.
            let w: Vec<f64> = (0..b).map(|s| 1.0 + 2.5 * s as f64).collect();
            let g = mse_backward_f64(&out, &target, &w, b, t, p, d);
            let eps = 1e-4;
            for i in 0..out.len() {
                let mut x = out.clone();
                x[i] += eps;
                let up = mse_f64(&x, &target, &w, b, t, p, d);
                x[i] -= 2.0 * eps;
                let down = mse_f64(&x, &target, &w, b, t, p, d);
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() <= 1e-9 + 1e-7 * fd.abs(),
                    "B={b} P={p} D={d}: dout[{i}] = {} but finite differences give {fd}",
                    g[i]
                );
            }
            // The conditioning token gets no gradient.
            for s in 0..b {
                assert!(g[(s * t + p) * d..(s * t + t) * d]
                    .iter()
                    .all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn mse_by_hand() {
        // out = [[1, 2], [9, 9]] (T = 2, D = 2, P = 1), target = [[0, 0]]: (1 + 4) / 2.
        assert_eq!(
            mse(&[1.0, 2.0, 9.0, 9.0], &[0.0, 0.0], &[1.0], 1, 2, 1, 2),
            2.5
        );
        assert_eq!(
            mse(&[1.0, 2.0, 9.0, 9.0], &[0.0, 0.0], &[3.0], 1, 2, 1, 2),
            7.5
        );
    }

    #[test]
    fn level_weight_is_one_over_q_squared_capped() {
        use crate::reference::skip::factors;
        for an in [1.0, 0.99, 0.6, 0.3, 0.1, 0.01, 0.0] {
            assert_eq!(level_weight(an, 1), 1.0, "W = 1 is the plain mean");
            let q = factors(an).1;
            let want = if q > 0.0 {
                (1.0 / (q * q)).min(30.0)
            } else {
                30.0
            };
            let got = level_weight(an, 30);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "a^n = {an}: {got} vs {want}"
            );
            assert!(got >= 1.0);
        }
        // No noise: q = 1, weight 1; pure noise (a^n = 0): the cap, without dividing by 0.
        assert_eq!(level_weight(1.0, 30), 1.0);
        assert_eq!(level_weight(0.0, 30), 30.0);
        let tokens = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]; // B = 2, T = 2, D = 2
        assert_eq!(sample_weights(&tokens, 2, 2, 2, 5), vec![1.0, 5.0]);
    }
}
