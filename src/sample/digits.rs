//! The digits asked of a class-conditional model (`--digit`, `--digits`, `--per-digit`,
//! `--cfg`), shared by `sample` and `eval`: the flags, their resolution into the sampler's
//! [`Classes`], and the labelled grid of `--per-digit`.

use super::Classes;
use crate::config::{ModelConfig, CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::settings::sample::{check_cfg, check_digits, SampleSettings};
use crate::settings::sample::{DEFAULT_CFG, DEFAULT_CFG_MIN_LEVEL};

/// Flags naming the digits to draw (`sample`, `eval`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DigitArgs {
    /// Draw this digit (0..9) only. Needs a class-conditional model (train --classes).
    #[arg(long, value_name = "D", conflicts_with = "digits")]
    pub digit: Option<u32>,
    /// Draw these digits, cycled over the count, e.g. 0,3,7 (default for a class-conditional
    /// model: 0,1,..,9 cycled).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub digits: Option<Vec<u32>>,
}

impl DigitArgs {
    /// The digits asked for, if any.
    pub fn asked(&self) -> Option<Vec<u32>> {
        match (self.digit, &self.digits) {
            (Some(d), _) => Some(vec![d]),
            (None, Some(list)) => Some(list.clone()),
            (None, None) => None,
        }
    }
}

/// Every digit 0..9, `per` of each in a row: the digits of `--per-digit`.
pub fn rows_of_each(per: usize) -> Vec<u32> {
    (0..CLASSES)
        .flat_map(|d| std::iter::repeat_n(d, per))
        .collect()
}

/// The sampler's classes for `model`: a class-conditional model draws the digits asked for
/// (default 0..9 cycled) with the settings' cfg weight and lowest guided level (defaults
/// [`DEFAULT_CFG`], [`DEFAULT_CFG_MIN_LEVEL`]); an
/// unconditional model draws whichever digit the noise leads to, and asking it for digits or
/// a cfg weight is an error.
pub fn classes_for(
    model: &ModelConfig,
    settings: &SampleSettings,
    asked: Option<&[u32]>,
) -> Result<Option<Classes>> {
    if !model.classes {
        return match (asked, settings.cfg, settings.cfg_min_level) {
            (None, None, None) => Ok(None),
            _ => Err(Error::config(
                "--digit, --digits, --per-digit, --cfg and --cfg-min-level need a class-conditional model (train --classes); this one draws unlabelled digits",
            )),
        };
    }
    let digits = asked.map_or_else(|| (0..CLASSES).collect(), <[u32]>::to_vec);
    check_digits(&digits)?;
    let cfg = settings.cfg.unwrap_or(DEFAULT_CFG);
    check_cfg(cfg)?;
    Ok(Some(Classes {
        digits,
        cfg: cfg as f32,
        min_level: settings.cfg_min_level.unwrap_or(DEFAULT_CFG_MIN_LEVEL),
    }))
}

/// `--per-digit`'s picture: ten rows of `per` digits ([10 * per, 784], row d all digit d),
/// each row labelled with its digit on the left. Returns (width, height, grey bytes).
pub fn labelled_rows(images: &[f32], per: usize, zoom: u32) -> (u32, u32, Vec<u8>) {
    use crate::figures::{grid, label, side_by_side, stack, Scale};
    let px = PIXELS as usize;
    let rows: Vec<_> = images
        .chunks(per * px)
        .enumerate()
        .map(|(d, row)| {
            let digits = grid(row, per, zoom as usize, 2, Scale::Data);
            let text = label(&d.to_string(), 5 * (zoom + 1), zoom + 1);
            // The label centred on the row's height.
            let pad = digits.1.saturating_sub(text.1) / 2;
            let blank = (text.0, pad, vec![0u8; (text.0 * pad) as usize]);
            side_by_side(&[stack(&[blank, text]), digits], 0)
        })
        .collect();
    stack(&rows)
}
