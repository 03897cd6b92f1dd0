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
}

impl Schedule {
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

    /// a'^s, the factor each step divides by.
    pub fn keep(&self) -> f32 {
        self.alpha_prime().powf(self.scale as f64) as f32
    }

    /// Per step k, the stochastic step's additions to the seed's update (see the module
    /// header): A += c0 N_hat + c1 Z with c0 = (1 - a'^m) (sqrt(1 - r^2) - 1),
    /// c1 = (1 - a'^m) r, m = n' - k - s. All zero when eta = 0 or m <= 0.
    pub fn noise_coefs(&self) -> Vec<[f32; 2]> {
        let ap = self.alpha_prime();
        let ratio = |j: f64| (1.0 - ap.powf(j)) / ap.powf(j);
        (0..self.steps)
            .map(|k| {
                let n = (self.steps - k) as f64;
                let m = n - self.scale as f64;
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
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    keep: f32,
    clip: u32,
    bg_from: u32,
    _pad: [u32; 3],
}

/// `--refine-from` names a level at least 1 (level 0 is the finished digit: no step is there).
fn check_refine_from(level: u32) -> Result<()> {
    if level == 0 {
        return Err(Error::config("--refine-from must be at least 1"));
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

/// One model's part of the loop: patches of the image into its tokens, its forward pass,
/// its output recomposed into N_hat; used from step `from` on (until a later stage's).
struct Stage {
    from: u32,
    net: Network,
    patches: Dispatch,
    recompose: Dispatch,
}

/// The sampling loop for a fixed batch, prepared once.
pub struct Sampler {
    pub batch: usize,
    pub schedule: Schedule,
    /// The model, then (with a refiner) the refiner from its first step.
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
        Self::with_refiner(gpu, model, None, batch, schedule, seed)
    }

    /// A sampler whose steps at levels up to `level` call `refiner` instead of `model`
    /// (`--refiner CKPT --refine-from LEVEL`: a second model trained on the low levels only,
    /// as eDiff-I's expert denoisers). Both see the same image, conditioning and schedule.
    pub fn with_refiner(
        gpu: &Gpu,
        model: SamplerModel<'_>,
        refiner: Option<(SamplerModel<'_>, u32)>,
        batch: usize,
        schedule: Schedule,
        seed: u64,
    ) -> Result<Sampler> {
        schedule.validate()?;
        if batch == 0 {
            return Err(Error::config(
                "the sampling batch must hold at least one digit",
            ));
        }
        if let Some((_, level)) = refiner {
            check_refine_from(level)?;
        }
        let px = PIXELS as usize;
        let image = GpuTensor::zeros(gpu, "sample-image", &[batch, px])?;
        let nhat = GpuTensor::zeros(gpu, "sample-nhat", &[batch, px])?;
        let cond = GpuTensor::zeros(gpu, "sample-cond", &[batch])?;
        let state = GpuTensor::zeros(gpu, "sample-state", &[1])?;
        let table = GpuTensor::from_slice(
            gpu,
            "sample-table",
            &[schedule.steps as usize],
            &schedule.table(),
        )?;
        let traj = GpuTensor::zeros(gpu, "trajectory", &[schedule.steps as usize + 1, px])?;
        let params_buf = gpu.uniform(
            "sample-params",
            &Params {
                batch: batch as u32,
                steps: schedule.steps,
                keep: schedule.keep(),
                clip: schedule.clip as u32,
                bg_from: schedule.background_from(),
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
        let mut stages = Vec::new();
        for (m, from) in std::iter::once((model, 0))
            .chain(refiner.map(|(r, level)| (r, schedule.first_step_at_or_below(level))))
        {
            let (g, t) = (&m.cfg.geometry, m.cfg.geometry.tokens() as usize);
            let net = Network::new(gpu, m.cfg, m.layout, batch, m.params, None)?;
            stages.push(Stage {
                from,
                patches: patches::patches_forward(gpu, g, batch, t, &image, &cond, &net.tokens)?,
                recompose: patches::recompose(gpu, g, batch, t, &net.output, &nhat)?,
                net,
            });
        }
        let mut post = Vec::new();
        let mut keep = vec![cond];
        let groups = gpu.groups_1d((batch * px) as u64, WG_1D)?;
        // With eta > 0: the fresh noise z [B, 784] and the per-step coefficients.
        let stochastic = if schedule.eta > 0.0 {
            let coefs: Vec<f32> = schedule.noise_coefs().concat();
            Some((
                GpuTensor::zeros(gpu, "sample-z", &[batch, px])?,
                GpuTensor::from_slice(gpu, "sample-coef", &[coefs.len()], &coefs)?,
            ))
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
            Some((z, coef)) => {
                update.extend([(8, z.bind()), (9, coef.bind())]);
                "sample_update_stochastic"
            }
            None => "sample_update",
        };
        post.push(gpu.dispatch(&k(entry)?, &update, groups)?);
        let step_noise = match stochastic {
            Some((z, coef)) => {
                let fill = FillNormal::counted(gpu, seed, streams::SAMPLE_STEP, &z, &state)?;
                keep.extend([z, coef]);
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
                stage.patches.record(&mut pass);
                stage.net.record_forward(&mut pass);
                stage.recompose.record(&mut pass);
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

    /// The first step that calls the refiner (`schedule.steps` when none does or there is
    /// none).
    pub fn refine_from_step(&self) -> u32 {
        self.stages.get(1).map_or(self.schedule.steps, |s| s.from)
    }

    /// FLOPs of the whole loop per digit (the matmuls of every step's model call).
    pub fn flops_per_digit(&self) -> f64 {
        (0..self.schedule.steps)
            .map(|k| Self::flops_per_digit_step(&self.stage(k).net.cfg))
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

/// Which weights of a checkpoint to sample with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Weights {
    /// The exponential moving average of the weights (the default, when present).
    Ema,
    /// The raw weights.
    Raw,
}

/// The sampling loop's flags, shared by `sample` and `eval --checkpoint`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Denoising steps n' (a' = a^(n_max / n')).
    #[arg(long, default_value_t = 50)]
    pub steps: u32,
    /// Step scale s: each step divides by a'^s (1 plain, 1.5 trusts the model more).
    #[arg(long, default_value_t = 1.5, allow_negative_numbers = true)]
    pub step_scale: f32,
    /// Share of fresh noise in each step, in [0, 1]: 0 is the seed's deterministic loop,
    /// 1 DDPM's ancestral step (our addition; it lets later steps correct earlier errors).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub eta: f32,
    /// Clamp each step's digit estimate X_hat = (A - (1 - a'^n) N_hat) / a'^n to the pixel
    /// range and step with the noise it implies (DDPM's x0 clipping; our addition).
    #[arg(long)]
    pub clip: bool,
    /// From level N down (our addition; 0: off), blend each pixel's predicted noise with the
    /// exact noise of a background pixel (-0.5), weighted by the posterior that it is
    /// background under the mixture prior (81 % of MNIST's pixels are exactly background):
    /// a finishing step for the last step or two (e.g. 10 with --steps 50); from higher levels
    /// it decides pixels by their own noise and erases strokes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub background: u32,
    /// A second checkpoint for the lowest levels (our addition, as eDiff-I's expert
    /// denoisers): a model trained with a small `--level-max`, called instead of the model at
    /// the steps whose level is at most --refine-from. Same alpha and n_max; any shape.
    #[arg(long, value_name = "PATH", requires = "refine_from")]
    pub refiner: Option<std::path::PathBuf>,
    /// The highest level at which --refiner is called (e.g. its training --level-max).
    #[arg(long, value_name = "LEVEL", requires = "refiner")]
    pub refine_from: Option<u32>,
}

impl SamplingArgs {
    /// The schedule these flags ask for, for a model trained with `run`; checked.
    pub fn schedule(&self, run: &crate::train::RunConfig) -> Result<Schedule> {
        let s = Schedule {
            alpha: run.alpha,
            n_max: run.n_max,
            steps: self.steps,
            scale: self.step_scale,
            eta: self.eta,
            clip: self.clip,
            background: self.background,
        };
        s.validate()?;
        if let Some(level) = self.refine_from {
            check_refine_from(level)?;
        }
        Ok(s)
    }

    /// Checks `--refiner` (if given) against the main model's run without loading its
    /// weights: it must read, and have the same alpha and n_max (the two share one schedule).
    pub fn check_refiner(&self, run: &crate::train::RunConfig) -> Result<()> {
        let Some(path) = &self.refiner else {
            return Ok(());
        };
        let r = crate::train::read_run_config(path)?;
        if r.alpha != run.alpha || r.n_max != run.n_max {
            return Err(Error::config(format!(
                "{}: the refiner was trained with alpha {} and n_max {}, the model with {} and {}",
                path.display(),
                r.alpha,
                r.n_max,
                run.alpha,
                run.n_max
            )));
        }
        Ok(())
    }

    /// Loads `--refiner` (if given) with `weights`, checked as [`Self::check_refiner`].
    pub fn load_refiner(
        &self,
        gpu: &Gpu,
        run: &crate::train::RunConfig,
        weights: Weights,
    ) -> Result<Option<(LoadedModel, u32)>> {
        let (Some(path), Some(level)) = (&self.refiner, self.refine_from) else {
            return Ok(None);
        };
        self.check_refiner(run)?;
        Ok(Some((load_model(gpu, path, weights)?, level)))
    }

    /// The flags in words, for reports: "n'=50 s=1 eta=1 clip background 10 refiner PATH
    /// from 60".
    pub fn describe(&self) -> String {
        let mut d = format!("n'={} s={} eta={}", self.steps, self.step_scale, self.eta);
        if self.clip {
            d += " clip";
        }
        if self.background > 0 {
            d += &format!(" background {}", self.background);
        }
        if let (Some(p), Some(l)) = (&self.refiner, self.refine_from) {
            d += &format!(" refiner {} from {l}", p.display());
        }
        d
    }
}

/// A sampler for `model` (and the refiner, if any) of `batch` digits.
pub fn sampler_for(
    gpu: &Gpu,
    model: &LoadedModel,
    refiner: Option<&(LoadedModel, u32)>,
    batch: usize,
    schedule: Schedule,
    seed: u64,
) -> Result<Sampler> {
    Sampler::with_refiner(
        gpu,
        model.view(),
        refiner.map(|(r, level)| (r.view(), *level)),
        batch,
        schedule,
        seed,
    )
}

/// Flags of `sample`.
#[derive(clap::Args, Clone, Debug)]
pub struct SampleArgs {
    /// Checkpoint to sample from (best.safetensors or checkpoint.safetensors of a run).
    #[arg(long, default_value = "runs/train/best.safetensors")]
    pub checkpoint: std::path::PathBuf,
    /// Digits to make.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which weights to use.
    #[arg(long, value_enum, default_value_t = Weights::Ema)]
    pub weights: Weights,
    /// Output folder: samples-idx3-ubyte, grid.png (and trajectory/figures).
    #[arg(long, default_value = "runs/samples")]
    pub out: std::path::PathBuf,
    /// Side of the PNG grid of the first digits.
    #[arg(long, default_value_t = 16)]
    pub grid: usize,
    /// Digits per GPU batch (default: chosen from the adapter's limits).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also write digit 0's denoising trajectory as a PNG strip and an animated GIF.
    #[arg(long)]
    pub trajectory: bool,
    /// Also write the seed's four 4x4 grids: n' = 500 and 50, each with s = 1 and 1.5.
    #[arg(long)]
    pub figures: bool,
    /// Print one JSON object with the figures of the run.
    #[arg(long)]
    pub json: bool,
}

/// A model loaded from a checkpoint, with its weights on the GPU.
pub struct LoadedModel {
    pub config: crate::train::RunConfig,
    pub layout: ParamLayout,
    pub params: GpuTensor,
    pub weights: Weights,
}

impl LoadedModel {
    /// The model as the sampler calls it.
    pub fn view(&self) -> SamplerModel<'_> {
        SamplerModel {
            cfg: &self.config.model,
            layout: &self.layout,
            params: &self.params,
        }
    }
}

/// Loads `path`'s configuration and weights (`Ema` falls back to raw weights only if the file
/// has no EMA, and says so).
pub fn load_model(gpu: &Gpu, path: &std::path::Path, weights: Weights) -> Result<LoadedModel> {
    let config = crate::train::read_run_config(path)?;
    crate::model::network::check_fits(gpu, &config.model, 1)?;
    let layout = ParamLayout::new(&config.model);
    let loaded = crate::checkpoint::load(path, &layout)?;
    let (data, used) = match (weights, loaded.buffers.ema) {
        (Weights::Ema, Some(e)) => (e, Weights::Ema),
        (Weights::Ema, None) => {
            eprintln!(
                "note: {} has no EMA weights; using the raw weights",
                path.display()
            );
            (loaded.buffers.params, Weights::Raw)
        }
        (Weights::Raw, _) => (loaded.buffers.params, Weights::Raw),
    };
    let params = GpuTensor::from_slice(gpu, "params", &[layout.total], &data)?;
    Ok(LoadedModel {
        config,
        layout,
        params,
        weights: used,
    })
}

/// Digits per batch: as many as fit the adapter's storage-binding limit for the largest
/// activation, a memory budget of 2 GiB of activations, and `count`.
pub fn auto_batch(gpu: &Gpu, cfg: &ModelConfig, count: u64) -> usize {
    let (t, d, hk, h) = (
        cfg.geometry.tokens() as u64,
        cfg.geometry.dim() as u64,
        cfg.hk() as u64,
        cfg.heads as u64,
    );
    let (l, f) = (cfg.layers as u64, cfg.mlp as u64);
    let largest = 4 * t * (3 * hk).max(d).max(h * t).max(PIXELS as u64).max(f);
    let max_binding = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    // Tokens, x_start, each layer's y (and with --mlp its pre, h and out), the skip's output.
    let per_digit =
        4 * (t * d * (3 + 2 * l) + l * (t * (4 * hk + 2 * f) + h * t * t) + 3 * PIXELS as u64);
    let by_binding = max_binding / largest;
    let by_memory = (2u64 << 30) / per_digit;
    by_binding.min(by_memory).min(count).clamp(1, 20_000) as usize
}

/// [`auto_batch`] for the model and the refiner together (both networks' activations are
/// held at once, so each gets half of its limit; `count` caps it as before).
pub fn auto_batch_for(
    gpu: &Gpu,
    model: &ModelConfig,
    refiner: Option<&ModelConfig>,
    count: u64,
) -> usize {
    match refiner {
        // Each network gets half of what it could hold alone.
        Some(r) => {
            let alone = |cfg: &ModelConfig| auto_batch(gpu, cfg, u64::MAX) as u64;
            let half = (alone(model).min(alone(r)) / 2).max(1);
            half.min(count).max(1) as usize
        }
        None => auto_batch(gpu, model, count),
    }
}

/// `wgpu-diffusion sample`.
pub fn run_command(gpu: &Gpu, a: &SampleArgs) -> Result<serde_json::Value> {
    if a.count == 0 {
        return Err(Error::config("--count must be at least 1"));
    }
    if a.grid == 0 || a.grid > 100 {
        return Err(Error::config(format!(
            "--grid must be in 1..=100, got {}",
            a.grid
        )));
    }
    let model = load_model(gpu, &a.checkpoint, a.weights)?;
    let schedule = a.sampling.schedule(&model.config)?;
    let refiner = a.sampling.load_refiner(gpu, &model.config, a.weights)?;
    let batch = match a.batch {
        Some(0) => return Err(Error::config("--batch must be at least 1")),
        Some(b) => b.min(a.count as usize),
        None => auto_batch_for(
            gpu,
            &model.config.model,
            refiner.as_ref().map(|(r, _)| &r.config.model),
            a.count,
        ),
    };
    let sampler = sampler_for(gpu, &model, refiner.as_ref(), batch, schedule, a.seed)?;
    let px = PIXELS as usize;
    let start = std::time::Instant::now();
    let digits = sampler.generate(gpu, a.count)?;
    let secs = start.elapsed().as_secs_f64();
    let rate = a.count as f64 / secs.max(1e-9);
    let gflops = sampler.flops_per_digit() * rate / 1e9;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Error::io(format!("cannot create {}: {e}", a.out.display())))?;
    let idx_path = a.out.join("samples-idx3-ubyte");
    crate::data::idx::write_idx_images(&idx_path, a.count as usize, 28, 28, &to_bytes(&digits))?;
    let n_grid = (a.grid * a.grid).min(a.count as usize);
    let (w, h, grey) = crate::figures::grid(
        &digits[..n_grid * px],
        a.grid,
        2,
        2,
        crate::figures::Scale::Data,
    );
    crate::figures::write_png(&a.out.join("grid.png"), w, h, &grey)?;
    let mut written = vec![
        idx_path.display().to_string(),
        a.out.join("grid.png").display().to_string(),
    ];
    if a.trajectory {
        let traj = sampler.trajectory(gpu)?;
        written.extend(crate::figures::write_trajectory(
            &a.out,
            &traj,
            a.sampling.steps as usize,
        )?);
    }
    if a.figures {
        // The seed's four grids, each labelled "n'=STEPS s=SCALE", side by side in one PNG
        // (and each on its own).
        let mut panels = Vec::new();
        for (steps, scale) in [(500u32, 1.0f32), (500, 1.5), (50, 1.0), (50, 1.5)] {
            let s = Schedule {
                steps,
                scale,
                ..schedule
            };
            let sm = sampler_for(gpu, &model, refiner.as_ref(), 16, s, a.seed)?;
            let d = sm.run(gpu, 0)?;
            let grid = crate::figures::grid(&d, 4, 3, 2, crate::figures::Scale::Data);
            let p = a
                .out
                .join(format!("figure-steps{steps}-scale{scale:.1}.png"));
            crate::figures::write_png(&p, grid.0, grid.1, &grid.2)?;
            written.push(p.display().to_string());
            let title = crate::figures::label(&format!("n'={steps} s={scale:.1}"), grid.0, 3);
            panels.push(crate::figures::stack(&[title, grid]));
        }
        let (w, h, grey) = crate::figures::side_by_side(&panels, 8);
        let p = a.out.join("figures.png");
        crate::figures::write_png(&p, w, h, &grey)?;
        written.push(p.display().to_string());
    }
    Ok(serde_json::json!({
        "count": a.count,
        "steps": a.sampling.steps,
        "step_scale": a.sampling.step_scale,
        "eta": a.sampling.eta,
        "clip": a.sampling.clip,
        "background": a.sampling.background,
        "refiner": a.sampling.refiner.as_ref().map(|p| p.display().to_string()),
        "refine_from": a.sampling.refine_from,
        "refine_from_step": refiner.as_ref().map(|_| sampler.refine_from_step()),
        "seed": a.seed,
        "weights": format!("{:?}", model.weights).to_lowercase(),
        "batch": batch,
        "seconds": secs,
        "digits_per_s": rate,
        "gflops": gflops,
        "adapter": gpu.describe(),
        "files": written,
    }))
}
