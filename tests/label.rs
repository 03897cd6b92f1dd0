//! The label embedding (label_forward, label_backward) on the GPU against the CPU reference,
//! and the reference's backward against finite differences of its forward.

mod common;

use common::tensor;

use wgpu_diffusion::config::NO_LABEL;
use wgpu_diffusion::gpu::{Elem, GpuTensor};
use wgpu_diffusion::ops::label::{self, LabelShape};
use wgpu_diffusion::reference::label as reference;
use wgpu_diffusion::testing::{assert_close, label_ids, label_shapes, uniform_data};

const ROWS: usize = NO_LABEL as usize + 1;

#[test]
fn label_forward_and_backward_match_reference() {
    let gpu = common::gpu();
    for (b, p, d) in label_shapes() {
        let t = p + 1;
        let (x, table, dx) = (
            uniform_data(b * t * d, 1),
            uniform_data(ROWS * d, 2),
            uniform_data(b * t * d, 3),
        );
        let lab = label_ids(b);
        let lt = GpuTensor::from_slice(&gpu, "labels", &[b], &lab).unwrap();
        let (xt, tt, dxt) = (
            tensor(&gpu, "x", &x),
            tensor(&gpu, "table", &table),
            tensor(&gpu, "dx", &dx),
        );
        let dtable = tensor(&gpu, "dtable", &vec![9.0; ROWS * d]);
        let s = LabelShape {
            batch: b,
            tokens: t,
            dim: d,
            rows: ROWS,
        };
        let f = label::label_forward(&gpu, &s, &lt, &tt, &xt).unwrap();
        let g = label::label_backward(&gpu, &s, &lt, &dxt, &dtable).unwrap();
        gpu.run(&[&f, &g]).unwrap();
        let name = format!("B={b} T={t} D={d}");
        let want = reference::label_forward(&x, &lab, &table, t, d);
        let got = xt.read(&gpu).unwrap();
        assert_close(&format!("label_forward {name}"), &got, &want, 0.0, 0.0);
        let want = reference::label_backward(&dx, &lab, ROWS, t, d);
        let got = dtable.read(&gpu).unwrap();
        assert_close(&format!("label_backward {name}"), &got, &want, 1e-6, 1e-5);
    }
}

/// L = sum of dx * label_forward(x, table): dL/dtable is label_backward(dx), checked by
/// central differences of the reference forward at every table element.
#[test]
fn reference_backward_matches_finite_differences() {
    let (b, t, d) = (9, 3, 5);
    let (x, table, dx) = (
        uniform_data(b * t * d, 4),
        uniform_data(ROWS * d, 5),
        uniform_data(b * t * d, 6),
    );
    let lab = label_ids(b);
    let loss = |tb: &[f32]| -> f64 {
        let y = reference::label_forward(&x, &lab, tb, t, d);
        y.iter().zip(&dx).map(|(a, w)| *a as f64 * *w as f64).sum()
    };
    let grad = reference::label_backward(&dx, &lab, ROWS, t, d);
    let eps = 1e-2f32;
    let fd: Vec<f32> = (0..table.len())
        .map(|i| {
            let (mut hi, mut lo) = (table.clone(), table.clone());
            hi[i] += eps;
            lo[i] -= eps;
            ((loss(&hi) - loss(&lo)) / (2.0 * eps as f64)) as f32
        })
        .collect();
    assert_close(
        "label_backward vs finite differences",
        &grad,
        &fd,
        1e-4,
        1e-3,
    );
    assert!(
        grad.iter().any(|g| g.abs() > 0.1),
        "the gradient is not trivially zero"
    );
}

/// The forward pass with the table and x_start stored as f16: against the reference on the
/// same f16 values, within one f16 rounding of the sum. Mutation: the table row read through
/// the wrong row (`row + 1u`) fails it, as it fails the f32 test.
#[test]
fn f16_label_forward_matches_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    let (abs, rel) = wgpu_diffusion::testing::f16_tolerance(0.0, 0.0);
    let f16 = wgpu_diffusion::testing::round_f16;
    for (b, p, d) in label_shapes() {
        let t = p + 1;
        let (x, table) = (
            f16(&uniform_data(b * t * d, 1)),
            f16(&uniform_data(ROWS * d, 2)),
        );
        let lab = label_ids(b);
        let lt = GpuTensor::from_slice(&gpu, "labels", &[b], &lab).unwrap();
        let xt = common::tensor_of(&gpu, "x", &x, Elem::F16);
        let tt = common::tensor_of(&gpu, "table", &table, Elem::F16);
        let s = LabelShape {
            batch: b,
            tokens: t,
            dim: d,
            rows: ROWS,
        };
        let f = label::label_forward(&gpu, &s, &lt, &tt, &xt).unwrap();
        gpu.run(&[&f]).unwrap();
        let want = reference::label_forward(&x, &lab, &table, t, d);
        let got = xt.read_values(&gpu).unwrap();
        assert_close(
            &format!("f16 label_forward B={b} T={t} D={d}"),
            &got,
            &want,
            abs,
            rel,
        );
    }
}
