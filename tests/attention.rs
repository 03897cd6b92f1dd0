//! attention_forward / attention_backward on the GPU against the CPU reference over small, odd
//! and aligned shapes (including T = 1, a seed-preset head shape and a long T = 200), with
//! both kernel versions wherever the tiled one fits (T <= 32).

mod common;

use wgpu_diffusion::gpu::{Elem, Gpu, GpuTensor};
use wgpu_diffusion::ops::attention::{
    self, AttentionKernel, AttentionShape, ATTENTION_TILE_TOKENS,
};
use wgpu_diffusion::reference::attention as reference;
use wgpu_diffusion::testing::{assert_close, f16_tolerance, round_f16, uniform_data};

fn shape(batch: usize, tokens: usize, heads: usize, key_dim: usize) -> AttentionShape {
    AttentionShape {
        batch,
        tokens,
        heads,
        key_dim,
    }
}

/// (o, probs) and dqkv from the GPU.
fn run(
    gpu: &Gpu,
    v: AttentionKernel,
    s: &AttentionShape,
    qkv: &[f32],
    d_o: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, hk) = (s.rows(), s.hk());
    let qkv_t = GpuTensor::from_slice(gpu, "qkv", &[m, 3 * hk], qkv).unwrap();
    let o = GpuTensor::zeros(gpu, "o", &[m, hk]).unwrap();
    let probs = GpuTensor::zeros(gpu, "probs", &[s.batch, s.heads, s.tokens, s.tokens]).unwrap();
    let d_o_t = GpuTensor::from_slice(gpu, "do", &[m, hk], d_o).unwrap();
    // Garbage in dqkv: the backward must overwrite every element.
    let dqkv = GpuTensor::from_slice(gpu, "dqkv", &[m, 3 * hk], &vec![7.0f32; m * 3 * hk]).unwrap();
    // Garbage in the forward's outputs too.
    o.write(gpu, &vec![7.0f32; m * hk]);
    let f = attention::attention_forward_with(gpu, v, s, &qkv_t, &o, &probs).unwrap();
    let b = attention::attention_backward_with(gpu, v, s, &qkv_t, &probs, &d_o_t, &dqkv).unwrap();
    gpu.run(&[&f, &b]).unwrap();
    (
        o.read(gpu).unwrap(),
        probs.read(gpu).unwrap(),
        dqkv.read(gpu).unwrap(),
    )
}

fn check(gpu: &Gpu, s: &AttentionShape, scale: f32, seed: u64) {
    let qkv: Vec<f32> = uniform_data(s.qkv_len(), seed)
        .iter()
        .map(|v| v * scale)
        .collect();
    let d_o = uniform_data(s.o_len(), seed + 1);
    let (want_o, want_p) = reference::attention_forward(s, &qkv);
    for v in AttentionKernel::ALL {
        if v == AttentionKernel::Tile && s.tokens > ATTENTION_TILE_TOKENS {
            continue;
        }
        let (o, probs, dqkv) = run(gpu, v, s, &qkv, &d_o);
        let name = format!(
            "{v:?} B={} T={} H={} K={} scale={scale}",
            s.batch, s.tokens, s.heads, s.key_dim
        );
        assert_close(&format!("{name} probs"), &probs, &want_p, 1e-6, 1e-4);
        assert_close(&format!("{name} o"), &o, &want_o, 1e-5, 1e-4);
        // The backward from the GPU's own probs (what training does).
        let want_d = reference::attention_backward(s, &qkv, &probs, &d_o);
        assert_close(&format!("{name} dqkv"), &dqkv, &want_d, 1e-5, 1e-4);
    }
}

#[test]
fn forward_and_backward_match_reference() {
    let gpu = common::gpu();
    let mut seed = 100;
    for b in [1, 3] {
        for t in [1, 2, 5, 17, 32, 33] {
            for h in [1, 2, 3] {
                for k in [1, 4, 7, 8] {
                    check(&gpu, &shape(b, t, h, k), 1.0, seed);
                    seed += 2;
                }
            }
        }
    }
}

/// The seed preset's heads (T = 5, H = 20, K = 100), the tiny preset's (T = 17, H = 2, K = 8).
#[test]
fn preset_shapes_match_reference() {
    let gpu = common::gpu();
    check(&gpu, &shape(3, 5, 20, 100), 1.0, 7);
    check(&gpu, &shape(5, 17, 2, 8), 1.0, 8);
}

/// Long sequences: T > 64 makes each backward thread handle several rows (T = 200, 4 rows;
/// T = 65, a partly filled second round); no private arrays limit T.
#[test]
fn long_sequences_match_reference() {
    let gpu = common::gpu();
    check(&gpu, &shape(1, 200, 2, 4), 1.0, 9);
    check(&gpu, &shape(2, 65, 1, 3), 1.0, 10);
    check(&gpu, &shape(1, 128, 1, 16), 1.0, 11);
}

/// Over MAX_TOKENS is refused everywhere; on llvmpipe, so is a shape whose loops would pass its
/// 65,535-iteration cap (it would silently end them and give wrong results).
#[test]
fn too_long_sequences_are_refused() {
    let gpu = common::gpu();
    let z = |n: usize| GpuTensor::zeros(&gpu, "t", &[n]).unwrap();
    let s = shape(1, attention::MAX_TOKENS + 1, 1, 1);
    let e =
        attention::attention_forward(&gpu, &s, &z(s.qkv_len()), &z(s.o_len()), &z(s.probs_len()))
            .err()
            .expect("T > MAX_TOKENS must be refused");
    assert!(e.to_string().contains("tokens"), "{e}");
    let s = shape(1, 1024, 1, 64);
    let (fwd, bwd) = s.loop_iterations();
    assert!(fwd > 65_535 && bwd > 65_535);
    let r =
        attention::attention_forward(&gpu, &s, &z(s.qkv_len()), &z(s.o_len()), &z(s.probs_len()));
    let rb = attention::attention_backward(
        &gpu,
        &s,
        &z(s.qkv_len()),
        &z(s.probs_len()),
        &z(s.o_len()),
        &z(s.qkv_len()),
    );
    if gpu.loop_cap().is_some() {
        let e = r.err().expect("over llvmpipe's loop cap must be refused");
        assert!(e.to_string().contains("loop iterations"), "{e}");
        assert!(rb.is_err());
    } else {
        assert!(r.is_ok() && rb.is_ok());
    }
}

/// Large scores (|S| up to ~ 100): the softmax subtracts the row max, nothing overflows.
#[test]
fn large_scores_are_stable() {
    let gpu = common::gpu();
    let s = shape(2, 6, 2, 4);
    let qkv: Vec<f32> = uniform_data(s.qkv_len(), 10)
        .iter()
        .map(|v| v * 7.0)
        .collect();
    let d_o = uniform_data(s.o_len(), 11);
    let (want_o, _) = reference::attention_forward(&s, &qkv);
    for v in AttentionKernel::ALL {
        let (o, probs, dqkv) = run(&gpu, v, &s, &qkv, &d_o);
        assert!(
            o.iter().chain(&probs).chain(&dqkv).all(|v| v.is_finite()),
            "{v:?}: non-finite values with large scores"
        );
        for (r, row) in probs.chunks(s.tokens).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-5,
                "{v:?}: probs row {r} sums to {sum}"
            );
        }
        // Scores of ~100 carry ~1e-5 absolute rounding, amplified by exp: looser tolerance.
        assert_close(&format!("{v:?} large scores o"), &o, &want_o, 2e-3, 2e-3);
    }
}

#[test]
fn wrong_lengths_and_empty_shapes_are_errors() {
    let gpu = common::gpu();
    let s = shape(2, 3, 2, 4);
    let z = |n: usize| GpuTensor::zeros(&gpu, "t", &[n]).unwrap();
    let (qkv, o, p) = (z(s.qkv_len()), z(s.o_len()), z(s.probs_len()));
    assert!(attention::attention_forward(&gpu, &s, &qkv, &o, &p).is_ok());
    let e = attention::attention_forward(&gpu, &s, &qkv, &z(s.o_len() + 1), &p)
        .err()
        .expect("a wrong o length must be rejected");
    assert!(e.to_string().contains("expected"), "{e}");
    assert!(attention::attention_backward(&gpu, &s, &qkv, &p, &o, &z(3)).is_err());
    let bad = shape(2, 3, 0, 4);
    assert!(attention::attention_forward(&gpu, &bad, &z(1), &z(1), &z(1)).is_err());
}

/// The forward pass with qkv and o stored as f16 (the softmax and the probabilities f32):
/// against the reference on the same f16 values of qkv, within f32's tolerance plus one f16
/// rounding of o; both versions, odd and aligned shapes. Mutation: the softmax's sum kept in
/// f16 (`var sum: elem`) fails it.
#[test]
fn f16_forward_matches_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    for (i, (b, t, h, k)) in [
        (1, 1, 1, 4),
        (3, 5, 2, 3),
        (2, 17, 3, 8),
        (2, 33, 2, 32),
        (1, 32, 1, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let s = shape(b, t, h, k);
        let qkv = round_f16(
            &uniform_data(s.qkv_len(), 900 + i as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect::<Vec<_>>(),
        );
        let (want_o, want_p) = reference::attention_forward(&s, &qkv);
        for v in AttentionKernel::ALL {
            if v == AttentionKernel::Tile && t > ATTENTION_TILE_TOKENS {
                continue;
            }
            let (m, hk) = (s.rows(), s.hk());
            let qkv_t = GpuTensor::from_values(&gpu, "qkv", &[m, 3 * hk], &qkv, Elem::F16).unwrap();
            let o = GpuTensor::zeros_of(&gpu, "o", &[m, hk], Elem::F16).unwrap();
            let probs = GpuTensor::zeros(&gpu, "probs", &[b, h, t, t]).unwrap();
            let f = attention::attention_forward_with(&gpu, v, &s, &qkv_t, &o, &probs).unwrap();
            gpu.run(&[&f]).unwrap();
            let name = format!("f16 {v:?} B={b} T={t} H={h} K={k}");
            let p = probs.read::<f32>(&gpu).unwrap();
            assert_close(&format!("{name} probs"), &p, &want_p, 1e-6, 1e-4);
            let (abs, rel) = f16_tolerance(1e-5, 1e-4);
            let got = o.read_values(&gpu).unwrap();
            assert_close(&format!("{name} o"), &got, &want_o, abs, rel);
        }
    }
}
