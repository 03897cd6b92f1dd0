//! `wgpu-diffusion train`: the training loop of SPEC §4 on the GPU.
//!
//! One step is one command buffer: noise injection, patches, forward, loss, backward, Adam and
//! the EMA update. Per step the host writes three small uniforms (step counter, image offset,
//! loss slot) and submits; it reads the loss history back only every `--log-every` steps, the
//! validation loss once per epoch, and the weights when it writes a checkpoint.

use crate::checkpoint::{self, Buffers};
use crate::config::{ModelConfig, Skip, PIXELS};
use crate::data::{self, Mnist};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::lr_schedule::LrSchedule;
use crate::model::network::{Network, Optimizer, LOSS_HISTORY};
use crate::model::ParamLayout;
use crate::ops::noise::{NoiseConfig, NoiseInject};
use crate::ops::patches;
use crate::reference::rng::streams;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

mod args;
mod metrics;
mod run_state;

use args::check_args;
pub use args::{model_config, ShapeArgs, TrainArgs};
use metrics::{Metrics, Row};
use run_state::Meta;
pub use run_state::{read_run_config, RunConfig, RunState};

/// Side of the per-epoch sample grid, and its seed (fixed, so epochs compare).
const EPOCH_GRID: usize = 8;
const EPOCH_SAMPLE_SEED: u64 = 0xD161_7500;
/// Seed of the --eval-every samples (fixed, so evaluations compare).
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

/// Seed of the validation noise: fixed, so validation losses compare across epochs and runs.
pub const VALIDATION_SEED: u64 = 0x5EED_0000_0800;

/// The image order of `epoch`: a Fisher-Yates shuffle driven by Philox bits, so it is the same
/// on every machine and can be rebuilt on resume.
pub fn epoch_permutation(seed: u64, epoch: u32, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let bits = crate::reference::rng::bits(seed, epoch, streams::SHUFFLE, i as u32)[0];
        let j = crate::reference::rng::below(bits, i as u32 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Summary of a finished (or stopped) run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u32,
    pub best_val: Option<f32>,
    pub last_train_loss: Option<f32>,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub stopped_early: bool,
}

/// Inputs of one batch: noise injection and the two patch extractions (tokens with the
/// conditioning token; targets without it).
struct Batcher {
    noise: NoiseInject,
    dispatches: Vec<Dispatch>,
    _buffers: Vec<GpuTensor>,
}

impl Batcher {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        model: &ModelConfig,
        cfg: NoiseConfig,
        batch: usize,
        data: &GpuTensor,
        perm: &GpuTensor,
        tokens: &GpuTensor,
        target: &GpuTensor,
    ) -> Result<Batcher> {
        let g = &model.geometry;
        let px = PIXELS as usize;
        let cond = GpuTensor::zeros(gpu, "cond", &[batch])?;
        let noise = GpuTensor::zeros(gpu, "noise", &[batch, px])?;
        let noisy = GpuTensor::zeros(gpu, "noisy", &[batch, px])?;
        let op = NoiseInject::new(gpu, &cfg, batch, data, perm, &cond, &noise, &noisy)?;
        let t = g.tokens() as usize;
        let p = g.patches() as usize;
        let d1 = patches::patches_forward(gpu, g, batch, t, &noisy, &cond, tokens)?;
        let d2 = patches::patches_forward(gpu, g, batch, p, &noise, &cond, target)?;
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

/// Trains on `gpu` as `args` say. Returns a summary, or an error (a NaN loss is an error of
/// kind `Diverged`, after which the last good checkpoint is left in place).
pub fn run(gpu: &Gpu, args: &TrainArgs) -> Result<Summary> {
    check_args(args)?;
    let model = model_config(args)?;
    let ckpt_path = args.out.join("checkpoint.safetensors");
    let best_path = args.out.join("best.safetensors");
    if !args.resume && ckpt_path.exists() {
        return Err(Error::config(format!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            args.out.display()
        )));
    }
    crate::model::network::check_fits(gpu, &model, (args.batch_images * args.repeat) as usize)?;
    crate::model::network::check_fits(gpu, &model, args.val_count)?;
    // A broken classifier file fails now, before anything is written.
    let cached_classifier = if args.eval_every > 0 {
        args.classifier.read_cached()?
    } else {
        None
    };
    let mnist: Mnist = data::load(args.data.as_deref())?;
    let train_images = args.train_subset.unwrap_or(mnist.train.count);
    let config = RunConfig {
        model,
        alpha: args.alpha,
        n_max: args.n_max,
        batch_images: args.batch_images,
        repeat: args.repeat,
        seed: args.seed,
        train_images,
        val_count: args.val_count,
    };
    let layout = ParamLayout::new(&model);
    let level_max = args.level_max.unwrap_or(args.n_max);

    // Starting point: a fresh model, or the checkpoint.
    let (mut state, buffers, resume_note) = if args.resume {
        run_state::resume(&ckpt_path, &config, &layout, args.lr, level_max)?
    } else {
        let mut params = layout.init(args.seed);
        if model.skip == Skip::PixelMixture {
            // The skip's per-position prior, from the digits this run trains on.
            let pixels = &mnist.train.pixels[..train_images * PIXELS as usize];
            let prior = crate::reference::skip::pixel_prior(&model.geometry, pixels);
            params[layout.get("skip.prior").range()].copy_from_slice(&prior);
        }
        let buffers = Buffers {
            ema: Some(params.clone()),
            adam_m: Some(vec![0.0; layout.total]),
            adam_v: Some(vec![0.0; layout.total]),
            params,
        };
        (RunState::default(), buffers, String::new())
    };
    if state.finished {
        return Err(Error::config(format!(
            "the run in {} has finished (early stopping or all epochs); start a new --out",
            args.out.display()
        )));
    }

    // Everything that lives on the GPU, made once.
    let batch = (args.batch_images * args.repeat) as usize;
    let n_train = train_images;
    let steps_per_epoch = (n_train / args.batch_images as usize) as u64;
    let train_data = GpuTensor::from_bytes(
        gpu,
        "train-images",
        &mnist.train.pixels[..n_train * PIXELS as usize],
    )?;
    let perm = GpuTensor::zeros(gpu, "perm", &[n_train])?;
    let params = GpuTensor::from_slice(gpu, "params", &[layout.total], &buffers.params)?;
    let opt = Optimizer::new(
        gpu,
        &layout,
        &params,
        buffers.adam_m.as_ref().unwrap(),
        buffers.adam_v.as_ref().unwrap(),
        buffers.ema.as_ref().unwrap(),
        args.lr,
        args.ema,
    )?;
    let net = Network::new(gpu, &model, &layout, batch, &params, Some(&opt.grads))?;
    let batcher = Batcher::new(
        gpu,
        &model,
        NoiseConfig {
            seed: args.seed,
            stream: streams::TRAIN,
            alpha: args.alpha,
            n_max: level_max,
            repeat: args.repeat,
        },
        batch,
        &train_data,
        &perm,
        &net.tokens,
        &net.target,
    )?;

    let val_net = validation_net(gpu, args, &model, &layout, &params, &mnist)?;

    // The per-epoch picture: the same sampler as `sample`, reading the EMA weights.
    let epoch_sampler = if args.sample_every > 0 {
        Some(crate::sample::Sampler::new(
            gpu,
            &model,
            &layout,
            &opt.ema,
            EPOCH_GRID * EPOCH_GRID,
            epoch_schedule(args),
            EPOCH_SAMPLE_SEED,
        )?)
    } else {
        None
    };

    let max_steps = args
        .max_steps
        .unwrap_or(u64::MAX)
        .min(steps_per_epoch * args.epochs as u64);
    let lr = LrSchedule::new(
        args.lr,
        args.warmup,
        args.decay_steps,
        args.lr_min.unwrap_or(args.lr / 10.0),
        max_steps,
    )?;
    std::fs::create_dir_all(&args.out).map_err(crate::error::io_err(
        ErrorKind::Io,
        "cannot create",
        &args.out,
    ))?;
    let mut metrics = Metrics::open(&args.out, args.resume, args.json, max_steps, state.step)?;
    metrics.say(&format!(
        "training {} weights ({model}) on {}: {} samples per step, {} steps per epoch, levels 0..={}, {}{}",
        model.parameter_count(),
        gpu.describe(),
        batch,
        steps_per_epoch,
        level_max,
        lr,
        if args.resume {
            format!(", resuming at step {}{resume_note}", state.step)
        } else {
            String::new()
        }
    ));

    // --eval-every: the cached classifier (trained now if absent) and a sampler of
    // --eval-count digits reading the EMA weights.
    let evaluator = if args.eval_every > 0 {
        if cached_classifier.is_none() {
            metrics.say(&format!(
                "--eval-every: training the classifier once (cached in {})",
                args.classifier.path.display()
            ));
        }
        let (c, _) = args
            .classifier
            .cached_or_train(gpu, cached_classifier, &mnist)?;
        let sampler = crate::sample::Sampler::new(
            gpu,
            &model,
            &layout,
            &opt.ema,
            crate::sample::auto_batch(gpu, &model, args.eval_count),
            epoch_schedule(args),
            EVAL_SAMPLE_SEED,
        )?;
        Some((sampler, c))
    } else {
        None
    };

    let save = |state: &RunState, kind: &str, path: &Path| -> Result<()> {
        let b = Buffers {
            params: params.read(gpu)?,
            ema: Some(opt.ema.read(gpu)?),
            adam_m: Some(opt.m.read(gpu)?),
            adam_v: Some(opt.v.read(gpu)?),
        };
        let meta = serde_json::to_value(Meta {
            kind: kind.into(),
            config: config.clone(),
            state: state.clone(),
            lr: args.lr,
            level_max: Some(level_max),
        })
        .unwrap();
        checkpoint::save(path, &layout, &b, &meta)
    };

    let start = Instant::now();
    let seconds0 = state.seconds;
    let first_step = state.step;
    let mut last_row_step = state.step;
    let mut last_row_time = 0.0f64;
    let mut last_train: Option<f32> = None;
    let mut stopped_early = false;
    let mut perm_epoch = u32::MAX;
    let mut in_flight: std::collections::VecDeque<wgpu::SubmissionIndex> = Default::default();

    'epochs: while state.epoch < args.epochs && state.step < max_steps {
        if perm_epoch != state.epoch {
            perm.write(gpu, &epoch_permutation(args.seed, state.epoch, n_train));
            perm_epoch = state.epoch;
        }
        while state.epoch_step < steps_per_epoch && state.step < max_steps {
            let step = state.step;
            batcher.noise.set_step(
                gpu,
                step as u32,
                (state.epoch_step * args.batch_images as u64) as u32,
            );
            net.set_slot(gpu, (step % LOSS_HISTORY as u64) as u32);
            opt.set_step(gpu, step + 1, lr.at(step));
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
                batcher.record(&mut pass);
                net.record_forward(&mut pass);
                net.record_loss(&mut pass);
                net.record_backward(&mut pass);
                opt.record(&mut pass);
            }
            in_flight.push_back(gpu.queue.submit([enc.finish()]));
            // Keep at most two steps queued: bounded memory, no stall of the GPU.
            if in_flight.len() > 2 {
                let idx = in_flight.pop_front().unwrap();
                gpu.device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(idx),
                        timeout: None,
                    })
                    .map_err(|e| Error::gpu(format!("waiting for the GPU failed: {e}")))?;
            }
            state.step += 1;
            state.epoch_step += 1;

            let end_of_epoch = state.epoch_step == steps_per_epoch;
            let interrupted = INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
            let want_row =
                state.step % args.log_every == 0 || state.step == max_steps || interrupted;
            let want_ckpt = state.step % args.checkpoint_every == 0;
            if want_row || want_ckpt || end_of_epoch {
                // Read the losses since the last row: a divergence is caught before any
                // checkpoint could be overwritten with broken weights.
                let n = (state.step - last_row_step) as usize;
                let losses = net.read_losses(gpu, last_row_step, n)?;
                if let Some(i) = losses.iter().position(|v| !v.is_finite()) {
                    let bad = last_row_step + i as u64 + 1;
                    let kept = if ckpt_path.exists() {
                        format!("the last good checkpoint {} is kept", ckpt_path.display())
                    } else {
                        "no checkpoint had been written yet".to_string()
                    };
                    return Err(Error::new(
                        ErrorKind::Diverged,
                        format!(
                            "the loss became {} at step {bad}; stopped ({kept}); try a lower --lr",
                            losses[i]
                        ),
                    ));
                }
                if want_row {
                    let mean = losses.iter().sum::<f32>() / losses.len().max(1) as f32;
                    last_train = Some(mean);
                    let now = start.elapsed().as_secs_f64();
                    let rate = (n * batch) as f64 / (now - last_row_time).max(1e-9);
                    metrics.row(&Row {
                        epoch: state.epoch,
                        step: state.step,
                        train_loss: Some(mean),
                        val_loss: None,
                        seconds: seconds0 + now,
                        samples_per_s: rate,
                        lr: lr.at(state.step - 1),
                        eval: None,
                    })?;
                    last_row_step = state.step;
                    last_row_time = now;
                }
            }
            if state.step % args.checkpoint_every == 0 || interrupted {
                state.seconds = seconds0 + start.elapsed().as_secs_f64();
                save(&state, "checkpoint", &ckpt_path)?;
            }
            if interrupted {
                metrics.finish();
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    format!(
                        "interrupted after step {}: checkpoint written to {}; continue with --resume",
                        state.step,
                        ckpt_path.display()
                    ),
                ));
            }
        }
        if state.epoch_step < steps_per_epoch {
            break 'epochs; // --max-steps reached mid-epoch
        }
        // End of epoch: validation, early stopping, checkpoints.
        let val = net_validation(gpu, &val_net)?;
        if !val.is_finite() {
            return Err(Error::new(
                ErrorKind::Diverged,
                format!(
                    "the validation loss became {val} after epoch {}; stopped; try a lower --lr",
                    state.epoch
                ),
            ));
        }
        let eval = match &evaluator {
            Some((sampler, classifier)) if state.epoch % args.eval_every == 0 => {
                let digits = crate::sample::to_bytes(&sampler.generate(gpu, args.eval_count)?);
                Some(crate::eval::quality(classifier, gpu, &digits)?)
            }
            _ => None,
        };
        let now = start.elapsed().as_secs_f64();
        metrics.row(&Row {
            epoch: state.epoch,
            step: state.step,
            train_loss: last_train,
            val_loss: Some(val),
            seconds: seconds0 + now,
            samples_per_s: ((state.step - first_step) as usize * batch) as f64 / now.max(1e-9),
            lr: lr.at(state.step - 1),
            eval,
        })?;
        let improved = state.end_epoch(val, args.patience, args.epochs);
        stopped_early = state.epochs_without_improvement >= args.patience;
        state.seconds = seconds0 + now;
        if improved {
            save(&state, "best", &best_path)?;
        }
        if let Some(sm) = &epoch_sampler {
            if (state.epoch - 1) % args.sample_every == 0 {
                let digits = sm.run(gpu, 0)?;
                let (w, h, grey) =
                    crate::figures::grid(&digits, EPOCH_GRID, 2, 2, crate::figures::Scale::Data);
                let p = args
                    .out
                    .join("samples")
                    .join(format!("epoch-{}.png", state.epoch - 1));
                crate::figures::write_png(&p, w, h, &grey)?;
            }
        }
        save(&state, "checkpoint", &ckpt_path)?;
        if stopped_early {
            metrics.say(&format!(
                "early stopping: no better validation loss for {} epochs; the best weights (epoch {}, val_loss {:.5}) are in {}",
                args.patience,
                state.best_epoch.unwrap_or(0),
                state.best_val.unwrap_or(f32::NAN),
                best_path.display()
            ));
            break 'epochs;
        }
    }
    if !state.finished || state.step % args.checkpoint_every != 0 {
        state.seconds = seconds0 + start.elapsed().as_secs_f64();
        save(&state, "checkpoint", &ckpt_path)?;
    }
    if !best_path.exists() {
        // No epoch finished yet: the latest weights are the best we have.
        save(&state, "best", &best_path)?;
    }
    metrics.finish();
    let secs = start.elapsed().as_secs_f64();
    Ok(Summary {
        steps: state.step,
        epochs: state.epoch,
        best_val: state.best_val,
        last_train_loss: last_train,
        seconds: state.seconds,
        samples_per_s: ((state.step - first_step) as usize * batch) as f64 / secs.max(1e-9),
        stopped_early,
    })
}

/// The validation network: the first val_count test digits, noised once with a fixed seed
/// (its inputs are made here and never change).
fn validation_net(
    gpu: &Gpu,
    args: &TrainArgs,
    model: &ModelConfig,
    layout: &ParamLayout,
    params: &GpuTensor,
    mnist: &Mnist,
) -> Result<Network> {
    let val_net = Network::new(gpu, model, layout, args.val_count, params, None)?;
    let px = PIXELS as usize;
    let test_data =
        GpuTensor::from_bytes(gpu, "val-images", &mnist.test.pixels[..args.val_count * px])?;
    let ident: Vec<u32> = (0..args.val_count as u32).collect();
    let vperm = GpuTensor::from_slice(gpu, "val-perm", &[args.val_count], &ident)?;
    let vb = Batcher::new(
        gpu,
        model,
        NoiseConfig {
            seed: VALIDATION_SEED,
            stream: streams::VALIDATION,
            alpha: args.alpha,
            n_max: args.n_max,
            repeat: 1,
        },
        args.val_count,
        &test_data,
        &vperm,
        &val_net.tokens,
        &val_net.target,
    )?;
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

/// The schedule of the per-epoch grid and of --eval-every: n' = 50, s = 1.5 (the seed's
/// fast setting), deterministic.
fn epoch_schedule(args: &TrainArgs) -> crate::sample::Schedule {
    crate::sample::Schedule::plain(args.alpha, args.n_max, 50.min(args.n_max), 1.5)
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
