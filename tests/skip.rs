//! The output skip terms (`shaders/skip.wgsl`, `--skip wiener` and `--skip mixture`), forward
//! and backward, on the GPU against the CPU reference on odd and aligned shapes, noise levels
//! from pure noise to none; the reference's factors at their limits; the mixture's estimate
//! is the posterior of its prior (its error variance is q^2 on pixels drawn from the prior);
//! `pixel-mixture` reads each element's own prior (`pixel_prior`, in the tokens' layout) and
//! with the global prior is `mixture` exactly.
//! (Its gradient is also checked by finite differences of the whole reference model,
//! tests/reference_model.rs.)

mod common;

use wgpu_diffusion::config::{Skip, BACKGROUND_FRAC, INK_MEAN, INK_VAR, PIXEL_MEAN, PIXEL_VAR};
use wgpu_diffusion::gpu::{Elem, GpuTensor};
use wgpu_diffusion::ops::skip;
use wgpu_diffusion::reference::skip as reference;
use wgpu_diffusion::testing::{
    assert_close, f16_tolerance, noisy_patches, noisy_tokens, random_prior, uniform_data,
    SKIP_SHAPES,
};

#[test]
fn skip_forward_matches_reference() {
    let gpu = common::gpu();
    for kind in [Skip::Wiener, Skip::Mixture, Skip::PixelMixture] {
        for (b, t, d) in SKIP_SHAPES {
            let x = uniform_data(b * t * d, 1);
            let tokens = noisy_tokens(b, t, d);
            let tt =
                |name: &str, v: &[f32]| GpuTensor::from_slice(&gpu, name, &[v.len()], v).unwrap();
            let (xt, tk) = (tt("x", &x), tt("tokens", &tokens));
            let y = tt("y", &vec![7.0; b * t * d]);
            let dy = uniform_data(b * t * d, 3);
            let dyt = tt("dy", &dy);
            let dx = tt("dx", &vec![7.0; b * t * d]);
            let prior = (kind == Skip::PixelMixture).then(|| random_prior((t - 1) * d, 4));
            let pt = prior.as_ref().map(|p| tt("prior", p));
            let f = skip::skip_forward(&gpu, kind, pt.as_ref(), &xt, &tk, &y, b, t, d).unwrap();
            let g = skip::skip_backward(&gpu, kind, pt.as_ref(), &dyt, &tk, &dx, b, t, d).unwrap();
            gpu.run(&[&f, &g]).unwrap();
            let prior = prior.as_deref();
            // The mixture's weight w is a logistic of a log-odds with terms up to
            // (A - a^n bg)^2 / 2 s^2: f32 rounding moves it by ~1e-7 of that, and the
            // estimate by that times |E0 - E1|, hence its looser tolerance.
            let (abs, rel) = match kind {
                Skip::Mixture | Skip::PixelMixture => (2e-4, 1e-4),
                _ => (1e-6, 1e-5),
            };
            assert_close(
                &format!("skip_forward {kind:?} B={b} T={t} D={d}"),
                &y.read::<f32>(&gpu).unwrap(),
                &reference::skip_forward(kind, prior, &x, &tokens, b, t, d),
                abs,
                rel,
            );
            assert_close(
                &format!("skip_backward {kind:?} B={b} T={t} D={d}"),
                &dx.read::<f32>(&gpu).unwrap(),
                &reference::skip_backward(kind, prior, &dy, &tokens, b, t, d),
                abs,
                rel,
            );
        }
    }
    // Impossible shapes are errors, not dispatches; the identity skip has no kernel; only
    // pixel-mixture takes a prior, of 3 (T - 1) D values.
    let one = GpuTensor::zeros(&gpu, "one", &[4]).unwrap();
    let three = GpuTensor::zeros(&gpu, "three", &[6]).unwrap();
    let (w, pm) = (Skip::Wiener, Skip::PixelMixture);
    assert!(skip::skip_forward(&gpu, w, None, &one, &one, &one, 4, 1, 1).is_err());
    assert!(skip::skip_forward(&gpu, w, None, &one, &one, &one, 1, 2, 1).is_err());
    assert!(skip::skip_backward(&gpu, w, None, &one, &one, &one, 4, 1, 1).is_err());
    let id = Skip::Identity;
    assert!(skip::skip_forward(&gpu, id, None, &one, &one, &one, 1, 2, 2).is_err());
    assert!(skip::skip_forward(&gpu, pm, Some(&three), &one, &one, &one, 1, 2, 2).is_ok());
    assert!(skip::skip_forward(&gpu, pm, None, &one, &one, &one, 1, 2, 2).is_err());
    assert!(skip::skip_forward(&gpu, pm, Some(&one), &one, &one, &one, 1, 2, 2).is_err());
    assert!(skip::skip_forward(&gpu, w, Some(&three), &one, &one, &one, 1, 2, 2).is_err());
}

/// The mixture's E is the posterior mean of the noise and q its standard deviation: on
/// pixels drawn from its own prior (background with BACKGROUND_FRAC, else N(INK_MEAN,
/// INK_VAR)), the mean squared error of E equals the mean of q^2 (total variance), and it is
/// below the linear estimate's error, far below where the noise is small.
#[test]
fn mixture_is_the_posterior_of_its_prior() {
    let n = 40_000;
    let (u, z1, z2) = (
        uniform_data(n, 31),
        uniform_data(n, 32),
        uniform_data(n, 33),
    );
    for level in [1, 5, 20, 50, 100, 300] {
        let an = 0.99f64.powi(level);
        let (mut err_mix, mut q2, mut err_lin) = (0.0, 0.0, 0.0);
        for i in 0..n {
            // Two normals from uniforms in [-1, 1) (Box-Muller).
            let (a1, a2) = ((z1[i] as f64 + 1.0) / 2.0, (z2[i] as f64 + 1.0) / 2.0);
            let r = (-2.0 * (1.0 - a1).ln()).sqrt();
            let (g1, g2) = (
                r * (std::f64::consts::TAU * a2).cos(),
                r * (std::f64::consts::TAU * a2).sin(),
            );
            let background = ((u[i] as f64 + 1.0) / 2.0) < BACKGROUND_FRAC as f64;
            let x = if background {
                -0.5
            } else {
                INK_MEAN as f64 + (INK_VAR as f64).sqrt() * g1
            };
            let a = an * x + (1.0 - an) * g2;
            let (e, q) = reference::estimate(Skip::Mixture, a, an);
            let (el, _) = reference::estimate(Skip::Wiener, a, an);
            err_mix += (e - g2) * (e - g2);
            q2 += q * q;
            err_lin += (el - g2) * (el - g2);
        }
        let (err_mix, q2, err_lin) = (err_mix / n as f64, q2 / n as f64, err_lin / n as f64);
        println!("n={level}: mixture {err_mix:.4} (mean q^2 {q2:.4}), linear {err_lin:.4}");
        assert!(
            (err_mix - q2).abs() <= 0.03 * q2 + 1e-4,
            "n={level}: error {err_mix} vs mean q^2 {q2}"
        );
        assert!(
            err_mix <= err_lin * 1.01,
            "n={level}: {err_mix} vs {err_lin}"
        );
        if level <= 20 {
            assert!(err_mix < 0.6 * err_lin, "n={level}: {err_mix} vs {err_lin}");
        }
    }
    // Limits: pure noise (a^n = 0) gives E = A exactly and q = 0; no noise (a^n = 1) gives
    // E = 0 (nothing to see of N) and q = 1 on ink, and E = 0, q = 0 on background.
    let (e, q) = reference::estimate(Skip::Mixture, 0.7, 0.0);
    assert!((e - 0.7).abs() < 1e-12 && q.abs() < 1e-9, "{e} {q}");
    let (e, q) = reference::estimate(Skip::Mixture, 0.3, 1.0);
    assert!(e.abs() < 1e-4 && (q - 1.0).abs() < 1e-6, "{e} {q}");
    let (e, q) = reference::estimate(Skip::Mixture, -0.5, 1.0);
    assert!(e.abs() < 1e-12 && q.abs() < 1e-3, "{e} {q}");
    // A background pixel at low noise: its noise is read off almost exactly (q ~ 1 for the
    // linear estimate).
    let an = 0.99f64;
    let a = an * -0.5 + (1.0 - an) * 1.3;
    let (e, q, w) = reference::mixture(a, an);
    assert!(w > 0.99 && (e - 1.3).abs() < 0.01 && q < 0.1, "{e} {q} {w}");
}

#[test]
fn skip_factor_limits_and_formula() {
    // Pure noise (a^n = 0): the noise is the input, c = 1, and nothing is left for the
    // network (q = 0); no noise (a^n = 1): c = 0 and the network does it all (q = 1).
    assert_eq!(reference::factors(0.0), (1.0, 0.0));
    assert_eq!(reference::factors(1.0), (0.0, 1.0));
    // q^2 is the linear estimate's error variance: 1 - c s.
    for an in [0.01, 0.3, 0.9] {
        let (c, q) = reference::factors(an);
        assert!((q * q - (1.0 - c * (1.0 - an))).abs() < 1e-12, "a^n = {an}");
    }
    // n = 200 at a = 0.99: a^n = 0.134, s = 0.866.
    let an = 0.99f64.powi(200);
    let s = 1.0 - an;
    let want = s / (an * an * PIXEL_VAR as f64 + s * s);
    assert!((reference::factor(an) - want).abs() < 1e-15);
    // On a patch token with x = A (the x_start residual of a network that adds nothing), the
    // output is c (A - a^n MEAN); x = A + r adds q r.
    let (t, d) = (2, 3);
    let tokens = [0.1f64, -0.2, 0.4, an, an, an];
    let y = reference::skip_forward(Skip::Wiener, None, &tokens, &tokens, 1, t, d);
    for i in 0..d {
        let want = reference::factor(an) * (tokens[i] - an * PIXEL_MEAN as f64);
        assert!((y[i] - want).abs() < 1e-12, "{} vs {want}", y[i]);
        assert_eq!(y[d + i], an, "the conditioning token is copied");
    }
    let moved: Vec<f64> = tokens
        .iter()
        .enumerate()
        .map(|(i, v)| if i < d { v + 0.5 } else { *v })
        .collect();
    let y2 = reference::skip_forward(Skip::Wiener, None, &moved, &tokens, 1, t, d);
    let q = reference::factors(an).1;
    for i in 0..d {
        assert!((y2[i] - y[i] - 0.5 * q).abs() < 1e-12);
    }
}

/// `pixel_prior`: per position the Laplace background fraction and the shrunk ink mean and
/// variance, in the patch tokens' layout (each element holds its own pixel's prior, the
/// shared bands of overlapping patches alike).
#[test]
fn pixel_prior_counts_each_position_in_token_layout() {
    use wgpu_diffusion::config::Geometry;
    let g = Geometry::new(6, 2).unwrap(); // g = 4, W = 10
    let px = g.pixels() as usize;
    // 3 digits: pixel 0 never inked; pixel 29 inked in two (p = 64 and 192); pixel 300 in all
    // three (p = 128); elsewhere a pattern.
    let mut pixels = vec![0u8; 3 * px];
    for (k, v) in pixels.iter_mut().enumerate() {
        *v = if (k * 7) % 5 == 0 { (k % 251) as u8 } else { 0 };
    }
    for s in 0..3 {
        pixels[s * px] = 0;
        pixels[s * px + 29] = [64, 192, 0][s];
        pixels[s * px + 300] = 128;
    }
    let prior = reference::pixel_prior(&g, &pixels);
    let (w, side, pd) = (
        g.width() as usize,
        g.size as usize,
        (g.patches() * g.dim()) as usize,
    );
    assert_eq!(prior.len(), 3 * pd);
    let (k, gm, gv) = (reference::PRIOR_PSEUDO, INK_MEAN as f64, INK_VAR as f64);
    // The expected prior of pixel i from its three values.
    let want = |i: usize| {
        let xs: Vec<f64> = (0..3)
            .map(|s| pixels[s * px + i])
            .filter(|&p| p != 0)
            .map(|p| p as f64 / 256.0 - 0.5)
            .collect();
        let n = xs.len() as f64;
        let mean = (xs.iter().sum::<f64>() + k * gm) / (n + k);
        let m2 = (xs.iter().map(|x| x * x).sum::<f64>() + k * (gv + gm * gm)) / (n + k);
        [(3.0 - n + 1.0) / 5.0, mean, (m2 - mean * mean).max(1e-4)]
    };
    let mut seen = vec![0; px];
    for t in 0..g.patches() as usize {
        let (ti, tj) = (t / g.grid() as usize, t % g.grid() as usize);
        for e in 0..g.dim() as usize {
            let (r, c) = (e / w, e % w);
            let i = (ti * g.patch as usize + r) * side + tj * g.patch as usize + c;
            seen[i] += 1;
            let j = t * g.dim() as usize + e;
            let got = [prior[j], prior[pd + j], prior[2 * pd + j]];
            for (q, (gq, wq)) in got.iter().zip(want(i)).enumerate() {
                assert!(
                    (*gq as f64 - wq).abs() < 1e-6,
                    "token {t} element {e} (pixel {i}) row {q}: {gq} vs {wq}"
                );
            }
        }
    }
    assert!(seen.iter().all(|&n| n >= 1), "every pixel is in some patch");
    // The hand-checked cases: never inked -> 4/5 background, the global ink statistics.
    let p0 = want(0);
    assert!((p0[0] - 0.8).abs() < 1e-12 && (p0[1] - gm).abs() < 1e-12);
    assert!((want(29)[0] - 0.4).abs() < 1e-12 && (want(300)[0] - 0.2).abs() < 1e-12);
}

/// With the global prior at every position, `pixel-mixture` is `mixture` exactly.
#[test]
fn pixel_mixture_with_the_global_prior_is_the_mixture() {
    let (b, t, d) = (3, 5, 7);
    let pd = (t - 1) * d;
    let p = reference::PixelPrior::GLOBAL;
    let prior: Vec<f64> = [p.frac, p.ink_mean, p.ink_var]
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, pd))
        .collect();
    let x: Vec<f64> = uniform_data(b * t * d, 41)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mut tokens: Vec<f64> = noisy_patches(b * t * d, 0.6, 42)
        .iter()
        .map(|&v| v as f64)
        .collect();
    for s in 0..b {
        tokens[(s * t + t - 1) * d..(s + 1) * t * d].fill([1.0, 0.6, 0.05][s]);
    }
    let mix = reference::skip_forward(Skip::Mixture, None, &x, &tokens, b, t, d);
    let pm = reference::skip_forward(Skip::PixelMixture, Some(&prior), &x, &tokens, b, t, d);
    assert_eq!(mix, pm);
    // And a different prior changes it.
    let other: Vec<f64> = random_prior(pd, 43).iter().map(|&v| v as f64).collect();
    let pm2 = reference::skip_forward(Skip::PixelMixture, Some(&other), &x, &tokens, b, t, d);
    assert_ne!(mix, pm2);
}

/// The forward pass with x, y and the prior stored as f16 and the tokens (the noisy patches
/// and the level) in f32: against the reference on the same f16 values of x and the prior,
/// within f32's tolerance plus one f16 rounding, at levels close to 1 (`tokens_near_one`).
/// Mutation: the prior's ink mean read where its background fraction is (`prior[j]` for
/// `prior[pd + j]`) fails it. (The level read through f16 passes: at these levels the skip's
/// output is x - A plus an estimate E too small for the rounding of 1 - a^n to show.)
#[test]
fn f16_skip_forward_matches_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    let f16 = wgpu_diffusion::testing::round_f16;
    for kind in [Skip::Wiener, Skip::Mixture, Skip::PixelMixture] {
        for (b, t, d) in SKIP_SHAPES {
            let x = f16(&uniform_data(b * t * d, 1));
            let tokens = wgpu_diffusion::testing::tokens_near_one(b, t, d);
            let tt = |name: &str, v: &[f32], e| common::tensor_of(&gpu, name, v, e);
            let (xt, tk) = (tt("x", &x, Elem::F16), tt("tokens", &tokens, Elem::F32));
            let y = tt("y", &vec![7.0; b * t * d], Elem::F16);
            let prior = (kind == Skip::PixelMixture).then(|| f16(&random_prior((t - 1) * d, 4)));
            let pt = prior.as_ref().map(|p| tt("prior", p, Elem::F16));
            let f = skip::skip_forward(&gpu, kind, pt.as_ref(), &xt, &tk, &y, b, t, d).unwrap();
            gpu.run(&[&f]).unwrap();
            let (abs, rel) = match kind {
                Skip::Mixture | Skip::PixelMixture => f16_tolerance(2e-4, 1e-4),
                _ => f16_tolerance(1e-6, 1e-5),
            };
            assert_close(
                &format!("f16 skip_forward {kind:?} B={b} T={t} D={d}"),
                &y.read_values(&gpu).unwrap(),
                &reference::skip_forward(kind, prior.as_deref(), &x, &tokens, b, t, d),
                abs,
                rel,
            );
        }
    }
}
