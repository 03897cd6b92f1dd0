//! Attention: `attention_forward` (probs and o) and `attention_backward` (dqkv, from the GPU's
//! own probs, as training runs it) against the f64 CPU reference, with garbage in every output
//! so that each element must be written; with both kernel versions (v1 rows, v2 tile) where
//! the shape fits v2.

use super::Checker;
use crate::ops::attention::{self, AttentionKernel, AttentionShape, ATTENTION_TILE_TOKENS};
use crate::reference::attention as reference;
use crate::testing::uniform_data;

/// (B, T, H, K): tiny, the seed preset's heads (T = 5, H = 20, K = 100), odd (T = 17: a
/// 32-wide backward workgroup), long (T = 65: a second, partly filled round of rows per
/// backward thread). Each backward workgroup size is its own pipeline.
const SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 2, 1, 3), (3, 5, 20, 100), (2, 17, 3, 7), (2, 65, 1, 3)];
const QUICK_SHAPES: [(usize, usize, usize, usize); 2] = [(1, 2, 1, 3), (3, 5, 20, 100)];

pub fn check(c: &mut Checker) {
    let shapes: &[_] = if c.quick { &QUICK_SHAPES } else { &SHAPES };
    for &(batch, tokens, heads, key_dim) in shapes {
        let s = AttentionShape {
            batch,
            tokens,
            heads,
            key_dim,
        };
        for v in AttentionKernel::ALL {
            if v == AttentionKernel::Tile && tokens > ATTENTION_TILE_TOKENS {
                continue;
            }
            let shape = format!("{v:?} B={batch} T={tokens} H={heads} K={key_dim}");
            c.case("attention", shape.clone(), |c| case(c, v, &s, &shape));
        }
    }
}

/// Forward, compared; then backward on the forward's probs, compared.
fn case(c: &mut Checker, v: AttentionKernel, s: &AttentionShape, shape: &str) -> crate::Result<()> {
    let seed = (s.batch * 1_000_003 + s.tokens * 1009 + s.heads * 31 + s.key_dim) as u64;
    let qkv = uniform_data(s.qkv_len(), seed);
    let d_o = uniform_data(s.o_len(), seed + 1);
    let garbage = |n: usize| vec![7.0f32; n];
    let qkv_t = c.tensor("qkv", &qkv)?;
    let d_o_t = c.tensor("d_o", &d_o)?;
    let o = c.tensor("o", &garbage(s.o_len()))?;
    let probs = c.tensor("probs", &garbage(s.probs_len()))?;
    let dqkv = c.tensor("dqkv", &garbage(s.qkv_len()))?;
    let f = attention::attention_forward_with(c.gpu, v, s, &qkv_t, &o, &probs)?;
    let b = attention::attention_backward_with(c.gpu, v, s, &qkv_t, &probs, &d_o_t, &dqkv)?;
    c.run(&[&f])?;
    let (want_o, want_p) = reference::attention_forward(s, &qkv);
    c.compare_tensor(
        "attention_forward probs",
        shape,
        &probs,
        &want_p,
        1e-6,
        1e-4,
    );
    c.compare_tensor("attention_forward o", shape, &o, &want_o, 1e-5, 1e-4);
    c.run(&[&b])?;
    // The reference backward on its own probs (within 1e-6 of the GPU's, compared above).
    let want_d = reference::attention_backward(s, &qkv, &want_p, &d_o);
    c.compare_tensor("attention_backward dqkv", shape, &dqkv, &want_d, 1e-5, 1e-4);
    Ok(())
}
