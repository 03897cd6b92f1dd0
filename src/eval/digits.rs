//! Class-conditional samples, judged digit by digit: how often the classifier reads each
//! sample as the digit it was asked to be (overall and per digit), and each digit's FID
//! against that digit's test images (in the same feature space as the overall FID).

use super::classifier::{Classifier, CLASSES, FEATURES};
use super::fid;
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One digit's row: the samples asked to be it, the fraction the classifier reads as it, and
/// their FID against the test images of that digit (n_test of them).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DigitRow {
    pub digit: u32,
    pub n: usize,
    pub agreement: f64,
    pub fid: Option<f64>,
    pub n_test: usize,
}

/// The per-digit report of a set of labelled samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DigitsReport {
    /// Where the labels came from (the sampler, or an IDX label file).
    pub labels: String,
    /// The fraction of all samples read as the digit asked for.
    pub agreement: f64,
    /// The digits asked for, in order 0..9 (digits never asked for are left out).
    pub per_digit: Vec<DigitRow>,
}

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

/// The report of `pixels` (28x28 bytes each), sample i asked to be digit `asked[i]`. FID per
/// digit needs at least two samples of it (and is biased at small n: read it beside n).
pub fn by_digit(
    c: &Classifier,
    gpu: &Gpu,
    mnist: &Mnist,
    pixels: &[u8],
    asked: &[u8],
    source: String,
) -> Result<DigitsReport> {
    let samples = c.infer(gpu, pixels)?;
    if asked.len() != samples.n {
        return Err(Error::data(format!(
            "{source}: {} labels for {} samples",
            asked.len(),
            samples.n
        )));
    }
    if let Some(d) = asked.iter().find(|&&d| d as usize >= CLASSES) {
        return Err(Error::data(format!(
            "{source}: label {d} is not a digit 0..9"
        )));
    }
    let test = c.infer(gpu, &mnist.test.pixels)?;
    let predicted = samples.predictions();
    let per_digit = (0..CLASSES as u8)
        .filter_map(|d| {
            let rows = rows_of(asked, d);
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
                agreement: agreement(&preds, &vec![d; rows.len()]),
                fid,
                n_test: test_rows.len(),
            })
        })
        .collect();
    Ok(DigitsReport {
        labels: source,
        agreement: agreement(&predicted, asked),
        per_digit,
    })
}

impl DigitsReport {
    /// The report as text: the overall agreement, then a table of the digits.
    pub fn text(&self) -> String {
        let mut s = format!(
            "asked-for digit (labels: {}): the classifier agrees on {:.2} %\n",
            self.labels,
            100.0 * self.agreement
        );
        s += "digit      n  agreement  FID (vs that digit's test images)\n";
        for r in &self.per_digit {
            let fid = r.fid.map_or("-".to_string(), |f| format!("{f:.3}"));
            s += &format!(
                "{:>5} {:>6} {:>9.2} %  {fid} (n_test {})\n",
                r.digit,
                r.n,
                100.0 * r.agreement,
                r.n_test
            );
        }
        s
    }
}
