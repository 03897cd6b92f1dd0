//! The model's row and element ops (add_pos, pos_backward, add, add_inplace, copy,
//! drop_cond, drop_cond_add, pad_cond) on the GPU against the CPU reference.

mod common;

use common::{tensor, tensor_of};

use wgpu_diffusion::gpu::{Elem, GpuTensor};
use wgpu_diffusion::ops::rows;
use wgpu_diffusion::reference::rows as reference;
use wgpu_diffusion::testing::{
    assert_close, f16_tolerance, round_f16, uniform_data, ELEMENT_COUNTS, TOKEN_SHAPES,
};

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

/// The row ops of the forward pass with their activations stored as f16 (add_pos's tokens
/// stay f32): against the reference on the same f16 inputs, within one f16 rounding of the
/// f32 result (`f16_tolerance(0, 0)`: copies are exact, sums rounded once; f16's own sum of
/// two f16 values is that too, so the tolerance cannot tell them apart). Mutation: add_pos
/// reading the position one element on fails it.
#[test]
fn f16_row_ops_match_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    let f16 = |name: &str, v: &[f32]| tensor_of(&gpu, name, v, Elem::F16);
    let (abs, rel) = f16_tolerance(0.0, 0.0);
    for (b, p, c) in TOKEN_SHAPES {
        let t = p + 1;
        let tokens = uniform_data(b * t * c, 11);
        let pos = round_f16(&uniform_data(t * c, 12));
        let x = round_f16(&uniform_data(b * t * c, 13));
        let acc = round_f16(&uniform_data(b * p * c, 14));
        let r = rows::TokenRows {
            batch: b,
            tokens: t,
            patches: p,
            width: c,
        };
        let (tk, ps, xt, acct) = (
            tensor(&gpu, "tokens", &tokens),
            f16("pos", &pos),
            f16("x", &x),
            f16("acc", &acc),
        );
        let xs = f16("x_start", &vec![9.0; b * t * c]);
        let y = f16("y", &vec![9.0; b * p * c]);
        let padded = f16("padded", &vec![9.0; b * t * c]);
        let sum = f16("sum", &x);
        let ds = [
            rows::add_pos(&gpu, &tk, &ps, &xs, b, t, c).unwrap(),
            rows::drop_cond(&gpu, &xt, &y, r).unwrap(),
            rows::drop_cond_add(&gpu, &xt, &acct, r).unwrap(),
            rows::pad_cond(&gpu, &acct, &padded, r).unwrap(),
            rows::add_inplace(&gpu, &sum, &xs).unwrap(),
        ];
        gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
        let name = format!("f16 B={b} T={t} P={p} C={c}");
        let x_start = reference::add_pos(&tokens, &pos);
        let got_xs = xs.read_values(&gpu).unwrap();
        assert_close(&format!("add_pos {name}"), &got_xs, &x_start, abs, rel);
        let dropped = reference::drop_cond(&x, b, t, p, c);
        let got = y.read_values(&gpu).unwrap();
        assert_close(&format!("drop_cond {name}"), &got, &dropped, 0.0, 0.0);
        let acc_sum = reference::add(&acc, &dropped);
        let got = acct.read_values(&gpu).unwrap();
        assert_close(&format!("drop_cond_add {name}"), &got, &acc_sum, abs, rel);
        // pad_cond ran after drop_cond_add: it pads the f16 sums the GPU wrote.
        let got_acc = round_f16(&acc_sum);
        let want = reference::pad_cond(&got_acc, b, t, p, c);
        let got = padded.read_values(&gpu).unwrap();
        assert_close(&format!("pad_cond {name}"), &got, &want, abs, rel);
        let want = reference::add(&x, &got_xs);
        let got = sum.read_values(&gpu).unwrap();
        assert_close(&format!("add_inplace {name}"), &got, &want, abs, rel);
    }
}
