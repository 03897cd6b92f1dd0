//! The GPU random number generator and noise injection against the CPU mirror, plus
//! statistical checks of what it draws.

mod common;

use wgpu_diffusion::config::PIXELS;
use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::math::rng;
use wgpu_diffusion::ops::noise::{FillNormal, NoiseConfig, NoiseInject};
use wgpu_diffusion::reference::noise as reference;
use wgpu_diffusion::testing::{assert_close, images, shuffled, NOISE_INJECTS};

fn gpu_bits(gpu: &Gpu, seed: u64, step: u32, stream: u32, count: usize) -> Vec<u32> {
    let out = GpuTensor::zeros(gpu, "bits", &[count * 4]).unwrap();
    let f = FillNormal::bits(gpu, seed, stream, &out).unwrap();
    f.set_step(gpu, step);
    gpu.run(&[&f.dispatch]).unwrap();
    out.read(gpu).unwrap()
}

fn gpu_normals(gpu: &Gpu, seed: u64, step: u32, stream: u32, count: usize) -> Vec<f32> {
    let out = GpuTensor::zeros(gpu, "normals", &[count]).unwrap();
    let f = FillNormal::new(gpu, seed, stream, &out).unwrap();
    f.set_step(gpu, step);
    gpu.run(&[&f.dispatch]).unwrap();
    out.read(gpu).unwrap()
}

#[test]
fn gpu_bits_equal_reference_bits() {
    let gpu = common::gpu();
    for (seed, step, stream, count) in [
        (0u64, 0u32, 0u32, 1usize),
        (1, 7, 3, 1000),
        (0xDEAD_BEEF_0123_4567, u32::MAX, 12, 4099),
    ] {
        let got = gpu_bits(&gpu, seed, step, stream, count);
        for i in 0..count {
            let want = rng::bits(seed, step, stream, i as u32);
            assert_eq!(
                &got[4 * i..4 * i + 4],
                &want,
                "seed {seed:#x} step {step} stream {stream} index {i}"
            );
        }
    }
}

#[test]
fn gpu_normals_match_reference_and_are_standard() {
    let gpu = common::gpu();
    let n = 1 << 20;
    let z = gpu_normals(&gpu, 42, 3, rng::streams::SAMPLE_INIT, n);
    let want = reference::fill_normal(42, 3, rng::streams::SAMPLE_INIT, 20_000);
    // log/cos may differ by a few ulps between the GPU and the CPU.
    assert_close("fill_normal vs reference", &z[..20_000], &want, 1e-4, 1e-4);
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "variance {var}");
    assert!(z.iter().all(|v| v.is_finite()));
    // Another step gives other numbers.
    let z2 = gpu_normals(&gpu, 42, 4, rng::streams::SAMPLE_INIT, 16);
    assert_ne!(&z[..16], &z2[..]);
}

struct Injected {
    cond: Vec<f32>,
    noise: Vec<f32>,
    noisy: Vec<f32>,
}

/// `fill_normal_counted`: the RNG step is the host's step plus a counter on the GPU, and the
/// index starts at the host's offset.
#[test]
fn counted_normals_use_the_gpu_counter() {
    let gpu = common::gpu();
    let (seed, stream, n) = (9u64, rng::streams::SAMPLE_STEP, 37usize);
    let out = GpuTensor::zeros(&gpu, "normals", &[n]).unwrap();
    let counter = GpuTensor::zeros(&gpu, "counter", &[1]).unwrap();
    let f = FillNormal::counted(&gpu, seed, stream, &out, &counter).unwrap();
    for (step, count, offset) in [(0u32, 0u32, 0u32), (2, 5, 100), (0, 41, 7)] {
        counter.write(&gpu, &[count]);
        f.set_step_offset(&gpu, step, offset);
        gpu.run(&[&f.dispatch]).unwrap();
        let want: Vec<f32> = (0..n as u32)
            .map(|i| rng::normal(seed, step + count, stream, offset + i))
            .collect();
        let what = format!("step {step} + counter {count}, offset {offset}");
        assert_close(&what, &out.read(&gpu).unwrap(), &want, 1e-5, 1e-5);
    }
}

fn inject(
    gpu: &Gpu,
    spec: &reference::NoiseSpec,
    data: &[u8],
    perm: &[u32],
    batch: usize,
) -> Injected {
    let px = PIXELS as usize;
    let d = GpuTensor::from_bytes(gpu, "data", data).unwrap();
    let p = GpuTensor::from_slice(gpu, "perm", &[perm.len()], perm).unwrap();
    let cond = GpuTensor::zeros(gpu, "cond", &[batch]).unwrap();
    let noise = GpuTensor::zeros(gpu, "noise", &[batch, px]).unwrap();
    let noisy = GpuTensor::zeros(gpu, "noisy", &[batch, px]).unwrap();
    let config = NoiseConfig {
        seed: spec.seed,
        stream: spec.stream,
        alpha: spec.alpha,
        n_max: spec.n_max,
        repeat: spec.repeat,
    };
    let op = NoiseInject::new(gpu, &config, batch, &d, &p, &cond, &noise, &noisy).unwrap();
    op.set_step(gpu, spec.step, spec.perm_offset);
    gpu.run(&[&op.dispatch]).unwrap();
    Injected {
        cond: cond.read(gpu).unwrap(),
        noise: noise.read(gpu).unwrap(),
        noisy: noisy.read(gpu).unwrap(),
    }
}

#[test]
fn noise_inject_matches_reference() {
    let gpu = common::gpu();
    let (data, perm) = (images(7), shuffled(7, 78));
    for (batch, repeat, offset, step) in NOISE_INJECTS {
        let spec = reference::NoiseSpec {
            seed: 1234,
            step,
            stream: rng::streams::TRAIN,
            alpha: 0.99,
            n_max: 500,
            repeat,
            perm_offset: offset,
        };
        let got = inject(&gpu, &spec, &data, &perm, batch);
        let want = reference::noise_inject(&spec, &data, PIXELS as usize, &perm, batch);
        let name = format!("noise_inject B={batch} R={repeat} offset={offset}");
        assert_close(&format!("{name} cond"), &got.cond, &want.cond, 1e-6, 1e-5);
        assert_close(
            &format!("{name} noise"),
            &got.noise,
            &want.noise,
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("{name} noisy"),
            &got.noisy,
            &want.noisy,
            1e-4,
            1e-4,
        );
    }
}

/// With alpha = 1/2 the GPU's cond = 2^-n gives back n exactly: the levels equal the
/// reference's, and they are uniform over 0..=n_max (chi-square at a fixed seed).
#[test]
fn levels_equal_reference_and_are_uniform() {
    let gpu = common::gpu();
    let (batch, n_max) = (4040usize, 100u32);
    let data = images(1);
    let perm = vec![0u32];
    let spec = reference::NoiseSpec {
        seed: 99,
        step: 3,
        stream: rng::streams::TRAIN,
        alpha: 0.5,
        n_max,
        repeat: batch as u32,
        perm_offset: 0,
    };
    let got = inject(&gpu, &spec, &data, &perm, batch);
    let mut hist = vec![0u32; n_max as usize + 1];
    for (b, &c) in got.cond.iter().enumerate() {
        let n = (-c.log2()).round() as u32;
        assert_eq!(
            n,
            reference::level(&spec, b as u32),
            "level of sample {b} (cond {c})"
        );
        hist[n as usize] += 1;
    }
    let expected = batch as f64 / (n_max + 1) as f64;
    let chi2: f64 = hist
        .iter()
        .map(|&h| (h as f64 - expected).powi(2) / expected)
        .sum();
    // 100 degrees of freedom: the 99.9% quantile is 149.4.
    assert!(
        chi2 < 149.4,
        "chi-square {chi2} over {} bins: {hist:?}",
        n_max + 1
    );
    assert!(hist[0] > 0 && hist[n_max as usize] > 0, "both ends drawn");
}

#[test]
fn noise_at_given_levels_matches_reference() {
    let gpu = common::gpu();
    let px = PIXELS as usize;
    let data = images(3);
    let perm = vec![2u32];
    let levels = vec![0u32, 25, 50, 100, 500];
    let b = levels.len();
    let spec = reference::NoiseSpec {
        seed: 5,
        step: 0,
        stream: rng::streams::FIGURE,
        alpha: 0.99,
        n_max: 500,
        repeat: b as u32,
        perm_offset: 0,
    };
    let d = GpuTensor::from_bytes(&gpu, "data", &data).unwrap();
    let p = GpuTensor::from_slice(&gpu, "perm", &[1], &perm).unwrap();
    let l = GpuTensor::from_slice(&gpu, "levels", &[b], &levels).unwrap();
    let cond = GpuTensor::zeros(&gpu, "cond", &[b]).unwrap();
    let noise = GpuTensor::zeros(&gpu, "noise", &[b, px]).unwrap();
    let noisy = GpuTensor::zeros(&gpu, "noisy", &[b, px]).unwrap();
    let config = NoiseConfig {
        seed: 5,
        stream: spec.stream,
        alpha: 0.99,
        n_max: 500,
        repeat: b as u32,
    };
    let op = NoiseInject::at_levels(&gpu, &config, b, &d, &p, &l, &cond, &noise, &noisy).unwrap();
    op.set_step(&gpu, 0, 0);
    gpu.run(&[&op.dispatch]).unwrap();
    let want = reference::noise_at_levels(&spec, &data, px, &perm, &levels);
    assert_close(
        "noise_at_levels cond",
        &cond.read(&gpu).unwrap(),
        &want.cond,
        1e-6,
        1e-5,
    );
    assert_close(
        "noise_at_levels noisy",
        &noisy.read(&gpu).unwrap(),
        &want.noisy,
        1e-4,
        1e-4,
    );
    // Level 0 is the clean image.
    let clean: Vec<f32> = data[2 * px..3 * px]
        .iter()
        .map(|&v| v as f32 / 256.0 - 0.5)
        .collect();
    assert_close("level 0 is the image", &want.noisy[..px], &clean, 0.0, 0.0);
}

/// `noise_inject_labelled`: the same noised batch as `noise_inject`, and each sample's label,
/// its image's or "no label" with the dropout probability, equal to the reference's.
#[test]
fn labelled_inject_matches_reference_and_drops_at_its_rate() {
    use wgpu_diffusion::config::NO_LABEL;
    use wgpu_diffusion::ops::noise::LabelDropout;
    let gpu = common::gpu();
    let px = PIXELS as usize;
    let data = images(7);
    let perm = vec![6, 2, 5, 0, 1, 3, 4];
    let image_labels: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2];
    let (batch, repeat) = (2000, 300);
    for drop in [0.0, 0.1, 0.5] {
        let spec = reference::NoiseSpec {
            seed: 77,
            step: 3,
            stream: rng::streams::TRAIN,
            alpha: 0.99,
            n_max: 500,
            repeat,
            perm_offset: 0,
        };
        let d = GpuTensor::from_bytes(&gpu, "data", &data).unwrap();
        let p = GpuTensor::from_slice(&gpu, "perm", &[7], &perm).unwrap();
        let il = GpuTensor::from_slice(&gpu, "image-labels", &[7], &image_labels).unwrap();
        let labels = GpuTensor::zeros(&gpu, "labels", &[batch]).unwrap();
        let cond = GpuTensor::zeros(&gpu, "cond", &[batch]).unwrap();
        let noise = GpuTensor::zeros(&gpu, "noise", &[batch, px]).unwrap();
        let noisy = GpuTensor::zeros(&gpu, "noisy", &[batch, px]).unwrap();
        let config = NoiseConfig {
            seed: spec.seed,
            stream: spec.stream,
            alpha: spec.alpha,
            n_max: spec.n_max,
            repeat,
        };
        let ld = LabelDropout {
            image_labels: &il,
            labels: &labels,
            drop,
        };
        let op =
            NoiseInject::labelled(&gpu, &config, batch, &d, &p, ld, &cond, &noise, &noisy).unwrap();
        op.set_step(&gpu, spec.step, 0);
        gpu.run(&[&op.dispatch]).unwrap();
        let got: Vec<u32> = labels.read(&gpu).unwrap();
        let want: Vec<u32> = (0..batch as u32)
            .map(|b| reference::dropped_label(&spec, drop, b, &image_labels, &perm))
            .collect();
        let bad: Vec<usize> = (0..batch).filter(|&b| got[b] != want[b]).collect();
        assert!(
            bad.is_empty(),
            "drop {drop}: labels differ at {:?}",
            &bad[..bad.len().min(8)]
        );
        let dropped = got.iter().filter(|&&l| l == NO_LABEL).count() as f64 / batch as f64;
        let sd = (drop * (1.0 - drop) / batch as f64).sqrt();
        assert!(
            (dropped - drop).abs() <= 4.0 * sd + 1e-9,
            "drop {drop}: {dropped} of the labels dropped"
        );
        for (b, &l) in got.iter().enumerate().filter(|(_, &l)| l != NO_LABEL) {
            assert_eq!(
                l,
                image_labels[perm[b / repeat as usize] as usize],
                "sample {b}"
            );
        }
        let plain = reference::noise_inject(&spec, &data, px, &perm, batch);
        let name = format!("labelled inject drop {drop}");
        assert_close(&name, &noisy.read(&gpu).unwrap(), &plain.noisy, 1e-4, 1e-4);
        assert_close(&name, &cond.read(&gpu).unwrap(), &plain.cond, 1e-6, 1e-5);
    }
}
