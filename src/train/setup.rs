//! The GPU side of a stage, made once before its loop: the batches (noise injection and
//! patches), the weights and optimizer with the training and validation networks, the state
//! a stage starts from, and the samplers of the per-epoch grid and of eval-every.

use crate::checkpoint::{Buffers, RunConfig, RunState};
use crate::config::{ModelConfig, Skip, PIXELS};
use crate::data::Mnist;
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::math::rng::streams;
use crate::model::network::{Network, Optimizer};
use crate::model::ParamLayout;
use crate::ops::noise::{LabelDropout, NoiseConfig, NoiseInject};
use crate::ops::patches;
use crate::settings::train::TrainSettings;
use std::path::Path;

use super::metrics::Metrics;
use super::{
    run_state, TrainArgs, EPOCH_GRID, EPOCH_SAMPLE_SEED, EVAL_SAMPLE_SEED, VALIDATION_SEED,
};

/// Inputs of one batch: noise injection and the two patch extractions (tokens with the
/// conditioning token; targets without it).
pub(super) struct Batcher {
    pub(super) noise: NoiseInject,
    pub(super) dispatches: Vec<Dispatch>,
    pub(super) _buffers: Vec<GpuTensor>,
}

impl Batcher {
    /// `images`: the images (bytes), their order and, for a class-conditional network, their
    /// labels (u32) with the label dropout.
    pub(super) fn new(
        gpu: &Gpu,
        config: NoiseConfig,
        images: (&GpuTensor, &GpuTensor, Option<(&GpuTensor, f64)>),
        net: &Network,
    ) -> Result<Batcher> {
        let (data, perm, image_labels) = images;
        let (g, batch) = (&net.config.geometry, net.batch);
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
                NoiseInject::labelled(gpu, &config, batch, data, perm, ld, &cond, &noise, &noisy)?
            }
            _ => NoiseInject::new(gpu, &config, batch, data, perm, &cond, &noise, &noisy)?,
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

    pub(super) fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.noise.dispatch.record(pass);
        for d in &self.dispatches {
            d.record(pass);
        }
    }
}

/// Where a stage starts: its state and buffers (fresh, or from its checkpoint), and a note for
/// the log when a resume changes the rate, the levels or the loss weight.
pub(super) fn start_state(
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

/// The GPU side of a stage, made once: the weights and their optimizer, the training and
/// validation networks, the batches, and the per-epoch sampler.
pub(super) struct Gear {
    pub(super) params: GpuTensor,
    pub(super) opt: Optimizer,
    pub(super) net: Network,
    pub(super) batcher: Batcher,
    pub(super) perm: GpuTensor,
    pub(super) _train_data: (GpuTensor, Option<GpuTensor>),
    pub(super) val_net: Network,
    pub(super) epoch_sampler: Option<crate::sample::Sampler>,
}

impl Gear {
    pub(super) fn new(
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

/// What defines the run of settings `s` (a checkpoint resumes only with the same).
pub(super) fn run_config(s: &TrainSettings, model: ModelConfig, train_images: usize) -> RunConfig {
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
pub(super) fn evaluator(
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
pub(super) fn progress_sampler(
    gpu: &Gpu,
    (config, layout, params): (&ModelConfig, &ParamLayout, &GpuTensor),
    batch: usize,
    s: &TrainSettings,
    seed: u64,
) -> Result<crate::sample::Sampler> {
    use crate::settings::sample::{DEFAULT_CFG, DEFAULT_CFG_MIN_LEVEL};
    let classes = config.classes.then(|| crate::sample::Classes {
        digits: (0..crate::config::CLASSES).collect(),
        cfg: DEFAULT_CFG as f32,
        min_level: DEFAULT_CFG_MIN_LEVEL,
    });
    let m = crate::sample::SamplerModel {
        config,
        layout,
        params,
    };
    let schedule = epoch_schedule(s);
    let stack = crate::sample::Stack {
        classes: classes.as_ref(),
        ..crate::sample::Stack::of(m)
    };
    crate::sample::Sampler::new(gpu, stack, batch, schedule, seed)
}

/// The validation network: the first val-count test digits, noised once with a fixed seed
/// (its inputs are made here and never change).
pub(super) fn validation_net(
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
pub(super) fn image_labels(
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
pub(super) fn epoch_schedule(s: &TrainSettings) -> crate::sample::Schedule {
    crate::sample::Schedule::plain(s.alpha as f32, s.n_max, 50.min(s.n_max), 1.5)
}

pub(super) fn net_validation(gpu: &Gpu, val: &Network) -> Result<f32> {
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
