//! CPU reference of `shaders/label.wgsl`: the label embedding of a class-conditional model.
//! Sums in f64.

/// x [B, T, D] with table[labels[b]] [D] added to each sample's conditioning row (T - 1);
/// a label past the table reads its last row.
pub fn label_forward(x: &[f32], labels: &[u32], table: &[f32], t: usize, d: usize) -> Vec<f32> {
    assert_eq!(x.len(), labels.len() * t * d, "x: expected [B, T, D]");
    assert!(!table.is_empty() && table.len().is_multiple_of(d));
    let last = table.len() / d - 1;
    let mut y = x.to_vec();
    for (b, &l) in labels.iter().enumerate() {
        let row = (l as usize).min(last);
        let start = (b * t + t - 1) * d;
        for c in 0..d {
            y[start + c] += table[row * d + c];
        }
    }
    y
}

/// dtable [rows, D]: row r is the sum of dx [B, T, D]'s conditioning rows of the samples
/// labelled r.
pub fn label_backward(dx: &[f32], labels: &[u32], rows: usize, t: usize, d: usize) -> Vec<f32> {
    assert_eq!(dx.len(), labels.len() * t * d, "dx: expected [B, T, D]");
    let mut acc = vec![0.0f64; rows * d];
    for (b, &l) in labels.iter().enumerate() {
        let row = (l as usize).min(rows - 1);
        let start = (b * t + t - 1) * d;
        for c in 0..d {
            acc[row * d + c] += dx[start + c] as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}
