//! The sampling loop (`shaders/sample.wgsl` through [`Sampler`]) against the CPU reference
//! loop (`reference::sample`), on the tiny preset's model (in full mode also with the
//! feed-forward block and each skip): the initial noise; one step over a whole batch; each
//! step of digit 0's trajectory (fresh noise, `--clip`, `--background` and
//! `--low-step-scale` on) against the reference step applied to the GPU's own previous
//! state; a short whole loop. The tests' tolerances. The sampler submits its own command
//! buffer: a row's time is that of the sampler's run (with its one readback).

use super::noise::NORMAL_ABS;
use super::Checker;
use crate::config::{ModelConfig, Skip, PIXELS};
use crate::error::Result;
use crate::gpu::GpuTensor;
use crate::math::rng::streams;
use crate::model::ParamLayout;
use crate::ops::noise::FillNormal;
use crate::reference::sample as reference;
use crate::sample::{Sampler, SamplerModel, Schedule, Stack};
use crate::settings::recipe::Preset;
use crate::testing::random_prior;
use web_time::Instant;

/// The trajectory's rows: a step with every option of the update on.
const STEP: &str = "sample_step eta clip bg low";

/// The seed of the sampler's noise.
const SEED: u64 = 7;

/// A schedule over n_max = 500 as the tests', with `steps` steps of scale `scale`.
fn schedule(steps: u32, scale: f32, eta: f32, clip: bool, background: u32) -> Schedule {
    Schedule {
        eta,
        clip,
        background,
        ..Schedule::plain(0.99, 500, steps, scale)
    }
}

/// Random weights large enough to matter (the tests' `random_params`): the attention
/// weights four times their initial size (not the feed-forward block's), and with
/// `--skip pixel-mixture` a per-position prior unlike the global one.
fn random_params(layout: &ParamLayout, seed: u64) -> Vec<f32> {
    let mut p = layout.init(seed);
    let ffn = ["w_1", "b_1", "w_2", "b_2"];
    for t in layout
        .tensors
        .iter()
        .filter(|t| t.trained() && !ffn.iter().any(|s| t.name.ends_with(s)))
    {
        p[t.range()].iter_mut().for_each(|v| *v *= 4.0);
    }
    if let Some(t) = layout.find("skip.prior") {
        p[t.range()].copy_from_slice(&random_prior(t.len() / 3, seed));
    }
    p
}

/// Each step divides by a'^s, so float differences in the model's output (relative to the
/// size of the state it reads) grow by 1/a'^s (the tests' tolerance).
fn step_tolerance(s: &Schedule, k: u32, state: &[f32]) -> f32 {
    let size = state.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    5e-5 * size / s.keep(k)
}

/// A sampler of `batch` digits over `params`, run once from digit 0: (the finished digits,
/// digit 0's trajectory), awaited. The run's time goes to the next compared row.
async fn run_sampler(
    c: &mut Checker<'_>,
    config: &ModelConfig,
    layout: &ParamLayout,
    params: &[f32],
    batch: usize,
    s: Schedule,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let p = GpuTensor::from_slice(c.gpu, "params", &[layout.total], params)?;
    let model = SamplerModel {
        config,
        layout,
        params: &p,
    };
    let sm = Sampler::new(c.gpu, Stack::of(model), batch, s, SEED)?;
    let start = Instant::now();
    let last = sm.run_async(c.gpu, 0).await?;
    c.last_secs += start.elapsed().as_secs_f64();
    Ok((last, sm.trajectory_async(c.gpu).await?))
}

/// A short name of the model: the tiny preset, with its feed-forward width and its skip
/// when not the seed's.
fn model_name(config: &ModelConfig) -> String {
    let mut name = "tiny".to_string();
    if config.mlp > 0 {
        name += &format!("+mlp{}", config.mlp);
    }
    if let Some(v) = (config.skip != Skip::Identity)
        .then(|| clap::ValueEnum::to_possible_value(&config.skip))
        .flatten()
    {
        name += &format!("+{}", v.get_name());
    }
    name
}

/// One step (n' = 1) over a whole batch of `batch`, random weights: the initial noise
/// against the reference's (within the normals' tolerance, [`NORMAL_ABS`]), and the finished
/// digits against the reference step applied to the GPU's own initial noise (drawn again
/// by the sampler's fill, which must equal the sampler's first state exactly): the random
/// model amplifies any difference in its input, which the WGSL spec allows in the normals.
async fn one_step(
    c: &mut Checker<'_>,
    config: &ModelConfig,
    batch: usize,
    scale: f32,
) -> Result<()> {
    let layout = ParamLayout::new(config);
    let params = random_params(&layout, 1);
    let s = schedule(1, scale, 0.0, false, 0);
    let (last, traj) = run_sampler(c, config, &layout, &params, batch, s).await?;
    let shape = format!("{} B={batch} s={scale}", model_name(config));
    let px = PIXELS as usize;
    let init = reference::initial_noise(SEED, 0, batch);
    c.compare(
        "sample_init_noise",
        &shape,
        &traj[..px],
        &init[..px],
        NORMAL_ABS,
        1e-4,
    );
    let mut gpu_init = initial_noise(c, batch).await?;
    c.compare(
        "sample_init_noise",
        format!("{shape} fill again"),
        &traj[..px],
        &gpu_init[..px],
        0.0,
        0.0,
    );
    let tol = step_tolerance(&s, 0, &gpu_init);
    reference::sample_step(config, &layout, &params, &s, 0, SEED, 0, &mut gpu_init);
    c.compare("sample_step", &shape, &last, &gpu_init, tol, 1e-4);
    Ok(())
}

/// The sampler's initial noise for `batch` digits from digit 0, drawn on the GPU by the
/// fill the sampler runs first.
async fn initial_noise(c: &mut Checker<'_>, batch: usize) -> Result<Vec<f32>> {
    let out = GpuTensor::zeros(c.gpu, "init", &[batch, PIXELS as usize])?;
    let fill = FillNormal::new(c.gpu, SEED, streams::SAMPLE_INIT, &out)?;
    c.gpu.run(&[&fill.dispatch])?;
    out.read_async(c.gpu).await
}

/// Each step of digit 0's trajectory (random weights; fresh noise, clip, the background
/// blend from level 300 and scale 1.5 from level 200 on) against the reference step applied
/// to the GPU's previous state; the finished digit 0 equal to the trajectory's last state.
async fn trajectory(c: &mut Checker<'_>, config: &ModelConfig, steps: u32) -> Result<()> {
    let layout = ParamLayout::new(config);
    let params = random_params(&layout, 1);
    let s = Schedule {
        low_scale: 1.5,
        low_from: 200,
        ..schedule(steps, 1.0, 1.0, true, 300)
    };
    let (last, traj) = run_sampler(c, config, &layout, &params, 2, s).await?;
    let px = PIXELS as usize;
    for k in 0..steps {
        let (i, shape) = (
            k as usize,
            format!("{} B=2 k={k}/{steps}", model_name(config)),
        );
        let mut a = traj[i * px..(i + 1) * px].to_vec();
        let tol = step_tolerance(&s, k, &a);
        reference::sample_step(config, &layout, &params, &s, k, SEED, 0, &mut a);
        c.compare(
            STEP,
            &shape,
            &traj[(i + 1) * px..(i + 2) * px],
            &a,
            tol,
            1e-4,
        );
        c.last_secs = 0.0;
    }
    let shape = format!("{} B=2 n'={steps} digit 0", model_name(config));
    c.compare(
        "sample_final",
        &shape,
        &last[..px],
        &traj[steps as usize * px..],
        0.0,
        0.0,
    );
    Ok(())
}

/// A whole loop of `steps` steps over 3 digits (initial weights: the loop is stable) against
/// the reference loop, within the tests' 1e-4.
async fn whole_loop(
    c: &mut Checker<'_>,
    steps: u32,
    scale: f32,
    eta: f32,
    clip: bool,
) -> Result<()> {
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let params = layout.init(2);
    let s = schedule(steps, scale, eta, clip, 0);
    let (got, _) = run_sampler(c, &config, &layout, &params, 3, s).await?;
    let want = reference::sample(&config, &layout, &params, &s, SEED, 0, 3);
    let flags = format!(
        "{}{}",
        if eta > 0.0 { " eta" } else { "" },
        if clip { " clip" } else { "" }
    );
    let shape = format!("tiny B=3 n'={steps} s={scale}{flags}");
    // The loop of initial weights carries the normals' allowed error through without
    // growing it (SwiftShader: 5.4e-4 in the digits for 5.6e-4 in the noise), so their
    // tolerance is its floor.
    c.compare(
        "sample_loop",
        &shape,
        &got,
        &want,
        NORMAL_ABS.max(1e-4),
        1e-4,
    );
    Ok(())
}

/// The sampler's cases, each run and awaited in turn (its readbacks are the sampler's own).
pub async fn check(c: &mut Checker<'_>) {
    let tiny = Preset::Tiny.model();
    let mut models = vec![tiny];
    if !c.quick {
        models.push(ModelConfig { mlp: 12, ..tiny });
        for skip in [Skip::Wiener, Skip::Mixture, Skip::PixelMixture] {
            models.push(ModelConfig { skip, ..tiny });
        }
    }
    for config in &models {
        c.last_secs = 0.0;
        let r = one_step(c, config, 3, 1.5).await;
        c.case_result("sample_step", model_name(config), r);
    }
    let steps = if c.quick { 3 } else { 5 };
    for config in &models {
        c.last_secs = 0.0;
        let r = trajectory(c, config, steps).await;
        c.case_result(STEP, model_name(config), r);
    }
    // (n', s, eta, clip): the seed's loop and one with every option.
    let loops: &[(u32, f32, f32, bool)] = match c.quick {
        true => &[(3, 1.5, 1.0, true)],
        false => &[(10, 1.0, 0.0, false), (10, 1.5, 1.0, true)],
    };
    for &(steps, scale, eta, clip) in loops {
        c.last_secs = 0.0;
        let r = whole_loop(c, steps, scale, eta, clip).await;
        c.case_result("sample_loop", format!("tiny n'={steps} s={scale}"), r);
    }
}
