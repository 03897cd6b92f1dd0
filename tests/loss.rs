//! The model's small ops (add_pos, pos_backward, add, add_inplace, copy, drop_cond,
//! drop_cond_add, pad_cond) and the MSE loss with
//! its history slot and gradient, plain and weighted by noise level (`--loss-weight-max`), on
//! the GPU against the CPU reference.

mod common;

use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::ops::loss;
use wgpu_diffusion::reference::loss as reference;
use wgpu_diffusion::testing::{assert_close, uniform_data};

/// (B, P, D) with T = P + 1: odd, aligned, the presets' (seed P=4 D=324, tiny P=16 D=100).
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 4, 5),
    (7, 1, 3),
    (2, 16, 100),
    (5, 4, 324),
    (4, 16, 64),
    (1, 9, 257),
];

fn tensor(gpu: &Gpu, name: &str, data: &[f32]) -> GpuTensor {
    GpuTensor::from_slice(gpu, name, &[data.len()], data).unwrap()
}

#[test]
fn add_pos_and_pos_backward_match_reference() {
    let gpu = common::gpu();
    for (b, p, d) in SHAPES {
        let t = p + 1;
        let tokens = uniform_data(b * t * d, 1);
        let pos = uniform_data(t * d, 2);
        let dx = uniform_data(b * t * d, 3);
        let (tk, ps, dxt) = (
            tensor(&gpu, "tokens", &tokens),
            tensor(&gpu, "pos", &pos),
            tensor(&gpu, "dx", &dx),
        );
        let xs = GpuTensor::zeros(&gpu, "x_start", &[b * t * d]).unwrap();
        let dpos = tensor(&gpu, "dpos", &vec![9.0; t * d]);
        let f = loss::add_pos(&gpu, &tk, &ps, &xs, b, t, d).unwrap();
        let g = loss::pos_backward(&gpu, &dxt, &dpos, b, t, d).unwrap();
        gpu.run(&[&f, &g]).unwrap();
        let name = format!("B={b} T={t} D={d}");
        assert_close(
            &format!("add_pos {name}"),
            &xs.read(&gpu).unwrap(),
            &reference::add_pos(&tokens, &pos),
            0.0,
            0.0,
        );
        assert_close(
            &format!("pos_backward {name}"),
            &dpos.read(&gpu).unwrap(),
            &reference::pos_backward(&dx, t, d),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn add_add_inplace_and_copy_match_reference() {
    let gpu = common::gpu();
    for n in [1, 63, 64, 1000, 4099] {
        let a = uniform_data(n, 4);
        let b = uniform_data(n, 5);
        let (at, bt) = (tensor(&gpu, "a", &a), tensor(&gpu, "b", &b));
        let y = GpuTensor::zeros(&gpu, "y", &[n]).unwrap();
        let acc = tensor(&gpu, "acc", &b);
        let c = GpuTensor::zeros(&gpu, "copy", &[n]).unwrap();
        let d1 = loss::add(&gpu, &at, &bt, &y).unwrap();
        let d2 = loss::add_inplace(&gpu, &acc, &at).unwrap();
        let d3 = loss::copy(&gpu, &at, &c).unwrap();
        gpu.run(&[&d1, &d2, &d3]).unwrap();
        let want = reference::add(&a, &b);
        assert_close(
            &format!("add n={n}"),
            &y.read(&gpu).unwrap(),
            &want,
            0.0,
            0.0,
        );
        assert_close(
            &format!("add_inplace n={n}"),
            &acc.read(&gpu).unwrap(),
            &want,
            0.0,
            0.0,
        );
        assert_close(&format!("copy n={n}"), &c.read(&gpu).unwrap(), &a, 0.0, 0.0);
    }
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    assert!(loss::add(&gpu, &z(3), &z(4), &z(3)).is_err());
    assert!(loss::add_inplace(&gpu, &z(3), &z(2)).is_err());
    assert!(loss::copy(&gpu, &z(3), &z(5)).is_err());
}

/// drop_cond, drop_cond_add and pad_cond against the reference on odd and aligned shapes
/// (C = D or HK), and pad_cond as drop_cond's backward: <drop_cond(x), dy> = <x, pad_cond(dy)>
/// for every x and dy (the adjoint identity; for a linear map it is what a finite-difference
/// check measures, exactly).
#[test]
fn drop_cond_and_pad_cond_match_reference() {
    let gpu = common::gpu();
    let rows = |batch, tokens, patches, width| loss::TokenRows {
        batch,
        tokens,
        patches,
        width,
    };
    for (b, p, c) in SHAPES {
        let t = p + 1;
        let x = uniform_data(b * t * c, 6);
        let dy = uniform_data(b * p * c, 7);
        let acc = uniform_data(b * p * c, 8);
        let (xt, dyt, acct) = (
            tensor(&gpu, "x", &x),
            tensor(&gpu, "dy", &dy),
            tensor(&gpu, "acc", &acc),
        );
        let y = tensor(&gpu, "y", &vec![9.0; b * p * c]);
        let dx = tensor(&gpu, "dx", &vec![9.0; b * t * c]);
        let d1 = loss::drop_cond(&gpu, &xt, &y, rows(b, t, p, c)).unwrap();
        let d2 = loss::drop_cond_add(&gpu, &xt, &acct, rows(b, t, p, c)).unwrap();
        let d3 = loss::pad_cond(&gpu, &dyt, &dx, rows(b, t, p, c)).unwrap();
        gpu.run(&[&d1, &d2, &d3]).unwrap();
        let name = format!("B={b} T={t} P={p} C={c}");
        let dropped = reference::drop_cond(&x, b, t, p, c);
        assert_close(
            &format!("drop_cond {name}"),
            &y.read(&gpu).unwrap(),
            &dropped,
            0.0,
            0.0,
        );
        assert_close(
            &format!("drop_cond_add {name}"),
            &acct.read(&gpu).unwrap(),
            &reference::add(&acc, &dropped),
            0.0,
            0.0,
        );
        let padded = reference::pad_cond(&dy, b, t, p, c);
        assert_close(
            &format!("pad_cond {name}"),
            &dx.read(&gpu).unwrap(),
            &padded,
            0.0,
            0.0,
        );
        let dot = |u: &[f32], v: &[f32]| {
            u.iter()
                .zip(v)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        let (lhs, rhs) = (dot(&dropped, &dy), dot(&x, &padded));
        assert!(
            (lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()),
            "{name}: <drop_cond(x), dy> = {lhs}, <x, pad_cond(dy)> = {rhs}"
        );
        // The conditioning rows of pad_cond are zero; the patch rows are dy's.
        for bi in 0..b {
            assert!(padded[(bi * t + p) * c..(bi + 1) * t * c]
                .iter()
                .all(|&v| v == 0.0));
        }
    }
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    // Wrong lengths, and P = T (no conditioning row) or P = 0.
    assert!(loss::drop_cond(&gpu, &z(2 * 5 * 3), &z(2 * 4 * 3 + 1), rows(2, 5, 4, 3)).is_err());
    assert!(loss::pad_cond(&gpu, &z(2 * 4 * 3), &z(2 * 4 * 3), rows(2, 5, 4, 3)).is_err());
    assert!(loss::drop_cond(&gpu, &z(12), &z(12), rows(1, 4, 4, 3)).is_err());
    assert!(loss::drop_cond_add(&gpu, &z(12), &z(0), rows(1, 4, 0, 3)).is_err());
}

/// Tokens [B, T, D] whose conditioning token (t = T - 1) holds sample b's a^n, from pure noise
/// (0) to none (1), so the loss weights span the cap, values in between and 1.
fn tokens_with_levels(b: usize, t: usize, d: usize) -> Vec<f32> {
    let mut tokens = uniform_data(b * t * d, 40);
    for s in 0..b {
        let an = [0.0, 1.0, 0.5, 0.9, 0.2, 0.7, 0.05][s % 7];
        tokens[(s * t + t - 1) * d..(s + 1) * t * d].fill(an);
    }
    tokens
}

/// The reference's sample weights for `tokens` with cap `max`.
fn weights(tokens: &[f32], b: usize, t: usize, d: usize, max: u32) -> Vec<f64> {
    let t64: Vec<f64> = tokens.iter().map(|&v| v as f64).collect();
    reference::sample_weights(&t64, b, t, d, max)
}

#[test]
fn mse_forward_and_backward_match_reference() {
    let gpu = common::gpu();
    for (i, (b, p, d)) in SHAPES.into_iter().enumerate() {
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
    assert!(loss::add_pos(&gpu, &z(12), &z(5), &z(12), 2, 3, 2).is_err());
    assert!(loss::pos_backward(&gpu, &z(12), &z(5), 2, 3, 2).is_err());
}
