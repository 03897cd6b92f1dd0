//! `wgpu-diffusion eval`: the report on a set of digits (an IDX file, or fresh samples of a
//! checkpoint) in the classifier's feature space, with sanity rows computed the same way.

use super::classifier::{self, Classifier, FEATURES};
use super::{fid, metrics};
use crate::config::CLASSES;
use crate::config::PIXELS;
use crate::data;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::sample::{self, SampleFlags, SampleSettings, StackReport, Weights};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Digits sampled by default.
const DEFAULT_COUNT: u64 = 10_000;
/// Test digits of --loss-by-level unless --count says otherwise.
const LEVELS_COUNT: usize = 256;

/// Flags of `eval`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["samples", "checkpoint", "run"])))]
pub struct EvalArgs {
    /// Digits to evaluate: an IDX image file of 28x28 digits (e.g. `sample`'s
    /// samples-idx3-ubyte).
    #[arg(long, value_name = "PATH")]
    pub samples: Option<PathBuf>,
    /// Or sample them now from the models of this run folder of `train`, with the settings its
    /// recipe was measured best with (its config.toml's [sample] table); the flags below
    /// override them.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// The models and the loop of the samples made now (with --run or --checkpoint), as
    /// `sample`'s; the seed is also that of the pure-noise sanity row.
    #[command(flatten)]
    pub sampling: SampleFlags,
    /// Digits to sample now (with --loss-by-level: test digits, default 256).
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    pub count: u64,
    /// The digits of a class-conditional model sampled now (default 0..9 cycled); the report
    /// then says how often the classifier reads each as the digit asked for, and each digit's
    /// FID.
    #[command(flatten)]
    pub digits: sample::DigitArgs,
    /// With --samples: the digit each sample was asked to be, an IDX label file (`sample`
    /// writes labels-idx1-ubyte beside the samples of a class-conditional model; that file is
    /// read when this flag is not given).
    #[arg(long, value_name = "PATH", requires = "samples")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub classifier: classifier::ClassifierArgs,
    /// Digits (samples, and test digits for the baseline) in the nearest-neighbour check.
    #[arg(long, default_value_t = 1000)]
    pub nn_count: usize,
    /// Training digits searched in the nearest-neighbour check (0: all 60,000).
    #[arg(long, default_value_t = 20_000)]
    pub nn_train: usize,
    /// Folder with the MNIST files (else $MNIST_DIR, else ./data/mnist, downloaded if absent).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Instead of sampling: the model's noise-prediction error at single noise levels on
    /// --count test digits (default levels 1,5,20,50,100,200,300,400,500), beside the identity
    /// and linear-estimate baselines. Needs --checkpoint.
    #[arg(long, requires = "checkpoint")]
    pub loss_by_level: bool,
    /// The levels of --loss-by-level, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "loss_by_level")]
    pub levels: Option<Vec<u32>>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl EvalArgs {
    /// The seed of the samples and of the noise row.
    fn seed(&self) -> u64 {
        self.sampling.seed.unwrap_or(0)
    }

    /// The weights --loss-by-level reads.
    fn weights(&self) -> Weights {
        self.sampling.weights.unwrap_or(Weights::Ema)
    }
}

/// Reads an IDX file of 28x28 digits (bytes).
fn read_samples(path: &std::path::Path) -> Result<Vec<u8>> {
    let idx = data::idx::read_idx_file(path)?;
    if idx.dims.len() != 3 || idx.dims[1] != 28 || idx.dims[2] != 28 || idx.dims[0] == 0 {
        return Err(Error::data(format!(
            "{}: expected an IDX file of 28x28 images, found dimensions {:?}",
            path.display(),
            idx.dims
        )));
    }
    Ok(idx.data)
}

/// Samples `a.count` digits with `settings` (as bytes, the same rounding as `sample`), the
/// digit each was asked to be (class-conditional models), and the report of the models and
/// settings used.
fn sample_digits(gpu: &Gpu, a: &EvalArgs, settings: &SampleSettings) -> Result<Sampled> {
    let asked = a.digits.asked();
    let (model, extras, schedule) = sample::load_stack(gpu, settings, asked.as_deref())?;
    let batch = sample::auto_batch_for(gpu, &model.config.model, &extras.configs(), a.count);
    let sampler = sample::sampler_for(gpu, &model, &extras, batch, schedule, settings.seed)?;
    let pixels = sample::to_bytes(&sampler.generate(gpu, a.count)?);
    let labels = extras.classes.as_ref().map(|c| {
        let l = c.labels(0, a.count as usize);
        l.iter().map(|&d| d as u8).collect()
    });
    let stack = StackReport::new(a.run.as_deref(), settings, &model, &extras, &sampler);
    Ok(Sampled {
        pixels,
        labels,
        stack,
    })
}

/// Digits sampled now: their pixels, the digit each was asked to be, the sampler's report.
struct Sampled {
    pixels: Vec<u8>,
    labels: Option<Vec<u8>>,
    stack: StackReport,
}

/// The labels of `samples` (`n` digits): `--labels`, else labels-idx1-ubyte beside them if
/// that file exists; each checked to hold one label 0..9 per sample.
fn read_labels(
    samples: &std::path::Path,
    flag: Option<&std::path::Path>,
    n: usize,
) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => match samples.parent().map(|d| d.join("labels-idx1-ubyte")) {
            Some(p) if p.is_file() => p,
            _ => return Ok(None),
        },
    };
    let idx = data::idx::read_idx_file(&path)?;
    if idx.dims != [n] {
        return Err(Error::data(format!(
            "{}: expected {n} labels (one per sample), found dimensions {:?}",
            path.display(),
            idx.dims
        )));
    }
    if let Some(d) = idx.data.iter().find(|&&d| d > 9) {
        return Err(Error::data(format!(
            "{}: label {d} is not a digit 0..9",
            path.display()
        )));
    }
    Ok(Some((path, idx.data)))
}

/// The classifier's view of one set of digits: FID against the cached test statistics (with
/// n, since FID is biased at small n), confidence and class coverage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Quality {
    pub n: usize,
    pub fid: f64,
    pub confidence_mean: f64,
    pub confident_frac: f64,
    pub label_histogram: Vec<usize>,
    pub entropy_ratio: f64,
}

/// [`Quality`] of `pixels` (28x28 bytes each) in `c`'s feature space.
pub fn quality(c: &Classifier, gpu: &Gpu, pixels: &[u8]) -> Result<Quality> {
    let inf = c.infer(gpu, pixels)?;
    let stats = fid::stats(&inf.features, FEATURES);
    let (confidence_mean, confident_frac) = metrics::confidence(&inf.probs, CLASSES as usize);
    let label_histogram = metrics::histogram(&inf.predictions(), CLASSES as usize);
    Ok(Quality {
        n: inf.n,
        fid: fid::fid(&stats, &c.test_stats),
        confidence_mean,
        confident_frac,
        entropy_ratio: metrics::entropy_ratio(&label_histogram),
        label_histogram,
    })
}

/// `eval --loss-by-level` (the report; `--json` prints it as one object).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LevelsReport {
    pub checkpoint: String,
    pub weights: String,
    pub count: usize,
    pub levels: Vec<super::levels::LevelRow>,
}

impl LevelsReport {
    pub fn text(&self) -> String {
        format!(
            "noise-prediction MSE by level, {} test digits, {} weights of {}\n{}",
            self.count,
            self.weights,
            self.checkpoint,
            super::levels::table(&self.levels)
        )
    }
}

/// `eval --checkpoint CKPT --loss-by-level [--levels ..] [--count N]` (N defaults to 256 here).
pub fn run_levels(gpu: &Gpu, a: &EvalArgs) -> Result<LevelsReport> {
    let path = a
        .sampling
        .checkpoint
        .as_ref()
        .ok_or_else(|| Error::config("--loss-by-level needs --checkpoint"))?;
    // The loss is an f32 network's (an f16 network only samples).
    if a.sampling.precision == Some(sample::Precision::F16) {
        return Err(Error::config(
            "--loss-by-level measures the f32 model: drop --precision f16",
        ));
    }
    let model = sample::load_model(gpu, path, a.weights(), sample::Precision::F32)?;
    let mnist = data::load(a.data.as_deref())?;
    let levels = a
        .levels
        .clone()
        .unwrap_or_else(|| super::levels::DEFAULT_LEVELS.to_vec());
    let count = if a.count == DEFAULT_COUNT {
        LEVELS_COUNT
    } else {
        a.count as usize
    };
    let levels = super::levels::loss_by_level(gpu, &model, &mnist, &levels, count, a.seed())?;
    Ok(LevelsReport {
        checkpoint: path.display().to_string(),
        weights: format!("{:?}", model.weights).to_lowercase(),
        count,
        levels,
    })
}

/// The nearest-neighbour check's sizes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NnInfo {
    pub samples: usize,
    pub test: usize,
    pub train_searched: usize,
    pub units: &'static str,
}

/// The same measures of real and of random digits at the same n.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sanity {
    pub train_vs_test: Quality,
    pub noise: Quality,
}

/// The classifier whose features the measures are in.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassifierInfo {
    pub path: String,
    pub trained_now: bool,
    pub test_accuracy: f64,
    pub train_seconds: f64,
    pub epochs: u32,
}

/// `eval`'s report (`--json` prints it as one object).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub quality: Quality,
    /// The IDX file, or the models and settings of "stack" in words.
    pub source: String,
    /// The models and settings that made the digits now (None for --samples).
    pub stack: Option<StackReport>,
    pub test_n: usize,
    pub nn_distance_samples: f64,
    pub nn_distance_test: f64,
    pub nn: NnInfo,
    pub sanity: Sanity,
    /// FID per digit; for digits asked of a class-conditional model, with the classifier's
    /// agreement.
    pub digits: super::digits::DigitsReport,
    pub classifier: ClassifierInfo,
    pub seconds: f64,
    pub adapter: String,
}

/// Where the digits come from: a file, or the settings to sample them with (checked before
/// any data is loaded).
enum Digits {
    File(PathBuf, Vec<u8>, Option<(PathBuf, Vec<u8>)>),
    Sample(SampleSettings),
}

fn digits_source(a: &EvalArgs) -> Result<Digits> {
    if a.nn_count == 0 {
        return Err(Error::config("--nn-count must be at least 1"));
    }
    if let Some(p) = &a.samples {
        let pixels = read_samples(p)?;
        let labels = read_labels(p, a.labels.as_deref(), pixels.len() / PIXELS as usize)?;
        return Ok(Digits::File(p.clone(), pixels, labels));
    }
    if a.count == 0 {
        return Err(Error::config("--count must be at least 1"));
    }
    let settings = sample::resolve(a.run.as_deref(), &a.sampling)?;
    // Bad sampling settings (and a bad refiner or guide) fail here, before the data is loaded.
    sample::check_stack(&settings, a.digits.asked().as_deref())?;
    Ok(Digits::Sample(settings))
}

/// `wgpu-diffusion eval` (see [`report_text`] for the text form).
pub fn run_command(gpu: &Gpu, a: &EvalArgs) -> Result<EvalReport> {
    let start = Instant::now();
    let source = digits_source(a)?;
    // A broken cache fails now, before the data is loaded or digits are sampled.
    let cached = a.classifier.read_cached()?;
    let mnist = data::load(a.data.as_deref())?;
    let (c, trained) = a.classifier.cached_or_train(gpu, cached, &mnist)?;
    let (pixels, source, stack, labels) = match source {
        Digits::File(p, d, l) => {
            let l = l.map(|(path, l)| (path.display().to_string(), l));
            (d, p.display().to_string(), None, l)
        }
        Digits::Sample(settings) => {
            let s = sample_digits(gpu, a, &settings)?;
            let what = format!(
                "{} ({} seed {})",
                s.stack.model.checkpoint,
                settings.describe(),
                settings.seed
            );
            let labels = s.labels.map(|l| ("the sampler".to_string(), l));
            (s.pixels, what, Some(s.stack), labels)
        }
    };
    let digits = super::digits::by_digit(&c, gpu, &mnist, &pixels, labels)?;
    let px = PIXELS as usize;
    let n = pixels.len() / px;

    // FID is against the test digits' statistics, computed when the classifier was trained
    // and cached with it.
    let samples = quality(&c, gpu, &pixels)?;

    // Sanity rows at the same n (FID is biased at small n): training digits, and uniform noise.
    let n_sanity = n.min(mnist.train.count);
    let train_row = quality(&c, gpu, &mnist.train.pixels[..n_sanity * px])?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed() ^ 0x0015_E000);
    let noise: Vec<u8> = (0..n_sanity * px).map(|_| rng.random::<u8>()).collect();
    let noise_row = quality(&c, gpu, &noise)?;

    // Memorisation: nearest training digit, for samples and for test digits.
    let nn_n = a.nn_count.min(n);
    let nn_train = if a.nn_train == 0 {
        mnist.train.count
    } else {
        a.nn_train.min(mnist.train.count)
    };
    let refs = &mnist.train.pixels[..nn_train * px];
    let nn_samples = metrics::mean(&metrics::nearest_distances(&pixels[..nn_n * px], refs, px));
    let nn_test_n = a.nn_count.min(mnist.test.count);
    let nn_test = metrics::mean(&metrics::nearest_distances(
        &mnist.test.pixels[..nn_test_n * px],
        refs,
        px,
    ));
    Ok(EvalReport {
        quality: samples,
        source,
        stack,
        test_n: c.test_stats.n,
        nn_distance_samples: nn_samples,
        nn_distance_test: nn_test,
        nn: NnInfo {
            samples: nn_n,
            test: nn_test_n,
            train_searched: nn_train,
            units: "Euclidean, x = p/256 - 0.5",
        },
        sanity: Sanity {
            train_vs_test: train_row,
            noise: noise_row,
        },
        digits,
        classifier: ClassifierInfo {
            path: a.classifier.path.display().to_string(),
            trained_now: trained,
            test_accuracy: c.meta.test_accuracy,
            train_seconds: c.meta.train_seconds,
            epochs: c.meta.settings.epochs,
        },
        seconds: start.elapsed().as_secs_f64(),
        adapter: gpu.describe(),
    })
}

fn row(label: &str, q: &Quality) -> String {
    format!(
        "{label:<22} n={:<6} FID {:>9.3}  confidence {:.4}  >0.9 {:.4}  label entropy/ln10 {:.4}\n",
        q.n, q.fid, q.confidence_mean, q.confident_frac, q.entropy_ratio
    )
}

/// The report as text.
pub fn report_text(r: &EvalReport) -> String {
    let c = &r.classifier;
    let mut s = format!(
        "classifier {} ({}test accuracy {:.4}); features {FEATURES}-d, FID against the {} test digits\n",
        c.path,
        if c.trained_now {
            format!("trained now in {:.1} s, ", c.train_seconds)
        } else {
            String::new()
        },
        c.test_accuracy,
        r.test_n,
    );
    match &r.stack {
        Some(stack) => s += &stack.text(),
        None => s += &format!("samples: {}\n", r.source),
    }
    s += &row("samples", &r.quality);
    s += &row("sanity: train digits", &r.sanity.train_vs_test);
    s += &row("sanity: uniform noise", &r.sanity.noise);
    let h: Vec<String> = r
        .quality
        .label_histogram
        .iter()
        .map(|v| v.to_string())
        .collect();
    s += &format!("predicted labels 0-9: {}\n", h.join(" "));
    s += &r.digits.text();
    s += &format!(
        "nearest training digit (mean distance, first {} of 60000 training digits searched): samples {:.4} (first {}), test digits {:.4} (first {})\n",
        r.nn.train_searched, r.nn_distance_samples, r.nn.samples, r.nn_distance_test, r.nn.test,
    );
    s += &format!("{:.1} s on {}\n", r.seconds, r.adapter);
    s
}
