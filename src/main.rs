//! The command line: parses flags and hands over to the library. Every error reaches the user
//! as one line on stderr and a non-zero exit code (2 for bad input or setup).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wgpu_diffusion::error::{Error, Result};
use wgpu_diffusion::gpu::{BackendChoice, Elem, Gpu, GpuOptions, LimitsChoice, TuneMode};
use wgpu_diffusion::settings::sample::Precision;
use wgpu_diffusion::{check, data, eval, figures, info, sample, train};

#[derive(Parser)]
#[command(
    name = "wgpu-diffusion",
    version,
    about = "Train and sample a diffusion model for MNIST digits on any GPU, in hand-written WGSL kernels"
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GpuArgs {
    /// Only use this backend (default: all; also WGPU_BACKEND).
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendChoice>,
    /// Use the adapter whose name contains this text (also WGPU_ADAPTER_NAME).
    #[arg(long, global = true, value_name = "SUBSTRING")]
    adapter: Option<String>,
    /// Matrix-kernel choice per shape: `cached` times the candidate kernels for a shape once
    /// and keeps the fastest correct one in the user's cache folder; `full` times every shape
    /// again; `off` uses the built-in choice; `auto`: `cached` on GPUs, `off` on CPU adapters.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WGPU_DIFFUSION_TUNE",
        default_value = "auto"
    )]
    tune: TuneMode,
    /// The device's limits: `adapter` asks for all the adapter has; `webgpu` for WebGPU's
    /// defaults, what a browser page gets (a run that works so works in a browser).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WGPU_DIFFUSION_LIMITS",
        default_value = "adapter"
    )]
    limits: LimitsChoice,
}

impl GpuArgs {
    fn open(&self) -> Result<Gpu> {
        self.open_with(self.tune)
    }

    fn open_with(&self, tune: TuneMode) -> Result<Gpu> {
        Gpu::new(&GpuOptions {
            backend: self.backend,
            adapter: self.adapter.clone(),
            limits: self.limits,
            tune,
            cache_dir: None,
            perturb: std::env::var("WGPU_DIFFUSION_PERTURB").ok(),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show the GPU adapter, its optional features and the limits the kernels depend on.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw the forward (noising) process of one digit: A_n = a^n x + (1 - a^n) N.
    Noise(NoiseArgs),
    /// Train the model (defaults: the seed's settings).
    Train(train::TrainArgs),
    /// Make digits by inverse diffusion, entirely on the GPU.
    Sample(sample::SampleArgs),
    /// Measure sample quality: classifier-feature FID, confidence, label coverage, memorisation.
    Eval(eval::EvalArgs),
    /// Run every kernel on this adapter against its CPU reference (exit 1 naming any failure).
    Check(check::CheckArgs),
    /// Write a run's models and sampler settings as one file for the browser page (web/).
    ExportWeb(sample::export::ExportArgs),
}

#[derive(Args)]
struct NoiseArgs {
    /// Folder with the MNIST files (else $MNIST_DIR, else ./data/mnist, downloaded if absent).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Which digit of the set.
    #[arg(long, default_value_t = 110)]
    index: usize,
    /// Noise levels n to show, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,25,50,100,200,300,400,500"
    )]
    steps: Vec<u32>,
    /// The noising factor a (docs/model.md §2), in (0, 1].
    #[arg(long, default_value_t = 0.99)]
    alpha: f32,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Take the digit from the test set instead of the training set.
    #[arg(long)]
    test_set: bool,
    /// Enlargement factor of each pixel.
    #[arg(long, default_value_t = 4)]
    zoom: usize,
    /// Output PNG.
    #[arg(long, default_value = "noising.png")]
    out: PathBuf,
}

fn noise(gpu_args: &GpuArgs, a: &NoiseArgs) -> Result<()> {
    if !(a.alpha > 0.0 && a.alpha <= 1.0) {
        return Err(Error::config(format!(
            "--alpha must be in (0, 1], got {}",
            a.alpha
        )));
    }
    if a.zoom == 0 || a.zoom > 64 {
        return Err(Error::config(format!(
            "--zoom must be in 1..=64, got {}",
            a.zoom
        )));
    }
    let mnist = data::load(a.data.as_deref())?;
    let set = if a.test_set {
        &mnist.test
    } else {
        &mnist.train
    };
    let gpu = gpu_args.open()?;
    let images = figures::noising_sequence(&gpu, &set.pixels, a.index, &a.steps, a.alpha, a.seed)?;
    let (w, h, grey) = figures::grid(&images, a.steps.len(), a.zoom, 2, figures::Scale::PerImage);
    figures::write_png(&a.out, w, h, &grey)?;
    println!(
        "wrote {} ({w}x{h}): digit {} of the {} set at n = {} (alpha {}) on {}",
        a.out.display(),
        a.index,
        if a.test_set { "test" } else { "training" },
        a.steps
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.alpha,
        gpu.describe()
    );
    Ok(())
}

/// A command's typed report as one line of JSON.
fn print_json<T: serde::Serialize>(report: &T) {
    println!(
        "{}",
        serde_json::to_string(report).expect("reports are plain fields")
    );
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Info { json } => {
            let gpu = cli.gpu.open()?;
            if *json {
                print_json(&info::report(&gpu));
            } else {
                print!("{}", info::report_text(&gpu));
            }
            Ok(())
        }
        Command::Noise(a) => noise(&cli.gpu, a),
        Command::Train(a) => {
            let gpu = cli.gpu.open()?;
            train::install_interrupt_handler();
            let s = train::run(&gpu, a)?;
            if a.json {
                print_json(&train::TrainReport { summary: &s });
            } else if s.stages.len() > 1 {
                println!(
                    "done: {} stages in {}; sample them with `wgpu-diffusion sample --run {}`",
                    s.stages.len(),
                    s.out.display(),
                    s.out.display()
                );
            }
            Ok(())
        }
        Command::Sample(a) => {
            let gpu = cli.gpu.open()?;
            let r = sample::run_command(&gpu, a)?;
            if a.json {
                print_json(&r);
            } else {
                println!("{}", r.text());
            }
            Ok(())
        }
        Command::Check(a) => {
            // Every candidate kernel is checked by name; the tuner would only add timing.
            let gpu = cli.gpu.open_with(TuneMode::Off)?;
            let r = match a.precision {
                Precision::F32 => check::run(&gpu, a.quick),
                Precision::F16 => {
                    gpu.check_elem(Elem::F16)?;
                    check::run_f16(&gpu, a.quick)
                }
            };
            if a.json {
                print_json(&r);
            } else {
                r.print_table();
            }
            r.result()
        }
        Command::ExportWeb(a) => {
            let r = sample::export::run(a)?;
            if a.json {
                print_json(&r);
            } else {
                println!("{}", r.text());
            }
            Ok(())
        }
        Command::Eval(a) => {
            let gpu = cli.gpu.open()?;
            if a.loss_by_level {
                let r = eval::command::run_levels(&gpu, a)?;
                if a.json {
                    print_json(&r);
                } else {
                    print!("{}", r.text());
                }
                return Ok(());
            }
            let r = eval::run_command(&gpu, a)?;
            if a.json {
                print_json(&r);
            } else {
                print!("{}", eval::report_text(&r));
            }
            Ok(())
        }
    }
}

/// Every option that takes a value reads `-1` as its value, so that the option's own range
/// check names the problem (clap would call it an unexpected argument).
fn negative_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let takes_value = a.get_action().takes_values();
        a.allow_negative_numbers(takes_value)
    })
    .mut_subcommands(negative_values)
}

fn parse() -> std::result::Result<Cli, clap::Error> {
    let matches = negative_values(Cli::command()).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
            }
            // One line: clap's first line, without its usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
