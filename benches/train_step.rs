//! One full training step (forward, loss, backward, Adam, EMA) and the sampling loop, timed on
//! the adapter: ms per step, samples/s, GFLOP/s, and the ratio to the CPU reference.
//!
//! `cargo bench --bench train_step [-- --preset seed|notebook|tiny] [--quick] [--profile]
//!     [--patch P --overlap O --layers L --heads H --key-dim K --mlp F --skip S]`
//! Default preset: `seed` on a real GPU, `tiny` on a CPU adapter (lavapipe); the shape flags
//! change the preset's values as `train`'s do, to measure the model you train.

use std::time::Instant;
use wgpu_diffusion::config::PIXELS;
use wgpu_diffusion::gpu::timing::time_dispatches;
use wgpu_diffusion::gpu::{Gpu, GpuOptions, GpuTensor};
use wgpu_diffusion::model::network::{Network, Optimizer};
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::ops::attention::{self, AttentionShape};
use wgpu_diffusion::reference;
use wgpu_diffusion::sample::{Sampler, Schedule};
use wgpu_diffusion::settings::recipe::{Preset, Recipe, Source};
use wgpu_diffusion::settings::train::TrainFlags;
use wgpu_diffusion::testing::uniform_data;

/// The bench's flags.
#[derive(clap::Parser)]
struct BenchArgs {
    /// Model preset (default: `seed` on a real GPU, `tiny` on a CPU adapter).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Fewer repetitions.
    #[arg(long)]
    quick: bool,
    /// Also time each kernel of the training step.
    #[arg(long)]
    profile: bool,
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

fn main() {
    let args = <BenchArgs as clap::Parser>::parse();
    let quick = args.quick;
    let gpu = Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let preset = match args.preset {
        Some(p) => p,
        None if gpu.is_cpu() => Preset::Tiny,
        None => Preset::Seed,
    };
    let cfg = Recipe::load(&Source::Preset(preset), &args.shape)
        .and_then(|r| r.sampled_stage().settings.model())
        .unwrap_or_else(|e| panic!("{e}"));
    let layout = ParamLayout::new(&cfg);
    let g = &cfg.geometry;
    let (t, d, p) = (g.tokens() as usize, g.dim() as usize, g.patches() as usize);
    let batch = 500;
    println!("adapter: {}", gpu.describe());
    let probe = if gpu.is_cpu() { 1 << 14 } else { 1 << 22 };
    let peak = wgpu_diffusion::gpu::timing::measure_peak_gflops(&gpu, probe).unwrap();
    println!("measured f32 FMA peak (shaders/peak.wgsl): {peak:.1} GFLOP/s");
    println!(
        "preset {} with {cfg} ({} weights), batch {batch} samples ({} rows)",
        preset.name(),
        cfg.parameter_count(),
        batch * t
    );

    // Training step.
    let init = layout.init(1);
    let params = GpuTensor::from_slice(&gpu, "params", &[layout.total], &init).unwrap();
    let zeros = vec![0.0; layout.total];
    let opt = Optimizer::new(&gpu, &layout, &params, &zeros, &zeros, &init, 1e-4, 0.999).unwrap();
    let net = Network::new(&gpu, &cfg, &layout, batch, &params, Some(&opt.grads)).unwrap();
    let tokens: Vec<f32> = uniform_data(batch * t * d, 2)
        .iter()
        .map(|v| v * 0.5)
        .collect();
    let target = uniform_data(batch * p * d, 3);
    net.tokens.write(&gpu, &tokens);
    net.target.write(&gpu, &target);
    opt.set_step(&gpu, 1, 1e-3);
    let mut all = net.dispatches();
    all.extend(opt.dispatches());
    let reps = if quick { 3 } else { 10 };
    let step = time_dispatches(&gpu, &all, reps).unwrap();
    let fwd = time_dispatches(&gpu, &net.forward_dispatches(), reps).unwrap();
    if args.profile {
        println!("per-kernel times of one training step:");
        for d in &all {
            let s = time_dispatches(&gpu, &[d], reps).unwrap();
            println!("  {:40} {:?} {:9.3} ms", d.kernel.label, d.groups, s * 1e3);
        }
    }
    let flops = 3.0 * net.forward_flops();
    println!(
        "train step:   {:9.3} ms  {:10.1} samples/s  {:8.2} GFLOP/s = {:5.1}% of peak (matmul FLOPs, fwd+bwd = 3x fwd)",
        step * 1e3,
        batch as f64 / step,
        flops / step / 1e9,
        100.0 * flops / step / 1e9 / peak
    );
    println!(
        "forward only: {:9.3} ms  {:10.1} samples/s  {:8.2} GFLOP/s = {:5.1}% of peak",
        fwd * 1e3,
        batch as f64 / fwd,
        net.forward_flops() / fwd / 1e9,
        100.0 * net.forward_flops() / fwd / 1e9 / peak
    );

    // Attention alone, at the model's shape.
    let ashape = AttentionShape {
        batch,
        tokens: t,
        heads: cfg.heads as usize,
        key_dim: cfg.key_dim as usize,
    };
    let hk = cfg.hk() as usize;
    let qkv = GpuTensor::from_slice(
        &gpu,
        "qkv",
        &[batch * t, 3 * hk],
        &uniform_data(batch * t * 3 * hk, 4),
    )
    .unwrap();
    let o = GpuTensor::zeros(&gpu, "o", &[batch * t, hk]).unwrap();
    let probs = GpuTensor::zeros(&gpu, "probs", &[batch, ashape.heads, t, t]).unwrap();
    let dqkv = GpuTensor::zeros(&gpu, "dqkv", &[batch * t, 3 * hk]).unwrap();
    let af = attention::attention_forward(&gpu, &ashape, &qkv, &o, &probs).unwrap();
    let ab = attention::attention_backward(&gpu, &ashape, &qkv, &probs, &o, &dqkv).unwrap();
    let att_flops = 4.0 * (batch * ashape.heads * t * t * ashape.key_dim) as f64;
    for (name, d, f) in [
        ("attention fwd", &af, att_flops),
        ("attention bwd", &ab, 2.0 * att_flops),
    ] {
        let s = time_dispatches(&gpu, &[d], reps).unwrap();
        println!("{name}: {:9.3} ms  {:8.2} GFLOP/s", s * 1e3, f / s / 1e9);
    }

    // The CPU reference on the same step, for a baseline (a smaller batch on big presets).
    let cpu_batch = if cfg.parameter_count() < 100_000 {
        batch
    } else {
        20
    };
    let tok_cpu = &tokens[..cpu_batch * t * d];
    let tgt_cpu = &target[..cpu_batch * p * d];
    let c0 = Instant::now();
    let _ =
        reference::model::loss_and_grad::<f32>(&cfg, &layout, &init, tok_cpu, tgt_cpu, cpu_batch);
    let cpu = c0.elapsed().as_secs_f64() * batch as f64 / cpu_batch as f64;
    println!(
        "CPU reference (plain loops, 1 thread): {:9.3} ms per {batch}-sample step -> GPU is {:.1}x faster",
        cpu * 1e3,
        cpu / step
    );

    // The sampling loop: digits/s for 10,000 digits x 50 steps (fewer with --quick).
    let count: usize = if quick { 500 } else { 10_000 };
    let schedule = Schedule::plain(0.99, 500, 50, 1.5);
    let sbatch = wgpu_diffusion::sample::auto_batch(&gpu, &cfg, count as u64);
    let sm = Sampler::new(&gpu, &cfg, &layout, &params, sbatch, schedule, 0).unwrap();
    sm.run(&gpu, 0).unwrap(); // warm-up: pipelines compiled, buffers touched
    let s0 = Instant::now();
    let mut first = 0;
    while first < count {
        sm.run(&gpu, first as u64).unwrap();
        first += sbatch;
    }
    let secs = s0.elapsed().as_secs_f64();
    let rate = count as f64 / secs;
    println!(
        "sampling:     {count} digits x 50 steps in {secs:.2} s (batch {sbatch}): {rate:.1} digits/s, {:.2} GFLOP/s; {} bytes of output each",
        Sampler::flops_per_digit_step(&cfg) * 50.0 * rate / 1e9,
        PIXELS
    );
}
