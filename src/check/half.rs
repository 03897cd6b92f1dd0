//! `check --precision f16`: the kernels that sample in half precision, with their activations
//! and weights stored as f16, against the f32 CPU reference on the same f16 inputs: each GEMM
//! candidate, attention's forward (both versions), the row ops, GELU, the skips, the label
//! embedding and recompose. Tolerance: the f32 kernel's plus one f16 rounding of the output
//! ([`f16_tolerance`]: 2^-11 relative), since every sum is f32 and the result is stored once.

use super::Checker;
use crate::config::{Geometry, Skip, NO_LABEL};
use crate::gpu::{Elem, GpuTensor};
use crate::ops::attention::{attention_forward_with, AttentionKernel, AttentionShape};
use crate::ops::matmul::{gemm_with, Gemm, MatmulKernel, Tuning};
use crate::ops::tune::{candidates, tolerance};
use crate::ops::{gelu, label, patches, rows, skip};
use crate::reference;
use crate::testing::{
    f16_tolerance, gelu_inputs, label_ids, random_prior, round_f16, tokens_near_one, uniform_data,
};

/// (M, N, K) with (Aᵀ, Bᵀ).
type GemmCase = ((usize, usize, usize), (bool, bool));

/// GEMM cases: odd, aligned (vec4 loads), aligned with an odd K.
const GEMMS: [GemmCase; 3] = [
    ((37, 41, 13), (false, true)),
    ((68, 132, 36), (false, false)),
    ((72, 76, 67), (true, false)),
];

/// (B, T, D) of the row ops, the skips and the label embedding: odd, and the seed's tokens.
const TOKENS: [(usize, usize, usize); 2] = [(3, 5, 7), (2, 10, 100)];

impl Checker<'_> {
    /// An f16 tensor of `data` (already f16 values).
    fn f16(&self, label: &str, data: &[f32]) -> crate::Result<GpuTensor> {
        GpuTensor::from_values(self.gpu, label, &[data.len()], data, Elem::F16)
    }
}

pub fn check(c: &mut Checker) {
    if let Err(e) = c.gpu.check_elem(Elem::F16) {
        c.case_result("f16", "shader-f16", Err(e));
        return;
    }
    gemm_cases(c);
    attention_cases(c);
    for (b, t, d) in TOKENS {
        let shape = format!("B={b} T={t} D={d}");
        c.case("rows[f16]", &shape, |c| rows_case(c, b, t, d, &shape));
        c.case("label_forward[f16]", &shape, |c| {
            label_case(c, b, t, d, &shape)
        });
        for kind in [Skip::Wiener, Skip::Mixture, Skip::PixelMixture] {
            let label = format!("skip_forward {kind:?}[f16]");
            c.case(&label, &shape, |c| {
                skip_case(c, kind, b, t, d, &label, &shape)
            });
        }
    }
    for n in [7, 1000] {
        c.case("gelu_forward[f16]", format!("n={n}"), |c| gelu_case(c, n));
    }
    for (p, o) in [(10, 4), (28, 0)] {
        c.case("recompose[f16]", format!("P={p} O={o}"), |c| {
            recompose_case(c, p, o)
        });
    }
}

fn gemm_cases(c: &mut Checker) {
    let naive = (MatmulKernel::Naive, Tuning::DEFAULT, "naive".to_string());
    let tuned = (candidates(c.gpu).into_iter()).map(|k| (k.kernel, k.tuning, k.name()));
    for (kernel, tuning, name) in std::iter::once(naive).chain(tuned) {
        let label = format!("matmul {name}[f16]");
        for ((m, n, k), (trans_a, trans_b)) in GEMMS {
            let spec = Gemm {
                m,
                n,
                k,
                trans_a,
                trans_b,
                accumulate: true,
            };
            let shape = format!("{m}x{n}x{k} trans_a={trans_a} trans_b={trans_b} +b +C");
            c.case(&label, &shape, |c| {
                let seed = (m * 31 + n * 7 + k) as u64;
                let a = round_f16(&uniform_data(m * k, seed));
                let b = round_f16(&uniform_data(k * n, seed + 1));
                let (bias, c0) = (
                    round_f16(&uniform_data(n, seed + 2)),
                    round_f16(&uniform_data(m * n, seed + 3)),
                );
                let (ta, tb, tbias, tc) = (
                    c.f16("A", &a)?,
                    c.f16("B", &b)?,
                    c.f16("bias", &bias)?,
                    c.f16("C", &c0)?,
                );
                let d = gemm_with(c.gpu, kernel, &tuning, spec, &ta, &tb, Some(&tbias), &tc)?;
                c.run(&[&d])?;
                let mut want = reference::matmul::gemm(&a, &b, m, n, k, trans_a, trans_b);
                for (i, v) in want.iter_mut().enumerate() {
                    *v += bias[i % n] + c0[i];
                }
                let (abs, rel) = tolerance(k);
                let (abs, rel) = f16_tolerance(abs, rel);
                c.compare_tensor(&label, &shape, &tc, &want, abs, rel);
                Ok(())
            });
        }
    }
}

fn attention_cases(c: &mut Checker) {
    for (batch, tokens, heads, key_dim) in [(3, 5, 2, 3), (2, 17, 2, 32)] {
        let s = AttentionShape {
            batch,
            tokens,
            heads,
            key_dim,
        };
        for v in AttentionKernel::ALL {
            let shape = format!("{v:?} B={batch} T={tokens} H={heads} K={key_dim}");
            c.case("attention_forward[f16]", &shape, |c| {
                let qkv = round_f16(&uniform_data(s.qkv_len(), tokens as u64));
                let (want_o, want_p) = reference::attention::attention_forward(&s, &qkv);
                let qkv_t = c.f16("qkv", &qkv)?;
                let o = c.f16("o", &vec![7.0; s.o_len()])?;
                let probs = c.tensor("probs", &vec![7.0; s.probs_len()])?;
                let d = attention_forward_with(c.gpu, v, &s, &qkv_t, &o, &probs)?;
                c.run(&[&d])?;
                c.compare_tensor(
                    "attention_forward[f16] probs",
                    &shape,
                    &probs,
                    &want_p,
                    1e-6,
                    1e-4,
                );
                let (abs, rel) = f16_tolerance(1e-5, 1e-4);
                c.compare_tensor("attention_forward[f16]", &shape, &o, &want_o, abs, rel);
                Ok(())
            });
        }
    }
}

/// add_pos (f32 tokens), drop_cond_add and pad_cond.
fn rows_case(c: &mut Checker, b: usize, t: usize, d: usize, shape: &str) -> crate::Result<()> {
    let p = t - 1;
    let r = rows::TokenRows {
        batch: b,
        tokens: t,
        patches: p,
        width: d,
    };
    let tokens = uniform_data(b * t * d, 1);
    let pos = round_f16(&uniform_data(t * d, 2));
    let acc = round_f16(&uniform_data(b * p * d, 3));
    let (tk, ps, acct) = (
        c.tensor("tokens", &tokens)?,
        c.f16("pos", &pos)?,
        c.f16("acc", &acc)?,
    );
    let xs = c.f16("x_start", &vec![7.0; b * t * d])?;
    let padded = c.f16("padded", &vec![7.0; b * t * d])?;
    let ds = [
        rows::add_pos(c.gpu, &tk, &ps, &xs, b, t, d)?,
        rows::drop_cond_add(c.gpu, &xs, &acct, r)?,
        rows::pad_cond(c.gpu, &acct, &padded, r)?,
    ];
    c.run(&ds.iter().collect::<Vec<_>>())?;
    let (abs, rel) = f16_tolerance(0.0, 0.0);
    let x_start = reference::rows::add_pos(&tokens, &pos);
    c.compare_tensor("add_pos[f16]", shape, &xs, &x_start, abs, rel);
    // The next ops read what the GPU stored: the f16 values of the reference's.
    let dropped = reference::rows::drop_cond(&round_f16(&x_start), b, t, p, d);
    let sum = reference::rows::add(&acc, &dropped);
    c.compare_tensor("drop_cond_add[f16]", shape, &acct, &sum, abs, rel);
    let want = reference::rows::pad_cond(&round_f16(&sum), b, t, p, d);
    c.compare_tensor("pad_cond[f16]", shape, &padded, &want, abs, rel);
    Ok(())
}

fn label_case(c: &mut Checker, b: usize, t: usize, d: usize, shape: &str) -> crate::Result<()> {
    let rows = NO_LABEL as usize + 1;
    let (x, table) = (
        round_f16(&uniform_data(b * t * d, 4)),
        round_f16(&uniform_data(rows * d, 5)),
    );
    let ids = label_ids(b);
    let lt = GpuTensor::from_slice(c.gpu, "labels", &[b], &ids)?;
    let (xt, tt) = (c.f16("x", &x)?, c.f16("table", &table)?);
    let s = label::LabelShape {
        batch: b,
        tokens: t,
        dim: d,
        rows,
    };
    let f = label::label_forward(c.gpu, &s, &lt, &tt, &xt)?;
    c.run(&[&f])?;
    let want = reference::label::label_forward(&x, &ids, &table, t, d);
    let (abs, rel) = f16_tolerance(0.0, 0.0);
    c.compare_tensor("label_forward[f16]", shape, &xt, &want, abs, rel);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn skip_case(
    c: &mut Checker,
    kind: Skip,
    b: usize,
    t: usize,
    d: usize,
    label: &str,
    shape: &str,
) -> crate::Result<()> {
    let x = round_f16(&uniform_data(b * t * d, 6));
    let tokens = tokens_near_one(b, t, d);
    let prior = (kind == Skip::PixelMixture).then(|| round_f16(&random_prior((t - 1) * d, 7)));
    let (xt, tk) = (c.f16("x", &x)?, c.tensor("tokens", &tokens)?);
    let y = c.f16("y", &vec![7.0; b * t * d])?;
    let pt = prior.as_ref().map(|p| c.f16("prior", p)).transpose()?;
    let f = skip::skip_forward(c.gpu, kind, pt.as_ref(), &xt, &tk, &y, b, t, d)?;
    c.run(&[&f])?;
    let want = reference::skip::skip_forward(kind, prior.as_deref(), &x, &tokens, b, t, d);
    let (abs, rel) = match kind {
        Skip::Wiener => f16_tolerance(1e-6, 1e-5),
        _ => f16_tolerance(2e-4, 1e-4),
    };
    c.compare_tensor(label, shape, &y, &want, abs, rel);
    Ok(())
}

fn gelu_case(c: &mut Checker, n: usize) -> crate::Result<()> {
    let x = round_f16(&gelu_inputs(n, n as u64));
    let (xt, y) = (c.f16("x", &x)?, c.f16("y", &vec![7.0; n])?);
    let f = gelu::gelu_forward(c.gpu, &xt, &y)?;
    c.run(&[&f])?;
    let want = reference::gelu::gelu_forward(&x);
    let (abs, rel) = f16_tolerance(1e-6, 1e-5);
    c.compare_tensor("gelu_forward[f16]", format!("n={n}"), &y, &want, abs, rel);
    Ok(())
}

fn recompose_case(c: &mut Checker, p: u32, o: u32) -> crate::Result<()> {
    let g = Geometry::new(p, o)?;
    let (b, t) = (3, g.tokens() as usize);
    let tokens = round_f16(&uniform_data(b * t * g.dim() as usize, 8));
    let tk = c.f16("tokens", &tokens)?;
    let image = c.tensor("image", &vec![7.0; b * g.pixels() as usize])?;
    let d = patches::recompose(c.gpu, &g, b, t, &tk, &image)?;
    c.run(&[&d])?;
    let want = reference::patches::recompose(&g, &tokens, t);
    c.compare_tensor(
        "recompose[f16]",
        format!("P={p} O={o}"),
        &image,
        &want,
        1e-6,
        1e-6,
    );
    Ok(())
}
