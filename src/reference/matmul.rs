//! CPU reference of `shaders/matmul.wgsl`: a general GEMM on row-major matrices, the dense
//! layer's forward and backward built on it, and the bias gradient (column sums). Plain loops
//! with f64 accumulation.

/// `C[m, n] = op(A) · op(B)` with f64 accumulation, all row-major: op(A) is `[m, k]` (A stored
/// as `[m, k]`, or as `[k, m]` when `trans_a`), op(B) is `[k, n]` (B stored as `[k, n]`, or as
/// `[n, k]` when `trans_b`).
pub fn gemm(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f32> {
    assert_eq!(
        a.len(),
        m * k,
        "gemm: A has {} values, not {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "gemm: B has {} values, not {k}x{n}",
        b.len()
    );
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0f32; m * n];
    let mut row = vec![0.0f64; n];
    for i in 0..m {
        row.iter_mut().for_each(|v| *v = 0.0);
        // i-p-j order: the inner loop walks a row of B (contiguous unless trans_b).
        for p in 0..k {
            let x = at(i, p) as f64;
            for (j, r) in row.iter_mut().enumerate() {
                *r += x * bt(p, j) as f64;
            }
        }
        for (cj, r) in c[i * n..(i + 1) * n].iter_mut().zip(&row) {
            *cj = *r as f32;
        }
    }
    c
}

/// Dense layer: `Y[m, n] = X[m, k] · W[k, n] + b[n]`.
pub fn matmul_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut y = gemm(x, w, m, n, k, false, false);
    if let Some(b) = b {
        assert_eq!(
            b.len(),
            n,
            "matmul_forward: bias has {} values, not {n}",
            b.len()
        );
        for row in y.chunks_mut(n) {
            for (v, bj) in row.iter_mut().zip(b) {
                *v += bj;
            }
        }
    }
    y
}

/// `db[n] = Σ_m dY[m, n]`.
pub fn colsum(dy: &[f32], m: usize, n: usize) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        m * n,
        "colsum: dY has {} values, not {m}x{n}",
        dy.len()
    );
    let mut s = vec![0.0f64; n];
    for row in dy.chunks(n) {
        for (sj, v) in s.iter_mut().zip(row) {
            *sj += *v as f64;
        }
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// Gradients of [`matmul_forward`] given `dY[m, n]`: `(dX = dY·Wᵀ [m, k], dW = Xᵀ·dY [k, n],
/// db = Σ_m dY [n])`.
pub fn matmul_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = gemm(dy, w, m, k, n, false, true);
    let dw = gemm(x, dy, k, n, m, true, false);
    let db = colsum(dy, m, n);
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uniform_data;

    #[test]
    fn gemm_transposes_agree() {
        let (m, n, k) = (3, 4, 5);
        let a = uniform_data(m * k, 1);
        let b = uniform_data(k * n, 2);
        let transpose = |v: &[f32], r: usize, c: usize| {
            let mut t = vec![0.0; r * c];
            for i in 0..r {
                for j in 0..c {
                    t[j * r + i] = v[i * c + j];
                }
            }
            t
        };
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        let want = gemm(&a, &b, m, n, k, false, false);
        for (ta, tb) in [(false, true), (true, false), (true, true)] {
            let aa = if ta { &at } else { &a };
            let bb = if tb { &bt } else { &b };
            let got = gemm(aa, bb, m, n, k, ta, tb);
            crate::testing::assert_close(&format!("gemm ta={ta} tb={tb}"), &got, &want, 1e-6, 1e-6);
        }
        // One element by hand.
        let c01: f64 = (0..k).map(|p| a[p] as f64 * b[p * n + 1] as f64).sum();
        assert!((want[1] as f64 - c01).abs() < 1e-6);
    }

    /// L = Σ Y ⊙ R with R random: dL/dY = R, so the backward's gradients must match central
    /// finite differences of L in every input, on an odd shape.
    #[test]
    fn backward_matches_finite_differences() {
        let (m, k, n) = (3, 5, 7);
        let x = uniform_data(m * k, 11);
        let w = uniform_data(k * n, 12);
        let b = uniform_data(n, 13);
        let r = uniform_data(m * n, 14);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let y = matmul_forward(x, w, Some(b), m, k, n);
            y.iter().zip(&r).map(|(y, r)| *y as f64 * *r as f64).sum()
        };
        let (dx, dw, db) = matmul_backward(&x, &w, &r, m, k, n);
        // L is bilinear, so central differences are exact up to f32 round-off in Y.
        let eps = 1e-2f32;
        let check = |name: &str, v: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            for i in 0..v.len() {
                let mut p = v.to_vec();
                p[i] += eps;
                let up = f(&p);
                p[i] -= 2.0 * eps;
                let down = f(&p);
                let fd = (up - down) / (2.0 * eps as f64);
                let g = grad[i] as f64;
                assert!(
                    (fd - g).abs() <= 1e-4 * (1.0 + g.abs()),
                    "{name}[{i}]: backward {g} but finite difference {fd}"
                );
            }
        };
        check("dx", &x, &dx, &|p| loss(p, &w, &b));
        check("dw", &w, &dw, &|p| loss(&x, p, &b));
        check("db", &b, &db, &|p| loss(&x, &w, p));
    }
}
