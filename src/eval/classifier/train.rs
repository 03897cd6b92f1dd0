//! Training the classifier: mini-batches of the training digits through [`ClassifierNet`]'s
//! forward and backward and Adam, one command buffer per batch, nothing read back per step.

use super::net::{ClassifierNet, HISTORY};
use super::{init_params, to_input, Classifier, ClassifierMeta, DIMS, FEATURES};
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::eval::fid;
use crate::gpu::{Gpu, GpuTensor};
use crate::ops::{adam, classifier as ops};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// Training settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClassifierSettings {
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
pub const DEFAULT_SETTINGS: ClassifierSettings = ClassifierSettings {
    epochs: 8,
    batch: 128,
    lr: 1e-3,
    seed: 0,
    train_subset: None,
    decay_epochs: 2,
};

impl Default for ClassifierSettings {
    fn default() -> Self {
        DEFAULT_SETTINGS
    }
}

/// Trains the classifier on `mnist`'s training digits and measures its test accuracy.
pub fn train(gpu: &Gpu, mnist: &Mnist, s: &ClassifierSettings) -> Result<Classifier> {
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
    let mlp = ClassifierNet::new(gpu, &params, Some(&grads), s.batch)?;
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
fn training_digits(mnist: &Mnist, s: &ClassifierSettings) -> Result<usize> {
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
    mlp: &ClassifierNet,
    opts: &[adam::Adam; 2],
    mnist: &Mnist,
    n: usize,
    s: &ClassifierSettings,
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
