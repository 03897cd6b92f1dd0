//! The classifier's kernels (`shaders/classifier.wgsl` through `ops::classifier`) against
//! `reference::classifier`: ReLU forward and backward; softmax cross-entropy forward (the
//! probabilities, the per-sample losses and the mean loss in its history slot, a label that
//! names no class included) and backward (d mean loss / d logits); the predicted label
//! (argmax, compared as numbers). Rows of one, odd and aligned batches over one class,
//! MNIST's ten and an odd count. Then the pieces composed: one step of a two-layer MLP
//! (dense → ReLU → dense → softmax cross-entropy and back, the dense layers from
//! `ops::matmul`) in one pass: its logits, mean loss and weight gradients.

use super::Checker;
use crate::error::Result;
use crate::gpu::Dispatch;
use crate::gpu::GpuTensor;
use crate::ops::classifier as ops;
use crate::ops::matmul;
use crate::reference::classifier as reference;
use crate::reference::matmul as mref;
use crate::testing::uniform_data;

/// (B, C): one row, odd, aligned; one class, MNIST's ten, an odd count.
const SHAPES: [(usize, usize); 5] = [(1, 1), (3, 10), (64, 13), (1, 13), (64, 10)];
const QUICK_SHAPES: [(usize, usize); 2] = [(3, 10), (64, 13)];
const RELU_SIZES: [usize; 4] = [1, 63, 640, 4099];
const QUICK_RELU_SIZES: [usize; 2] = [63, 4099];

fn labels_for(b: usize, c: usize) -> Vec<u32> {
    (0..b).map(|i| ((i * 7 + 3) % c) as u32).collect()
}

/// Logits spread over [-4, 4) (so the softmax is far from uniform).
fn logits_for(n: usize, seed: u64) -> Vec<f32> {
    uniform_data(n, seed).iter().map(|v| 4.0 * v).collect()
}

pub fn check(c: &mut Checker) {
    let sizes: &[usize] = if c.quick {
        &QUICK_RELU_SIZES
    } else {
        &RELU_SIZES
    };
    for &n in sizes {
        c.case("relu_forward", format!("n={n}"), |c| relu(c, n));
    }
    let shapes: &[_] = if c.quick { &QUICK_SHAPES } else { &SHAPES };
    for (i, &(b, k)) in shapes.iter().enumerate() {
        let shape = format!("B={b} C={k}");
        c.case("softmax_xent_forward", &shape, |c| xent(c, i, b, k));
        c.case("argmax", &shape, |c| argmax(c, i, b, k));
    }
    let mlp = TwoLayerNet::new(17, 50, 32, 10);
    c.case("mlp step", mlp.shape(), |c| mlp_step(c, &mlp));
}

/// ReLU forward and backward on n values, an exact zero first (the zero branch both ways).
fn relu(c: &mut Checker, n: usize) -> Result<()> {
    let mut x = uniform_data(n, 1);
    x[0] = 0.0;
    let dy = uniform_data(n, 2);
    let (xt, dyt) = (c.tensor("x", &x)?, c.tensor("dy", &dy)?);
    let (y, dx) = (
        c.tensor("y", &vec![7.0; n])?,
        c.tensor("dx", &vec![7.0; n])?,
    );
    let f = ops::relu_forward(c.gpu, &xt, &y)?;
    let b = ops::relu_backward(c.gpu, &xt, &dyt, &dx)?;
    c.run(&[&f, &b])?;
    let shape = format!("n={n}");
    let want = reference::relu_forward(&x);
    c.compare(
        "relu_forward",
        &shape,
        &y.read::<f32>(c.gpu)?,
        &want,
        0.0,
        0.0,
    );
    let want = reference::relu_backward(&x, &dy);
    c.compare(
        "relu_backward",
        &shape,
        &dx.read::<f32>(c.gpu)?,
        &want,
        0.0,
        0.0,
    );
    Ok(())
}

/// Softmax cross-entropy forward (probabilities, losses, the mean in history slot i % 4 of
/// 4, set as i % 4 + 4: modulo the length) and backward, in one pass. With B = 64 one label
/// names no class (its loss is the logsumexp alone, its one-hot row zero).
fn xent(c: &mut Checker, i: usize, b: usize, k: usize) -> Result<()> {
    let logits = logits_for(b * k, 10 + i as u64);
    let mut labels = labels_for(b, k);
    if b == 64 {
        labels[5] = k as u32 + 3;
    }
    let lt = c.tensor("logits", &logits)?;
    let lab = GpuTensor::from_slice(c.gpu, "labels", &[b], &labels)?;
    let probs = c.tensor("probs", &vec![9.0; b * k])?;
    let losses = c.tensor("losses", &vec![9.0; b])?;
    let history = c.tensor("history", &[-1.0; 4])?;
    let dlogits = c.tensor("dlogits", &vec![5.0; b * k])?;
    let fwd = ops::SoftmaxXentForward::new(c.gpu, &lt, &lab, &probs, &losses, &history, b, k)?;
    let back = ops::softmax_xent_backward(c.gpu, &probs, &lab, &dlogits, b, k)?;
    let slot = i % 4;
    fwd.set_slot(c.gpu, slot as u32 + 4);
    let [rows, mean] = fwd.dispatches();
    c.run(&[rows, mean, &back])?;

    let shape = format!("B={b} C={k}");
    let read = |t: &GpuTensor| t.read::<f32>(c.gpu);
    let (want_p, want_l) = reference::softmax_xent_forward(&logits, &labels, b, k);
    let (got_p, got_l) = (read(&probs)?, read(&losses)?);
    let (got_h, got_d) = (read(&history)?, read(&dlogits)?);
    c.compare(
        "softmax_xent_forward probs",
        &shape,
        &got_p,
        &want_p,
        1e-6,
        1e-5,
    );
    c.compare(
        "softmax_xent_forward losses",
        &shape,
        &got_l,
        &want_l,
        2e-6,
        1e-5,
    );
    let mut want_h = vec![-1.0; 4];
    want_h[slot] = reference::xent_mean(&logits, &labels, b, k);
    c.compare("xent_mean history", &shape, &got_h, &want_h, 2e-6, 1e-5);
    let want_d = reference::softmax_xent_backward(&logits, &labels, b, k);
    let abs = 1e-6 / b as f32;
    c.compare("softmax_xent_backward", &shape, &got_d, &want_d, abs, 1e-5);
    Ok(())
}

/// The first index of each row's maximum, compared as numbers (exactly). The rows after the
/// first repeat their maximum once more, at a later index: ties go to the first.
fn argmax(c: &mut Checker, i: usize, b: usize, k: usize) -> Result<()> {
    let mut logits = logits_for(b * k, 50 + i as u64);
    for row in logits.chunks_mut(k).skip(1).filter(|_| k > 1) {
        let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let at = row.iter().position(|&v| v == best).unwrap_or(0);
        row[(at + 1..k).next().unwrap_or(0)] = best;
    }
    let lt = c.tensor("logits", &logits)?;
    let pred = GpuTensor::from_slice(c.gpu, "pred", &[b], &vec![99u32; b])?;
    let d = ops::argmax(c.gpu, &lt, &pred, b, k)?;
    c.run(&[&d])?;
    let as_f32 = |v: Vec<u32>| v.into_iter().map(|p| p as f32).collect::<Vec<f32>>();
    let got = as_f32(pred.read::<u32>(c.gpu)?);
    let want = as_f32(reference::argmax(&logits, b, k));
    c.compare("argmax", format!("B={b} C={k}"), &got, &want, 0.0, 0.0);
    Ok(())
}

/// A two-layer MLP and its batch: x [B, K], w1 [K, H], b1 [H], w2 [H, C], b2 [C], labels [B].
struct TwoLayerNet {
    dims: (usize, usize, usize, usize),
    x: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    labels: Vec<u32>,
}

impl TwoLayerNet {
    /// The tests' weights: w1 within 0.3, w2 within 0.5 (the logits stay moderate).
    fn new(b: usize, k: usize, h: usize, c: usize) -> TwoLayerNet {
        let scaled = |n, seed, s: f32| uniform_data(n, seed).iter().map(|v| v * s).collect();
        TwoLayerNet {
            dims: (b, k, h, c),
            x: uniform_data(b * k, 60),
            w1: scaled(k * h, 61, 0.3),
            b1: uniform_data(h, 62),
            w2: scaled(h * c, 63, 0.5),
            b2: uniform_data(c, 64),
            labels: labels_for(b, c),
        }
    }

    fn shape(&self) -> String {
        let (b, k, h, c) = self.dims;
        format!("B={b} {k}→{h}→{c}")
    }

    /// The reference chain: (logits, mean loss, [dw2, db2, dw1, db1]).
    fn reference(&self) -> (Vec<f32>, f32, [Vec<f32>; 4]) {
        let (b, k, h, c) = self.dims;
        let rh = mref::matmul_forward(&self.x, &self.w1, Some(&self.b1), b, k, h);
        let ra = reference::relu_forward(&rh);
        let rz = mref::matmul_forward(&ra, &self.w2, Some(&self.b2), b, h, c);
        let loss = reference::xent_mean(&rz, &self.labels, b, c);
        let rdz = reference::softmax_xent_backward(&rz, &self.labels, b, c);
        let (rda, rdw2, rdb2) = mref::matmul_backward(&ra, &self.w2, &rdz, b, h, c);
        let rdh = reference::relu_backward(&rh, &rda);
        let (_, rdw1, rdb1) = mref::matmul_backward(&self.x, &self.w1, &rdh, b, k, h);
        (rz, loss, [rdw2, rdb2, rdw1, rdb1])
    }
}

/// The MLP's buffers on the GPU: inputs and weights, activations, gradients.
struct TwoLayerTensors {
    x: GpuTensor,
    w1: GpuTensor,
    b1: GpuTensor,
    w2: GpuTensor,
    b2: GpuTensor,
    labels: GpuTensor,
    /// hidden, activation, logits, probs, losses, history (1 slot).
    fwd: [GpuTensor; 6],
    /// dlogits, dactivation, dhidden, dx.
    back: [GpuTensor; 4],
    /// dw2, db2, dw1, db1 (the order of [`TwoLayerNet::reference`]).
    grads: [GpuTensor; 4],
}

fn mlp_tensors(c: &Checker, m: &TwoLayerNet) -> Result<TwoLayerTensors> {
    let (b, k, h, n) = m.dims;
    let z = |name: &str, len: usize| GpuTensor::zeros(c.gpu, name, &[len]);
    Ok(TwoLayerTensors {
        x: c.tensor("x", &m.x)?,
        w1: c.tensor("w1", &m.w1)?,
        b1: c.tensor("b1", &m.b1)?,
        w2: c.tensor("w2", &m.w2)?,
        b2: c.tensor("b2", &m.b2)?,
        labels: GpuTensor::from_slice(c.gpu, "labels", &[b], &m.labels)?,
        fwd: [
            z("h", b * h)?,
            z("a", b * h)?,
            z("z", b * n)?,
            z("probs", b * n)?,
            z("losses", b)?,
            z("history", 1)?,
        ],
        back: [
            z("dz", b * n)?,
            z("da", b * h)?,
            z("dh", b * h)?,
            z("dx", b * k)?,
        ],
        grads: [
            z("dw2", h * n)?,
            z("db2", n)?,
            z("dw1", k * h)?,
            z("db1", h)?,
        ],
    })
}

/// The step's dispatches in order: forward, cross-entropy, backward.
fn mlp_dispatches(c: &Checker, m: &TwoLayerNet, t: &TwoLayerTensors) -> Result<Vec<Dispatch>> {
    let (gpu, (b, k, h, n)) = (c.gpu, m.dims);
    let [hid, act, logits, probs, losses, history] = &t.fwd;
    let [dz, da, dh, dx] = &t.back;
    let [dw2, db2, dw1, db1] = &t.grads;
    let xent = ops::SoftmaxXentForward::new(gpu, logits, &t.labels, probs, losses, history, b, n)?;
    let mut ds = vec![
        matmul::matmul_forward(gpu, &t.x, &t.w1, Some(&t.b1), hid, b, k, h)?,
        ops::relu_forward(gpu, hid, act)?,
        matmul::matmul_forward(gpu, act, &t.w2, Some(&t.b2), logits, b, h, n)?,
        xent.rows,
        xent.mean,
        ops::softmax_xent_backward(gpu, probs, &t.labels, dz, b, n)?,
    ];
    ds.extend(matmul::matmul_backward(
        gpu, act, &t.w2, dz, da, dw2, db2, b, h, n, false,
    )?);
    ds.push(ops::relu_backward(gpu, hid, da, dh)?);
    ds.extend(matmul::matmul_backward(
        gpu, &t.x, &t.w1, dh, dx, dw1, db1, b, k, h, false,
    )?);
    Ok(ds)
}

/// One MLP step in one pass against the reference chain: the logits (within the two dense
/// layers' GEMM tolerance), the mean loss and the gradients (the tests' tolerances).
fn mlp_step(c: &mut Checker, m: &TwoLayerNet) -> Result<()> {
    let t = mlp_tensors(c, m)?;
    let ds = mlp_dispatches(c, m, &t)?;
    c.run(&ds.iter().collect::<Vec<_>>())?;
    let (want_z, want_loss, want_grads) = m.reference();
    let (shape, (_, k, h, _)) = (m.shape(), m.dims);
    let read = |t: &GpuTensor| t.read::<f32>(c.gpu);
    let (logits, loss) = (read(&t.fwd[2])?, read(&t.fwd[5])?);
    let grads = t.grads.iter().map(read).collect::<Result<Vec<_>>>()?;
    let (abs, rel) = crate::ops::tune::tolerance(k + h);
    c.compare("mlp logits", &shape, &logits, &want_z, abs, rel);
    c.compare("mlp loss", &shape, &loss, &[want_loss], 1e-6, 1e-5);
    for (name, (got, want)) in ["dw2", "db2", "dw1", "db1"]
        .iter()
        .zip(grads.iter().zip(&want_grads))
    {
        c.compare(&format!("mlp {name}"), &shape, got, want, 1e-6, 1e-4);
    }
    Ok(())
}
