//! The flags of `train`: where the recipe comes from, the settings that override it, and
//! where the run goes.

use crate::error::{Error, Result};
use crate::settings::recipe::{Preset, Recipe, Source, CONFIG_FILE};
use crate::settings::train::TrainFlags;
use std::path::PathBuf;

/// Flags of `train` (without --preset or --config: the seed preset).
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// A recipe shipped with the program (the files in presets/): seed (the article's model,
    /// the default), notebook, tiny, or fast (the best digits per minute).
    #[arg(long, value_enum, conflicts_with = "config")]
    pub preset: Option<Preset>,
    /// A recipe file (TOML, keys named as the flags; see presets/), e.g. a run's
    /// OUT/config.toml to repeat it. The flags below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings over the recipe's (for a staged recipe: over every stage's).
    #[command(flatten)]
    pub settings: TrainFlags,
    /// Folder with the MNIST files (else $MNIST_DIR, else ./data/mnist, downloaded if absent).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The run folder: config.toml, checkpoint.safetensors, best.safetensors, metrics.csv
    /// (a staged recipe: one such folder per stage, OUT/NAME/).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in --out, in the stage it stopped in (its recipe is OUT/config.toml
    /// unless --preset or --config is given).
    #[arg(long)]
    pub resume: bool,
    /// Print one JSON object per logged row instead of text.
    #[arg(long)]
    pub json: bool,
    /// The classifier of eval-every (trained once and cached there when absent, as `eval`
    /// does).
    #[command(flatten)]
    pub classifier: crate::eval::classifier::ClassifierArgs,
}

impl TrainArgs {
    /// Where the recipe comes from: --config, --preset, a resumed run's config.toml, or the
    /// seed preset.
    pub fn source(&self) -> Source {
        if let Some(p) = &self.config {
            return Source::File(p.clone());
        }
        if let Some(p) = self.preset {
            return Source::Preset(p);
        }
        let stored = self.out.join(CONFIG_FILE);
        if self.resume && stored.exists() {
            return Source::File(stored);
        }
        Source::Preset(Preset::Seed)
    }

    /// The recipe these flags ask for, checked.
    pub fn recipe(&self) -> Result<Recipe> {
        Recipe::load(&self.source(), &self.settings)
    }

    /// Checks that --out is free (or, with --resume, holds a run).
    pub fn check_out(&self, recipe: &Recipe) -> Result<()> {
        let first = recipe.stages[0]
            .dir(&self.out)
            .join("checkpoint.safetensors");
        let started = first.exists() || self.out.join(CONFIG_FILE).exists();
        if !self.resume && started {
            return Err(Error::config(format!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                self.out.display()
            )));
        }
        Ok(())
    }
}
