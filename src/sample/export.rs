//! The `export-web` command: a run's models and `[sample]` settings as one bundle
//! ([`super::bundle`]) for the browser page. It reads checkpoints only; no GPU is opened.

use super::bundle::{Bundle, Storage};
use super::command::{check_stack, resolve};
use crate::error::{Error, Result};
use crate::settings::sample::SampleFlags;
use serde::Serialize;
use std::path::PathBuf;

/// Flags of `export-web`.
#[derive(clap::Args, Clone, Debug)]
pub struct ExportArgs {
    /// A run folder of `train` (its models, with its config.toml's [sample] settings), or one
    /// checkpoint (with the article's sampler).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// The bundle to write (e.g. web/models/digits.safetensors).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// How the bundle stores the weights: f16 (half the bytes; each weight rounded to the
    /// nearest f16) or f32 (exact).
    #[arg(long, value_enum, default_value = "f16")]
    pub storage: Storage,
    /// The models and the loop (over the run's settings): what the page samples by default.
    #[command(flatten)]
    pub sampling: SampleFlags,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `export-web` wrote.
#[derive(Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub bytes: u64,
    pub storage: Storage,
    /// Each part's name and number of weights.
    pub parts: Vec<(String, usize)>,
    /// The sampler settings the bundle holds, in words.
    pub sample: String,
}

impl ExportReport {
    pub fn text(&self) -> String {
        let parts: Vec<String> = (self.parts.iter())
            .map(|(n, w)| format!("{n} ({w} weights)"))
            .collect();
        format!(
            "wrote {} ({:.2} MiB, {:?}): {}; sampled with {}",
            self.out.display(),
            self.bytes as f64 / (1 << 20) as f64,
            self.storage,
            parts.join(", "),
            self.sample
        )
    }
}

/// Reads the run's models, checks them as `sample` would, and writes the bundle atomically.
pub fn run(a: &ExportArgs) -> Result<ExportReport> {
    let mut flags = a.sampling.clone();
    let run = if a.run.is_dir() {
        Some(a.run.as_path())
    } else {
        if flags.checkpoint.is_some() {
            return Err(Error::config(format!(
                "{} is a checkpoint: --checkpoint cannot name another",
                a.run.display()
            )));
        }
        flags.checkpoint = Some(a.run.clone());
        None
    };
    let s = resolve(run, &flags)?;
    check_stack(&s, None)?;
    let bundle = Bundle::of_settings(&s)?;
    let bytes = bundle.to_bytes(a.storage)?;
    crate::files::write_atomic(&a.out, &bytes)?;
    Ok(ExportReport {
        out: a.out.clone(),
        bytes: bytes.len() as u64,
        storage: a.storage,
        parts: (bundle.parts.iter())
            .map(|p| (p.name.clone(), p.weights.len()))
            .collect(),
        sample: bundle.settings.describe(),
    })
}
