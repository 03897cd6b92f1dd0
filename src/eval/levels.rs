//! `eval --checkpoint CKPT --loss-by-level`: the model's noise-prediction error at single noise
//! levels n, on test digits, beside three baselines computed on the same inputs: the seed's
//! identity (the noisy patch A itself as the noise estimate), the best linear estimate
//! c (A - a^n mean) of `--skip wiener`, the per-pixel posterior mean of `--skip mixture`, and
//! for a `--skip pixel-mixture` model the posterior mean under its own per-position prior. The
//! training loss averages over all levels; this says where a model is weak (it is how the
//! identity skip's weakness at mid and high noise was found).
//!
//! Inputs are made with the CPU reference of the noise and patches (bit-identical to the
//! kernels' noise, tested in tests/noise.rs), uploaded once per level; the model's forward
//! pass runs on the GPU.

use crate::config::Skip;
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::network::Network;
use crate::reference::{noise, patches, skip};
use crate::sample::LoadedModel;
use serde::Serialize;

/// The levels reported by default.
pub const DEFAULT_LEVELS: [u32; 9] = [1, 5, 20, 50, 100, 200, 300, 400, 500];

/// One level's mean squared errors over the patch tokens (the training loss's terms).
#[derive(Clone, Debug, Serialize)]
pub struct LevelRow {
    pub n: u32,
    /// a^n.
    pub signal: f64,
    pub model: f64,
    /// The noisy patch as the estimate (the seed's skip, with no learned correction).
    pub identity: f64,
    /// c (A - a^n mean), the linear estimate of `--skip wiener`.
    pub linear: f64,
    /// The background-or-ink posterior mean of `--skip mixture`.
    pub mixture: f64,
    /// The same under the model's per-position prior (`--skip pixel-mixture` models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_mixture: Option<f64>,
}

/// The rows for `levels` on the first `count` test digits, noise seeded by `seed`.
pub fn loss_by_level(
    gpu: &Gpu,
    model: &LoadedModel,
    mnist: &Mnist,
    levels: &[u32],
    count: usize,
    seed: u64,
) -> Result<Vec<LevelRow>> {
    let run = &model.config;
    let cfg = run.model;
    let g = cfg.geometry;
    if count == 0 || count > mnist.test.count {
        return Err(Error::config(format!(
            "--count must be in 1..={} for --loss-by-level, got {count}",
            mnist.test.count
        )));
    }
    if let Some(&n) = levels.iter().find(|&&n| n > run.n_max) {
        return Err(Error::config(format!(
            "level {n} is above the model's n_max {}",
            run.n_max
        )));
    }
    crate::model::network::check_fits(gpu, &cfg, count)?;
    let net = Network::new(gpu, &cfg, &model.layout, count, &model.params, None)?;
    let (t, p, d) = (g.tokens() as usize, g.patches() as usize, g.dim() as usize);
    let perm: Vec<u32> = (0..count as u32).collect();
    // The model's per-position prior [3, P, D], read once.
    let prior: Option<Vec<f32>> = match model.layout.find("skip.prior") {
        Some(spec) => {
            let all: Vec<f32> = model.params.read(gpu)?;
            Some(all[spec.range()].to_vec())
        }
        None => None,
    };
    let mut rows = Vec::with_capacity(levels.len());
    for &n in levels {
        let spec = noise::NoiseSpec {
            seed,
            step: n,
            stream: 0,
            alpha: run.alpha,
            n_max: run.n_max,
            repeat: 1,
            perm_offset: 0,
        };
        let px = g.pixels() as usize;
        let nz = noise::noise_at_levels(&spec, &mnist.test.pixels, px, &perm, &vec![n; count]);
        let tokens = patches::patches_forward(&g, &nz.noisy, &nz.cond, t);
        let target = patches::patches_forward(&g, &nz.noise, &nz.cond, p);
        net.tokens.write(gpu, &tokens);
        gpu.run(&net.forward_dispatches())?;
        let out: Vec<f32> = net.output.read(gpu)?;
        let an = nz.cond[0] as f64;
        let (mut model_se, mut ident_se, mut lin_se, mut mix_se) = (0.0f64, 0.0, 0.0, 0.0);
        let mut pix_se = 0.0f64;
        for b in 0..count {
            for i in 0..p * d {
                let (a, y) = (tokens[b * t * d + i] as f64, target[b * p * d + i] as f64);
                model_se += (out[b * t * d + i] as f64 - y).powi(2);
                ident_se += (a - y).powi(2);
                lin_se += (skip::estimate(Skip::Wiener, a, an).0 - y).powi(2);
                mix_se += (skip::estimate(Skip::Mixture, a, an).0 - y).powi(2);
                if let Some(pr) = &prior {
                    let e = skip::mixture_with(a, an, skip::PixelPrior::at(pr, p * d, i)).0;
                    pix_se += (e - y).powi(2);
                }
            }
        }
        let terms = (count * p * d) as f64;
        rows.push(LevelRow {
            n,
            signal: an,
            model: model_se / terms,
            identity: ident_se / terms,
            linear: lin_se / terms,
            mixture: mix_se / terms,
            pixel_mixture: prior.as_ref().map(|_| pix_se / terms),
        });
    }
    Ok(rows)
}

/// The rows as a text table.
pub fn table(rows: &[LevelRow]) -> String {
    let pix = rows.iter().any(|r| r.pixel_mixture.is_some());
    let mut s = String::from("    n      a^n   model MSE  identity MSE  linear MSE  mixture MSE");
    s += if pix { "  pixel-mixture MSE\n" } else { "\n" };
    for r in rows {
        s += &format!(
            "{:>5} {:>8.4} {:>11} {:>13} {:>11} {:>12}",
            r.n,
            r.signal,
            mse(r.model),
            mse(r.identity),
            mse(r.linear),
            mse(r.mixture)
        );
        match r.pixel_mixture {
            Some(v) => s += &format!(" {:>18}\n", mse(v)),
            None => s += "\n",
        }
    }
    s
}

/// An MSE with four decimals, or three significant digits below 0.01 (the high levels' errors
/// are small, and differ in their third digit).
fn mse(v: f64) -> String {
    if v >= 0.01 || v == 0.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_errors_keep_three_digits() {
        assert_eq!(super::mse(0.30061), "0.3006");
        assert_eq!(super::mse(0.002263), "2.26e-3");
        assert_eq!(super::mse(0.0), "0.0000");
    }
}
