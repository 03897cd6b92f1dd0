//! The flags of `train` and their checks.

use crate::config::{Geometry, ModelConfig, Preset};
use crate::data;
use crate::error::{Error, Result};
use crate::model::network::LOSS_HISTORY;
use std::path::PathBuf;

/// The model-shape flags that override single values of a preset (shared by `train` and
/// `cargo bench --bench train_step`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ShapeArgs {
    /// Patch size P (pixels per patch step).
    #[arg(long)]
    pub patch: Option<u32>,
    /// Overlap O (pixels each patch reaches into its neighbours).
    #[arg(long)]
    pub overlap: Option<u32>,
    /// Attention layers L.
    #[arg(long)]
    pub layers: Option<u32>,
    /// Heads H per layer.
    #[arg(long)]
    pub heads: Option<u32>,
    /// Key width K per head.
    #[arg(long)]
    pub key_dim: Option<u32>,
    /// Hidden width F of a feed-forward block (GELU) after each attention layer; 0 = none, as
    /// in the seed (our addition: it gives the small models the non-linearity they lack).
    #[arg(long)]
    pub mlp: Option<u32>,
    /// The output's skip term: `identity` (the seed: the noisy patch passes as it is),
    /// `wiener` (our addition: the best linear noise estimate for the level, plus the
    /// network's part scaled by what that estimate misses, as EDM preconditions), `mixture`
    /// (as `wiener`, with the posterior of a background-or-ink prior of each pixel) or
    /// `pixel-mixture` (with a prior per pixel position, computed from the training digits).
    #[arg(long, value_enum)]
    pub skip: Option<crate::config::Skip>,
}

impl ShapeArgs {
    /// `base` with the flags given applied, and the loss weight cap `loss_weight_max`;
    /// validated.
    pub fn apply(&self, base: ModelConfig, loss_weight_max: u32) -> Result<ModelConfig> {
        let geometry = Geometry::new(
            self.patch.unwrap_or(base.geometry.patch),
            self.overlap.unwrap_or(base.geometry.overlap),
        )?;
        let m = ModelConfig {
            geometry,
            layers: self.layers.unwrap_or(base.layers),
            heads: self.heads.unwrap_or(base.heads),
            key_dim: self.key_dim.unwrap_or(base.key_dim),
            mlp: self.mlp.unwrap_or(base.mlp),
            skip: self.skip.unwrap_or(base.skip),
            loss_weight_max,
        };
        m.validate()?;
        Ok(m)
    }
}

/// Flags of `train` (defaults are the seed's settings).
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Model preset; the flags below override single values of it.
    #[arg(long, value_enum, default_value_t = Preset::Seed)]
    pub preset: Preset,
    /// The model's shape: each flag overrides one value of the preset.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Cap W of the loss weight (our addition; default 1, the seed's plain mean): a sample at
    /// noise level a^n weighs min(1/q^2, W), q the Wiener skip's residual scale there, as EDM
    /// weighs its loss by 1/c_out^2: with a skip term the network's own part reaches the
    /// output scaled by q, so without the weight the mid and high levels, where a digit's shape
    /// is decided, give it almost no gradient (q^2 = 0.18 at n = 50, 0.03 at n = 100).
    /// Like the rate, it may change on --resume.
    #[arg(long, default_value_t = 1)]
    pub loss_weight_max: u32,
    /// Noising factor a of `A_n = a^n x + (1 - a^n) N`, in (0, 1).
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true)]
    pub alpha: f32,
    /// Largest noise level n drawn in training (uniform over 0..=n-max).
    #[arg(long, default_value_t = 500)]
    pub n_max: u32,
    /// Largest level drawn for the training batches (default: --n-max), our addition: with
    /// a = 0.99 the levels past ~200 are nearly pure noise (a^n < 0.14), where `--skip wiener`'s
    /// linear estimate is already almost exact, so drawing them spends steps on little. The
    /// validation set and the sampler keep 0..=n-max.
    #[arg(long)]
    pub level_max: Option<u32>,
    /// Distinct images per batch.
    #[arg(long, default_value_t = 5)]
    pub batch_images: u32,
    /// Copies of each image per batch, each with its own noise and level.
    #[arg(long, default_value_t = 100)]
    pub repeat: u32,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f32,
    /// Steps of linear learning-rate warm-up from 0 (0 = none, as in the seed).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Steps of cosine learning-rate decay from --lr to --lr-min at the end of the run (its
    /// length is --max-steps, else --epochs times the steps per epoch); 0 = a constant rate,
    /// as in the seed. A constant-rate run can be finished with a decay: resume it with a
    /// larger --max-steps and --decay-steps.
    #[arg(long, default_value_t = 0)]
    pub decay_steps: u64,
    /// The rate --decay-steps ends at (default: --lr / 10).
    #[arg(long)]
    pub lr_min: Option<f32>,
    /// Most epochs.
    #[arg(long, default_value_t = 200)]
    pub epochs: u32,
    /// Epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 5)]
    pub patience: u32,
    /// Stop after this many steps in total (counting steps before a --resume).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Test digits in the validation set (noised once, with a fixed seed).
    #[arg(long, default_value_t = 800)]
    pub val_count: usize,
    /// Decay of the exponential moving average of the weights, in [0, 1); step t uses
    /// min(decay, (1 + t) / (10 + t)), so the average forgets the initial weights quickly.
    #[arg(long, default_value_t = 0.999)]
    pub ema: f32,
    /// Seed of initialisation, shuffling and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder with the MNIST files (else $MNIST_DIR, else ./data/mnist, downloaded if absent).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Output folder: checkpoint.safetensors, best.safetensors, metrics.csv.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print one JSON object per logged row instead of text.
    #[arg(long)]
    pub json: bool,
    /// Steps between logged rows (the only loss readbacks).
    #[arg(long, default_value_t = 50)]
    pub log_every: u64,
    /// Steps between checkpoints (also written at every epoch end and at the end).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: u64,
    /// Write an 8x8 grid of digits sampled with the EMA weights (fixed seed, 50 steps, scale
    /// 1.5) to OUT/samples/epoch-E.png every this many epochs; 0 turns it off.
    #[arg(long, default_value_t = 1)]
    pub sample_every: u32,
    /// Every this many epochs, sample --eval-count digits with the EMA weights (fixed seed, 50
    /// steps, scale 1.5) and write their FID, confidence and label entropy in the classifier's
    /// features (as `eval` reports them) to metrics.csv; 0 turns it off.
    #[arg(long, default_value_t = 0)]
    pub eval_every: u32,
    /// Digits sampled for each --eval-every evaluation (FID is biased at small n: metrics.csv
    /// names n in its eval_n column).
    #[arg(long, default_value_t = 2000)]
    pub eval_count: u64,
    /// The classifier of --eval-every (trained once and cached there when absent, as `eval`
    /// does).
    #[command(flatten)]
    pub classifier: crate::eval::classifier::ClassifierArgs,
}

/// The model configuration the flags ask for.
pub fn model_config(a: &TrainArgs) -> Result<ModelConfig> {
    a.shape.apply(a.preset.model(), a.loss_weight_max)
}

pub(super) fn check_args(a: &TrainArgs) -> Result<()> {
    let bad = |m: String| Err(Error::config(m));
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        return bad(format!("--alpha must be in (0, 1), got {}", a.alpha));
    }
    if a.n_max == 0 {
        return bad("--n-max must be at least 1".into());
    }
    if let Some(m) = a.level_max.filter(|m| *m > a.n_max) {
        return bad(format!(
            "--level-max must be at most --n-max ({}), got {m}",
            a.n_max
        ));
    }
    if a.batch_images == 0 || a.repeat == 0 {
        return bad("--batch-images and --repeat must be at least 1".into());
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return bad(format!("--lr must be positive, got {}", a.lr));
    }
    if !(0.0..1.0).contains(&a.ema) {
        return bad(format!("--ema must be in [0, 1), got {}", a.ema));
    }
    if a.val_count == 0 || a.val_count > data::TEST_COUNT {
        return bad(format!(
            "--val-count must be in 1..={}, got {}",
            data::TEST_COUNT,
            a.val_count
        ));
    }
    if a.log_every == 0 || a.log_every > LOSS_HISTORY as u64 {
        return bad(format!(
            "--log-every must be in 1..={LOSS_HISTORY}, got {}",
            a.log_every
        ));
    }
    if a.checkpoint_every == 0 {
        return bad("--checkpoint-every must be at least 1".into());
    }
    if a.epochs == 0 {
        return bad("--epochs must be at least 1".into());
    }
    if a.eval_every > 0 && a.eval_count == 0 {
        return bad("--eval-count must be at least 1 with --eval-every".into());
    }
    if let Some(n) = a.train_subset {
        if n == 0 || n > data::TRAIN_COUNT {
            return bad(format!(
                "--train-subset must be in 1..={}, got {n}",
                data::TRAIN_COUNT
            ));
        }
        if n < a.batch_images as usize {
            return bad(format!(
                "--train-subset {n} is smaller than one batch of {} images",
                a.batch_images
            ));
        }
    }
    Ok(())
}
