//! CPU reference of `shaders/classifier.wgsl`: ReLU, softmax cross-entropy (forward and
//! backward) and the predicted label. Softmax and sums in f64.

/// y = max(x, 0).
pub fn relu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// dx = dy · [x > 0], x the forward's input.
pub fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len());
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
        .collect()
}

/// logits [B, C], labels [B] -> (probs [B, C], losses [B]) in f64: probs = softmax of each
/// row, loss = logsumexp(row) − row[label] (a label ≥ C names no class: the logsumexp alone).
pub fn softmax_xent_f64(
    logits: &[f64],
    labels: &[u32],
    batch: usize,
    classes: usize,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(logits.len(), batch * classes);
    assert_eq!(labels.len(), batch);
    assert!(classes >= 1);
    let mut probs = vec![0.0; batch * classes];
    let mut losses = vec![0.0; batch];
    for b in 0..batch {
        let row = &logits[b * classes..(b + 1) * classes];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&z| (z - m).exp()).sum();
        for (p, &z) in probs[b * classes..(b + 1) * classes].iter_mut().zip(row) {
            *p = (z - m).exp() / s;
        }
        let l = labels[b] as usize;
        let target = if l < classes { row[l] - m } else { -m };
        losses[b] = s.ln() - target;
    }
    (probs, losses)
}

/// The mean cross-entropy over the batch (what `xent_mean` writes to the history).
pub fn xent_mean_f64(logits: &[f64], labels: &[u32], batch: usize, classes: usize) -> f64 {
    let (_, losses) = softmax_xent_f64(logits, labels, batch, classes);
    losses.iter().sum::<f64>() / batch as f64
}

/// d mean-loss / d logits [B, C] = (probs − onehot(labels)) / B.
pub fn softmax_xent_backward_f64(
    probs: &[f64],
    labels: &[u32],
    batch: usize,
    classes: usize,
) -> Vec<f64> {
    assert_eq!(probs.len(), batch * classes);
    assert_eq!(labels.len(), batch);
    let scale = 1.0 / batch as f64;
    probs
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let hot = if labels[i / classes] as usize == i % classes {
                1.0
            } else {
                0.0
            };
            (p - hot) * scale
        })
        .collect()
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// f32 front of [`softmax_xent_f64`]: (probs [B, C], losses [B]).
pub fn softmax_xent_forward(
    logits: &[f32],
    labels: &[u32],
    batch: usize,
    classes: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (p, l) = softmax_xent_f64(&widen(logits), labels, batch, classes);
    (narrow(&p), narrow(&l))
}

/// f32 front of [`xent_mean_f64`].
pub fn xent_mean(logits: &[f32], labels: &[u32], batch: usize, classes: usize) -> f32 {
    xent_mean_f64(&widen(logits), labels, batch, classes) as f32
}

/// f32 front of [`softmax_xent_backward_f64`]: takes the logits (the softmax is recomputed in
/// f64).
pub fn softmax_xent_backward(
    logits: &[f32],
    labels: &[u32],
    batch: usize,
    classes: usize,
) -> Vec<f32> {
    let (p, _) = softmax_xent_f64(&widen(logits), labels, batch, classes);
    narrow(&softmax_xent_backward_f64(&p, labels, batch, classes))
}

/// logits [B, C] -> the first index of each row's maximum.
pub fn argmax(logits: &[f32], batch: usize, classes: usize) -> Vec<u32> {
    assert_eq!(logits.len(), batch * classes);
    assert!(classes >= 1);
    (0..batch)
        .map(|b| {
            let row = &logits[b * classes..(b + 1) * classes];
            let mut best = 0;
            for (j, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uniform_data;

    #[test]
    fn softmax_xent_backward_matches_finite_differences() {
        for (b, c) in [(1, 1), (1, 10), (3, 13), (5, 4)] {
            let logits: Vec<f64> = uniform_data(b * c, 41)
                .iter()
                .map(|&v| 3.0 * v as f64)
                .collect();
            // The last sample's label names no class when there is room to show it.
            let labels: Vec<u32> = (0..b)
                .map(|i| {
                    if i == 4 {
                        c as u32 + 2
                    } else {
                        ((i * 7 + 3) % c) as u32
                    }
                })
                .collect();
            let (probs, _) = softmax_xent_f64(&logits, &labels, b, c);
            let g = softmax_xent_backward_f64(&probs, &labels, b, c);
            let eps = 1e-5;
            for i in 0..logits.len() {
                let mut z = logits.clone();
                z[i] += eps;
                let up = xent_mean_f64(&z, &labels, b, c);
                z[i] -= 2.0 * eps;
                let down = xent_mean_f64(&z, &labels, b, c);
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() <= 1e-9 + 1e-6 * fd.abs(),
                    "B={b} C={c}: dlogits[{i}] = {} but finite differences give {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn relu_backward_matches_finite_differences() {
        let x: Vec<f32> = uniform_data(50, 42);
        let dy: Vec<f32> = uniform_data(50, 43);
        let dx = relu_backward(&x, &dy);
        let eps = 1e-3f64;
        for i in 0..x.len() {
            // Skip points too near the kink for a central difference.
            if (x[i] as f64).abs() < 2.0 * eps {
                continue;
            }
            let f = |v: f64| v.max(0.0) * dy[i] as f64;
            let fd = (f(x[i] as f64 + eps) - f(x[i] as f64 - eps)) / (2.0 * eps);
            assert!((fd - dx[i] as f64).abs() < 1e-6, "dx[{i}]");
        }
    }

    #[test]
    fn small_cases_by_hand() {
        assert_eq!(relu_forward(&[-1.0, 0.0, 2.5]), vec![0.0, 0.0, 2.5]);
        assert_eq!(
            relu_backward(&[-1.0, 0.0, 2.5], &[3.0, 3.0, 3.0]),
            vec![0.0, 0.0, 3.0]
        );
        // Uniform logits over C classes: loss ln C, probs 1/C.
        let (p, l) = softmax_xent_forward(&[0.5; 4], &[2], 1, 4);
        assert!(p.iter().all(|&v| (v - 0.25).abs() < 1e-7));
        assert!((l[0] - 4f32.ln()).abs() < 1e-6);
        // One class: probability 1, loss 0, gradient 0.
        let (p, l) = softmax_xent_forward(&[7.0], &[0], 1, 1);
        assert_eq!((p[0], l[0]), (1.0, 0.0));
        assert_eq!(softmax_xent_backward(&[7.0], &[0], 1, 1), vec![0.0]);
        // Huge logits do not overflow.
        let (_, l) = softmax_xent_forward(&[1000.0, 0.0], &[1], 1, 2);
        assert!((l[0] - 1000.0).abs() < 1e-3);
        // Ties go to the first index.
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0, -2.0, -1.0], 2, 3), vec![1, 0]);
    }
}
