//! `eval --loss-by-level`: the GPU model's error at single noise levels equals the CPU
//! reference model's on the same inputs; the baselines have their closed-form values; the
//! command's JSON and its errors.

mod common;

use common::{bin, error_line, mnist_dir};
use wgpu_diffusion::config::PIXEL_MEAN;
use wgpu_diffusion::eval::levels::loss_by_level;
use wgpu_diffusion::reference::{model, noise, patches, skip};
use wgpu_diffusion::sample::{load_model, Weights};

#[test]
fn loss_by_level_matches_reference_and_baselines() {
    let base = std::env::temp_dir().join(format!("wgpu-diffusion-levels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let run = base.join("run");
    let o = bin()
        .args([
            "train", "--preset", "tiny", "--mlp", "6", "--skip", "wiener",
        ])
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
    let ckpt = run.join("checkpoint.safetensors");

    let gpu = common::gpu();
    let mnist = wgpu_diffusion::data::load(Some(&mnist_dir())).unwrap();
    let m = load_model(&gpu, &ckpt, Weights::Raw).unwrap();
    let (count, seed) = (7, 3);
    let levels = [0, 37, 250, 500];
    let rows = loss_by_level(&gpu, &m, &mnist, &levels, count, seed).unwrap();
    assert_eq!(rows.len(), levels.len());

    // The reference on the same inputs (same noise: the CPU noise is the kernels' bit for bit).
    let cfg = m.config.model;
    let g = cfg.geometry;
    let (t, p) = (g.tokens() as usize, g.patches() as usize);
    let params: Vec<f32> = m.params.read(&gpu).unwrap();
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
        let pred = model::predict_noise(&cfg, &m.layout, &params, &tokens, count);
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
        for (what, got, want) in [
            ("model", row.model, want_model),
            ("identity", row.identity, want_ident),
            ("linear", row.linear, want_lin),
            ("mixture", row.mixture, want_mix),
        ] {
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
    let eval = |extra: &[&str]| {
        bin()
            .args(["eval", "--loss-by-level"])
            .args(extra)
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--data")
            .arg(mnist_dir())
            .output()
            .unwrap()
    };
    let o = eval(&["--levels", "0,500", "--count", "5", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 5);
    assert_eq!(v["levels"].as_array().unwrap().len(), 2);
    assert_eq!(v["levels"][1]["n"], 500);
    let o = eval(&["--levels", "501"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("above the model's n_max 500"),
        "{}",
        error_line(&o)
    );
    let _ = std::fs::remove_dir_all(&base);
}
