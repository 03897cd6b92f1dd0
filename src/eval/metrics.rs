//! The numbers of the `eval` report other than the FID, on the CPU: classifier confidence,
//! the predicted-label histogram and its entropy, and the nearest-neighbour distance in pixel
//! space (a memorisation check).

use nalgebra::DMatrix;

/// Mean max-softmax probability and the fraction of rows whose maximum exceeds 0.9, over
/// `probs` `[n, classes]`. (0, 0) when empty.
pub fn confidence(probs: &[f32], classes: usize) -> (f64, f64) {
    let n = probs.len() / classes;
    if n == 0 {
        return (0.0, 0.0);
    }
    let (mut sum, mut confident) = (0.0f64, 0usize);
    for row in probs.chunks_exact(classes) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        sum += m;
        if m > 0.9 {
            confident += 1;
        }
    }
    (sum / n as f64, confident as f64 / n as f64)
}

/// How many of `labels` fall in each of `classes` classes (labels ≥ classes are ignored).
pub fn histogram(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut h = vec![0; classes];
    for &l in labels {
        if (l as usize) < classes {
            h[l as usize] += 1;
        }
    }
    h
}

/// Entropy of the histogram's distribution divided by ln(classes): 1 when every class is
/// equally frequent, 0 when all fall in one class (or the histogram is empty).
pub fn entropy_ratio(hist: &[usize]) -> f64 {
    let total: usize = hist.iter().sum();
    if total == 0 || hist.len() < 2 {
        return 0.0;
    }
    let h: f64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    h / (hist.len() as f64).ln()
}

/// For each of the `queries` (digits of `dim` bytes each), the Euclidean distance to its
/// nearest digit among `refs`, in the model's units (x = p/256 − 0.5, so bytes / 256); the
/// squared distances come from |a|² + |b|² − 2 a·b with the products as one matrix product
/// per chunk of references.
pub fn nearest_distances(queries: &[u8], refs: &[u8], dim: usize) -> Vec<f64> {
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && refs.len().is_multiple_of(dim));
    let nq = queries.len() / dim;
    let nr = refs.len() / dim;
    if nq == 0 || nr == 0 {
        return vec![f64::INFINITY; nq];
    }
    let q = DMatrix::from_fn(nq, dim, |i, j| queries[i * dim + j] as f32);
    let qn: Vec<f64> = (0..nq)
        .map(|i| {
            queries[i * dim..(i + 1) * dim]
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum()
        })
        .collect();
    let mut best = vec![f64::INFINITY; nq];
    const CHUNK: usize = 2048;
    let mut first = 0;
    while first < nr {
        let take = (nr - first).min(CHUNK);
        let rows = &refs[first * dim..(first + take) * dim];
        // [dim, take]: column j is reference first + j.
        let r = DMatrix::from_fn(dim, take, |i, j| rows[j * dim + i] as f32);
        let rn: Vec<f64> = rows
            .chunks_exact(dim)
            .map(|d| d.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect();
        let dots = &q * &r;
        for i in 0..nq {
            for (j, &rnj) in rn.iter().enumerate() {
                let d2 = qn[i] + rnj - 2.0 * dots[(i, j)] as f64;
                if d2 < best[i] {
                    best[i] = d2;
                }
            }
        }
        first += take;
    }
    best.iter().map(|&d2| d2.max(0.0).sqrt() / 256.0).collect()
}

/// The mean of `v` (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
