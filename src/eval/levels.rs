//! `eval --checkpoint CKPT --loss-by-level`: the model's noise-prediction error at single noise
//! levels n, on test digits, beside three baselines computed on the same inputs: the seed's
//! identity (the noisy patch A itself as the noise estimate), the best linear estimate
//! c (A - a^n mean) of `--skip wiener`, the per-pixel posterior mean of `--skip mixture`, and
//! for a `--skip pixel-mixture` model the posterior mean under its own per-position prior. The
//! training loss averages over all levels; this says where a model is weak (it is how the
//! identity skip's weakness at mid and high noise was found).
//!
//! The inputs are made on the GPU by the training's kernels (`noise_at_levels` at one level for
//! every digit, then the patches of the noisy digits and of the noise) and read back once per
//! level beside the model's output, for the baselines computed here.

use crate::config::{Skip, PIXELS};
use crate::data::Mnist;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuTensor};
use crate::math::prior;
use crate::model::network::Network;
use crate::ops::noise::{NoiseConfig, NoiseInject};
use crate::ops::patches;
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
    let config = run.model;
    let g = config.geometry;
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
    crate::model::network::check_fits(gpu, &config, count)?;
    let net = Network::new(gpu, &config, &model.layout, count, &model.params, None)?;
    let (t, p, d) = (g.tokens() as usize, g.patches() as usize, g.dim() as usize);
    let inputs = Inputs::new(gpu, model, mnist, &net, count, seed)?;
    // The model's per-position prior [3, P, D], read once.
    let own_prior: Option<Vec<f32>> = match model.layout.find("skip.prior") {
        Some(spec) => {
            let all: Vec<f32> = model.params.read(gpu)?;
            Some(all[spec.range()].to_vec())
        }
        None => None,
    };
    let mut rows = Vec::with_capacity(levels.len());
    for &n in levels {
        inputs.set_level(gpu, n);
        let mut dispatches = inputs.dispatches();
        dispatches.extend(net.forward_dispatches());
        gpu.run(&dispatches)?;
        let tokens: Vec<f32> = net.tokens.read(gpu)?;
        let target: Vec<f32> = inputs.target.read(gpu)?;
        let out: Vec<f32> = net.output.read(gpu)?;
        let an = inputs.cond.read::<f32>(gpu)?[0] as f64;
        let (mut model_se, mut ident_se, mut lin_se, mut mix_se) = (0.0f64, 0.0, 0.0, 0.0);
        let mut pix_se = 0.0f64;
        for b in 0..count {
            for i in 0..p * d {
                let (a, y) = (tokens[b * t * d + i] as f64, target[b * p * d + i] as f64);
                model_se += (out[b * t * d + i] as f64 - y).powi(2);
                ident_se += (a - y).powi(2);
                lin_se += (prior::estimate(Skip::Wiener, a, an).0 - y).powi(2);
                mix_se += (prior::estimate(Skip::Mixture, a, an).0 - y).powi(2);
                if let Some(pr) = &own_prior {
                    let e = prior::mixture_with(a, an, prior::PixelPrior::at(pr, p * d, i)).0;
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
            pixel_mixture: own_prior.as_ref().map(|_| pix_se / terms),
        });
    }
    Ok(rows)
}

/// The inputs of one level on the GPU: every test digit noised at the same level by the
/// training's noise kernel (stream 0, the level as the RNG step), its patches as the network's
/// tokens, and the patches of the noise as the target.
struct Inputs {
    noise: NoiseInject,
    levels: GpuTensor,
    cond: GpuTensor,
    target: GpuTensor,
    patches: [Dispatch; 2],
    count: usize,
    _keep: Vec<GpuTensor>,
}

impl Inputs {
    fn new(
        gpu: &Gpu,
        model: &LoadedModel,
        mnist: &Mnist,
        net: &Network,
        count: usize,
        seed: u64,
    ) -> Result<Inputs> {
        let (run, g) = (&model.config, model.config.model.geometry);
        let px = PIXELS as usize;
        let data = GpuTensor::from_bytes(gpu, "levels-digits", &mnist.test.pixels[..count * px])?;
        let order: Vec<u32> = (0..count as u32).collect();
        let perm = GpuTensor::from_slice(gpu, "levels-perm", &[count], &order)?;
        let levels = GpuTensor::zeros(gpu, "levels-n", &[count])?;
        let cond = GpuTensor::zeros(gpu, "levels-cond", &[count])?;
        let noise = GpuTensor::zeros(gpu, "levels-noise", &[count, px])?;
        let noisy = GpuTensor::zeros(gpu, "levels-noisy", &[count, px])?;
        let (t, p) = (g.tokens() as usize, g.patches() as usize);
        let target = GpuTensor::zeros(gpu, "levels-target", &[count, p, g.dim() as usize])?;
        let config = NoiseConfig {
            seed,
            stream: 0,
            alpha: run.alpha,
            n_max: run.n_max,
            repeat: 1,
        };
        let inject = NoiseInject::at_levels(
            gpu, &config, count, &data, &perm, &levels, &cond, &noise, &noisy,
        )?;
        let patches = [
            patches::patches_forward(gpu, &g, count, t, &noisy, &cond, &net.tokens)?,
            patches::patches_forward(gpu, &g, count, p, &noise, &cond, &target)?,
        ];
        Ok(Inputs {
            noise: inject,
            levels,
            cond,
            target,
            patches,
            count,
            _keep: vec![data, perm, noise, noisy],
        })
    }

    /// Every digit at level n (the RNG step is n too) for the next submission.
    fn set_level(&self, gpu: &Gpu, n: u32) {
        self.levels.write(gpu, &vec![n; self.count]);
        self.noise.set_step(gpu, n, 0);
    }

    fn dispatches(&self) -> Vec<&Dispatch> {
        vec![&self.noise.dispatch, &self.patches[0], &self.patches[1]]
    }
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
