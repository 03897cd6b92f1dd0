//! Inverse diffusion (SPEC §5) on the GPU: thousands of digits in parallel, every step recorded
//! into one command buffer with no readback; the host reads the finished digits once per chunk.
//!
//! Start: A = N(0,1) (GPU RNG, index = digit * 784 + pixel, so chunking does not change the
//! digits). For n = n'..1: N_hat = recompose(model(patches(A), a'^n)); A = (A - N_hat (1 - a'^s)) / a'^s,
//! with a' = a^(n_max / n') and s the step scale.
//!
//! `--eta E` (our addition; 0 = the seed's deterministic loop): the seed's update is exactly
//! A = a'^m X_hat + (1 - a'^m) N_hat with m = n - s and X_hat = (A - (1 - a'^n) N_hat) / a'^n,
//! the digit the model sees. The stochastic step replaces part of N_hat by fresh noise Z:
//! A = a'^m X_hat + (1 - a'^m) (sqrt(1 - r^2) N_hat + r Z), r = E sqrt(1 - (t_m / t_n)^2),
//! t_j = (1 - a'^j) / a'^j (the noise-to-signal ratio): E = 1 is DDPM's ancestral step
//! (in the variance-exploding form A / a'^n = X + t_n N), E = 0 the seed's. No noise is added
//! when m <= 0 (the last step).

use crate::config::{ModelConfig, BACKGROUND_FRAC, INK_MEAN, INK_VAR, PIXELS, PIXEL_HI, PIXEL_LO};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::model::network::Network;
use crate::model::ParamLayout;
use crate::ops::noise::FillNormal;
use crate::ops::patches;
use crate::reference::rng::streams;

/// The schedule of a sampling run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// a, the training noising factor.
    pub alpha: f32,
    /// n_max of training.
    pub n_max: u32,
    /// n', the number of denoising steps.
    pub steps: u32,
    /// s, the step scale (1 plain, 1.5 "more trust in the model").
    pub scale: f32,
    /// E in [0, 1], the share of fresh noise in each step (0: the seed's deterministic loop).
    pub eta: f32,
    /// Clamp each step's digit estimate to the pixel range (`--clip`; the seed does not).
    pub clip: bool,
    /// `--background N` (our addition; 0: off): at the steps whose level is at most N, each
    /// pixel's predicted noise is blended with the exact noise of a background pixel, by the
    /// posterior that it is background under `--skip mixture`'s prior
    /// (`reference::sample::background_blend`).
    pub background: u32,
    /// `--low-step-scale S --low-from N` (our addition; `low_from` 0: off): the step scale
    /// at the steps whose level is at most N, `scale` above it (e.g. 1 where the shapes are
    /// decided, 1.5 where the strokes are).
    pub low_scale: f32,
    pub low_from: u32,
}

impl Schedule {
    /// The seed's loop: n' = `steps` at scale `scale` throughout, deterministic, no clip, no
    /// background blend (the other flags are set on the result).
    pub fn plain(alpha: f32, n_max: u32, steps: u32, scale: f32) -> Schedule {
        Schedule {
            alpha,
            n_max,
            steps,
            scale,
            eta: 0.0,
            clip: false,
            background: 0,
            low_scale: scale,
            low_from: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::config("--steps must be at least 1"));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::config(format!(
                "--step-scale must be positive, got {}",
                self.scale
            )));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::config(format!(
                "--eta must be in [0, 1], got {}",
                self.eta
            )));
        }
        if self.low_from > 0 && !(self.low_scale > 0.0 && self.low_scale.is_finite()) {
            return Err(Error::config(format!(
                "--low-step-scale must be positive, got {}",
                self.low_scale
            )));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) || self.n_max == 0 {
            return Err(Error::config(format!(
                "alpha must be in (0, 1) and n_max >= 1, got {} and {}",
                self.alpha, self.n_max
            )));
        }
        Ok(())
    }

    /// a' = a^(n_max / n') (computed in f64).
    pub fn alpha_prime(&self) -> f64 {
        (self.alpha as f64).powf(self.n_max as f64 / self.steps as f64)
    }

    /// Conditioning value of step k (0-based): a'^(n' - k).
    pub fn table(&self) -> Vec<f32> {
        let ap = self.alpha_prime();
        (0..self.steps)
            .map(|k| ap.powi((self.steps - k) as i32) as f32)
            .collect()
    }

    /// The first step k whose level (n' - k) n_max / n' is at most `level` (`steps` when none
    /// is, as for `level` 0).
    pub fn first_step_at_or_below(&self, level: u32) -> u32 {
        let n = self.steps as u64;
        let lowest = (level as u64 * n / self.n_max as u64).min(n);
        (n - lowest) as u32
    }

    /// The first step of `--background` ([`Self::first_step_at_or_below`] its level).
    pub fn background_from(&self) -> u32 {
        self.first_step_at_or_below(self.background)
    }

    /// The step scale s of step k: `low_scale` from the first step at or below `low_from`
    /// (when it is set), else `scale`.
    pub fn scale_at(&self, k: u32) -> f32 {
        if self.low_from > 0 && k >= self.first_step_at_or_below(self.low_from) {
            self.low_scale
        } else {
            self.scale
        }
    }

    /// a'^s of step k, the factor it divides by.
    pub fn keep(&self, k: u32) -> f32 {
        self.alpha_prime().powf(self.scale_at(k) as f64) as f32
    }

    /// Per step k, the stochastic step's additions to the seed's update (see the module
    /// header): A += c0 N_hat + c1 Z with c0 = (1 - a'^m) (sqrt(1 - r^2) - 1),
    /// c1 = (1 - a'^m) r, m = n' - k - s (s the step's scale). All zero when eta = 0 or
    /// m <= 0.
    pub fn noise_coefs(&self) -> Vec<[f32; 2]> {
        let ap = self.alpha_prime();
        let ratio = |j: f64| (1.0 - ap.powf(j)) / ap.powf(j);
        (0..self.steps)
            .map(|k| {
                let n = (self.steps - k) as f64;
                let m = n - self.scale_at(k) as f64;
                if self.eta == 0.0 || m <= 0.0 {
                    return [0.0, 0.0];
                }
                let q = ratio(m) / ratio(n);
                let r = self.eta as f64 * (1.0 - q * q).max(0.0).sqrt();
                let sigma = 1.0 - ap.powf(m);
                [
                    (sigma * ((1.0 - r * r).sqrt() - 1.0)) as f32,
                    (sigma * r) as f32,
                ]
            })
            .collect()
    }

    /// What the GPU loop reads per step k: (a'^(n'-k), a'^s, c0, c1) ([`Self::table`],
    /// [`Self::keep`], [`Self::noise_coefs`]).
    pub fn step_table(&self) -> Vec<[f32; 4]> {
        let coefs = self.noise_coefs();
        self.table()
            .iter()
            .zip(coefs)
            .enumerate()
            .map(|(k, (&u, [c0, c1]))| [u, self.keep(k as u32), c0, c1])
            .collect()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    clip: u32,
    bg_from: u32,
    guidance: f32,
    _pad: [u32; 3],
}

/// `--refine-from` levels: each at least 1 (level 0 is the finished digit: no step is there),
/// one per `--refiner` (`refiners` of them), and decreasing (each later refiner takes the
/// lower levels).
fn check_refine_from(levels: &[u32], refiners: usize) -> Result<()> {
    if levels.len() != refiners {
        return Err(Error::config(format!(
            "--refiner and --refine-from come in pairs: got {refiners} --refiner and {} --refine-from",
            levels.len()
        )));
    }
    if levels.contains(&0) {
        return Err(Error::config("--refine-from must be at least 1"));
    }
    if let Some(w) = levels.windows(2).find(|w| w[1] >= w[0]) {
        return Err(Error::config(format!(
            "--refine-from levels must decrease (each later --refiner takes lower levels): {} then {}",
            w[0], w[1]
        )));
    }
    Ok(())
}

/// A model the sampler calls: its configuration and its weights on the GPU.
#[derive(Clone, Copy)]
pub struct SamplerModel<'a> {
    pub cfg: &'a ModelConfig,
    pub layout: &'a ParamLayout,
    pub params: &'a GpuTensor,
}

/// `--guide CKPT --guidance W [--guide-from LEVEL]` (our addition; Karras et al. 2024,
/// "Guiding a diffusion model with a bad version of itself"): a weaker model of the same task
/// (smaller or trained less) is called beside the main model at the main model's steps (those
/// at levels up to `from_level`, all when None), and the step uses
/// N_guide + W (N_model - N_guide): W = 1 is the model alone, W > 1 moves away from the
/// weaker model's errors.
#[derive(Clone, Copy)]
pub struct Guide<'a> {
    pub model: SamplerModel<'a>,
    pub weight: f32,
    pub from_level: Option<u32>,
}

impl Guide<'_> {
    /// The weight must be a positive finite number.
    pub fn check_weight(weight: f32) -> Result<()> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::config(format!(
                "--guidance must be a positive number (1: no guidance), got {weight}"
            )));
        }
        Ok(())
    }

    /// `--guide-from`: at least 1 (level 0 is the finished digit: no step is there).
    pub fn check_from(level: Option<u32>) -> Result<()> {
        if level == Some(0) {
            return Err(Error::config(
                "--guide-from must be at least 1 (level 0 is the finished digit: no step is there)",
            ));
        }
        Ok(())
    }
}

/// One model call of the loop: the patches of the image into the model's tokens, its
/// forward pass, its output recomposed (into N_hat, or the guide's N_guide).
struct Call {
    net: Network,
    patches: Dispatch,
    recompose: Dispatch,
}

impl Call {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.patches.record(pass);
        self.net.record_forward(pass);
        self.recompose.record(pass);
    }
}

/// One model's part of the loop, used from step `from` on (until a later stage's): its
/// call, and with --guide (the main model's stage only) the guide's.
struct Stage {
    from: u32,
    call: Call,
    guide: Option<GuideCall>,
}

/// The guide's part of the steps from `from` on: its call into N_guide, then `combine`,
/// N_hat = N_guide + W (N_hat - N_guide).
struct GuideCall {
    from: u32,
    call: Call,
    combine: Dispatch,
}

/// The sampling loop for a fixed batch, prepared once.
pub struct Sampler {
    pub batch: usize,
    pub schedule: Schedule,
    /// The model, then each refiner from its first step.
    stages: Vec<Stage>,
    image: GpuTensor,
    state: GpuTensor,
    traj: GpuTensor,
    init: FillNormal,
    /// With eta > 0: the fresh noise of each step (RNG step = the GPU's step counter).
    step_noise: Option<FillNormal>,
    /// Before the model call: cond, snapshot.
    pre: Vec<Dispatch>,
    /// After the model call and its recompose: update, tick.
    post: Vec<Dispatch>,
    /// The final digit 0 into the trajectory.
    last_snapshot: Dispatch,
    _keep: Vec<GpuTensor>,
}

impl Sampler {
    /// A sampler of `batch` digits at a time with weights `params` (flat, in `layout`).
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        layout: &ParamLayout,
        params: &GpuTensor,
        batch: usize,
        schedule: Schedule,
        seed: u64,
    ) -> Result<Sampler> {
        let model = SamplerModel {
            cfg,
            layout,
            params,
        };
        Self::with_refiners(gpu, model, &[], batch, schedule, seed)
    }

    /// [`Self::guided`] without a guide.
    pub fn with_refiners(
        gpu: &Gpu,
        model: SamplerModel<'_>,
        refiners: &[(SamplerModel<'_>, u32)],
        batch: usize,
        schedule: Schedule,
        seed: u64,
    ) -> Result<Sampler> {
        Self::guided(gpu, model, None, refiners, batch, schedule, seed)
    }

    /// A sampler whose steps at levels up to `level` call `refiner` instead of `model`, for
    /// each `(refiner, level)` of `refiners` (levels decreasing: a later refiner takes over
    /// from an earlier one). `--refiner CKPT --refine-from LEVEL`, repeatable: models trained
    /// on the lower levels only, as eDiff-I's expert denoisers. All see the same image,
    /// conditioning and schedule. With `guide`, the model's own steps (not the refiners')
    /// are guided ([`Guide`]).
    pub fn guided(
        gpu: &Gpu,
        model: SamplerModel<'_>,
        guide: Option<Guide<'_>>,
        refiners: &[(SamplerModel<'_>, u32)],
        batch: usize,
        schedule: Schedule,
        seed: u64,
    ) -> Result<Sampler> {
        schedule.validate()?;
        if let Some(g) = &guide {
            Guide::check_weight(g.weight)?;
            Guide::check_from(g.from_level)?;
        }
        if batch == 0 {
            return Err(Error::config(
                "the sampling batch must hold at least one digit",
            ));
        }
        let levels: Vec<u32> = refiners.iter().map(|(_, level)| *level).collect();
        check_refine_from(&levels, refiners.len())?;
        let px = PIXELS as usize;
        let image = GpuTensor::zeros(gpu, "sample-image", &[batch, px])?;
        let nhat = GpuTensor::zeros(gpu, "sample-nhat", &[batch, px])?;
        let cond = GpuTensor::zeros(gpu, "sample-cond", &[batch])?;
        let state = GpuTensor::zeros(gpu, "sample-state", &[1])?;
        let table = GpuTensor::from_slice(
            gpu,
            "sample-table",
            &[schedule.steps as usize, 4],
            &schedule.step_table().concat(),
        )?;
        let traj = GpuTensor::zeros(gpu, "trajectory", &[schedule.steps as usize + 1, px])?;
        let params_buf = gpu.uniform(
            "sample-params",
            &Params {
                batch: batch as u32,
                steps: schedule.steps,
                clip: schedule.clip as u32,
                bg_from: schedule.background_from(),
                guidance: guide.map_or(1.0, |g| g.weight),
                _pad: [0; 3],
            },
        );
        let c = [
            ("WG", WG_1D as f64),
            ("PIXELS", px as f64),
            ("LO", PIXEL_LO as f64),
            ("HI", PIXEL_HI as f64),
            ("BG_FRAC", BACKGROUND_FRAC as f64),
            ("INK_MEAN", INK_MEAN as f64),
            ("INK_VAR", INK_VAR as f64),
        ];
        let k = |e: &str| gpu.kernel("sample", e, &c);
        let u = || params_buf.as_entire_binding();
        let snapshot = || -> Result<Dispatch> {
            gpu.dispatch(
                &k("sample_snapshot")?,
                &[
                    (0, u()),
                    (1, state.bind()),
                    (5, image.bind()),
                    (7, traj.bind()),
                ],
                gpu.groups_1d(px as u64, WG_1D)?,
            )
        };
        let pre = vec![
            gpu.dispatch(
                &k("sample_cond")?,
                &[
                    (0, u()),
                    (1, state.bind()),
                    (3, table.bind()),
                    (4, cond.bind()),
                ],
                gpu.groups_1d(batch as u64, WG_1D)?,
            )?,
            snapshot()?,
        ];
        let groups = gpu.groups_1d((batch * px) as u64, WG_1D)?;
        // A call of model m whose output is recomposed into `out`.
        let call = |m: SamplerModel<'_>, out: &GpuTensor| -> Result<Call> {
            let (g, t) = (&m.cfg.geometry, m.cfg.geometry.tokens() as usize);
            let net = Network::new(gpu, m.cfg, m.layout, batch, m.params, None)?;
            Ok(Call {
                patches: patches::patches_forward(gpu, g, batch, t, &image, &cond, &net.tokens)?,
                recompose: patches::recompose(gpu, g, batch, t, &net.output, out)?,
                net,
            })
        };
        let mut keep = vec![];
        let mut stages = Vec::new();
        for (i, (m, from)) in std::iter::once((model, 0))
            .chain(
                refiners
                    .iter()
                    .map(|(r, level)| (*r, schedule.first_step_at_or_below(*level))),
            )
            .enumerate()
        {
            let guide = match guide.filter(|_| i == 0) {
                Some(g) => {
                    let nhat_guide = GpuTensor::zeros(gpu, "sample-nhat-guide", &[batch, px])?;
                    let guide_call = GuideCall {
                        from: g
                            .from_level
                            .map_or(0, |l| schedule.first_step_at_or_below(l)),
                        call: call(g.model, &nhat_guide)?,
                        combine: gpu.dispatch(
                            &k("sample_guide")?,
                            &[(0, u()), (10, nhat.bind()), (11, nhat_guide.bind())],
                            groups,
                        )?,
                    };
                    keep.push(nhat_guide);
                    Some(guide_call)
                }
                None => None,
            };
            stages.push(Stage {
                from,
                call: call(m, &nhat)?,
                guide,
            });
        }
        let mut post = Vec::new();
        keep.push(cond);
        // With eta > 0: the fresh noise z [B, 784] (its coefficients are in the table).
        let stochastic = if schedule.eta > 0.0 {
            Some(GpuTensor::zeros(gpu, "sample-z", &[batch, px])?)
        } else {
            None
        };
        let mut update = vec![
            (0, u()),
            (1, state.bind()),
            (3, table.bind()),
            (5, image.bind()),
            (6, nhat.bind()),
        ];
        let entry = match &stochastic {
            Some(z) => {
                update.push((8, z.bind()));
                "sample_update_stochastic"
            }
            None => "sample_update",
        };
        post.push(gpu.dispatch(&k(entry)?, &update, groups)?);
        let step_noise = match stochastic {
            Some(z) => {
                let fill = FillNormal::counted(gpu, seed, streams::SAMPLE_STEP, &z, &state)?;
                keep.push(z);
                Some(fill)
            }
            None => None,
        };
        keep.extend([nhat, table]);
        post.push(gpu.dispatch(&k("sample_tick")?, &[(2, state.bind())], [1, 1, 1])?);
        let last_snapshot = snapshot()?;
        let init = FillNormal::new(gpu, seed, streams::SAMPLE_INIT, &image)?;
        Ok(Sampler {
            batch,
            schedule,
            stages,
            image,
            state,
            traj,
            init,
            step_noise,
            pre,
            post,
            last_snapshot,
            _keep: keep,
        })
    }

    /// Records the whole loop for digits `first..first + batch` into one command buffer and
    /// submits it: the only host writes are the noise offsets and the step counter reset,
    /// before the loop; nothing is read back.
    pub fn submit(&self, gpu: &Gpu, first: u64) -> Result<()> {
        let offset = first * PIXELS as u64;
        if offset + (self.batch * PIXELS as usize) as u64 > u32::MAX as u64 {
            return Err(Error::config(format!(
                "digit index {first} is past the generator's range (2^32 values)"
            )));
        }
        self.init.set_step_offset(gpu, 0, offset as u32);
        if let Some(f) = &self.step_noise {
            f.set_step_offset(gpu, 0, offset as u32);
        }
        self.state.write(gpu, &[0u32]);
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sample-loop"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sample-loop"),
                timestamp_writes: None,
            });
            self.init.dispatch.record(&mut pass);
            for k in 0..self.schedule.steps {
                for d in &self.pre {
                    d.record(&mut pass);
                }
                if let Some(f) = &self.step_noise {
                    f.dispatch.record(&mut pass);
                }
                let stage = self.stage(k);
                stage.call.record(&mut pass);
                if let Some(g) = stage.guide.as_ref().filter(|g| k >= g.from) {
                    g.call.record(&mut pass);
                    g.combine.record(&mut pass);
                }
                for d in &self.post {
                    d.record(&mut pass);
                }
            }
            self.last_snapshot.record(&mut pass);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.check()
    }

    /// Runs the loop for digits `first..first + batch` and reads the finished digits
    /// [batch, 784] (the one readback of the chunk).
    pub fn run(&self, gpu: &Gpu, first: u64) -> Result<Vec<f32>> {
        self.submit(gpu, first)?;
        self.image.read(gpu)
    }

    /// Digits `0..count` [count, 784], in chunks of `batch` (each chunk one loop, one
    /// readback); the digits do not depend on the batch size.
    pub fn generate(&self, gpu: &Gpu, count: u64) -> Result<Vec<f32>> {
        let px = PIXELS as usize;
        let mut digits = Vec::with_capacity(count as usize * px);
        let mut first = 0u64;
        while first < count {
            let out = self.run(gpu, first)?;
            let take = ((count - first) as usize).min(self.batch);
            digits.extend_from_slice(&out[..take * px]);
            first += self.batch as u64;
        }
        Ok(digits)
    }

    /// Digit 0's states of the last run: [steps + 1, 784], from the initial noise to the end.
    pub fn trajectory(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.traj.read(gpu)
    }

    /// The stage that makes step k's noise estimate.
    fn stage(&self, k: u32) -> &Stage {
        self.stages
            .iter()
            .rev()
            .find(|s| k >= s.from)
            .expect("stage 0 starts at step 0")
    }

    /// The first step the guide is called at (None without a guide).
    pub fn guide_from_step(&self) -> Option<u32> {
        self.stages[0].guide.as_ref().map(|g| g.from)
    }

    /// The step from which each refiner is called, until a later refiner's first step
    /// (`schedule.steps` when its level is below every step's).
    pub fn refine_from_steps(&self) -> Vec<u32> {
        self.stages[1..].iter().map(|s| s.from).collect()
    }

    /// FLOPs of the whole loop per digit (the matmuls of every step's model calls).
    pub fn flops_per_digit(&self) -> f64 {
        (0..self.schedule.steps)
            .map(|k| {
                let s = self.stage(k);
                let guide = s.guide.as_ref().filter(|g| k >= g.from);
                let guide = guide.map(|g| &g.call.net.cfg);
                std::iter::once(&s.call.net.cfg)
                    .chain(guide)
                    .map(Self::flops_per_digit_step)
                    .sum::<f64>()
            })
            .sum()
    }

    /// FLOPs of one model call per digit (the matmuls), for digits/s and GFLOP/s reports.
    pub fn flops_per_digit_step(cfg: &ModelConfig) -> f64 {
        crate::model::network::forward_flops_per_sample(cfg)
    }
}

/// The sampler's digits as IDX bytes: pixel = clamp(round((x + 0.5) * 256), 0, 255).
pub fn to_bytes(images: &[f32]) -> Vec<u8> {
    images
        .iter()
        .map(|&x| ((x + 0.5) * 256.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

mod command;
pub use command::*;
