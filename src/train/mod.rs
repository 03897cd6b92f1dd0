//! `wgpu-diffusion train`: the training of docs/model.md §4 on the GPU, for each stage of a
//! recipe in turn.
//!
//! One step is one command buffer: noise injection, patches, forward, loss, backward, Adam and
//! the EMA update. Per step the host writes three small uniforms (step counter, image offset,
//! loss slot) and submits; it reads the loss history back only every `log-every` steps, the
//! validation loss once per epoch, and the weights when it writes a checkpoint.
//!
//! This module runs the stages (resume checks, budgets carried from stage to stage, the
//! summary lines); [`setup`] makes a stage's GPU side once; [`trainer`] runs its loop;
//! [`metrics`] writes the log and the progress bar.

use crate::checkpoint::run::{read_state, Meta};
use crate::checkpoint::{self};
use crate::data::{self, Mnist};
use crate::error::{ErrorKind, Result};
use crate::gpu::Gpu;
use crate::math::rng::streams;
use crate::settings::recipe::{stage_prefix, Preset, Recipe, Source, Stage, CONFIG_FILE};
use serde::Serialize;
use std::path::{Path, PathBuf};

mod args;
mod metrics;
mod run_state;
mod setup;
mod trainer;

pub use crate::checkpoint::read_run_config;
pub use args::TrainArgs;
use metrics::Progress;
use setup::run_config;
use trainer::Trainer;

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
