//! The GPU random numbers and noise injection: `fill_bits` (raw Philox words, bit-exact),
//! `fill_normal`, `fill_normal_counted` (step moved on by a GPU counter), `noise_inject` and
//! `noise_at_levels` (the forward process on a batch) against the CPU mirror.

use super::Checker;
use crate::config::PIXELS;
use crate::gpu::GpuTensor;
use crate::math::rng::streams;
use crate::ops::noise::{FillNormal, NoiseConfig, NoiseInject};
use crate::reference::noise as reference;
use crate::testing::{images, shuffled, NOISE_INJECTS};

/// (seed, step, stream, count, offset) of the fills: one value, an odd count past a workgroup
/// with an offset, a full 64-bit seed at the last step.
const FILLS: [(u64, u32, u32, usize, u32); 3] = [
    (0, 0, 0, 1, 0),
    (1, 7, streams::SAMPLE_INIT, 1000, 37),
    (0xDEAD_BEEF_0123_4567, u32::MAX, 12, 4099, 0),
];
/// Tolerance of a normal value: WGSL lets `cos` err by 2^-11 on [-pi, pi] (and `log` by a
/// few ulps), and Box-Muller's radius sqrt(-2 ln u) reaches 6.7 for 32-bit u, so an adapter
/// within the spec may differ from the reference by up to 6.7 * 2^-11 (SwiftShader in
/// Chromium: 5.6e-4). The raw bits are compared exactly.
pub(super) const NORMAL_ABS: f32 = 6.7 / 2048.0;
/// The images the injections draw from.
const DATASET: usize = 7;
const QUICK: usize = 2;

pub fn check(c: &mut Checker) {
    let n = if c.quick { QUICK } else { FILLS.len() };
    for (seed, step, stream, count, offset) in FILLS[..n].iter().copied() {
        let t = if step == u32::MAX {
            "max".into()
        } else {
            step.to_string()
        };
        // n=count@offset, t=step, s=stream (the seed is in FILLS).
        let shape = format!("n={count}@{offset} t={t} s={stream}");
        c.case("fill", shape.clone(), |c| {
            fill_case(c, &shape, seed, step, stream, count, offset)
        });
    }
    let n = if c.quick { QUICK } else { NOISE_INJECTS.len() };
    for (batch, repeat, offset, step) in NOISE_INJECTS[..n].iter().copied() {
        let spec = reference::NoiseSpec {
            seed: 1234 + step as u64,
            step,
            stream: streams::TRAIN,
            alpha: 0.99,
            n_max: 500,
            repeat,
            perm_offset: offset,
        };
        let shape = format!("B={batch} R={repeat} offset={offset} step={step}");
        c.case("noise_inject", shape.clone(), |c| {
            inject_case(c, &shape, &spec, batch)
        });
    }
}

/// Splits each u32 into its two 16-bit halves, exact as f32: bits compare with zero tolerance.
fn halves(words: &[u32]) -> Vec<f32> {
    words
        .iter()
        .flat_map(|&w| [(w >> 16) as f32, (w & 0xFFFF) as f32])
        .collect()
}

/// fill_bits, fill_normal (at `offset`) and fill_normal_counted (host step + GPU counter 3).
fn fill_case(
    c: &mut Checker,
    shape: &str,
    seed: u64,
    step: u32,
    stream: u32,
    count: usize,
    offset: u32,
) -> crate::Result<()> {
    let bits = c.tensor("bits", &vec![7.0; 4 * count])?;
    let f = FillNormal::bits(c.gpu, seed, stream, &bits)?;
    f.set_step(c.gpu, step);
    c.run(&[&f.dispatch])?;
    let want: Vec<u32> = (0..count as u32)
        .flat_map(|i| crate::math::rng::bits(seed, step, stream, i))
        .collect();
    let got_halves = |b: &[u8]| halves(&bytemuck::pod_collect_to_vec::<u8, u32>(b));
    c.compare_tensor_as(
        "fill_bits",
        shape,
        &bits,
        got_halves,
        &halves(&want),
        0.0,
        0.0,
    );

    let out = c.tensor("normals", &vec![7.0; count])?;
    let f = FillNormal::new(c.gpu, seed, stream, &out)?;
    f.set_step_offset(c.gpu, step, offset);
    c.run(&[&f.dispatch])?;
    let all = reference::fill_normal(seed, step, stream, offset as usize + count);
    let want = &all[offset as usize..];
    // log/cos may differ by a few ulps between the GPU and the CPU.
    c.compare_tensor("fill_normal", shape, &out, want, NORMAL_ABS, 1e-4);

    // The host's step 3 short of `step` (wrapping at 0), the GPU counter making up the rest.
    let counter = GpuTensor::from_slice(c.gpu, "counter", &[1], &[3u32])?;
    let f = FillNormal::counted(c.gpu, seed, stream, &out, &counter)?;
    f.set_step_offset(c.gpu, step.wrapping_sub(3), offset);
    c.run(&[&f.dispatch])?;
    c.compare_tensor("fill_normal_counted", shape, &out, want, NORMAL_ABS, 1e-4);
    Ok(())
}

/// noise_inject (levels drawn on the GPU), then noise_at_levels (levels given, 0 and n_max
/// among them), each against the reference: cond, noise and noisy.
fn inject_case(
    c: &mut Checker,
    shape: &str,
    spec: &reference::NoiseSpec,
    batch: usize,
) -> crate::Result<()> {
    let px = PIXELS as usize;
    let (data, perm) = (images(DATASET), shuffled(DATASET, 78));
    let d = GpuTensor::from_bytes(c.gpu, "data", &data)?;
    let p = GpuTensor::from_slice(c.gpu, "perm", &[perm.len()], &perm)?;
    let cond = c.tensor("cond", &vec![7.0; batch])?;
    let noise = c.tensor("noise", &vec![7.0; batch * px])?;
    let noisy = c.tensor("noisy", &vec![7.0; batch * px])?;
    let config = NoiseConfig {
        seed: spec.seed,
        stream: spec.stream,
        alpha: spec.alpha,
        n_max: spec.n_max,
        repeat: spec.repeat,
    };
    let op = NoiseInject::new(c.gpu, &config, batch, &d, &p, &cond, &noise, &noisy)?;
    op.set_step(c.gpu, spec.step, spec.perm_offset);
    c.run(&[&op.dispatch])?;
    let want = reference::noise_inject(spec, &data, px, &perm, batch);
    compare_noised(c, "noise_inject", shape, [&cond, &noise, &noisy], &want)?;

    let levels: Vec<u32> = (0..batch as u32)
        .map(|b| b * 97 % (spec.n_max + 1))
        .collect();
    let levels = [&[spec.n_max][..], &levels[1..]].concat();
    let l = GpuTensor::from_slice(c.gpu, "levels", &[batch], &levels)?;
    let op = NoiseInject::at_levels(c.gpu, &config, batch, &d, &p, &l, &cond, &noise, &noisy)?;
    op.set_step(c.gpu, spec.step, spec.perm_offset);
    c.run(&[&op.dispatch])?;
    let want = reference::noise_at_levels(spec, &data, px, &perm, &levels);
    compare_noised(c, "noise_at_levels", shape, [&cond, &noise, &noisy], &want)
}

/// Rows `<kernel> cond`, `<kernel> noise` and `<kernel> noisy`.
fn compare_noised(
    c: &mut Checker,
    kernel: &str,
    shape: &str,
    [cond, noise, noisy]: [&GpuTensor; 3],
    want: &reference::Noised,
) -> crate::Result<()> {
    c.compare_tensor(
        &format!("{kernel} cond"),
        shape,
        &cond,
        &want.cond,
        1e-6,
        1e-5,
    );
    c.compare_tensor(
        &format!("{kernel} noise"),
        shape,
        &noise,
        &want.noise,
        NORMAL_ABS,
        1e-4,
    );
    c.compare_tensor(
        &format!("{kernel} noisy"),
        shape,
        &noisy,
        &want.noisy,
        NORMAL_ABS,
        1e-4,
    );
    Ok(())
}
