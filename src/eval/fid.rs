//! Fréchet distance between two sets of features, each summarised by its Gaussian statistics
//! (mean and covariance), on the CPU in f64:
//!
//! FID = |μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)
//!
//! The matrix square roots come from nalgebra's symmetric eigendecomposition, with
//! eigenvalues at the level of rounding noise (tiny negative ones, and positive ones below
//! d·ε·λmax) clamped to 0. The
//! covariance is the unbiased one (divided by n − 1), as in the usual FID code; FID is biased
//! at small n, so always report n with it.

use nalgebra::{DMatrix, SymmetricEigen};

/// Mean and covariance of `n` feature vectors of dimension `mean.len()`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// μ, `[d]`.
    pub mean: Vec<f64>,
    /// Σ, `[d, d]` row-major, symmetric; divided by n − 1 (all zero when n = 1).
    pub cov: Vec<f64>,
    /// How many vectors the statistics summarise.
    pub n: usize,
}

impl Stats {
    /// The feature dimension d.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The statistics of `features`, `[n, dim]` row-major (n ≥ 1). Panics when `dim` is 0 or does
/// not divide the length.
pub fn stats(features: &[f32], dim: usize) -> Stats {
    assert!(dim >= 1, "stats: dimension must be >= 1");
    assert!(
        features.len().is_multiple_of(dim) && !features.is_empty(),
        "stats: {} values are not n >= 1 vectors of {dim}",
        features.len()
    );
    let n = features.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in features.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // Centred data, then Σ = Xᵀ X / (n − 1).
    let x = DMatrix::from_fn(n, dim, |i, j| features[i * dim + j] as f64 - mean[j]);
    let denom = if n > 1 { (n - 1) as f64 } else { 1.0 };
    let c = x.tr_mul(&x) / denom;
    let mut cov = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            // Exactly symmetric.
            cov[i * dim + j] = 0.5 * (c[(i, j)] + c[(j, i)]);
        }
    }
    Stats { mean, cov, n }
}

fn matrix(s: &Stats) -> DMatrix<f64> {
    let d = s.dim();
    assert_eq!(s.cov.len(), d * d, "Stats: covariance is not {d}x{d}");
    DMatrix::from_row_slice(d, d, &s.cov)
}

/// Eigenvalues of the symmetric part of `m` (None when the iteration does not converge, e.g.
/// on NaN).
fn eigen(m: DMatrix<f64>) -> Option<SymmetricEigen<f64, nalgebra::Dyn>> {
    let sym = (&m + m.transpose()) * 0.5;
    SymmetricEigen::try_new(sym, f64::EPSILON, 10_000)
}

/// Square roots of the eigenvalues of a symmetric positive semi-definite matrix, those below
/// its rounding noise (d·ε·λmax, including every negative one) taken as 0: the square root
/// would turn noise of 1e-16 into 1e-8 per eigenvalue, which adds up over singular
/// covariances (fewer samples than features, or dead ReLU features).
fn psd_roots(e: &SymmetricEigen<f64, nalgebra::Dyn>) -> nalgebra::DVector<f64> {
    let d = e.eigenvalues.len() as f64;
    let top = e.eigenvalues.iter().fold(0.0f64, |a, &l| a.max(l.abs()));
    let floor = d * f64::EPSILON * top;
    e.eigenvalues
        .map(|l| if l > floor { l.sqrt() } else { 0.0 })
}

/// The principal square root of a symmetric positive semi-definite matrix.
fn sqrt_psd(m: DMatrix<f64>) -> Option<DMatrix<f64>> {
    let e = eigen(m)?;
    let v = &e.eigenvectors;
    Some(v * DMatrix::from_diagonal(&psd_roots(&e)) * v.transpose())
}

/// tr(M^½) of a symmetric positive semi-definite matrix.
fn trace_sqrt_psd(m: DMatrix<f64>) -> Option<f64> {
    Some(psd_roots(&eigen(m)?).sum())
}

/// The Fréchet distance between the Gaussians `a` and `b` (see the module doc); NaN when the
/// statistics are not finite. Not clamped: rounding can leave it a hair below 0. Panics when
/// the dimensions differ.
pub fn fid(a: &Stats, b: &Stats) -> f64 {
    assert_eq!(
        a.dim(),
        b.dim(),
        "fid: feature dimensions differ ({} vs {})",
        a.dim(),
        b.dim()
    );
    let (sa, sb) = (matrix(a), matrix(b));
    if !(sa.iter().chain(sb.iter()).all(|v| v.is_finite())
        && a.mean.iter().chain(&b.mean).all(|v| v.is_finite()))
    {
        return f64::NAN;
    }
    let diff: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let Some(ra) = sqrt_psd(sa.clone()) else {
        return f64::NAN;
    };
    let Some(tr_cross) = trace_sqrt_psd(&ra * &sb * &ra) else {
        return f64::NAN;
    };
    diff + sa.trace() + sb.trace() - 2.0 * tr_cross
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_by_hand() {
        // Three 2-D points: (0, 0), (2, 0), (1, 3).
        let s = stats(&[0.0, 0.0, 2.0, 0.0, 1.0, 3.0], 2);
        assert_eq!(s.n, 3);
        assert_eq!(s.mean, vec![1.0, 1.0]);
        // Centred: (-1, -1), (1, -1), (0, 2); / (n - 1) = 2.
        assert_eq!(s.cov, vec![1.0, 0.0, 0.0, 3.0]);
        let one = stats(&[4.0, 5.0], 2);
        assert_eq!((one.n, one.cov.clone()), (1, vec![0.0; 4]));
    }

    #[test]
    fn sqrt_psd_squares_back() {
        let m = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]);
        let r = sqrt_psd(m.clone()).unwrap();
        assert!((&r * &r - m).abs().max() < 1e-12);
    }
}
