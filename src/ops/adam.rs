//! Host side of `shaders/adam.wgsl`: tf.keras 2.x Adam over the flat parameter buffer in one
//! dispatch ([`Adam`], with [`Adam::set_step`] per step), and the EMA of the weights ([`Ema`], with its warm-up per step).

use super::expect_len;
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

pub use crate::math::optim::AdamConfig;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    lr_t: f32,
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    epsilon: f32,
    decay: f32,
}

fn constants() -> [(&'static str, f64); 1] {
    [("WG", WG_1D as f64)]
}

fn check_len(op: &str, n: usize) -> Result<()> {
    if n as u64 > (u32::MAX - 1024) as u64 {
        return Err(Error::config(format!(
            "{op}: {n} elements, more than a kernel can index with 32 bits"
        )));
    }
    Ok(())
}

/// `adam_step` over params, grads, m, v (flat, same length), prepared once.
pub struct Adam {
    pub dispatch: Dispatch,
    pub config: AdamConfig,
    params: wgpu::Buffer,
    base: Params,
}

impl Adam {
    /// Prepares the update of `params` from `grads` with moments `m`, `v` (all the same
    /// length). The step starts at t = 1; call [`Adam::set_step`] before each submission.
    pub fn new(
        gpu: &Gpu,
        config: AdamConfig,
        params: &GpuTensor,
        grads: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
    ) -> Result<Adam> {
        let n = params.len();
        expect_len("adam", grads, n)?;
        expect_len("adam", m, n)?;
        expect_len("adam", v, n)?;
        check_len("adam", n)?;
        let c = config;
        if !(c.lr.is_finite()
            && (0.0..1.0).contains(&c.beta1)
            && (0.0..1.0).contains(&c.beta2)
            && c.epsilon.is_finite()
            && c.epsilon >= 0.0)
        {
            return Err(Error::config(format!(
                "adam: need a finite lr, beta1 and beta2 in [0, 1) and epsilon >= 0, got {c:?}"
            )));
        }
        let base = Params {
            n: n as u32,
            lr_t: c.lr_t(1) as f32,
            beta1: c.beta1,
            beta2: c.beta2,
            one_minus_beta1: 1.0 - c.beta1,
            one_minus_beta2: 1.0 - c.beta2,
            epsilon: c.epsilon,
            decay: 0.0,
        };
        let u = gpu.uniform("adam-params", &base);
        let k = gpu.kernel("adam", "adam_step", &constants())?;
        let groups = gpu.groups_1d(n as u64, WG_1D)?;
        let dispatch = gpu.dispatch(
            &k,
            &[
                (0, u.as_entire_binding()),
                (1, params.bind()),
                (2, grads.bind()),
                (3, m.bind()),
                (4, v.bind()),
            ],
            groups,
        )?;
        Ok(Adam {
            dispatch,
            config,
            params: u,
            base,
        })
    }

    /// Sets the step t (1-based: the first update is t = 1) for the next submission: the
    /// bias correction is computed here in f64. A 32-byte queue write.
    pub fn set_step(&self, gpu: &Gpu, t: u64) {
        self.set_step_lr(gpu, t, self.config.lr);
    }

    /// [`Adam::set_step`] with this step's learning rate `lr` in place of the config's (a
    /// schedule: see [`crate::lr_schedule`]).
    pub fn set_step_lr(&self, gpu: &Gpu, t: u64, lr: f32) {
        let config = AdamConfig { lr, ..self.config };
        let p = Params {
            lr_t: config.lr_t(t) as f32,
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}

/// `ema` over params (same length, different buffers), prepared once: ema = d * ema +
/// (1 - d) * params with the warmed-up decay d of [`Ema::set_step`].
pub struct Ema {
    pub dispatch: Dispatch,
    /// The decay the warm-up rises to.
    pub decay: f32,
    params: wgpu::Buffer,
    base: Params,
}

impl Ema {
    /// Prepares the update with `decay` in [0, 1] (used as it is until [`Ema::set_step`]).
    pub fn new(gpu: &Gpu, decay: f32, params: &GpuTensor, ema: &GpuTensor) -> Result<Ema> {
        let n = params.len();
        expect_len("ema", ema, n)?;
        check_len("ema", n)?;
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::config(format!(
                "ema: decay must be in [0, 1], got {decay}"
            )));
        }
        let base = Params {
            n: n as u32,
            decay,
            ..Default::default()
        };
        let u = gpu.uniform("ema-params", &base);
        let k = gpu.kernel("adam", "ema", &constants())?;
        let groups = gpu.groups_1d(n as u64, WG_1D)?;
        let dispatch = gpu.dispatch(
            &k,
            &[
                (0, u.as_entire_binding()),
                (5, params.bind()),
                (6, ema.bind()),
            ],
            groups,
        )?;
        Ok(Ema {
            dispatch,
            decay,
            params: u,
            base,
        })
    }

    /// Sets the decay of update t (1-based) to `reference::adam::ema_decay_at(decay, t)`, so the
    /// average forgets the initial weights quickly. A 32-byte queue write.
    pub fn set_step(&self, gpu: &Gpu, t: u64) {
        let p = Params {
            decay: crate::math::optim::ema_decay_at(self.decay, t),
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}
