//! Inverse diffusion (docs/model.md §5) on the GPU: thousands of digits in parallel, every step recorded
//! into one command buffer with no readback; the host reads the finished digits once per chunk.
//!
//! Start: A = N(0,1) (GPU RNG, index = digit * 784 + pixel, so chunking does not change the
//! digits). For n = n'..1: N_hat = recompose(model(patches(A), a'^n)); A = (A - N_hat (1 - a'^s)) / a'^s,
//! with a' = a^(n_max / n') and s the step scale.
//!
//! `--eta E` (an extension; 0 = the seed's deterministic loop): the seed's update is exactly
//! A = a'^m X_hat + (1 - a'^m) N_hat with m = n - s and X_hat = (A - (1 - a'^n) N_hat) / a'^n,
//! the digit the model sees. The stochastic step replaces part of N_hat by fresh noise Z:
//! A = a'^m X_hat + (1 - a'^m) (sqrt(1 - r^2) N_hat + r Z), r = E sqrt(1 - (t_m / t_n)^2),
//! t_j = (1 - a'^j) / a'^j (the noise-to-signal ratio): E = 1 is DDPM's ancestral step
//! (in the variance-exploding form A / a'^n = X + t_n N), E = 0 the seed's. No noise is added
//! when m <= 0 (the last step).

use crate::config::{ModelConfig, PIXELS, PIXEL_HI};
use crate::error::{Error, Result};
use crate::gpu::kernels::WG_1D;
use crate::gpu::{Dispatch, Gpu, GpuTensor, Kernel};
use crate::math::rng::streams;
pub use crate::math::schedule::Schedule;
use crate::model::network::Network;
use crate::model::ParamLayout;
use crate::ops::noise::FillNormal;
use crate::ops::patches;
use crate::ops::skip::PRIOR_CONSTANTS;
use crate::settings::sample as settings;
use std::sync::Arc;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    clip: u32,
    bg_from: u32,
    /// `sample_guide`'s weight: the guidance W in the loop's uniform, cfg in cfg's.
    weight: f32,
    _pad: [u32; 3],
}

/// A model the sampler calls: its configuration and its weights on the GPU.
#[derive(Clone, Copy)]
pub struct SamplerModel<'a> {
    pub config: &'a ModelConfig,
    pub layout: &'a ParamLayout,
    pub params: &'a GpuTensor,
}

/// `--guide CKPT --guidance W [--guide-from LEVEL]` (an extension; Karras et al. 2024,
/// "Guiding a diffusion model with a bad version of itself"): a weaker model of the same task
/// (smaller or trained less) is called beside the main model at the main model's steps (those
/// at levels up to `from_level`, all when None), and the step uses
/// N_guide + W (N_model - N_guide): W = 1 is the model alone, W > 1 moves away from the
/// weaker model's errors.
#[derive(Clone, Copy)]
pub struct Guide<'a> {
    pub model: SamplerModel<'a>,
    pub guidance: f32,
    pub from_level: Option<u32>,
}

/// Class-conditional sampling (`sample --digit`, `--digits`, `--per-digit`, `--cfg`): digit
/// i of a run is asked to be `digits[i % digits.len()]` (labels 0..9), and each call of a
/// conditional model (the model's, each refiner's) at the steps at levels >= `min_level` uses
/// classifier-free guidance N_uncond + cfg (N_cond - N_uncond), the unconditional call
/// labelling every digit "no label" (cfg 1: the conditional call alone). The guide's call is
/// conditional and not guided; autoguidance then combines it with the model's guided
/// estimate, N = N_guide + W (N_uncond + cfg (N_cond - N_uncond) - N_guide).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Classes {
    pub digits: Vec<u32>,
    /// The classifier-free guidance weight (`--cfg`; "weight" in the JSON report).
    #[serde(rename = "weight")]
    pub cfg: f32,
    /// Classifier-free guidance only at the steps whose level is at least this (0: every
    /// step): a digit's class is settled at the high levels, and guiding the low ones costs
    /// FID (docs/experiments/16-class-conditional.md).
    pub min_level: u32,
}

impl Classes {
    /// The steps 0..k that are classifier-free guided: those at levels >= `min_level`.
    pub fn guided_steps(&self, s: &Schedule) -> u32 {
        s.steps_at_or_above(self.min_level)
    }

    /// The labels of digits `first..first + batch`.
    pub fn labels(&self, first: u64, batch: usize) -> Vec<u32> {
        let n = self.digits.len() as u64;
        (0..batch as u64)
            .map(|i| self.digits[((first + i) % n) as usize])
            .collect()
    }
}

/// Classifier-free guidance's part of a conditional model's call: the forward pass again with
/// "no label", recomposed into N_uncond, and the combination into the call's output.
struct Unconditional {
    recompose: Dispatch,
    combine: Dispatch,
}

/// One model call of the loop: the patches of the image into the model's tokens, its
/// forward pass, its output recomposed (into N_hat, or the guide's N_guide), and with
/// classifier-free guidance the unconditional pass and the combination.
struct Call {
    net: Network,
    patches: Dispatch,
    recompose: Dispatch,
    unconditional: Option<Unconditional>,
}

impl Call {
    /// Records the call; the classifier-free guidance part only when `cfg` (the step is in
    /// the guidance interval).
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, cfg: bool) {
        self.patches.record(pass);
        self.net.record_forward(pass);
        self.recompose.record(pass);
        if let Some(u) = self.unconditional.as_ref().filter(|_| cfg) {
            self.net.record_forward_unconditional(pass);
            u.recompose.record(pass);
            u.combine.record(pass);
        }
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
    bufs: LoopBuffers,
    init: FillNormal,
    /// With eta > 0: the fresh noise of each step (RNG step = the GPU's step counter).
    step_noise: Option<FillNormal>,
    /// Before the model call: cond, snapshot.
    pre: Vec<Dispatch>,
    /// After the model call and its recompose: update, tick.
    post: Vec<Dispatch>,
    /// The final digit 0 into the trajectory.
    last_snapshot: Dispatch,
    /// Class-conditional sampling: the digits asked for, and every conditional call's labels
    /// buffer (written once per chunk).
    classes: Option<(Classes, Vec<GpuTensor>)>,
    /// The steps whose conditional calls are classifier-free guided.
    cfg_steps: std::ops::Range<u32>,
    _keep: Vec<GpuTensor>,
}

/// The sampler's settings, checked once before anything is made.
fn check(
    schedule: &Schedule,
    guide: Option<&Guide<'_>>,
    refiners: &[(SamplerModel<'_>, u32)],
    batch: usize,
) -> Result<()> {
    schedule.validate()?;
    if let Some(g) = guide {
        settings::check_guidance(g.guidance as f64)?;
        settings::check_guide_from(g.from_level)?;
    }
    if batch == 0 {
        return Err(Error::config(
            "the sampling batch must hold at least one digit",
        ));
    }
    let levels: Vec<u32> = refiners.iter().map(|(_, level)| *level).collect();
    settings::check_refine_from(&levels)
}

/// The loop's own buffers, made once per sampler: the digits being denoised, N_hat, the
/// conditioning, the GPU's step counter, the per-step table, the trajectory of digit 0, and
/// the loop's uniform; with classifier-free guidance N_uncond and the uniform of its weight.
struct LoopBuffers {
    image: GpuTensor,
    nhat: GpuTensor,
    cfg: Option<(GpuTensor, wgpu::Buffer)>,
    cond: GpuTensor,
    state: GpuTensor,
    table: GpuTensor,
    traj: GpuTensor,
    params: wgpu::Buffer,
}

impl LoopBuffers {
    fn new(
        gpu: &Gpu,
        batch: usize,
        schedule: &Schedule,
        guidance: f32,
        cfg: Option<f32>,
    ) -> Result<LoopBuffers> {
        let px = PIXELS as usize;
        let steps = schedule.steps as usize;
        let table = schedule.step_table().concat();
        let params = Params {
            batch: batch as u32,
            steps: schedule.steps,
            clip: schedule.clip as u32,
            bg_from: schedule.background_from(),
            weight: guidance,
            _pad: [0; 3],
        };
        let cfg = match cfg.filter(|w| *w != 1.0) {
            Some(w) => Some((
                GpuTensor::zeros(gpu, "sample-nhat-uncond", &[batch, px])?,
                gpu.uniform(
                    "sample-cfg-params",
                    &Params {
                        weight: w,
                        ..params
                    },
                ),
            )),
            None => None,
        };
        Ok(LoopBuffers {
            image: GpuTensor::zeros(gpu, "sample-image", &[batch, px])?,
            nhat: GpuTensor::zeros(gpu, "sample-nhat", &[batch, px])?,
            cfg,
            cond: GpuTensor::zeros(gpu, "sample-cond", &[batch])?,
            state: GpuTensor::zeros(gpu, "sample-state", &[1])?,
            table: GpuTensor::from_slice(gpu, "sample-table", &[steps, 4], &table)?,
            traj: GpuTensor::zeros(gpu, "trajectory", &[steps + 1, px])?,
            params: gpu.uniform("sample-params", &params),
        })
    }
}

/// Makes the loop's dispatches over its [`LoopBuffers`].
struct Builder<'a> {
    gpu: &'a Gpu,
    bufs: &'a LoopBuffers,
    batch: usize,
    schedule: &'a Schedule,
}

impl Builder<'_> {
    fn kernel(&self, entry: &str) -> Result<Arc<Kernel>> {
        let mut c = vec![
            ("WG", WG_1D as f64),
            ("PIXELS", PIXELS as f64),
            ("HI", PIXEL_HI as f64),
        ];
        c.extend(PRIOR_CONSTANTS);
        self.gpu.kernel("sample", entry, &c)
    }

    /// One workgroup per WG_1D pixels of the batch.
    fn pixel_groups(&self) -> Result<[u32; 3]> {
        self.gpu
            .groups_1d((self.batch * PIXELS as usize) as u64, WG_1D)
    }

    fn uniform(&self) -> wgpu::BindingResource<'_> {
        self.bufs.params.as_entire_binding()
    }

    /// Digit 0 into the trajectory's row of the current step.
    fn snapshot(&self) -> Result<Dispatch> {
        let b = self.bufs;
        self.gpu.dispatch(
            &self.kernel("sample_snapshot")?,
            &[
                (0, self.uniform()),
                (1, b.state.bind()),
                (5, b.image.bind()),
                (7, b.traj.bind()),
            ],
            self.gpu.groups_1d(PIXELS as u64, WG_1D)?,
        )
    }

    /// The step's conditioning a'^n for every digit.
    fn cond(&self) -> Result<Dispatch> {
        let b = self.bufs;
        self.gpu.dispatch(
            &self.kernel("sample_cond")?,
            &[
                (0, self.uniform()),
                (1, b.state.bind()),
                (3, b.table.bind()),
                (4, b.cond.bind()),
            ],
            self.gpu.groups_1d(self.batch as u64, WG_1D)?,
        )
    }

    /// A call of model `m` whose output is recomposed into `out`; with `guided` and a
    /// conditional model, classifier-free guided (when the sampler has a weight).
    fn call(&self, m: SamplerModel<'_>, out: &GpuTensor, guided: bool) -> Result<Call> {
        let (gpu, b, batch) = (self.gpu, self.bufs, self.batch);
        let (g, t) = (&m.config.geometry, m.config.geometry.tokens() as usize);
        let net = Network::new(gpu, m.config, m.layout, batch, m.params, None)?;
        let unconditional = match &b.cfg {
            Some((nhat_u, params)) if guided && m.config.classes => Some(Unconditional {
                recompose: patches::recompose(gpu, g, batch, t, &net.output, nhat_u)?,
                combine: self.combine(params, out, nhat_u)?,
            }),
            _ => None,
        };
        Ok(Call {
            patches: patches::patches_forward(gpu, g, batch, t, &b.image, &b.cond, &net.tokens)?,
            recompose: patches::recompose(gpu, g, batch, t, &net.output, out)?,
            unconditional,
            net,
        })
    }

    /// `sample_guide` with the weight in `params`: nhat = other + W (nhat - other).
    fn combine(
        &self,
        params: &wgpu::Buffer,
        nhat: &GpuTensor,
        other: &GpuTensor,
    ) -> Result<Dispatch> {
        self.gpu.dispatch(
            &self.kernel("sample_guide")?,
            &[
                (0, params.as_entire_binding()),
                (10, nhat.bind()),
                (11, other.bind()),
            ],
            self.pixel_groups()?,
        )
    }

    /// The guide's call into its own N_guide (kept alive in `keep`), then the combination.
    fn guide_call(&self, g: Guide<'_>, keep: &mut Vec<GpuTensor>) -> Result<GuideCall> {
        let shape = [self.batch, PIXELS as usize];
        let nhat_guide = GpuTensor::zeros(self.gpu, "sample-nhat-guide", &shape)?;
        let from_level = g.from_level;
        let call = GuideCall {
            from: from_level.map_or(0, |l| self.schedule.first_step_at_or_below(l)),
            call: self.call(g.model, &nhat_guide, false)?,
            combine: self.combine(&self.bufs.params, &self.bufs.nhat, &nhat_guide)?,
        };
        keep.push(nhat_guide);
        Ok(call)
    }

    /// The model from step 0 (guided when `guide` is given), then each refiner from the
    /// first step at or below its level.
    fn stages(
        &self,
        model: SamplerModel<'_>,
        guide: Option<Guide<'_>>,
        refiners: &[(SamplerModel<'_>, u32)],
        keep: &mut Vec<GpuTensor>,
    ) -> Result<Vec<Stage>> {
        let mut stages = vec![Stage {
            from: 0,
            call: self.call(model, &self.bufs.nhat, true)?,
            guide: guide.map(|g| self.guide_call(g, keep)).transpose()?,
        }];
        for (m, level) in refiners {
            stages.push(Stage {
                from: self.schedule.first_step_at_or_below(*level),
                call: self.call(*m, &self.bufs.nhat, true)?,
                guide: None,
            });
        }
        Ok(stages)
    }

    /// The step's update of the image from N_hat (with fresh noise `z` when eta > 0).
    fn update(&self, z: Option<&GpuTensor>) -> Result<Dispatch> {
        let b = self.bufs;
        let mut bindings = vec![
            (0, self.uniform()),
            (1, b.state.bind()),
            (3, b.table.bind()),
            (5, b.image.bind()),
            (6, b.nhat.bind()),
        ];
        let entry = match z {
            Some(z) => {
                bindings.push((8, z.bind()));
                "sample_update_stochastic"
            }
            None => "sample_update",
        };
        let kernel = self.kernel(entry)?;
        self.gpu.dispatch(&kernel, &bindings, self.pixel_groups()?)
    }

    /// The GPU's step counter, one up.
    fn tick(&self) -> Result<Dispatch> {
        let state = self.bufs.state.bind();
        self.gpu
            .dispatch(&self.kernel("sample_tick")?, &[(2, state)], [1, 1, 1])
    }
}

/// The models one sampler calls and how: the main model, an optional guide, the refiners
/// that take over at lower levels, and the digits asked for with classifier-free guidance.
/// [`Stack::of`] is the main model alone; the fields add the rest.
#[derive(Clone, Copy)]
pub struct Stack<'a> {
    pub model: SamplerModel<'a>,
    /// Autoguidance ([`Guide`]) of the main model's own steps.
    pub guide: Option<Guide<'a>>,
    /// `(refiner, level)`, levels decreasing: the steps at levels up to `level` call
    /// `refiner` instead of the model (`--refiner CKPT@LEVEL`, repeatable: models trained on
    /// the lower levels only, as eDiff-I's expert denoisers). A later refiner takes over from
    /// an earlier one; all see the same image, conditioning and schedule.
    pub refiners: &'a [(SamplerModel<'a>, u32)],
    /// The digits asked for and classifier-free guidance ([`Classes`]); the main model must
    /// then be class-conditional.
    pub classes: Option<&'a Classes>,
}

impl<'a> Stack<'a> {
    /// The main model alone.
    pub fn of(model: SamplerModel<'a>) -> Stack<'a> {
        Stack {
            model,
            guide: None,
            refiners: &[],
            classes: None,
        }
    }
}

impl Sampler {
    /// A sampler of `batch` digits at a time that calls `stack`'s models with `schedule`,
    /// its noise drawn from `seed`.
    pub fn new(
        gpu: &Gpu,
        stack: Stack<'_>,
        batch: usize,
        schedule: Schedule,
        seed: u64,
    ) -> Result<Sampler> {
        let Stack {
            model,
            guide,
            refiners,
            classes,
        } = stack;
        let classes = classes.cloned();
        check(&schedule, guide.as_ref(), refiners, batch)?;
        if let Some(c) = &classes {
            check_classes(model.config, c)?;
        }
        let guidance = guide.map_or(1.0, |g| g.guidance);
        let cfg = classes.as_ref().map(|c| c.cfg);
        let bufs = LoopBuffers::new(gpu, batch, &schedule, guidance, cfg)?;
        let build = Builder {
            gpu,
            bufs: &bufs,
            batch,
            schedule: &schedule,
        };
        let mut keep = vec![];
        let stages = build.stages(model, guide, refiners, &mut keep)?;
        let pre = vec![build.cond()?, build.snapshot()?];
        // With eta > 0: the fresh noise z [B, 784] (its coefficients are in the table).
        let z = match schedule.eta > 0.0 {
            true => Some(GpuTensor::zeros(
                gpu,
                "sample-z",
                &[batch, PIXELS as usize],
            )?),
            false => None,
        };
        let post = vec![build.update(z.as_ref())?, build.tick()?];
        let last_snapshot = build.snapshot()?;
        let step_noise = match z {
            Some(z) => {
                let fill = FillNormal::counted(gpu, seed, streams::SAMPLE_STEP, &z, &bufs.state)?;
                keep.push(z);
                Some(fill)
            }
            None => None,
        };
        let init = FillNormal::new(gpu, seed, streams::SAMPLE_INIT, &bufs.image)?;
        let cfg_steps = 0..classes.as_ref().map_or(0, |c| c.guided_steps(&schedule));
        let classes = classes.map(|c| (c, labels_of(&stages)));
        Ok(Sampler {
            cfg_steps,
            classes,
            batch,
            schedule,
            stages,
            bufs,
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
        self.start(gpu, first)?;
        self.submit_steps(gpu, 0..self.schedule.steps)
    }

    /// Writes what the loop for digits `first..first + batch` reads from the host: the noise
    /// offsets, the step counter reset and the labels.
    fn start(&self, gpu: &Gpu, first: u64) -> Result<()> {
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
        self.bufs.state.write(gpu, &[0u32]);
        if let Some((c, buffers)) = &self.classes {
            let labels = c.labels(first, self.batch);
            for b in buffers {
                b.write(gpu, &labels);
            }
        }
        Ok(())
    }

    /// Records steps `steps` of the loop (a part of `0..schedule.steps`, after the parts
    /// before it) into one command buffer and submits it: the initial noise before step 0,
    /// digit 0's last state after the last step.
    fn submit_steps(&self, gpu: &Gpu, steps: std::ops::Range<u32>) -> Result<()> {
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
            if steps.start == 0 {
                self.init.dispatch.record(&mut pass);
            }
            for k in steps.clone() {
                self.record_step(&mut pass, k);
            }
            if steps.end == self.schedule.steps {
                self.last_snapshot.record(&mut pass);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.check()
    }

    /// Step k's dispatches: its model call (or the refiner's), the guide's, the update.
    fn record_step(&self, pass: &mut wgpu::ComputePass<'_>, k: u32) {
        for d in &self.pre {
            d.record(pass);
        }
        if let Some(f) = &self.step_noise {
            f.dispatch.record(pass);
        }
        let stage = self.stage(k);
        stage.call.record(pass, self.cfg_steps.contains(&k));
        if let Some(g) = stage.guide.as_ref().filter(|g| k >= g.from) {
            g.call.record(pass, false);
            g.combine.record(pass);
        }
        for d in &self.post {
            d.record(pass);
        }
    }

    /// [`Sampler::run_async`] submitted `every` steps at a time, for a page that shows the
    /// digits as they form: after each part, `each` gets the steps done and the batch's
    /// current state A [batch, 784] (one readback per part, awaited). The digits are the
    /// same as [`Sampler::run`]'s.
    pub async fn run_parts_async(
        &self,
        gpu: &Gpu,
        first: u64,
        every: u32,
        mut each: impl FnMut(u32, &[f32]),
    ) -> Result<Vec<f32>> {
        if every == 0 {
            return Err(Error::config("steps per part must be at least 1"));
        }
        self.start(gpu, first)?;
        let steps = self.schedule.steps;
        let mut state = Vec::new();
        for from in (0..steps).step_by(every as usize) {
            let to = (from + every).min(steps);
            self.submit_steps(gpu, from..to)?;
            state = self.bufs.image.read_async(gpu).await?;
            each(to, &state);
        }
        Ok(state)
    }

    /// Runs the loop for digits `first..first + batch` and reads the finished digits
    /// [batch, 784] (the one readback of the chunk).
    pub fn run(&self, gpu: &Gpu, first: u64) -> Result<Vec<f32>> {
        self.submit(gpu, first)?;
        self.bufs.image.read(gpu)
    }

    /// [`Sampler::run`] as a future, for a browser page, where nothing may block.
    pub async fn run_async(&self, gpu: &Gpu, first: u64) -> Result<Vec<f32>> {
        self.submit(gpu, first)?;
        self.bufs.image.read_async(gpu).await
    }

    /// Digits `0..count` [count, 784], in chunks of `batch` (each chunk one loop, one
    /// readback); the digits do not depend on the batch size.
    pub fn generate(&self, gpu: &Gpu, count: u64) -> Result<Vec<f32>> {
        let mut digits = Vec::with_capacity(count as usize * PIXELS as usize);
        self.generate_each(gpu, count, |chunk| {
            digits.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(digits)
    }

    /// [`Self::generate`] a batch at a time: `each` gets the digits of each run in order
    /// ([batch, 784], the last run cut to `count`), so any count streams through one batch
    /// of host memory.
    pub fn generate_each(
        &self,
        gpu: &Gpu,
        count: u64,
        mut each: impl FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let px = PIXELS as usize;
        let mut first = 0u64;
        while first < count {
            let out = self.run(gpu, first)?;
            let take = ((count - first) as usize).min(self.batch);
            each(&out[..take * px])?;
            first += self.batch as u64;
        }
        Ok(())
    }

    /// Digit 0's states of the last run: [steps + 1, 784], from the initial noise to the end.
    pub fn trajectory(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.bufs.traj.read(gpu)
    }

    /// [`Sampler::trajectory`] as a future, for a browser page.
    pub async fn trajectory_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.bufs.traj.read_async(gpu).await
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
                let guide = guide.map(|g| &g.call.net.config);
                // Classifier-free guidance calls the model a second time.
                let second = s
                    .call
                    .unconditional
                    .as_ref()
                    .filter(|_| self.cfg_steps.contains(&k));
                let uncond = second.map(|_| &s.call.net.config);
                std::iter::once(&s.call.net.config)
                    .chain(guide)
                    .chain(uncond)
                    .map(Self::flops_per_digit_step)
                    .sum::<f64>()
            })
            .sum()
    }

    /// FLOPs of one model call per digit (the matmuls), for digits/s and GFLOP/s reports.
    pub fn flops_per_digit_step(config: &ModelConfig) -> f64 {
        crate::model::network::forward_flops_per_sample(config)
    }
}

/// Every conditional network's labels buffer among the stages' calls (guides included).
fn labels_of(stages: &[Stage]) -> Vec<GpuTensor> {
    let calls = stages
        .iter()
        .flat_map(|s| std::iter::once(&s.call).chain(s.guide.as_ref().map(|g| &g.call)));
    calls.filter_map(|c| c.net.labels.clone()).collect()
}

/// The digits asked of a class-conditional model: 0..9, at least one, a positive finite
/// guidance weight, and a model that knows labels.
pub fn check_classes(model: &ModelConfig, c: &Classes) -> Result<()> {
    if !model.classes {
        return Err(Error::config(
            "--digit, --digits, --per-digit and --cfg need a class-conditional model (train --classes)",
        ));
    }
    settings::check_digits(&c.digits)?;
    settings::check_cfg(c.cfg as f64)
}

/// The sampler's digits as IDX bytes: pixel = clamp(round((x + 0.5) * 256), 0, 255).
pub fn to_bytes(images: &[f32]) -> Vec<u8> {
    images
        .iter()
        .map(|&x| ((x + 0.5) * 256.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

pub mod bundle;
mod command;
mod digits;
pub mod export;
pub use command::*;
pub use digits::*;
