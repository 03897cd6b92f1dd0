//! CPU reference for `noise_inject` and `fill_normal` of `shaders/noise.wgsl`.

use crate::math::rng;

/// Parameters of one noise injection (mirrors the shader's `Params`).
#[derive(Clone, Copy, Debug)]
pub struct NoiseSpec {
    pub seed: u64,
    pub step: u32,
    pub stream: u32,
    pub alpha: f32,
    pub n_max: u32,
    pub repeat: u32,
    pub perm_offset: u32,
}

/// Output of [`noise_inject`]: levels n, cond = alpha^n, noise N and the noisy images A_n.
pub struct Noised {
    pub levels: Vec<u32>,
    pub cond: Vec<f32>,
    pub noise: Vec<f32>,
    pub noisy: Vec<f32>,
}

/// The level n of sample b.
pub fn level(spec: &NoiseSpec, b: u32) -> u32 {
    rng::below(
        rng::bits(spec.seed, spec.step, spec.stream + 1, b)[0],
        spec.n_max + 1,
    )
}

/// Sample b's label under label dropout of probability `p`: `NO_LABEL` when the second word
/// of its level's bits is below the threshold, else its image's label.
pub fn dropped_label(spec: &NoiseSpec, p: f64, b: u32, image_labels: &[u32], perm: &[u32]) -> u32 {
    let bits = rng::bits(spec.seed, spec.step, spec.stream + 1, b);
    if (bits[1] >> 8) < rng::drop_below(p) {
        return crate::config::NO_LABEL;
    }
    image_labels[perm[(spec.perm_offset + b / spec.repeat) as usize] as usize]
}

/// `A_n = a^n x + (1 - a^n) N` for `batch` samples; sample b is image
/// `perm[perm_offset + b / repeat]` of `data` (8-bit pixels, `pixels` per image).
pub fn noise_inject(
    spec: &NoiseSpec,
    data: &[u8],
    pixels: usize,
    perm: &[u32],
    batch: usize,
) -> Noised {
    let levels: Vec<u32> = (0..batch as u32).map(|b| level(spec, b)).collect();
    noise_at_levels(spec, data, pixels, perm, &levels)
}

/// As [`noise_inject`] with sample b at the given level `levels[b]`.
pub fn noise_at_levels(
    spec: &NoiseSpec,
    data: &[u8],
    pixels: usize,
    perm: &[u32],
    levels: &[u32],
) -> Noised {
    let batch = levels.len();
    let mut out = Noised {
        levels: vec![],
        cond: vec![],
        noise: vec![0.0; batch * pixels],
        noisy: vec![0.0; batch * pixels],
    };
    for b in 0..batch {
        let n = levels[b];
        let an = spec.alpha.powf(n as f32);
        let img = perm[spec.perm_offset as usize + b / spec.repeat as usize] as usize;
        for p in 0..pixels {
            let i = b * pixels + p;
            let x = data[img * pixels + p] as f32 / 256.0 - 0.5;
            let z = rng::normal(spec.seed, spec.step, spec.stream, i as u32);
            out.noise[i] = z;
            out.noisy[i] = an * x + (1.0 - an) * z;
        }
        out.levels.push(n);
        out.cond.push(an);
    }
    out
}

/// `count` normals at (seed, step, stream, 0..count).
pub fn fill_normal(seed: u64, step: u32, stream: u32, count: usize) -> Vec<f32> {
    (0..count as u32)
        .map(|i| rng::normal(seed, step, stream, i))
        .collect()
}
