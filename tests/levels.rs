//! `eval --loss-by-level`: the GPU model's error at single noise levels equals the CPU
//! reference model's on the same inputs; the baselines have their closed-form values; the
//! command's JSON and its errors; a `--skip pixel-mixture` model's extra column.

mod common;

use common::{bin, error_line, mnist_dir};
use wgpu_diffusion::config::PIXEL_MEAN;
use wgpu_diffusion::data::Mnist;
use wgpu_diffusion::eval::levels::{loss_by_level, LevelRow};
use wgpu_diffusion::gpu::Gpu;
use wgpu_diffusion::reference::{model, noise, patches, skip};
use wgpu_diffusion::sample::{load_model, Precision, Weights};

/// A 2-step `train --preset tiny --mlp 6 --skip SKIP` run in `base`/SKIP; its checkpoint.
fn trained(base: &std::path::Path, skip: &str) -> std::path::PathBuf {
    let run = base.join(skip);
    let o = bin()
        .args(["train", "--preset", "tiny", "--mlp", "6", "--skip", skip])
        .args([
            "--train-subset",
            "50",
            "--val-count",
            "10",
            "--batch-images",
            "2",
        ])
        .args(["--repeat", "5", "--max-steps", "2", "--sample-every", "0"])
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run.join("checkpoint.safetensors")
}

/// `eval --loss-by-level`'s rows for `ckpt` at levels 0, 37, 250, 500 on 7 test digits,
/// checked against the CPU reference model and baselines on the same inputs.
fn rows_match_reference(gpu: &Gpu, mnist: &Mnist, ckpt: &std::path::Path) -> Vec<LevelRow> {
    let m = load_model(gpu, ckpt, Weights::Raw, Precision::F32).unwrap();
    let (count, seed) = (7, 3);
    let levels = [0, 37, 250, 500];
    let rows = loss_by_level(gpu, &m, mnist, &levels, count, seed).unwrap();
    assert_eq!(rows.len(), levels.len());

    // The reference on the same inputs (same noise: the CPU noise is the kernels' bit for bit).
    let config = m.config.model;
    let g = config.geometry;
    let (t, p) = (g.tokens() as usize, g.patches() as usize);
    let params: Vec<f32> = m.params.read(gpu).unwrap();
    let prior = m
        .layout
        .find("skip.prior")
        .map(|t| params[t.range()].to_vec());
    assert_eq!(prior.is_some(), rows[0].pixel_mixture.is_some());
    let perm: Vec<u32> = (0..count as u32).collect();
    for (row, &n) in rows.iter().zip(&levels) {
        let spec = noise::NoiseSpec {
            seed,
            step: n,
            stream: 0,
            alpha: m.config.alpha,
            n_max: m.config.n_max,
            repeat: 1,
            perm_offset: 0,
        };
        let nz = noise::noise_at_levels(&spec, &mnist.test.pixels, 784, &perm, &vec![n; count]);
        let tokens = patches::patches_forward(&g, &nz.noisy, &nz.cond, t);
        let target = patches::patches_forward(&g, &nz.noise, &nz.cond, p);
        let pred = model::predict_noise(&config, &m.layout, &params, &tokens, count);
        let mse = |f: &dyn Fn(usize) -> f64| {
            (0..target.len())
                .map(|i| (f(i) - target[i] as f64).powi(2))
                .sum::<f64>()
                / target.len() as f64
        };
        let d = g.dim() as usize;
        let a = |i: usize| tokens[(i / (p * d)) * t * d + i % (p * d)] as f64;
        let an = 0.99f64.powi(n as i32);
        let want_model = mse(&|i| pred[i] as f64);
        let want_ident = mse(&a);
        let want_lin = mse(&|i| skip::factor(an) * (a(i) - an * PIXEL_MEAN as f64));
        let want_mix = mse(&|i| skip::mixture(a(i), an).0);
        let mut checks = vec![
            ("model", row.model, want_model),
            ("identity", row.identity, want_ident),
            ("linear", row.linear, want_lin),
            ("mixture", row.mixture, want_mix),
        ];
        if let Some(pr) = &prior {
            let pd = p * d;
            let e = |i: usize| skip::mixture_with(a(i), an, skip::PixelPrior::at(pr, pd, i % pd));
            checks.push((
                "pixel mixture",
                row.pixel_mixture.unwrap(),
                mse(&|i| e(i).0),
            ));
        }
        for (what, got, want) in checks {
            assert!(
                (got - want).abs() <= 1e-4 * want + 1e-7,
                "n={n} {what}: {got} vs reference {want}"
            );
        }
        assert!(
            (row.signal - an).abs() < 1e-5,
            "a^n at n={n}: {}",
            row.signal
        );
    }
    rows
}

/// `eval --loss-by-level --checkpoint CKPT --data MNIST` with `extra` flags.
fn eval_levels(ckpt: &std::path::Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["eval", "--loss-by-level"])
        .args(extra)
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--data")
        .arg(mnist_dir())
        .output()
        .unwrap()
}

/// A fresh folder, the checkpoint of [`trained`] in it and its [`rows_match_reference`].
fn trained_rows(skip: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<LevelRow>) {
    let base = std::env::temp_dir().join(format!(
        "wgpu-diffusion-levels-{skip}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let ckpt = trained(&base, skip);
    let gpu = common::gpu();
    let mnist = wgpu_diffusion::data::load(Some(&mnist_dir())).unwrap();
    let rows = rows_match_reference(&gpu, &mnist, &ckpt);
    (base, ckpt, rows)
}

#[test]
fn loss_by_level_matches_reference_and_baselines() {
    let (base, ckpt, rows) = trained_rows("wiener");
    assert!(rows.iter().all(|r| r.pixel_mixture.is_none()));

    // Closed forms: at n = 0 the linear estimate is 0 (MSE = E[N^2] ~ 1), the identity's is
    // E[(X - N)^2] ~ 1 + E[X^2]; at n = 500 both are near 0.
    assert!((rows[0].linear - 1.0).abs() < 0.1, "{:?}", rows[0]);
    assert!(rows[0].identity > rows[0].linear + 0.1, "{:?}", rows[0]);
    assert!(
        rows[3].identity < 1e-3 && rows[3].linear < 1e-4 && rows[3].mixture < 1e-4,
        "{:?}",
        rows[3]
    );
    // At n = 0 the mixture knows the noise of nothing either (MSE ~ 1); at n = 37 it beats the
    // linear estimate on real digits (background pixels are read off).
    assert!((rows[0].mixture - 1.0).abs() < 0.1, "{:?}", rows[0]);
    assert!(rows[1].mixture < rows[1].linear, "{:?}", rows[1]);

    // The command: JSON with the rows; a level above n_max is one line, exit 2.
    let eval = |extra: &[&str]| eval_levels(&ckpt, extra);
    let o = eval(&["--levels", "0,500", "--count", "5", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 5);
    assert_eq!(v["levels"].as_array().unwrap().len(), 2);
    assert_eq!(v["levels"][1]["n"], 500);
    // The loss is measured in f32 only: --precision f16 is one line, exit 2.
    let o = eval(&["--precision", "f16"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("drop --precision f16"),
        "{}",
        error_line(&o)
    );
    let o = eval(&["--levels", "501"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("above the model's n_max 500"),
        "{}",
        error_line(&o)
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// A `--skip pixel-mixture` model gets a column for the posterior under its own prior (from
/// its 50 training digits), checked against the reference, better than the global mixture's
/// at mid noise (the corners are background with near certainty), in the table and the JSON.
#[test]
fn pixel_mixture_models_get_their_prior_column() {
    let (base, ckpt, rows) = trained_rows("pixel-mixture");
    let at37 = rows[1].pixel_mixture.unwrap();
    assert!(at37 < rows[1].mixture, "{:?}", rows[1]);
    let eval = |extra: &[&str]| {
        let o = eval_levels(
            &ckpt,
            &[&["--levels", "37", "--count", "3"], extra].concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(eval(&[]).contains("pixel-mixture MSE"));
    let v: serde_json::Value = serde_json::from_str(&eval(&["--json"])).unwrap();
    assert!(v["levels"][0]["pixel_mixture"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&base);
}
