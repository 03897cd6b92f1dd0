//! The loop of one stage: one command buffer per step, the log every `log-every` steps, the
//! validation loss, grid and checkpoints at each epoch's end, and the stage's clock.

use crate::checkpoint::run::Meta;
use crate::checkpoint::{self, Buffers, RunConfig, RunState};
use crate::data::Mnist;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::Gpu;
use crate::lr_schedule::LrSchedule;
use crate::model::network::LOSS_HISTORY;
use crate::model::ParamLayout;
use crate::settings::recipe::{stage_prefix, Stage};
use crate::settings::train::TrainSettings;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::metrics::{Metrics, Progress, Row};
use super::setup::{evaluator, net_validation, run_config, start_state, Gear};
use super::{epoch_permutation, interrupted, End, Summary, TrainArgs, EPOCH_GRID};

/// The training of one stage: everything on the GPU made once, then [`Trainer::run`].
pub(super) struct Trainer<'a> {
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
    pub(super) fn new(start: Instant, state: &RunState) -> Clock {
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
    pub(super) fn new(
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
    pub(super) fn run(mut self) -> Result<Summary> {
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
