//! Every setting of the sampling loop, declared once ([`crate::settings::options!`]): the flags
//! of `sample` and `eval`, the `[sample]` table of a run's config.toml (the recipe a run was
//! measured best with), and what their reports print. The defaults are the `[sample]` table of
//! `presets/seed.toml` (the article's sampler).

use crate::error::{Error, Result};
use crate::math::schedule::Schedule;
use std::path::PathBuf;

/// Which weights of a checkpoint to sample with.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The exponential moving average of the weights (the default, when present).
    Ema,
    /// The raw weights.
    Raw,
}

/// How the models sample: weights and activations in f32, or stored in IEEE half precision
/// with every product, sum and softmax still in f32 (the image, the noise and the step too).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

/// `--refiner PATH@LEVEL`: a model called instead of the main one at the steps whose level is
/// at most LEVEL.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Refiner {
    pub checkpoint: PathBuf,
    pub from_level: u32,
}

impl std::str::FromStr for Refiner {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad =
            || format!("expected PATH@LEVEL (e.g. runs/low/checkpoint.safetensors@20), got {s:?}");
        let (path, level) = s.rsplit_once('@').ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        Ok(Refiner {
            checkpoint: PathBuf::from(path),
            from_level: level.parse().map_err(|_| bad())?,
        })
    }
}

impl TryFrom<String> for Refiner {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Refiner> for String {
    fn from(r: Refiner) -> String {
        format!("{}@{}", r.checkpoint.display(), r.from_level)
    }
}

crate::settings::options! {
    /// The settings of one sampling run: the models and the loop.
    pub struct SampleSettings / SampleFlags {
        /// The model's checkpoint (in a run folder's config.toml: relative to the folder).
        #[arg(value_name = "PATH")]
        checkpoint: opt PathBuf,
        /// Denoising steps n' (a' = a^(n_max / n')).
        steps: req u32,
        /// Step scale s: each step divides by a'^s (1 plain, 1.5 trusts the model more).
        #[arg(allow_negative_numbers = true)]
        step_scale: req f64,
        /// Share of fresh noise in each step, in [0, 1]: 0 is the article's deterministic
        /// loop, 1 DDPM's ancestral step (it lets later steps correct earlier errors).
        #[arg(allow_negative_numbers = true)]
        eta: req f64,
        /// Clamp each step's digit estimate X_hat = (A - (1 - a'^n) N_hat) / a'^n to the pixel
        /// range and step with the noise it implies (DDPM's x0 clipping); `--clip false` turns
        /// it off.
        #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        clip: req bool,
        /// From level N down (0: off), blend each pixel's predicted noise with the exact noise
        /// of a background pixel (-0.5), weighted by the posterior that it is background under
        /// the mixture prior: a finishing step for the last step or two.
        #[arg(value_name = "N")]
        background: req u32,
        /// The step scale at the steps whose level is at most low-from, with step-scale above
        /// it (e.g. 1 where the shapes are decided, 1.5 where the strokes are).
        #[arg(value_name = "S", allow_negative_numbers = true)]
        low_step_scale: opt f64,
        /// The highest level that low-step-scale applies to.
        #[arg(value_name = "LEVEL")]
        low_from: opt u32,
        /// A weaker model of the same task (smaller, or trained less) to guide the model's
        /// steps away from (autoguidance, Karras et al. 2024): at the model's own steps (not a
        /// refiner's) both are called and the step uses N_guide + W (N_model - N_guide).
        /// Same alpha and n_max; any shape.
        #[arg(value_name = "PATH")]
        guide: opt PathBuf,
        /// The guidance weight W of the guide (1: the model alone; e.g. 1.5 to 3).
        #[arg(value_name = "W", allow_negative_numbers = true)]
        guidance: opt f64,
        /// Call the guide only at the steps whose level is at most LEVEL (default: every step
        /// of the model).
        #[arg(value_name = "LEVEL")]
        guide_from: opt u32,
        /// Classifier-free guidance weight W of a class-conditional model: each step uses
        /// N_uncond + W (N_cond - N_uncond), N_uncond the model told "no label" (1: the
        /// conditional model alone). With --guide, autoguidance is applied to this estimate.
        /// Default for a class-conditional model: 1.5 (the digits preset: 1.35 beside
        /// --guidance 1.5).
        #[arg(value_name = "W", allow_negative_numbers = true)]
        cfg: opt f64,
        /// Classifier-free guidance only at the steps whose level is at least LEVEL (default
        /// 0: every step). Guiding the levels below 100 makes the digits surer at a cost in
        /// FID; 100 gives the best FID, and a little less agreement with the digit asked for.
        #[arg(value_name = "LEVEL")]
        cfg_min_level: opt u32,
        /// PATH@LEVEL: a model called instead of the main one at the steps whose level is at
        /// most LEVEL (an expert for the low levels, e.g. trained with a small level-max).
        /// Repeat it to chain experts, levels decreasing: `--refiner MID@100 --refiner LOW@20`
        /// hands levels 100..21 to MID and 20..1 to LOW. Same alpha and n_max; any shape.
        #[arg(value_name = "PATH@LEVEL")]
        refiner: req Vec<Refiner>,
        /// Which weights of each checkpoint to use: the EMA (falling back to the raw weights
        /// when a checkpoint has none) or the raw (last step's) ones.
        #[arg(value_enum)]
        weights: req Weights,
        /// How the models' weights and activations are stored on the GPU: f32, or f16 (half
        /// the bytes; every sum and the softmax in f32; the adapter needs shader-f16).
        #[arg(value_enum)]
        precision: req Precision,
        /// Seed of the initial noise (and of each step's fresh noise).
        seed: req u64,
    }
}

impl SampleSettings {
    /// The loop's schedule for a model trained with `alpha` and `n_max`, with every check of
    /// these settings that the models' weights are not needed for.
    pub fn schedule(&self, alpha: f32, n_max: u32) -> Result<Schedule> {
        let bad = |m: &str| Err(Error::config(m));
        match (self.low_step_scale, self.low_from) {
            (Some(_), None) | (None, Some(_)) => {
                return bad("low-step-scale and low-from come together")
            }
            (_, Some(0)) => {
                return bad(
                    "low-from must be at least 1 (level 0 is the finished digit: no step is there)",
                )
            }
            _ => {}
        }
        match (&self.guide, self.guidance) {
            (Some(_), None) => return bad("a guide needs its weight: give --guidance W"),
            (None, Some(_)) => return bad("--guidance W needs a guide: give --guide PATH"),
            (None, None) if self.guide_from.is_some() => {
                return bad("guide-from needs a guide: give --guide PATH")
            }
            (_, Some(w)) => check_guidance(w)?,
            _ => {}
        }
        check_guide_from(self.guide_from)?;
        if let Some(w) = self.cfg {
            check_cfg(w)?;
        }
        if let Some(l) = self.cfg_min_level.filter(|&l| l > n_max) {
            return Err(Error::config(format!(
                "cfg-min-level {l} is above n-max {n_max}: no step would be guided"
            )));
        }
        let levels: Vec<u32> = self.refiner.iter().map(|r| r.from_level).collect();
        check_refine_from(&levels)?;
        let s = Schedule {
            alpha,
            n_max,
            steps: self.steps,
            scale: self.step_scale as f32,
            eta: self.eta as f32,
            clip: self.clip,
            background: self.background,
            low_scale: self.low_step_scale.unwrap_or(self.step_scale) as f32,
            low_from: self.low_from.unwrap_or(0),
        };
        s.validate()?;
        Ok(s)
    }

    /// The settings in words, for reports: "n'=50 s=1 eta=1 clip low s=1.5 from 60 guide PATH
    /// w=2 from 250 refiner PATH from 20".
    pub fn describe(&self) -> String {
        let mut d = format!("n'={} s={} eta={}", self.steps, self.step_scale, self.eta);
        if self.precision == Precision::F16 {
            d += " f16";
        }
        if self.clip {
            d += " clip";
        }
        if self.background > 0 {
            d += &format!(" background {}", self.background);
        }
        if let (Some(s), Some(l)) = (self.low_step_scale, self.low_from) {
            d += &format!(" low s={s} from {l}");
        }
        if let (Some(p), Some(w)) = (&self.guide, self.guidance) {
            d += &format!(" guide {} w={w}", p.display());
            if let Some(l) = self.guide_from {
                d += &format!(" from {l}");
            }
        }
        for r in &self.refiner {
            d += &format!(" refiner {} from {}", r.checkpoint.display(), r.from_level);
        }
        if let Some(w) = self.cfg {
            d += &format!(" cfg={w}");
        }
        if let Some(l) = self.cfg_min_level {
            d += &format!(" cfg-min-level={l}");
        }
        d
    }

    /// The same settings with every model path (checkpoint, guide, refiners) that is
    /// relative taken from `dir` (a run folder).
    pub fn relative_to(mut self, dir: &std::path::Path) -> SampleSettings {
        let join = |p: &PathBuf| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.clone()
            }
        };
        self.checkpoint = self.checkpoint.as_ref().map(join);
        self.guide = self.guide.as_ref().map(join);
        for r in &mut self.refiner {
            r.checkpoint = join(&r.checkpoint);
        }
        self
    }
}

/// The guidance weight: a positive finite number.
pub fn check_guidance(weight: f64) -> Result<()> {
    if !(weight.is_finite() && weight > 0.0) {
        return Err(Error::config(format!(
            "guidance must be a positive number (1: no guidance), got {weight}"
        )));
    }
    Ok(())
}

/// The digits asked for: at least one, each in 0..=9.
pub fn check_digits(digits: &[u32]) -> Result<()> {
    if digits.is_empty() {
        return Err(Error::config(
            "no digit asked for: give at least one of 0..9",
        ));
    }
    if let Some(d) = digits.iter().find(|&&d| d >= crate::config::CLASSES) {
        return Err(Error::config(format!("digit {d} is not one of 0..9")));
    }
    Ok(())
}

/// The classifier-free guidance weight of a class-conditional model when none is given: the
/// best measured without a guide (docs/experiments/16-class-conditional.md; the digits
/// preset names its own beside its guide).
pub const DEFAULT_CFG: f64 = 1.5;
/// The lowest level guided by classifier-free guidance when none is given: every step.
pub const DEFAULT_CFG_MIN_LEVEL: u32 = 0;

/// Classifier-free guidance's weight: a positive finite number (1: conditional alone).
pub fn check_cfg(weight: f64) -> Result<()> {
    if !(weight.is_finite() && weight > 0.0) {
        return Err(Error::config(format!(
            "cfg must be a positive finite number (1: the conditional model alone), got {weight}"
        )));
    }
    Ok(())
}

/// `guide-from`: at least 1 (level 0 is the finished digit: no step is there).
pub fn check_guide_from(level: Option<u32>) -> Result<()> {
    if level == Some(0) {
        return Err(Error::config(
            "guide-from must be at least 1 (level 0 is the finished digit: no step is there)",
        ));
    }
    Ok(())
}

/// The refiners' levels: each at least 1 and decreasing (each later refiner takes the lower
/// levels).
pub fn check_refine_from(levels: &[u32]) -> Result<()> {
    if levels.contains(&0) {
        return Err(Error::config(
            "refiner levels (PATH@LEVEL) must be at least 1",
        ));
    }
    if let Some(w) = levels.windows(2).find(|w| w[1] >= w[0]) {
        return Err(Error::config(format!(
            "refiner levels must decrease (each later refiner takes lower levels): {} then {}",
            w[0], w[1]
        )));
    }
    Ok(())
}
