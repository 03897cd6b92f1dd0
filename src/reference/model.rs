//! CPU reference of the whole transformer (docs/model.md §3): forward pass, loss and backward pass in
//! plain loops, written for clarity, that `model::network` (the GPU) is tested against and that
//! is itself checked by finite differences (`tests/reference_model.rs`).
//!
//! Shapes (B batch, T = g^2 + 1 tokens, D token width, H heads of K, HK = H*K):
//!
//! ```text
//! x_start = tokens + pos                                   [B, T, D]
//! x = x_start; for each layer l:
//!     x_in  = x                                            [B, T, D]
//!     qkv   = x_in W_qkv + b_qkv                           [B*T, 3HK]  (Q | K | V)
//!     probs = softmax(Q_h K_h^T / sqrt(K)) per (b, h)      [B, H, T, T] (over the keys)
//!     o     = probs V_h, heads side by side                [B*T, HK]
//!     y     = o W_o + b_o + x_start                        [B, T, D]   (x_start, not x_in!)
//!     with --mlp F > 0 (an extension; the seed has none):
//!       pre = y W_1 + b_1                                  [B*T, F]
//!       h   = gelu(pre)                                    [B*T, F]
//!       out = y + h W_2 + b_2                              [B, T, D]
//!     else out = y
//!     x = out
//! output = x, or with --skip wiener|mixture (an extension): E + q (x - A) on the patch
//!          tokens A (`reference::skip`: E the skip's noise estimate from A, q what it
//!          misses); its gradient is dx = q dy
//! loss = mean over (b, t < g^2, d) of (x - target)^2       target [B, g^2, D]
//! ```
//!
//! Head h of Q (K, V) is columns `h*K .. (h+1)*K` of its block of `qkv`; element (b, t, c) of a
//! `[B*T, n]` matrix is at `(b*T + t)*n + c`; `probs[b, h, i, j]` (query i, key j) is at
//! `((b*H + h)*T + i)*T + j`.
//!
//! Precision: every function is generic over the storage type [`Real`] (`f32` or `f64`). Values
//! are stored in that type, but every sum (dot products, softmax denominators, reductions over
//! the batch) and every element-wise formula is evaluated in `f64` and rounded once when stored.
//! With `f32` this is the reference the GPU kernels are compared with; with `f64` the whole
//! pass is double precision, which is what the finite-difference test of the gradients uses.

use crate::config::{ModelConfig, Skip, NO_LABEL};
use crate::math::params::ParamLayout;
use crate::reference::{gelu, skip};

pub use crate::math::Real;

/// The sizes the loops need, from a [`ModelConfig`].
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Tokens per sample, T = g^2 + 1.
    t: usize,
    /// Patch tokens per sample, g^2 (the ones the loss sees).
    p: usize,
    /// Token width D.
    d: usize,
    /// Heads H.
    h: usize,
    /// Key width K.
    k: usize,
    /// H*K.
    hk: usize,
}

impl Dims {
    fn new(config: &ModelConfig) -> Dims {
        let g = &config.geometry;
        Dims {
            t: g.tokens() as usize,
            p: g.patches() as usize,
            d: g.dim() as usize,
            h: config.heads as usize,
            k: config.key_dim as usize,
            hk: config.hk() as usize,
        }
    }
}

/// The activations of one layer, as the GPU keeps them too.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerForward<F = f32> {
    /// The layer's input x [B, T, D] (x_start for layer 0, else the previous layer's `out`).
    pub x_in: Vec<F>,
    /// x_in W_qkv + b_qkv, [B*T, 3HK]: Q | K | V.
    pub qkv: Vec<F>,
    /// Attention probabilities [B, H, T, T] (query, key); each row sums to 1.
    pub probs: Vec<F>,
    /// Attention output, heads side by side, [B*T, HK].
    pub o: Vec<F>,
    /// The feed-forward block's activations (with `--mlp F`, F > 0).
    pub mlp: Option<FeedForwardActs<F>>,
    /// x after the layer, [B, T, D]: o W_o + b_o + x_start, plus the feed-forward block's
    /// h W_2 + b_2 when there is one.
    pub out: Vec<F>,
}

/// The activations of a layer's feed-forward block.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedForwardActs<F = f32> {
    /// Its input: the attention block's output o W_o + b_o + x_start, [B, T, D].
    pub y: Vec<F>,
    /// y W_1 + b_1, [B*T, F].
    pub pre: Vec<F>,
    /// gelu(pre), [B*T, F].
    pub h: Vec<F>,
}

/// Every activation of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward<F = f32> {
    pub batch: usize,
    /// tokens + pos, [B, T, D].
    pub x_start: Vec<F>,
    /// One entry per layer, in order.
    pub layers: Vec<LayerForward<F>>,
    /// With a skip term (`--skip wiener|mixture|pixel-mixture`): the output [B, T, D] (the
    /// last layer's x with the skip term).
    pub skipped: Option<Vec<F>>,
    /// The input tokens [B, T, D] (the skip's backward and the loss weight read the noise
    /// levels from them).
    pub tokens: Vec<F>,
    /// With --classes: each sample's label (NO_LABEL for "no label").
    pub labels: Vec<u32>,
}

impl<F: Real> Forward<F> {
    /// The model's output [B, T, D] (the last layer's `out`, with the skip term when there is
    /// one; the first g^2 tokens of each sample are the predicted noise patches).
    pub fn output(&self) -> &[F] {
        if let Some(y) = &self.skipped {
            return y;
        }
        match self.layers.last() {
            Some(l) => &l.out,
            None => &self.x_start,
        }
    }
}

/// `params[name]`: one tensor of the flat parameter buffer.
fn tensor<'a, F>(layout: &ParamLayout, params: &'a [F], name: &str) -> &'a [F] {
    &params[layout.get(name).range()]
}

/// `skip.prior` when the layout has it (`--skip pixel-mixture`).
fn prior<'a, F>(layout: &ParamLayout, params: &'a [F]) -> Option<&'a [F]> {
    layout.find("skip.prior").map(|t| &params[t.range()])
}

/// y [M, N] = x [M, I] · w [I, N] + bias [N].
fn linear<F: Real>(x: &[F], w: &[F], bias: &[F], m: usize, i: usize, n: usize) -> Vec<F> {
    let mut y = vec![F::default(); m * n];
    for r in 0..m {
        for c in 0..n {
            let mut acc = bias[c].to_f64();
            for j in 0..i {
                acc += x[r * i + j].to_f64() * w[j * n + c].to_f64();
            }
            y[r * n + c] = F::from_f64(acc);
        }
    }
    y
}

/// Backward of [`linear`] given dy [M, N]: writes dw [I, N] and dbias [N], returns dx [M, I].
#[allow(clippy::too_many_arguments)]
fn linear_backward<F: Real>(
    x: &[F],
    w: &[F],
    dy: &[F],
    m: usize,
    i: usize,
    n: usize,
    dw: &mut [F],
    dbias: &mut [F],
) -> Vec<F> {
    for j in 0..i {
        for c in 0..n {
            let mut acc = 0.0f64;
            for r in 0..m {
                acc += x[r * i + j].to_f64() * dy[r * n + c].to_f64();
            }
            dw[j * n + c] = F::from_f64(acc);
        }
    }
    for c in 0..n {
        let mut acc = 0.0f64;
        for r in 0..m {
            acc += dy[r * n + c].to_f64();
        }
        dbias[c] = F::from_f64(acc);
    }
    let mut dx = vec![F::default(); m * i];
    for r in 0..m {
        for j in 0..i {
            let mut acc = 0.0f64;
            for c in 0..n {
                acc += dy[r * n + c].to_f64() * w[j * n + c].to_f64();
            }
            dx[r * i + j] = F::from_f64(acc);
        }
    }
    dx
}

/// Multi-head self-attention core: qkv [B*T, 3HK] -> (probs [B, H, T, T], o [B*T, HK]).
fn attention<F: Real>(dm: Dims, qkv: &[F], batch: usize) -> (Vec<F>, Vec<F>) {
    let (t, h, k, hk) = (dm.t, dm.h, dm.k, dm.hk);
    let w = 3 * hk;
    let scale = 1.0 / (k as f64).sqrt();
    let mut probs = vec![F::default(); batch * h * t * t];
    let mut o = vec![F::default(); batch * t * hk];
    for b in 0..batch {
        for head in 0..h {
            // Column offsets of this head's Q, K and V.
            let (qc, kc, vc) = (head * k, hk + head * k, 2 * hk + head * k);
            for i in 0..t {
                // Scores of query i against every key j, then a stable softmax.
                let mut s = vec![0.0f64; t];
                for (j, sj) in s.iter_mut().enumerate() {
                    let mut acc = 0.0f64;
                    for c in 0..k {
                        acc += qkv[(b * t + i) * w + qc + c].to_f64()
                            * qkv[(b * t + j) * w + kc + c].to_f64();
                    }
                    *sj = acc * scale;
                }
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|&v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let row = ((b * h + head) * t + i) * t;
                for j in 0..t {
                    probs[row + j] = F::from_f64(e[j] / sum);
                }
                // o = P V (with the stored probabilities).
                for c in 0..k {
                    let mut acc = 0.0f64;
                    for j in 0..t {
                        acc += probs[row + j].to_f64() * qkv[(b * t + j) * w + vc + c].to_f64();
                    }
                    o[(b * t + i) * hk + head * k + c] = F::from_f64(acc);
                }
            }
        }
    }
    (probs, o)
}

/// Backward of [`attention`]: do [B*T, HK] -> dqkv [B*T, 3HK].
fn attention_backward<F: Real>(
    dm: Dims,
    qkv: &[F],
    probs: &[F],
    d_o: &[F],
    batch: usize,
) -> Vec<F> {
    let (t, h, k, hk) = (dm.t, dm.h, dm.k, dm.hk);
    let w = 3 * hk;
    let scale = 1.0 / (k as f64).sqrt();
    let mut dqkv = vec![F::default(); batch * t * w];
    for b in 0..batch {
        for head in 0..h {
            let (qc, kc, vc) = (head * k, hk + head * k, 2 * hk + head * k);
            let at = |row: usize, col: usize| qkv[(b * t + row) * w + col].to_f64();
            let dout = |row: usize, c: usize| d_o[(b * t + row) * hk + head * k + c].to_f64();
            let p = |i: usize, j: usize| probs[((b * h + head) * t + i) * t + j].to_f64();
            // dS = P ⊙ (dP - rowsum(P ⊙ dP)), with dP[i, j] = dO[i] · V[j].
            let mut ds = vec![0.0f64; t * t];
            for i in 0..t {
                let mut dp = vec![0.0f64; t];
                for (j, dpj) in dp.iter_mut().enumerate() {
                    for c in 0..k {
                        *dpj += dout(i, c) * at(j, vc + c);
                    }
                }
                let dot: f64 = (0..t).map(|j| p(i, j) * dp[j]).sum();
                for j in 0..t {
                    ds[i * t + j] = p(i, j) * (dp[j] - dot);
                }
            }
            for r in 0..t {
                for c in 0..k {
                    // dQ[r] = scale * sum_j dS[r, j] K[j]
                    let mut dq = 0.0f64;
                    // dK[r] = scale * sum_i dS[i, r] Q[i]
                    let mut dk = 0.0f64;
                    // dV[r] = sum_i P[i, r] dO[i]
                    let mut dv = 0.0f64;
                    for j in 0..t {
                        dq += ds[r * t + j] * at(j, kc + c);
                        dk += ds[j * t + r] * at(j, qc + c);
                        dv += p(j, r) * dout(j, c);
                    }
                    let row = (b * t + r) * w;
                    dqkv[row + qc + c] = F::from_f64(dq * scale);
                    dqkv[row + kc + c] = F::from_f64(dk * scale);
                    dqkv[row + vc + c] = F::from_f64(dv);
                }
            }
        }
    }
    dqkv
}

fn check_params<F>(config: &ModelConfig, layout: &ParamLayout, params: &[F]) {
    assert_eq!(
        layout,
        &ParamLayout::new(config),
        "the parameter layout does not belong to this model configuration"
    );
    assert_eq!(params.len(), layout.total, "params: wrong length");
}

/// The forward pass for `batch` samples of `tokens` [B, T, D], keeping every activation
/// (a class-conditional model sees "no label" for every sample: [`forward_labelled`]).
pub fn forward<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    batch: usize,
) -> Forward<F> {
    forward_labelled(config, layout, params, tokens, &[], batch)
}

/// The labels a conditional model sees: `labels` [B], or "no label" for all when empty.
fn labels_of(config: &ModelConfig, labels: &[u32], batch: usize) -> Vec<u32> {
    if !config.classes {
        assert!(labels.is_empty(), "labels given to an unconditional model");
        return vec![];
    }
    if labels.is_empty() {
        return vec![NO_LABEL; batch];
    }
    assert_eq!(labels.len(), batch, "labels: expected [B]");
    labels.to_vec()
}

/// x_start = tokens + pos, and with --classes the label's embedding added to each sample's
/// conditioning token.
fn embed<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    labels: &[u32],
) -> Vec<F> {
    let dm = Dims::new(config);
    let (t, d) = (dm.t, dm.d);
    let pos = tensor(layout, params, "pos");
    let mut x: Vec<f64> = (0..tokens.len())
        .map(|i| tokens[i].to_f64() + pos[i % (t * d)].to_f64())
        .collect();
    if config.classes {
        let table = tensor(layout, params, "label");
        for (b, &l) in labels.iter().enumerate() {
            let row = l.min(NO_LABEL) as usize;
            for c in 0..d {
                x[(b * t + t - 1) * d + c] += table[row * d + c].to_f64();
            }
        }
    }
    x.into_iter().map(F::from_f64).collect()
}

/// [`forward`] of a class-conditional model with sample b labelled `labels[b]` (empty: "no
/// label" for every sample).
pub fn forward_labelled<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    labels: &[u32],
    batch: usize,
) -> Forward<F> {
    let dm = Dims::new(config);
    let (t, d, hk) = (dm.t, dm.d, dm.hk);
    check_params(config, layout, params);
    assert_eq!(tokens.len(), batch * t * d, "tokens: expected [B, T, D]");
    let m = batch * t;
    let labels = labels_of(config, labels, batch);
    let x_start = embed(config, layout, params, tokens, &labels);
    let mut layers = Vec::with_capacity(config.layers as usize);
    let mut x = x_start.clone();
    for l in 0..config.layers {
        let p = |n: &str| tensor(layout, params, &format!("layer{l}.{n}"));
        let qkv = linear(&x, p("w_qkv"), p("b_qkv"), m, d, 3 * hk);
        let (probs, o) = attention(dm, &qkv, batch);
        let proj = linear(&o, p("w_o"), p("b_o"), m, hk, d);
        // The residual adds x_start, not the layer's input (docs/model.md §3).
        let y: Vec<F> = (0..m * d)
            .map(|i| F::from_f64(proj[i].to_f64() + x_start[i].to_f64()))
            .collect();
        let (mlp, out) = if config.mlp > 0 {
            let f = config.mlp as usize;
            let pre = linear(&y, p("w_1"), p("b_1"), m, d, f);
            let h: Vec<F> = pre
                .iter()
                .map(|v| F::from_f64(gelu::gelu(v.to_f64())))
                .collect();
            let ffn = linear(&h, p("w_2"), p("b_2"), m, f, d);
            let out = (0..m * d)
                .map(|i| F::from_f64(y[i].to_f64() + ffn[i].to_f64()))
                .collect();
            (Some(FeedForwardActs { y, pre, h }), out)
        } else {
            (None, y)
        };
        let x_in = std::mem::replace(&mut x, out.clone());
        layers.push(LayerForward {
            x_in,
            qkv,
            probs,
            o,
            mlp,
            out,
        });
    }
    let skipped = match config.skip {
        Skip::Identity => None,
        kind => Some(skip::skip_forward(
            kind,
            prior(layout, params),
            &x,
            tokens,
            batch,
            t,
            d,
        )),
    };
    Forward {
        batch,
        x_start,
        layers,
        skipped,
        tokens: tokens.to_vec(),
        labels,
    }
}

/// Mean over (b, t < g^2, d) of w_b (output - target)^2: `output` [B, T, D] (the conditioning
/// token is ignored), `target` [B, g^2, D], w_b sample b's loss weight from its noise level in
/// `tokens` [B, T, D] (`reference::loss::level_weight`; 1 with `loss_weight_max` = 1).
pub fn loss<F: Real>(
    config: &ModelConfig,
    output: &[F],
    tokens: &[F],
    target: &[F],
    batch: usize,
) -> F {
    let (o, tg, w, dm) = loss_inputs(config, output, tokens, target, batch);
    F::from_f64(crate::reference::loss::mse_f64(
        &o, &tg, &w, batch, dm.t, dm.p, dm.d,
    ))
}

/// Gradient of [`loss`] w.r.t. the output, [B, T, D]: `2 w_b (output - target) / (B g^2 D)` on
/// the patch tokens, zero on the conditioning token.
pub fn loss_backward<F: Real>(
    config: &ModelConfig,
    output: &[F],
    tokens: &[F],
    target: &[F],
    batch: usize,
) -> Vec<F> {
    let (o, tg, w, dm) = loss_inputs(config, output, tokens, target, batch);
    crate::reference::loss::mse_backward_f64(&o, &tg, &w, batch, dm.t, dm.p, dm.d)
        .into_iter()
        .map(F::from_f64)
        .collect()
}

/// The loss's inputs in f64 and the sample weights.
fn loss_inputs<F: Real>(
    config: &ModelConfig,
    output: &[F],
    tokens: &[F],
    target: &[F],
    batch: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Dims) {
    let dm = Dims::new(config);
    assert_eq!(
        output.len(),
        batch * dm.t * dm.d,
        "output: expected [B, T, D]"
    );
    assert_eq!(
        target.len(),
        batch * dm.p * dm.d,
        "target: expected [B, g^2, D]"
    );
    let f64s = |v: &[F]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let w = crate::reference::loss::sample_weights(
        &f64s(tokens),
        batch,
        dm.t,
        dm.d,
        config.loss_weight_max,
    );
    (f64s(output), f64s(target), w, dm)
}

/// Gradients of [`loss`] w.r.t. every parameter, in `layout` (padding zero), from the
/// activations of [`forward`].
pub fn backward<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    fwd: &Forward<F>,
    target: &[F],
    batch: usize,
) -> Vec<F> {
    let dm = Dims::new(config);
    let (t, d, hk) = (dm.t, dm.d, dm.hk);
    check_params(config, layout, params);
    assert_eq!(fwd.batch, batch, "forward pass of another batch size");
    let m = batch * t;
    let mut grads = vec![F::default(); layout.total];
    // d x_start, accumulated in f64: every layer's residual plus layer 0's input gradient.
    let mut dx_start = vec![0.0f64; m * d];
    // Gradient w.r.t. the current layer's output.
    let mut dx = loss_backward(config, fwd.output(), &fwd.tokens, target, batch);
    if fwd.skipped.is_some() {
        let tokens = &fwd.tokens;
        dx = skip::skip_backward(config.skip, prior(layout, params), &dx, tokens, batch, t, d);
    }
    for l in (0..config.layers as usize).rev() {
        let act = &fwd.layers[l];
        let p = |n: &str| tensor(layout, params, &format!("layer{l}.{n}"));
        let (w_qkv, w_o) = (p("w_qkv"), p("w_o"));
        let spec = |n: &str| layout.get(&format!("layer{l}.{n}")).range();
        // out = y + gelu(y W_1 + b_1) W_2 + b_2: dx becomes the gradient w.r.t. y.
        if let Some(mlp) = &act.mlp {
            let f = config.mlp as usize;
            let (mut dw, mut db) = (vec![F::default(); f * d], vec![F::default(); d]);
            let dh = linear_backward(&mlp.h, p("w_2"), &dx, m, f, d, &mut dw, &mut db);
            grads[spec("w_2")].copy_from_slice(&dw);
            grads[spec("b_2")].copy_from_slice(&db);
            let dpre: Vec<F> = dh
                .iter()
                .zip(&mlp.pre)
                .map(|(g, v)| F::from_f64(g.to_f64() * gelu::gelu_grad(v.to_f64())))
                .collect();
            let (mut dw, mut db) = (vec![F::default(); d * f], vec![F::default(); f]);
            let dy = linear_backward(&mlp.y, p("w_1"), &dpre, m, d, f, &mut dw, &mut db);
            grads[spec("w_1")].copy_from_slice(&dw);
            grads[spec("b_1")].copy_from_slice(&db);
            dx = dx
                .iter()
                .zip(&dy)
                .map(|(a, b)| F::from_f64(a.to_f64() + b.to_f64()))
                .collect();
        }
        // y = proj + x_start
        for (a, g) in dx_start.iter_mut().zip(&dx) {
            *a += g.to_f64();
        }
        // proj = o W_o + b_o
        let (mut dw, mut db) = (vec![F::default(); hk * d], vec![F::default(); d]);
        let d_o = linear_backward(&act.o, w_o, &dx, m, hk, d, &mut dw, &mut db);
        grads[spec("w_o")].copy_from_slice(&dw);
        grads[spec("b_o")].copy_from_slice(&db);
        // o = attention(qkv)
        let dqkv = attention_backward(dm, &act.qkv, &act.probs, &d_o, batch);
        // qkv = x_in W_qkv + b_qkv
        let (mut dw, mut db) = (vec![F::default(); d * 3 * hk], vec![F::default(); 3 * hk]);
        dx = linear_backward(&act.x_in, w_qkv, &dqkv, m, d, 3 * hk, &mut dw, &mut db);
        grads[spec("w_qkv")].copy_from_slice(&dw);
        grads[spec("b_qkv")].copy_from_slice(&db);
    }
    // Layer 0's input is x_start itself (with no layers, dx is the loss gradient).
    for (a, g) in dx_start.iter_mut().zip(&dx) {
        *a += g.to_f64();
    }
    // x_start = tokens + pos: dpos = sum over the batch.
    let dpos = &mut grads[layout.get("pos").range()];
    for (i, v) in dpos.iter_mut().enumerate() {
        let sum: f64 = (0..batch).map(|b| dx_start[b * t * d + i]).sum();
        *v = F::from_f64(sum);
    }
    // The label embedding: each row's gradient sums the conditioning rows of its samples.
    if config.classes {
        let mut dtable = vec![0.0f64; layout.get("label").len()];
        for (b, &l) in fwd.labels.iter().enumerate() {
            let row = l.min(NO_LABEL) as usize;
            for c in 0..d {
                dtable[row * d + c] += dx_start[(b * t + t - 1) * d + c];
            }
        }
        let out = &mut grads[layout.get("label").range()];
        for (o, v) in out.iter_mut().zip(dtable) {
            *o = F::from_f64(v);
        }
    }
    grads
}

/// Loss and parameter gradients of one batch: [`forward`], [`loss`], [`backward`].
pub fn loss_and_grad<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    target: &[F],
    batch: usize,
) -> (F, Vec<F>) {
    loss_and_grad_labelled(config, layout, params, tokens, &[], target, batch)
}

/// [`loss_and_grad`] with sample b labelled `labels[b]` ([`forward_labelled`]).
pub fn loss_and_grad_labelled<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    labels: &[u32],
    target: &[F],
    batch: usize,
) -> (F, Vec<F>) {
    let fwd = forward_labelled(config, layout, params, tokens, labels, batch);
    let l = loss(config, fwd.output(), tokens, target, batch);
    (l, backward(config, layout, params, &fwd, target, batch))
}

/// The sampler's model call: the predicted noise patches [B, g^2, D] (the output without the
/// conditioning token).
pub fn predict_noise<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    batch: usize,
) -> Vec<F> {
    predict_noise_labelled(config, layout, params, tokens, &[], batch)
}

/// [`predict_noise`] with sample b labelled `labels[b]` (empty: "no label").
pub fn predict_noise_labelled<F: Real>(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[F],
    tokens: &[F],
    labels: &[u32],
    batch: usize,
) -> Vec<F> {
    let dm = Dims::new(config);
    let (t, p, d) = (dm.t, dm.p, dm.d);
    let fwd = forward_labelled(config, layout, params, tokens, labels, batch);
    let out = fwd.output();
    (0..batch)
        .flat_map(|b| out[b * t * d..(b * t + p) * d].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::recipe::Preset;

    #[test]
    fn tiny_shapes_and_softmax_rows() {
        let config = Preset::Tiny.model();
        let layout = ParamLayout::new(&config);
        let params = layout.init(3);
        let (b, t, d) = (2, 17, 100);
        let tokens: Vec<f32> = (0..b * t * d)
            .map(|i| ((i % 13) as f32 - 6.0) / 12.0)
            .collect();
        let fwd = forward(&config, &layout, &params, &tokens, b);
        assert_eq!(fwd.layers.len(), 1);
        let l = &fwd.layers[0];
        assert_eq!(l.qkv.len(), b * t * 48);
        assert_eq!(l.probs.len(), b * 2 * t * t);
        assert_eq!(l.o.len(), b * t * 16);
        for row in l.probs.chunks(t) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
        assert_eq!(
            predict_noise(&config, &layout, &params, &tokens, b).len(),
            b * 16 * d
        );
        let target = vec![0.0f32; b * 16 * d];
        let (loss, grads) = loss_and_grad(&config, &layout, &params, &tokens, &target, b);
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        assert_eq!(grads.len(), layout.total);
    }
}
