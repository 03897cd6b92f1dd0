//! Adam (tf.keras 2.x formula) and the weights' EMA on the GPU against the CPU reference.

mod common;

use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::ops::adam::{self, Adam, AdamConfig};
use wgpu_diffusion::reference::adam as reference;
use wgpu_diffusion::testing::{assert_close, mixed_gradients, uniform_data};

/// `steps` Adam steps over `n` values, each with new gradients, GPU vs reference.
fn check(gpu: &Gpu, config: AdamConfig, n: usize, steps: u64, seed: u64) {
    let mut p = uniform_data(n, seed);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let pt = GpuTensor::from_slice(gpu, "params", &[n], &p).unwrap();
    let gt = GpuTensor::zeros(gpu, "grads", &[n]).unwrap();
    let mt = GpuTensor::zeros(gpu, "m", &[n]).unwrap();
    let vt = GpuTensor::zeros(gpu, "v", &[n]).unwrap();
    let opt = Adam::new(gpu, config, &pt, &gt, &mt, &vt).unwrap();
    for t in 1..=steps {
        let g = mixed_gradients(n, seed * 1000 + t);
        gt.write(gpu, &g);
        opt.set_step(gpu, t);
        gpu.run(&[&opt.dispatch]).unwrap();
        reference::adam_step(&config, t, &mut p, &g, &mut m, &mut v);
    }
    let name = format!("n={n} steps={steps} lr={}", config.lr);
    assert_close(&format!("{name} m"), &mt.read(gpu).unwrap(), &m, 1e-9, 1e-5);
    assert_close(
        &format!("{name} v"),
        &vt.read(gpu).unwrap(),
        &v,
        1e-12,
        1e-5,
    );
    // The parameters move by ~lr per step: compare to a fraction of that.
    assert_close(
        &format!("{name} params"),
        &pt.read(gpu).unwrap(),
        &p,
        config.lr * 1e-3,
        1e-6,
    );
}

#[test]
fn ten_steps_match_reference() {
    let gpu = common::gpu();
    for n in [1, 63, 1000, 4097] {
        check(&gpu, AdamConfig::keras(1e-4), n, 10, n as u64);
    }
    check(&gpu, AdamConfig::keras(1e-2), 1000, 10, 5);
}

/// More than 65,535 workgroups of 64: the grid spills into y and every element is updated.
#[test]
fn large_buffer_spills_into_second_grid_dimension() {
    let gpu = common::gpu();
    let n = 65_535 * 64 + 4_097;
    let groups = gpu.groups_1d(n as u64, 64).unwrap();
    assert!(groups[1] > 1, "test length does not spill: {groups:?}");
    check(&gpu, AdamConfig::keras(1e-3), n, 2, 77);
}

#[test]
fn ema_matches_reference() {
    let gpu = common::gpu();
    for n in [1, 100, 4099] {
        let p = uniform_data(n, 1);
        let mut e = uniform_data(n, 2);
        let pt = GpuTensor::from_slice(&gpu, "params", &[n], &p).unwrap();
        let et = GpuTensor::from_slice(&gpu, "ema", &[n], &e).unwrap();
        let ema = adam::Ema::new(&gpu, 0.999, &pt, &et).unwrap();
        // Without set_step the decay is used as it is; then the warmed-up decay of steps
        // 1, 2 and 5000.
        gpu.run(&[&ema.dispatch]).unwrap();
        reference::ema(0.999, &p, &mut e);
        for t in [1, 2, 5000] {
            ema.set_step(&gpu, t);
            gpu.run(&[&ema.dispatch]).unwrap();
            reference::ema(reference::ema_decay_at(0.999, t), &p, &mut e);
        }
        assert_close(
            &format!("ema n={n}"),
            &et.read(&gpu).unwrap(),
            &e,
            1e-7,
            1e-6,
        );
    }
}

#[test]
fn ema_warm_up() {
    // (1 + t) / (10 + t) until it reaches the decay: 2/11 at t = 1, 0.999 from t = 8991 on.
    assert!((reference::ema_decay_at(0.999, 1) - 2.0 / 11.0).abs() < 1e-7);
    assert!((reference::ema_decay_at(0.999, 1000) - 1001.0 / 1010.0).abs() < 1e-7);
    assert_eq!(reference::ema_decay_at(0.999, 8991), 0.999);
    assert_eq!(reference::ema_decay_at(0.999, 100_000), 0.999);
    assert_eq!(reference::ema_decay_at(0.5, 100), 0.5);
    assert!((reference::ema_decay_at(0.5, 3) - 4.0 / 13.0).abs() < 1e-7);
}

#[test]
fn bad_inputs_are_errors() {
    let gpu = common::gpu();
    let z = |n: usize| GpuTensor::zeros(&gpu, "z", &[n]).unwrap();
    let config = AdamConfig::keras(1e-4);
    assert!(Adam::new(&gpu, config, &z(10), &z(10), &z(9), &z(10)).is_err());
    let bad = AdamConfig {
        beta2: 1.0,
        ..config
    };
    assert!(Adam::new(&gpu, bad, &z(10), &z(10), &z(10), &z(10)).is_err());
    assert!(adam::Ema::new(&gpu, 0.5, &z(3), &z(4)).is_err());
    assert!(adam::Ema::new(&gpu, 1.5, &z(3), &z(3)).is_err());
}
