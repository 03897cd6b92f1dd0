//! The `sample` command and what `eval` shares with it: the settings of a run folder or of
//! the flags, loading the checkpoints, choosing the batch, writing the digits, the report.

use super::digits::{classes_for, labelled_rows, rows_of_each, DigitArgs};
use super::{to_bytes, Classes, Guide, Sampler, SamplerModel, Schedule, Stack};
use crate::checkpoint::{read_run_config, read_state_bytes, RunConfig};
use crate::config::{ModelConfig, PIXELS};
use crate::data::IdxWriter;
use crate::error::{Error, Result};
use crate::gpu::{Elem, Gpu, GpuTensor};
use crate::model::ParamLayout;
use crate::settings::recipe;
pub use crate::settings::sample::{Precision, Refiner, SampleFlags, SampleSettings, Weights};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The run folder `sample` reads when neither --run nor --checkpoint is given (`train`'s
/// default --out).
pub const DEFAULT_RUN: &str = "runs/train";

/// The sampler settings of `run`'s config.toml (if a run is given), with `flags` over them;
/// without a run, the article's sampler with the flags over it.
pub fn resolve(run: Option<&Path>, flags: &SampleFlags) -> Result<SampleSettings> {
    let mut s = match run {
        Some(dir) => recipe::run_sample_settings(dir)?,
        None => recipe::default_sample_settings(),
    };
    s.apply(flags);
    if s.checkpoint.is_none() {
        return Err(Error::config(
            "no model to sample: give --run DIR (a train run folder) or --checkpoint PATH",
        ));
    }
    Ok(s)
}

/// The models a sampler calls beside the main one: the guide (with its weight and
/// guide-from) and the refiners (each with its level); and the digits asked of a
/// class-conditional model.
pub struct Extras {
    pub guide: Option<LoadedGuide>,
    pub refiners: Vec<(LoadedModel, u32)>,
    pub classes: Option<Classes>,
}

/// The guide loaded, with its guidance weight and guide-from (checked by the sampler).
pub struct LoadedGuide {
    pub model: LoadedModel,
    pub guidance: f32,
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

/// The main model's run, the loop's schedule and the digits asked of it (`digits`, for a
/// class-conditional model), after every check that needs no weights: the settings, the
/// digits, and each guide and refiner readable with the main model's alpha and n_max (they
/// share one schedule). `eval` calls it before it loads any data.
pub fn check_stack(
    s: &SampleSettings,
    digits: Option<&[u32]>,
) -> Result<(RunConfig, Schedule, Option<Classes>)> {
    check_stack_of(s, digits, read_run_config)
}

/// [`check_stack`] with each model's run configuration from `config_of` (a checkpoint's
/// file, or a part of a bundle).
pub fn check_stack_of(
    s: &SampleSettings,
    digits: Option<&[u32]>,
    config_of: impl Fn(&Path) -> Result<RunConfig>,
) -> Result<(RunConfig, Schedule, Option<Classes>)> {
    let main = s
        .checkpoint
        .as_ref()
        .expect("resolve() requires a checkpoint");
    let run = config_of(main)?;
    let schedule = s.schedule(run.alpha, run.n_max)?;
    let classes = classes_for(&run.model, s, digits)?;
    let refiners = s.refiner.iter().map(|r| (&r.checkpoint, "refiner"));
    for (path, what) in refiners.chain(s.guide.iter().map(|p| (p, "guide"))) {
        let r = config_of(path)?;
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
    Ok((run, schedule, classes))
}

/// Every model of `s` on the GPU, and the schedule ([`check_stack`] first).
pub fn load_stack(
    gpu: &Gpu,
    s: &SampleSettings,
    digits: Option<&[u32]>,
) -> Result<(LoadedModel, Extras, Schedule)> {
    let (_, schedule, classes) = check_stack(s, digits)?;
    let load = |p: &Path| load_model(gpu, p, s.weights, s.precision);
    let (model, extras) = load_models(s, classes, load)?;
    Ok((model, extras, schedule))
}

/// The models `s` names, each loaded by `load` (from its file, or a part of a bundle).
pub fn load_models(
    s: &SampleSettings,
    classes: Option<Classes>,
    load: impl Fn(&Path) -> Result<LoadedModel>,
) -> Result<(LoadedModel, Extras)> {
    let model = load(s.checkpoint.as_ref().expect("checked"))?;
    let guide = match (&s.guide, s.guidance) {
        (Some(path), Some(guidance)) => Some(LoadedGuide {
            model: load(path)?,
            guidance: guidance as f32,
            from_level: s.guide_from,
        }),
        _ => None,
    };
    let refiners = s
        .refiner
        .iter()
        .map(|r| Ok((load(&r.checkpoint)?, r.from_level)))
        .collect::<Result<_>>()?;
    let extras = Extras {
        guide,
        refiners,
        classes,
    };
    Ok((model, extras))
}

/// A sampler for `model` (with its guide, refiners and classes) of `batch` digits.
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
        guidance: g.guidance,
        from_level: g.from_level,
    });
    let stack = Stack {
        model: model.view(),
        guide,
        refiners: &views,
        classes: extras.classes.as_ref(),
    };
    Sampler::new(gpu, stack, batch, schedule, seed)
}

/// Flags of `sample`.
#[derive(clap::Args, Clone, Debug)]
pub struct SampleArgs {
    /// A run folder of `train`: its models, sampled with the settings its recipe was measured
    /// best with (its config.toml's [sample] table); the flags below override them. Default:
    /// runs/train, unless --checkpoint is given.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// The models and the loop (over the run's settings).
    #[command(flatten)]
    pub sampling: SampleFlags,
    /// Digits to make.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// The digits of a class-conditional model.
    #[command(flatten)]
    pub digits: DigitArgs,
    /// N of each digit 0..9 from a class-conditional model (10 N digits): grid.png is ten
    /// labelled rows of N, one row per digit.
    #[arg(long, value_name = "N", conflicts_with_all = ["digit", "digits", "count", "grid"])]
    pub per_digit: Option<usize>,
    /// Output folder: samples-idx3-ubyte, grid.png (and trajectory/figures).
    #[arg(long, default_value = "runs/samples")]
    pub out: PathBuf,
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

impl SampleArgs {
    /// The digits asked for and how many: --per-digit's rows, else --digit or --digits over
    /// --count.
    fn asked(&self) -> Result<(Option<Vec<u32>>, u64)> {
        match self.per_digit {
            Some(0) => Err(Error::config("--per-digit must be at least 1")),
            Some(n) => Ok((Some(rows_of_each(n)), 10 * n as u64)),
            None => Ok((self.digits.asked(), self.count)),
        }
    }

    /// The run folder to read: --run, else the default one unless --checkpoint is given.
    fn run_dir(&self) -> Option<PathBuf> {
        match (&self.run, &self.sampling.checkpoint) {
            (Some(r), _) => Some(r.clone()),
            (None, None) => Some(PathBuf::from(DEFAULT_RUN)),
            (None, Some(_)) => None,
        }
    }
}

/// A model loaded from a checkpoint, with its weights on the GPU.
pub struct LoadedModel {
    pub path: PathBuf,
    pub config: RunConfig,
    pub layout: ParamLayout,
    pub params: GpuTensor,
    pub weights: Weights,
}

impl LoadedModel {
    /// The model as the sampler calls it.
    pub fn view(&self) -> SamplerModel<'_> {
        SamplerModel {
            config: &self.config.model,
            layout: &self.layout,
            params: &self.params,
        }
    }
}

/// Loads `path`'s configuration and weights (`Ema` falls back to raw weights only if the file
/// has no EMA, and says so).
pub fn load_model(
    gpu: &Gpu,
    path: &Path,
    weights: Weights,
    precision: Precision,
) -> Result<LoadedModel> {
    let bytes = crate::checkpoint::read(path)?;
    let m = load_model_bytes(gpu, &bytes, &path.display().to_string(), weights, precision)?;
    if m.weights != weights {
        eprintln!(
            "note: {} has no EMA weights; using the raw weights",
            path.display()
        );
    }
    Ok(m)
}

/// [`load_model`] of a checkpoint's bytes (a browser page's file); `name` names it in
/// errors and is the model's `path`.
pub fn load_model_bytes(
    gpu: &Gpu,
    bytes: &[u8],
    name: &str,
    weights: Weights,
    precision: Precision,
) -> Result<LoadedModel> {
    let config = read_state_bytes(bytes, name)?.config;
    let (data, used) = checkpoint_weights(bytes, name, &config, weights)?;
    upload_model(gpu, name, config, &data, used, precision)
}

/// The weights of a checkpoint's bytes that `weights` asks for (`Ema` falls back to the raw
/// weights when the file has none), with which they are.
pub fn checkpoint_weights(
    bytes: &[u8],
    name: &str,
    config: &RunConfig,
    weights: Weights,
) -> Result<(Vec<f32>, Weights)> {
    let layout = ParamLayout::new(&config.model);
    let loaded = crate::checkpoint::load_bytes(bytes, name, &layout)?;
    Ok(match (weights, loaded.buffers.ema) {
        (Weights::Ema, Some(e)) => (e, Weights::Ema),
        (_, _) => (loaded.buffers.params, Weights::Raw),
    })
}

/// The storage of weights and activations that `precision` asks for.
pub fn elem_of(precision: Precision) -> Elem {
    match precision {
        Precision::F32 => Elem::F32,
        Precision::F16 => Elem::F16,
    }
}

/// A model's weights `data` (in its checkpoint layout's flat order) onto the GPU, once the
/// model is known to fit the device, stored as `precision` asks (f16: rounded to nearest by
/// the `half` crate, in the f16 layout whose views start on whole 256-byte offsets); `name`
/// is the model's `path`.
pub fn upload_model(
    gpu: &Gpu,
    name: &str,
    config: RunConfig,
    data: &[f32],
    weights: Weights,
    precision: Precision,
) -> Result<LoadedModel> {
    crate::model::network::check_fits(gpu, &config.model, 1)?;
    let elem = elem_of(precision);
    let (layout, params) = params_on_gpu(gpu, &config.model, data, elem)?;
    Ok(LoadedModel {
        path: PathBuf::from(name),
        config,
        layout,
        params,
        weights,
    })
}

/// A model's weights `data` (in the checkpoint's f32 layout) on the GPU stored as `elem`, in
/// that storage's layout (f16: rounded to nearest by the `half` crate, views on 256 bytes).
pub fn params_on_gpu(
    gpu: &Gpu,
    model: &ModelConfig,
    data: &[f32],
    elem: Elem,
) -> Result<(ParamLayout, GpuTensor)> {
    gpu.check_elem(elem)?;
    let layout = ParamLayout::for_element_bytes(model, elem.bytes());
    let data = ParamLayout::new(model).relayout(data, &layout);
    let params = GpuTensor::from_values(gpu, "params", &[layout.total], &data, elem)?;
    Ok((layout, params))
}

/// Digits per batch: as many as fit the adapter's storage-binding limit for the largest
/// activation, a memory budget of 2 GiB of activations, and `count`.
pub fn auto_batch(gpu: &Gpu, config: &ModelConfig, count: u64) -> usize {
    let (t, d, hk, h) = (
        config.geometry.tokens() as u64,
        config.geometry.dim() as u64,
        config.hk() as u64,
        config.heads as u64,
    );
    let (l, f) = (config.layers as u64, config.mlp as u64);
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
    let alone = |config: &ModelConfig| auto_batch(gpu, config, u64::MAX) as u64;
    let smallest = others.iter().map(|r| alone(r)).fold(alone(model), u64::min);
    let share = (smallest / (1 + others.len() as u64)).max(1);
    share.min(count).max(1) as usize
}

/// A model of the stack, as reports name it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub checkpoint: String,
    /// The weights used (ema, or raw when the file had no EMA).
    pub weights: Weights,
    /// "1 layers, 2 heads x 32, mlp 1024, ..."
    pub model: String,
}

impl ModelReport {
    fn of(m: &LoadedModel) -> ModelReport {
        ModelReport {
            checkpoint: m.path.display().to_string(),
            weights: m.weights,
            model: m.config.model.to_string(),
        }
    }
}

/// The guide, with its weight and the first step it is called at.
#[derive(Clone, Debug, Serialize)]
pub struct GuideReport {
    #[serde(flatten)]
    pub model: ModelReport,
    pub guidance: f32,
    pub guide_from: Option<u32>,
    pub from_step: u32,
}

/// A refiner, with its level and the first step it takes.
#[derive(Clone, Debug, Serialize)]
pub struct RefinerReport {
    #[serde(flatten)]
    pub model: ModelReport,
    pub refine_from: u32,
    pub from_step: u32,
}

/// Every model of a sampler and the settings it ran with.
#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    /// The run folder the settings came from, if any.
    pub run: Option<String>,
    pub settings: SampleSettings,
    pub model: ModelReport,
    pub guide: Option<GuideReport>,
    pub refiners: Vec<RefinerReport>,
    /// The digits asked of a class-conditional model and the cfg weight.
    pub classes: Option<Classes>,
}

impl StackReport {
    pub fn new(
        run: Option<&Path>,
        settings: &SampleSettings,
        model: &LoadedModel,
        extras: &Extras,
        sampler: &Sampler,
    ) -> StackReport {
        let guide = extras.guide.as_ref().map(|g| GuideReport {
            model: ModelReport::of(&g.model),
            guidance: g.guidance,
            guide_from: g.from_level,
            from_step: sampler.guide_from_step().unwrap_or(0),
        });
        let refiners = extras
            .refiners
            .iter()
            .zip(sampler.refine_from_steps())
            .map(|((m, level), step)| RefinerReport {
                model: ModelReport::of(m),
                refine_from: *level,
                from_step: step,
            })
            .collect();
        StackReport {
            run: run.map(|r| r.display().to_string()),
            settings: settings.clone(),
            model: ModelReport::of(model),
            guide,
            refiners,
            classes: extras.classes.clone(),
        }
    }

    /// The models and settings in words, one line each.
    pub fn text(&self) -> String {
        let mut t = match &self.run {
            Some(r) => format!("run {r}: "),
            None => String::new(),
        };
        t += &format!(
            "model {} ({}, {} weights)\n",
            self.model.checkpoint,
            self.model.model,
            self.model.weights_name()
        );
        if let Some(g) = &self.guide {
            t += &format!(
                "guide {} ({}), guidance {} from step {}\n",
                g.model.checkpoint, g.model.model, g.guidance, g.from_step
            );
        }
        for r in &self.refiners {
            t += &format!(
                "refiner {} ({}) from level {} (step {})\n",
                r.model.checkpoint, r.model.model, r.refine_from, r.from_step
            );
        }
        if let Some(c) = &self.classes {
            let levels = match c.min_level {
                0 => "every level".to_string(),
                l => format!("levels >= {l}"),
            };
            t += &format!(
                "digits {} (cycled), classifier-free guidance {} at {levels}\n",
                digit_list(&c.digits),
                c.cfg
            );
        }
        t + &format!("settings: {}\n", self.settings.describe())
    }
}

/// "0,1,2" (runs of one digit, as --per-digit's, written "0x8,1x8").
fn digit_list(digits: &[u32]) -> String {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for &d in digits {
        match runs.last_mut() {
            Some((last, n)) if *last == d => *n += 1,
            _ => runs.push((d, 1)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(d, n)| match n {
            1 => d.to_string(),
            _ => format!("{d}x{n}"),
        })
        .collect();
    text.join(",")
}

impl ModelReport {
    fn weights_name(&self) -> &'static str {
        match self.weights {
            Weights::Ema => "EMA",
            Weights::Raw => "raw",
        }
    }
}

/// What `sample` made.
#[derive(Clone, Debug, Serialize)]
pub struct SampleReport {
    #[serde(flatten)]
    pub stack: StackReport,
    pub count: u64,
    pub batch: usize,
    pub seconds: f64,
    pub digits_per_s: f64,
    pub gflops: f64,
    pub adapter: String,
    pub files: Vec<String>,
}

impl SampleReport {
    pub fn text(&self) -> String {
        format!(
            "{}{} digits in {:.2} s: {:.1} digits/s, {:.2} GFLOP/s on {}; wrote {}",
            self.stack.text(),
            self.count,
            self.seconds,
            self.digits_per_s,
            self.gflops,
            self.adapter,
            self.files.join(", ")
        )
    }
}

/// `wgpu-diffusion sample`.
pub fn run_command(gpu: &Gpu, a: &SampleArgs) -> Result<SampleReport> {
    let (asked, count) = a.asked()?;
    if count == 0 {
        return Err(Error::config("--count must be at least 1"));
    }
    if count > u32::MAX as u64 {
        return Err(Error::config(format!(
            "--count {count}: an IDX file holds at most {} digits",
            u32::MAX
        )));
    }
    if a.grid == 0 || a.grid > 100 {
        return Err(Error::config(format!(
            "--grid must be in 1..=100, got {}",
            a.grid
        )));
    }
    let run = a.run_dir();
    let settings = resolve(run.as_deref(), &a.sampling)?;
    let (model, extras, schedule) = load_stack(gpu, &settings, asked.as_deref())?;
    let batch = match a.batch {
        Some(0) => return Err(Error::config("--batch must be at least 1")),
        Some(b) => b.min(count as usize),
        None => auto_batch_for(gpu, &model.config.model, &extras.configs(), count),
    };
    let sampler = sampler_for(gpu, &model, &extras, batch, schedule, settings.seed)?;
    let (secs, mut files) = sample_to_files(gpu, a, &sampler, count, extras.classes.as_ref())?;
    let rate = count as f64 / secs.max(1e-9);
    if a.trajectory {
        let traj = sampler.trajectory(gpu)?;
        files.extend(crate::figures::write_trajectory(
            &a.out,
            &traj,
            settings.steps as usize,
        )?);
    }
    if a.figures {
        files.extend(write_figures(
            gpu,
            a,
            &model,
            &extras,
            schedule,
            settings.seed,
        )?);
    }
    Ok(SampleReport {
        stack: StackReport::new(run.as_deref(), &settings, &model, &extras, &sampler),
        count,
        batch,
        seconds: secs,
        digits_per_s: rate,
        gflops: sampler.flops_per_digit() * rate / 1e9,
        adapter: gpu.describe(),
        files,
    })
}

/// Samples `count` digits into OUT/samples-idx3-ubyte and, for a class-conditional model,
/// OUT/labels-idx1-ubyte (the digit each was asked to be), a batch at a time as the sampler
/// makes them (any count the disk holds, in one batch of memory), then OUT/grid.png from the
/// first ones (or --per-digit's labelled rows). Returns the seconds spent sampling (writing
/// excluded) and the files.
fn sample_to_files(
    gpu: &Gpu,
    a: &SampleArgs,
    sampler: &Sampler,
    count: u64,
    classes: Option<&Classes>,
) -> Result<(f64, Vec<String>)> {
    let px = PIXELS as usize;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Error::io(format!("cannot create {}: {e}", a.out.display())))?;
    let idx_path = a.out.join("samples-idx3-ubyte");
    let label_path = a.out.join("labels-idx1-ubyte");
    let mut images = IdxWriter::create(&idx_path, &[count as usize, 28, 28])?;
    let mut labels = match classes {
        Some(_) => Some(IdxWriter::create(&label_path, &[count as usize])?),
        None => None,
    };
    let keep = match a.per_digit {
        Some(_) => count as usize,
        None => (a.grid * a.grid).min(count as usize),
    };
    let mut first_digits = Vec::with_capacity(keep * px);
    let (start, mut writing, mut done) = (web_time::Instant::now(), 0.0, 0u64);
    sampler.generate_each(gpu, count, |chunk| {
        let t = web_time::Instant::now();
        let n = chunk.len() / px;
        let room = keep * px - first_digits.len();
        first_digits.extend_from_slice(&chunk[..room.min(chunk.len())]);
        images.append(&to_bytes(chunk))?;
        if let (Some(w), Some(c)) = (labels.as_mut(), classes) {
            let l: Vec<u8> = c.labels(done, n).iter().map(|&d| d as u8).collect();
            w.append(&l)?;
        }
        done += n as u64;
        writing += t.elapsed().as_secs_f64();
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64() - writing;
    images.finish()?;
    let mut files = vec![idx_path.display().to_string()];
    if let Some(w) = labels {
        w.finish()?;
        files.push(label_path.display().to_string());
    }
    files.push(write_grid(a, &first_digits)?);
    Ok((secs, files))
}

/// OUT/grid.png: the first digits in a grid, or --per-digit's labelled rows.
fn write_grid(a: &SampleArgs, digits: &[f32]) -> Result<String> {
    let (w, h, grey) = match a.per_digit {
        Some(per) => labelled_rows(digits, per, 2),
        None => crate::figures::grid(digits, a.grid, 2, 2, crate::figures::Scale::Data),
    };
    let grid = a.out.join("grid.png");
    crate::figures::write_png(&grid, w, h, &grey)?;
    Ok(grid.display().to_string())
}

/// The seed's four grids, each labelled "n'=STEPS s=SCALE", side by side in one PNG (and each
/// on its own).
fn write_figures(
    gpu: &Gpu,
    a: &SampleArgs,
    model: &LoadedModel,
    extras: &Extras,
    schedule: Schedule,
    seed: u64,
) -> Result<Vec<String>> {
    let mut panels = Vec::new();
    let mut written = Vec::new();
    for (steps, scale) in [(500u32, 1.0f32), (500, 1.5), (50, 1.0), (50, 1.5)] {
        let s = Schedule {
            steps,
            scale,
            ..schedule
        };
        let sm = sampler_for(gpu, model, extras, 16, s, seed)?;
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
    Ok(written)
}
