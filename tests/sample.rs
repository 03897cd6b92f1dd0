//! The sampling loop on the GPU against the CPU reference; determinism and chunking.

mod common;

use wgpu_diffusion::config::{Geometry, ModelConfig, Skip, PIXELS};
use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::reference::sample as reference;
use wgpu_diffusion::sample::bundle::Bundle;
use wgpu_diffusion::sample::{Classes, Guide, Precision, Sampler, SamplerModel, Schedule, Stack};

/// The f16 loop's pixel differences from f32's allowed by [`f16_loop_draws_the_f32_digits`]
/// (of 255; measured on lavapipe: max 1, mean 0.012 over 40 digits).
const F16_LOOP_MAX_DIFF: u32 = 4;
const F16_LOOP_MEAN_DIFF: f64 = 0.05;
use wgpu_diffusion::settings::recipe::Preset;
use wgpu_diffusion::testing::{assert_close, random_prior};

fn schedule(steps: u32, scale: f32) -> Schedule {
    stochastic(steps, scale, 0.0)
}

/// A schedule with fresh noise in each step (`--eta`).
fn stochastic(steps: u32, scale: f32, eta: f32) -> Schedule {
    Schedule {
        eta,
        ..Schedule::plain(0.99, 500, steps, scale)
    }
}

fn digits(
    gpu: &Gpu,
    params: &[f32],
    batch: usize,
    s: Schedule,
    seed: u64,
    count: usize,
) -> Vec<f32> {
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let p = GpuTensor::from_slice(gpu, "params", &[layout.total], params).unwrap();
    let sm = Sampler::new(
        gpu,
        Stack::of(SamplerModel {
            config: &config,
            layout: &layout,
            params: &p,
        }),
        batch,
        s,
        seed,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut first = 0;
    while out.len() < count * PIXELS as usize {
        let d = sm.run(gpu, first as u64).unwrap();
        let take = (count - first).min(batch) * PIXELS as usize;
        out.extend_from_slice(&d[..take]);
        first += batch;
    }
    out
}

/// A model with random weights large enough to matter (not a trained one).
fn random_params(config: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let mut p = layout.init(seed);
    // The attention weights (not the feed-forward block's, which would make the 50-step
    // loop blow up past f32's range) four times their initial size.
    for t in layout.tensors.iter().filter(|t| {
        t.trained()
            && !["w_1", "b_1", "w_2", "b_2"]
                .iter()
                .any(|s| t.name.ends_with(s))
    }) {
        for v in &mut p[t.range()] {
            *v *= 4.0;
        }
    }
    // --skip pixel-mixture: a per-position prior unlike the global one.
    if let Some(t) = layout.find("skip.prior") {
        p[t.range()].copy_from_slice(&random_prior(t.len() / 3, seed));
    }
    p
}

/// Each step divides by a'^s, so float differences in the model's output (relative to the
/// size of the state it reads) grow by 1/a'^s.
fn step_tolerance(s: &Schedule, k: u32, state: &[f32]) -> f32 {
    let size = state.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    5e-5 * size / s.keep(k)
}

#[test]
fn one_step_matches_reference() {
    let gpu = common::gpu();
    // The tiny preset, and with the feed-forward block (--mlp).
    for config in [
        Preset::Tiny.model(),
        ModelConfig {
            mlp: 12,
            ..Preset::Tiny.model()
        },
        ModelConfig {
            skip: Skip::Wiener,
            ..Preset::Tiny.model()
        },
        ModelConfig {
            skip: Skip::Mixture,
            ..Preset::Tiny.model()
        },
        ModelConfig {
            skip: Skip::PixelMixture,
            ..Preset::Tiny.model()
        },
    ] {
        one_step_matches_reference_for(&gpu, &config);
    }
}

fn one_step_matches_reference_for(gpu: &Gpu, config: &ModelConfig) {
    let (gpu, config) = (gpu, *config);
    let layout = ParamLayout::new(&config);
    let params = random_params(&config, 1);
    // (n', s, eta, clip, B, --background level, --low-step-scale and --low-from)
    for (steps, scale, eta, clip, batch, background, low) in [
        (1, 1.0, 0.0, false, 3, 0, (1.0, 0)),
        (1, 1.5, 0.0, false, 5, 0, (1.0, 0)),
        (50, 1.5, 0.0, false, 2, 0, (1.0, 0)),
        (2, 1.0, 1.0, false, 3, 0, (1.0, 0)),
        (10, 0.7, 0.5, false, 2, 0, (1.0, 0)),
        (1, 1.0, 0.0, true, 3, 0, (1.0, 0)),
        (50, 1.5, 0.0, true, 2, 0, (1.0, 0)),
        (10, 1.0, 1.0, true, 2, 0, (1.0, 0)),
        (1, 1.0, 0.0, false, 3, 500, (1.0, 0)),
        (50, 1.0, 0.0, false, 2, 120, (1.0, 0)),
        (50, 1.5, 0.0, true, 2, 30, (1.0, 0)),
        (10, 1.0, 1.0, false, 2, 200, (1.0, 0)),
        (10, 1.0, 1.0, true, 2, 0, (1.5, 200)),
        (10, 1.0, 0.0, false, 3, 0, (2.0, 450)),
    ] {
        let s = Schedule {
            clip,
            background,
            low_scale: low.0,
            low_from: low.1,
            ..stochastic(steps, scale, eta)
        };
        let sm_params = GpuTensor::from_slice(gpu, "params", &[layout.total], &params).unwrap();
        let sm = Sampler::new(
            gpu,
            Stack::of(SamplerModel {
                config: &config,
                layout: &layout,
                params: &sm_params,
            }),
            batch,
            s,
            7,
        )
        .unwrap();
        let last = sm.run(gpu, 0).unwrap();
        // Check every step of digit 0's trajectory, and the whole batch's last step, against
        // the reference step applied to the GPU's own previous state.
        let traj = sm.trajectory(gpu).unwrap();
        let px = PIXELS as usize;
        let init = reference::initial_noise(7, 0, 1);
        assert_close("initial noise", &traj[..px], &init, 1e-5, 1e-5);
        for k in 0..steps as usize {
            let mut a = traj[k * px..(k + 1) * px].to_vec();
            let tol = step_tolerance(&s, k as u32, &a);
            reference::sample_step(&config, &layout, &params, &s, k as u32, 7, 0, &mut a);
            assert_close(
                &format!(
                    "step {k} of {steps}, s={scale}, eta={eta}, clip={clip}, bg={background}, low={low:?}"
                ),
                &traj[(k + 1) * px..(k + 2) * px],
                &a,
                tol,
                1e-4,
            );
        }
        assert_close(
            "digit 0 final",
            &last[..px],
            &traj[steps as usize * px..],
            0.0,
            0.0,
        );
        if steps == 1 {
            let want = reference::sample(&config, &layout, &params, &s, 7, 0, batch);
            let init = reference::initial_noise(7, 0, batch);
            let tol = step_tolerance(&s, 0, &init);
            assert_close(
                &format!(
                    "{steps} steps, s={scale}, eta={eta}, clip={clip}, bg={background}, B={batch}"
                ),
                &last,
                &want,
                tol,
                1e-4,
            );
        }
    }
}

/// The page's awaited loop (`Sampler::run_async`, a device opened by `Gpu::new_async`) draws
/// the digits the blocking one does.
#[test]
fn the_awaited_loop_draws_what_the_blocking_one_does() {
    let gpu = pollster::block_on(Gpu::new_async(&Default::default())).unwrap();
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let params = random_params(&config, 5);
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &params).unwrap();
    let model = SamplerModel {
        config: &config,
        layout: &layout,
        params: &p,
    };
    let sm = Sampler::new(&gpu, Stack::of(model), 3, schedule(6, 1.5), 4).unwrap();
    let blocking = sm.run(&gpu, 7).unwrap();
    let awaited = pollster::block_on(sm.run_async(&gpu, 7)).unwrap();
    assert_eq!(awaited, blocking);
    assert!(blocking.iter().any(|&v| v != blocking[0]), "blank digits");
}

/// The page's loop in parts (`Sampler::run_parts_async`, a few steps a submission): the same
/// digits as the whole loop in one submission, with fresh noise each step, a guide and a
/// refiner; each part reports the steps done and the state after them.
#[test]
fn the_loop_in_parts_draws_what_the_whole_loop_does() {
    let gpu = common::gpu();
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let (pm, pg) = (random_params(&config, 5), random_params(&config, 6));
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &pm).unwrap();
    let g = GpuTensor::from_slice(&gpu, "guide", &[layout.total], &pg).unwrap();
    let view = |params| SamplerModel {
        config: &config,
        layout: &layout,
        params,
    };
    let refiners = [(view(&g), 150)];
    let stack = Stack {
        model: view(&p),
        guide: Some(Guide {
            model: view(&g),
            guidance: 2.0,
            from_level: None,
        }),
        refiners: &refiners,
        classes: None,
    };
    let sm = Sampler::new(&gpu, stack, 3, stochastic(10, 1.5, 1.0), 4).unwrap();
    let whole = sm.run(&gpu, 7).unwrap();
    for every in [1, 3, 4, 10, 25] {
        let mut parts = Vec::new();
        let last = pollster::block_on(
            sm.run_parts_async(&gpu, 7, every, |k, state| parts.push((k, state.to_vec()))),
        )
        .unwrap();
        assert!(
            last == whole,
            "{every} steps a part: not the whole loop's digits"
        );
        let done: Vec<u32> = parts.iter().map(|(k, _)| *k).collect();
        let want: Vec<u32> = (1..=10u32.div_ceil(every))
            .map(|i| (i * every).min(10))
            .collect();
        assert_eq!(done, want, "{every} steps a part");
        assert!(parts.last().unwrap().1 == whole, "the last part's state");
        if parts.len() > 1 {
            assert!(
                parts[0].1 != whole,
                "the first part's state is the finished digits"
            );
        }
    }
    let e = pollster::block_on(sm.run_parts_async(&gpu, 7, 0, |_, _| {}));
    assert!(e.is_err());
}

/// With --clip and s = 1 the last step lands on the clamped digit estimate itself
/// (a'^(n - s) = 1), so every pixel is in the pixel range; without it, a model with large
/// random weights makes digits far outside it.
#[test]
fn clip_keeps_the_digits_in_the_pixel_range() {
    let gpu = common::gpu();
    let params = random_params(&Preset::Tiny.model(), 3);
    let s = schedule(20, 1.0);
    let raw = digits(&gpu, &params, 5, s, 2, 5);
    let clipped = digits(&gpu, &params, 5, Schedule { clip: true, ..s }, 2, 5);
    let out = |d: &[f32], eps: f32| {
        d.iter()
            .filter(|v| !(-0.5 - eps..=0.5 + eps).contains(*v))
            .count()
    };
    assert!(
        out(&raw, 0.0) > raw.len() / 10,
        "unclipped digits were already in range"
    );
    assert_eq!(out(&clipped, 1e-4), 0, "clipped digits outside [-0.5, 0.5]");
}

/// `--background N` starts at the first step whose level is at most N.
#[test]
fn background_starts_at_its_level() {
    // n' = 50 of n_max = 500: step k is at level 10 (50 - k).
    for (level, from) in [
        (0, 50),
        (9, 50),
        (10, 49),
        (19, 49),
        (20, 48),
        (500, 0),
        (900, 0),
    ] {
        let s = Schedule {
            background: level,
            ..schedule(50, 1.0)
        };
        assert_eq!(s.background_from(), from, "--background {level}");
    }
    // n' = 30: levels 500 (30 - k) / 30.
    let s = Schedule {
        background: 50,
        ..schedule(30, 1.0)
    };
    assert_eq!(
        s.background_from(),
        27,
        "levels 50, 33.3, 16.7 are at most 50"
    );
}

/// At the lowest levels the blend gives a background pixel (exactly -0.5, noised at level u
/// with noise z, |z| <= 1) its own noise within 5 % of the model's error (the posterior of
/// background is >= 0.95 there), and leaves an ink pixel's prediction as it was.
#[test]
fn background_blend_recovers_background_noise() {
    for n in [1, 5, 10] {
        let u = 0.99f32.powi(n);
        let s = 1.0 - u;
        for z in [-1.0f32, -0.7, 0.0, 0.4, 1.0] {
            // The model is off by 1.
            let bg = u * -0.5 + s * z;
            let got = reference::background_blend(bg, u, z + 1.0);
            assert!(
                (got - z).abs() < 0.05,
                "level {n}, background pixel with noise {z}: estimate {got}"
            );
            let ink = u * 0.4 + s * z;
            let got = reference::background_blend(ink, u, 0.25);
            assert!(
                (got - 0.25).abs() < 1e-3,
                "level {n}, ink pixel 0.4 with noise {z}: estimate {got}, want the model's 0.25"
            );
        }
    }
}

/// A whole 10-step loop of the tiny model (initial weights: the loop is stable, so errors do
/// not compound) equals the reference loop.
#[test]
fn ten_step_loop_matches_reference() {
    let gpu = common::gpu();
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let params = layout.init(2);
    for (scale, eta, clip, background) in [
        (1.0, 0.0, false, 0),
        (1.5, 0.0, false, 0),
        (1.0, 1.0, false, 0),
        (1.5, 0.0, true, 0),
        (1.0, 0.0, false, 250),
    ] {
        let s = Schedule {
            clip,
            background,
            ..stochastic(10, scale, eta)
        };
        let got = digits(&gpu, &params, 4, s, 11, 4);
        let want = reference::sample(&config, &layout, &params, &s, 11, 0, 4);
        let what = format!("10-step loop, s={scale}, eta={eta}, clip={clip}, bg={background}");
        assert_close(&what, &got, &want, 1e-4, 1e-4);
    }
}

/// `--refiner`: from the first step at or below --refine-from the loop calls a second model
/// of another shape and skip. The GPU loop equals the reference loop; a level at n_max hands
/// every step to the refiner (the refiner's own loop, exactly), one below every step's level
/// none (the model's own loop, exactly). Two refiners (levels 300 then 100) chain: the GPU
/// loop equals the reference chain, and the second one changes the digits.
#[test]
fn refiner_loop_matches_reference() {
    let gpu = common::gpu();
    let config = ModelConfig {
        skip: Skip::Wiener,
        ..Preset::Tiny.model()
    };
    // Patch 8, overlap 2: a 3x3 grid of 12x12 patches (the model's is 4x4 of 10x10).
    let rcfg = ModelConfig {
        geometry: Geometry::new(8, 2).unwrap(),
        mlp: 16,
        skip: Skip::Mixture,
        ..Preset::Tiny.model()
    };
    let (layout, rlayout) = (ParamLayout::new(&config), ParamLayout::new(&rcfg));
    let (params, rparams) = (layout.init(5), rlayout.init(6));
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &params).unwrap();
    let rp = GpuTensor::from_slice(&gpu, "refiner", &[rlayout.total], &rparams).unwrap();
    let model = SamplerModel {
        config: &config,
        layout: &layout,
        params: &p,
    };
    let refiner = SamplerModel {
        config: &rcfg,
        layout: &rlayout,
        params: &rp,
    };
    let chain = |refiners: &[(SamplerModel, u32)], s: Schedule| {
        let sm = Sampler::new(
            &gpu,
            Stack {
                refiners: refiners,
                ..Stack::of(model)
            },
            3,
            s,
            4,
        )
        .unwrap();
        sm.run(&gpu, 0).unwrap()
    };
    let run = |level: Option<u32>, s: Schedule| {
        let refiners: Vec<_> = level.map(|l| (refiner, l)).into_iter().collect();
        chain(&refiners, s)
    };
    let reference_model = reference::RefModel {
        config: &config,
        layout: &layout,
        params: &params,
    };
    let reference_refiner = reference::RefModel {
        config: &rcfg,
        layout: &rlayout,
        params: &rparams,
    };
    // 10 steps of 500: levels 500, 450, .., 50; from 200 the last four call the refiner.
    for (scale, eta, clip) in [(1.0, 0.0, false), (1.0, 1.0, true), (1.5, 0.0, false)] {
        let s = Schedule {
            clip,
            ..stochastic(10, scale, eta)
        };
        assert_eq!(s.first_step_at_or_below(200), 6);
        let got = run(Some(200), s);
        let want =
            reference::sample_refined(reference_model, &[(reference_refiner, 200)], &s, 4, 0, 3);
        let what = format!("refined 10-step loop, s={scale}, eta={eta}, clip={clip}");
        assert_close(&what, &got, &want, 1e-4, 1e-4);
        let plain = run(None, s);
        let moved = got
            .iter()
            .zip(&plain)
            .filter(|(x, y)| (*x - *y).abs() > 1e-3);
        assert!(
            moved.count() > got.len() / 2,
            "{what}: the refiner changed few pixels"
        );
    }
    // A chain: the refiner from level 300 (step 4), then a third model (the model's shape,
    // other weights) from level 100 (step 8).
    let lparams = layout.init(8);
    let lp = GpuTensor::from_slice(&gpu, "low", &[layout.total], &lparams).unwrap();
    let low = SamplerModel {
        config: &config,
        layout: &layout,
        params: &lp,
    };
    let reference_low = reference::RefModel {
        config: &config,
        layout: &layout,
        params: &lparams,
    };
    for (scale, eta) in [(1.0, 1.0), (1.5, 0.0)] {
        let s = stochastic(10, scale, eta);
        let sm = Sampler::new(
            &gpu,
            Stack {
                refiners: &[(refiner, 300), (low, 100)],
                ..Stack::of(model)
            },
            3,
            s,
            4,
        )
        .unwrap();
        assert_eq!(sm.refine_from_steps(), vec![4, 8]);
        let got = sm.run(&gpu, 0).unwrap();
        let want = reference::sample_refined(
            reference_model,
            &[(reference_refiner, 300), (reference_low, 100)],
            &s,
            4,
            0,
            3,
        );
        let what = format!("two refiners, s={scale}, eta={eta}");
        assert_close(&what, &got, &want, 1e-4, 1e-4);
        let one = run(Some(300), s);
        let moved = got.iter().zip(&one).filter(|(x, y)| (*x - *y).abs() > 1e-3);
        assert!(
            moved.count() > got.len() / 2,
            "{what}: the second refiner changed few pixels"
        );
    }
    // Levels that do not decrease, or 0: one line naming the refiner levels.
    for levels in [[100, 300], [200, 200], [300, 0]] {
        let pairs = [(refiner, levels[0]), (low, levels[1])];
        let e = Sampler::new(
            &gpu,
            Stack {
                refiners: &pairs,
                ..Stack::of(model)
            },
            3,
            schedule(10, 1.0),
            4,
        )
        .err()
        .unwrap_or_else(|| panic!("levels {levels:?} were accepted"));
        assert!(e.to_string().contains("refiner level"), "{e}");
    }
    let s = schedule(10, 1.0);
    assert_eq!(run(Some(500), s), {
        let sm = Sampler::new(
            &gpu,
            Stack::of(SamplerModel {
                config: &rcfg,
                layout: &rlayout,
                params: &rp,
            }),
            3,
            s,
            4,
        )
        .unwrap();
        sm.run(&gpu, 0).unwrap()
    });
    assert_eq!(run(Some(49), s), run(None, s));
}

/// `--guide`: at the model's own steps (from `--guide-from`'s level down) a second model
/// (another shape) is called too and the step uses N_guide + W (N_model - N_guide). The GPU
/// loop equals the reference loop, with and without a refiner (whose steps are not guided)
/// and --guide-from; W = 1 is the unguided loop; W = 2.5 moves the digits; a weight that is
/// not a positive number, or --guide-from 0, is one line naming the flag.
#[test]
fn guided_loop_matches_reference() {
    let gpu = common::gpu();
    let config = ModelConfig {
        skip: Skip::Wiener,
        ..Preset::Tiny.model()
    };
    let gcfg = ModelConfig {
        geometry: Geometry::new(8, 2).unwrap(),
        mlp: 16,
        skip: Skip::Mixture,
        ..Preset::Tiny.model()
    };
    // The refiner without a skip term: a Wiener skip with random weights predicts the mean
    // digit at level 200, so with --eta 1 its first step would forget every earlier one.
    let rcfg = Preset::Tiny.model();
    let (layout, glayout) = (ParamLayout::new(&config), ParamLayout::new(&gcfg));
    let rlayout = ParamLayout::new(&rcfg);
    let (params, gparams, rparams) = (layout.init(5), glayout.init(6), rlayout.init(8));
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &params).unwrap();
    let gp = GpuTensor::from_slice(&gpu, "guide", &[glayout.total], &gparams).unwrap();
    let rp = GpuTensor::from_slice(&gpu, "refiner", &[rlayout.total], &rparams).unwrap();
    let view = |config, layout, params| SamplerModel {
        config,
        layout,
        params,
    };
    let (model, guide, refiner) = (
        view(&config, &layout, &p),
        view(&gcfg, &glayout, &gp),
        view(&rcfg, &rlayout, &rp),
    );
    let reference_view = |config, layout, params| reference::RefModel {
        config,
        layout,
        params,
    };
    let (reference_model, reference_guide, reference_refiner) = (
        reference_view(&config, &layout, &params),
        reference_view(&gcfg, &glayout, &gparams),
        reference_view(&rcfg, &rlayout, &rparams),
    );
    let run = |weight: Option<f32>, from_level, refiners: &[(SamplerModel, u32)], s| {
        let g = weight.map(|weight| Guide {
            model: guide,
            guidance: weight,
            from_level,
        });
        let sm = Sampler::new(
            &gpu,
            Stack {
                model: model,
                guide: g,
                refiners: refiners,
                classes: None,
            },
            3,
            s,
            4,
        )
        .unwrap();
        sm.run(&gpu, 0).unwrap()
    };
    // (--guide-from 300: from step 4; 400: from step 2)
    for (scale, eta, clip, refine, from_level) in [
        (1.0, 0.0, false, false, Some(300)),
        (1.0, 1.0, true, false, None),
        (1.5, 0.0, false, true, None),
        (1.0, 1.0, true, true, Some(400)),
    ] {
        let s = Schedule {
            clip,
            ..stochastic(10, scale, eta)
        };
        // 10 steps of 500: with the refiner from 200, the last four are its (unguided).
        let (refiners, reference_refiners) = if refine {
            (vec![(refiner, 200)], vec![(reference_refiner, 200)])
        } else {
            (vec![], vec![])
        };
        let what = format!(
            "guided 10-step loop, s={scale}, eta={eta}, clip={clip}, refiner={refine}, from {from_level:?}"
        );
        let got = run(Some(2.5), from_level, &refiners, s);
        let g = reference::RefGuide {
            model: reference_guide,
            guidance: 2.5,
            from_level,
        };
        let want =
            reference::sample_guided(reference_model, Some(g), &reference_refiners, &s, 4, 0, 3);
        assert_close(&what, &got, &want, 1e-4, 1e-4);
        let plain = run(None, None, &refiners, s);
        let moved = got
            .iter()
            .zip(&plain)
            .filter(|(x, y)| (*x - *y).abs() > 1e-3)
            .count();
        assert!(
            moved > got.len() / 4,
            "{what}: guidance changed few pixels ({moved})"
        );
        assert_close(
            &format!("{what}, W = 1"),
            &run(Some(1.0), from_level, &refiners, s),
            &plain,
            1e-5,
            1e-5,
        );
    }
    // --guide-from at n_max or above is every step: the same digits as without it.
    let s = stochastic(10, 1.0, 1.0);
    for level in [500, 900] {
        assert_eq!(
            run(Some(2.0), Some(level), &[], s),
            run(Some(2.0), None, &[], s)
        );
    }
    // The FLOPs per digit count the guide's calls at the model's guided steps only: steps
    // 0..6 are the model's (the refiner takes 6..10), from level 300 (step 4) guided.
    let f = Sampler::flops_per_digit_step;
    let (fm, fg, fr) = (f(&config), f(&gcfg), f(&rcfg));
    for (from_level, first, guided) in [(None, 0, 6.0), (Some(300), 4, 2.0)] {
        let g = Guide {
            model: guide,
            guidance: 2.0,
            from_level,
        };
        let refiners = [(refiner, 200)];
        let sm = Sampler::new(
            &gpu,
            Stack {
                model: model,
                guide: Some(g),
                refiners: &refiners,
                classes: None,
            },
            3,
            schedule(10, 1.0),
            4,
        );
        let sm = sm.unwrap();
        assert_eq!(sm.guide_from_step(), Some(first));
        let flops = sm.flops_per_digit();
        let want = 6.0 * fm + guided * fg + 4.0 * fr;
        assert!(
            (flops - want).abs() <= 1e-9 * want,
            "from {from_level:?}: {flops} FLOPs, want {want}"
        );
    }
    let g = Guide {
        model: guide,
        guidance: 2.0,
        from_level: Some(0),
    };
    let e = Sampler::new(
        &gpu,
        Stack {
            model: model,
            guide: Some(g),
            refiners: &[],
            classes: None,
        },
        3,
        schedule(10, 1.0),
        4,
    )
    .err()
    .expect("--guide-from 0 was accepted");
    assert!(e.to_string().contains("guide-from"), "{e}");
    for weight in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let g = Guide {
            model: guide,
            guidance: weight,
            from_level: None,
        };
        let e = Sampler::new(
            &gpu,
            Stack {
                model: model,
                guide: Some(g),
                refiners: &[],
                classes: None,
            },
            3,
            schedule(10, 1.0),
            4,
        )
        .err()
        .unwrap_or_else(|| panic!("--guidance {weight} was accepted"));
        assert!(e.to_string().contains("guidance"), "{e}");
    }
}

/// Class-conditional models (label embedding scaled up so that the label matters), each
/// with its own random weights: the model, a guide and a refiner.
struct Conditional {
    cfgs: [ModelConfig; 3],
    layouts: Vec<ParamLayout>,
    params: Vec<Vec<f32>>,
    gpu_params: Vec<GpuTensor>,
}

impl Conditional {
    fn new(gpu: &Gpu) -> Conditional {
        let tiny = ModelConfig {
            classes: true,
            ..Preset::Tiny.model()
        };
        let cfgs = [
            ModelConfig {
                skip: Skip::Wiener,
                ..tiny
            },
            ModelConfig {
                geometry: Geometry::new(8, 2).unwrap(),
                mlp: 16,
                skip: Skip::Mixture,
                ..tiny
            },
            tiny,
        ];
        let layouts: Vec<_> = cfgs.iter().map(ParamLayout::new).collect();
        let params: Vec<Vec<f32>> = layouts
            .iter()
            .enumerate()
            .map(|(i, layout)| {
                let mut p = layout.init(20 + i as u64);
                let t = layout
                    .find("label")
                    .expect("a conditional model has a label table");
                for v in &mut p[t.range()] {
                    *v *= 40.0;
                }
                p
            })
            .collect();
        let gpu_params = layouts
            .iter()
            .zip(&params)
            .map(|(l, p)| GpuTensor::from_slice(gpu, "params", &[l.total], p).unwrap())
            .collect();
        Conditional {
            cfgs,
            layouts,
            params,
            gpu_params,
        }
    }

    fn view(&self, i: usize) -> SamplerModel<'_> {
        SamplerModel {
            config: &self.cfgs[i],
            layout: &self.layouts[i],
            params: &self.gpu_params[i],
        }
    }

    fn reference(&self, i: usize) -> reference::RefModel<'_> {
        reference::RefModel {
            config: &self.cfgs[i],
            layout: &self.layouts[i],
            params: &self.params[i],
        }
    }
}

/// `sample --digit/--digits --cfg`: the conditional loop on the GPU equals the reference loop
/// (classifier-free guided model and refiner, conditional unguided guide, autoguidance on the
/// guided estimate) with and without the guide and a refiner, in two chunks whose labels
/// differ; the digits asked for and the cfg weight each change the digits (so a sampler that
/// ignored the labels, or the guidance, fails); an unconditional model asked for digits, a
/// digit outside 0..9 or a bad weight is one line.
#[test]
fn conditional_loop_matches_reference() {
    let gpu = common::gpu();
    let m = Conditional::new(&gpu);
    let digits = vec![3u32, 7];
    let run = |guide: bool, refine: bool, classes: Option<Classes>, first: u64| {
        let g = guide.then(|| Guide {
            model: m.view(1),
            guidance: 2.0,
            from_level: Some(400),
        });
        let refiners: Vec<_> = refine.then(|| (m.view(2), 200)).into_iter().collect();
        let s = stochastic(10, 1.0, 1.0);
        let sm = Sampler::new(
            &gpu,
            Stack {
                model: m.view(0),
                guide: g,
                refiners: &refiners,
                classes: classes.as_ref(),
            },
            3,
            s,
            4,
        )
        .unwrap();
        sm.run(&gpu, first).unwrap()
    };
    // 10 steps of 500 (levels 500, 450, .., 50): --cfg-min-level 100 guides the first 9
    // steps, 150 the first 8; the refiner takes the steps from level 200 (the last four).
    // (With eta 1 the steps at the highest levels barely change the digits.)
    for (guide, refine, weight, min_level) in [
        (false, false, 2.0, 0),
        (true, false, 1.5, 100),
        (false, true, 3.0, 0),
        (true, true, 1.0, 0),
        (true, true, 2.0, 150),
    ] {
        let classes = Classes {
            digits: digits.clone(),
            cfg: weight,
            min_level,
        };
        let what = format!(
            "conditional loop, guide={guide}, refiner={refine}, cfg={weight} from {min_level}"
        );
        let g = guide.then(|| reference::RefGuide {
            model: m.reference(1),
            guidance: 2.0,
            from_level: Some(400),
        });
        let refiners: Vec<_> = refine.then(|| (m.reference(2), 200)).into_iter().collect();
        let rc = reference::RefClasses {
            digits: &digits,
            cfg: weight,
            min_level,
        };
        let s = stochastic(10, 1.0, 1.0);
        // Chunks 0..3 (labels 3 7 3) and 3..6 (labels 7 3 7).
        for first in [0, 3] {
            let got = run(guide, refine, Some(classes.clone()), first);
            let want = reference::sample_conditional(
                m.reference(0),
                g,
                &refiners,
                Some(rc),
                &s,
                4,
                first,
                3,
            );
            assert_close(&format!("{what}, first {first}"), &got, &want, 1e-4, 1e-4);
        }
        let got = run(guide, refine, Some(classes.clone()), 0);
        let moved = |other: &[f32]| {
            got.iter()
                .zip(other)
                .filter(|(x, y)| (*x - *y).abs() > 1e-3)
                .count()
        };
        let other_digit = Classes {
            digits: vec![0],
            ..classes.clone()
        };
        let n = moved(&run(guide, refine, Some(other_digit), 0));
        assert!(
            n > got.len() / 8,
            "{what}: the digit asked for moved {n} pixels"
        );
        let plain = Classes {
            cfg: if weight == 1.0 { 2.0 } else { 1.0 },
            ..classes.clone()
        };
        let n = moved(&run(guide, refine, Some(plain), 0));
        assert!(n > got.len() / 8, "{what}: the cfg weight moved {n} pixels");
        if min_level > 0 && weight != 1.0 {
            let every_step = Classes {
                min_level: 0,
                ..classes.clone()
            };
            let n = moved(&run(guide, refine, Some(every_step), 0));
            assert!(n > got.len() / 8, "{what}: cfg-min-level moved {n} pixels");
        }
    }
    // One guided step alone (deterministic and stochastic), with the guide: the step's
    // combination of the three estimates, before any later step can hide it.
    for eta in [0.0, 1.0] {
        let s = stochastic(1, 1.0, eta);
        let classes = Classes {
            digits: digits.clone(),
            cfg: 2.5,
            min_level: 0,
        };
        let g = Guide {
            model: m.view(1),
            guidance: 1.5,
            from_level: None,
        };
        let sm = Sampler::new(
            &gpu,
            Stack {
                model: m.view(0),
                guide: Some(g),
                refiners: &[],
                classes: Some(&classes),
            },
            3,
            s,
            4,
        );
        let got = sm.unwrap().run(&gpu, 0).unwrap();
        let rg = reference::RefGuide {
            model: m.reference(1),
            guidance: 1.5,
            from_level: None,
        };
        let rc = reference::RefClasses {
            digits: &digits,
            cfg: 2.5,
            min_level: 0,
        };
        let want =
            reference::sample_conditional(m.reference(0), Some(rg), &[], Some(rc), &s, 4, 0, 3);
        // One step from level 500 divides by a'^s = 0.99^500: float differences grow 150x.
        assert_close(
            &format!("one guided step, eta {eta}"),
            &got,
            &want,
            1e-3,
            1e-3,
        );
    }

    // The FLOPs per digit count the unconditional calls at the guided steps: with the guide
    // from level 400 (steps 2..6) and the refiner from step 6, cfg-min-level 150 guides the
    // model's steps 0..6 and the refiner's steps 6 and 7.
    let f = |i: usize| Sampler::flops_per_digit_step(&m.cfgs[i]);
    let g = Guide {
        model: m.view(1),
        guidance: 2.0,
        from_level: Some(400),
    };
    let classes = Classes {
        digits: digits.clone(),
        cfg: 2.0,
        min_level: 150,
    };
    let refiners = [(m.view(2), 200)];
    let s = stochastic(10, 1.0, 1.0);
    let sm = Sampler::new(
        &gpu,
        Stack {
            model: m.view(0),
            guide: Some(g),
            refiners: &refiners,
            classes: Some(&classes),
        },
        3,
        s,
        4,
    );
    let flops = sm.unwrap().flops_per_digit();
    let want = (6.0 + 6.0) * f(0) + 4.0 * f(1) + (4.0 + 2.0) * f(2);
    assert!(
        (flops - want).abs() <= 1e-9 * want,
        "{flops} FLOPs, want {want}"
    );

    let (s, unconditional) = (stochastic(10, 1.0, 0.0), Preset::Tiny.model());
    let layout = ParamLayout::new(&unconditional);
    let p = GpuTensor::from_slice(&gpu, "p", &[layout.total], &layout.init(1)).unwrap();
    let plain = SamplerModel {
        config: &unconditional,
        layout: &layout,
        params: &p,
    };
    for (model, digits, weight, needle) in [
        (plain, vec![3], 1.5, "class-conditional"),
        (m.view(0), vec![10], 1.5, "digit 10"),
        (m.view(0), vec![], 1.5, "no digit"),
        (m.view(0), vec![1], 0.0, "cfg"),
        (m.view(0), vec![1], f32::NAN, "cfg"),
        (m.view(0), vec![1], f32::INFINITY, "cfg"),
    ] {
        let c = Classes {
            digits,
            cfg: weight,
            min_level: 0,
        };
        let e = Sampler::new(
            &gpu,
            Stack {
                model: model,
                guide: None,
                refiners: &[],
                classes: Some(&c.clone()),
            },
            3,
            s,
            4,
        )
        .err()
        .unwrap_or_else(|| panic!("{c:?} was accepted"));
        assert!(e.to_string().contains(needle), "{c:?}: {e}");
    }
}

#[test]
fn seeds_are_deterministic_and_chunking_changes_nothing() {
    let gpu = common::gpu();
    let params = random_params(&Preset::Tiny.model(), 3);
    let s = schedule(5, 1.0);
    let a = digits(&gpu, &params, 7, s, 5, 7);
    let b = digits(&gpu, &params, 7, s, 5, 7);
    assert_eq!(a, b, "same seed, same digits");
    let c = digits(&gpu, &params, 7, s, 6, 7);
    assert_ne!(a, c, "another seed gives other digits");
    // 7 digits in chunks of 3 (3 + 3 + 1 of a 3-batch) equal one batch of 7.
    let chunked = digits(&gpu, &params, 3, s, 5, 7);
    assert_close("chunks of 3 vs one batch of 7", &chunked, &a, 1e-6, 1e-6);
    // With fresh noise in each step too; and that noise changes the digits.
    let s = stochastic(5, 1.0, 1.0);
    let a2 = digits(&gpu, &params, 7, s, 5, 7);
    assert_eq!(a2, digits(&gpu, &params, 7, s, 5, 7), "eta 1: same seed");
    let chunked = digits(&gpu, &params, 3, s, 5, 7);
    assert_close("eta 1: chunks of 3 vs 7", &chunked, &a2, 1e-6, 1e-6);
    let moved = a.iter().zip(&a2).filter(|(x, y)| (*x - *y).abs() > 1e-3);
    assert!(
        moved.count() > a.len() / 2,
        "eta 1 left the digits as they were"
    );
}

/// The stochastic step's coefficients: none for eta = 0 or on the last step; for eta = 1 and
/// s = 1 the fresh noise has DDPM's posterior size (variance-exploding form,
/// sigma_up^2 = t_m^2 (t_n^2 - t_m^2) / t_n^2, t = (1 - a'^j) / a'^j), computed here apart.
#[test]
fn stochastic_step_coefficients() {
    for (steps, scale) in [(50, 1.0), (500, 1.5), (7, 0.5)] {
        assert!(schedule(steps, scale)
            .noise_coefs()
            .iter()
            .all(|c| *c == [0.0, 0.0]));
        let c = stochastic(steps, scale, 1.0).noise_coefs();
        assert_eq!(c.len(), steps as usize);
        assert!(c.iter().all(|[a, b]| a.is_finite() && b.is_finite()));
        if scale >= 1.0 {
            assert_eq!(
                *c.last().unwrap(),
                [0.0, 0.0],
                "no noise after the last step"
            );
        }
    }
    let s = stochastic(50, 1.0, 1.0);
    let ap = s.alpha_prime();
    let t = |j: f64| (1.0 - ap.powf(j)) / ap.powf(j);
    for (k, [c0, c1]) in s.noise_coefs().iter().enumerate().take(49) {
        let (n, m) = ((50 - k) as f64, (49 - k) as f64);
        let up = t(m) * (t(n).powi(2) - t(m).powi(2)).sqrt() / t(n);
        let want = up * ap.powf(m);
        assert!(
            ((*c1 as f64) - want).abs() <= 1e-6 + 1e-4 * want,
            "step {k}: c1 {c1} vs {want}"
        );
        // Fresh and kept noise together keep the level's noise size (1 - a'^m).
        let sigma = 1.0 - ap.powf(m);
        let kept = sigma + *c0 as f64;
        assert!((kept * kept + (*c1 as f64).powi(2) - sigma * sigma).abs() < 1e-5);
    }
}

/// `--low-step-scale 1.5 --low-from 200` with n' = 10 of 500 (levels 500, 450, .., 50): steps
/// 0..=5 at the plain scale, 6..=9 at 1.5, in the division and in the fresh-noise
/// coefficients; the step table carries both.
#[test]
fn low_step_scale_starts_at_its_level() {
    let s = Schedule {
        low_scale: 1.5,
        low_from: 200,
        ..stochastic(10, 1.0, 1.0)
    };
    let ap = s.alpha_prime();
    let (plain, coefs) = (stochastic(10, 1.0, 1.0).noise_coefs(), s.noise_coefs());
    let uniform = stochastic(10, 1.5, 1.0).noise_coefs();
    let table = s.step_table();
    for k in 0..10u32 {
        let want = if k >= 6 { 1.5 } else { 1.0 };
        assert_eq!(s.scale_at(k), want, "step {k}");
        assert!(
            (s.keep(k) as f64 - ap.powf(want as f64)).abs() < 1e-7,
            "step {k}"
        );
        let same = if k >= 6 { &uniform } else { &plain };
        assert_eq!(
            coefs[k as usize], same[k as usize],
            "step {k}'s noise coefficients"
        );
        let row = table[k as usize];
        assert_eq!(
            row,
            [
                s.table()[k as usize],
                s.keep(k),
                coefs[k as usize][0],
                coefs[k as usize][1]
            ]
        );
    }
    // Off (low_from 0): every step at the plain scale.
    let off = Schedule {
        low_scale: 1.5,
        ..stochastic(10, 1.0, 1.0)
    };
    assert!((0..10).all(|k| off.scale_at(k) == 1.0));
}

/// `--cfg-min-level`'s steps: those whose level (n' - k) n_max / n' is at least the level,
/// counted against the levels listed by hand.
#[test]
fn steps_at_or_above_a_level() {
    // 10 steps of 500: levels 500, 450, .., 50.
    let s = schedule(10, 1.0);
    for (level, want) in [
        (0, 10),
        (50, 10),
        (51, 9),
        (300, 5),
        (301, 4),
        (500, 1),
        (501, 0),
    ] {
        assert_eq!(s.steps_at_or_above(level), want, "level {level}");
    }
    // 30 steps of 500: levels 500, 483.3, .., 16.7; level 100 is step 24's.
    let s = schedule(30, 1.0);
    for (level, want) in [(100, 25), (101, 24), (17, 29), (16, 30)] {
        assert_eq!(s.steps_at_or_above(level), want, "level {level}");
    }
}

#[test]
fn bad_schedules_are_errors() {
    for (steps, scale) in [(0, 1.0), (10, 0.0), (10, -1.0), (10, f32::NAN)] {
        assert!(
            schedule(steps, scale).validate().is_err(),
            "{steps} {scale}"
        );
    }
    for eta in [-0.1, 1.5, f32::NAN] {
        assert!(stochastic(10, 1.0, eta).validate().is_err(), "eta {eta}");
    }
    for low_scale in [0.0, -1.0, f32::INFINITY] {
        let s = Schedule {
            low_scale,
            low_from: 100,
            ..schedule(10, 1.0)
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("low-step-scale"), "{e}");
    }
    let s = schedule(50, 1.0);
    // alpha is an f32 (0.99 rounds to 0.99000001): compare loosely.
    assert!((s.alpha_prime() - 0.99f64.powi(10)).abs() < 1e-6);
    let t = s.table();
    assert_eq!(t.len(), 50);
    assert!(
        (t[0] as f64 - 0.99f64.powi(500)).abs() < 1e-6
            && (t[49] as f64 - 0.99f64.powi(10)).abs() < 1e-6
    );
}

/// The loop reads nothing back: submitting all steps leaves the device's readback counter
/// unchanged; fetching the digits is exactly one readback (also with a refiner and a guide).
#[test]
fn sampling_loop_reads_nothing_back() {
    let gpu = common::gpu();
    let config = Preset::Tiny.model();
    let layout = ParamLayout::new(&config);
    let p = GpuTensor::from_slice(&gpu, "params", &[layout.total], &layout.init(4)).unwrap();
    let model = SamplerModel {
        config: &config,
        layout: &layout,
        params: &p,
    };
    // Without and with fresh noise; with a refiner (here the same model) from level 200;
    // and guided by it too.
    let guide = Guide {
        model,
        guidance: 2.0,
        from_level: Some(300),
    };
    for (eta, refine, guide) in [
        (0.0, None, None),
        (1.0, None, None),
        (1.0, Some((model, 200)), None),
        (1.0, Some((model, 200)), Some(guide)),
    ] {
        let s = stochastic(20, 1.5, eta);
        let refiners: Vec<_> = refine.into_iter().collect();
        let sm = Sampler::new(
            &gpu,
            Stack {
                model: model,
                guide: guide,
                refiners: &refiners,
                classes: None,
            },
            6,
            s,
            1,
        )
        .unwrap();
        assert_loop_reads_nothing_back(&gpu, &sm);
    }
    // A class-conditional loop: classifier-free guided model and refiner, a guide.
    let m = Conditional::new(&gpu);
    let guide = Guide {
        model: m.view(1),
        guidance: 2.0,
        from_level: None,
    };
    let classes = Classes {
        digits: vec![1, 4],
        cfg: 2.0,
        min_level: 100,
    };
    let refiners = [(m.view(2), 200)];
    let s = stochastic(20, 1.5, 1.0);
    let sm = Sampler::new(
        &gpu,
        Stack {
            model: m.view(0),
            guide: Some(guide),
            refiners: &refiners,
            classes: Some(&classes),
        },
        6,
        s,
        1,
    );
    assert_loop_reads_nothing_back(&gpu, &sm.unwrap());
}

/// Submitting all steps of `sm` reads nothing back; fetching its digits is one readback.
fn assert_loop_reads_nothing_back(gpu: &Gpu, sm: &Sampler) {
    let before = gpu.readbacks();
    sm.submit(gpu, 0).unwrap();
    gpu.wait().unwrap();
    assert_eq!(gpu.readbacks(), before, "the 20-step loop read data back");
    sm.run(gpu, 0).unwrap();
    assert_eq!(
        gpu.readbacks(),
        before + 1,
        "one readback for the finished digits"
    );
}

/// The automatic batch counts the feed-forward block's activations: a wide block gives a
/// smaller batch, and the batch chosen always fits the adapter.
#[test]
fn auto_batch_counts_the_mlp_and_fits() {
    let gpu = common::gpu();
    let plain = Preset::Tiny.model();
    let wide = ModelConfig { mlp: 4096, ..plain };
    let (a, b) = (
        wgpu_diffusion::sample::auto_batch(&gpu, &plain, 1_000_000),
        wgpu_diffusion::sample::auto_batch(&gpu, &wide, 1_000_000),
    );
    assert!(b < a, "batch with mlp {b} vs without {a}");
    for (config, batch) in [(plain, a), (wide, b)] {
        wgpu_diffusion::model::network::check_fits(&gpu, &config, batch).unwrap();
    }
    // With refiners every network is held at once: with one, half of the smaller limit; with
    // two, a third; still capped by the count (a count that fits is not divided).
    let pair = |count| wgpu_diffusion::sample::auto_batch_for(&gpu, &plain, &[&wide], count);
    assert_eq!(pair(1_000_000), (b / 2).max(1), "limit of the pair");
    assert_eq!(
        pair(3),
        3.min((b / 2).max(1)),
        "the count caps the pair's batch"
    );
    let three = wgpu_diffusion::sample::auto_batch_for(&gpu, &plain, &[&plain, &wide], 1_000_000);
    assert_eq!(three, (b / 3).max(1), "limit of three networks");
    assert_eq!(
        wgpu_diffusion::sample::auto_batch_for(&gpu, &plain, &[], 1_000_000),
        a
    );
}

/// The shipped model (web/models/digits.safetensors: the digits preset's guide, model and
/// refiner with their [sample] settings) draws the same digits in f16 as in f32 from the same
/// seed: every pixel within F16_LOOP_MAX_DIFF of 255 and the mean within F16_LOOP_MEAN_DIFF.
/// The one f16 rounding per stored activation compounds through 3 models and the loop's
/// steps: over 1,000 digits of a weaker digits run 3 pixels on strokes' edges moved by 5 to 15
/// (docs/experiments/17). Mutation: `upload_model` ignoring `--precision` (f32 weights on both
/// sides) fails the assertion that the two runs differ somewhere.
#[test]
fn f16_loop_draws_the_f32_digits() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/models/digits.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let bundle = Bundle::from_bytes(&bytes, &path.display().to_string()).unwrap();
    let flags = wgpu_diffusion::sample::SampleFlags {
        seed: Some(3),
        ..Default::default()
    };
    let (s, schedule, classes) = bundle.settings_with(&flags, None).unwrap();
    let draw = |precision| {
        let models = bundle.upload(&gpu, precision).unwrap();
        let sampler = models
            .sampler(&gpu, &s, schedule, classes.as_ref(), 40)
            .unwrap();
        wgpu_diffusion::sample::to_bytes(&sampler.run(&gpu, 0).unwrap())
    };
    let (f32s, f16s) = (draw(Precision::F32), draw(Precision::F16));
    let diffs: Vec<u32> = (f32s.iter().zip(&f16s))
        .map(|(a, b)| a.abs_diff(*b) as u32)
        .collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    println!("f16 vs f32, 40 digits: max {max}/255, mean {mean:.4}/255");
    assert!(max > 0, "f16 drew the f32 digits bit for bit: was it f16?");
    assert!(max <= F16_LOOP_MAX_DIFF, "max pixel difference {max}/255");
    assert!(
        mean <= F16_LOOP_MEAN_DIFF,
        "mean pixel difference {mean}/255"
    );
}
