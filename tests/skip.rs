//! The output skip term (`shaders/skip.wgsl`, `--skip wiener`), forward and backward, on the
//! GPU against the CPU reference on odd and aligned shapes, noise levels from pure noise to
//! none; the reference's factors at their limits. (Its gradient is also checked by finite
//! differences of the whole reference model, tests/reference_model.rs.)

mod common;

use wgpu_diffusion::config::{PIXEL_MEAN, PIXEL_VAR};
use wgpu_diffusion::gpu::GpuTensor;
use wgpu_diffusion::ops::skip;
use wgpu_diffusion::reference::skip as reference;
use wgpu_diffusion::testing::{assert_close, uniform_data};

/// (B, T, D): odd, aligned, the seed's geometry (T = 5, D = 324), the tiny preset's (17, 100).
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 2, 1),
    (3, 5, 7),
    (4, 5, 324),
    (2, 17, 100),
    (5, 10, 64),
    (9, 3, 257),
];

#[test]
fn skip_forward_matches_reference() {
    let gpu = common::gpu();
    for (b, t, d) in SHAPES {
        let x = uniform_data(b * t * d, 1);
        let mut tokens: Vec<f32> = uniform_data(b * t * d, 2).iter().map(|v| 2.0 * v).collect();
        // Conditioning values a^n from 1 (no noise: c = 0) down to 0.0066 (n = 500 at 0.99).
        for s in 0..b {
            let an = if b == 1 {
                0.3
            } else {
                1.0 - 0.9934 * s as f32 / (b - 1) as f32
            };
            tokens[(s * t + t - 1) * d..(s + 1) * t * d].fill(an);
        }
        let tt = |name: &str, v: &[f32]| GpuTensor::from_slice(&gpu, name, &[v.len()], v).unwrap();
        let (xt, tk) = (tt("x", &x), tt("tokens", &tokens));
        let y = tt("y", &vec![7.0; b * t * d]);
        let dy = uniform_data(b * t * d, 3);
        let dyt = tt("dy", &dy);
        let dx = tt("dx", &vec![7.0; b * t * d]);
        let f = skip::skip_forward(&gpu, &xt, &tk, &y, b, t, d).unwrap();
        let g = skip::skip_backward(&gpu, &dyt, &tk, &dx, b, t, d).unwrap();
        gpu.run(&[&f, &g]).unwrap();
        assert_close(
            &format!("skip_forward B={b} T={t} D={d}"),
            &y.read::<f32>(&gpu).unwrap(),
            &reference::skip_forward(&x, &tokens, b, t, d),
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("skip_backward B={b} T={t} D={d}"),
            &dx.read::<f32>(&gpu).unwrap(),
            &reference::skip_backward(&dy, &tokens, b, t, d),
            1e-6,
            1e-5,
        );
    }
    // Impossible shapes are errors, not dispatches.
    let one = GpuTensor::zeros(&gpu, "one", &[4]).unwrap();
    assert!(skip::skip_forward(&gpu, &one, &one, &one, 4, 1, 1).is_err());
    assert!(skip::skip_forward(&gpu, &one, &one, &one, 1, 2, 1).is_err());
    assert!(skip::skip_backward(&gpu, &one, &one, &one, 4, 1, 1).is_err());
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
    let y = reference::skip_forward(&tokens, &tokens, 1, t, d);
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
    let y2 = reference::skip_forward(&moved, &tokens, 1, t, d);
    let q = reference::factors(an).1;
    for i in 0..d {
        assert!((y2[i] - y[i] - 0.5 * q).abs() < 1e-12);
    }
}
