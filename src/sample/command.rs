//! The `sample` command and what `eval --checkpoint` shares with it: the sampling flags,
//! loading a checkpoint's weights, choosing the batch, writing the digits.

use super::{check_refine_from, to_bytes, Guide, Sampler, SamplerModel, Schedule};
use crate::config::{ModelConfig, PIXELS};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::ParamLayout;

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
    /// The step scale at the steps whose level is at most --low-from (our addition), with
    /// --step-scale above it: e.g. `--step-scale 1 --low-step-scale 1.5 --low-from 60` keeps
    /// the plain steps where the shapes are decided and trusts the model more where the
    /// strokes are.
    #[arg(
        long,
        value_name = "S",
        requires = "low_from",
        allow_negative_numbers = true
    )]
    pub low_step_scale: Option<f32>,
    /// The highest level that --low-step-scale applies to.
    #[arg(long, value_name = "LEVEL", requires = "low_step_scale")]
    pub low_from: Option<u32>,
    /// A checkpoint for the lower levels (our addition, as eDiff-I's expert denoisers): a
    /// model trained with a small `--level-max`, called instead of the model at the steps
    /// whose level is at most its --refine-from. Same alpha and n_max; any shape. Repeatable,
    /// each with its own --refine-from, levels decreasing: `--refiner MID --refine-from 100
    /// --refiner LOW --refine-from 20` hands levels 100..21 to MID and 20..1 to LOW.
    #[arg(long, value_name = "PATH", requires = "refine_from")]
    pub refiner: Vec<std::path::PathBuf>,
    /// The highest level at which the --refiner of the same position is called (e.g. its
    /// training --level-max).
    #[arg(long, value_name = "LEVEL", requires = "refiner")]
    pub refine_from: Vec<u32>,
    /// A weaker model of the same task (smaller, or trained less) to guide the model's steps
    /// away from (our addition: autoguidance, Karras et al. 2024). At the model's own steps
    /// (not a --refiner's) both are called and the step uses N_guide + W (N_model - N_guide),
    /// W = --guidance. Same alpha and n_max; any shape.
    #[arg(long, value_name = "PATH", requires = "guidance")]
    pub guide: Option<std::path::PathBuf>,
    /// The guidance weight W of --guide (1: the model alone; e.g. 1.5 to 3).
    #[arg(
        long,
        value_name = "W",
        requires = "guide",
        allow_negative_numbers = true
    )]
    pub guidance: Option<f32>,
    /// Call the --guide only at the steps whose level is at most LEVEL (default: every step
    /// of the model), e.g. the models' training --level-max: above it neither was trained and
    /// the guidance changes little there, at the guide's cost.
    #[arg(long, value_name = "LEVEL", requires = "guide")]
    pub guide_from: Option<u32>,
}

/// The models a sampler calls beside the main one: `--guide` (with its weight and
/// --guide-from) and the `--refiner`s (each with its --refine-from level).
pub struct Extras {
    pub guide: Option<LoadedGuide>,
    pub refiners: Vec<(LoadedModel, u32)>,
}

/// `--guide` loaded, with `--guidance` and `--guide-from` (checked by the sampler).
pub struct LoadedGuide {
    pub model: LoadedModel,
    pub weight: f32,
    pub from_level: Option<u32>,
}

impl Extras {
    /// Their model configurations, for [`auto_batch_for`].
    pub fn configs(&self) -> Vec<&ModelConfig> {
        let guide = self.guide.iter().map(|g| &g.model.config.model);
        guide
            .chain(self.refiners.iter().map(|(r, _)| &r.config.model))
            .collect()
    }
}

impl SamplingArgs {
    /// The schedule these flags ask for, for a model trained with `run`; checked.
    pub fn schedule(&self, run: &crate::train::RunConfig) -> Result<Schedule> {
        if self.low_from == Some(0) {
            return Err(Error::config(
                "--low-from must be at least 1 (level 0 is the finished digit: no step is there)",
            ));
        }
        let s = Schedule {
            alpha: run.alpha,
            n_max: run.n_max,
            steps: self.steps,
            scale: self.step_scale,
            eta: self.eta,
            clip: self.clip,
            background: self.background,
            low_scale: self.low_step_scale.unwrap_or(self.step_scale),
            low_from: self.low_from.unwrap_or(0),
        };
        s.validate()?;
        check_refine_from(&self.refine_from, self.refiner.len())?;
        if let Some(w) = self.guidance {
            Guide::check_weight(w)?;
        }
        Guide::check_from(self.guide_from)?;
        Ok(s)
    }

    /// Checks each `--refiner` and the `--guide` against the main model's run without
    /// loading their weights: each must read, and have the same alpha and n_max (they share
    /// one schedule).
    pub fn check_extras(&self, run: &crate::train::RunConfig) -> Result<()> {
        let refiners = self.refiner.iter().map(|p| (p, "refiner"));
        for (path, what) in refiners.chain(self.guide.iter().map(|p| (p, "guide"))) {
            let r = crate::train::read_run_config(path)?;
            if r.alpha != run.alpha || r.n_max != run.n_max {
                return Err(Error::config(format!(
                    "{}: the {what} was trained with alpha {} and n_max {}, the model with {} and {}",
                    path.display(),
                    r.alpha,
                    r.n_max,
                    run.alpha,
                    run.n_max
                )));
            }
        }
        Ok(())
    }

    /// Loads the `--guide` and each `--refiner` with `weights`, checked as
    /// [`Self::check_extras`].
    pub fn load_extras(
        &self,
        gpu: &Gpu,
        run: &crate::train::RunConfig,
        weights: Weights,
    ) -> Result<Extras> {
        check_refine_from(&self.refine_from, self.refiner.len())?;
        self.check_extras(run)?;
        let guide = match (&self.guide, self.guidance) {
            (Some(path), Some(weight)) => Some(LoadedGuide {
                model: load_model(gpu, path, weights)?,
                weight,
                from_level: self.guide_from,
            }),
            _ => None,
        };
        let refiners = self
            .refiner
            .iter()
            .zip(&self.refine_from)
            .map(|(path, &level)| Ok((load_model(gpu, path, weights)?, level)))
            .collect::<Result<_>>()?;
        Ok(Extras { guide, refiners })
    }

    /// The guide as JSON: `{"checkpoint", "guidance", "guide_from", "from_step"}` (the
    /// step from `sampler`), or null.
    pub fn guide_json(&self, sampler: &Sampler) -> serde_json::Value {
        match (&self.guide, self.guidance) {
            (Some(p), Some(w)) => serde_json::json!({
                "checkpoint": p.display().to_string(),
                "guidance": w,
                "guide_from": self.guide_from,
                "from_step": sampler.guide_from_step(),
            }),
            _ => serde_json::Value::Null,
        }
    }

    /// The refiners as JSON: `[{"checkpoint", "refine_from", "from_step"}]`, the steps from
    /// `sampler`.
    pub fn refiners_json(&self, sampler: &Sampler) -> serde_json::Value {
        let steps = sampler.refine_from_steps();
        self.refiner
            .iter()
            .zip(&self.refine_from)
            .zip(steps)
            .map(|((p, level), step)| {
                serde_json::json!({
                    "checkpoint": p.display().to_string(),
                    "refine_from": level,
                    "from_step": step,
                })
            })
            .collect()
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
        if let (Some(s), Some(l)) = (self.low_step_scale, self.low_from) {
            d += &format!(" low s={s} from {l}");
        }
        if let (Some(p), Some(w)) = (&self.guide, self.guidance) {
            d += &format!(" guide {} w={w}", p.display());
            if let Some(l) = self.guide_from {
                d += &format!(" from {l}");
            }
        }
        for (p, l) in self.refiner.iter().zip(&self.refine_from) {
            d += &format!(" refiner {} from {l}", p.display());
        }
        d
    }
}

/// A sampler for `model` (with its guide and refiners) of `batch` digits.
pub fn sampler_for(
    gpu: &Gpu,
    model: &LoadedModel,
    extras: &Extras,
    batch: usize,
    schedule: Schedule,
    seed: u64,
) -> Result<Sampler> {
    let views: Vec<_> = extras
        .refiners
        .iter()
        .map(|(r, l)| (r.view(), *l))
        .collect();
    let guide = extras.guide.as_ref().map(|g| Guide {
        model: g.model.view(),
        weight: g.weight,
        from_level: g.from_level,
    });
    Sampler::guided(gpu, model.view(), guide, &views, batch, schedule, seed)
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

/// [`auto_batch`] for the model and the other networks of the sampler together (its guide
/// and refiners: every network's activations are held at once, so each of the k networks
/// gets 1/k of the smallest one's limit; `count` caps it as before).
pub fn auto_batch_for(
    gpu: &Gpu,
    model: &ModelConfig,
    others: &[&ModelConfig],
    count: u64,
) -> usize {
    if others.is_empty() {
        return auto_batch(gpu, model, count);
    }
    let alone = |cfg: &ModelConfig| auto_batch(gpu, cfg, u64::MAX) as u64;
    let smallest = others.iter().map(|r| alone(r)).fold(alone(model), u64::min);
    let share = (smallest / (1 + others.len() as u64)).max(1);
    share.min(count).max(1) as usize
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
    let extras = a.sampling.load_extras(gpu, &model.config, a.weights)?;
    let batch = match a.batch {
        Some(0) => return Err(Error::config("--batch must be at least 1")),
        Some(b) => b.min(a.count as usize),
        None => auto_batch_for(gpu, &model.config.model, &extras.configs(), a.count),
    };
    let sampler = sampler_for(gpu, &model, &extras, batch, schedule, a.seed)?;
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
            let sm = sampler_for(gpu, &model, &extras, 16, s, a.seed)?;
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
        "low_step_scale": a.sampling.low_step_scale,
        "low_from": a.sampling.low_from,
        "refiners": a.sampling.refiners_json(&sampler),
        "guide": a.sampling.guide_json(&sampler),
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
