//! The classifier's ops (ReLU, softmax cross-entropy with its history slot and gradient,
//! argmax) on the GPU against the CPU reference, over odd and aligned shapes.

mod common;

use common::tensor;

use wgpu_diffusion::gpu::GpuTensor;
use wgpu_diffusion::ops::classifier as ops;
use wgpu_diffusion::reference::classifier as reference;
use wgpu_diffusion::testing::{assert_close, uniform_data};

/// (B, C): one row, odd, aligned; one class, MNIST's ten, an odd count.
fn shapes() -> impl Iterator<Item = (usize, usize)> {
    [1usize, 3, 64]
        .into_iter()
        .flat_map(|b| [1usize, 10, 13].into_iter().map(move |c| (b, c)))
}

fn labels_for(b: usize, c: usize) -> Vec<u32> {
    (0..b).map(|i| ((i * 7 + 3) % c) as u32).collect()
}

/// Logits spread over [-4, 4) (so the softmax is far from uniform).
fn logits_for(n: usize, seed: u64) -> Vec<f32> {
    uniform_data(n, seed).iter().map(|v| 4.0 * v).collect()
}

#[test]
fn relu_forward_and_backward_match_reference() {
    let gpu = common::gpu();
    for n in [1, 3, 63, 64, 640, 4099] {
        let mut x = uniform_data(n, 1);
        // Exact zeros take the zero branch in both directions.
        x[0] = 0.0;
        let dy = uniform_data(n, 2);
        let (xt, dyt) = (tensor(&gpu, "x", &x), tensor(&gpu, "dy", &dy));
        let y = tensor(&gpu, "y", &vec![7.0; n]);
        let dx = tensor(&gpu, "dx", &vec![7.0; n]);
        let f = ops::relu_forward(&gpu, &xt, &y).unwrap();
        let b = ops::relu_backward(&gpu, &xt, &dyt, &dx).unwrap();
        gpu.run(&[&f, &b]).unwrap();
        assert_close(
            &format!("relu_forward n={n}"),
            &y.read(&gpu).unwrap(),
            &reference::relu_forward(&x),
            0.0,
            0.0,
        );
        assert_close(
            &format!("relu_backward n={n}"),
            &dx.read(&gpu).unwrap(),
            &reference::relu_backward(&x, &dy),
            0.0,
            0.0,
        );
    }
}

#[test]
fn softmax_xent_forward_and_backward_match_reference() {
    let gpu = common::gpu();
    for (i, (b, c)) in shapes().enumerate() {
        let logits = logits_for(b * c, 10 + i as u64);
        let mut labels = labels_for(b, c);
        if b == 64 {
            // A label that names no class: the logsumexp alone, a zero one-hot row.
            labels[5] = c as u32 + 3;
        }
        let lt = tensor(&gpu, "logits", &logits);
        let lab = GpuTensor::from_slice(&gpu, "labels", &[b], &labels).unwrap();
        let probs = tensor(&gpu, "probs", &vec![9.0; b * c]);
        let losses = tensor(&gpu, "losses", &vec![9.0; b]);
        let history = tensor(&gpu, "history", &[-1.0; 4]);
        let dlogits = tensor(&gpu, "dlogits", &vec![5.0; b * c]);
        let fwd =
            ops::SoftmaxXentForward::new(&gpu, &lt, &lab, &probs, &losses, &history, b, c).unwrap();
        let back = ops::softmax_xent_backward(&gpu, &probs, &lab, &dlogits, b, c).unwrap();
        let slot = (i % 4) as u32;
        fwd.set_slot(&gpu, slot + 4); // modulo the history length
        let [rows, mean] = fwd.dispatches();
        gpu.run(&[rows, mean, &back]).unwrap();

        let name = format!("B={b} C={c}");
        let (want_p, want_l) = reference::softmax_xent_forward(&logits, &labels, b, c);
        assert_close(
            &format!("probs {name}"),
            &probs.read(&gpu).unwrap(),
            &want_p,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("losses {name}"),
            &losses.read(&gpu).unwrap(),
            &want_l,
            2e-6,
            1e-5,
        );
        let mut want_h = vec![-1.0; 4];
        want_h[slot as usize] = reference::xent_mean(&logits, &labels, b, c);
        assert_close(
            &format!("history {name}"),
            &history.read(&gpu).unwrap(),
            &want_h,
            2e-6,
            1e-5,
        );
        assert_close(
            &format!("softmax_xent_backward {name}"),
            &dlogits.read(&gpu).unwrap(),
            &reference::softmax_xent_backward(&logits, &labels, b, c),
            1e-6 / b as f32,
            1e-5,
        );
    }
}

/// A batch bigger than the reduction's 1,024 terms per sweep, with large logits.
#[test]
fn xent_mean_of_a_large_batch_is_accurate() {
    let gpu = common::gpu();
    let (b, c) = (5000, 10);
    let logits: Vec<f32> = uniform_data(b * c, 30).iter().map(|v| 30.0 * v).collect();
    let labels = labels_for(b, c);
    let lt = tensor(&gpu, "logits", &logits);
    let lab = GpuTensor::from_slice(&gpu, "labels", &[b], &labels).unwrap();
    let probs = GpuTensor::zeros(&gpu, "probs", &[b * c]).unwrap();
    let losses = GpuTensor::zeros(&gpu, "losses", &[b]).unwrap();
    let history = GpuTensor::zeros(&gpu, "history", &[1]).unwrap();
    let fwd =
        ops::SoftmaxXentForward::new(&gpu, &lt, &lab, &probs, &losses, &history, b, c).unwrap();
    gpu.run(&fwd.dispatches()).unwrap();
    assert_close(
        "mean loss B=5000",
        &history.read(&gpu).unwrap(),
        &[reference::xent_mean(&logits, &labels, b, c)],
        0.0,
        2e-6,
    );
}

/// Successive steps write successive slots (a ring), leaving the others alone.
#[test]
fn xent_history_slots_accumulate_across_steps() {
    let gpu = common::gpu();
    let (b, c) = (3, 4);
    let lt = GpuTensor::zeros(&gpu, "logits", &[b * c]).unwrap();
    let lab = GpuTensor::from_slice(&gpu, "labels", &[b], &labels_for(b, c)).unwrap();
    let probs = GpuTensor::zeros(&gpu, "probs", &[b * c]).unwrap();
    let losses = GpuTensor::zeros(&gpu, "losses", &[b]).unwrap();
    let history = tensor(&gpu, "history", &[-1.0; 3]);
    let fwd =
        ops::SoftmaxXentForward::new(&gpu, &lt, &lab, &probs, &losses, &history, b, c).unwrap();
    let mut want = vec![-1.0f32; 3];
    for step in 0..5u32 {
        // The labelled logit raised by `step`: loss ln(3 + e^step) - step.
        let mut z = vec![0.0f32; b * c];
        for (s, &l) in labels_for(b, c).iter().enumerate() {
            z[s * c + l as usize] = step as f32;
        }
        lt.write(&gpu, &z);
        fwd.set_slot(&gpu, step);
        gpu.run(&fwd.dispatches()).unwrap();
        let e = (step as f64).exp();
        want[step as usize % 3] = ((3.0 + e).ln() - step as f64) as f32;
    }
    assert_close(
        "history ring",
        &history.read(&gpu).unwrap(),
        &want,
        1e-6,
        1e-5,
    );
}

#[test]
fn argmax_matches_reference_and_accuracy_counts_hits() {
    let gpu = common::gpu();
    for (i, (b, c)) in shapes().enumerate() {
        let logits = logits_for(b * c, 50 + i as u64);
        let lt = tensor(&gpu, "logits", &logits);
        let pred = GpuTensor::from_slice(&gpu, "pred", &[b], &vec![99u32; b]).unwrap();
        let d = ops::argmax(&gpu, &lt, &pred, b, c).unwrap();
        gpu.run(&[&d]).unwrap();
        let got = pred.read::<u32>(&gpu).unwrap();
        assert_eq!(got, reference::argmax(&logits, b, c), "argmax B={b} C={c}");
    }
    // Ties go to the first index; rows of equal values to 0.
    let logits = [1.0, 3.0, 3.0, -1.0, -2.0, -1.0, 0.5, 0.5, 0.5];
    let lt = tensor(&gpu, "logits", &logits);
    let pred = GpuTensor::zeros(&gpu, "pred", &[3]).unwrap();
    gpu.run(&[&ops::argmax(&gpu, &lt, &pred, 3, 3).unwrap()])
        .unwrap();
    let got = pred.read::<u32>(&gpu).unwrap();
    assert_eq!(got, vec![1, 0, 0]);
    assert_eq!(got, reference::argmax(&logits, 3, 3));
    assert_eq!(ops::accuracy(&got, &[1, 2, 0]), 2.0 / 3.0);
    assert_eq!(ops::accuracy(&[], &[]), 0.0);
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = common::gpu();
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    // Length mismatches, shared buffers, zero rows or classes, an empty history.
    assert!(ops::relu_forward(&gpu, &z(3), &z(4)).is_err());
    let x = z(4);
    assert!(ops::relu_forward(&gpu, &x, &x).is_err());
    assert!(ops::relu_backward(&gpu, &z(4), &z(3), &z(4)).is_err());
    let (b, c) = (2, 3);
    assert!(ops::SoftmaxXentForward::new(&gpu, &z(6), &z(2), &z(6), &z(2), &z(0), b, c).is_err());
    assert!(ops::SoftmaxXentForward::new(&gpu, &z(6), &z(3), &z(6), &z(2), &z(1), b, c).is_err());
    assert!(ops::SoftmaxXentForward::new(&gpu, &z(0), &z(0), &z(0), &z(0), &z(1), 0, c).is_err());
    let logits = z(6);
    assert!(
        ops::SoftmaxXentForward::new(&gpu, &logits, &z(2), &logits, &z(2), &z(1), b, c).is_err()
    );
    assert!(ops::softmax_xent_backward(&gpu, &z(6), &z(2), &z(5), b, c).is_err());
    assert!(ops::softmax_xent_backward(&gpu, &z(0), &z(2), &z(0), b, 0).is_err());
    assert!(ops::argmax(&gpu, &z(6), &z(3), b, c).is_err());
    assert!(ops::argmax(&gpu, &logits, &logits.view("pred", 0, &[2]), b, c).is_err());
}

/// The pieces compose: one step of a two-layer MLP (dense → ReLU → dense → softmax
/// cross-entropy and back, dense layers from ops::matmul) in one submission, against the
/// reference chain.
#[test]
fn mlp_step_gradients_match_reference() {
    use wgpu_diffusion::ops::matmul;
    use wgpu_diffusion::reference::matmul as mref;
    let gpu = common::gpu();
    let (b, k, h, c) = (17, 50, 32, 10);
    let x = uniform_data(b * k, 60);
    let w1: Vec<f32> = uniform_data(k * h, 61).iter().map(|v| v * 0.3).collect();
    let b1 = uniform_data(h, 62);
    let w2: Vec<f32> = uniform_data(h * c, 63).iter().map(|v| v * 0.5).collect();
    let b2 = uniform_data(c, 64);
    let labels = labels_for(b, c);
    let t = |name: &str, v: &[f32]| tensor(&gpu, name, v);
    let zeros = |name: &str, n: usize| GpuTensor::zeros(&gpu, name, &[n]).unwrap();
    let (xt, w1t, b1t, w2t, b2t) = (
        t("x", &x),
        t("w1", &w1),
        t("b1", &b1),
        t("w2", &w2),
        t("b2", &b2),
    );
    let lab = GpuTensor::from_slice(&gpu, "labels", &[b], &labels).unwrap();
    let (hid, act, logits) = (zeros("h", b * h), zeros("a", b * h), zeros("z", b * c));
    let (probs, losses, history) = (
        zeros("probs", b * c),
        zeros("losses", b),
        zeros("history", 1),
    );
    let (dz, da, dh, dx) = (
        zeros("dz", b * c),
        zeros("da", b * h),
        zeros("dh", b * h),
        zeros("dx", b * k),
    );
    let (dw1, db1, dw2, db2) = (
        zeros("dw1", k * h),
        zeros("db1", h),
        zeros("dw2", h * c),
        zeros("db2", c),
    );

    let ds = [
        matmul::matmul_forward(&gpu, &xt, &w1t, Some(&b1t), &hid, b, k, h).unwrap(),
        ops::relu_forward(&gpu, &hid, &act).unwrap(),
        matmul::matmul_forward(&gpu, &act, &w2t, Some(&b2t), &logits, b, h, c).unwrap(),
    ];
    let xent =
        ops::SoftmaxXentForward::new(&gpu, &logits, &lab, &probs, &losses, &history, b, c).unwrap();
    let mut back = vec![ops::softmax_xent_backward(&gpu, &probs, &lab, &dz, b, c).unwrap()];
    back.extend(
        matmul::matmul_backward(&gpu, &act, &w2t, &dz, &da, &dw2, &db2, b, h, c, false).unwrap(),
    );
    back.push(ops::relu_backward(&gpu, &hid, &da, &dh).unwrap());
    back.extend(
        matmul::matmul_backward(&gpu, &xt, &w1t, &dh, &dx, &dw1, &db1, b, k, h, false).unwrap(),
    );
    let mut all: Vec<&wgpu_diffusion::gpu::Dispatch> = ds.iter().collect();
    all.extend(xent.dispatches());
    all.extend(back.iter());
    gpu.run(&all).unwrap();

    let rh = mref::matmul_forward(&x, &w1, Some(&b1), b, k, h);
    let ra = reference::relu_forward(&rh);
    let rz = mref::matmul_forward(&ra, &w2, Some(&b2), b, h, c);
    let rdz = reference::softmax_xent_backward(&rz, &labels, b, c);
    let (rda, rdw2, rdb2) = mref::matmul_backward(&ra, &w2, &rdz, b, h, c);
    let rdh = reference::relu_backward(&rh, &rda);
    let (_, rdw1, rdb1) = mref::matmul_backward(&x, &w1, &rdh, b, k, h);
    let read = |t: &GpuTensor| t.read::<f32>(&gpu).unwrap();
    assert_close(
        "mlp loss",
        &read(&history),
        &[reference::xent_mean(&rz, &labels, b, c)],
        1e-6,
        1e-5,
    );
    for (name, got, want) in [
        ("dw2", &dw2, &rdw2),
        ("db2", &db2, &rdb2),
        ("dw1", &dw1, &rdw1),
        ("db1", &db1, &rdb1),
    ] {
        assert_close(&format!("mlp {name}"), &read(got), want, 1e-6, 1e-4);
    }
}
