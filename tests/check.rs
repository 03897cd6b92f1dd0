//! `check`: every kernel family passes on this adapter (exit 0); a kernel broken on purpose
//! (the perturbation hook) fails by name with exit 1 and nothing else fails. And the tuner
//! through the command line: a `--tune cached` run keeps its choices, which `info` lists.

mod common;

use common::{error_line, mnist_dir, ok};

fn check_json(perturb: Option<&str>) -> (std::process::Output, serde_json::Value) {
    check_json_with(perturb, &[])
}

fn check_json_with(
    perturb: Option<&str>,
    args: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let mut c = common::bin();
    c.args(["check", "--quick", "--json"]).args(args);
    if let Some(p) = perturb {
        c.env("WGPU_DIFFUSION_PERTURB", p);
    }
    let o = c.output().unwrap();
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .map(str::to_string);
    let report = serde_json::from_str(&line.unwrap_or_default()).expect("a JSON report");
    (o, report)
}

fn kernels(report: &serde_json::Value) -> Vec<String> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kernel"].as_str().unwrap().to_string())
        .collect()
}

/// `check --precision f16`: the f16 kernels pass on an adapter with shader-f16, and a broken
/// one (the hook on the f16 GELU only) fails by name; without shader-f16, one line, exit 2.
#[test]
fn f16_kernels_pass_and_a_broken_one_is_named() {
    let Some(_gpu) = common::f16_gpu() else {
        let o = common::bin()
            .args(["check", "--precision", "f16"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(
            error_line(&o).contains("no shader-f16"),
            "{}",
            error_line(&o)
        );
        return;
    };
    let (o, report) = check_json_with(None, &["--precision", "f16"]);
    ok(&o);
    let names = kernels(&report);
    for family in [
        "matmul naive[f16]",
        "matmul register",
        "attention_forward[f16]",
        "add_pos[f16]",
        "drop_cond_add[f16]",
        "pad_cond[f16]",
        "label_forward[f16]",
        "skip_forward PixelMixture[f16]",
        "gelu_forward[f16]",
        "recompose[f16]",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "no {family} row in {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.contains("[f16]")), "{names:?}");
    assert_eq!(report["failed"].as_array().unwrap().len(), 0);
    let (o, report) = check_json_with(Some("gelu_forward[f16]"), &["--precision", "f16"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(report["failed"], serde_json::json!(["gelu_forward[f16]"]));
}

#[test]
fn every_kernel_passes_and_a_broken_one_is_named() {
    let (o, report) = check_json(None);
    ok(&o);
    let names = kernels(&report);
    for family in [
        "matmul naive",
        "matmul register",
        "matmul tiled",
        "colsum",
        "attention_forward",
        "attention_backward",
        "patches_forward",
        "patches_backward",
        "recompose",
        "fill_normal",
        "noise_inject",
        "skip_forward",
        "skip_backward",
        "mse_forward",
        "mse_backward",
        "add_pos",
        "pos_backward",
        "adam_step",
        "ema",
        "gelu_forward",
        "gelu_backward",
        "label_forward",
        "label_backward",
        "sample_step",
        "sample_loop",
        "relu_forward",
        "softmax_xent_forward",
        "softmax_xent_backward",
        "mlp",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "no {family} row in {names:?}"
        );
    }
    assert_eq!(report["failed"].as_array().unwrap().len(), 0);

    let (o, report) = check_json(Some("gelu_backward"));
    assert_eq!(o.status.code(), Some(1));
    let line = error_line(&o);
    assert!(
        line.contains("check failed") && line.contains("gelu_backward"),
        "{line}"
    );
    assert_eq!(report["failed"], serde_json::json!(["gelu_backward"]));
}

#[test]
fn a_cached_tune_is_kept_and_listed_by_info() {
    let cache = common::tmp("check", "tune-cache");
    let out = common::tmp("check", "tune-run");
    let o = common::bin()
        .env("WGPU_DIFFUSION_CACHE_DIR", &cache)
        .args([
            "--tune",
            "cached",
            "train",
            "--preset",
            "tiny",
            "--max-steps",
            "2",
        ])
        .args([
            "--train-subset",
            "200",
            "--val-count",
            "40",
            "--batch-images",
            "4",
        ])
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(&o);
    let info = |tune: &str| {
        let o = common::bin()
            .env("WGPU_DIFFUSION_CACHE_DIR", &cache)
            .args(["--tune", tune, "info", "--json"])
            .output()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&ok(&o)).unwrap()
    };
    let tuned = info("cached")["tuned"].as_object().unwrap().clone();
    assert!(!tuned.is_empty(), "no tuned shapes listed");
    for (shape, variant) in &tuned {
        let variant = variant.as_str().unwrap();
        assert!(shape.starts_with("gemm "), "{shape}");
        assert!(
            ["register", "tiled", "subgroup"]
                .iter()
                .any(|k| variant.starts_with(k)),
            "{variant}"
        );
    }
    // `--tune off` neither reads nor lists the cache; the default (`auto`) reads it on GPUs
    // only.
    assert!(info("off")["tuned"].as_object().unwrap().is_empty());
    let o = common::bin()
        .env_remove("WGPU_DIFFUSION_TUNE")
        .env("WGPU_DIFFUSION_CACHE_DIR", &cache)
        .args(["info", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let listed = !report["tuned"].as_object().unwrap().is_empty();
    assert_eq!(listed, report["device_type"] != "Cpu", "{report}");
}
