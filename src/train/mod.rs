//! `wgpu-diffusion train`: the training loop of docs/model.md §4 on the GPU, for each stage of a recipe.
//!
//! One step is one command buffer: noise injection, patches, forward, loss, backward, Adam and
//! the EMA update. Per step the host writes three small uniforms (step counter, image offset,
//! loss slot) and submits; it reads the loss history back only every `log-every` steps, the
//! validation loss once per epoch, and the weights when it writes a checkpoint.

use crate::checkpoint::run::{read_state, Meta};
use crate::checkpoint::{self, Buffers, RunConfig, RunState};
use crate::config::{ModelConfig, Skip, PIXELS};
use crate::data::{self, Mnist};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::lr_schedule::LrSchedule;
use crate::math::rng::streams;
use crate::model::network::{Network, Optimizer, LOSS_HISTORY};
use crate::model::ParamLayout;
use crate::ops::noise::{LabelDropout, NoiseConfig, NoiseInject};
use crate::ops::patches;
use crate::settings::recipe::{stage_prefix, Preset, Recipe, Source, Stage, CONFIG_FILE};
use crate::settings::train::TrainSettings;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod args;
mod metrics;
mod run_state;

pub use crate::checkpoint::read_run_config;
pub use args::TrainArgs;
use metrics::{Metrics, Progress, Row};

/// Side of the per-epoch sample grid, and its seed (fixed, so epochs compare).
const EPOCH_GRID: usize = 8;
const EPOCH_SAMPLE_SEED: u64 = 0xD161_7500;
/// Seed of the eval-every samples (fixed, so evaluations compare).
const EVAL_SAMPLE_SEED: u64 = 0xE7A1_0000;

/// Set by Ctrl-C or SIGTERM (see [`install_interrupt_handler`]): the loop saves a checkpoint
/// after the step in flight and stops.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes Ctrl-C and SIGTERM stop training cleanly: the current step finishes, its losses are
/// logged and checked, a checkpoint is written and the run ends with exit code 130 (resume it
/// with `--resume`). A second signal exits at once without saving. For the binary; tests may
/// call [`request_interrupt`] instead.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("error: interrupted again; stopping without saving");
            std::process::exit(130);
        }
        eprintln!("interrupt: saving a checkpoint after this step (again to quit without saving)");
    });
}

/// What a signal does: asks the training loop to save and stop.
pub fn request_interrupt() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Seed of the validation noise: fixed, so validation losses compare across epochs and runs.
pub const VALIDATION_SEED: u64 = 0x5EED_0000_0800;

/// The image order of `epoch`: a Fisher-Yates shuffle driven by Philox bits, so it is the same
/// on every machine and can be rebuilt on resume.
pub fn epoch_permutation(seed: u64, epoch: u32, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let bits = crate::math::rng::bits(seed, epoch, streams::SHUFFLE, i as u32)[0];
        let j = crate::math::rng::below(bits, i as u32 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Why a stage stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// It took its max-steps.
    Steps,
    /// All its epochs.
    Epochs,
    /// No better validation loss for `patience` epochs.
    EarlyStop,
    /// Its share of the `minutes` budget was spent.
    Budget,
}

/// Summary of a finished stage (or of a run of one stage).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The stage's name (None for a recipe of one stage).
    pub stage: Option<String>,
    pub steps: u64,
    pub epochs: u32,
    pub best_val: Option<f32>,
    pub last_train_loss: Option<f32>,
    /// Seconds the stage has trained, over all its processes.
    pub seconds: f64,
    /// Samples per second in this process.
    pub samples_per_s: f64,
    pub end: End,
    /// Whether it was already done when the run resumed (nothing was trained).
    pub skipped: bool,
}

impl Summary {
    /// Whether early stopping ended it.
    pub fn stopped_early(&self) -> bool {
        self.end == End::EarlyStop
    }
}

/// Summary of a whole run: the recipe and each stage.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub out: PathBuf,
    pub recipe: String,
    pub stages: Vec<Summary>,
}

/// What `train --json` prints at the end.
#[derive(Debug, Serialize)]
pub struct TrainReport<'a> {
    pub summary: &'a RunSummary,
}

/// Trains on `gpu` as `args` say: every stage of the recipe in turn, into its folder. Returns
/// a summary, or an error (a NaN loss is an error of kind `Diverged`, after which the last
/// good checkpoint is left in place; Ctrl-C one of kind `Interrupted`).
pub fn run(gpu: &Gpu, args: &TrainArgs) -> Result<RunSummary> {
    let recipe = args.recipe()?;
    args.check_out(&recipe)?;
    for s in &recipe.stages {
        let model = s.settings.model()?;
        crate::model::network::check_fits(gpu, &model, s.settings.batch())?;
        crate::model::network::check_fits(gpu, &model, s.settings.val_count)?;
    }
    // A broken classifier file fails now, before anything is written.
    if recipe.stages.iter().any(|s| s.settings.eval_every > 0) {
        args.classifier.read_cached()?;
    }
    let mnist: Mnist = data::load(args.data.as_deref())?;
    check_resumable(args, &recipe, mnist.train.count)?;
    std::fs::create_dir_all(&args.out).map_err(crate::error::io_err(
        ErrorKind::Io,
        "cannot create",
        &args.out,
    ))?;
    checkpoint::write_atomic(&args.out.join(CONFIG_FILE), recipe.to_toml().as_bytes())?;
    let progress = Progress::new(&recipe, mnist.train.count, args.json);
    if let Some(note) = cpu_note(gpu, args, &recipe) {
        progress.say(&note);
    }
    let mut carry = 0.0;
    let mut stages = Vec::new();
    for (i, stage) in recipe.stages.iter().enumerate() {
        let budget = stage.settings.budget_seconds().map(|b| b + carry);
        let summary = match done_before(args, &recipe, stage, budget, mnist.train.count)? {
            Some(s) => s,
            None => {
                progress.start_stage(i);
                let t = Trainer::new(gpu, args, stage, budget, &mnist, &progress)?;
                t.run()?
            }
        };
        if let Some(b) = budget {
            carry = b - summary.seconds;
        }
        progress.say(&summary_line(&summary, &stage.dir(&args.out)));
        stages.push(summary);
    }
    progress.finish();
    Ok(RunSummary {
        out: args.out.clone(),
        recipe: recipe.source.to_string(),
        stages,
    })
}

/// With --resume, every stage's checkpoint there is must be of the stage's configuration
/// (checked before anything is written).
fn check_resumable(args: &TrainArgs, recipe: &Recipe, train_count: usize) -> Result<()> {
    if !args.resume {
        return Ok(());
    }
    for stage in &recipe.stages {
        let ckpt = stage.dir(&args.out).join("checkpoint.safetensors");
        if ckpt.exists() {
            let s = &stage.settings;
            let config = run_config(s, s.model()?, s.train_subset.unwrap_or(train_count));
            run_state::check(&ckpt, &config)?;
        }
    }
    Ok(())
}

/// On a resumed staged run, a stage its checkpoint says is done (it finished, took its
/// max-steps, or spent its budget) is not set up again.
fn done_before(
    args: &TrainArgs,
    recipe: &Recipe,
    stage: &Stage,
    budget: Option<f64>,
    train_count: usize,
) -> Result<Option<Summary>> {
    let ckpt = stage.dir(&args.out).join("checkpoint.safetensors");
    if !(args.resume && recipe.is_staged() && ckpt.exists()) {
        return Ok(None);
    }
    let Meta { state, .. } = read_state(&ckpt)?;
    let s = &stage.settings;
    let images = s.train_subset.unwrap_or(train_count);
    let end = if state.finished {
        if state.epochs_without_improvement >= s.patience {
            End::EarlyStop
        } else {
            End::Epochs
        }
    } else if state.step >= s.step_limit(images) {
        End::Steps
    } else if budget.is_some_and(|b| state.seconds >= b) {
        End::Budget
    } else {
        return Ok(None);
    };
    Ok(Some(Summary {
        stage: stage.name.clone(),
        steps: state.step,
        epochs: state.epoch,
        best_val: state.best_val,
        last_train_loss: None,
        seconds: state.seconds,
        samples_per_s: 0.0,
        end,
        skipped: true,
    }))
}

/// "stage guide: 400 steps in 88.7 s (max-steps), best val_loss 0.41, 1130 samples/s; in
/// runs/fast/guide".
fn summary_line(s: &Summary, dir: &Path) -> String {
    let name = stage_prefix(s.stage.as_deref());
    let how = match (s.skipped, s.end) {
        (true, _) => "done before this run".to_string(),
        (_, End::Steps) => "took its steps".into(),
        (_, End::Epochs) => "all epochs".into(),
        (_, End::EarlyStop) => "early stop".into(),
        (_, End::Budget) => "the budget ended it".into(),
    };
    let f = |v: Option<f32>| v.map(|x| format!("{x:.5}")).unwrap_or("-".into());
    format!(
        "{name}{} steps, {} epochs in {:.1} s ({how}), best val_loss {}, last train_loss {}, {:.1} samples/s; weights in {}",
        s.steps,
        s.epochs,
        s.seconds,
        f(s.best_val),
        f(s.last_train_loss),
        s.samples_per_s,
        dir.display()
    )
}

/// On a CPU adapter, the seed and notebook presets train at tens of samples per second: one
/// line saying so, and what the fast recipe draws here instead.
fn cpu_note(gpu: &Gpu, args: &TrainArgs, recipe: &Recipe) -> Option<String> {
    let big = matches!(
        recipe.source,
        Source::Preset(Preset::Seed) | Source::Preset(Preset::Notebook)
    );
    (gpu.is_cpu() && big && !args.resume).then(|| {
        format!(
            "note: the {} wants a GPU, and {} is a CPU adapter (an epoch takes hours here); \
             `train --preset fast --minutes {FAST_MINUTES}` draws mostly readable digits in {FAST_MINUTES} minutes on 2 CPU cores (FID 16)",
            recipe.source,
            gpu.info.name
        )
    })
}

/// The budget of the fast recipe that draws mostly readable digits on a 2-core CPU adapter:
/// FID 15.9 against 24.8 after 10 minutes (docs/experiments/13-fast-recipe.md).
pub const FAST_MINUTES: u32 = 30;

/// Inputs of one batch: noise injection and the two patch extractions (tokens with the
/// conditioning token; targets without it).
struct Batcher {
    noise: NoiseInject,
    dispatches: Vec<Dispatch>,
    _buffers: Vec<GpuTensor>,
}

impl Batcher {
    /// `images`: the images (bytes), their order and, for a class-conditional network, their
    /// labels (u32) with the label dropout.
    fn new(
        gpu: &Gpu,
        cfg: NoiseConfig,
        images: (&GpuTensor, &GpuTensor, Option<(&GpuTensor, f64)>),
        net: &Network,
    ) -> Result<Batcher> {
        let (data, perm, image_labels) = images;
        let (g, batch) = (&net.cfg.geometry, net.batch);
        let px = PIXELS as usize;
        let cond = GpuTensor::zeros(gpu, "cond", &[batch])?;
        let noise = GpuTensor::zeros(gpu, "noise", &[batch, px])?;
        let noisy = GpuTensor::zeros(gpu, "noisy", &[batch, px])?;
        let op = match (image_labels, &net.labels) {
            (Some((image_labels, drop)), Some(labels)) => {
                let ld = LabelDropout {
                    image_labels,
                    labels,
                    drop,
                };
                NoiseInject::labelled(gpu, &cfg, batch, data, perm, ld, &cond, &noise, &noisy)?
            }
            _ => NoiseInject::new(gpu, &cfg, batch, data, perm, &cond, &noise, &noisy)?,
        };
        let t = g.tokens() as usize;
        let p = g.patches() as usize;
        let d1 = patches::patches_forward(gpu, g, batch, t, &noisy, &cond, &net.tokens)?;
        let d2 = patches::patches_forward(gpu, g, batch, p, &noise, &cond, &net.target)?;
        Ok(Batcher {
            noise: op,
            dispatches: vec![d1, d2],
            _buffers: vec![cond, noise, noisy],
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.noise.dispatch.record(pass);
        for d in &self.dispatches {
            d.record(pass);
        }
    }
}

/// Where a stage starts: its state and buffers (fresh, or from its checkpoint), and a note for
/// the log when a resume changes the rate, the levels or the loss weight.
fn start_state(
    resume: bool,
    ckpt: &Path,
    config: &RunConfig,
    s: &TrainSettings,
    layout: &ParamLayout,
    mnist: &Mnist,
) -> Result<(RunState, Buffers, String)> {
    if resume {
        return run_state::resume(ckpt, config, layout, s.lr as f32, s.level_max());
    }
    let mut params = layout.init(s.seed);
    if config.model.skip == Skip::PixelMixture {
        // The skip's per-position prior, from the digits this run trains on.
        let pixels = &mnist.train.pixels[..config.train_images * PIXELS as usize];
        let prior = crate::math::prior::pixel_prior(&config.model.geometry, pixels);
        params[layout.get("skip.prior").range()].copy_from_slice(&prior);
    }
    let buffers = Buffers {
        ema: Some(params.clone()),
        adam_m: Some(vec![0.0; layout.total]),
        adam_v: Some(vec![0.0; layout.total]),
        params,
    };
    Ok((RunState::default(), buffers, String::new()))
}

/// The training of one stage: everything on the GPU made once, then [`Trainer::run`].
struct Trainer<'a> {
    gpu: &'a Gpu,
    settings: &'a TrainSettings,
    stage: Option<String>,
    config: RunConfig,
    layout: ParamLayout,
    ckpt_path: PathBuf,
    best_path: PathBuf,
    state: RunState,
    gear: Gear,
    evaluator: Option<(crate::sample::Sampler, crate::eval::classifier::Classifier)>,
    lr: LrSchedule,
    budget: Option<f64>,
    /// The rate of the last step submitted (what the rows log).
    last_lr: f32,
    max_steps: u64,
    steps_per_epoch: u64,
    metrics: Metrics<'a>,
    clock: Clock,
    in_flight: std::collections::VecDeque<wgpu::SubmissionIndex>,
}

/// The GPU side of a stage, made once: the weights and their optimizer, the training and
/// validation networks, the batches, and the per-epoch sampler.
struct Gear {
    params: GpuTensor,
    opt: Optimizer,
    net: Network,
    batcher: Batcher,
    perm: GpuTensor,
    _train_data: (GpuTensor, Option<GpuTensor>),
    val_net: Network,
    epoch_sampler: Option<crate::sample::Sampler>,
}

impl Gear {
    fn new(
        gpu: &Gpu,
        s: &TrainSettings,
        model: &ModelConfig,
        layout: &ParamLayout,
        buffers: &Buffers,
        mnist: &Mnist,
        n_train: usize,
    ) -> Result<Gear> {
        let pixels = &mnist.train.pixels[..n_train * PIXELS as usize];
        let train_data = GpuTensor::from_bytes(gpu, "train-images", pixels)?;
        let train_labels =
            image_labels(gpu, model, "train-labels", &mnist.train_labels[..n_train])?;
        let perm = GpuTensor::zeros(gpu, "perm", &[n_train])?;
        let params = GpuTensor::from_slice(gpu, "params", &[layout.total], &buffers.params)?;
        let opt = Optimizer::new(
            gpu,
            layout,
            &params,
            buffers.adam_m.as_ref().unwrap(),
            buffers.adam_v.as_ref().unwrap(),
            buffers.ema.as_ref().unwrap(),
            s.lr as f32,
            s.ema as f32,
        )?;
        let net = Network::new(gpu, model, layout, s.batch(), &params, Some(&opt.grads))?;
        let noise = NoiseConfig {
            seed: s.seed,
            stream: streams::TRAIN,
            alpha: s.alpha as f32,
            n_max: s.level_max(),
            repeat: s.repeat,
        };
        let labels = train_labels.as_ref().map(|l| (l, s.label_dropout));
        let batcher = Batcher::new(gpu, noise, (&train_data, &perm, labels), &net)?;
        let val_net = validation_net(gpu, s, model, layout, &params, mnist)?;
        let epoch_sampler = match s.sample_every {
            0 => None,
            _ => Some(progress_sampler(
                gpu,
                (model, layout, &opt.ema),
                EPOCH_GRID * EPOCH_GRID,
                s,
                EPOCH_SAMPLE_SEED,
            )?),
        };
        Ok(Gear {
            params,
            opt,
            net,
            batcher,
            perm,
            _train_data: (train_data, train_labels),
            val_net,
            epoch_sampler,
        })
    }
}

/// The stage's clock: seconds trained before this process, and this process's start (its
/// set-up counts against the budget).
struct Clock {
    before: f64,
    start: Instant,
    first_step: u64,
    last_row_step: u64,
    last_row_time: f64,
    last_train: Option<f32>,
    saved_at: Option<u64>,
}

impl Clock {
    fn new(start: Instant, state: &RunState) -> Clock {
        Clock {
            before: state.seconds,
            start,
            first_step: state.step,
            last_row_step: state.step,
            last_row_time: start.elapsed().as_secs_f64(),
            last_train: None,
            saved_at: None,
        }
    }
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    /// Seconds the stage has trained in all, now.
    fn total(&self) -> f64 {
        self.before + self.now()
    }
}

impl<'a> Trainer<'a> {
    fn new(
        gpu: &'a Gpu,
        args: &TrainArgs,
        stage: &'a Stage,
        budget: Option<f64>,
        mnist: &Mnist,
        progress: &'a Progress,
    ) -> Result<Trainer<'a>> {
        let start = Instant::now();
        let s = &stage.settings;
        let model = s.model()?;
        let dir = stage.dir(&args.out);
        let ckpt_path = dir.join("checkpoint.safetensors");
        let n_train = s.train_subset.unwrap_or(mnist.train.count);
        let config = run_config(s, model, n_train);
        let layout = ParamLayout::new(&model);
        let resume = args.resume && (ckpt_path.exists() || stage.name.is_none());
        let (state, buffers, note) = start_state(resume, &ckpt_path, &config, s, &layout, mnist)?;
        if state.finished {
            return Err(Error::config(format!(
                "the run in {} has finished (early stopping or all epochs); start a new --out",
                dir.display()
            )));
        }
        let gear = Gear::new(gpu, s, &model, &layout, &buffers, mnist, n_train)?;
        let steps_per_epoch = s.steps_per_epoch(n_train);
        let max_steps = s.step_limit(n_train);
        let lr = s.lr_schedule(max_steps, budget)?;
        std::fs::create_dir_all(&dir).map_err(crate::error::io_err(
            ErrorKind::Io,
            "cannot create",
            &dir,
        ))?;
        let mut metrics = Metrics::open(&dir, resume, args.json, progress)?;
        let resuming = match resume {
            true => format!(", resuming at step {}{note}", state.step),
            false => String::new(),
        };
        metrics.say(&format!(
            "{}training {} weights ({model}) on {}: {} samples per step, {steps_per_epoch} steps per epoch, levels 0..={}, {lr}{}{resuming}",
            stage.prefix(),
            model.parameter_count(),
            gpu.describe(),
            s.batch(),
            s.level_max(),
            budget
                .map(|b| format!(", {:.1} minutes", b / 60.0))
                .unwrap_or_default(),
        ));
        let evaluator = evaluator(
            gpu,
            args,
            s,
            &model,
            &layout,
            &gear.opt,
            mnist,
            &mut metrics,
        )?;
        Ok(Trainer {
            gpu,
            settings: s,
            stage: stage.name.clone(),
            config,
            layout,
            best_path: dir.join("best.safetensors"),
            ckpt_path,
            clock: Clock::new(start, &state),
            state,
            gear,
            evaluator,
            lr,
            budget,
            last_lr: 0.0,
            max_steps,
            steps_per_epoch,
            metrics,
            in_flight: Default::default(),
        })
    }

    /// Trains until the stage ends: its steps, its epochs, early stopping or its budget.
    fn run(mut self) -> Result<Summary> {
        let n_train = self.config.train_images;
        let mut perm_epoch = u32::MAX;
        let end = 'epochs: loop {
            if self.out_of_time() {
                break End::Budget;
            }
            if self.state.step >= self.max_steps {
                break End::Steps;
            }
            if perm_epoch != self.state.epoch {
                let p = epoch_permutation(self.settings.seed, self.state.epoch, n_train);
                self.gear.perm.write(self.gpu, &p);
                perm_epoch = self.state.epoch;
            }
            while self.state.epoch_step < self.steps_per_epoch {
                self.step()?;
                self.after_step()?;
                let mid_epoch = self.state.epoch_step < self.steps_per_epoch;
                if self.out_of_time() {
                    break 'epochs End::Budget;
                }
                if self.state.step >= self.max_steps && mid_epoch {
                    break 'epochs End::Steps;
                }
            }
            if let Some(end) = self.end_of_epoch()? {
                break end;
            }
        };
        self.finish(end)
    }

    /// Whether the stage's budget is spent.
    fn out_of_time(&self) -> bool {
        self.budget.is_some_and(|b| self.clock.total() >= b)
    }

    /// Records and submits one training step.
    fn step(&mut self) -> Result<()> {
        let (gpu, s, state) = (self.gpu, self.settings, &self.state);
        let step = state.step;
        let first_image = (state.epoch_step * s.batch_images as u64) as u32;
        self.gear
            .batcher
            .noise
            .set_step(gpu, step as u32, first_image);
        self.gear
            .net
            .set_slot(gpu, (step % LOSS_HISTORY as u64) as u32);
        let rate = self.lr.at(step, self.clock.total());
        self.gear.opt.set_step(gpu, step + 1, rate);
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("train-step"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("train-step"),
                timestamp_writes: None,
            });
            self.gear.batcher.record(&mut pass);
            self.gear.net.record_forward(&mut pass);
            self.gear.net.record_loss(&mut pass);
            self.gear.net.record_backward(&mut pass);
            self.gear.opt.record(&mut pass);
        }
        self.in_flight.push_back(gpu.queue.submit([enc.finish()]));
        // Keep at most two steps queued: bounded memory, no stall of the GPU.
        if self.in_flight.len() > 2 {
            let idx = self.in_flight.pop_front().unwrap();
            gpu.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| Error::gpu(format!("waiting for the GPU failed: {e}")))?;
        }
        self.state.step += 1;
        self.state.epoch_step += 1;
        self.last_lr = rate;
        Ok(())
    }

    /// After a step: the logged row, the periodic checkpoint, and a checkpoint and stop when
    /// a signal came or the budget is spent.
    fn after_step(&mut self) -> Result<()> {
        let s = self.settings;
        let step = self.state.step;
        // Read once: a signal that comes later is this step's next one's.
        let interrupted = interrupted();
        let stop = interrupted || self.out_of_time() || step == self.max_steps;
        let want_row = step.is_multiple_of(s.log_every) || stop;
        // The last checkpoint of a stage that ends is finish()'s.
        let want_ckpt = step.is_multiple_of(s.checkpoint_every) || interrupted;
        if want_row || want_ckpt || self.state.epoch_step == self.steps_per_epoch {
            // Read the losses since the last row: a divergence is caught before any
            // checkpoint could be overwritten with broken weights.
            let losses = self.read_losses()?;
            if want_row {
                self.log_row(&losses)?;
            }
        }
        if want_ckpt {
            self.save_checkpoint()?;
        }
        if interrupted {
            self.metrics.finish();
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!(
                    "interrupted after step {step}: checkpoint written to {}; continue with --resume",
                    self.ckpt_path.display()
                ),
            ));
        }
        Ok(())
    }

    /// The losses of the steps since the last row, checked for divergence.
    fn read_losses(&self) -> Result<Vec<f32>> {
        let from = self.clock.last_row_step;
        let n = (self.state.step - from) as usize;
        let losses = self.gear.net.read_losses(self.gpu, from, n)?;
        if let Some(i) = losses.iter().position(|v| !v.is_finite()) {
            let kept = if self.ckpt_path.exists() {
                format!(
                    "the last good checkpoint {} is kept",
                    self.ckpt_path.display()
                )
            } else {
                "no checkpoint had been written yet".to_string()
            };
            return Err(Error::new(
                ErrorKind::Diverged,
                format!(
                    "the loss became {} at step {}; stopped ({kept}); try a lower lr",
                    losses[i],
                    from + i as u64 + 1
                ),
            ));
        }
        Ok(losses)
    }

    /// One row of metrics.csv: the mean loss of the steps since the last row.
    fn log_row(&mut self, losses: &[f32]) -> Result<()> {
        let mean = losses.iter().sum::<f32>() / losses.len().max(1) as f32;
        let now = self.clock.now();
        let rate = (losses.len() * self.settings.batch()) as f64
            / (now - self.clock.last_row_time).max(1e-9);
        self.clock.last_train = Some(mean);
        self.clock.last_row_step = self.state.step;
        self.clock.last_row_time = now;
        self.metrics.row(&Row {
            epoch: self.state.epoch,
            step: self.state.step,
            train_loss: Some(mean),
            val_loss: None,
            seconds: self.clock.before + now,
            samples_per_s: rate,
            lr: self.last_lr,
            eval: None,
        })
    }

    /// End of an epoch: validation, early stopping, the grid, checkpoints. Returns why the
    /// stage ends, if it does.
    fn end_of_epoch(&mut self) -> Result<Option<End>> {
        let (gpu, s) = (self.gpu, self.settings);
        let val = net_validation(gpu, &self.gear.val_net)?;
        if !val.is_finite() {
            return Err(Error::new(
                ErrorKind::Diverged,
                format!(
                    "the validation loss became {val} after epoch {}; stopped; try a lower lr",
                    self.state.epoch
                ),
            ));
        }
        let eval = match &self.evaluator {
            Some((sampler, classifier)) if self.state.epoch.is_multiple_of(s.eval_every) => {
                let digits = crate::sample::to_bytes(&sampler.generate(gpu, s.eval_count)?);
                Some(crate::eval::quality(classifier, gpu, &digits)?)
            }
            _ => None,
        };
        let now = self.clock.now();
        let done = (self.state.step - self.clock.first_step) as usize * s.batch();
        self.metrics.row(&Row {
            epoch: self.state.epoch,
            step: self.state.step,
            train_loss: self.clock.last_train,
            val_loss: Some(val),
            seconds: self.clock.before + now,
            samples_per_s: done as f64 / now.max(1e-9),
            lr: self.last_lr,
            eval,
        })?;
        let improved = self.state.end_epoch(val, s.patience, s.epochs);
        if improved {
            self.save("best", &self.best_path.clone())?;
        }
        self.epoch_grid()?;
        self.save_checkpoint()?;
        if self.state.epochs_without_improvement >= s.patience {
            self.metrics.say(&format!(
                "early stopping: no better validation loss for {} epochs; the best weights (epoch {}, val_loss {:.5}) are in {}",
                s.patience,
                self.state.best_epoch.unwrap_or(0),
                self.state.best_val.unwrap_or(f32::NAN),
                self.best_path.display()
            ));
            return Ok(Some(End::EarlyStop));
        }
        Ok(self.state.finished.then_some(End::Epochs))
    }

    /// The per-epoch grid of EMA samples (every sample-every epochs).
    fn epoch_grid(&self) -> Result<()> {
        let Some(sm) = &self.gear.epoch_sampler else {
            return Ok(());
        };
        let epoch = self.state.epoch - 1;
        if !epoch.is_multiple_of(self.settings.sample_every) {
            return Ok(());
        }
        let digits = sm.run(self.gpu, 0)?;
        let (w, h, grey) =
            crate::figures::grid(&digits, EPOCH_GRID, 2, 2, crate::figures::Scale::Data);
        let dir = self.ckpt_path.parent().unwrap_or(Path::new("."));
        let p = dir.join("samples").join(format!("epoch-{epoch}.png"));
        crate::figures::write_png(&p, w, h, &grey)
    }

    /// The last checkpoint (unless this step's is written), the best weights if no epoch
    /// ended, the summary.
    fn finish(mut self, end: End) -> Result<Summary> {
        if self.clock.saved_at != Some(self.state.step) {
            self.save_checkpoint()?;
        }
        if !self.best_path.exists() {
            // No epoch finished yet: the latest weights are the best we have.
            self.save("best", &self.best_path.clone())?;
        }
        if end == End::Budget {
            self.metrics.say(&format!(
                "{}the {:.1}-minute budget ended the run at step {} (checkpoint written)",
                stage_prefix(self.stage.as_deref()),
                self.budget.unwrap_or(0.0) / 60.0,
                self.state.step
            ));
        }
        self.metrics.finish();
        let now = self.clock.now();
        let done = (self.state.step - self.clock.first_step) as usize * self.settings.batch();
        Ok(Summary {
            stage: self.stage.clone(),
            steps: self.state.step,
            epochs: self.state.epoch,
            best_val: self.state.best_val,
            last_train_loss: self.clock.last_train,
            seconds: self.state.seconds,
            samples_per_s: done as f64 / now.max(1e-9),
            end,
            skipped: false,
        })
    }

    /// Writes checkpoint.safetensors.
    fn save_checkpoint(&mut self) -> Result<()> {
        self.state.seconds = self.clock.total();
        self.save("checkpoint", &self.ckpt_path.clone())?;
        self.clock.saved_at = Some(self.state.step);
        Ok(())
    }

    fn save(&self, kind: &str, path: &Path) -> Result<()> {
        let gpu = self.gpu;
        let b = Buffers {
            params: self.gear.params.read(gpu)?,
            ema: Some(self.gear.opt.ema.read(gpu)?),
            adam_m: Some(self.gear.opt.m.read(gpu)?),
            adam_v: Some(self.gear.opt.v.read(gpu)?),
        };
        let meta = serde_json::to_value(Meta {
            kind: kind.into(),
            config: self.config.clone(),
            state: self.state.clone(),
            lr: self.settings.lr as f32,
            level_max: Some(self.settings.level_max()),
            settings: Some(self.settings.clone()),
        })
        .expect("plain fields serialise");
        checkpoint::save(path, &self.layout, &b, &meta)
    }
}

/// What defines the run of settings `s` (a checkpoint resumes only with the same).
fn run_config(s: &TrainSettings, model: ModelConfig, train_images: usize) -> RunConfig {
    RunConfig {
        model,
        alpha: s.alpha as f32,
        n_max: s.n_max,
        batch_images: s.batch_images,
        repeat: s.repeat,
        seed: s.seed,
        train_images,
        val_count: s.val_count,
    }
}

/// eval-every: the cached classifier (trained now if absent) and a sampler of eval-count
/// digits reading the EMA weights.
#[allow(clippy::too_many_arguments)]
fn evaluator(
    gpu: &Gpu,
    args: &TrainArgs,
    s: &TrainSettings,
    model: &ModelConfig,
    layout: &ParamLayout,
    opt: &Optimizer,
    mnist: &Mnist,
    metrics: &mut Metrics<'_>,
) -> Result<Option<(crate::sample::Sampler, crate::eval::classifier::Classifier)>> {
    if s.eval_every == 0 {
        return Ok(None);
    }
    let cached = args.classifier.read_cached()?;
    if cached.is_none() {
        metrics.say(&format!(
            "eval-every: training the classifier once (cached in {})",
            args.classifier.path.display()
        ));
    }
    let (c, _) = args.classifier.cached_or_train(gpu, cached, mnist)?;
    let batch = crate::sample::auto_batch(gpu, model, s.eval_count);
    let sampler = progress_sampler(gpu, (model, layout, &opt.ema), batch, s, EVAL_SAMPLE_SEED)?;
    Ok(Some((sampler, c)))
}

/// The sampler of the per-epoch grid and of eval-every ([`epoch_schedule`]): a
/// class-conditional model draws the digits 0..9 in turn, with the default classifier-free
/// guidance.
fn progress_sampler(
    gpu: &Gpu,
    (cfg, layout, params): (&ModelConfig, &ParamLayout, &GpuTensor),
    batch: usize,
    s: &TrainSettings,
    seed: u64,
) -> Result<crate::sample::Sampler> {
    use crate::settings::sample::{DEFAULT_CFG, DEFAULT_CFG_MIN_LEVEL};
    let classes = cfg.classes.then(|| crate::sample::Classes {
        digits: (0..crate::config::CLASSES).collect(),
        weight: DEFAULT_CFG as f32,
        min_level: DEFAULT_CFG_MIN_LEVEL,
    });
    let m = crate::sample::SamplerModel {
        cfg,
        layout,
        params,
    };
    let schedule = epoch_schedule(s);
    crate::sample::Sampler::conditional(gpu, m, None, &[], classes, batch, schedule, seed)
}

/// The validation network: the first val-count test digits, noised once with a fixed seed
/// (its inputs are made here and never change).
fn validation_net(
    gpu: &Gpu,
    s: &TrainSettings,
    model: &ModelConfig,
    layout: &ParamLayout,
    params: &GpuTensor,
    mnist: &Mnist,
) -> Result<Network> {
    let val_net = Network::new(gpu, model, layout, s.val_count, params, None)?;
    let px = PIXELS as usize;
    let test_data =
        GpuTensor::from_bytes(gpu, "val-images", &mnist.test.pixels[..s.val_count * px])?;
    let ident: Vec<u32> = (0..s.val_count as u32).collect();
    let vperm = GpuTensor::from_slice(gpu, "val-perm", &[s.val_count], &ident)?;
    let noise = NoiseConfig {
        seed: VALIDATION_SEED,
        stream: streams::VALIDATION,
        alpha: s.alpha as f32,
        n_max: s.n_max,
        repeat: 1,
    };
    let labels = &mnist.test_labels[..s.val_count];
    let val_labels = image_labels(gpu, model, "val-labels", labels)?;
    let labels = val_labels.as_ref().map(|l| (l, s.label_dropout));
    let vb = Batcher::new(gpu, noise, (&test_data, &vperm, labels), &val_net)?;
    vb.noise.set_step(gpu, 0, 0);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        vb.record(&mut pass);
    }
    gpu.queue.submit([enc.finish()]);
    gpu.wait()?;
    Ok(val_net)
}

/// A class-conditional model's image labels on the GPU (u32 each); None for an
/// unconditional model.
fn image_labels(
    gpu: &Gpu,
    model: &ModelConfig,
    name: &str,
    labels: &[u8],
) -> Result<Option<GpuTensor>> {
    if !model.classes {
        return Ok(None);
    }
    let l: Vec<u32> = labels.iter().map(|&v| v as u32).collect();
    Ok(Some(GpuTensor::from_slice(gpu, name, &[l.len()], &l)?))
}

/// The schedule of the per-epoch grid and of eval-every: n' = 50, s = 1.5 (the seed's
/// fast setting), deterministic.
fn epoch_schedule(s: &TrainSettings) -> crate::sample::Schedule {
    crate::sample::Schedule::plain(s.alpha as f32, s.n_max, 50.min(s.n_max), 1.5)
}

fn net_validation(gpu: &Gpu, val: &Network) -> Result<f32> {
    val.set_slot(gpu, 0);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        val.record_forward(&mut pass);
        val.record_loss(&mut pass);
    }
    gpu.queue.submit([enc.finish()]);
    Ok(val.read_losses(gpu, 0, 1)?[0])
}
