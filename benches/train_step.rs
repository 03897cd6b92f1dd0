//! One full training step (forward, loss, backward, Adam, EMA), attention alone and the
//! sampling loop, timed on the adapter: ms, samples/s, GFLOP/s and % of the adapter's measured
//! FMA peak, beside the plain-loop CPU reference.
//!
//! `cargo bench --bench train_step [-- --preset seed|notebook|tiny] [--quick] [--profile]
//!     [--tune off|cached|full] [--no-cpu-reference] [--json]
//!     [--patch P --overlap O --layers L --heads H --key-dim K --mlp F --skip S]`
//! Default preset: `seed` on a real GPU, `tiny` on a CPU adapter (lavapipe); the shape flags
//! change the preset's values as `train`'s do, to measure the model you train. `--json`
//! ends with one line of JSON holding every figure (scripts/device-check.sh keeps it).

use std::collections::BTreeMap;
use std::time::Instant;
use wgpu_diffusion::config::ModelConfig;
use wgpu_diffusion::gpu::timing::{measure_peak_gflops, time_dispatches};
use wgpu_diffusion::gpu::{Elem, Gpu, GpuOptions, GpuTensor, TuneMode};
use wgpu_diffusion::model::network::{Network, Optimizer};
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::ops::attention::{self, AttentionKernel, AttentionShape};
use wgpu_diffusion::reference;
use wgpu_diffusion::sample::{Sampler, SamplerModel, Schedule, Stack};
use wgpu_diffusion::settings::recipe::{Preset, Recipe, Source};
use wgpu_diffusion::settings::train::TrainFlags;
use wgpu_diffusion::testing::uniform_data;

/// The bench's flags.
#[derive(clap::Parser)]
struct BenchArgs {
    /// Model preset (default: `seed` on a real GPU, `tiny` on a CPU adapter).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Fewer repetitions, 500 digits sampled instead of 10,000.
    #[arg(long)]
    quick: bool,
    /// Also time each kernel of the training step.
    #[arg(long)]
    profile: bool,
    /// GEMM kernel choice per shape, as the program's `--tune` (`full` reports the tuner's
    /// first-run cost in the build time; `off` the built-in kernels).
    #[arg(long, value_enum, default_value = "cached")]
    tune: TuneMode,
    /// Skip the single-threaded CPU reference step (a minute on the seed preset).
    #[arg(long)]
    no_cpu_reference: bool,
    /// End with one line of JSON holding every figure.
    #[arg(long)]
    json: bool,
    /// The preset's values to change, as `train`'s flags do (the model's shape flags matter).
    #[command(flatten)]
    shape: TrainFlags,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// A name filter `cargo bench` may pass (this bench has one case; ignored).
    #[arg(hide = true)]
    filter: Vec<String>,
}

/// Samples per training step.
const BATCH: usize = 500;
/// Denoising steps of the sampling figure.
const SAMPLE_STEPS: u32 = 50;

/// A time with its rate: ms, GFLOP/s and % of the measured peak.
#[derive(Clone, serde::Serialize)]
struct Rate {
    ms: f64,
    gflops: f64,
    pct_of_peak: f64,
}

impl Rate {
    fn new(secs: f64, flops: f64, peak: f64) -> Rate {
        let gflops = flops / secs / 1e9;
        Rate {
            ms: secs * 1e3,
            gflops,
            pct_of_peak: 100.0 * gflops / peak,
        }
    }
}

/// Every figure of one run of the bench.
#[derive(serde::Serialize)]
struct Figures {
    adapter: String,
    preset: String,
    model: String,
    peak_gflops: f64,
    tune: TuneMode,
    /// Seconds to build the training step: pipelines, and the tuner's timing when it ran.
    build_secs: f64,
    tuned: BTreeMap<String, String>,
    train_step: Rate,
    train_samples_per_s: f64,
    forward: Rate,
    attention_forward: Rate,
    attention_backward: Rate,
    cpu_reference_ms: Option<f64>,
    sampled_digits: usize,
    sampling: Rate,
    sampling_digits_per_s: f64,
    /// The same loop with `--precision f16` (None without shader-f16).
    sampling_f16: Option<Rate>,
    sampling_f16_digits_per_s: Option<f64>,
}

fn main() {
    let args = <BenchArgs as clap::Parser>::parse();
    let gpu = Gpu::new(&GpuOptions {
        tune: args.tune,
        ..GpuOptions::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let preset = match args.preset {
        Some(p) => p,
        None if gpu.is_cpu() => Preset::Tiny,
        None => Preset::Seed,
    };
    let config = Recipe::load(&Source::Preset(preset), &args.shape)
        .and_then(|r| r.sampled_stage().settings.model())
        .unwrap_or_else(|e| panic!("{e}"));
    println!("adapter: {}", gpu.describe());
    let probe = if gpu.is_cpu() { 1 << 14 } else { 1 << 22 };
    let peak = measure_peak_gflops(&gpu, probe).unwrap();
    println!("measured f32 FMA peak (shaders/peak.wgsl): {peak:.1} GFLOP/s");
    println!(
        "preset {} with {config} ({} weights), batch {BATCH} samples ({} rows)",
        preset.name(),
        config.parameter_count(),
        BATCH * config.geometry.tokens() as usize
    );
    let f = measure(&gpu, &args, &config, peak, preset);
    if args.json {
        println!("{}", serde_json::to_string(&f).unwrap());
    }
}

fn measure(
    gpu: &Gpu,
    args: &BenchArgs,
    config: &ModelConfig,
    peak: f64,
    preset: Preset,
) -> Figures {
    let reps = if args.quick { 3 } else { 10 };
    let layout = ParamLayout::new(config);
    let init = layout.init(1);
    let params = GpuTensor::from_slice(gpu, "params", &[layout.total], &init).unwrap();
    let step = train_step(gpu, args, config, &layout, &params, reps, peak);
    let (attention_forward, attention_backward) = attention(gpu, config, reps, peak);
    let cpu_reference_ms = (!args.no_cpu_reference).then(|| {
        let ms = cpu_reference(config, &layout, &init);
        println!(
            "CPU reference (plain loops, 1 thread): {ms:9.3} ms per {BATCH}-sample step -> GPU is {:.1}x faster",
            ms / step.step.ms
        );
        ms
    });
    let count: usize = if args.quick { 500 } else { 10_000 };
    let (rate, digits_per_s) = sampling(gpu, config, &layout, &params, count, peak, "f32");
    let f16 = gpu.check_elem(Elem::F16).is_ok().then(|| {
        let (layout16, p16) =
            wgpu_diffusion::sample::params_on_gpu(gpu, config, &init, Elem::F16).unwrap();
        sampling(gpu, config, &layout16, &p16, count, peak, "f16")
    });
    Figures {
        adapter: gpu.describe(),
        preset: preset.name().to_string(),
        model: config.to_string(),
        peak_gflops: peak,
        tune: args.tune,
        build_secs: step.build_secs,
        tuned: gpu.tune.used(),
        train_samples_per_s: BATCH as f64 / (step.step.ms / 1e3),
        train_step: step.step,
        forward: step.forward,
        attention_forward,
        attention_backward,
        cpu_reference_ms,
        sampled_digits: count,
        sampling: rate,
        sampling_digits_per_s: digits_per_s,
        sampling_f16: f16.as_ref().map(|f| f.0.clone()),
        sampling_f16_digits_per_s: f16.map(|f| f.1),
    }
}

struct StepFigures {
    build_secs: f64,
    step: Rate,
    forward: Rate,
}

/// Builds the training step (printing the tuner's choices) and times it and its forward pass.
fn train_step(
    gpu: &Gpu,
    args: &BenchArgs,
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &GpuTensor,
    reps: usize,
    peak: f64,
) -> StepFigures {
    let g = &config.geometry;
    let (t, d, p) = (g.tokens() as usize, g.dim() as usize, g.patches() as usize);
    let zeros = vec![0.0; layout.total];
    let init = layout.init(1);
    let opt = Optimizer::new(gpu, layout, params, &zeros, &zeros, &init, 1e-4, 0.999).unwrap();
    let built = Instant::now();
    let net = Network::new(gpu, config, layout, BATCH, params, Some(&opt.grads)).unwrap();
    let build_secs = built.elapsed().as_secs_f64();
    println!(
        "training step built in {build_secs:.1} s (pipelines, and GEMM tuning with --tune {:?}); kernels:",
        args.tune
    );
    for (shape, variant) in gpu.tune.used() {
        println!("  {shape:28} {variant}");
    }
    let tokens: Vec<f32> = uniform_data(BATCH * t * d, 2)
        .iter()
        .map(|v| v * 0.5)
        .collect();
    net.tokens.write(gpu, &tokens);
    net.target.write(gpu, &uniform_data(BATCH * p * d, 3));
    opt.set_step(gpu, 1, 1e-3);
    let mut all = net.dispatches();
    all.extend(opt.dispatches());
    let step = time_dispatches(gpu, &all, reps).unwrap();
    let fwd = time_dispatches(gpu, &net.forward_dispatches(), reps).unwrap();
    if args.profile {
        println!("per-kernel times of one training step:");
        for d in &all {
            let s = time_dispatches(gpu, &[d], reps).unwrap();
            println!("  {:40} {:?} {:9.3} ms", d.kernel.label, d.groups, s * 1e3);
        }
    }
    let flops = net.forward_flops();
    let (step, forward) = (
        Rate::new(step, 3.0 * flops, peak),
        Rate::new(fwd, flops, peak),
    );
    println!(
        "train step:   {:9.3} ms  {:10.1} samples/s  {:8.2} GFLOP/s = {:5.1}% of peak (matmul FLOPs, fwd+bwd = 3x fwd)",
        step.ms,
        BATCH as f64 / (step.ms / 1e3),
        step.gflops,
        step.pct_of_peak
    );
    println!(
        "forward only: {:9.3} ms  {:10.1} samples/s  {:8.2} GFLOP/s = {:5.1}% of peak",
        forward.ms,
        BATCH as f64 / (forward.ms / 1e3),
        forward.gflops,
        forward.pct_of_peak
    );
    StepFigures {
        build_secs,
        step,
        forward,
    }
}

/// Attention forward and backward alone, at the model's shape, with each kernel version that
/// fits it; returns the figures of the ones the model uses.
fn attention(gpu: &Gpu, config: &ModelConfig, reps: usize, peak: f64) -> (Rate, Rate) {
    let t = config.geometry.tokens() as usize;
    let s = AttentionShape {
        batch: BATCH,
        tokens: t,
        heads: config.heads as usize,
        key_dim: config.key_dim as usize,
    };
    let hk = config.hk() as usize;
    let rows = BATCH * t;
    let qkv = uniform_data(rows * 3 * hk, 4);
    let qkv = GpuTensor::from_slice(gpu, "qkv", &[rows, 3 * hk], &qkv).unwrap();
    let o = GpuTensor::zeros(gpu, "o", &[rows, hk]).unwrap();
    let probs = GpuTensor::zeros(gpu, "probs", &[BATCH, s.heads, t, t]).unwrap();
    let dqkv = GpuTensor::zeros(gpu, "dqkv", &[rows, 3 * hk]).unwrap();
    let flops = 4.0 * (BATCH * s.heads * t * t * s.key_dim) as f64;
    let (mut used_fwd, mut used_bwd) = (None, None);
    for v in AttentionKernel::ALL {
        let Ok(af) = attention::attention_forward_with(gpu, v, &s, &qkv, &o, &probs) else {
            continue;
        };
        let ab = attention::attention_backward_with(gpu, v, &s, &qkv, &probs, &o, &dqkv).unwrap();
        let fwd = Rate::new(time_dispatches(gpu, &[&af], reps).unwrap(), flops, peak);
        let bwd = Rate::new(
            time_dispatches(gpu, &[&ab], reps).unwrap(),
            2.0 * flops,
            peak,
        );
        for (name, r) in [("fwd", &fwd), ("bwd", &bwd)] {
            println!(
                "attention {name} ({v:?}): {:9.3} ms  {:8.2} GFLOP/s = {:5.1}% of peak",
                r.ms, r.gflops, r.pct_of_peak
            );
        }
        if v == AttentionKernel::auto_forward(&s) {
            used_fwd = Some(fwd);
        }
        if v == AttentionKernel::auto_backward(&s) {
            used_bwd = Some(bwd);
        }
    }
    (used_fwd.unwrap(), used_bwd.unwrap())
}

/// Milliseconds of the CPU reference's step on the same data (a smaller batch on big
/// presets, scaled).
fn cpu_reference(config: &ModelConfig, layout: &ParamLayout, init: &[f32]) -> f64 {
    let g = &config.geometry;
    let (t, d, p) = (g.tokens() as usize, g.dim() as usize, g.patches() as usize);
    let cpu_batch = if config.parameter_count() < 100_000 {
        BATCH
    } else {
        20
    };
    let tokens: Vec<f32> = uniform_data(BATCH * t * d, 2)
        .iter()
        .map(|v| v * 0.5)
        .collect();
    let target = uniform_data(BATCH * p * d, 3);
    let (tok, tgt) = (&tokens[..cpu_batch * t * d], &target[..cpu_batch * p * d]);
    let c0 = Instant::now();
    let _ = reference::model::loss_and_grad::<f32>(config, layout, init, tok, tgt, cpu_batch);
    c0.elapsed().as_secs_f64() * 1e3 * BATCH as f64 / cpu_batch as f64
}

/// The sampling loop: `count` digits x 50 steps, and digits/s, with the weights (and so the
/// activations) stored as `params` is (`precision` names it).
fn sampling(
    gpu: &Gpu,
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &GpuTensor,
    count: usize,
    peak: f64,
    precision: &str,
) -> (Rate, f64) {
    let schedule = Schedule::plain(0.99, 500, SAMPLE_STEPS, 1.5);
    let batch = wgpu_diffusion::sample::auto_batch(gpu, config, count as u64);
    let sm = Sampler::new(
        gpu,
        Stack::of(SamplerModel {
            config: config,
            layout: layout,
            params: params,
        }),
        batch,
        schedule,
        0,
    )
    .unwrap();
    sm.run(gpu, 0).unwrap(); // warm-up: pipelines compiled, buffers touched
    let s0 = Instant::now();
    let mut first = 0;
    while first < count {
        sm.run(gpu, first as u64).unwrap();
        first += batch;
    }
    let secs = s0.elapsed().as_secs_f64();
    let flops = Sampler::flops_per_digit_step(config) * SAMPLE_STEPS as f64 * first as f64;
    let rate = Rate::new(secs, flops, peak);
    let digits_per_s = first as f64 / secs;
    println!(
        "sampling {precision}: {first} digits x {SAMPLE_STEPS} steps in {secs:.2} s (batch {batch}): {digits_per_s:.1} digits/s, {:.2} GFLOP/s = {:5.1}% of peak",
        rate.gflops, rate.pct_of_peak
    );
    (rate, digits_per_s)
}
