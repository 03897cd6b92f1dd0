//! `wgpu-diffusion eval`: the report on a set of digits (an IDX file, or fresh samples of a
//! checkpoint) in the classifier's feature space, with sanity rows computed the same way.

use super::classifier::{self, Classifier, CLASSES, FEATURES};
use super::{fid, metrics};
use crate::config::PIXELS;
use crate::data;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::sample::{self, Weights};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Digits sampled by default.
const DEFAULT_COUNT: u64 = 10_000;
/// Test digits of --loss-by-level unless --count says otherwise.
const LEVELS_COUNT: usize = 256;

/// Flags of `eval`.
#[derive(clap::Args, Clone, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["samples", "checkpoint"])))]
pub struct EvalArgs {
    /// Digits to evaluate: an IDX image file of 28x28 digits (e.g. `sample`'s
    /// samples-idx3-ubyte).
    #[arg(long, value_name = "PATH")]
    pub samples: Option<PathBuf>,
    /// Or sample them now from this checkpoint (EMA weights).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Digits to sample with --checkpoint (with --loss-by-level: test digits, default 256).
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    pub count: u64,
    /// The sampling loop with --checkpoint (as `sample`'s).
    #[command(flatten)]
    pub sampling: sample::SamplingArgs,
    /// The checkpoint's weights to use: the EMA or the raw (last step's) ones.
    #[arg(long, value_enum, default_value_t = Weights::Ema)]
    pub weights: Weights,
    /// Seed of the initial noise with --checkpoint (and of the pure-noise sanity row).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

/// Samples `a.count` digits from `a.checkpoint` (as bytes, the same rounding as `sample`).
fn sample_digits(gpu: &Gpu, a: &EvalArgs, path: &std::path::Path) -> Result<Vec<u8>> {
    if a.count == 0 {
        return Err(Error::config("--count must be at least 1"));
    }
    let model = sample::load_model(gpu, path, a.weights)?;
    let schedule = a.sampling.schedule(&model.config)?;
    let extras = a.sampling.load_extras(gpu, &model.config, a.weights)?;
    let batch = sample::auto_batch_for(gpu, &model.config.model, &extras.configs(), a.count);
    let sampler = sample::sampler_for(gpu, &model, &extras, batch, schedule, a.seed)?;
    Ok(sample::to_bytes(&sampler.generate(gpu, a.count)?))
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
    let (confidence_mean, confident_frac) = metrics::confidence(&inf.probs, CLASSES);
    let label_histogram = metrics::histogram(&inf.predictions(), CLASSES);
    Ok(Quality {
        n: inf.n,
        fid: fid::fid(&stats, &c.test_stats),
        confidence_mean,
        confident_frac,
        entropy_ratio: metrics::entropy_ratio(&label_histogram),
        label_histogram,
    })
}

fn describe(c: &Classifier, gpu: &Gpu, pixels: &[u8]) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(quality(c, gpu, pixels)?).expect("plain fields serialise"))
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
        .checkpoint
        .as_ref()
        .ok_or_else(|| Error::config("--loss-by-level needs --checkpoint"))?;
    let model = sample::load_model(gpu, path, a.weights)?;
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
    let levels = super::levels::loss_by_level(gpu, &model, &mnist, &levels, count, a.seed)?;
    Ok(LevelsReport {
        checkpoint: path.display().to_string(),
        weights: format!("{:?}", model.weights).to_lowercase(),
        count,
        levels,
    })
}

/// `wgpu-diffusion eval`: one JSON object (see [`report_text`] for the text form).
pub fn run_command(gpu: &Gpu, a: &EvalArgs) -> Result<serde_json::Value> {
    let start = Instant::now();
    if a.nn_count == 0 {
        return Err(Error::config("--nn-count must be at least 1"));
    }
    // The inputs first, so a bad path fails before any training.
    let from_file = if let Some(p) = &a.samples {
        Some(read_samples(p)?)
    } else {
        if let Some(p) = &a.checkpoint {
            // Bad sampling flags (and a bad --refiner or --guide) fail here too, before the data is loaded.
            let run = crate::train::read_run_config(p)?;
            a.sampling.schedule(&run)?;
            a.sampling.check_extras(&run)?;
        }
        None
    };
    // A broken cache fails now, before the data is loaded or digits are sampled.
    let cached = a.classifier.read_cached()?;
    let mnist = data::load(a.data.as_deref())?;
    let (c, trained) = a.classifier.cached_or_train(gpu, cached, &mnist)?;
    let (pixels, source) = match (from_file, &a.checkpoint) {
        (Some(p), _) => (p, a.samples.as_ref().unwrap().display().to_string()),
        (None, Some(ck)) => (
            sample_digits(gpu, a, ck)?,
            format!(
                "{} ({} seed {})",
                ck.display(),
                a.sampling.describe(),
                a.seed
            ),
        ),
        (None, None) => unreachable!("clap requires --samples or --checkpoint"),
    };
    let px = PIXELS as usize;
    let n = pixels.len() / px;

    // FID is against the test digits' statistics, computed when the classifier was trained
    // and cached with it.
    let mut report = describe(&c, gpu, &pixels)?;

    // Sanity rows at the same n (FID is biased at small n): training digits, and uniform noise.
    let n_sanity = n.min(mnist.train.count);
    let train_row = describe(&c, gpu, &mnist.train.pixels[..n_sanity * px])?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x0015_E000);
    let noise: Vec<u8> = (0..n_sanity * px).map(|_| rng.random::<u8>()).collect();
    let noise_row = describe(&c, gpu, &noise)?;

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

    let o = report.as_object_mut().unwrap();
    o.insert("source".into(), source.into());
    o.insert("test_n".into(), c.test_stats.n.into());
    o.insert("nn_distance_samples".into(), nn_samples.into());
    o.insert("nn_distance_test".into(), nn_test.into());
    o.insert(
        "nn".into(),
        serde_json::json!({
            "samples": nn_n, "test": nn_test_n, "train_searched": nn_train,
            "units": "Euclidean, x = p/256 - 0.5",
        }),
    );
    o.insert(
        "sanity".into(),
        serde_json::json!({ "train_vs_test": train_row, "noise": noise_row }),
    );
    o.insert(
        "classifier".into(),
        serde_json::json!({
            "path": a.classifier.path.display().to_string(),
            "trained_now": trained,
            "test_accuracy": c.meta.test_accuracy,
            "train_seconds": c.meta.train_seconds,
            "epochs": c.meta.settings.epochs,
        }),
    );
    o.insert("seconds".into(), start.elapsed().as_secs_f64().into());
    o.insert("adapter".into(), gpu.describe().into());
    Ok(report)
}

fn row(label: &str, r: &serde_json::Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{label:<22} n={:<6} FID {:>9.3}  confidence {:.4}  >0.9 {:.4}  label entropy/ln10 {:.4}\n",
        r["n"],
        f("fid"),
        f("confidence_mean"),
        f("confident_frac"),
        f("entropy_ratio")
    )
}

/// The report as text.
pub fn report_text(r: &serde_json::Value) -> String {
    let c = &r["classifier"];
    let mut s = format!(
        "classifier {} ({}test accuracy {:.4}); features {FEATURES}-d, FID against the {} test digits\n",
        c["path"].as_str().unwrap_or(""),
        if c["trained_now"].as_bool() == Some(true) {
            format!("trained now in {:.1} s, ", c["train_seconds"].as_f64().unwrap_or(0.0))
        } else {
            String::new()
        },
        c["test_accuracy"].as_f64().unwrap_or(0.0),
        r["test_n"],
    );
    s += &format!("samples: {}\n", r["source"].as_str().unwrap_or(""));
    s += &row("samples", r);
    s += &row("sanity: train digits", &r["sanity"]["train_vs_test"]);
    s += &row("sanity: uniform noise", &r["sanity"]["noise"]);
    s += &format!(
        "predicted labels 0-9: {}\n",
        r["label_histogram"]
            .as_array()
            .map(|h| h
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    );
    let nn = &r["nn"];
    s += &format!(
        "nearest training digit (mean distance, first {} of 60000 training digits searched): samples {:.4} (first {}), test digits {:.4} (first {})\n",
        nn["train_searched"],
        r["nn_distance_samples"].as_f64().unwrap_or(f64::NAN),
        nn["samples"],
        r["nn_distance_test"].as_f64().unwrap_or(f64::NAN),
        nn["test"],
    );
    s += &format!(
        "{:.1} s on {}\n",
        r["seconds"].as_f64().unwrap_or(0.0),
        r["adapter"].as_str().unwrap_or("")
    );
    s
}
