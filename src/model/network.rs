//! The transformer on the GPU for one batch size: activation and gradient buffers, and the
//! prepared dispatches of its forward pass, loss and backward pass (SPEC §3).
//!
//! Forward, per sample (T tokens of width D; M = B*T rows):
//!   x_start = tokens + pos                                  add_pos
//!   x_0 = x_start; for each layer l:
//!     qkv_l = x_l W_qkv + b_qkv                             matmul   [M, 3HK]
//!     o_l   = softmax(Q K^T / sqrt(K)) V per head           attention [M, HK] (+ probs)
//!     y_l   = o_l W_o + b_o + x_start                       matmul + add
//!     (the last layer from here on works on the g^2 patch rows of each sample only:
//!      drop_cond o_l [M, HK] -> [B*g^2, HK], drop_cond_add for x_start, and pad_cond of its
//!      output back to [B, T, D] with zeros in the conditioning rows: nothing reads that row
//!      of the last layer, so its projection and feed-forward block are not computed)
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
    /// The rows the output projection reads: `o`, or for the last layer its patch rows
    /// [B*g^2, HK] (then `proj` and the feed-forward block hold patch rows only too).
    o_rows: GpuTensor,
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

/// Which rows of each sample an activation holds (see [`Network::activations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// [B, T, ·]: every token.
    All,
    /// [B, g^2, ·]: the patch tokens only (the last layer after attention).
    Patches,
    /// [B, T, ·] whose conditioning rows are not the model's (zeros, or computed from zeros):
    /// only the patch rows are defined.
    PatchesOfAll,
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
    /// The last layer's output back in [B, T, D] (zero conditioning rows).
    x_last: GpuTensor,
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
/// products, the output projection and the feed-forward block (the last layer's two on the
/// g^2 patch rows only).
pub fn forward_flops_per_sample(cfg: &ModelConfig) -> f64 {
    let (t, p, d, hk, f) = (
        cfg.geometry.tokens() as f64,
        cfg.geometry.patches() as f64,
        cfg.geometry.dim() as f64,
        cfg.hk() as f64,
        cfg.mlp as f64,
    );
    let l = cfg.layers as f64;
    let after_attention = |rows: f64| 2.0 * rows * hk * d + 4.0 * rows * d * f;
    l * (2.0 * t * d * 3.0 * hk + 4.0 * t * t * hk)
        + (l - 1.0) * after_attention(t)
        + after_attention(p)
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
        // Layer l's dense map `s` (weights layer{l}.w_s [k, n], bias layer{l}.b_s [n]) on
        // `rows` rows: y [rows, n] = x [rows, k] W + b.
        let dense =
            |l: usize, s: &str, x: &GpuTensor, y: &GpuTensor, rows: usize, k: usize, n: usize| {
                let (wn, bn) = (format!("layer{l}.w_{s}"), format!("layer{l}.b_{s}"));
                matmul::matmul_forward(gpu, x, &w(&wn), Some(&w(&bn)), y, rows, k, n)
            };
        // The last layer's rows after attention: the patch tokens'.
        let last = cfg.layers as usize - 1;
        let mp = batch * p;
        let rows_of = |width| loss::TokenRows {
            batch,
            tokens: t,
            patches: p,
            width,
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
            forward.push(dense(l, "qkv", &x_in, &qkv, m, d, 3 * hk)?);
            forward.push(attention::attention_forward(
                gpu, &ashape, &qkv, &o, &probs,
            )?);
            let rows = if l == last { mp } else { m };
            let o_rows = if l == last {
                let o_rows = z(&format!("layer{l}.o_patches"), &[rows, hk])?;
                forward.push(loss::drop_cond(gpu, &o, &o_rows, rows_of(hk))?);
                o_rows
            } else {
                o.clone()
            };
            let proj = z(&format!("layer{l}.y"), &[rows, d])?;
            forward.push(dense(l, "o", &o_rows, &proj, rows, hk, d)?);
            // Residual: x_{l+1} = MHA(x_l) + x_start (in place on the projection's output).
            forward.push(if l == last {
                loss::drop_cond_add(gpu, &x_start, &proj, rows_of(d))?
            } else {
                loss::add_inplace(gpu, &proj, &x_start)?
            });
            let mlp = if cfg.mlp > 0 {
                let f = cfg.mlp as usize;
                let pre = z(&format!("layer{l}.pre"), &[rows, f])?;
                let h = z(&format!("layer{l}.h"), &[rows, f])?;
                let out = z(&format!("layer{l}.out"), &[rows, d])?;
                forward.push(dense(l, "1", &proj, &pre, rows, d, f)?);
                forward.push(gelu::gelu_forward(gpu, &pre, &h)?);
                forward.push(dense(l, "2", &h, &out, rows, f, d)?);
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
                o_rows,
                proj,
                mlp,
            });
        }
        // The last layer's patch rows back in [B, T, D]: what the skip, the loss and the
        // sampler read (their conditioning rows are never used).
        let x_last = z("x_last", &[batch, t, d])?;
        forward.push(loss::pad_cond(
            gpu,
            layers[last].out(),
            &x_last,
            rows_of(d),
        )?);
        // `--skip pixel-mixture`'s prior, a view of the parameters (forward and backward).
        let prior = (cfg.skip == Skip::PixelMixture).then(|| w("skip.prior"));
        let output = match cfg.skip {
            Skip::Identity => x_last.clone(),
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
            // The backward of `dense` on `rows` rows: dx [rows, k] (= or += dy W^T), dW and db
            // from dy [rows, n].
            let dense_backward = |l: usize,
                                  s: &str,
                                  x: &GpuTensor,
                                  dy: &GpuTensor,
                                  dx: &GpuTensor,
                                  (rows, k, n): (usize, usize, usize),
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
                    rows,
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
            // The last layer's gradients after attention, on its patch rows.
            let dy_p = z("dy_patches", &[mp, d])?;
            let d_o_p = z("do_patches", &[mp, hk])?;
            let (dh_p, dpre_p) = (z("dh_patches", &[mp, f])?, z("dpre_patches", &[mp, f])?);
            let (dh, dpre) = if last > 0 {
                (z("dh", &[m, f])?, z("dpre", &[m, f])?)
            } else {
                (dh_p.clone(), dpre_p.clone())
            };
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
            for l in (0..=last).rev() {
                let ly = &layers[l];
                let (rows, dh, dpre) = if l == last {
                    // The conditioning rows' gradient is zero: work on the patch rows.
                    backward.push(loss::drop_cond(gpu, &dy, &dy_p, rows_of(d))?);
                    dy = dy_p.clone();
                    (mp, &dh_p, &dpre_p)
                } else {
                    (m, &dh, &dpre)
                };
                if let Some(mlp) = &ly.mlp {
                    backward.extend(dense_backward(
                        l,
                        "2",
                        &mlp.h,
                        &dy,
                        dh,
                        (rows, f, d),
                        false,
                    )?);
                    backward.push(gelu::gelu_backward(gpu, &mlp.pre, dh, dpre)?);
                    // dy += dpre W_1^T (the residual around the block).
                    backward.extend(dense_backward(
                        l,
                        "1",
                        &ly.proj,
                        dpre,
                        &dy,
                        (rows, d, f),
                        true,
                    )?);
                }
                // d x_start = sum of every layer's d y + layer 0's input gradient.
                backward.push(if l == last {
                    loss::pad_cond(gpu, &dy, &dxs, rows_of(d))?
                } else {
                    loss::add_inplace(gpu, &dxs, &dy)?
                });
                let d_o_rows = if l == last { &d_o_p } else { &d_o };
                backward.extend(dense_backward(
                    l,
                    "o",
                    &ly.o_rows,
                    &dy,
                    d_o_rows,
                    (rows, hk, d),
                    false,
                )?);
                if l == last {
                    // Back to every row: attention's conditioning query gets a zero gradient.
                    backward.push(loss::pad_cond(gpu, &d_o_p, &d_o, rows_of(hk))?);
                }
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
                    (m, d, 3 * hk),
                    acc,
                )?);
                dy = dx;
            }
            backward.push(loss::pos_backward(gpu, &dxs, &dw("pos"), batch, t, d)?);
            keep.extend([dout, dxs, d_o, dqkv, dh, dpre, dy_p, d_o_p, dh_p, dpre_p]);
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
            x_last,
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
    /// `y`, `pre`, `h`, then `out`; with the Wiener skip last `output`) and the rows each
    /// holds (the last layer's after attention: the patch rows only): for tests.
    pub fn activations(&self) -> Vec<(String, &GpuTensor, Rows)> {
        let mut v = vec![("x_start".to_string(), &self.x_start, Rows::All)];
        let last = self.layers.len() - 1;
        for (l, ly) in self.layers.iter().enumerate() {
            let rows = if l == last { Rows::Patches } else { Rows::All };
            v.push((format!("layer{l}.qkv"), &ly.qkv, Rows::All));
            v.push((format!("layer{l}.probs"), &ly.probs, Rows::All));
            v.push((format!("layer{l}.o"), &ly.o, Rows::All));
            if let Some(mlp) = &ly.mlp {
                v.push((format!("layer{l}.y"), &ly.proj, rows));
                v.push((format!("layer{l}.pre"), &mlp.pre, rows));
                v.push((format!("layer{l}.h"), &mlp.h, rows));
            }
            v.push((format!("layer{l}.out"), ly.out(), rows));
        }
        if self.cfg.skip != Skip::Identity {
            v.push(("output".to_string(), &self.output, Rows::PatchesOfAll));
        } else {
            v.push(("output".to_string(), &self.x_last, Rows::PatchesOfAll));
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
