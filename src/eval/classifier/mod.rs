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
//!
//! The rooms: the model and what it says ([`Classifier`], here), the network on the GPU
//! ([`net`]), its training ([`train`]), its file ([`file`]) and its flags ([`args`]).

mod args;
mod file;
mod net;
mod train;

pub use args::ClassifierArgs;
pub use file::{cached_or_train, read_cached, FORMAT};
pub use net::ClassifierNet;
pub use train::{train, ClassifierSettings, DEFAULT_SETTINGS};

use super::fid;
use crate::config::{CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use rand::{Rng, SeedableRng};

/// Where `eval` and `train --eval-every` cache the classifier unless told otherwise.
pub const DEFAULT_PATH: &str = "data/classifier.safetensors";

/// Layer widths: input (a digit's pixels), two hidden layers, one output per digit class.
pub const DIMS: [usize; 4] = [PIXELS as usize, 256, 128, CLASSES as usize];
/// Width of the feature layer (the second hidden layer, after its ReLU).
pub const FEATURES: usize = DIMS[2];
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
pub const INPUT_MEAN: f32 = 0.1307;
/// Their standard deviation.
pub const INPUT_STD: f32 = 0.3081;

/// The classifier's input: each pixel scaled to [0, 1] and standardised with the training set's
/// mean and deviation (the usual MNIST normalisation; centred inputs train faster than the
/// diffusion model's p/256 − 0.5, whose background sits at −0.5).
pub fn to_input(pixels: &[u8]) -> Vec<f32> {
    pixels
        .iter()
        .map(|&p| (p as f32 / 255.0 - INPUT_MEAN) / INPUT_STD)
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
    pub settings: ClassifierSettings,
    pub train_images: usize,
    pub train_seconds: f64,
    /// Mean training loss over the last logged steps (up to 100).
    pub final_train_loss: f64,
    /// Test digits behind the accuracy and the cached FID statistics.
    pub test_images: usize,
    pub adapter: String,
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
            .chunks_exact(DIMS[3])
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
        let mlp = ClassifierNet::new(gpu, &params, None, batch)?;
        let mut features = Vec::with_capacity(n * FEATURES);
        let mut probs = Vec::with_capacity(n * DIMS[3]);
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
            probs.extend_from_slice(&p[..take * DIMS[3]]);
            first += take;
        }
        Ok(Inference { n, features, probs })
    }
}
