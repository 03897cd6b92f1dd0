//! The model's row and element ops (add_pos, pos_backward, add, add_inplace, copy,
//! drop_cond, drop_cond_add, pad_cond) on the GPU against the CPU reference.

mod common;

use common::tensor;

use wgpu_diffusion::gpu::GpuTensor;
use wgpu_diffusion::ops::rows;
use wgpu_diffusion::reference::rows as reference;
use wgpu_diffusion::testing::{assert_close, uniform_data, ELEMENT_COUNTS, TOKEN_SHAPES};

#[test]
fn add_pos_and_pos_backward_match_reference() {
    let gpu = common::gpu();
    for (b, p, d) in TOKEN_SHAPES {
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
        let f = rows::add_pos(&gpu, &tk, &ps, &xs, b, t, d).unwrap();
        let g = rows::pos_backward(&gpu, &dxt, &dpos, b, t, d).unwrap();
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
    for n in ELEMENT_COUNTS {
        let a = uniform_data(n, 4);
        let b = uniform_data(n, 5);
        let (at, bt) = (tensor(&gpu, "a", &a), tensor(&gpu, "b", &b));
        let y = GpuTensor::zeros(&gpu, "y", &[n]).unwrap();
        let acc = tensor(&gpu, "acc", &b);
        let c = GpuTensor::zeros(&gpu, "copy", &[n]).unwrap();
        let d1 = rows::add(&gpu, &at, &bt, &y).unwrap();
        let d2 = rows::add_inplace(&gpu, &acc, &at).unwrap();
        let d3 = rows::copy(&gpu, &at, &c).unwrap();
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
    assert!(rows::add(&gpu, &z(3), &z(4), &z(3)).is_err());
    assert!(rows::add_inplace(&gpu, &z(3), &z(2)).is_err());
    assert!(rows::copy(&gpu, &z(3), &z(5)).is_err());
}

/// drop_cond, drop_cond_add and pad_cond against the reference on odd and aligned shapes
/// (C = D or HK), and pad_cond as drop_cond's backward: <drop_cond(x), dy> = <x, pad_cond(dy)>
/// for every x and dy (the adjoint identity; for a linear map it is what a finite-difference
/// check measures, exactly).
#[test]
fn drop_cond_and_pad_cond_match_reference() {
    let gpu = common::gpu();
    let rows = |batch, tokens, patches, width| rows::TokenRows {
        batch,
        tokens,
        patches,
        width,
    };
    for (b, p, c) in TOKEN_SHAPES {
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
        let d1 = rows::drop_cond(&gpu, &xt, &y, rows(b, t, p, c)).unwrap();
        let d2 = rows::drop_cond_add(&gpu, &xt, &acct, rows(b, t, p, c)).unwrap();
        let d3 = rows::pad_cond(&gpu, &dyt, &dx, rows(b, t, p, c)).unwrap();
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
    assert!(rows::drop_cond(&gpu, &z(2 * 5 * 3), &z(2 * 4 * 3 + 1), rows(2, 5, 4, 3)).is_err());
    assert!(rows::pad_cond(&gpu, &z(2 * 4 * 3), &z(2 * 4 * 3), rows(2, 5, 4, 3)).is_err());
    assert!(rows::drop_cond(&gpu, &z(12), &z(12), rows(1, 4, 4, 3)).is_err());
    assert!(rows::drop_cond_add(&gpu, &z(12), &z(0), rows(1, 4, 0, 3)).is_err());
}

#[test]
fn positions_of_the_wrong_shape_are_errors() {
    let gpu = common::gpu();
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    assert!(rows::add_pos(&gpu, &z(12), &z(5), &z(12), 2, 3, 2).is_err());
    assert!(rows::pos_backward(&gpu, &z(12), &z(5), 2, 3, 2).is_err());
}
