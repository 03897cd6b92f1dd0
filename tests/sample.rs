//! The sampling loop on the GPU against the CPU reference; determinism and chunking.

mod common;

use wgpu_diffusion::config::{ModelConfig, Preset, Skip, PIXELS};
use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::reference::sample as reference;
use wgpu_diffusion::sample::{Sampler, Schedule};
use wgpu_diffusion::testing::assert_close;

fn schedule(steps: u32, scale: f32) -> Schedule {
    Schedule {
        alpha: 0.99,
        n_max: 500,
        steps,
        scale,
    }
}

fn digits(
    gpu: &Gpu,
    params: &[f32],
    batch: usize,
    s: Schedule,
    seed: u64,
    count: usize,
) -> Vec<f32> {
    let cfg = Preset::Tiny.model();
    let layout = ParamLayout::new(&cfg);
    let p = GpuTensor::from_slice(gpu, "params", &[layout.total], params).unwrap();
    let sm = Sampler::new(gpu, &cfg, &layout, &p, batch, s, seed).unwrap();
    let mut out = Vec::new();
    let mut first = 0;
    while out.len() < count * PIXELS as usize {
        let d = sm.run(gpu, first as u64).unwrap();
        let take = (count - first).min(batch) * PIXELS as usize;
        out.extend_from_slice(&d[..take]);
        first += batch;
    }
    out
}

/// A model with random weights large enough to matter (not a trained one).
fn random_params(cfg: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(cfg);
    let mut p = layout.init(seed);
    // The attention weights (not the feed-forward block's, which would make the 50-step
    // loop blow up past f32's range) four times their initial size.
    for t in layout.tensors.iter().filter(|t| {
        !["w_1", "b_1", "w_2", "b_2"]
            .iter()
            .any(|s| t.name.ends_with(s))
    }) {
        for v in &mut p[t.range()] {
            *v *= 4.0;
        }
    }
    p
}

/// Each step divides by a'^s, so float differences in the model's output (relative to the
/// size of the state it reads) grow by 1/a'^s.
fn step_tolerance(s: &Schedule, state: &[f32]) -> f32 {
    let size = state.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    5e-5 * size / s.keep()
}

#[test]
fn one_step_matches_reference() {
    let gpu = common::gpu();
    // The tiny preset, and with the feed-forward block (--mlp).
    for cfg in [
        Preset::Tiny.model(),
        ModelConfig {
            mlp: 12,
            ..Preset::Tiny.model()
        },
        ModelConfig {
            skip: Skip::Wiener,
            ..Preset::Tiny.model()
        },
    ] {
        one_step_matches_reference_for(&gpu, &cfg);
    }
}

fn one_step_matches_reference_for(gpu: &Gpu, cfg: &ModelConfig) {
    let (gpu, cfg) = (gpu, *cfg);
    let layout = ParamLayout::new(&cfg);
    let params = random_params(&cfg, 1);
    for (steps, scale, batch) in [(1, 1.0, 3), (1, 1.5, 5), (50, 1.5, 2)] {
        let s = schedule(steps, scale);
        let sm_params = GpuTensor::from_slice(gpu, "params", &[layout.total], &params).unwrap();
        let sm = Sampler::new(gpu, &cfg, &layout, &sm_params, batch, s, 7).unwrap();
        let last = sm.run(gpu, 0).unwrap();
        // Check every step of digit 0's trajectory, and the whole batch's last step, against
        // the reference step applied to the GPU's own previous state.
        let traj = sm.trajectory(gpu).unwrap();
        let px = PIXELS as usize;
        let init = reference::initial_noise(7, 0, 1);
        assert_close("initial noise", &traj[..px], &init, 1e-5, 1e-5);
        for k in 0..steps as usize {
            let mut a = traj[k * px..(k + 1) * px].to_vec();
            let tol = step_tolerance(&s, &a);
            reference::sample_step(&cfg, &layout, &params, &s, k as u32, &mut a);
            assert_close(
                &format!("step {k} of {steps}, s={scale}"),
                &traj[(k + 1) * px..(k + 2) * px],
                &a,
                tol,
                1e-4,
            );
        }
        assert_close(
            "digit 0 final",
            &last[..px],
            &traj[steps as usize * px..],
            0.0,
            0.0,
        );
        if steps == 1 {
            let want = reference::sample(&cfg, &layout, &params, &s, 7, 0, batch);
            let init = reference::initial_noise(7, 0, batch);
            let tol = step_tolerance(&s, &init);
            assert_close(
                &format!("1 step, s={scale}, B={batch}"),
                &last,
                &want,
                tol,
                1e-4,
            );
        }
    }
}

/// A whole 10-step loop of the tiny model (initial weights: the loop is stable, so errors do
/// not compound) equals the reference loop.
#[test]
fn ten_step_loop_matches_reference() {
    let gpu = common::gpu();
    let cfg = Preset::Tiny.model();
    let layout = ParamLayout::new(&cfg);
    let params = layout.init(2);
    for scale in [1.0, 1.5] {
        let s = schedule(10, scale);
        let got = digits(&gpu, &params, 4, s, 11, 4);
        let want = reference::sample(&cfg, &layout, &params, &s, 11, 0, 4);
        assert_close(&format!("10-step loop, s={scale}"), &got, &want, 1e-4, 1e-4);
    }
}

#[test]
fn seeds_are_deterministic_and_chunking_changes_nothing() {
    let gpu = common::gpu();
    let params = random_params(&Preset::Tiny.model(), 3);
    let s = schedule(5, 1.0);
    let a = digits(&gpu, &params, 7, s, 5, 7);
    let b = digits(&gpu, &params, 7, s, 5, 7);
    assert_eq!(a, b, "same seed, same digits");
    let c = digits(&gpu, &params, 7, s, 6, 7);
    assert_ne!(a, c, "another seed gives other digits");
    // 7 digits in chunks of 3 (3 + 3 + 1 of a 3-batch) equal one batch of 7.
    let chunked = digits(&gpu, &params, 3, s, 5, 7);
    assert_close("chunks of 3 vs one batch of 7", &chunked, &a, 1e-6, 1e-6);
}

#[test]
fn bad_schedules_are_errors() {
    for (steps, scale) in [(0, 1.0), (10, 0.0), (10, -1.0), (10, f32::NAN)] {
        assert!(
            schedule(steps, scale).validate().is_err(),
            "{steps} {scale}"
        );
    }
    let s = schedule(50, 1.0);
    // alpha is an f32 (0.99 rounds to 0.99000001): compare loosely.
    assert!((s.alpha_prime() - 0.99f64.powi(10)).abs() < 1e-6);
    let t = s.table();
    assert_eq!(t.len(), 50);
    assert!(
        (t[0] as f64 - 0.99f64.powi(500)).abs() < 1e-6
            && (t[49] as f64 - 0.99f64.powi(10)).abs() < 1e-6
    );
}

/// The loop reads nothing back: submitting all steps leaves the device's readback counter
/// unchanged; fetching the digits is exactly one readback.
#[test]
fn sampling_loop_reads_nothing_back() {
    let gpu = common::gpu();
    let cfg = Preset::Tiny.model();
    let layout = ParamLayout::new(&cfg);
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &layout.init(4)).unwrap();
    let sm = Sampler::new(&gpu, &cfg, &layout, &p, 6, schedule(20, 1.5), 1).unwrap();
    let before = gpu.readbacks();
    sm.submit(&gpu, 0).unwrap();
    gpu.wait().unwrap();
    assert_eq!(gpu.readbacks(), before, "the 20-step loop read data back");
    sm.run(&gpu, 0).unwrap();
    assert_eq!(
        gpu.readbacks(),
        before + 1,
        "one readback for the finished digits"
    );
}

/// The automatic batch counts the feed-forward block's activations: a wide block gives a
/// smaller batch, and the batch chosen always fits the adapter.
#[test]
fn auto_batch_counts_the_mlp_and_fits() {
    let gpu = common::gpu();
    let plain = Preset::Tiny.model();
    let wide = ModelConfig { mlp: 4096, ..plain };
    let (a, b) = (
        wgpu_diffusion::sample::auto_batch(&gpu, &plain, 1_000_000),
        wgpu_diffusion::sample::auto_batch(&gpu, &wide, 1_000_000),
    );
    assert!(b < a, "batch with mlp {b} vs without {a}");
    for (cfg, batch) in [(plain, a), (wide, b)] {
        wgpu_diffusion::model::network::check_fits(&gpu, &cfg, batch).unwrap();
    }
}
