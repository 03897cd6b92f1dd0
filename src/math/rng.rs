//! CPU mirror of the GPU random number generator in `shaders/noise.wgsl`: Philox4x32-10 keyed
//! by the seed, with counter (index, step, stream, 0). The integer bits are exact; normals
//! agree within float tolerance (the GPU's `log`/`cos` may differ by a few ulps).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Streams keep the uses of one seed apart. The `noise_inject` level draw uses `stream + 1`.
pub mod streams {
    /// Training noise N (and, with +1, the levels n).
    pub const TRAIN: u32 = 0;
    /// Validation set noise (and levels), drawn once.
    pub const VALIDATION: u32 = 4;
    /// The sampler's initial noise.
    pub const SAMPLE_INIT: u32 = 8;
    /// The forward-process figure of `noise`.
    pub const FIGURE: u32 = 12;
    /// The epoch's shuffle of the training images (on the CPU; `step` is the epoch).
    pub const SHUFFLE: u32 = 16;
    /// The fresh noise of the sampler's stochastic steps (`--eta`; `step` is the step k).
    pub const SAMPLE_STEP: u32 = 20;
}

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32-10 block function.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The key for a 64-bit seed.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Random bits for (seed, step, stream, index).
pub fn bits(seed: u64, step: u32, stream: u32, index: u32) -> [u32; 4] {
    philox4x32_10([index, step, stream, 0], key(seed))
}

/// Box-Muller normal from the first two words, as the shader computes it.
pub fn box_muller(b: [u32; 4]) -> f32 {
    const INV_2_24: f32 = 1.0 / 16_777_216.0;
    let u1 = ((b[0] >> 8) as f32 + 1.0) * INV_2_24;
    let u2 = (b[1] >> 8) as f32 * INV_2_24;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2 - std::f32::consts::PI).cos()
}

/// N(0,1) at (seed, step, stream, index).
pub fn normal(seed: u64, step: u32, stream: u32, index: u32) -> f32 {
    box_muller(bits(seed, step, stream, index))
}

/// The threshold on 24 random bits under which an event of probability `p` happens (label
/// dropout: `noise_inject_labelled` compares the high 24 bits of a word with it).
pub fn drop_below(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * (1u64 << 24) as f64).round() as u32
}

/// A uniform integer in 0..n from one word (high half of x*n; bias below 2^-32 * n).
pub fn below(x: u32, n: u32) -> u32 {
    ((x as u64 * n as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123's kat_vectors for philox4x32_10.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }
}
