//! The optimizer (`shaders/adam.wgsl`): `adam_step` (tf.keras 2.x Adam) over several steps
//! with new gradients of mixed magnitudes each step, its moments and parameters; `ema`, the
//! weights' average, at its plain decay and the warmed-up decays of a few steps.

use super::Checker;
use crate::gpu::GpuTensor;
use crate::ops::adam::{Adam, AdamConfig, Ema};
use crate::reference::adam as reference;
use crate::testing::{mixed_gradients, uniform_data};

/// (n, steps, lr): one value, odd, past a workgroup; a large step size; in full mode a
/// buffer of more than 65,535 workgroups of 64 (the grid spills into y).
const ADAM: [(usize, u64, f32); 5] = [
    (1, 10, 1e-4),
    (63, 10, 1e-4),
    (4097, 10, 1e-4),
    (1000, 10, 1e-2),
    (65_535 * 64 + 4_097, 2, 1e-3),
];
const QUICK_ADAM: [(usize, u64, f32); 2] = [(63, 5, 1e-4), (4097, 5, 1e-2)];
const EMA: [usize; 3] = [1, 100, 4099];
const QUICK_EMA: [usize; 1] = [4099];

pub fn check(c: &mut Checker) {
    let adam: &[_] = if c.quick { &QUICK_ADAM } else { &ADAM };
    for &(n, steps, lr) in adam {
        let shape = format!("n={n} steps={steps} lr={lr}");
        c.case("adam_step", shape.clone(), |c| {
            adam_case(c, &shape, AdamConfig::keras(lr), n, steps)
        });
    }
    let ema: &[_] = if c.quick { &QUICK_EMA } else { &EMA };
    for &n in ema {
        let shape = format!("n={n} t=-,1,2,5000");
        c.case("ema", shape.clone(), |c| ema_case(c, &shape, n));
    }
}

/// Gradients of step `t`: mixed magnitudes (1e-3 .. 10), some exactly zero.
fn adam_case(
    c: &mut Checker,
    shape: &str,
    config: AdamConfig,
    n: usize,
    steps: u64,
) -> crate::Result<()> {
    let seed = n as u64;
    let mut p = uniform_data(n, seed);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let pt = c.tensor("params", &p)?;
    let gt = GpuTensor::zeros(c.gpu, "grads", &[n])?;
    let mt = GpuTensor::zeros(c.gpu, "m", &[n])?;
    let vt = GpuTensor::zeros(c.gpu, "v", &[n])?;
    let opt = Adam::new(c.gpu, config, &pt, &gt, &mt, &vt)?;
    for t in 1..=steps {
        let g = mixed_gradients(n, seed * 1000 + t);
        gt.write(c.gpu, &g);
        opt.set_step(c.gpu, t);
        c.run(&[&opt.dispatch])?;
        reference::adam_step(&config, t, &mut p, &g, &mut m, &mut v);
    }
    c.compare_tensor("adam_step m", shape, &mt, &m, 1e-9, 1e-5);
    c.compare_tensor("adam_step v", shape, &vt, &v, 1e-12, 1e-5);
    // The parameters move by ~lr per step: compared to a fraction of that.
    c.compare_tensor("adam_step params", shape, &pt, &p, config.lr * 1e-3, 1e-6);
    Ok(())
}

/// The EMA at its plain decay (before any `set_step`), then at the warmed-up decays of steps
/// 1, 2 and 5000.
fn ema_case(c: &mut Checker, shape: &str, n: usize) -> crate::Result<()> {
    let p = uniform_data(n, 1);
    let mut e = uniform_data(n, 2);
    let (pt, et) = (c.tensor("params", &p)?, c.tensor("ema", &e)?);
    let ema = Ema::new(c.gpu, 0.999, &pt, &et)?;
    c.run(&[&ema.dispatch])?;
    reference::ema(0.999, &p, &mut e);
    for t in [1, 2, 5000] {
        ema.set_step(c.gpu, t);
        c.run(&[&ema.dispatch])?;
        reference::ema(reference::ema_decay_at(0.999, t), &p, &mut e);
    }
    c.compare_tensor("ema", shape, &et, &e, 1e-7, 1e-6);
    Ok(())
}
