//! CPU reference of `shaders/rows.wgsl`: the positional embedding, elementwise adds and the
//! patch rows of [B, T, C] tensors (drop_cond, pad_cond). Sums in f64.

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

/// x [B, T, C] -> [B, P, C]: each sample's first P rows (the patch tokens').
pub fn drop_cond(x: &[f32], batch: usize, t: usize, p: usize, c: usize) -> Vec<f32> {
    assert!(p <= t && x.len() == batch * t * c);
    (0..batch)
        .flat_map(|b| x[b * t * c..(b * t + p) * c].iter().copied())
        .collect()
}

/// dy [B, P, C] -> dx [B, T, C]: dy's rows in place, zeros in the other T - P rows
/// (drop_cond's backward).
pub fn pad_cond(dy: &[f32], batch: usize, t: usize, p: usize, c: usize) -> Vec<f32> {
    assert!(p <= t && dy.len() == batch * p * c);
    let mut dx = vec![0.0; batch * t * c];
    for b in 0..batch {
        dx[b * t * c..(b * t + p) * c].copy_from_slice(&dy[b * p * c..(b + 1) * p * c]);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
