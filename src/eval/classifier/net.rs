//! The classifier's network on the GPU for a fixed batch: activations, the forward pass to
//! probabilities and, with gradients, the backward pass, as prepared dispatches.

use super::{layout, DIMS};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::ops::{classifier as ops, matmul};

/// Slots of the on-GPU loss history ring.
pub(super) const HISTORY: usize = 1024;

/// The MLP on the GPU for a fixed batch: its activations and the prepared dispatches of the
/// forward pass (to probabilities) and, with gradients, of the backward pass.
pub struct ClassifierNet {
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

impl ClassifierNet {
    /// Buffers and dispatches for `batch` rows with weights `params` (flat, in [`layout`]);
    /// with `grads` (same layout) the backward pass is built too.
    pub fn new(
        gpu: &Gpu,
        params: &GpuTensor,
        grads: Option<&GpuTensor>,
        batch: usize,
    ) -> Result<ClassifierNet> {
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
        Ok(ClassifierNet {
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
