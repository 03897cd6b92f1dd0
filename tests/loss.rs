//! The MSE loss with its history slot and gradient, plain and weighted by noise level
//! (`--loss-weight-max`), on the GPU against the CPU reference.

mod common;

use common::tensor;

use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::ops::loss;
use wgpu_diffusion::reference::loss as reference;
use wgpu_diffusion::testing::{assert_close, tokens_with_levels, uniform_data, TOKEN_SHAPES};

/// The reference's sample weights for `tokens` with cap `max`.
fn weights(tokens: &[f32], b: usize, t: usize, d: usize, max: u32) -> Vec<f64> {
    let t64: Vec<f64> = tokens.iter().map(|&v| v as f64).collect();
    reference::sample_weights(&t64, b, t, d, max)
}

#[test]
fn mse_forward_and_backward_match_reference() {
    let gpu = common::gpu();
    for (i, (b, p, d)) in TOKEN_SHAPES.into_iter().enumerate() {
        for max in [1, 30] {
            mse_case(&gpu, i, b, p, d, max);
        }
    }
}

fn mse_case(gpu: &Gpu, i: usize, b: usize, p: usize, d: usize, max: u32) {
    let t = p + 1;
    let out = uniform_data(b * t * d, 10 + i as u64);
    let target = uniform_data(b * p * d, 20 + i as u64);
    let tokens = tokens_with_levels(b, t, d);
    let w = weights(&tokens, b, t, d, max);
    if max > 1 && b > 2 {
        let m = max as f64;
        assert!(
            w.contains(&m) && w.iter().any(|&v| v > 1.0 && v < m),
            "{w:?}"
        );
    }
    let (ot, tt) = (tensor(gpu, "out", &out), tensor(gpu, "target", &target));
    let tk = tensor(gpu, "tokens", &tokens);
    let lw = loss::LevelWeight { tokens: &tk, max };
    let history = tensor(gpu, "history", &[-1.0; 8]);
    let dout = tensor(gpu, "dout", &vec![5.0; b * t * d]);
    let mse = loss::MseForward::new(gpu, &ot, &tt, lw, &history, b, t, p, d).unwrap();
    let back = loss::mse_backward(gpu, &ot, &tt, lw, &dout, b, t, p, d).unwrap();
    let slot = (i % 8) as u32;
    mse.set_slot(gpu, slot);
    gpu.run(&[&mse.dispatch, &back]).unwrap();
    let name = format!("B={b} T={t} P={p} D={d} W={max}");
    let h = history.read::<f32>(gpu).unwrap();
    let want = reference::mse(&out, &target, &w, b, t, p, d);
    let mut want_h = vec![-1.0; 8];
    want_h[slot as usize] = want;
    assert_close(&format!("mse history {name}"), &h, &want_h, 0.0, 2e-6);
    assert_close(
        &format!("mse_backward {name}"),
        &dout.read(gpu).unwrap(),
        &reference::mse_backward(&out, &target, &w, b, t, p, d),
        1e-9,
        1e-6,
    );
}

/// Successive steps write successive slots (a ring), leaving the others alone.
#[test]
fn mse_history_slots_accumulate_across_steps() {
    let gpu = common::gpu();
    let (b, p, d) = (3, 4, 5);
    let t = p + 1;
    let out = GpuTensor::zeros(&gpu, "out", &[b * t * d]).unwrap();
    let target = GpuTensor::zeros(&gpu, "target", &[b * p * d]).unwrap();
    let history = tensor(&gpu, "history", &[-1.0; 4]);
    let lw = loss::LevelWeight {
        tokens: &out,
        max: 1,
    };
    let mse = loss::MseForward::new(&gpu, &out, &target, lw, &history, b, t, p, d).unwrap();
    let mut want = vec![-1.0f32; 4];
    for step in 0..6u32 {
        // out = step everywhere, target 0: the loss is step^2 (the conditioning token too,
        // which the loss must ignore).
        out.write(&gpu, &vec![step as f32; b * t * d]);
        mse.set_slot(&gpu, step);
        gpu.run(&[&mse.dispatch]).unwrap();
        want[step as usize % 4] = (step * step) as f32;
    }
    assert_close(
        "history ring",
        &history.read(&gpu).unwrap(),
        &want,
        0.0,
        1e-6,
    );
}

/// The seed preset's training batch (500 x 5 x 324): the one-workgroup reduction keeps
/// ~1e-6 relative accuracy over 648,000 terms.
#[test]
fn mse_of_a_full_seed_batch_is_accurate() {
    let gpu = common::gpu();
    let (b, p, d) = (500, 4, 324);
    let t = p + 1;
    let out = uniform_data(b * t * d, 30);
    let target = uniform_data(b * p * d, 31);
    let (ot, tt) = (tensor(&gpu, "out", &out), tensor(&gpu, "target", &target));
    let history = GpuTensor::zeros(&gpu, "history", &[1]).unwrap();
    let tokens = tokens_with_levels(b, t, d);
    let tk = tensor(&gpu, "tokens", &tokens);
    let lw = loss::LevelWeight {
        tokens: &tk,
        max: 30,
    };
    let mse = loss::MseForward::new(&gpu, &ot, &tt, lw, &history, b, t, p, d).unwrap();
    gpu.run(&[&mse.dispatch]).unwrap();
    let want = reference::mse(&out, &target, &weights(&tokens, b, t, d, 30), b, t, p, d);
    assert_close(
        "seed batch mse",
        &history.read(&gpu).unwrap(),
        &[want],
        0.0,
        2e-6,
    );
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = common::gpu();
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    // P > T, zero width, wrong target length, empty history, tokens of the wrong length, a
    // weight without a conditioning token (P = T).
    let (t6, t10, t0) = (z(6), z(10), z(0));
    fn w(tokens: &GpuTensor, max: u32) -> loss::LevelWeight<'_> {
        loss::LevelWeight { tokens, max }
    }
    assert!(loss::MseForward::new(&gpu, &z(6), &z(12), w(&t6, 1), &z(4), 1, 3, 4, 2).is_err());
    assert!(loss::mse_backward(&gpu, &z(0), &z(0), w(&t0, 1), &z(0), 1, 2, 1, 0).is_err());
    assert!(loss::mse_backward(&gpu, &z(10), &z(3), w(&t10, 1), &z(10), 1, 5, 2, 2).is_err());
    assert!(loss::MseForward::new(&gpu, &z(10), &z(8), w(&t10, 1), &z(0), 1, 5, 4, 2).is_err());
    assert!(loss::mse_backward(&gpu, &z(10), &z(8), w(&t6, 1), &z(10), 1, 5, 4, 2).is_err());
    assert!(loss::mse_backward(&gpu, &z(10), &z(10), w(&t10, 1), &z(10), 1, 5, 5, 2).is_ok());
    assert!(loss::mse_backward(&gpu, &z(10), &z(10), w(&t10, 9), &z(10), 1, 5, 5, 2).is_err());
}
