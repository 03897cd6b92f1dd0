//! Host side of `shaders/noise.wgsl`: the forward process on a batch (`noise_inject`) and
//! plain normals (`fill_normal`). The only per-step host work is a 48-byte parameter write.

use super::expect_len;
use crate::config::PIXELS;
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    count: u32,
    repeat: u32,
    n_max: u32,
    alpha: f32,
    perm_offset: u32,
    stream: u32,
    drop_below: u32,
    _pad: [u32; 2],
}

fn constants() -> [(&'static str, f64); 3] {
    [
        ("WG", WG_1D as f64),
        ("PIXELS", PIXELS as f64),
        ("NO_LABEL", crate::config::NO_LABEL as f64),
    ]
}

/// A class-conditional batch's labels: each image's label (u32 per image, in the order of
/// the images) in, each sample's label [B] out, dropped to "no label" with probability `drop`.
#[derive(Clone, Copy)]
pub struct LabelDropout<'a> {
    pub image_labels: &'a GpuTensor,
    pub labels: &'a GpuTensor,
    pub drop: f64,
}

/// Which levels (and labels) a noise injection makes.
#[derive(Clone, Copy)]
enum Variant<'a> {
    Random,
    AtLevels(&'a GpuTensor),
    Labelled(LabelDropout<'a>),
}

/// What stays fixed across the steps of a noise injection.
#[derive(Clone, Copy, Debug)]
pub struct NoiseConfig {
    pub seed: u64,
    pub stream: u32,
    pub alpha: f32,
    pub n_max: u32,
    /// Samples made from each image.
    pub repeat: u32,
}

/// `noise_inject` over a batch, prepared once; [`NoiseInject::set_step`] moves it along.
pub struct NoiseInject {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    base: Params,
}

impl NoiseInject {
    /// `data`: 8-bit images packed in u32 words; `perm`: image order; outputs cond [B],
    /// noise [B, 784], noisy [B, 784].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        config: &NoiseConfig,
        batch: usize,
        data: &GpuTensor,
        perm: &GpuTensor,
        cond: &GpuTensor,
        noise: &GpuTensor,
        noisy: &GpuTensor,
    ) -> Result<NoiseInject> {
        let v = Variant::Random;
        Self::build(gpu, config, batch, data, perm, v, cond, noise, noisy)
    }

    /// As [`NoiseInject::new`], and each sample's label with dropout
    /// (`noise_inject_labelled`).
    #[allow(clippy::too_many_arguments)]
    pub fn labelled(
        gpu: &Gpu,
        config: &NoiseConfig,
        batch: usize,
        data: &GpuTensor,
        perm: &GpuTensor,
        labels: LabelDropout<'_>,
        cond: &GpuTensor,
        noise: &GpuTensor,
        noisy: &GpuTensor,
    ) -> Result<NoiseInject> {
        expect_len("noise_inject_labelled", labels.labels, batch)?;
        if !(0.0..=1.0).contains(&labels.drop) {
            return Err(Error::config(format!(
                "label dropout must be in [0, 1], got {}",
                labels.drop
            )));
        }
        let v = Variant::Labelled(labels);
        Self::build(gpu, config, batch, data, perm, v, cond, noise, noisy)
    }

    /// As [`NoiseInject::new`], but sample b is noised at the given level `levels[b]` (u32).
    #[allow(clippy::too_many_arguments)]
    pub fn at_levels(
        gpu: &Gpu,
        config: &NoiseConfig,
        batch: usize,
        data: &GpuTensor,
        perm: &GpuTensor,
        levels: &GpuTensor,
        cond: &GpuTensor,
        noise: &GpuTensor,
        noisy: &GpuTensor,
    ) -> Result<NoiseInject> {
        expect_len("noise_at_levels", levels, batch)?;
        let v = Variant::AtLevels(levels);
        Self::build(gpu, config, batch, data, perm, v, cond, noise, noisy)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        gpu: &Gpu,
        config: &NoiseConfig,
        batch: usize,
        data: &GpuTensor,
        perm: &GpuTensor,
        variant: Variant<'_>,
        cond: &GpuTensor,
        noise: &GpuTensor,
        noisy: &GpuTensor,
    ) -> Result<NoiseInject> {
        if config.repeat == 0 || !(config.alpha > 0.0 && config.alpha <= 1.0) {
            return Err(Error::config(format!(
                "noise: repeat must be >= 1 and alpha in (0, 1], got {} and {}",
                config.repeat, config.alpha
            )));
        }
        expect_len("noise_inject", cond, batch)?;
        expect_len("noise_inject", noise, batch * PIXELS as usize)?;
        expect_len("noise_inject", noisy, batch * PIXELS as usize)?;
        let base = Params {
            seed_lo: config.seed as u32,
            seed_hi: (config.seed >> 32) as u32,
            count: batch as u32,
            repeat: config.repeat,
            n_max: config.n_max,
            alpha: config.alpha,
            stream: config.stream,
            drop_below: match variant {
                Variant::Labelled(l) => crate::math::rng::drop_below(l.drop),
                _ => 0,
            },
            ..Default::default()
        };
        let params = gpu.uniform("noise-params", &base);
        let entry = match variant {
            Variant::Random => "noise_inject",
            Variant::AtLevels(_) => "noise_at_levels",
            Variant::Labelled(_) => "noise_inject_labelled",
        };
        let k = gpu.kernel("noise", entry, &constants())?;
        let groups = gpu.groups_1d(noise.len() as u64, WG_1D)?;
        let mut bindings = vec![
            (0, params.as_entire_binding()),
            (1, data.bind()),
            (2, perm.bind()),
            (3, cond.bind()),
            (4, noise.bind()),
            (5, noisy.bind()),
        ];
        match variant {
            Variant::Random => {}
            Variant::AtLevels(l) => bindings.push((8, l.bind())),
            Variant::Labelled(l) => {
                bindings.push((10, l.image_labels.bind()));
                bindings.push((11, l.labels.bind()));
            }
        }
        let dispatch = gpu.dispatch(&k, &bindings, groups)?;
        Ok(NoiseInject {
            dispatch,
            params,
            base,
        })
    }

    /// Sets the step (RNG counter) and the first image's position in `perm` for the next
    /// submission. A 48-byte queue write: no allocation, no readback.
    pub fn set_step(&self, gpu: &Gpu, step: u32, perm_offset: u32) {
        let p = Params {
            step,
            perm_offset,
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}

/// `fill_normal` (out[i] = N(0,1) at (seed, step, stream, i)) or, with [`FillNormal::bits`],
/// `fill_bits` (the raw Philox words, 4 per index, for tests).
pub struct FillNormal {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    base: Params,
}

impl FillNormal {
    pub fn new(gpu: &Gpu, seed: u64, stream: u32, out: &GpuTensor) -> Result<FillNormal> {
        Self::build(gpu, seed, stream, out, out.len(), "fill_normal", 6, None)
    }

    /// `fill_normal_counted`: as [`FillNormal::new`], but the RNG step is the one set on the
    /// host plus `counter[0]` (u32 [1]), a counter the GPU itself moves on, so that dispatches
    /// recorded into one command buffer draw different numbers.
    pub fn counted(
        gpu: &Gpu,
        seed: u64,
        stream: u32,
        out: &GpuTensor,
        counter: &GpuTensor,
    ) -> Result<FillNormal> {
        expect_len("fill_normal_counted", counter, 1)?;
        let c = Some(counter);
        Self::build(
            gpu,
            seed,
            stream,
            out,
            out.len(),
            "fill_normal_counted",
            6,
            c,
        )
    }

    /// Raw generator output: `out` holds 4 u32 words per index.
    pub fn bits(gpu: &Gpu, seed: u64, stream: u32, out: &GpuTensor) -> Result<FillNormal> {
        Self::build(gpu, seed, stream, out, out.len() / 4, "fill_bits", 7, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        gpu: &Gpu,
        seed: u64,
        stream: u32,
        out: &GpuTensor,
        count: usize,
        entry: &str,
        binding: u32,
        counter: Option<&GpuTensor>,
    ) -> Result<FillNormal> {
        let base = Params {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            count: count as u32,
            stream,
            ..Default::default()
        };
        let params = gpu.uniform("fill-params", &base);
        let k = gpu.kernel("noise", entry, &constants())?;
        let groups = gpu.groups_1d(count as u64, WG_1D)?;
        let mut bindings = vec![(0, params.as_entire_binding()), (binding, out.bind())];
        if let Some(c) = counter {
            bindings.push((9, c.bind()));
        }
        let dispatch = gpu.dispatch(&k, &bindings, groups)?;
        Ok(FillNormal {
            dispatch,
            params,
            base,
        })
    }

    /// Sets the step (RNG counter) for the next submission.
    pub fn set_step(&self, gpu: &Gpu, step: u32) {
        self.set_step_offset(gpu, step, 0);
    }

    /// Sets the step and the index of the first value (`fill_normal` only): value i of the
    /// output is the normal at index `offset + i`.
    pub fn set_step_offset(&self, gpu: &Gpu, step: u32, offset: u32) {
        let p = Params {
            step,
            perm_offset: offset,
            ..self.base
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
    }
}
