//! The classifier-feature FID's statistics and distance (CPU, f64) against closed forms.

use rand::{Rng, SeedableRng};
use wgpu_diffusion::eval::fid::{fid, stats, Stats};

/// `n` draws of N(mean, L Lᵀ), `l` the lower-triangular factor `[d, d]` row-major.
fn gaussian(n: usize, mean: &[f64], l: &[f64], seed: u64) -> Vec<f32> {
    let d = mean.len();
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut normal = move || {
        // Box–Muller.
        let u: f64 = 1.0 - r.random::<f64>();
        let v: f64 = r.random::<f64>();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = (0..d).map(|_| normal()).collect();
        for i in 0..d {
            let x = mean[i] + (0..=i).map(|j| l[i * d + j] * z[j]).sum::<f64>();
            out.push(x as f32);
        }
    }
    out
}

fn diag(v: &[f64]) -> Vec<f64> {
    let d = v.len();
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = v[i];
    }
    m
}

fn exact(mean: &[f64], cov: Vec<f64>) -> Stats {
    Stats {
        mean: mean.to_vec(),
        cov,
        n: usize::MAX,
    }
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Closed form for diagonal (or commuting) covariances with variances `va`, `vb`.
fn diagonal_closed_form(ma: &[f64], va: &[f64], mb: &[f64], vb: &[f64]) -> f64 {
    dist2(ma, mb)
        + va.iter()
            .zip(vb)
            .map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2))
            .sum::<f64>()
}

#[test]
fn fid_of_a_set_against_itself_is_zero() {
    let mut r = rand::rngs::StdRng::seed_from_u64(7);
    // Full rank, rank deficient (n < d) and with dead (constant) features, as ReLU features
    // have.
    for (n, d) in [(500, 16), (10, 32), (300, 64)] {
        let mut f: Vec<f32> = (0..n * d).map(|_| r.random_range(-2.0f32..3.0)).collect();
        for row in f.chunks_exact_mut(d) {
            row[d - 1] = 0.0;
            row[d / 2] = 1.5;
        }
        let s = stats(&f, d);
        assert_eq!((s.n, s.dim()), (n, d));
        let v = fid(&s, &s);
        assert!(v.abs() < 1e-6, "n={n} d={d}: FID(self) = {v:e}");
        // A copy with the rows in another order has the same statistics.
        let shuffled: Vec<f32> = f.chunks_exact(d).rev().flatten().copied().collect();
        let v = fid(&s, &stats(&shuffled, d));
        assert!(v.abs() < 1e-6, "n={n} d={d}: FID(reversed rows) = {v:e}");
    }
}

#[test]
fn diagonal_gaussians_match_the_closed_form() {
    let (ma, va) = ([1.0, -2.0, 0.5, 3.0], [1.0, 4.0, 0.25, 2.0]);
    let (mb, vb) = ([0.0, 1.0, 0.5, 2.0], [9.0, 1.0, 0.25, 0.5]);
    let want = diagonal_closed_form(&ma, &va, &mb, &vb);
    let got = fid(&exact(&ma, diag(&va)), &exact(&mb, diag(&vb)));
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");

    // Sample statistics of 40,000 draws each approach the same value.
    let n = 40_000;
    let sd = |v: &[f64]| diag(&v.iter().map(|x| x.sqrt()).collect::<Vec<_>>());
    let a = stats(&gaussian(n, &ma, &sd(&va), 1), 4);
    let b = stats(&gaussian(n, &mb, &sd(&vb), 2), 4);
    let got = fid(&a, &b);
    assert!(
        (got - want).abs() < 0.03 * want,
        "sampled: got {got}, closed form {want}"
    );
}

#[test]
fn rotated_gaussians_with_commuting_covariances_match_the_closed_form() {
    // Σa = R diag(va) Rᵀ, Σb = R diag(vb) Rᵀ, R a rotation: the diagonal formula still holds.
    let (c, s) = (0.6f64, 0.8f64);
    let rot = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
    let conj = |v: &[f64]| {
        let mut m = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                m[i * 3 + j] = (0..3).map(|k| rot[i * 3 + k] * v[k] * rot[j * 3 + k]).sum();
            }
        }
        m
    };
    let (ma, va) = ([0.0, 0.0, 1.0], [2.0, 0.5, 1.0]);
    let (mb, vb) = ([1.0, 1.0, 1.0], [0.5, 3.0, 4.0]);
    let want = diagonal_closed_form(&ma, &va, &mb, &vb);
    let got = fid(&exact(&ma, conj(&va)), &exact(&mb, conj(&vb)));
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");
}

#[test]
fn non_commuting_2d_gaussians_match_the_closed_form() {
    // For 2x2 positive definite A, B: (A^½ B A^½) has the eigenvalues of AB, and for a 2x2
    // PSD matrix M, tr M^½ = sqrt(tr M + 2 sqrt(det M)).
    let a = [2.0, 0.8, 0.8, 1.0];
    let b = [1.0, -0.3, -0.3, 0.5];
    let ab_trace = a[0] * b[0] + a[1] * b[2] + a[2] * b[1] + a[3] * b[3];
    let det = |m: &[f64; 4]| m[0] * m[3] - m[1] * m[2];
    let tr_sqrt = (ab_trace + 2.0 * (det(&a) * det(&b)).sqrt()).sqrt();
    let (ma, mb) = ([0.5, -1.0], [1.5, 2.0]);
    let want = dist2(&ma, &mb) + (a[0] + a[3]) + (b[0] + b[3]) - 2.0 * tr_sqrt;
    let got = fid(&exact(&ma, a.to_vec()), &exact(&mb, b.to_vec()));
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");

    // From samples: L the Cholesky factors of A and B.
    let chol = |m: &[f64; 4]| {
        let l00 = m[0].sqrt();
        let l10 = m[2] / l00;
        [l00, 0.0, l10, (m[3] - l10 * l10).sqrt()]
    };
    let n = 40_000;
    let sa = stats(&gaussian(n, &ma, &chol(&a), 3), 2);
    let sb = stats(&gaussian(n, &mb, &chol(&b), 4), 2);
    let got = fid(&sa, &sb);
    assert!(
        (got - want).abs() < 0.03 * want,
        "sampled: got {got}, closed form {want}"
    );
}

#[test]
fn fid_is_symmetric_and_grows_with_the_mean_shift() {
    let d = 24;
    let mut r = rand::rngs::StdRng::seed_from_u64(11);
    let a: Vec<f32> = (0..800 * d).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let b: Vec<f32> = (0..600 * d)
        .map(|i| r.random_range(-1.0f32..1.0) * 1.7 + (i % d) as f32 * 0.01)
        .map(|v| v.max(-0.4))
        .collect();
    let (sa, sb) = (stats(&a, d), stats(&b, d));
    let (ab, ba) = (fid(&sa, &sb), fid(&sb, &sa));
    assert!(ab > 0.1, "FID {ab} of different sets");
    assert!(
        (ab - ba).abs() < 1e-9 * ab.max(1.0),
        "not symmetric: {ab} vs {ba}"
    );
    // Shifting b's mean by δ in every coordinate adds d δ² exactly.
    let mut shifted = sb.clone();
    shifted.mean.iter_mut().for_each(|m| *m += 0.5);
    let grown = fid(&sa, &shifted);
    let mean_part = |s: &Stats| {
        s.mean
            .iter()
            .zip(&sa.mean)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
    };
    let want = ab - mean_part(&sb) + mean_part(&shifted);
    assert!((grown - want).abs() < 1e-9, "got {grown}, want {want}");
}

#[test]
fn non_finite_statistics_give_nan() {
    let mut s = stats(&[0.0, 1.0, 2.0, 3.0, 4.0, 6.0], 2);
    let good = s.clone();
    s.cov[1] = f64::NAN;
    assert!(fid(&good, &s).is_nan());
    assert!(fid(&s, &good).is_nan());
}
