//! The transformer on the GPU for one batch size: activation and gradient buffers, and the
//! prepared dispatches of its forward pass, loss and backward pass (SPEC §3).
//!
//! Forward, per sample (T tokens of width D; M = B*T rows):
//!   x_start = tokens + pos                                  add_pos
//!   x_0 = x_start; for each layer l:
//!     qkv_l = x_l W_qkv + b_qkv                             matmul   [M, 3HK]
//!     o_l   = softmax(Q K^T / sqrt(K)) V per head           attention [M, HK] (+ probs)
//!     y_l   = o_l W_o + b_o + x_start                       matmul + add
//!     with --mlp F (our addition; the seed has none):
//!       pre_l = y_l W_1 + b_1, h_l = gelu(pre_l)            matmul, gelu  [M, F]
//!       x_l+1 = y_l + h_l W_2 + b_2                         matmul + add
//!     else x_l+1 = y_l
//!   output = x_L, or with --skip wiener|mixture E + q (x_L - A)  skip_forward
//!   loss = mean over the g^2 patch tokens of (output - target)^2  mse_forward -> history[slot]
//! Backward (gather kernels, no atomics): mse_backward (then skip_backward with a skip
//! term); per layer from the last: the
//! feed-forward block's matmul, gelu and matmul backward (its input gradient accumulated into
//! the layer's output gradient: the residual), the output projection's matmul backward,
//! attention backward, the QKV matmul backward; d x_start collects every layer's d y_l and
//! layer 0's input gradient; dpos = sum over the batch of d x_start. Weight gradients are written (not accumulated): each weight is used once.

use crate::config::ModelConfig;
use crate::config::Skip;
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::model::ParamLayout;
use crate::ops::{adam, attention, gelu, loss, matmul, skip};

/// Slots of the on-GPU loss history (the host reads it every `--log-every` steps).
pub const LOSS_HISTORY: usize = 4096;

struct Layer {
    x_in: GpuTensor,
    qkv: GpuTensor,
    probs: GpuTensor,
    o: GpuTensor,
    /// y = o W_o + b_o + x_start: the layer's output unless it has a feed-forward block.
    proj: GpuTensor,
    mlp: Option<Mlp>,
}

/// A layer's feed-forward block: pre [M, F], h = gelu(pre) [M, F], out = y + h W_2 + b_2.
struct Mlp {
    pre: GpuTensor,
    h: GpuTensor,
    out: GpuTensor,
}

impl Layer {
    /// The layer's output x_{l+1}.
    fn out(&self) -> &GpuTensor {
        self.mlp.as_ref().map_or(&self.proj, |f| &f.out)
    }
}

/// Forward (and optionally backward) of the model for a fixed batch size.
pub struct Network {
    pub cfg: ModelConfig,
    pub batch: usize,
    /// Input tokens [B, T, D]: the g^2 patches of the noisy image and the conditioning token.
    pub tokens: GpuTensor,
    /// Targets [B, g^2, D]: the patches of the noise that was added.
    pub target: GpuTensor,
    /// The model's output [B, T, D] (the first g^2 tokens are the predicted noise patches).
    pub output: GpuTensor,
    pub history: GpuTensor,
    x_start: GpuTensor,
    layers: Vec<Layer>,
    forward: Vec<Dispatch>,
    loss: loss::MseForward,
    backward: Vec<Dispatch>,
    _keep: Vec<GpuTensor>,
}

/// Errors (naming the limit and by how much it is exceeded) when the model's parameters or
/// the activations of a `batch` do not fit the adapter's storage-binding limits. Cheap: call
/// it before allocating anything.
pub fn check_fits(gpu: &Gpu, cfg: &ModelConfig, batch: usize) -> Result<()> {
    let g = &cfg.geometry;
    let (t, d, hk, h) = (
        g.tokens() as u64,
        g.dim() as u64,
        cfg.hk() as u64,
        cfg.heads as u64,
    );
    let m = batch as u64 * t;
    let layout_total = cfg.parameter_count() + 64 * (1 + 8 * cfg.layers as u64);
    for (label, elems) in [
        ("the model's parameters", layout_total),
        ("the feed-forward activations", m * cfg.mlp as u64),
        ("the QKV activations", m * 3 * hk),
        ("the attention probabilities", batch as u64 * h * t * t),
        ("the attention output", m * hk),
        ("the tokens", m * d),
    ] {
        gpu.check_binding_size(label, elems * 4)?;
    }
    Ok(())
}

/// Matmul FLOPs of one sample's forward pass: per layer the QKV projection, attention's two
/// products, the output projection and the feed-forward block.
pub fn forward_flops_per_sample(cfg: &ModelConfig) -> f64 {
    let (t, d, hk, f) = (
        cfg.geometry.tokens() as f64,
        cfg.geometry.dim() as f64,
        cfg.hk() as f64,
        cfg.mlp as f64,
    );
    cfg.layers as f64
        * (2.0 * t * d * 3.0 * hk + 2.0 * t * hk * d + 4.0 * t * t * hk + 4.0 * t * d * f)
}

impl Network {
    /// Buffers and dispatches for `batch` samples reading weights from `params` (flat, in
    /// `layout`); with `grads` (same layout) the backward pass is built too.
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        layout: &ParamLayout,
        batch: usize,
        params: &GpuTensor,
        grads: Option<&GpuTensor>,
    ) -> Result<Network> {
        let g = &cfg.geometry;
        let (t, d, hk, p) = (
            g.tokens() as usize,
            g.dim() as usize,
            cfg.hk() as usize,
            g.patches() as usize,
        );
        let m = batch * t;
        let z = |name: &str, shape: &[usize]| GpuTensor::zeros(gpu, name, shape);
        let w = |name: &str| {
            let s = layout.get(name);
            params.view(name, s.offset, &s.shape)
        };
        // Layer l's dense map `s` (weights layer{l}.w_s [k, n], bias layer{l}.b_s [n]):
        // y [m, n] = x [m, k] W + b.
        let dense = |l: usize, s: &str, x: &GpuTensor, y: &GpuTensor, k: usize, n: usize| {
            let (wn, bn) = (format!("layer{l}.w_{s}"), format!("layer{l}.b_{s}"));
            matmul::matmul_forward(gpu, x, &w(&wn), Some(&w(&bn)), y, m, k, n)
        };
        let tokens = z("tokens", &[batch, t, d])?;
        let target = z("target", &[batch, p, d])?;
        let x_start = z("x_start", &[batch, t, d])?;
        let history = z("loss-history", &[LOSS_HISTORY])?;
        let ashape = attention::AttentionShape {
            batch,
            tokens: t,
            heads: cfg.heads as usize,
            key_dim: cfg.key_dim as usize,
        };

        let mut forward = vec![loss::add_pos(
            gpu,
            &tokens,
            &w("pos"),
            &x_start,
            batch,
            t,
            d,
        )?];
        let mut layers: Vec<Layer> = Vec::new();
        for l in 0..cfg.layers as usize {
            let x_in = if l == 0 {
                x_start.clone()
            } else {
                layers[l - 1].out().clone()
            };
            let qkv = z(&format!("layer{l}.qkv"), &[m, 3 * hk])?;
            let probs = z(&format!("layer{l}.probs"), &[batch, ashape.heads, t, t])?;
            let o = z(&format!("layer{l}.o"), &[m, hk])?;
            let proj = z(&format!("layer{l}.y"), &[batch, t, d])?;
            forward.push(dense(l, "qkv", &x_in, &qkv, d, 3 * hk)?);
            forward.push(attention::attention_forward(
                gpu, &ashape, &qkv, &o, &probs,
            )?);
            forward.push(dense(l, "o", &o, &proj, hk, d)?);
            // Residual: x_{l+1} = MHA(x_l) + x_start (in place on the projection's output).
            forward.push(loss::add_inplace(gpu, &proj, &x_start)?);
            let mlp = if cfg.mlp > 0 {
                let f = cfg.mlp as usize;
                let pre = z(&format!("layer{l}.pre"), &[m, f])?;
                let h = z(&format!("layer{l}.h"), &[m, f])?;
                let out = z(&format!("layer{l}.out"), &[batch, t, d])?;
                forward.push(dense(l, "1", &proj, &pre, d, f)?);
                forward.push(gelu::gelu_forward(gpu, &pre, &h)?);
                forward.push(dense(l, "2", &h, &out, f, d)?);
                // Residual around the block: x_{l+1} = y + FFN(y).
                forward.push(loss::add_inplace(gpu, &out, &proj)?);
                Some(Mlp { pre, h, out })
            } else {
                None
            };
            layers.push(Layer {
                x_in,
                qkv,
                probs,
                o,
                proj,
                mlp,
            });
        }
        let x_last = layers
            .last()
            .map(|l| l.out().clone())
            .unwrap_or(x_start.clone());
        // `--skip pixel-mixture`'s prior, a view of the parameters (forward and backward).
        let prior = (cfg.skip == Skip::PixelMixture).then(|| w("skip.prior"));
        let output = match cfg.skip {
            Skip::Identity => x_last,
            kind => {
                let y = z("output", &[batch, t, d])?;
                let f = skip::skip_forward(
                    gpu,
                    kind,
                    prior.as_ref(),
                    &x_last,
                    &tokens,
                    &y,
                    batch,
                    t,
                    d,
                )?;
                forward.push(f);
                y
            }
        };
        let weight = loss::LevelWeight {
            tokens: &tokens,
            max: cfg.loss_weight_max,
        };
        let mse = loss::MseForward::new(gpu, &output, &target, weight, &history, batch, t, p, d)?;

        let mut backward = Vec::new();
        let mut keep = Vec::new();
        if let Some(grads) = grads {
            let dw = |name: &str| {
                let s = layout.get(name);
                grads.view(&format!("d{name}"), s.offset, &s.shape)
            };
            // The backward of `dense`: dx [m, k] (= or += dy W^T), dW and db from dy [m, n].
            let dense_backward = |l: usize,
                                  s: &str,
                                  x: &GpuTensor,
                                  dy: &GpuTensor,
                                  dx: &GpuTensor,
                                  k: usize,
                                  n: usize,
                                  accumulate_dx: bool| {
                let (wn, bn) = (format!("layer{l}.w_{s}"), format!("layer{l}.b_{s}"));
                matmul::matmul_backward(
                    gpu,
                    x,
                    &w(&wn),
                    dy,
                    dx,
                    &dw(&wn),
                    &dw(&bn),
                    m,
                    k,
                    n,
                    accumulate_dx,
                )
            };
            let dout = z("dout", &[batch, t, d])?;
            let dxs = z("dx_start", &[batch, t, d])?;
            let dgs = [z("dx_a", &[batch, t, d])?, z("dx_b", &[batch, t, d])?];
            let d_o = z("do", &[m, hk])?;
            let dqkv = z("dqkv", &[m, 3 * hk])?;
            let f = cfg.mlp as usize;
            let (dh, dpre) = (z("dh", &[m, f])?, z("dpre", &[m, f])?);
            backward.push(loss::mse_backward(
                gpu, &output, &target, weight, &dout, batch, t, p, d,
            )?);
            // dy: the gradient w.r.t. the current layer's output, then (after the feed-forward
            // block's backward) w.r.t. its y.
            let mut dy = dout.clone();
            if cfg.skip != Skip::Identity {
                let dx_last = z("dx_last", &[batch, t, d])?;
                backward.push(skip::skip_backward(
                    gpu,
                    cfg.skip,
                    prior.as_ref(),
                    &dout,
                    &tokens,
                    &dx_last,
                    batch,
                    t,
                    d,
                )?);
                keep.push(dx_last.clone());
                dy = dx_last;
            }
            let last = cfg.layers as usize - 1;
            for l in (0..=last).rev() {
                let ly = &layers[l];
                if let Some(mlp) = &ly.mlp {
                    backward.extend(dense_backward(l, "2", &mlp.h, &dy, &dh, f, d, false)?);
                    backward.push(gelu::gelu_backward(gpu, &mlp.pre, &dh, &dpre)?);
                    // dy += dpre W_1^T (the residual around the block).
                    backward.extend(dense_backward(l, "1", &ly.proj, &dpre, &dy, d, f, true)?);
                }
                // d x_start = sum of every layer's d y + layer 0's input gradient.
                backward.push(if l == last {
                    loss::copy(gpu, &dy, &dxs)?
                } else {
                    loss::add_inplace(gpu, &dxs, &dy)?
                });
                backward.extend(dense_backward(l, "o", &ly.o, &dy, &d_o, hk, d, false)?);
                backward.push(attention::attention_backward(
                    gpu, &ashape, &ly.qkv, &ly.probs, &d_o, &dqkv,
                )?);
                // Layer 0's input is x_start: add its gradient straight into d x_start.
                let (dx, acc) = if l == 0 {
                    (dxs.clone(), true)
                } else {
                    (dgs[l % 2].clone(), false)
                };
                backward.extend(dense_backward(
                    l,
                    "qkv",
                    &ly.x_in,
                    &dqkv,
                    &dx,
                    d,
                    3 * hk,
                    acc,
                )?);
                dy = dx;
            }
            backward.push(loss::pos_backward(gpu, &dxs, &dw("pos"), batch, t, d)?);
            keep.extend([dout, dxs, d_o, dqkv, dh, dpre]);
            keep.extend(dgs);
        }
        Ok(Network {
            cfg: *cfg,
            batch,
            tokens,
            target,
            output,
            history,
            x_start,
            layers,
            forward,
            loss: mse,
            backward,
            _keep: keep,
        })
    }

    /// Chooses the history slot the next loss is written to.
    pub fn set_slot(&self, gpu: &Gpu, slot: u32) {
        self.loss.set_slot(gpu, slot);
    }

    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.forward {
            d.record(pass);
        }
    }

    pub fn record_loss(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.loss.dispatch.record(pass);
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.backward {
            d.record(pass);
        }
    }

    /// The activations kept for the backward pass, by name, in the layouts of the CPU
    /// reference (`x_start`, then per layer `qkv`, `probs`, `o`, with a feed-forward block
    /// `y`, `pre`, `h`, then `out`; with the Wiener skip last `output`): for tests.
    pub fn activations(&self) -> Vec<(String, &GpuTensor)> {
        let mut v = vec![("x_start".to_string(), &self.x_start)];
        for (l, ly) in self.layers.iter().enumerate() {
            v.push((format!("layer{l}.qkv"), &ly.qkv));
            v.push((format!("layer{l}.probs"), &ly.probs));
            v.push((format!("layer{l}.o"), &ly.o));
            if let Some(mlp) = &ly.mlp {
                v.push((format!("layer{l}.y"), &ly.proj));
                v.push((format!("layer{l}.pre"), &mlp.pre));
                v.push((format!("layer{l}.h"), &mlp.h));
            }
            v.push((format!("layer{l}.out"), ly.out()));
        }
        if self.cfg.skip != Skip::Identity {
            v.push(("output".to_string(), &self.output));
        }
        v
    }

    /// Every dispatch of one training step of this network, in order (for timing).
    pub fn dispatches(&self) -> Vec<&Dispatch> {
        self.forward
            .iter()
            .chain(std::iter::once(&self.loss.dispatch))
            .chain(&self.backward)
            .collect()
    }

    /// The forward pass's dispatches (for timing).
    pub fn forward_dispatches(&self) -> Vec<&Dispatch> {
        self.forward.iter().collect()
    }

    /// Matmul FLOPs of one forward pass over the batch (the backward costs twice that).
    pub fn forward_flops(&self) -> f64 {
        self.batch as f64 * forward_flops_per_sample(&self.cfg)
    }

    /// Losses of steps `first..first + n` from the history ring (n <= LOSS_HISTORY).
    pub fn read_losses(&self, gpu: &Gpu, first: u64, n: usize) -> Result<Vec<f32>> {
        let all: Vec<f32> = self.history.read(gpu)?;
        Ok((0..n as u64)
            .map(|i| all[((first + i) % LOSS_HISTORY as u64) as usize])
            .collect())
    }
}

/// Gradients, Adam state and EMA weights for a flat parameter buffer, and their dispatches
/// (Adam over everything in one dispatch, then the EMA update).
pub struct Optimizer {
    pub grads: GpuTensor,
    pub m: GpuTensor,
    pub v: GpuTensor,
    pub ema: GpuTensor,
    adam: adam::Adam,
    ema_update: adam::Ema,
}

impl Optimizer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &GpuTensor,
        m: &[f32],
        v: &[f32],
        ema: &[f32],
        lr: f32,
        ema_decay: f32,
    ) -> Result<Optimizer> {
        let n = layout.total;
        let grads = GpuTensor::zeros(gpu, "grads", &[n])?;
        let m = GpuTensor::from_slice(gpu, "adam-m", &[n], m)?;
        let v = GpuTensor::from_slice(gpu, "adam-v", &[n], v)?;
        let ema = GpuTensor::from_slice(gpu, "ema", &[n], ema)?;
        let adam = adam::Adam::new(gpu, adam::AdamConfig::keras(lr), params, &grads, &m, &v)?;
        let ema_update = adam::Ema::new(gpu, ema_decay, params, &ema)?;
        Ok(Optimizer {
            grads,
            m,
            v,
            ema,
            adam,
            ema_update,
        })
    }

    /// Sets the step t (1-based) of the next submission and its learning rate `lr`: Adam's
    /// bias correction and the EMA's warmed-up decay.
    pub fn set_step(&self, gpu: &Gpu, t: u64, lr: f32) {
        self.adam.set_step_lr(gpu, t, lr);
        self.ema_update.set_step(gpu, t);
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.adam.dispatch.record(pass);
        self.ema_update.dispatch.record(pass);
    }

    /// Adam's and the EMA's dispatches (for timing).
    pub fn dispatches(&self) -> Vec<&Dispatch> {
        vec![&self.adam.dispatch, &self.ema_update.dispatch]
    }
}
