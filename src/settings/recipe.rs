//! Recipes: the preset files (`presets/*.toml`, built into the program) and `train --config
//! FILE`, resolved into the stages a run trains and the sampler settings its folder records.
//!
//! A file is a layer over the seed preset (`presets/seed.toml`, which names every key), or over
//! the preset its `preset = "NAME"` key names; flags are the last layer. Its top-level keys are
//! training settings; `[[stage]]` tables (each with a `name`, a `share` of the budget and the
//! settings it changes) make a staged recipe, trained stage after stage into `OUT/NAME/`; the
//! `[sample]` table holds the sampler settings of the run (model paths relative to the run
//! folder). A run writes its resolved recipe to `OUT/config.toml`: `train --config` of that
//! file repeats the run, and `sample --run` / `eval --run` read its `[sample]` table.

use super::sample::{SampleFlags, SampleSettings};
use super::train::{TrainFlags, TrainSettings};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The recipes shipped as files in `presets/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The article's model: P=10, O=4, 3 layers of 20 heads x 100 (about 7.8 M weights). It
    /// wants a GPU.
    Seed,
    /// The author's notebook: P=10, O=4, 1 layer of 100 heads x 100 (about 13 M weights).
    Notebook,
    /// A small model for tests: P=6, O=2, 1 layer of 2 heads x 8.
    Tiny,
    /// The best digits per minute: a whole-image model, a weaker guide and a low-level
    /// refiner, trained one after the other, sampled with autoguidance.
    Fast,
    /// The fast recipe, class-conditional: `sample --run OUT --digit 7` draws sevens
    /// (classifier-free guidance beside the autoguidance).
    Digits,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Seed => "seed",
            Preset::Notebook => "notebook",
            Preset::Tiny => "tiny",
            Preset::Fast => "fast",
            Preset::Digits => "digits",
        }
    }

    /// The file's text.
    pub fn text(self) -> &'static str {
        match self {
            Preset::Seed => include_str!("../../presets/seed.toml"),
            Preset::Notebook => include_str!("../../presets/notebook.toml"),
            Preset::Tiny => include_str!("../../presets/tiny.toml"),
            Preset::Fast => include_str!("../../presets/fast.toml"),
            Preset::Digits => include_str!("../../presets/digits.toml"),
        }
    }

    fn from_name(name: &str) -> Option<Preset> {
        <Preset as clap::ValueEnum>::from_str(name, false).ok()
    }

    /// The preset's model (its sampled stage's).
    pub fn model(self) -> ModelConfig {
        let r = Recipe::load(&Source::Preset(self), &TrainFlags::default())
            .expect("the presets are valid recipes");
        r.sampled_stage()
            .settings
            .model()
            .expect("the presets are valid models")
    }
}

/// Where a recipe comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Preset(Preset),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Preset(p) => write!(f, "preset {}", p.name()),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One file's keys.
#[derive(Clone, Debug, Default)]
struct Layer {
    preset: Option<Preset>,
    top: TrainFlags,
    stages: Option<Vec<StageLayer>>,
    sample: SampleFlags,
}

/// A `[[stage]]` table.
#[derive(Clone, Debug)]
struct StageLayer {
    name: String,
    share: Option<f64>,
    flags: TrainFlags,
}

/// One stage of a resolved recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Its folder under the run's (None: a recipe of one stage, trained in the run folder).
    pub name: Option<String>,
    /// Its share of the budget.
    pub share: f64,
    pub settings: TrainSettings,
    /// The keys its table sets (without those the flags set), for config.toml.
    overrides: TrainFlags,
}

impl Stage {
    /// Its folder in run folder `out`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        match &self.name {
            Some(n) => out.join(n),
            None => out.to_path_buf(),
        }
    }

    /// "stage guide" (or "" for a recipe of one stage), for messages.
    pub fn label(&self) -> String {
        stage_label(self.name.as_deref())
    }

    /// "stage guide: " before a line of a staged recipe, "" for a single model.
    pub fn prefix(&self) -> String {
        stage_prefix(self.name.as_deref())
    }
}

/// "stage NAME" for a named stage, "" for the single model of a one-stage recipe: the one
/// place messages name a stage.
pub fn stage_label(name: Option<&str>) -> String {
    name.map(|n| format!("stage {n}")).unwrap_or_default()
}

/// [`stage_label`] followed by ": ", or "" (the start of a line about a stage).
pub fn stage_prefix(name: Option<&str>) -> String {
    name.map(|n| format!("{}: ", stage_label(Some(n))))
        .unwrap_or_default()
}

/// A resolved recipe: the stages to train and the sampler settings of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub source: Source,
    /// The top-level settings (every stage's, unless its table changes them).
    pub common: TrainSettings,
    pub stages: Vec<Stage>,
    /// The sampler settings, model paths relative to the run folder.
    pub sample: SampleSettings,
}

/// The name of the resolved recipe in a run folder.
pub const CONFIG_FILE: &str = "config.toml";

impl Recipe {
    /// The recipe of `source` with the flags `cli` over it; every stage validated.
    pub fn load(source: &Source, cli: &TrainFlags) -> Result<Recipe> {
        let layers = layers(source)?;
        let top = layers
            .iter()
            .fold(TrainFlags::default(), |b, l| l.top.over(&b));
        let sample = layers
            .iter()
            .fold(SampleFlags::default(), |b, l| l.sample.over(&b));
        let stage_layers = layers.iter().rev().find_map(|l| l.stages.clone());
        let complete = |f: TrainFlags, what: &str| {
            TrainSettings::from_complete(f)
                .map_err(|m| Error::config(format!("{source}{what}: {m}")))
        };
        let mut common = complete(top.clone(), "")?;
        common.apply(cli);
        let stages = match stage_layers {
            None => vec![Stage {
                name: None,
                share: 1.0,
                settings: common.clone(),
                overrides: TrainFlags::default(),
            }],
            Some(list) => staged(source, &list, &top, cli)?,
        };
        let sample = SampleSettings::from_complete(sample)
            .map_err(|m| Error::config(format!("{source} [sample]: {m}")))?;
        let r = Recipe {
            source: source.clone(),
            common,
            stages,
            sample,
        };
        r.validate()?;
        Ok(r)
    }

    /// Whether the stages train into folders of their own.
    pub fn is_staged(&self) -> bool {
        self.stages[0].name.is_some()
    }

    /// The stage whose checkpoint `[sample]` samples (checked to exist by [`Recipe::load`]).
    pub fn sampled_stage(&self) -> &Stage {
        self.sample
            .checkpoint
            .as_deref()
            .and_then(|p| self.stage_of(p))
            .expect("a loaded recipe samples one of its stages")
    }

    /// The stage whose checkpoint `path` (relative to the run folder) is, if any.
    pub fn stage_of(&self, path: &Path) -> Option<&Stage> {
        let file = path.file_name()?.to_str()?;
        if !["checkpoint.safetensors", "best.safetensors"].contains(&file) {
            return None;
        }
        let dir = path.parent().and_then(|d| d.to_str()).unwrap_or("");
        self.stages
            .iter()
            .find(|s| s.name.as_deref().unwrap_or("") == dir)
    }

    fn validate(&self) -> Result<()> {
        for s in &self.stages {
            s.settings.validate().map_err(|e| {
                let at = if s.label().is_empty() {
                    String::new()
                } else {
                    format!(", {}", s.label())
                };
                Error::config(format!("{}{at}: {}", self.source, e.message))
            })?;
        }
        self.validate_sample()
    }

    /// Each model of `[sample]` must be a checkpoint of one of the stages, of the same alpha
    /// and n_max as the sampled model's stage; the sampler settings must be valid for it.
    fn validate_sample(&self) -> Result<()> {
        let s = &self.sample;
        let bad = |m: String| Err(Error::config(format!("{} [sample]: {m}", self.source)));
        let Some(main) = &s.checkpoint else {
            return bad("checkpoint is missing (the sampled stage's checkpoint)".into());
        };
        let paths = std::iter::once(main)
            .chain(&s.guide)
            .chain(s.refiner.iter().map(|r| &r.checkpoint));
        let mut found = Vec::new();
        for p in paths {
            match self.stage_of(p) {
                Some(stage) => found.push(stage),
                None => {
                    return bad(format!(
                        "{} is not a checkpoint of this recipe's stages ({})",
                        p.display(),
                        self.stage_names()
                    ))
                }
            }
        }
        let m = &found[0].settings;
        if let Some(o) = found
            .iter()
            .find(|o| o.settings.alpha != m.alpha || o.settings.n_max != m.n_max)
        {
            return bad(format!(
                "{} has alpha {} and n-max {}, the sampled model {} and {}",
                o.label(),
                o.settings.alpha,
                o.settings.n_max,
                m.alpha,
                m.n_max
            ));
        }
        s.schedule(m.alpha as f32, m.n_max)
            .map(|_| ())
            .map_err(|e| Error::config(format!("{} [sample]: {}", self.source, e.message)))
    }

    fn stage_names(&self) -> String {
        if !self.is_staged() {
            return "checkpoint.safetensors or best.safetensors".into();
        }
        let names: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{}/", s.name.as_deref().unwrap_or("")))
            .collect();
        format!("checkpoints in {}", names.join(", "))
    }

    /// The resolved recipe as a TOML file that [`Recipe::load`] reads back to the same recipe
    /// (`OUT/config.toml`).
    pub fn to_toml(&self) -> String {
        let mut doc = toml::Table::try_from(&self.common).expect("settings serialise");
        if self.is_staged() {
            let stages: Vec<toml::Value> = self
                .stages
                .iter()
                .map(|s| {
                    let mut t = toml::Table::new();
                    t.insert("name".into(), s.name.clone().unwrap_or_default().into());
                    t.insert("share".into(), s.share.into());
                    t.extend(toml::Table::try_from(&s.overrides).expect("flags serialise"));
                    toml::Value::Table(t)
                })
                .collect();
            doc.insert("stage".into(), stages.into());
        }
        let sample = toml::Table::try_from(&self.sample).expect("settings serialise");
        doc.insert("sample".into(), sample.into());
        format!(
            "# The resolved recipe of this run ({}): every training setting, each stage's\n\
             # changes and the sampler settings. `train --config` of this file repeats the run;\n\
             # `sample --run` and `eval --run` of its folder use the [sample] table.\n\n{}",
            self.source,
            toml::to_string(&doc).expect("a table serialises")
        )
    }
}

/// The stages of `list` over the top-level keys `top` and under the flags `cli`, checked:
/// names usable as folder names and unique, budgets set by shares that sum to 1.
fn staged(
    source: &Source,
    list: &[StageLayer],
    top: &TrainFlags,
    cli: &TrainFlags,
) -> Result<Vec<Stage>> {
    let bad = |m: String| Err(Error::config(format!("{source}: {m}")));
    if list.is_empty() {
        return bad("a recipe with [[stage]] tables needs at least one".into());
    }
    let given = list.iter().filter(|s| s.share.is_some()).count();
    if given != 0 && given != list.len() {
        return bad("give every stage a share, or none (then they share alike)".into());
    }
    let mut stages: Vec<Stage> = Vec::new();
    for s in list {
        let ok_name = !s.name.is_empty()
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return bad(format!(
                "stage name {:?} must be letters, digits, - or _ (it names a folder)",
                s.name
            ));
        }
        if stages.iter().any(|o| o.name.as_deref() == Some(&s.name)) {
            return bad(format!("two stages are named {:?}", s.name));
        }
        if s.flags.minutes.is_some() {
            return bad(format!(
                "stage {}: minutes is the whole recipe's budget; give the stage a share of it",
                s.name
            ));
        }
        let share = s.share.unwrap_or(1.0 / list.len() as f64);
        if !(share > 0.0 && share <= 1.0) {
            return bad(format!(
                "stage {}: share must be in (0, 1], got {share}",
                s.name
            ));
        }
        let mut settings = TrainSettings::from_complete(s.flags.over(top))
            .map_err(|m| Error::config(format!("{source}, stage {}: {m}", s.name)))?;
        settings.apply(cli);
        let mut budget = top.minutes;
        if let Some(m) = cli.minutes {
            budget = Some(m);
        }
        settings.minutes = budget.map(|m| m * share);
        stages.push(Stage {
            name: Some(s.name.clone()),
            share,
            settings,
            overrides: s.flags.without(cli),
        });
    }
    let sum: f64 = stages.iter().map(|s| s.share).sum();
    if (sum - 1.0).abs() > 1e-6 {
        return bad(format!("the stages' shares sum to {sum}, not 1"));
    }
    Ok(stages)
}

/// The layers of `source`, lowest first: the seed, the preset a file names (if any), the file.
fn layers(source: &Source) -> Result<Vec<Layer>> {
    let seed = parse_layer(Preset::Seed.text(), "preset seed")?;
    let top = match source {
        Source::Preset(Preset::Seed) => return Ok(vec![seed]),
        Source::Preset(p) => parse_layer(p.text(), &source.to_string())?,
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(format!("cannot read the recipe {}: {e}", path.display()))
            })?;
            parse_layer(&text, &source.to_string())?
        }
    };
    let mut out = vec![seed];
    match top.preset {
        Some(Preset::Seed) | None => {}
        Some(p) => out.push(parse_layer(p.text(), &format!("preset {}", p.name()))?),
    }
    out.push(top);
    Ok(out)
}

/// The keys of one file.
fn parse_layer(text: &str, source: &str) -> Result<Layer> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        Error::config(format!("{source}{line}: {}", e.message()))
    })?;
    let preset = match table.remove("preset") {
        None => None,
        Some(toml::Value::String(name)) => Some(Preset::from_name(&name).ok_or_else(|| {
            Error::config(format!(
                "{source}: preset {name:?} is not one of seed, notebook, tiny, fast, digits"
            ))
        })?),
        Some(v) => {
            return Err(Error::config(format!(
                "{source}: preset must be a name (a string), got {v}"
            )))
        }
    };
    let stages = match table.remove("stage") {
        None => None,
        Some(toml::Value::Array(list)) => Some(
            list.into_iter()
                .map(|v| parse_stage(v, source))
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => {
            return Err(Error::config(format!(
                "{source}: stages are [[stage]] tables"
            )))
        }
    };
    let sample = match table.remove("sample") {
        None => SampleFlags::default(),
        Some(toml::Value::Table(t)) => keys::<SampleFlags>(t, &format!("{source} [sample]"))?,
        Some(_) => return Err(Error::config(format!("{source}: sample must be a table"))),
    };
    Ok(Layer {
        preset,
        top: keys::<TrainFlags>(table, source)?,
        stages,
        sample,
    })
}

fn parse_stage(v: toml::Value, source: &str) -> Result<StageLayer> {
    let toml::Value::Table(mut t) = v else {
        return Err(Error::config(format!(
            "{source}: stages are [[stage]] tables"
        )));
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(n)) => n,
        _ => {
            return Err(Error::config(format!(
                "{source}: every [[stage]] needs a name (a string)"
            )))
        }
    };
    let share = match t.remove("share") {
        None => None,
        Some(toml::Value::Float(f)) => Some(f),
        Some(toml::Value::Integer(i)) => Some(i as f64),
        Some(v) => {
            return Err(Error::config(format!(
                "{source}, stage {name}: share must be a number, got {v}"
            )))
        }
    };
    let flags = keys::<TrainFlags>(t, &format!("{source}, stage {name}"))?;
    Ok(StageLayer { name, share, flags })
}

/// The overrides a table holds; an unknown key or a value of the wrong type is an error that
/// names the key.
fn keys<F: serde::de::DeserializeOwned>(table: toml::Table, source: &str) -> Result<F> {
    for (k, v) in &table {
        let one = toml::Table::from_iter([(k.clone(), v.clone())]);
        toml::Value::Table(one).try_into::<F>().map_err(|e| {
            let msg = e.to_string();
            let why = if msg.contains("unknown field") {
                "unknown key".to_string()
            } else {
                msg.trim().trim_end_matches('.').to_string()
            };
            Error::config(format!("{source}: {k}: {why}"))
        })?;
    }
    toml::Value::Table(table)
        .try_into::<F>()
        .map_err(|e| Error::config(format!("{source}: {e}")))
}

/// The `[sample]` settings of run folder `dir` (its config.toml), model paths made relative
/// to `dir`.
pub fn run_sample_settings(dir: &Path) -> Result<SampleSettings> {
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        return Err(Error::config(format!(
            "{} is not a run folder: it has no {CONFIG_FILE} (train writes one); give --checkpoint PATH instead",
            dir.display()
        )));
    }
    let layers = layers(&Source::File(path))?;
    let flags = layers
        .iter()
        .fold(SampleFlags::default(), |b, l| l.sample.over(&b));
    let s = SampleSettings::from_complete(flags)
        .map_err(|m| Error::config(format!("{} [sample]: {m}", dir.display())))?;
    Ok(s.relative_to(dir))
}

/// The sampler settings without a run folder: the seed preset's `[sample]` table (the
/// article's sampler), with no model.
pub fn default_sample_settings() -> SampleSettings {
    let seed = parse_layer(Preset::Seed.text(), "preset seed").expect("the seed preset parses");
    let mut s = SampleSettings::from_complete(seed.sample).expect("the seed preset is complete");
    s.checkpoint = None;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `precision` is a `[sample]` key: f32 by default (the seed preset), f16 when a run's
    /// table says so, and a value of neither is an error naming the key.
    #[test]
    fn precision_is_a_sample_key() {
        use crate::settings::sample::Precision;
        assert_eq!(default_sample_settings().precision, Precision::F32);
        let layer = parse_layer("[sample]\nprecision = \"f16\"\n", "test").unwrap();
        assert_eq!(layer.sample.precision, Some(Precision::F16));
        let e = parse_layer("[sample]\nprecision = \"f8\"\n", "test").unwrap_err();
        assert!(e.to_string().contains("precision"), "{e}");
    }

    #[test]
    fn presets_have_spec_shapes() {
        let s = Preset::Seed.model();
        assert_eq!(
            (s.geometry.grid(), s.geometry.tokens(), s.geometry.dim()),
            (2, 5, 324)
        );
        assert!((7_700_000..7_900_000).contains(&s.parameter_count()));
        let n = Preset::Notebook.model();
        assert!((12_900_000..13_100_000).contains(&n.parameter_count()));
        let t = Preset::Tiny.model();
        assert_eq!(
            (t.geometry.grid(), t.geometry.tokens(), t.geometry.dim()),
            (4, 17, 100)
        );
    }
}
