//! Samples judged digit by digit: each digit's FID against that digit's test images (in the
//! same feature space as the overall FID); for class-conditional samples, grouped by the
//! digit each was asked to be, with how often the classifier reads it as that digit (overall
//! and per digit); for unlabelled samples, grouped by the digit the classifier reads.

use super::classifier::{Classifier, FEATURES};
use super::fid;
use crate::config::CLASSES;
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One digit's row: the samples asked to be it (or read as it), the fraction the classifier
/// reads as it (labelled samples), and their FID against the test images of that digit
/// (n_test of them).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DigitRow {
    pub digit: u32,
    pub n: usize,
    pub agreement: Option<f64>,
    pub fid: Option<f64>,
    pub n_test: usize,
}

/// The per-digit report of a set of samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DigitsReport {
    /// Where the labels came from (the sampler, an IDX label file, or the classifier's
    /// reading of unlabelled samples).
    pub labels: String,
    /// The fraction of all samples read as the digit asked for (labelled samples).
    pub agreement: Option<f64>,
    /// The digits, in order 0..9 (digits with no sample are left out).
    pub per_digit: Vec<DigitRow>,
}

/// What the classifier reads in unlabelled samples, as [`by_digit`]'s source.
pub const READ_BY_CLASSIFIER: &str = "none: grouped by the digit the classifier reads";

/// The fraction of `predicted` equal to `asked` (both one label per sample; 0 when empty).
pub fn agreement(predicted: &[u32], asked: &[u8]) -> f64 {
    let same = predicted
        .iter()
        .zip(asked)
        .filter(|(p, a)| **p == **a as u32)
        .count();
    same as f64 / predicted.len().max(1) as f64
}

/// The rows of `asked` (one label per sample) whose label is `digit`.
fn rows_of(asked: &[u8], digit: u8) -> Vec<usize> {
    (0..asked.len()).filter(|&i| asked[i] == digit).collect()
}

/// The features of rows `rows` of `features` ([n, FEATURES]).
fn pick(features: &[f32], rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&i| &features[i * FEATURES..(i + 1) * FEATURES])
        .copied()
        .collect()
}

/// The report of `pixels` (28x28 bytes each), sample i asked to be digit `asked[i]` (labels
/// from `source`); without labels, grouped by the classifier's reading. FID per digit needs
/// at least two samples of it (and is biased at small n: read it beside n).
pub fn by_digit(
    c: &Classifier,
    gpu: &Gpu,
    mnist: &Mnist,
    pixels: &[u8],
    labels: Option<(String, Vec<u8>)>,
) -> Result<DigitsReport> {
    let samples = c.infer(gpu, pixels)?;
    let predicted = samples.predictions();
    let labelled = labels.is_some();
    let (source, asked) = labels.unwrap_or_else(|| {
        let read = predicted.iter().map(|&p| p as u8).collect();
        (READ_BY_CLASSIFIER.to_string(), read)
    });
    if asked.len() != samples.n {
        return Err(Error::data(format!(
            "{source}: {} labels for {} samples",
            asked.len(),
            samples.n
        )));
    }
    if let Some(d) = asked.iter().find(|&&d| d as u32 >= CLASSES) {
        return Err(Error::data(format!(
            "{source}: label {d} is not a digit 0..9"
        )));
    }
    let test = c.infer(gpu, &mnist.test.pixels)?;
    let per_digit = (0..CLASSES as u8)
        .filter_map(|d| {
            let rows = rows_of(&asked, d);
            if rows.is_empty() {
                return None;
            }
            let test_rows = rows_of(&mnist.test_labels, d);
            let preds: Vec<u32> = rows.iter().map(|&i| predicted[i]).collect();
            let fid = (rows.len() >= 2).then(|| {
                let s = fid::stats(&pick(&samples.features, &rows), FEATURES);
                let t = fid::stats(&pick(&test.features, &test_rows), FEATURES);
                fid::fid(&s, &t)
            });
            Some(DigitRow {
                digit: d as u32,
                n: rows.len(),
                agreement: labelled.then(|| agreement(&preds, &vec![d; rows.len()])),
                fid,
                n_test: test_rows.len(),
            })
        })
        .collect();
    Ok(DigitsReport {
        labels: source,
        agreement: labelled.then(|| agreement(&predicted, &asked)),
        per_digit,
    })
}

impl DigitsReport {
    /// The report as text: the overall agreement, then a table of the digits.
    pub fn text(&self) -> String {
        let mut s = match self.agreement {
            Some(a) => format!(
                "digits asked for (labels: {}): the classifier agrees on {:.2} %\n",
                self.labels,
                100.0 * a
            ),
            None => "digits as the classifier reads them (no labels)\n".to_string(),
        };
        s += "digit      n  agreement  FID (vs that digit's test images)\n";
        let percent = |a: Option<f64>| a.map_or("-".into(), |a| format!("{:.2} %", 100.0 * a));
        for r in &self.per_digit {
            let fid = r.fid.map_or("-".to_string(), |f| format!("{f:.3}"));
            s += &format!(
                "{:>5} {:>6} {:>11}  {fid} (n_test {})\n",
                r.digit,
                r.n,
                percent(r.agreement),
                r.n_test
            );
        }
        s
    }
}
