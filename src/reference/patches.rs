//! CPU references for `shaders/patches.wgsl`.

use crate::config::Geometry;

/// images [B, S*S], cond [B] -> tokens [B, T, D]; token g^2 (if T > g^2) holds cond[b].
pub fn patches_forward(g: &Geometry, images: &[f32], cond: &[f32], tokens: usize) -> Vec<f32> {
    let (px, d) = (g.pixels() as usize, g.dim() as usize);
    let b = images.len() / px;
    let mut out = vec![0.0; b * tokens * d];
    for s in 0..b {
        let o = &mut out[s * tokens * d..(s + 1) * tokens * d];
        g.for_each_copy(|c, k, p| o[c * d + k] = images[s * px + p]);
        for t in g.patches() as usize..tokens {
            o[t * d..(t + 1) * d].fill(cond[s]);
        }
    }
    out
}

/// dtokens [B, T, D] -> (dimages [B, S*S], dcond [B]): the adjoint of [`patches_forward`].
pub fn patches_backward(g: &Geometry, dtokens: &[f32], tokens: usize) -> (Vec<f32>, Vec<f32>) {
    let (px, d) = (g.pixels() as usize, g.dim() as usize);
    let b = dtokens.len() / (tokens * d);
    let mut dimages = vec![0.0; b * px];
    let mut dcond = vec![0.0; b];
    for s in 0..b {
        let dt = &dtokens[s * tokens * d..(s + 1) * tokens * d];
        g.for_each_copy(|c, k, p| dimages[s * px + p] += dt[c * d + k]);
        for t in g.patches() as usize..tokens {
            dcond[s] += dt[t * d..(t + 1) * d].iter().sum::<f32>();
        }
    }
    (dimages, dcond)
}

/// tokens [B, T, D] (first g^2 used) -> images [B, S*S], each pixel the mean of its copies.
pub fn recompose(g: &Geometry, tokens_in: &[f32], tokens: usize) -> Vec<f32> {
    let (px, d) = (g.pixels() as usize, g.dim() as usize);
    let b = tokens_in.len() / (tokens * d);
    let mut sum = vec![0.0; b * px];
    let mut count = vec![0u32; px];
    g.for_each_copy(|_, _, p| count[p] += 1);
    for s in 0..b {
        let t = &tokens_in[s * tokens * d..(s + 1) * tokens * d];
        g.for_each_copy(|c, k, p| sum[s * px + p] += t[c * d + k]);
    }
    for (i, v) in sum.iter_mut().enumerate() {
        *v /= count[i % px] as f32;
    }
    sum
}
