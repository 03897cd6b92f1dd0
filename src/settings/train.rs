//! Every setting of a training run, declared once ([`crate::options!`]): the TOML keys of the
//! preset files and of `train --config FILE`, the flags of `train`, the settings a checkpoint
//! records. The values of `presets/seed.toml` are the defaults.

use crate::config::{Geometry, ModelConfig, Skip};
use crate::data;
use crate::error::{Error, Result};
use crate::lr_schedule::{LrSchedule, RunLength};
use crate::model::network::LOSS_HISTORY;

crate::settings::options! {
    /// The settings of one training run (one stage of a recipe).
    pub struct TrainSettings / TrainFlags {
        /// Patch size P (pixels per patch step).
        patch: req u32,
        /// Overlap O (pixels each patch reaches into its neighbours).
        overlap: req u32,
        /// Attention layers L.
        layers: req u32,
        /// Heads H per layer.
        heads: req u32,
        /// Key width K per head.
        key_dim: req u32,
        /// Hidden width F of a feed-forward block (GELU) after each attention layer; 0 = none,
        /// as in the seed.
        mlp: req u32,
        /// The output's skip term: `identity` (the seed: the noisy patch passes as it is),
        /// `wiener` (the best linear noise estimate for the level, plus the network's part
        /// scaled by what that estimate misses, as EDM preconditions), `mixture` (the
        /// posterior of a background-or-ink prior of each pixel) or `pixel-mixture` (with a
        /// prior per pixel position, computed from the training digits).
        #[arg(value_enum)]
        skip: req Skip,
        /// Cap W of the loss weight: a sample at noise level a^n weighs min(1/q^2, W), q the
        /// Wiener skip's residual scale there, as EDM weighs its loss by 1/c_out^2 (1: the
        /// seed's plain mean). Like the rate, it may change on --resume.
        loss_weight_max: req u32,
        /// Class-conditional: the digit's label enters the network (a learned embedding
        /// added to the conditioning token), so `sample --digit D` can ask for a digit.
        #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        classes: req bool,
        /// With classes: the probability that a training sample's label is replaced by "no
        /// label" (drawn on the GPU), which teaches the unconditional model that
        /// classifier-free guidance needs; in [0, 1).
        label_dropout: req f64,
        /// Noising factor a of `A_n = a^n x + (1 - a^n) N`, in (0, 1).
        alpha: req f64,
        /// Largest noise level n of the model (validation and sampling use 0..=n-max).
        n_max: req u32,
        /// Largest level drawn for the training batches (default: n-max): with a = 0.99 the
        /// levels past ~200 are nearly pure noise, where the wiener skip is already almost
        /// exact. It may change on --resume.
        level_max: opt u32,
        /// Distinct images per batch.
        batch_images: req u32,
        /// Copies of each image per batch, each with its own noise and level.
        repeat: req u32,
        /// Adam learning rate.
        lr: req f64,
        /// Steps of linear learning-rate warm-up from 0 (0 = none).
        warmup: req u64,
        /// Steps of cosine decay from lr to lr-min at the end of a run of known steps
        /// (max-steps, else epochs times the steps per epoch); 0 = none.
        decay_steps: req u64,
        /// Share of the run, at its end, over which the rate decays to lr-min by a cosine: of
        /// its minutes when `minutes` is set, else of its steps; 0 = none.
        decay_fraction: req f64,
        /// The rate the decay ends at (default: lr / 10).
        lr_min: opt f64,
        /// Decay of the exponential moving average of the weights, in [0, 1); step t uses
        /// min(decay, (1 + t) / (10 + t)).
        ema: req f64,
        /// Most epochs.
        epochs: req u32,
        /// Epochs without a better validation loss before stopping.
        patience: req u32,
        /// Stop after this many steps in total (counting steps before a --resume).
        max_steps: opt u64,
        /// A wall-clock budget in minutes: the step in flight finishes, the checkpoint is
        /// written and the run ends. A staged recipe splits it among its stages by their share.
        minutes: opt f64,
        /// Train on the first N training images only.
        train_subset: opt usize,
        /// Test digits in the validation set (noised once, with a fixed seed).
        val_count: req usize,
        /// Seed of initialisation, shuffling and noise.
        seed: req u64,
        /// Steps between logged rows (the only loss readbacks).
        log_every: req u64,
        /// Steps between checkpoints (also written at every epoch end and at the end).
        checkpoint_every: req u64,
        /// Write an 8x8 grid of EMA samples to OUT/samples/epoch-E.png every this many epochs
        /// (0: off).
        sample_every: req u32,
        /// Every this many epochs, the FID, confidence and label entropy of eval-count EMA
        /// samples in metrics.csv (0: off).
        eval_every: req u32,
        /// Digits sampled for each eval-every evaluation.
        eval_count: req u64,
    }
}

impl TrainSettings {
    /// The model these settings train.
    pub fn model(&self) -> Result<ModelConfig> {
        let m = ModelConfig {
            geometry: Geometry::new(self.patch, self.overlap)?,
            layers: self.layers,
            heads: self.heads,
            key_dim: self.key_dim,
            mlp: self.mlp,
            skip: self.skip,
            loss_weight_max: self.loss_weight_max,
            classes: self.classes,
        };
        m.validate()?;
        Ok(m)
    }

    /// The upper end of the training levels.
    pub fn level_max(&self) -> u32 {
        self.level_max.unwrap_or(self.n_max)
    }

    /// Samples per step.
    pub fn batch(&self) -> usize {
        (self.batch_images * self.repeat) as usize
    }

    /// Steps per epoch over `train_images` digits.
    pub fn steps_per_epoch(&self, train_images: usize) -> u64 {
        (train_images / self.batch_images as usize) as u64
    }

    /// The most steps the run can take over `train_images` digits (max-steps, else all
    /// epochs).
    pub fn step_limit(&self, train_images: usize) -> u64 {
        let epochs = self.steps_per_epoch(train_images) * self.epochs as u64;
        self.max_steps.unwrap_or(u64::MAX).min(epochs)
    }

    /// The wall-clock budget in seconds, if any.
    pub fn budget_seconds(&self) -> Option<f64> {
        self.minutes.map(|m| m * 60.0)
    }

    /// The learning-rate schedule over a run of `steps` steps (see [`Self::step_limit`]) or,
    /// with a budget, of `budget` seconds.
    pub fn lr_schedule(&self, steps: u64, budget: Option<f64>) -> Result<LrSchedule> {
        let length = match budget {
            Some(s) => RunLength::Seconds(s),
            None => RunLength::Steps(steps),
        };
        LrSchedule::new(
            self.lr as f32,
            self.warmup,
            self.decay_steps,
            self.decay_fraction,
            self.lr_min.unwrap_or(self.lr / 10.0) as f32,
            length,
        )
    }

    /// Checks every value on its own and against the others (the model's shape, ranges, the
    /// schedule), before any data is loaded. Errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.model()?;
        let bad = |m: String| Err(Error::config(m));
        if !(0.0..1.0).contains(&self.label_dropout) {
            return bad(format!(
                "label-dropout must be in [0, 1), got {}",
                self.label_dropout
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad(format!("alpha must be in (0, 1), got {}", self.alpha));
        }
        if self.n_max == 0 {
            return bad("n-max must be at least 1".into());
        }
        if let Some(m) = self.level_max.filter(|m| *m > self.n_max) {
            return bad(format!(
                "level-max must be at most n-max ({}), got {m}",
                self.n_max
            ));
        }
        if self.batch_images == 0 || self.repeat == 0 {
            return bad("batch-images and repeat must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.ema) {
            return bad(format!("ema must be in [0, 1), got {}", self.ema));
        }
        if self.val_count == 0 || self.val_count > data::TEST_COUNT {
            return bad(format!(
                "val-count must be in 1..={}, got {}",
                data::TEST_COUNT,
                self.val_count
            ));
        }
        if self.log_every == 0 || self.log_every > LOSS_HISTORY as u64 {
            return bad(format!(
                "log-every must be in 1..={LOSS_HISTORY}, got {}",
                self.log_every
            ));
        }
        for (key, v) in [
            ("checkpoint-every", self.checkpoint_every),
            ("epochs", self.epochs as u64),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if self.eval_every > 0 && self.eval_count == 0 {
            return bad("eval-count must be at least 1 with eval-every".into());
        }
        if let Some(m) = self.minutes.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return bad(format!("minutes must be a positive number, got {m}"));
        }
        if let Some(n) = self.train_subset {
            if n == 0 || n > data::TRAIN_COUNT {
                return bad(format!(
                    "train-subset must be in 1..={}, got {n}",
                    data::TRAIN_COUNT
                ));
            }
            if n < self.batch_images as usize {
                return bad(format!(
                    "train-subset {n} is smaller than one batch of {} images",
                    self.batch_images
                ));
            }
        }
        let images = self.train_subset.unwrap_or(data::TRAIN_COUNT);
        self.lr_schedule(self.step_limit(images), self.budget_seconds())?;
        Ok(())
    }
}
