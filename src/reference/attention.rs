//! CPU reference of `shaders/attention.wgsl`: multi-head self-attention core and its backward
//! pass, plain loops in f64 (f32 in and out for comparing with the GPU; the `_f64` versions are
//! what the finite-difference test checks).
//!
//! qkv [B*T, 3HK] (Q | K | V), o / d_o [B*T, HK], probs [B, H, T, T].

pub use crate::math::shapes::AttentionShape;

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// qkv -> (o, probs), in f32 (computed in f64).
pub fn attention_forward(s: &AttentionShape, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (o, p) = attention_forward_f64(s, &widen(qkv));
    (narrow(&o), narrow(&p))
}

/// qkv, probs, d_o -> dqkv, in f32 (computed in f64).
pub fn attention_backward(s: &AttentionShape, qkv: &[f32], probs: &[f32], d_o: &[f32]) -> Vec<f32> {
    narrow(&attention_backward_f64(
        s,
        &widen(qkv),
        &widen(probs),
        &widen(d_o),
    ))
}

/// Index helpers: Q, K, V element (row, head, c) of qkv and (row, head, c) of o.
struct Ix {
    hk: usize,
    k: usize,
}

impl Ix {
    fn q(&self, row: usize, h: usize, c: usize) -> usize {
        row * 3 * self.hk + h * self.k + c
    }
    fn k(&self, row: usize, h: usize, c: usize) -> usize {
        self.q(row, h, c) + self.hk
    }
    fn v(&self, row: usize, h: usize, c: usize) -> usize {
        self.q(row, h, c) + 2 * self.hk
    }
    fn o(&self, row: usize, h: usize, c: usize) -> usize {
        row * self.hk + h * self.k + c
    }
}

/// qkv [B*T, 3HK] -> (o [B*T, HK], probs [B, H, T, T]).
pub fn attention_forward_f64(s: &AttentionShape, qkv: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(qkv.len(), s.qkv_len(), "qkv length for {s:?}");
    let (t, kd) = (s.tokens, s.key_dim);
    let ix = Ix { hk: s.hk(), k: kd };
    let scale = s.scale();
    let mut o = vec![0.0; s.o_len()];
    let mut probs = vec![0.0; s.probs_len()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..t {
                let row = &mut probs[((b * s.heads + h) * t + i) * t..][..t];
                for (j, p) in row.iter_mut().enumerate() {
                    *p = (0..kd)
                        .map(|c| qkv[ix.q(b * t + i, h, c)] * qkv[ix.k(b * t + j, h, c)])
                        .sum::<f64>()
                        * scale;
                }
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for p in row.iter_mut() {
                    *p = (*p - mx).exp();
                    sum += *p;
                }
                for p in row.iter_mut() {
                    *p /= sum;
                }
                for c in 0..kd {
                    o[ix.o(b * t + i, h, c)] =
                        (0..t).map(|j| row[j] * qkv[ix.v(b * t + j, h, c)]).sum();
                }
            }
        }
    }
    (o, probs)
}

/// qkv [B*T, 3HK], probs [B, H, T, T], d_o [B*T, HK] -> dqkv [B*T, 3HK].
pub fn attention_backward_f64(
    s: &AttentionShape,
    qkv: &[f64],
    probs: &[f64],
    d_o: &[f64],
) -> Vec<f64> {
    assert_eq!(qkv.len(), s.qkv_len(), "qkv length for {s:?}");
    assert_eq!(probs.len(), s.probs_len(), "probs length for {s:?}");
    assert_eq!(d_o.len(), s.o_len(), "d_o length for {s:?}");
    let (t, kd) = (s.tokens, s.key_dim);
    let ix = Ix { hk: s.hk(), k: kd };
    let scale = s.scale();
    let mut dqkv = vec![0.0; s.qkv_len()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let p = &probs[(b * s.heads + h) * t * t..][..t * t];
            // dP_ij = dO_i . V_j
            let mut dp = vec![0.0; t * t];
            for i in 0..t {
                for j in 0..t {
                    dp[i * t + j] = (0..kd)
                        .map(|c| d_o[ix.o(b * t + i, h, c)] * qkv[ix.v(b * t + j, h, c)])
                        .sum();
                }
            }
            // dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
            let mut ds = vec![0.0; t * t];
            for i in 0..t {
                let delta: f64 = (0..t).map(|k| p[i * t + k] * dp[i * t + k]).sum();
                for j in 0..t {
                    ds[i * t + j] = p[i * t + j] * (dp[i * t + j] - delta);
                }
            }
            for i in 0..t {
                for j in 0..t {
                    for c in 0..kd {
                        // dQ_i += scale dS_ij K_j; dK_j += scale dS_ij Q_i; dV_j += P_ij dO_i
                        dqkv[ix.q(b * t + i, h, c)] +=
                            scale * ds[i * t + j] * qkv[ix.k(b * t + j, h, c)];
                        dqkv[ix.k(b * t + j, h, c)] +=
                            scale * ds[i * t + j] * qkv[ix.q(b * t + i, h, c)];
                        dqkv[ix.v(b * t + j, h, c)] += p[i * t + j] * d_o[ix.o(b * t + i, h, c)];
                    }
                }
            }
        }
    }
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uniform_data;

    fn shapes() -> Vec<AttentionShape> {
        let mk = |batch, tokens, heads, key_dim| AttentionShape {
            batch,
            tokens,
            heads,
            key_dim,
        };
        vec![
            mk(1, 1, 1, 1),
            mk(1, 2, 1, 3),
            mk(2, 3, 2, 4),
            mk(3, 5, 3, 2),
            mk(1, 4, 2, 5),
        ]
    }

    #[test]
    fn probs_rows_sum_to_one_and_one_token_copies_v() {
        for s in shapes() {
            let qkv = uniform_data(s.qkv_len(), 11);
            let (o, probs) = attention_forward(&s, &qkv);
            for row in probs.chunks(s.tokens) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{s:?}: row sums to {sum}");
                assert!(row.iter().all(|&p| p > 0.0), "{s:?}: {row:?}");
            }
            if s.tokens == 1 {
                let hk = s.hk();
                for r in 0..s.rows() {
                    assert_eq!(&o[r * hk..][..hk], &qkv[r * 3 * hk + 2 * hk..][..hk]);
                }
            }
        }
    }

    /// The backward pass is the gradient of L(qkv) = sum(o(qkv) * R), by central differences.
    #[test]
    fn backward_matches_finite_differences() {
        for s in shapes() {
            let qkv: Vec<f64> = uniform_data(s.qkv_len(), 12)
                .iter()
                .map(|&v| 1.5 * v as f64)
                .collect();
            let r: Vec<f64> = uniform_data(s.o_len(), 13)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let loss = |x: &[f64]| -> f64 {
                let (o, _) = attention_forward_f64(&s, x);
                o.iter().zip(&r).map(|(a, b)| a * b).sum()
            };
            let (_, probs) = attention_forward_f64(&s, &qkv);
            let grad = attention_backward_f64(&s, &qkv, &probs, &r);
            let eps = 1e-5;
            for i in 0..qkv.len() {
                let mut x = qkv.clone();
                x[i] += eps;
                let up = loss(&x);
                x[i] -= 2.0 * eps;
                let down = loss(&x);
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (fd - grad[i]).abs() <= 1e-7 + 1e-6 * fd.abs(),
                    "{s:?}: dqkv[{i}] = {} but finite differences give {fd}",
                    grad[i]
                );
            }
        }
    }

    /// Huge scores do not overflow the softmax (the row max is subtracted).
    #[test]
    fn softmax_is_stable_for_large_scores() {
        let s = AttentionShape {
            batch: 1,
            tokens: 3,
            heads: 1,
            key_dim: 2,
        };
        let qkv: Vec<f32> = uniform_data(s.qkv_len(), 14)
            .iter()
            .map(|v| v * 1e4)
            .collect();
        let (o, probs) = attention_forward(&s, &qkv);
        assert!(
            o.iter().chain(&probs).all(|v| v.is_finite()),
            "{o:?} {probs:?}"
        );
    }
}
