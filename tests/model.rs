//! The whole model on the GPU (forward, loss, backward, Adam) against the CPU reference of
//! `src/reference/model.rs`, which is itself checked by finite differences.

mod common;

use wgpu_diffusion::config::{Geometry, ModelConfig, Skip, NO_LABEL};
use wgpu_diffusion::gpu::{Gpu, GpuTensor};
use wgpu_diffusion::lr_schedule::{LrSchedule, RunLength};
use wgpu_diffusion::model::network::{Network, Optimizer, Rows};
use wgpu_diffusion::model::{Init, ParamLayout};
use wgpu_diffusion::ops::adam::AdamConfig;
use wgpu_diffusion::reference::{adam, model as reference, patches, rows as ref_rows};
use wgpu_diffusion::settings::recipe::Preset;
use wgpu_diffusion::testing::{assert_close, random_prior, uniform_data};

/// The tiny preset and a second odd geometry with two layers.
fn configs() -> Vec<(ModelConfig, usize)> {
    vec![
        (Preset::Tiny.model(), 3),
        (
            ModelConfig {
                geometry: Geometry::new(13, 1).unwrap(),
                layers: 2,
                heads: 3,
                key_dim: 5,
                mlp: 0,
                skip: Skip::Identity,
                loss_weight_max: 1,
                classes: false,
            },
            2,
        ),
        // The feed-forward block (--mlp): odd F on the tiny geometry, and two layers.
        (
            ModelConfig {
                mlp: 7,
                ..Preset::Tiny.model()
            },
            2,
        ),
        (
            ModelConfig {
                geometry: Geometry::new(13, 1).unwrap(),
                layers: 2,
                heads: 3,
                key_dim: 5,
                mlp: 33,
                skip: Skip::Identity,
                loss_weight_max: 1,
                classes: false,
            },
            2,
        ),
        // One token for the whole image (P = 28, O = 0: g = 1, T = 2), one and two layers: the
        // last layer's patch rows are half of its rows.
        (
            ModelConfig {
                geometry: Geometry::new(28, 0).unwrap(),
                layers: 1,
                heads: 2,
                key_dim: 3,
                mlp: 5,
                skip: Skip::Wiener,
                loss_weight_max: 1,
                classes: false,
            },
            3,
        ),
        (
            ModelConfig {
                geometry: Geometry::new(28, 0).unwrap(),
                layers: 2,
                heads: 1,
                key_dim: 4,
                mlp: 3,
                skip: Skip::Identity,
                loss_weight_max: 1,
                classes: false,
            },
            2,
        ),
        // The Wiener skip term on the output (--skip wiener), with a feed-forward block.
        (
            ModelConfig {
                mlp: 9,
                skip: Skip::Wiener,
                ..Preset::Tiny.model()
            },
            2,
        ),
        // The per-position mixture (--skip pixel-mixture), whose prior is a tensor of the
        // parameters that training must not move, with the loss weight (--loss-weight-max:
        // the samples' levels a^n = 0.2, 0.5 give weights 30 (capped) and 11.6).
        (
            ModelConfig {
                mlp: 5,
                skip: Skip::PixelMixture,
                loss_weight_max: 30,
                ..Preset::Tiny.model()
            },
            2,
        ),
        // The mixture skip (--skip mixture), two layers of odd sizes.
        (
            ModelConfig {
                geometry: Geometry::new(13, 1).unwrap(),
                layers: 2,
                heads: 3,
                key_dim: 5,
                mlp: 7,
                skip: Skip::Mixture,
                loss_weight_max: 1,
                classes: false,
            },
            3,
        ),
        // Class-conditional (--classes): the label embedding on the tiny geometry, and on
        // the whole-image model with the Wiener skip (labels with a repeat and "no label").
        (
            ModelConfig {
                classes: true,
                ..Preset::Tiny.model()
            },
            3,
        ),
        (
            ModelConfig {
                geometry: Geometry::new(28, 0).unwrap(),
                layers: 2,
                heads: 2,
                key_dim: 3,
                mlp: 5,
                skip: Skip::Wiener,
                loss_weight_max: 1,
                classes: true,
            },
            5,
        ),
    ]
}

struct Case {
    layout: ParamLayout,
    params: Vec<f32>,
    tokens: Vec<f32>,
    target: Vec<f32>,
    /// With --classes: each sample's label (a repeat, and NO_LABEL).
    labels: Vec<u32>,
}

fn case(config: &ModelConfig, batch: usize, seed: u64) -> Case {
    let g = &config.geometry;
    let layout = ParamLayout::new(config);
    let mut params = layout.init(seed);
    // Non-zero biases, Q/K large enough that attention is far from uniform, and a
    // per-position prior unlike the global one.
    for t in &layout.tensors {
        let r = match t.init {
            Init::Prior => random_prior(t.len() / 3, seed),
            _ => uniform_data(t.len(), seed + t.offset as u64),
        };
        for (i, v) in params[t.range()].iter_mut().enumerate() {
            match t.init {
                Init::Prior => *v = r[i],
                Init::Zeros => *v = 0.05 * r[i],
                Init::Uniform(_) if t.name.ends_with("w_qkv") => *v *= 6.0,
                _ => {}
            }
        }
    }
    let images: Vec<f32> = uniform_data(batch * g.pixels() as usize, seed + 1)
        .iter()
        .map(|v| 0.5 * v)
        .collect();
    let cond: Vec<f32> = (0..batch).map(|b| 0.2 + 0.3 * b as f32).collect();
    let tokens = patches::patches_forward(g, &images, &cond, g.tokens() as usize);
    let target = uniform_data(batch * (g.patches() * g.dim()) as usize, seed + 2);
    let labels = match config.classes {
        true => (0..batch).map(|b| [3, NO_LABEL, 3, 0, 9][b % 5]).collect(),
        false => vec![],
    };
    Case {
        layout,
        params,
        tokens,
        target,
        labels,
    }
}

fn build(
    gpu: &Gpu,
    config: &ModelConfig,
    batch: usize,
    c: &Case,
) -> (GpuTensor, Optimizer, Network) {
    let params = GpuTensor::from_slice(gpu, "params", &[c.layout.total], &c.params).unwrap();
    let zeros = vec![0.0; c.layout.total];
    let opt = Optimizer::new(
        gpu, &c.layout, &params, &zeros, &zeros, &c.params, 1e-3, 0.9,
    )
    .unwrap();
    let net = Network::new(gpu, config, &c.layout, batch, &params, Some(&opt.grads)).unwrap();
    net.tokens.write(gpu, &c.tokens);
    net.target.write(gpu, &c.target);
    if let Some(l) = &net.labels {
        l.write(gpu, &c.labels);
    }
    (params, opt, net)
}

#[test]
fn activations_loss_and_every_gradient_match_reference() {
    let gpu = common::gpu();
    for (config, batch) in configs() {
        let c = case(&config, batch, 10);
        let (_params, opt, net) = build(&gpu, &config, batch, &c);
        net.set_slot(&gpu, 5);
        gpu.run(&net.dispatches()).unwrap();
        let name = format!(
            "P={} L={} H={} F={} skip {:?} classes {}",
            config.geometry.patch,
            config.layers,
            config.heads,
            config.mlp,
            config.skip,
            config.classes
        );

        let fwd = reference::forward_labelled::<f32>(
            &config, &c.layout, &c.params, &c.tokens, &c.labels, batch,
        );
        let mut want: Vec<(String, &[f32])> = vec![("x_start".into(), &fwd.x_start)];
        for (l, ly) in fwd.layers.iter().enumerate() {
            want.push((format!("layer{l}.qkv"), &ly.qkv));
            want.push((format!("layer{l}.probs"), &ly.probs));
            want.push((format!("layer{l}.o"), &ly.o));
            if let Some(mlp) = &ly.mlp {
                want.push((format!("layer{l}.y"), &mlp.y));
                want.push((format!("layer{l}.pre"), &mlp.pre));
                want.push((format!("layer{l}.h"), &mlp.h));
            }
            want.push((format!("layer{l}.out"), &ly.out));
        }
        want.push(("output".into(), fwd.output()));
        let got = net.activations();
        assert_eq!(got.len(), want.len());
        // The last layer after attention works on the patch rows only: compare those.
        let (t, p) = (
            config.geometry.tokens() as usize,
            config.geometry.patches() as usize,
        );
        let patch_rows = |v: &[f32]| {
            let c = v.len() / (batch * t);
            ref_rows::drop_cond(v, batch, t, p, c)
        };
        for ((gn, gt, rows), (wn, wv)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            let g = gt.read::<f32>(&gpu).unwrap();
            let (g, w) = match rows {
                Rows::All => (g, wv.to_vec()),
                Rows::Patches => {
                    assert_eq!(g.len() * t, wv.len() * p, "{name} {gn}: not the patch rows");
                    (g, patch_rows(wv))
                }
                Rows::PatchesOfAll => (patch_rows(&g), patch_rows(wv)),
            };
            assert_close(&format!("{name} {gn}"), &g, &w, 1e-5, 1e-4);
        }

        let loss = reference::loss(&config, fwd.output(), &c.tokens, &c.target, batch);
        let got_loss = net.read_losses(&gpu, 5, 1).unwrap()[0];
        assert_close(&format!("{name} loss"), &[got_loss], &[loss], 1e-7, 1e-5);

        let grads = reference::backward(&config, &c.layout, &c.params, &fwd, &c.target, batch);
        let got_grads: Vec<f32> = opt.grads.read(&gpu).unwrap();
        let scale = grads.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for t in &c.layout.tensors {
            assert_close(
                &format!("{name} d{}", t.name),
                &got_grads[t.range()],
                &grads[t.range()],
                1e-5 * scale,
                1e-3,
            );
        }
    }
}

#[test]
fn ten_adam_steps_give_the_reference_loss_sequence() {
    let gpu = common::gpu();
    for (config, batch) in configs() {
        let c = case(&config, batch, 20);
        let (params, opt, net) = build(&gpu, &config, batch, &c);
        let steps = 10;
        // A warm-up and a decay: each step's rate reaches Adam as the reference's.
        let sched = LrSchedule::new(1e-3, 3, 4, 0.0, 1e-4, RunLength::Steps(steps)).unwrap();
        for k in 0..steps {
            net.set_slot(&gpu, k as u32);
            opt.set_step(&gpu, k + 1, sched.at(k, 0.0));
            let mut all = net.dispatches();
            all.extend(opt.dispatches());
            gpu.run(&all).unwrap();
        }
        let got = net.read_losses(&gpu, 0, steps as usize).unwrap();

        let acfg = AdamConfig::keras(1e-3);
        let mut p = c.params.clone();
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        let mut ema = c.params.clone();
        let mut want = Vec::new();
        for k in 0..steps {
            let (l, g) = reference::loss_and_grad_labelled::<f32>(
                &config, &c.layout, &p, &c.tokens, &c.labels, &c.target, batch,
            );
            want.push(l);
            let acfg = AdamConfig {
                lr: sched.at(k, 0.0),
                ..acfg
            };
            adam::adam_step(&acfg, k + 1, &mut p, &g, &mut m, &mut v);
            adam::ema(adam::ema_decay_at(0.9, k + 1), &p, &mut ema);
        }
        let name = format!(
            "P={} L={} skip {:?}",
            config.geometry.patch, config.layers, config.skip
        );
        let moved = params.read::<f32>(&gpu).unwrap();
        for t in c.layout.tensors.iter().filter(|t| !t.trained()) {
            assert_eq!(
                &moved[t.range()],
                &c.params[t.range()],
                "{name}: Adam moved {}",
                t.name
            );
        }
        assert!(
            want[9] < want[0],
            "{name}: the reference loss should fall: {want:?}"
        );
        assert_close(&format!("{name} loss sequence"), &got, &want, 1e-6, 1e-4);
        assert_close(
            &format!("{name} params after 10 steps"),
            &params.read::<f32>(&gpu).unwrap(),
            &p,
            1e-5,
            1e-3,
        );
        assert_close(
            &format!("{name} EMA after 10 steps"),
            &opt.ema.read::<f32>(&gpu).unwrap(),
            &ema,
            1e-5,
            1e-3,
        );
    }
}
