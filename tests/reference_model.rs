//! The CPU reference of the whole model (`reference::model`): its gradients against central
//! finite differences of its loss (in f64) for every parameter tensor, on the `tiny` preset and
//! on a two-layer model with an odd geometry; that the check can fail; and the forward pass's
//! layouts and the seed's quirks of docs/model.md §3 (x_start residual, conditioning token, loss
//! over g^2 tokens only).

use wgpu_diffusion::config::{Geometry, ModelConfig, Skip, NO_LABEL};
use wgpu_diffusion::model::{ParamLayout, TensorSpec};
use wgpu_diffusion::reference::model::{self, Forward};
use wgpu_diffusion::reference::{gelu, noise, patches};
use wgpu_diffusion::settings::recipe::Preset;
use wgpu_diffusion::testing::{random_prior, uniform_data};

/// One model with its parameters and one batch of inputs, in f64.
struct Case {
    name: &'static str,
    config: ModelConfig,
    layout: ParamLayout,
    batch: usize,
    params: Vec<f64>,
    tokens: Vec<f64>,
    target: Vec<f64>,
    /// With --classes: each sample's label (empty for an unconditional model).
    labels: Vec<u32>,
}

/// `tiny`: P=6, O=2, g=4, T=17, D=100, L=1, H=2, K=8.
fn tiny() -> ModelConfig {
    Preset::Tiny.model()
}

/// P=13, O=1: g=2, T=5, D=225; L=2, H=3, K=5 (odd sizes, two layers).
fn odd() -> ModelConfig {
    ModelConfig {
        geometry: Geometry::new(13, 1).unwrap(),
        layers: 2,
        heads: 3,
        key_dim: 5,
        mlp: 0,
        skip: Skip::Identity,
        loss_weight_max: 1,
        classes: false,
    }
}

/// `cfg` with a feed-forward block of hidden width `f` after each attention layer.
fn with_mlp(config: ModelConfig, f: u32) -> ModelConfig {
    ModelConfig { mlp: f, ..config }
}

/// Keras-initialised weights (`layout.init`) but small random biases; `qk_gain` multiplies the
/// Q and K blocks of every W_qkv (to make the softmax far from uniform). Tokens are the patches
/// of random images in [-0.5, 0.5) with a conditioning value in (0, 1]; targets are the patches
/// of N(0, 1) noise, as in training.
fn case(name: &'static str, config: ModelConfig, batch: usize, seed: u64, qk_gain: f64) -> Case {
    let g = config.geometry;
    let layout = ParamLayout::new(&config);
    let mut params: Vec<f64> = layout.init(seed).iter().map(|&v| v as f64).collect();
    let hk = config.hk() as usize;
    for (i, t) in layout.tensors.iter().enumerate() {
        let r = t.range();
        if !t.trained() {
            // skip.prior: a per-position prior unlike the global one.
            let p = random_prior(t.len() / 3, seed + 50);
            for (v, p) in params[r].iter_mut().zip(p) {
                *v = p as f64;
            }
        } else if t.name.contains(".b_") {
            let u = uniform_data(t.len(), seed * 100 + i as u64);
            for (p, u) in params[r].iter_mut().zip(u) {
                *p = 0.05 * u as f64;
            }
        } else if t.name.ends_with(".w_qkv") {
            for (j, p) in params[r].iter_mut().enumerate() {
                if j % (3 * hk) < 2 * hk {
                    *p *= qk_gain;
                }
            }
        }
    }
    let px = g.pixels() as usize;
    let images: Vec<f32> = uniform_data(batch * px, seed + 1)
        .iter()
        .map(|v| 0.5 * v)
        .collect();
    let cond: Vec<f32> = uniform_data(batch, seed + 2)
        .iter()
        .map(|v| 1.0 - 0.495 * (v + 1.0))
        .collect();
    assert!(cond.iter().all(|&c| c > 0.0 && c <= 1.0));
    let tokens = patches::patches_forward(&g, &images, &cond, g.tokens() as usize);
    let noise = noise::fill_normal(seed, 0, 3, batch * px);
    let target = patches::patches_forward(&g, &noise, &cond, g.patches() as usize);
    let f64s = |v: Vec<f32>| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    Case {
        name,
        config,
        layout,
        batch,
        params,
        tokens: f64s(tokens),
        target: f64s(target),
        labels: match config.classes {
            true => (0..batch).map(|b| [7, NO_LABEL, 7, 2][b % 4]).collect(),
            false => vec![],
        },
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("tiny B=2", tiny(), 2, 11, 1.0),
        case("tiny B=3 peaked", tiny(), 3, 12, 6.0),
        case("odd L=2 B=3", odd(), 3, 13, 1.0),
        case("odd L=2 B=2 peaked", odd(), 2, 14, 8.0),
        case("tiny mlp 7 B=2", with_mlp(tiny(), 7), 2, 15, 1.0),
        case("odd L=2 mlp 12 B=2 peaked", with_mlp(odd(), 12), 2, 16, 6.0),
        case(
            "tiny mlp 5 wiener skip B=2",
            ModelConfig {
                skip: Skip::Wiener,
                ..with_mlp(tiny(), 5)
            },
            2,
            17,
            1.0,
        ),
        case(
            "tiny mlp 6 pixel-mixture skip loss weight 30 B=2",
            ModelConfig {
                skip: Skip::PixelMixture,
                loss_weight_max: 30,
                ..with_mlp(tiny(), 6)
            },
            2,
            19,
            1.0,
        ),
        case(
            "tiny classes B=3",
            ModelConfig {
                classes: true,
                ..tiny()
            },
            3,
            20,
            1.0,
        ),
        case(
            "odd L=2 mlp 4 wiener skip classes B=4",
            ModelConfig {
                classes: true,
                skip: Skip::Wiener,
                ..with_mlp(odd(), 4)
            },
            4,
            21,
            1.0,
        ),
        case(
            "odd L=2 mixture skip B=3",
            ModelConfig {
                skip: Skip::Mixture,
                ..odd()
            },
            3,
            18,
            1.0,
        ),
    ]
}

fn loss_at(c: &Case, params: &[f64]) -> f64 {
    let f = model::forward_labelled(&c.config, &c.layout, params, &c.tokens, &c.labels, c.batch);
    model::loss(&c.config, f.output(), &c.tokens, &c.target, c.batch)
}

/// Indices checked in a tensor of `len` entries: all of them for small tensors, else a
/// deterministic sample of `sample` entries spread over the whole tensor.
fn indices(len: usize, sample: usize, seed: u64) -> Vec<usize> {
    if len <= 2 * sample {
        return (0..len).collect();
    }
    // One random index in each of `sample` equal strata, so every region (e.g. Q, K and V
    // columns of W_qkv, every row of pos) is visited.
    let u = uniform_data(sample, seed);
    (0..sample)
        .map(|s| {
            let lo = s * len / sample;
            let hi = (s + 1) * len / sample;
            lo + (((u[s] as f64 + 1.0) / 2.0 * (hi - lo) as f64) as usize).min(hi - lo - 1)
        })
        .collect()
}

const EPS: f64 = 1e-4;
/// Tolerance: |fd - analytic| <= REL * max(|fd|, |analytic|) + ABS * (largest |gradient|)
/// + ROUND * |loss| / EPS.
const REL: f64 = 1e-6;
const ABS: f64 = 1e-8;
/// Plus the resolution of a central difference of an f64 loss L: rounding of about
/// `ROUND * |L|` in each evaluation, divided by EPS.
const ROUND: f64 = 1e-14;

/// Central differences of the loss for `per_tensor` sampled entries of every tensor, against
/// `grads`. Returns the number of entries checked, or a message naming the first mismatches.
fn fd_check(c: &Case, grads: &[f64], per_tensor: usize) -> Result<usize, String> {
    fd_check_entries(c, grads, |ti, t| {
        if t.trained() {
            indices(t.len(), per_tensor, 1000 + ti as u64)
        } else {
            vec![]
        }
    })
}

/// As [`fd_check`] for the entries `pick(tensor index, tensor)` of each tensor.
fn fd_check_entries(
    c: &Case,
    grads: &[f64],
    pick: impl Fn(usize, &TensorSpec) -> Vec<usize>,
) -> Result<usize, String> {
    let scale = grads.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let floor = ROUND * loss_at(c, &c.params).abs() / EPS;
    let mut params = c.params.clone();
    let mut bad = Vec::new();
    let mut count = 0;
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for (ti, t) in c.layout.tensors.iter().enumerate() {
        for j in pick(ti, t) {
            let i = t.offset + j;
            let p0 = params[i];
            params[i] = p0 + EPS;
            let up = loss_at(c, &params);
            params[i] = p0 - EPS;
            let down = loss_at(c, &params);
            params[i] = p0;
            let fd = (up - down) / (2.0 * EPS);
            let an = grads[i];
            let err = (fd - an).abs();
            let tol = REL * fd.abs().max(an.abs()) + ABS * scale + floor;
            worst = worst.max(err / tol);
            checked += 1;
            if err.is_nan() || err > tol {
                count += 1;
                if bad.len() < 10 {
                    let cols = *t.shape.last().unwrap();
                    bad.push(format!(
                        "  {}[{j}] (row {}, col {}): fd {fd:e}, analytic {an:e}, |err| {err:e} > tol {tol:e}",
                        t.name,
                        j / cols,
                        j % cols
                    ));
                }
            }
        }
    }
    if count == 0 {
        eprintln!(
            "{}: {checked} entries agree (worst |err|/tol {worst:.3}, max |grad| {scale:e})",
            c.name
        );
        Ok(checked)
    } else {
        Err(format!(
            "{}: {count} of {checked} gradient entries differ from finite differences; first:\n{}",
            c.name,
            bad.join("\n")
        ))
    }
}

#[test]
fn gradients_match_finite_differences() {
    for c in cases() {
        let (_, grads) = model::loss_and_grad_labelled(
            &c.config, &c.layout, &c.params, &c.tokens, &c.labels, &c.target, c.batch,
        );
        assert_eq!(grads.len(), c.layout.total);
        // Padding between tensors stays zero.
        let mut used = vec![false; c.layout.total];
        for t in &c.layout.tensors {
            used[t.range()].fill(true);
            let norm: f64 = grads[t.range()].iter().map(|g| g * g).sum();
            if t.trained() {
                assert!(norm > 0.0, "{}: gradient of {} is all zero", c.name, t.name);
            } else {
                // skip.prior is data, not a weight: Adam must see a zero gradient.
                assert_eq!(norm, 0.0, "{}: {} has a gradient", c.name, t.name);
            }
        }
        assert!(grads.iter().zip(&used).all(|(&g, &u)| u || g == 0.0));
        if let Err(m) = fd_check(&c, &grads, 40) {
            panic!("{m}");
        }
    }
}

/// The check is tight enough to catch the typical mistakes: a dropped 1/sqrt(K) in the Q/K
/// gradients, a missing x_start residual gradient in dpos, a factor 2 in the loss gradient of
/// one tensor, a 1e-3 relative error in a single entry.
#[test]
fn finite_difference_check_catches_wrong_gradients() {
    let c = case("odd L=2 B=2", odd(), 2, 21, 1.0);
    let fwd: Forward<f64> = model::forward(&c.config, &c.layout, &c.params, &c.tokens, c.batch);
    let grads = model::backward(&c.config, &c.layout, &c.params, &fwd, &c.target, c.batch);
    let hk = c.config.hk() as usize;
    let sqrt_k = (c.config.key_dim as f64).sqrt();
    let t = c.config.geometry.tokens() as usize;
    let d = c.config.geometry.dim() as usize;
    let lay = &c.layout;

    let mut no_scale = grads.clone();
    for name in ["layer0.w_qkv", "layer1.w_qkv"] {
        for (j, g) in no_scale[lay.get(name).range()].iter_mut().enumerate() {
            if j % (3 * hk) < 2 * hk {
                *g *= sqrt_k;
            }
        }
    }
    // dpos without the residual gradients: only layer 0's input gradient (sum over batch).
    let mut no_residual = grads.clone();
    let dy = model::loss_backward(&c.config, fwd.output(), &c.tokens, &c.target, c.batch);
    let pos = lay.get("pos").range();
    for (i, g) in no_residual[pos.clone()].iter_mut().enumerate() {
        // Each of the two layers added dy-derived residual gradient; remove the last layer's.
        let r: f64 = (0..c.batch).map(|b| dy[b * t * d + i]).sum();
        *g -= r;
    }
    let mut doubled = grads.clone();
    for g in &mut doubled[lay.get("layer1.b_o").range()] {
        *g *= 2.0;
    }
    let mut one_entry = grads.clone();
    one_entry[lay.get("layer0.w_o").offset + 7] *= 1.001;

    for (what, g) in [
        ("no 1/sqrt(K)", &no_scale),
        ("no residual", &no_residual),
        ("2x b_o", &doubled),
    ] {
        let r = fd_check(&c, g, 20);
        assert!(
            r.is_err(),
            "{what}: the finite-difference check passed a wrong gradient"
        );
        eprintln!("{what}: caught: {}", r.unwrap_err().lines().next().unwrap());
    }
    // The single wrong entry, checked on its own.
    let only = |_: usize, t: &TensorSpec| {
        if t.name == "layer0.w_o" {
            vec![7]
        } else {
            vec![]
        }
    };
    assert!(fd_check_entries(&c, &grads, only).is_ok());
    let r = fd_check_entries(&c, &one_entry, only);
    assert!(r.is_err(), "a 1e-3 relative error in one entry passed");
    eprintln!("one entry 1e-3 off: caught: {}", r.unwrap_err());
}

/// The f32 reference (what the GPU is compared with) agrees with the f64 one.
#[test]
fn f32_reference_agrees_with_f64() {
    for c in cases() {
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (p, x, y) = (f32s(&c.params), f32s(&c.tokens), f32s(&c.target));
        let (l32, g32) = model::loss_and_grad(&c.config, &c.layout, &p, &x, &y, c.batch);
        let (l64, g64) = model::loss_and_grad(
            &c.config, &c.layout, &c.params, &c.tokens, &c.target, c.batch,
        );
        assert!(
            ((l32 as f64) - l64).abs() <= 1e-6 * l64,
            "{}: {l32} vs {l64}",
            c.name
        );
        let scale = g64.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (i, (&a, &b)) in g32.iter().zip(&g64).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 1e-4 * b.abs() + 1e-5 * scale,
                "{}: grad[{i}] {a} vs {b}",
                c.name
            );
        }
    }
}

/// With pos = 0 and every weight and bias 0: attention is uniform, o = 0, the output is the
/// input tokens exactly and the loss is the MSE of the patch tokens against the target.
#[test]
fn zero_model_is_identity() {
    for config in [tiny(), odd(), with_mlp(odd(), 5)] {
        let g = config.geometry;
        let (t, p, d) = (g.tokens() as usize, g.patches() as usize, g.dim() as usize);
        let layout = ParamLayout::new(&config);
        let params = vec![0.0f32; layout.total];
        let b = 3;
        let tokens: Vec<f32> = uniform_data(b * t * d, 5).iter().map(|v| 0.5 * v).collect();
        let target = uniform_data(b * p * d, 6);
        let fwd = model::forward(&config, &layout, &params, &tokens, b);
        assert_eq!(fwd.x_start, tokens);
        assert_eq!(fwd.layers.len(), config.layers as usize);
        for l in &fwd.layers {
            assert_eq!(l.x_in.len(), b * t * d);
            assert_eq!(l.qkv.len(), b * t * 3 * config.hk() as usize);
            assert_eq!(l.probs.len(), b * config.heads as usize * t * t);
            assert_eq!(l.o.len(), b * t * config.hk() as usize);
            assert_eq!(l.out, tokens);
            let u = 1.0 / t as f32;
            assert!(l.probs.iter().all(|&v| (v - u).abs() < 1e-7));
            assert!(l.o.iter().all(|&v| v == 0.0));
        }
        assert_eq!(fwd.output(), &tokens[..]);
        let mut want = 0.0f64;
        for s in 0..b {
            for i in 0..p * d {
                let e = (tokens[s * t * d + i] - target[s * p * d + i]) as f64;
                want += e * e;
            }
        }
        want /= (b * p * d) as f64;
        let got = model::loss(&config, fwd.output(), &tokens, &target, b);
        assert!((got as f64 - want).abs() <= 1e-6 * want, "{got} vs {want}");
        let pred = model::predict_noise(&config, &layout, &params, &tokens, b);
        assert_eq!(pred.len(), b * p * d);
        for s in 0..b {
            assert_eq!(
                pred[s * p * d..(s + 1) * p * d],
                tokens[s * t * d..(s * t + p) * d]
            );
        }
    }
}

/// Every layer's residual adds x_start (not the layer's input): with W_o = 0 and b_o = c_l the
/// output is x_start + c_last, whatever the other layers did. The conditioning token is not
/// in the loss: changing the output there changes nothing.
#[test]
fn residual_is_x_start_and_loss_skips_conditioning_token() {
    let c = case("odd", odd(), 2, 31, 1.0);
    let mut params = c.params.clone();
    for l in 0..2 {
        params[c.layout.get(&format!("layer{l}.w_o")).range()].fill(0.0);
        params[c.layout.get(&format!("layer{l}.b_o")).range()].fill(0.25 + l as f64);
    }
    let fwd = model::forward(&c.config, &c.layout, &params, &c.tokens, c.batch);
    for (o, x) in fwd.output().iter().zip(&fwd.x_start) {
        assert!((o - (x + 1.25)).abs() < 1e-12, "{o} vs {x} + 1.25");
    }
    assert_eq!(fwd.layers[1].x_in, fwd.layers[0].out);
    assert_eq!(fwd.layers[0].x_in, fwd.x_start);

    let g = c.config.geometry;
    let (t, p, d) = (g.tokens() as usize, g.patches() as usize, g.dim() as usize);
    let mut out = fwd.output().to_vec();
    let before = model::loss(&c.config, &out, &c.tokens, &c.target, c.batch);
    for b in 0..c.batch {
        out[(b * t + p) * d..(b + 1) * t * d].fill(123.0);
    }
    assert_eq!(
        model::loss(&c.config, &out, &c.tokens, &c.target, c.batch),
        before
    );
    let dy = model::loss_backward(&c.config, &out, &c.tokens, &c.target, c.batch);
    for b in 0..c.batch {
        assert!(dy[(b * t + p) * d..(b + 1) * t * d]
            .iter()
            .all(|&v| v == 0.0));
    }
}

/// The stored activations follow the documented layouts: x_start = tokens + pos; qkv is
/// x_in W_qkv + b_qkv with Q | K | V column blocks; probs[b, h, i, j] is the softmax over j of
/// Q_h[i] · K_h[j] / sqrt(K) with head h in columns h*K..(h+1)*K; o = probs V_h; out = o W_o +
/// b_o + x_start. Recomputed here entry by entry for every layer of the two-layer model.
#[test]
fn activations_follow_documented_layouts() {
    let c = case("odd peaked", odd(), 2, 41, 4.0);
    let (config, lay, prm) = (&c.config, &c.layout, &c.params);
    let g = config.geometry;
    let (t, d) = (g.tokens() as usize, g.dim() as usize);
    let (h, k, hk) = (
        config.heads as usize,
        config.key_dim as usize,
        config.hk() as usize,
    );
    let fwd = model::forward(config, lay, prm, &c.tokens, c.batch);
    let pos = &prm[lay.get("pos").range()];
    for b in 0..c.batch {
        for (i, p) in pos.iter().enumerate() {
            let want = c.tokens[b * t * d + i] + p;
            assert!((fwd.x_start[b * t * d + i] - want).abs() < 1e-12);
        }
    }
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        )
    };
    let mut peak: f64 = 0.0;
    for (l, act) in fwd.layers.iter().enumerate() {
        let w = |n: &str| &prm[lay.get(&format!("layer{l}.{n}")).range()];
        let (w_qkv, b_qkv, w_o, b_o) = (w("w_qkv"), w("b_qkv"), w("w_o"), w("b_o"));
        for b in 0..c.batch {
            for i in 0..t {
                let row = b * t + i;
                for col in 0..3 * hk {
                    let mut s = b_qkv[col];
                    for j in 0..d {
                        s += act.x_in[row * d + j] * w_qkv[j * 3 * hk + col];
                    }
                    close(act.qkv[row * 3 * hk + col], s, "qkv");
                }
            }
            for head in 0..h {
                let q = |i: usize, c: usize| act.qkv[(b * t + i) * 3 * hk + head * k + c];
                let key = |i: usize, c: usize| act.qkv[(b * t + i) * 3 * hk + hk + head * k + c];
                let v = |i: usize, c: usize| act.qkv[(b * t + i) * 3 * hk + 2 * hk + head * k + c];
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..k).map(|c| q(i, c) * key(j, c)).sum::<f64>() / (k as f64).sqrt()
                        })
                        .collect();
                    let z: f64 = s.iter().map(|v| v.exp()).sum();
                    for (j, sj) in s.iter().enumerate() {
                        let p = act.probs[((b * h + head) * t + i) * t + j];
                        close(p, sj.exp() / z, "probs");
                        peak = peak.max(p);
                    }
                    for c in 0..k {
                        let want: f64 = (0..t)
                            .map(|j| act.probs[((b * h + head) * t + i) * t + j] * v(j, c))
                            .sum();
                        close(act.o[(b * t + i) * hk + head * k + c], want, "o");
                    }
                }
            }
            for i in 0..t {
                let row = b * t + i;
                for col in 0..d {
                    let mut s = b_o[col] + fwd.x_start[row * d + col];
                    for j in 0..hk {
                        s += act.o[row * hk + j] * w_o[j * d + col];
                    }
                    close(act.out[row * d + col], s, "out");
                }
            }
        }
    }
    // The case is not trivially uniform attention (1/T = 0.2).
    assert!(peak > 0.3, "max probability {peak}");
}

/// The feed-forward block follows its documented layout: y = o W_o + b_o + x_start,
/// pre = y W_1 + b_1, h = gelu(pre), out = y + h W_2 + b_2 (recomputed entry by entry), and
/// the next layer reads `out`.
#[test]
fn mlp_block_follows_documented_layout() {
    let c = case("odd mlp 6", with_mlp(odd(), 6), 2, 51, 2.0);
    let (config, lay, prm) = (&c.config, &c.layout, &c.params);
    let (m, d, f) = (
        c.batch * config.geometry.tokens() as usize,
        config.geometry.dim() as usize,
        config.mlp as usize,
    );
    let hk = config.hk() as usize;
    let fwd = model::forward(config, lay, prm, &c.tokens, c.batch);
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        )
    };
    for (l, act) in fwd.layers.iter().enumerate() {
        let w = |n: &str| &prm[lay.get(&format!("layer{l}.{n}")).range()];
        let mlp = act
            .mlp
            .as_ref()
            .expect("a layer with --mlp has a feed-forward block");
        for r in 0..m {
            for j in 0..d {
                let mut s = w("b_o")[j] + fwd.x_start[r * d + j];
                for i in 0..hk {
                    s += act.o[r * hk + i] * w("w_o")[i * d + j];
                }
                close(mlp.y[r * d + j], s, "y");
            }
            for j in 0..f {
                let mut s = w("b_1")[j];
                for i in 0..d {
                    s += mlp.y[r * d + i] * w("w_1")[i * f + j];
                }
                close(mlp.pre[r * f + j], s, "pre");
                close(mlp.h[r * f + j], gelu::gelu(s), "h");
            }
            for j in 0..d {
                let mut s = w("b_2")[j] + mlp.y[r * d + j];
                for i in 0..f {
                    s += mlp.h[r * f + i] * w("w_2")[i * d + j];
                }
                close(act.out[r * d + j], s, "out");
            }
        }
    }
    assert_eq!(fwd.layers[1].x_in, fwd.layers[0].out);
    // The block is not the identity: the output differs from the attention block's y.
    let first = fwd.layers[0].mlp.as_ref().unwrap();
    assert!(first
        .y
        .iter()
        .zip(&fwd.layers[0].out)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

/// The finite-difference check catches a wrong gradient inside the feed-forward block: a
/// gelu' evaluated without its x-dependent term (what a hand-derived slip looks like) and a
/// dropped residual (the block's input gradient not added to the layer's output gradient).
#[test]
fn finite_difference_check_catches_wrong_mlp_gradients() {
    let c = case("odd mlp 6", with_mlp(odd(), 6), 2, 61, 1.0);
    let (_, grads) = model::loss_and_grad(
        &c.config, &c.layout, &c.params, &c.tokens, &c.target, c.batch,
    );
    assert!(fd_check(&c, &grads, 20).is_ok());
    let lay = &c.layout;
    let mut half = grads.clone();
    for g in &mut half[lay.get("layer0.w_1").range()] {
        *g *= 0.5;
    }
    let mut doubled = grads.clone();
    for g in &mut doubled[lay.get("layer1.b_2").range()] {
        *g *= 2.0;
    }
    for (what, g) in [("0.5x w_1", &half), ("2x b_2", &doubled)] {
        let r = fd_check(&c, g, 20);
        assert!(
            r.is_err(),
            "{what}: the finite-difference check passed a wrong gradient"
        );
        eprintln!("{what}: caught: {}", r.unwrap_err().lines().next().unwrap());
    }
}
