//! CPU reference of `shaders/loss.wgsl`: positional embedding, elementwise adds and the MSE
//! loss with its gradient. Sums in f64.

/// tokens [B, T, D] + pos [T, D] (broadcast over B).
pub fn add_pos(tokens: &[f32], pos: &[f32]) -> Vec<f32> {
    assert!(!pos.is_empty() && tokens.len().is_multiple_of(pos.len()));
    tokens
        .iter()
        .enumerate()
        .map(|(i, &x)| x + pos[i % pos.len()])
        .collect()
}

/// dx [B, T, D] -> dpos [T, D] = sum over b.
pub fn pos_backward(dx: &[f32], t: usize, d: usize) -> Vec<f32> {
    assert_eq!(dx.len() % (t * d), 0);
    (0..t * d)
        .map(|e| {
            dx.iter()
                .skip(e)
                .step_by(t * d)
                .map(|&v| v as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

/// a + b elementwise.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// mean over (b, t < P, d) of (out[b, t, d] - target[b, t, d])^2; out [B, T, D],
/// target [B, P, D].
pub fn mse(out: &[f32], target: &[f32], batch: usize, t: usize, p: usize, d: usize) -> f32 {
    let o: Vec<f64> = out.iter().map(|&v| v as f64).collect();
    let tg: Vec<f64> = target.iter().map(|&v| v as f64).collect();
    mse_f64(&o, &tg, batch, t, p, d) as f32
}

/// d mse / d out [B, T, D]: 2 (out - target) / (B P D) on the first P tokens, 0 elsewhere.
pub fn mse_backward(
    out: &[f32],
    target: &[f32],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Vec<f32> {
    let o: Vec<f64> = out.iter().map(|&v| v as f64).collect();
    let tg: Vec<f64> = target.iter().map(|&v| v as f64).collect();
    mse_backward_f64(&o, &tg, batch, t, p, d)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

pub fn mse_f64(out: &[f64], target: &[f64], batch: usize, t: usize, p: usize, d: usize) -> f64 {
    assert_eq!(out.len(), batch * t * d);
    assert_eq!(target.len(), batch * p * d);
    let mut s = 0.0;
    for b in 0..batch {
        for e in 0..p * d {
            let diff = out[b * t * d + e] - target[b * p * d + e];
            s += diff * diff;
        }
    }
    s / (batch * p * d) as f64
}

pub fn mse_backward_f64(
    out: &[f64],
    target: &[f64],
    batch: usize,
    t: usize,
    p: usize,
    d: usize,
) -> Vec<f64> {
    assert_eq!(out.len(), batch * t * d);
    assert_eq!(target.len(), batch * p * d);
    let scale = 2.0 / (batch * p * d) as f64;
    let mut g = vec![0.0; out.len()];
    for b in 0..batch {
        for e in 0..p * d {
            g[b * t * d + e] = scale * (out[b * t * d + e] - target[b * p * d + e]);
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
            let g = mse_backward_f64(&out, &target, b, t, p, d);
            let eps = 1e-4;
            for i in 0..out.len() {
                let mut x = out.clone();
                x[i] += eps;
                let up = mse_f64(&x, &target, b, t, p, d);
                x[i] -= 2.0 * eps;
                let down = mse_f64(&x, &target, b, t, p, d);
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
    fn small_ops_by_hand() {
        let (t, d) = (2, 3);
        let tokens: Vec<f32> = (0..2 * t * d).map(|v| v as f32).collect();
        let pos = vec![0.5; t * d];
        let x = add_pos(&tokens, &pos);
        assert_eq!(x[0], 0.5);
        assert_eq!(x[11], 11.5);
        let dpos = pos_backward(&tokens, t, d);
        assert_eq!(dpos, vec![6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
        assert_eq!(add(&[1.0, 2.0], &[3.0, 4.0]), vec![4.0, 6.0]);
        // out = [[1, 2], [9, 9]] (T = 2, D = 2, P = 1), target = [[0, 0]]: (1 + 4) / 2.
        assert_eq!(mse(&[1.0, 2.0, 9.0, 9.0], &[0.0, 0.0], 1, 2, 1, 2), 2.5);
    }
}
