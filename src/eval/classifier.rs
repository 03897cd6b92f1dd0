//! The MNIST classifier of the `eval` command: an MLP 784 → 256 → 128 → 10 with ReLU, trained
//! on the GPU with this program's kernels (dense layers from `ops::matmul`, ReLU and softmax
//! cross-entropy from `ops::classifier`, Adam from `ops::adam`). Its penultimate layer (the
//! 128 ReLU outputs) is the feature space of the FID.
//!
//! Training: one command buffer per mini-batch (forward, loss, backward, Adam); per step the
//! host writes the batch's pixels and labels and Adam's step uniform, and reads nothing back
//! (the losses go to an on-GPU history ring). Pixels are standardised ([`to_input`]). Adam (Keras
//! defaults) at lr for all but the last `decay_epochs` epochs, which run at lr / 10.
//!
//! The weights are cached in a safetensors file (tensors `w1 b1 w2 b2 w3 b3`) with the test
//! accuracy and the training settings in its metadata.

use super::fid;
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::ops::{adam, classifier as ops, matmul};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Where `eval` and `train --eval-every` cache the classifier unless told otherwise.
pub const DEFAULT_PATH: &str = "data/classifier.safetensors";

/// Layer widths: input, two hidden layers, classes.
pub const DIMS: [usize; 4] = [784, 256, 128, 10];
/// Width of the feature layer (the second hidden layer, after its ReLU).
pub const FEATURES: usize = DIMS[2];
/// Classes.
pub const CLASSES: usize = DIMS[3];
/// Marks classifier files and their version.
pub const FORMAT: &str = "wgpu-diffusion-classifier/2";
/// Slots of the on-GPU loss history ring.
const HISTORY: usize = 1024;
/// Names of the cached FID reference statistics in the classifier file.
const STATS_MEAN: &str = "fid.test_mean";
const STATS_COV: &str = "fid.test_cov";
/// Rows per inference batch.
const INFER_BATCH: usize = 1000;

/// Name, offset and shape of each tensor in the flat parameter buffer.
pub fn layout() -> Vec<(&'static str, usize, Vec<usize>)> {
    let mut v = Vec::new();
    let mut off = 0;
    let names = [("w1", "b1"), ("w2", "b2"), ("w3", "b3")];
    for (l, (w, b)) in names.iter().enumerate() {
        let (k, n) = (DIMS[l], DIMS[l + 1]);
        v.push((*w, off, vec![k, n]));
        off += k * n;
        v.push((*b, off, vec![n]));
        off += n;
    }
    v
}

/// Total parameters (235,146).
pub fn param_count() -> usize {
    (0..3).map(|l| DIMS[l] * DIMS[l + 1] + DIMS[l + 1]).sum()
}

/// Mean of the MNIST training pixels scaled to [0, 1].
pub const PIXEL_MEAN: f32 = 0.1307;
/// Their standard deviation.
pub const PIXEL_STD: f32 = 0.3081;

/// The classifier's input: each pixel scaled to [0, 1] and standardised with the training set's
/// mean and deviation (the usual MNIST normalisation; centred inputs train faster than the
/// diffusion model's p/256 − 0.5, whose background sits at −0.5).
pub fn to_input(pixels: &[u8]) -> Vec<f32> {
    pixels
        .iter()
        .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD)
        .collect()
}

/// Glorot-uniform weights, zero biases.
pub fn init_params(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut p = vec![0.0f32; param_count()];
    for (name, off, shape) in layout() {
        if name.starts_with('w') {
            let lim = (6.0 / (shape[0] + shape[1]) as f64).sqrt() as f32;
            for v in &mut p[off..off + shape[0] * shape[1]] {
                *v = rng.random_range(-lim..lim);
            }
        }
    }
    p
}

/// The MLP on the GPU for a fixed batch: its activations and the prepared dispatches of the
/// forward pass (to probabilities) and, with gradients, of the backward pass.
pub struct Mlp {
    pub batch: usize,
    /// Input [B, 784].
    pub x: GpuTensor,
    /// Labels [B] (u32; 10 = none, for inference).
    pub labels: GpuTensor,
    /// Features [B, 128] (second hidden layer after ReLU).
    pub features: GpuTensor,
    /// Softmax probabilities [B, 10].
    pub probs: GpuTensor,
    /// Mean loss of each step, a ring of `HISTORY` slots.
    pub history: GpuTensor,
    xent: ops::SoftmaxXentForward,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    _keep: Vec<GpuTensor>,
}

/// Parameter `i` of [`layout`] as a view of the flat buffer `t` (gradients: `prefix` "d").
fn param_view(t: &GpuTensor, i: usize, prefix: &str) -> GpuTensor {
    let (name, off, shape) = &layout()[i];
    t.view(&format!("{prefix}{name}"), *off, shape)
}

impl Mlp {
    /// Buffers and dispatches for `batch` rows with weights `params` (flat, in [`layout`]);
    /// with `grads` (same layout) the backward pass is built too.
    pub fn new(
        gpu: &Gpu,
        params: &GpuTensor,
        grads: Option<&GpuTensor>,
        batch: usize,
    ) -> Result<Mlp> {
        let z = |name: &str, shape: &[usize]| GpuTensor::zeros(gpu, name, shape);
        let [d0, d1, d2, d3] = DIMS;
        let x = z("clf.x", &[batch, d0])?;
        let labels = GpuTensor::from_slice(gpu, "clf.labels", &[batch], &vec![10u32; batch])?;
        // Layer i maps acts[i] [B, DIMS[i]] to pres[i] [B, DIMS[i + 1]]; ReLU of pres[i] is
        // acts[i + 1] (the features after the second); the last pre is the logits.
        let acts = [
            x.clone(),
            z("clf.h1", &[batch, d1])?,
            z("clf.h2", &[batch, d2])?,
        ];
        let pres = [
            z("clf.h1pre", &[batch, d1])?,
            z("clf.h2pre", &[batch, d2])?,
            z("clf.logits", &[batch, d3])?,
        ];
        let probs = z("clf.probs", &[batch, d3])?;
        let losses = z("clf.losses", &[batch])?;
        let history = z("clf.history", &[HISTORY])?;
        let mut forward = Vec::new();
        for i in 0..3 {
            let (w, b) = (
                param_view(params, 2 * i, ""),
                param_view(params, 2 * i + 1, ""),
            );
            let (k, n) = (DIMS[i], DIMS[i + 1]);
            forward.push(matmul::matmul_forward(
                gpu,
                &acts[i],
                &w,
                Some(&b),
                &pres[i],
                batch,
                k,
                n,
            )?);
            if i < 2 {
                forward.push(ops::relu_forward(gpu, &pres[i], &acts[i + 1])?);
            }
        }
        let xent = ops::SoftmaxXentForward::new(
            gpu, &pres[2], &labels, &probs, &losses, &history, batch, d3,
        )?;
        let mut keep = vec![losses];
        let backward = match grads {
            Some(grads) => {
                Self::backward(gpu, params, grads, &acts, &pres, &probs, &labels, &mut keep)?
            }
            None => Vec::new(),
        };
        let features = acts[2].clone();
        keep.extend(acts);
        keep.extend(pres);
        Ok(Mlp {
            batch,
            x,
            labels,
            features,
            probs,
            history,
            xent,
            forward,
            backward,
            _keep: keep,
        })
    }

    /// The backward pass from the cross-entropy to the first layer's weights (the input
    /// gradient is computed, as the op does, and not used); its buffers go into `keep`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        gpu: &Gpu,
        params: &GpuTensor,
        grads: &GpuTensor,
        acts: &[GpuTensor; 3],
        pres: &[GpuTensor; 3],
        probs: &GpuTensor,
        labels: &GpuTensor,
        keep: &mut Vec<GpuTensor>,
    ) -> Result<Vec<Dispatch>> {
        let batch = acts[0].shape[0];
        let z = |name: &str, width: usize| GpuTensor::zeros(gpu, name, &[batch, width]);
        let [d0, d1, d2, d3] = DIMS;
        // d_acts[i], d_pres[i]: the gradients of acts[i], pres[i].
        let d_acts = [z("clf.dx", d0)?, z("clf.dh1", d1)?, z("clf.dh2", d2)?];
        let d_pres = [
            z("clf.dh1pre", d1)?,
            z("clf.dh2pre", d2)?,
            z("clf.dlogits", d3)?,
        ];
        let mut backward = vec![ops::softmax_xent_backward(
            gpu, probs, labels, &d_pres[2], batch, d3,
        )?];
        for i in (0..3).rev() {
            if i < 2 {
                backward.push(ops::relu_backward(
                    gpu,
                    &pres[i],
                    &d_acts[i + 1],
                    &d_pres[i],
                )?);
            }
            let w = param_view(params, 2 * i, "");
            let (dw, db) = (
                param_view(grads, 2 * i, "d"),
                param_view(grads, 2 * i + 1, "d"),
            );
            let (k, n) = (DIMS[i], DIMS[i + 1]);
            backward.extend(matmul::matmul_backward(
                gpu, &acts[i], &w, &d_pres[i], &d_acts[i], &dw, &db, batch, k, n, false,
            )?);
        }
        keep.extend(d_acts);
        keep.extend(d_pres);
        Ok(backward)
    }

    pub fn set_slot(&self, gpu: &Gpu, slot: u32) {
        self.xent.set_slot(gpu, slot);
    }

    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.forward {
            d.record(pass);
        }
        self.xent.rows.record(pass);
    }

    /// The mean loss into the history, then the gradients (needs `grads` at construction).
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.xent.mean.record(pass);
        for d in &self.backward {
            d.record(pass);
        }
    }
}

/// Training settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainSettings {
    pub epochs: u32,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// Train on the first N training digits only.
    pub train_subset: Option<usize>,
    /// The last this many epochs run at lr / 10 (Adam's moments carry over).
    #[serde(default)]
    pub decay_epochs: u32,
}

/// The settings `eval` and `train --eval-every` train the classifier with unless told
/// otherwise (the `--classifier-*` flags' defaults).
pub const DEFAULT_SETTINGS: TrainSettings = TrainSettings {
    epochs: 8,
    batch: 128,
    lr: 1e-3,
    seed: 0,
    train_subset: None,
    decay_epochs: 2,
};

impl Default for TrainSettings {
    fn default() -> Self {
        DEFAULT_SETTINGS
    }
}

/// A trained classifier: flat weights (in [`layout`]) and what is known about them.
#[derive(Clone, Debug)]
pub struct Classifier {
    pub params: Vec<f32>,
    pub meta: ClassifierMeta,
    /// The FID's reference: mean and covariance of the 10,000 test digits' features, computed
    /// once after training and cached in the file (tensors `fid.test_mean`, `fid.test_cov`, f64).
    pub test_stats: fid::Stats,
}

/// The metadata stored with the weights.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClassifierMeta {
    pub test_accuracy: f64,
    pub settings: TrainSettings,
    pub train_images: usize,
    pub train_seconds: f64,
    /// Mean training loss over the last logged steps (up to 100).
    pub final_train_loss: f64,
    /// Test digits behind the accuracy and the cached FID statistics.
    pub test_images: usize,
    pub adapter: String,
}

/// Trains the classifier on `mnist`'s training digits and measures its test accuracy.
pub fn train(gpu: &Gpu, mnist: &Mnist, s: &TrainSettings) -> Result<Classifier> {
    let n = training_digits(mnist, s)?;
    let start = Instant::now();
    let init = init_params(s.seed);
    let np = init.len();
    let params = GpuTensor::from_slice(gpu, "clf.params", &[np], &init)?;
    let grads = GpuTensor::zeros(gpu, "clf.grads", &[np])?;
    let m = GpuTensor::zeros(gpu, "clf.adam-m", &[np])?;
    let v = GpuTensor::zeros(gpu, "clf.adam-v", &[np])?;
    let adam = |lr: f32| adam::Adam::new(gpu, adam::AdamConfig::keras(lr), &params, &grads, &m, &v);
    let opts = [adam(s.lr)?, adam(s.lr / 10.0)?];
    let mlp = Mlp::new(gpu, &params, Some(&grads), s.batch)?;
    let steps = run_epochs(gpu, &mlp, &opts, mnist, n, s)?;
    let final_train_loss = final_loss(&mlp.history.read(gpu)?, steps)?;
    let mut c = Classifier {
        params: params.read(gpu)?,
        test_stats: fid::Stats {
            mean: vec![],
            cov: vec![],
            n: 0,
        },
        meta: ClassifierMeta {
            test_accuracy: 0.0,
            settings: s.clone(),
            train_images: n,
            train_seconds: start.elapsed().as_secs_f64(),
            final_train_loss,
            test_images: mnist.test.count,
            adapter: gpu.describe(),
        },
    };
    let out = c.infer(gpu, &mnist.test.pixels)?;
    let labels: Vec<u32> = mnist.test_labels.iter().map(|&l| l as u32).collect();
    c.meta.test_accuracy = ops::accuracy(&out.predictions(), &labels);
    c.test_stats = fid::stats(&out.features, FEATURES);
    Ok(c)
}

/// The training digits `s` asks for, once its settings are checked.
fn training_digits(mnist: &Mnist, s: &TrainSettings) -> Result<usize> {
    let total = mnist.train.count;
    let n = s.train_subset.unwrap_or(total).min(total);
    if s.batch == 0 || n < s.batch || s.epochs == 0 || !(s.lr > 0.0 && s.lr.is_finite()) {
        return Err(Error::config(format!(
            "classifier training needs epochs >= 1, a positive lr and 1 <= batch <= training digits, got {s:?} with {n} digits"
        )));
    }
    Ok(n)
}

/// Every epoch over the first `n` training digits in a shuffled order, with `opts[0]` and, in
/// the last `decay_epochs`, `opts[1]`; returns the steps made.
fn run_epochs(
    gpu: &Gpu,
    mlp: &Mlp,
    opts: &[adam::Adam; 2],
    mnist: &Mnist,
    n: usize,
    s: &TrainSettings,
) -> Result<u64> {
    let px = DIMS[0];
    let inputs = to_input(&mnist.train.pixels[..n * px]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed ^ 0xC1A5_5EED);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut xb, mut lb) = (vec![0.0f32; s.batch * px], vec![0u32; s.batch]);
    let mut step: u64 = 0;
    for epoch in 0..s.epochs {
        order.shuffle(&mut rng);
        let opt = &opts[(epoch + s.decay_epochs >= s.epochs) as usize];
        for batch in order.chunks_exact(s.batch) {
            for (r, &i) in batch.iter().enumerate() {
                xb[r * px..(r + 1) * px].copy_from_slice(&inputs[i * px..(i + 1) * px]);
                lb[r] = mnist.train_labels[i] as u32;
            }
            mlp.x.write(gpu, &xb);
            mlp.labels.write(gpu, &lb);
            step += 1;
            opt.set_step(gpu, step);
            mlp.set_slot(gpu, (step - 1) as u32);
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                mlp.record_forward(&mut pass);
                mlp.record_backward(&mut pass);
                opt.dispatch.record(&mut pass);
            }
            gpu.queue.submit([enc.finish()]);
            // Keep the queue (and the staging memory of the writes) bounded.
            if step.is_multiple_of(16) {
                gpu.wait()?;
            }
        }
    }
    gpu.wait()?;
    Ok(step)
}

/// The mean training loss of the last (up to 100) of `steps` steps, from the loss ring.
fn final_loss(history: &[f32], steps: u64) -> Result<f64> {
    let steps = steps as usize;
    let last = steps.min(100);
    let loss = (0..last)
        .map(|i| history[(steps - 1 - i) % HISTORY] as f64)
        .sum::<f64>()
        / last.max(1) as f64;
    if !loss.is_finite() {
        return Err(Error::gpu(format!(
            "classifier training diverged (loss {loss})"
        )));
    }
    Ok(loss)
}

/// What the classifier says about a set of digits.
#[derive(Clone, Debug)]
pub struct Inference {
    pub n: usize,
    /// [n, 128].
    pub features: Vec<f32>,
    /// [n, 10].
    pub probs: Vec<f32>,
}

impl Inference {
    /// The predicted label of each digit (the first maximum).
    pub fn predictions(&self) -> Vec<u32> {
        self.probs
            .chunks_exact(CLASSES)
            .map(|r| {
                let mut best = 0;
                for (i, &p) in r.iter().enumerate() {
                    if p > r[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect()
    }
}

impl Classifier {
    /// Features and probabilities of `pixels` (whole 28x28 digits, bytes), on the GPU in
    /// batches of 1,000 (one readback per batch).
    pub fn infer(&self, gpu: &Gpu, pixels: &[u8]) -> Result<Inference> {
        let px = DIMS[0];
        if !pixels.len().is_multiple_of(px) {
            return Err(Error::data(format!(
                "{} pixel bytes are not whole 28x28 digits",
                pixels.len()
            )));
        }
        let n = pixels.len() / px;
        let batch = INFER_BATCH.min(n.max(1));
        let params = GpuTensor::from_slice(gpu, "clf.params", &[self.params.len()], &self.params)?;
        let mlp = Mlp::new(gpu, &params, None, batch)?;
        let mut features = Vec::with_capacity(n * FEATURES);
        let mut probs = Vec::with_capacity(n * CLASSES);
        let mut first = 0;
        while first < n {
            let take = (n - first).min(batch);
            let mut x = to_input(&pixels[first * px..(first + take) * px]);
            x.resize(batch * px, 0.0);
            mlp.x.write(gpu, &x);
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                mlp.record_forward(&mut pass);
            }
            gpu.queue.submit([enc.finish()]);
            let f: Vec<f32> = mlp.features.read(gpu)?;
            let p: Vec<f32> = mlp.probs.read(gpu)?;
            features.extend_from_slice(&f[..take * FEATURES]);
            probs.extend_from_slice(&p[..take * CLASSES]);
            first += take;
        }
        Ok(Inference { n, features, probs })
    }

    /// Writes the weights and metadata to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut views = Vec::new();
        for (name, off, shape) in layout() {
            let len: usize = shape.iter().product();
            let bytes: &[u8] = bytemuck::cast_slice(&self.params[off..off + len]);
            let view = TensorView::new(Dtype::F32, shape, bytes)
                .map_err(|e| Error::io(format!("classifier tensor {name}: {e}")))?;
            views.push((name.to_string(), view));
        }
        let d = self.test_stats.dim();
        let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (mean_bytes, cov_bytes) = (
            f64_bytes(&self.test_stats.mean),
            f64_bytes(&self.test_stats.cov),
        );
        for (name, shape, bytes) in [
            (STATS_MEAN, vec![d], &mean_bytes),
            (STATS_COV, vec![d, d], &cov_bytes),
        ] {
            let view = TensorView::new(Dtype::F64, shape, bytes)
                .map_err(|e| Error::io(format!("classifier tensor {name}: {e}")))?;
            views.push((name.to_string(), view));
        }
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| Error::io(format!("classifier metadata: {e}")))?;
        let info = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("meta".to_string(), meta),
        ]);
        let bytes = safetensors::serialize(views, Some(info))
            .map_err(|e| Error::io(format!("cannot serialise {}: {e}", path.display())))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", dir.display())))?;
        }
        crate::checkpoint::write_atomic(path, &bytes)
    }

    /// Reads a file written by [`Classifier::save`]; any problem is a checkpoint error (exit 2).
    pub fn load(path: &Path) -> Result<Classifier> {
        Classifier::from_bytes(path, &read_file(path)?)
    }

    /// Parses the bytes of a classifier file (`path` names it in errors).
    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Classifier> {
        let bad = |m: String| {
            Error::checkpoint(format!(
                "classifier {} is corrupt or not a classifier file ({m}); delete it or pass --retrain",
                path.display()
            ))
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let info = md.metadata().clone().unwrap_or_default();
        if info.get("format").map(|s| s.as_str()) != Some(FORMAT) {
            return Err(bad(format!("format is not {FORMAT}")));
        }
        let meta: ClassifierMeta =
            serde_json::from_str(info.get("meta").ok_or_else(|| bad("no metadata".into()))?)
                .map_err(|e| bad(e.to_string()))?;
        let mut params = vec![0.0f32; param_count()];
        for (name, off, shape) in layout() {
            let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let len: usize = shape.iter().product();
            for (dst, c) in params[off..off + len]
                .iter_mut()
                .zip(t.data().chunks_exact(4))
            {
                *dst = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        if params.iter().any(|v| !v.is_finite()) {
            return Err(bad("non-finite weights".into()));
        }
        let read_f64 = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            if t.dtype() != Dtype::F64 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F64 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let v: Vec<f64> = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("non-finite values in {name}")));
            }
            Ok(v)
        };
        let test_stats = fid::Stats {
            mean: read_f64(STATS_MEAN, &[FEATURES])?,
            cov: read_f64(STATS_COV, &[FEATURES, FEATURES])?,
            n: meta.test_images,
        };
        Ok(Classifier {
            params,
            meta,
            test_stats,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::checkpoint(format!("cannot read classifier {}: {e}", path.display())))
}

/// Whether `bytes` are a classifier file of an older version of this program (its format
/// names another version): the cache is then stale and is trained again rather than refused.
fn is_stale(bytes: &[u8]) -> bool {
    let Ok((_, md)) = SafeTensors::read_metadata(bytes) else {
        return false;
    };
    let format = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned())
        .unwrap_or_default();
    format.starts_with("wgpu-diffusion-classifier/") && format != FORMAT
}

/// The cached classifier at `path`, read once, before any long work starts: `None` when the
/// file is absent or stale (of an older format: it will be trained again), an error when it
/// is anything else that does not load (corrupt, not a classifier).
pub fn read_cached(path: &Path) -> Result<Option<Classifier>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_file(path)?;
    if is_stale(&bytes) {
        return Ok(None);
    }
    Classifier::from_bytes(path, &bytes).map(Some)
}

/// `cached` (from [`read_cached`]) or, when there is none, a classifier trained now with
/// `settings` and cached at `path`. The flag says whether it was trained now.
pub fn cached_or_train(
    gpu: &Gpu,
    path: &Path,
    cached: Option<Classifier>,
    mnist: &Mnist,
    settings: &TrainSettings,
) -> Result<(Classifier, bool)> {
    if let Some(c) = cached {
        return Ok((c, false));
    }
    let c = train(gpu, mnist, settings)?;
    c.save(path)?;
    Ok((c, true))
}

/// The classifier flags of `eval` and `train --eval-every`: where it is cached and how it is
/// trained when it is not.
#[derive(clap::Args, Debug, Clone)]
pub struct ClassifierArgs {
    /// The cached classifier (trained and written here when absent).
    #[arg(long = "classifier", value_name = "PATH", default_value = DEFAULT_PATH)]
    pub path: std::path::PathBuf,
    /// Train the classifier again even if the cached file exists.
    #[arg(long)]
    pub retrain: bool,
    /// Classifier training epochs (when it is trained).
    #[arg(long, default_value_t = DEFAULT_SETTINGS.epochs)]
    pub classifier_epochs: u32,
    /// Classifier training batch.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.batch)]
    pub classifier_batch: usize,
    /// Classifier Adam learning rate.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.lr)]
    pub classifier_lr: f32,
    /// Of those, the last epochs that run at a tenth of the learning rate.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.decay_epochs)]
    pub classifier_decay_epochs: u32,
}

impl Default for ClassifierArgs {
    /// The flags' defaults.
    fn default() -> Self {
        ClassifierArgs {
            path: DEFAULT_PATH.into(),
            retrain: false,
            classifier_epochs: DEFAULT_SETTINGS.epochs,
            classifier_batch: DEFAULT_SETTINGS.batch,
            classifier_lr: DEFAULT_SETTINGS.lr,
            classifier_decay_epochs: DEFAULT_SETTINGS.decay_epochs,
        }
    }
}

impl ClassifierArgs {
    /// The cached classifier ([`read_cached`]; none with --retrain): call it before any long
    /// work, so that a broken cache fails first.
    pub fn read_cached(&self) -> Result<Option<Classifier>> {
        if self.retrain {
            return Ok(None);
        }
        read_cached(&self.path)
    }

    /// The settings a classifier is trained with when there is no cached one.
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            epochs: self.classifier_epochs,
            batch: self.classifier_batch,
            lr: self.classifier_lr,
            decay_epochs: self.classifier_decay_epochs,
            ..DEFAULT_SETTINGS
        }
    }

    /// `cached` (from [`ClassifierArgs::read_cached`]) or one trained now with these flags and
    /// cached at --classifier; the flag says whether it was trained now.
    pub fn cached_or_train(
        &self,
        gpu: &Gpu,
        cached: Option<Classifier>,
        mnist: &Mnist,
    ) -> Result<(Classifier, bool)> {
        cached_or_train(gpu, &self.path, cached, mnist, &self.settings())
    }
}

#[cfg(test)]
mod tests {
    use super::ClassifierArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        classifier: ClassifierArgs,
    }

    /// `ClassifierArgs::default()` (what code that builds TrainArgs by hand gets) is what the
    /// flags give when none is passed.
    #[test]
    fn flag_defaults_are_the_default() {
        let parsed = Flags::parse_from(["x"]).classifier;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ClassifierArgs::default())
        );
        let given = Flags::parse_from(["x", "--classifier", "c.st", "--retrain"]).classifier;
        assert_eq!(given.path, std::path::PathBuf::from("c.st"));
        assert!(given.retrain && given.read_cached().unwrap().is_none());
    }
}
