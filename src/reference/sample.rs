//! CPU reference of the sampling loop of `src/sample/mod.rs` / `shaders/sample.wgsl` (docs/model.md §5).

use crate::config::{ModelConfig, PIXELS, PIXEL_HI, PIXEL_LO};
use crate::math::params::ParamLayout;
use crate::math::rng::{self, streams};
use crate::math::schedule::Schedule;
use crate::reference::{model, patches, skip};

/// One denoising step k (0-based) of `images` [B, 784] in place, digits `first..first + B`
/// of a run with `seed`: the model predicts the noise patches at conditioning a'^(n'-k), they
/// are recomposed (overlaps averaged), and A = (A - N_hat (1 - a'^s)) / a'^s (s the step's
/// scale, `Schedule::scale_at`); with eta > 0
/// then A += c0 N_hat + c1 Z (`Schedule::noise_coefs`), Z the normal at (seed, k,
/// SAMPLE_STEP, digit * 784 + pixel). From step `schedule.background_from()` on, N_hat is
/// first blended with a background pixel's noise ([`background_blend`]). With `clip`, N_hat
/// is then replaced by
/// (A - c X) / (1 - c), X = clamp((A - (1 - c) N_hat) / c, PIXEL_LO, PIXEL_HI), c = a'^(n'-k).
#[allow(clippy::too_many_arguments)]
pub fn sample_step(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[f32],
    schedule: &Schedule,
    k: u32,
    seed: u64,
    first: u64,
    images: &mut [f32],
) {
    let m = RefModel {
        config,
        layout,
        params,
    };
    let nhat = predict_noise(m, schedule, k, images);
    update(schedule, k, seed, first, images, &nhat);
}

/// The noise that model `m` predicts for `images` [B, 784] at step k: its patches at
/// conditioning a'^(n'-k), its forward pass, its output recomposed (overlaps averaged).
pub fn predict_noise(m: RefModel<'_>, schedule: &Schedule, k: u32, images: &[f32]) -> Vec<f32> {
    predict_noise_labelled(m, schedule, k, images, &[])
}

/// [`predict_noise`] of a class-conditional model with digit b labelled `labels[b]` (empty:
/// "no label"; an unconditional model ignores them).
pub fn predict_noise_labelled(
    m: RefModel<'_>,
    schedule: &Schedule,
    k: u32,
    images: &[f32],
    labels: &[u32],
) -> Vec<f32> {
    let labels = if m.config.classes { labels } else { &[] };
    let g = &m.config.geometry;
    let b = images.len() / PIXELS as usize;
    let c = schedule.table()[k as usize];
    let t = g.tokens() as usize;
    let tokens = patches::patches_forward(g, images, &vec![c; b], t);
    let out: Vec<f32> =
        model::forward_labelled::<f32>(m.config, m.layout, m.params, &tokens, labels, b)
            .output()
            .to_vec();
    patches::recompose(g, &out, t)
}

/// `--guide`'s combination of the model's and the guide's predicted noise:
/// N_guide + weight (N_model - N_guide), element by element.
pub fn guide(nhat: &[f32], nhat_guide: &[f32], weight: f32) -> Vec<f32> {
    nhat.iter()
        .zip(nhat_guide)
        .map(|(&n, &g)| g + weight * (n - g))
        .collect()
}

/// Step k's update of `images` in place with the predicted noise `nhat` (see [`sample_step`]).
fn update(schedule: &Schedule, k: u32, seed: u64, first: u64, images: &mut [f32], nhat: &[f32]) {
    let px = PIXELS as usize;
    let c = schedule.table()[k as usize];
    let keep = schedule.keep(k);
    let [c0, c1] = schedule.noise_coefs()[k as usize];
    let base = first * px as u64;
    let background = k >= schedule.background_from();
    for (i, (a, n)) in images.iter_mut().zip(nhat).enumerate() {
        let n = &if background {
            background_blend(*a, c, *n)
        } else {
            *n
        };
        let n = &if schedule.clip {
            let x = ((*a - (1.0 - c) * *n) / c).clamp(PIXEL_LO, PIXEL_HI);
            (*a - c * x) / (1.0 - c)
        } else {
            *n
        };
        *a = (*a - *n * (1.0 - keep)) / keep;
        if schedule.eta > 0.0 {
            let z = rng::normal(seed, k, streams::SAMPLE_STEP, (base + i as u64) as u32);
            *a += c0 * *n + c1 * z;
        }
    }
}

/// `--background`'s noise estimate for a pixel of noisy value `a` at level `u` = a'^n whose
/// predicted noise is `nhat`: w (a - u PIXEL_LO) / (1 - u) + (1 - w) nhat, w the posterior
/// that the pixel is background under the mixture prior ([`skip::mixture`]'s weight).
pub fn background_blend(a: f32, u: f32, nhat: f32) -> f32 {
    let (a, u) = (a as f64, u as f64);
    let (_, _, w) = skip::mixture(a, u);
    (w * (a - u * PIXEL_LO as f64) / (1.0 - u) + (1.0 - w) * nhat as f64) as f32
}

/// The initial noise of digits `first..first + count`, as the GPU draws it.
pub fn initial_noise(seed: u64, first: u64, count: usize) -> Vec<f32> {
    let px = PIXELS as u64;
    (0..(count as u64 * px))
        .map(|i| rng::normal(seed, 0, streams::SAMPLE_INIT, (first * px + i) as u32))
        .collect()
}

/// A model as the reference loop calls it: configuration, layout and flat weights.
#[derive(Clone, Copy)]
pub struct RefModel<'a> {
    pub config: &'a ModelConfig,
    pub layout: &'a ParamLayout,
    pub params: &'a [f32],
}

/// The whole loop for `count` digits from `first`.
pub fn sample(
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[f32],
    schedule: &Schedule,
    seed: u64,
    first: u64,
    count: usize,
) -> Vec<f32> {
    let model = RefModel {
        config,
        layout,
        params,
    };
    sample_refined(model, &[], schedule, seed, first, count)
}

/// The whole loop with `--refiner`s: each `(refiner, level)` (levels decreasing) is called
/// instead of the model from `schedule.first_step_at_or_below(level)` on, until a later
/// refiner's first step.
pub fn sample_refined(
    model: RefModel<'_>,
    refiners: &[(RefModel<'_>, u32)],
    schedule: &Schedule,
    seed: u64,
    first: u64,
    count: usize,
) -> Vec<f32> {
    sample_guided(model, None, refiners, schedule, seed, first, count)
}

/// `--guide`: the guide, its guidance weight and `--guide-from` (None: every step of the
/// model).
#[derive(Clone, Copy)]
pub struct RefGuide<'a> {
    pub model: RefModel<'a>,
    pub guidance: f32,
    pub from_level: Option<u32>,
}

/// The whole loop with `--guide` at the model's own steps (at levels up to its `from_level`)
/// and `--refiner`s as [`sample_refined`].
pub fn sample_guided(
    model: RefModel<'_>,
    guide_by: Option<RefGuide<'_>>,
    refiners: &[(RefModel<'_>, u32)],
    schedule: &Schedule,
    seed: u64,
    first: u64,
    count: usize,
) -> Vec<f32> {
    sample_conditional(
        model, guide_by, refiners, None, schedule, seed, first, count,
    )
}

/// Class-conditional sampling: digit i is asked to be `digits[i % len]`, and the calls of
/// conditional models get classifier-free guidance of weight `cfg`.
#[derive(Clone, Copy)]
pub struct RefClasses<'a> {
    pub digits: &'a [u32],
    pub cfg: f32,
    /// Guidance only at the steps whose level is at least this (0: every step).
    pub min_level: u32,
}

/// A (possibly conditional) model's noise estimate for digits labelled `labels`: with
/// classifier-free guidance of weight `cfg` (not 1) N_uncond + cfg (N_cond - N_uncond), the
/// unconditional call labelling every digit "no label". Unconditional models ignore both.
pub fn predict_guided_by_class(
    m: RefModel<'_>,
    schedule: &Schedule,
    k: u32,
    images: &[f32],
    labels: &[u32],
    cfg: Option<f32>,
) -> Vec<f32> {
    let cond = predict_noise_labelled(m, schedule, k, images, labels);
    match cfg.filter(|w| m.config.classes && *w != 1.0) {
        Some(w) => {
            let none = vec![crate::config::NO_LABEL; labels.len()];
            guide(
                &cond,
                &predict_noise_labelled(m, schedule, k, images, &none),
                w,
            )
        }
        None => cond,
    }
}

/// The whole loop as [`sample_guided`], class-conditional with `classes`: each model call
/// gets the digits' labels; the model's and each refiner's call at the steps at levels of at
/// least `min_level` are classifier-free guided; the guide's call is conditional but not
/// guided, and autoguidance then combines it with the model's guided estimate: N = N_guide + W_g (N_uncond + W_c (N_cond - N_uncond) - N_guide).
#[allow(clippy::too_many_arguments)]
pub fn sample_conditional(
    model: RefModel<'_>,
    guide_by: Option<RefGuide<'_>>,
    refiners: &[(RefModel<'_>, u32)],
    classes: Option<RefClasses<'_>>,
    schedule: &Schedule,
    seed: u64,
    first: u64,
    count: usize,
) -> Vec<f32> {
    let labels: Vec<u32> = match classes {
        Some(c) => (0..count as u64)
            .map(|i| c.digits[((first + i) % c.digits.len() as u64) as usize])
            .collect(),
        None => vec![],
    };
    let cfg_until = classes.map_or(0, |c| schedule.steps_at_or_above(c.min_level));
    let w = |k: u32| classes.map(|c| c.cfg).filter(|_| k < cfg_until);
    let predict = |m: RefModel<'_>, a: &[f32], k: u32, cfg: Option<f32>| {
        predict_guided_by_class(m, schedule, k, a, &labels, cfg)
    };
    let mut a = initial_noise(seed, first, count);
    for k in 0..schedule.steps {
        let refiner = refiners
            .iter()
            .rev()
            .find(|(_, level)| k >= schedule.first_step_at_or_below(*level));
        let guided = guide_by.filter(|g| {
            k >= g
                .from_level
                .map_or(0, |l| schedule.first_step_at_or_below(l))
        });
        let nhat = match (refiner, guided) {
            (Some((r, _)), _) => predict(*r, &a, k, w(k)),
            (None, None) => predict(model, &a, k, w(k)),
            (None, Some(g)) => guide(
                &predict(model, &a, k, w(k)),
                &predict(g.model, &a, k, None),
                g.guidance,
            ),
        };
        update(schedule, k, seed, first, &mut a, &nhat);
    }
    a
}
