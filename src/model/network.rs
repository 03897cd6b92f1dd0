//! The transformer on the GPU for one batch size: activation and gradient buffers, and the
//! prepared dispatches of its forward pass, loss and backward pass (docs/model.md §3).
//!
//! Forward, per sample (T tokens of width D; M = B*T rows):
//!   x_start = tokens + pos                                  add_pos
//!   with --classes: x_start[b, T-1] += label[labels[b]]     label_forward
//!   x_0 = x_start; for each layer l:
//!     qkv_l = x_l W_qkv + b_qkv                             matmul   [M, 3HK]
//!     o_l   = softmax(Q K^T / sqrt(K)) V per head           attention [M, HK] (+ probs)
//!     y_l   = o_l W_o + b_o + x_start                       matmul + add
//!     (the last layer from here on works on the g^2 patch rows of each sample only:
//!      drop_cond o_l [M, HK] -> [B*g^2, HK], drop_cond_add for x_start, and pad_cond of its
//!      output back to [B, T, D] with zeros in the conditioning rows: nothing reads that row
//!      of the last layer, so its projection and feed-forward block are not computed)
//!     with --mlp F (an extension; the seed has none):
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

use crate::config::Skip;
use crate::config::{ModelConfig, NO_LABEL};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Elem, Gpu, GpuTensor};
use crate::model::ParamLayout;
use crate::ops::label::{self, LabelShape};
use crate::ops::{adam, attention, gelu, loss, matmul, rows, skip};

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
    mlp: Option<FeedForward>,
}

/// A layer's feed-forward block: pre [M, F], h = gelu(pre) [M, F], out = y + h W_2 + b_2.
struct FeedForward {
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
    pub config: ModelConfig,
    pub batch: usize,
    /// Input tokens [B, T, D]: the g^2 patches of the noisy image and the conditioning token.
    pub tokens: GpuTensor,
    /// Targets [B, g^2, D]: the patches of the noise that was added.
    pub target: GpuTensor,
    /// The model's output [B, T, D] (the first g^2 tokens are the predicted noise patches).
    pub output: GpuTensor,
    pub history: GpuTensor,
    /// With --classes: each sample's label [B] (u32; NO_LABEL = "no label"), written by the
    /// batch's noise injection (training) or the sampler.
    pub labels: Option<GpuTensor>,
    /// With --classes: the forward pass's label dispatch (its index in `forward`) and the
    /// same dispatch reading "no label" for every sample (classifier-free guidance's
    /// unconditional call), with the buffer it reads.
    unconditional: Option<(usize, Dispatch, GpuTensor)>,
    x_start: GpuTensor,
    layers: Vec<Layer>,
    /// The last layer's output back in [B, T, D] (zero conditioning rows).
    x_last: GpuTensor,
    forward: Vec<Dispatch>,
    /// The loss of an f32 network (None in f16, which only samples).
    loss: Option<loss::MseForward>,
    backward: Vec<Dispatch>,
    _keep: Vec<GpuTensor>,
}

/// The shapes and weight views of a network being built by [`Network::new`], and its
/// forward pass, one function per part.
struct Build<'a> {
    gpu: &'a Gpu,
    config: &'a ModelConfig,
    layout: &'a ParamLayout,
    params: &'a GpuTensor,
    batch: usize,
    /// Tokens T, their width D, the heads' width H*K, the patch tokens g^2.
    t: usize,
    d: usize,
    hk: usize,
    p: usize,
    /// Rows: M = B*T, and B*g^2 for the last layer after attention.
    m: usize,
    mp: usize,
    last: usize,
    attention: attention::AttentionShape,
}

impl<'a> Build<'a> {
    fn new(
        gpu: &'a Gpu,
        config: &'a ModelConfig,
        layout: &'a ParamLayout,
        params: &'a GpuTensor,
        batch: usize,
    ) -> Build<'a> {
        let g = &config.geometry;
        let (t, p) = (g.tokens() as usize, g.patches() as usize);
        Build {
            gpu,
            config,
            layout,
            params,
            batch,
            t,
            d: g.dim() as usize,
            hk: config.hk() as usize,
            p,
            m: batch * t,
            mp: batch * p,
            last: config.layers as usize - 1,
            attention: attention::AttentionShape {
                batch,
                tokens: t,
                heads: config.heads as usize,
                key_dim: config.key_dim as usize,
            },
        }
    }

    /// The label embedding's shapes (--classes).
    fn label_shape(&self) -> LabelShape {
        LabelShape {
            batch: self.batch,
            tokens: self.t,
            dim: self.d,
            rows: NO_LABEL as usize + 1,
        }
    }

    /// With --classes: the labels buffer, the dispatch adding their embedding to x_start,
    /// and the same reading "no label" for every sample (with its buffer).
    fn labels(&self, x_start: &GpuTensor) -> Result<Option<LabelInputs>> {
        if !self.config.classes {
            return Ok(None);
        }
        let (gpu, s, table) = (self.gpu, self.label_shape(), self.weight("label"));
        let none = vec![NO_LABEL; self.batch];
        let labels = GpuTensor::from_slice(gpu, "labels", &[self.batch], &none)?;
        let no_labels = GpuTensor::from_slice(gpu, "no-labels", &[self.batch], &none)?;
        Ok(Some(LabelInputs {
            add: label::label_forward(gpu, &s, &labels, &table, x_start)?,
            add_none: label::label_forward(gpu, &s, &no_labels, &table, x_start)?,
            labels,
            no_labels,
        }))
    }

    fn zeros(&self, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        GpuTensor::zeros(self.gpu, name, shape)
    }

    /// An activation of the forward pass, stored like the weights (f32, or f16 with
    /// `--precision f16`).
    fn act(&self, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        GpuTensor::zeros_of(self.gpu, name, shape, self.params.elem)
    }

    /// The parameter `name`, a view of the flat buffer.
    fn weight(&self, name: &str) -> GpuTensor {
        let s = self.layout.get(name);
        self.params.view(name, s.offset, &s.shape)
    }

    /// The rows of each sample, `width` wide (for drop_cond / pad_cond).
    fn rows_of(&self, width: usize) -> rows::TokenRows {
        rows::TokenRows {
            batch: self.batch,
            tokens: self.t,
            patches: self.p,
            width,
        }
    }

    /// Rows of layer `l` after attention: the patch tokens' for the last layer.
    fn rows(&self, l: usize) -> usize {
        if l == self.last {
            self.mp
        } else {
            self.m
        }
    }

    /// Layer l's dense map `s` (weights layer{l}.w_s [k, n], bias layer{l}.b_s [n]) on
    /// `rows` rows: y [rows, n] = x [rows, k] W + b.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        l: usize,
        s: &str,
        x: &GpuTensor,
        y: &GpuTensor,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<Dispatch> {
        let (w, b) = (
            self.weight(&format!("layer{l}.w_{s}")),
            self.weight(&format!("layer{l}.b_{s}")),
        );
        matmul::matmul_forward(self.gpu, x, &w, Some(&b), y, rows, k, n)
    }

    /// Layer l: QKV, attention, the output projection plus x_start, and the feed-forward
    /// block; the last layer after attention on its patch rows only.
    fn layer_forward(
        &self,
        l: usize,
        x_in: GpuTensor,
        x_start: &GpuTensor,
        forward: &mut Vec<Dispatch>,
    ) -> Result<Layer> {
        let (gpu, m, d, hk) = (self.gpu, self.m, self.d, self.hk);
        let qkv = self.act(&format!("layer{l}.qkv"), &[m, 3 * hk])?;
        let probs_shape = [self.batch, self.attention.heads, self.t, self.t];
        let probs = self.zeros(&format!("layer{l}.probs"), &probs_shape)?;
        let o = self.act(&format!("layer{l}.o"), &[m, hk])?;
        forward.push(self.dense(l, "qkv", &x_in, &qkv, m, d, 3 * hk)?);
        forward.push(attention::attention_forward(
            gpu,
            &self.attention,
            &qkv,
            &o,
            &probs,
        )?);
        let rows = self.rows(l);
        let o_rows = if l == self.last {
            let o_rows = self.act(&format!("layer{l}.o_patches"), &[rows, hk])?;
            forward.push(rows::drop_cond(gpu, &o, &o_rows, self.rows_of(hk))?);
            o_rows
        } else {
            o.clone()
        };
        let proj = self.act(&format!("layer{l}.y"), &[rows, d])?;
        forward.push(self.dense(l, "o", &o_rows, &proj, rows, hk, d)?);
        // Residual: x_{l+1} = MHA(x_l) + x_start (in place on the projection's output).
        forward.push(if l == self.last {
            rows::drop_cond_add(gpu, x_start, &proj, self.rows_of(d))?
        } else {
            rows::add_inplace(gpu, &proj, x_start)?
        });
        let mlp = self.mlp_forward(l, &proj, forward)?;
        Ok(Layer {
            x_in,
            qkv,
            probs,
            o,
            o_rows,
            proj,
            mlp,
        })
    }

    /// Layer l's feed-forward block (none with --mlp 0): x_{l+1} = y + W_2 gelu(W_1 y).
    fn mlp_forward(
        &self,
        l: usize,
        proj: &GpuTensor,
        forward: &mut Vec<Dispatch>,
    ) -> Result<Option<FeedForward>> {
        if self.config.mlp == 0 {
            return Ok(None);
        }
        let (f, d, rows) = (self.config.mlp as usize, self.d, self.rows(l));
        let pre = self.act(&format!("layer{l}.pre"), &[rows, f])?;
        let h = self.act(&format!("layer{l}.h"), &[rows, f])?;
        let out = self.act(&format!("layer{l}.out"), &[rows, d])?;
        forward.push(self.dense(l, "1", proj, &pre, rows, d, f)?);
        forward.push(gelu::gelu_forward(self.gpu, &pre, &h)?);
        forward.push(self.dense(l, "2", &h, &out, rows, f, d)?);
        // Residual around the block: x_{l+1} = y + FFN(y).
        forward.push(rows::add_inplace(self.gpu, &out, proj)?);
        Ok(Some(FeedForward { pre, h, out }))
    }

    /// `--skip pixel-mixture`'s prior, a view of the parameters (forward and backward).
    fn prior(&self) -> Option<GpuTensor> {
        (self.config.skip == Skip::PixelMixture).then(|| self.weight("skip.prior"))
    }

    /// The output: x_last itself, or with a skip term E + q (x_last - A).
    fn skip_forward(
        &self,
        x_last: &GpuTensor,
        tokens: &GpuTensor,
        forward: &mut Vec<Dispatch>,
    ) -> Result<GpuTensor> {
        let (batch, t, d) = (self.batch, self.t, self.d);
        if self.config.skip == Skip::Identity {
            return Ok(x_last.clone());
        }
        let y = self.act("output", &[batch, t, d])?;
        let prior = self.prior();
        forward.push(skip::skip_forward(
            self.gpu,
            self.config.skip,
            prior.as_ref(),
            x_last,
            tokens,
            &y,
            batch,
            t,
            d,
        )?);
        Ok(y)
    }
}

/// A conditional network's label inputs (see [`Build::labels`]).
struct LabelInputs {
    labels: GpuTensor,
    no_labels: GpuTensor,
    add: Dispatch,
    add_none: Dispatch,
}

/// The backward pass being built, from the loss to the position embedding: its gradient
/// buffers (the last layer's after attention on its patch rows), its dispatches, and `dy`,
/// the gradient w.r.t. the output of the part reached so far.
struct Backward<'a> {
    b: &'a Build<'a>,
    grads: &'a GpuTensor,
    dout: GpuTensor,
    dy: GpuTensor,
    /// d x_start: every layer's d y plus layer 0's input gradient.
    dxs: GpuTensor,
    /// Two input gradients, alternating between layers.
    dgs: [GpuTensor; 2],
    d_o: GpuTensor,
    dqkv: GpuTensor,
    dh: GpuTensor,
    dpre: GpuTensor,
    dy_p: GpuTensor,
    d_o_p: GpuTensor,
    dh_p: GpuTensor,
    dpre_p: GpuTensor,
    dispatches: Vec<Dispatch>,
    keep: Vec<GpuTensor>,
}

impl<'a> Backward<'a> {
    fn new(b: &'a Build<'a>, grads: &'a GpuTensor) -> Result<Backward<'a>> {
        let (batch, t, d, m, mp) = (b.batch, b.t, b.d, b.m, b.mp);
        let (hk, f) = (b.hk, b.config.mlp as usize);
        let dout = b.zeros("dout", &[batch, t, d])?;
        let (dh_p, dpre_p) = (
            b.zeros("dh_patches", &[mp, f])?,
            b.zeros("dpre_patches", &[mp, f])?,
        );
        let (dh, dpre) = if b.last > 0 {
            (b.zeros("dh", &[m, f])?, b.zeros("dpre", &[m, f])?)
        } else {
            (dh_p.clone(), dpre_p.clone())
        };
        Ok(Backward {
            b,
            grads,
            dy: dout.clone(),
            dout,
            dxs: b.zeros("dx_start", &[batch, t, d])?,
            dgs: [
                b.zeros("dx_a", &[batch, t, d])?,
                b.zeros("dx_b", &[batch, t, d])?,
            ],
            d_o: b.zeros("do", &[m, hk])?,
            dqkv: b.zeros("dqkv", &[m, 3 * hk])?,
            dh,
            dpre,
            dy_p: b.zeros("dy_patches", &[mp, d])?,
            d_o_p: b.zeros("do_patches", &[mp, hk])?,
            dh_p,
            dpre_p,
            dispatches: vec![],
            keep: vec![],
        })
    }

    /// The gradient of the parameter `name`, a view of the flat gradient buffer.
    fn grad(&self, name: &str) -> GpuTensor {
        let s = self.b.layout.get(name);
        self.grads.view(&format!("d{name}"), s.offset, &s.shape)
    }

    /// The backward of [`Build::dense`] on `rows` rows: dx [rows, k] (= or += dy W^T), dW
    /// and db from dy [rows, n].
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &mut self,
        l: usize,
        s: &str,
        x: &GpuTensor,
        dy: &GpuTensor,
        dx: &GpuTensor,
        (rows, k, n): (usize, usize, usize),
        accumulate_dx: bool,
    ) -> Result<()> {
        let (wn, bn) = (format!("layer{l}.w_{s}"), format!("layer{l}.b_{s}"));
        let (w, dw, db) = (self.b.weight(&wn), self.grad(&wn), self.grad(&bn));
        let gpu = self.b.gpu;
        let ds = matmul::matmul_backward(gpu, x, &w, dy, dx, &dw, &db, rows, k, n, accumulate_dx)?;
        self.dispatches.extend(ds);
        Ok(())
    }

    /// d output from the weighted squared error.
    fn loss(
        &mut self,
        output: &GpuTensor,
        target: &GpuTensor,
        weight: loss::LevelWeight<'_>,
    ) -> Result<()> {
        let b = self.b;
        self.dispatches.push(loss::mse_backward(
            b.gpu, output, target, weight, &self.dout, b.batch, b.t, b.p, b.d,
        )?);
        Ok(())
    }

    /// Through the skip term, when the model has one: d x_last.
    fn skip(&mut self, tokens: &GpuTensor) -> Result<()> {
        let b = self.b;
        if b.config.skip == Skip::Identity {
            return Ok(());
        }
        let dx_last = b.zeros("dx_last", &[b.batch, b.t, b.d])?;
        let prior = b.prior();
        self.dispatches.push(skip::skip_backward(
            b.gpu,
            b.config.skip,
            prior.as_ref(),
            &self.dout,
            tokens,
            &dx_last,
            b.batch,
            b.t,
            b.d,
        )?);
        self.keep.push(dx_last.clone());
        self.dy = dx_last;
        Ok(())
    }

    /// Layer l, from d x_{l+1} (in `dy`) to d x_l (left in `dy`): the feed-forward block,
    /// the output projection, attention and QKV; d y goes into d x_start too.
    fn layer(&mut self, l: usize, ly: &Layer) -> Result<()> {
        let b = self.b;
        let (gpu, d, hk, m) = (b.gpu, b.d, b.hk, b.m);
        let last = l == b.last;
        if last {
            // The conditioning rows' gradient is zero: work on the patch rows.
            let dy_p = self.dy_p.clone();
            self.dispatches
                .push(rows::drop_cond(gpu, &self.dy, &dy_p, b.rows_of(d))?);
            self.dy = dy_p;
        }
        let rows = b.rows(l);
        if let Some(mlp) = &ly.mlp {
            self.mlp(l, ly, mlp, rows)?;
        }
        let dy = self.dy.clone();
        // d x_start = sum of every layer's d y + layer 0's input gradient.
        self.dispatches.push(if last {
            rows::pad_cond(gpu, &dy, &self.dxs, b.rows_of(d))?
        } else {
            rows::add_inplace(gpu, &self.dxs, &dy)?
        });
        let d_o_rows = if last {
            self.d_o_p.clone()
        } else {
            self.d_o.clone()
        };
        self.dense(l, "o", &ly.o_rows, &dy, &d_o_rows, (rows, hk, d), false)?;
        if last {
            // Back to every row: attention's conditioning query gets a zero gradient.
            self.dispatches
                .push(rows::pad_cond(gpu, &self.d_o_p, &self.d_o, b.rows_of(hk))?);
        }
        self.dispatches.push(attention::attention_backward(
            gpu,
            &b.attention,
            &ly.qkv,
            &ly.probs,
            &self.d_o,
            &self.dqkv,
        )?);
        // Layer 0's input is x_start: add its gradient straight into d x_start.
        let (dx, acc) = if l == 0 {
            (self.dxs.clone(), true)
        } else {
            (self.dgs[l % 2].clone(), false)
        };
        let dqkv = self.dqkv.clone();
        self.dense(l, "qkv", &ly.x_in, &dqkv, &dx, (m, d, 3 * hk), acc)?;
        self.dy = dx;
        Ok(())
    }

    /// Layer l's feed-forward block: d y += W_1^T gelu'(pre) (W_2^T d out) (the residual).
    fn mlp(&mut self, l: usize, ly: &Layer, mlp: &FeedForward, rows: usize) -> Result<()> {
        let (d, f) = (self.b.d, self.b.config.mlp as usize);
        let (dh, dpre) = match l == self.b.last {
            true => (self.dh_p.clone(), self.dpre_p.clone()),
            false => (self.dh.clone(), self.dpre.clone()),
        };
        let dy = self.dy.clone();
        self.dense(l, "2", &mlp.h, &dy, &dh, (rows, f, d), false)?;
        self.dispatches
            .push(gelu::gelu_backward(self.b.gpu, &mlp.pre, &dh, &dpre)?);
        self.dense(l, "1", &ly.proj, &dpre, &dy, (rows, d, f), true)
    }

    /// d pos = the sum over the batch of d x_start; with labels, d label = the sums of
    /// d x_start's conditioning rows per label.
    fn positions(&mut self, labels: Option<&GpuTensor>) -> Result<()> {
        let b = self.b;
        let dpos = self.grad("pos");
        self.dispatches.push(rows::pos_backward(
            b.gpu, &self.dxs, &dpos, b.batch, b.t, b.d,
        )?);
        if let Some(labels) = labels {
            let dtable = self.grad("label");
            let s = b.label_shape();
            let d = label::label_backward(b.gpu, &s, labels, &self.dxs, &dtable)?;
            self.dispatches.push(d);
        }
        Ok(())
    }

    /// The dispatches, and every buffer they use that nothing else holds.
    fn finish(self) -> (Vec<Dispatch>, Vec<GpuTensor>) {
        let mut keep = self.keep;
        keep.extend([
            self.dout,
            self.dxs,
            self.d_o,
            self.dqkv,
            self.dh,
            self.dpre,
            self.dy_p,
            self.d_o_p,
            self.dh_p,
            self.dpre_p,
        ]);
        keep.extend(self.dgs);
        (self.dispatches, keep)
    }
}

/// Errors (naming the limit and by how much it is exceeded) when the model's parameters or
/// the activations of a `batch` do not fit the adapter's storage-binding limits. Cheap: call
/// it before allocating anything.
pub fn check_fits(gpu: &Gpu, config: &ModelConfig, batch: usize) -> Result<()> {
    let g = &config.geometry;
    let (t, d, hk, h) = (
        g.tokens() as u64,
        g.dim() as u64,
        config.hk() as u64,
        config.heads as u64,
    );
    let layout_total = config.parameter_count() + 64 * (1 + 8 * config.layers as u64);
    gpu.check_binding_size("the model's parameters", layout_total * 4)?;
    let max = (gpu.limits.max_storage_buffer_binding_size).min(gpu.limits.max_buffer_size);
    // Elements per sample.
    for (label, elems) in [
        ("the feed-forward activations", t * config.mlp as u64),
        ("the QKV activations", t * 3 * hk),
        ("the attention probabilities", h * t * t),
        ("the attention output", t * hk),
        ("the tokens", t * d),
    ] {
        gpu.check_binding_size(label, batch as u64 * elems * 4)
            .map_err(|e| {
                let fit = max / (elems * 4);
                Error::adapter(format!(
                    "{e}; at most {fit} samples at once fit ({batch} asked)"
                ))
            })?;
    }
    Ok(())
}

/// Matmul FLOPs of one sample's forward pass: per layer the QKV projection, attention's two
/// products, the output projection and the feed-forward block (the last layer's two on the
/// g^2 patch rows only).
pub fn forward_flops_per_sample(config: &ModelConfig) -> f64 {
    let (t, p, d, hk, f) = (
        config.geometry.tokens() as f64,
        config.geometry.patches() as f64,
        config.geometry.dim() as f64,
        config.hk() as f64,
        config.mlp as f64,
    );
    let l = config.layers as f64;
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
        config: &ModelConfig,
        layout: &ParamLayout,
        batch: usize,
        params: &GpuTensor,
        grads: Option<&GpuTensor>,
    ) -> Result<Network> {
        let b = Build::new(gpu, config, layout, params, batch);
        let tokens = b.zeros("tokens", &[batch, b.t, b.d])?;
        let target = b.zeros("target", &[batch, b.p, b.d])?;
        let x_start = b.act("x_start", &[batch, b.t, b.d])?;
        let history = b.zeros("loss-history", &[LOSS_HISTORY])?;
        let pos = b.weight("pos");
        let mut forward = vec![rows::add_pos(
            gpu, &tokens, &pos, &x_start, batch, b.t, b.d,
        )?];
        let (labels, unconditional) = match b.labels(&x_start)? {
            Some(li) => {
                forward.push(li.add);
                let at = forward.len() - 1;
                (Some(li.labels), Some((at, li.add_none, li.no_labels)))
            }
            None => (None, None),
        };
        let mut layers: Vec<Layer> = Vec::new();
        for l in 0..config.layers as usize {
            let x_in = layers.last().map_or(&x_start, |ly| ly.out()).clone();
            layers.push(b.layer_forward(l, x_in, &x_start, &mut forward)?);
        }
        // The last layer's patch rows back in [B, T, D]: what the skip, the loss and the
        // sampler read (their conditioning rows are never used).
        let x_last = b.act("x_last", &[batch, b.t, b.d])?;
        let last_out = layers[b.last].out();
        forward.push(rows::pad_cond(gpu, last_out, &x_last, b.rows_of(b.d))?);
        let output = b.skip_forward(&x_last, &tokens, &mut forward)?;
        let weight = loss::LevelWeight {
            tokens: &tokens,
            max: config.loss_weight_max,
        };
        let (t, p, d) = (b.t, b.p, b.d);
        // The loss and the backward pass are f32's: half precision only samples.
        let mse = (params.elem == Elem::F32)
            .then(|| loss::MseForward::new(gpu, &output, &target, weight, &history, batch, t, p, d))
            .transpose()?;
        let (backward, keep) = match grads {
            Some(_) if params.elem != Elem::F32 => {
                return Err(Error::config(format!(
                    "the {} weights of {} can only sample: training is f32",
                    params.elem.name(),
                    params.label
                )))
            }
            Some(grads) => {
                let mut back = Backward::new(&b, grads)?;
                back.loss(&output, &target, weight)?;
                back.skip(&tokens)?;
                for (l, ly) in layers.iter().enumerate().rev() {
                    back.layer(l, ly)?;
                }
                back.positions(labels.as_ref())?;
                back.finish()
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Network {
            config: *config,
            batch,
            tokens,
            target,
            output,
            history,
            labels,
            unconditional,
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
        self.mse().set_slot(gpu, slot);
    }

    fn mse(&self) -> &loss::MseForward {
        (self.loss.as_ref()).expect("an f16 network has no loss: it only samples")
    }

    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.forward {
            d.record(pass);
        }
    }

    /// The forward pass with every sample's label "no label" (classifier-free guidance's
    /// unconditional call); the plain forward pass for an unconditional network.
    pub fn record_forward_unconditional(&self, pass: &mut wgpu::ComputePass<'_>) {
        for (i, d) in self.forward.iter().enumerate() {
            match &self.unconditional {
                Some((at, none, _)) if *at == i => none.record(pass),
                _ => d.record(pass),
            }
        }
    }

    pub fn record_loss(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.mse().dispatch.record(pass);
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
        if self.config.skip != Skip::Identity {
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
            .chain(self.loss.as_ref().map(|l| &l.dispatch))
            .chain(&self.backward)
            .collect()
    }

    /// The forward pass's dispatches (for timing).
    pub fn forward_dispatches(&self) -> Vec<&Dispatch> {
        self.forward.iter().collect()
    }

    /// Matmul FLOPs of one forward pass over the batch (the backward costs twice that).
    pub fn forward_flops(&self) -> f64 {
        self.batch as f64 * forward_flops_per_sample(&self.config)
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
