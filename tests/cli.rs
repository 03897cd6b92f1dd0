//! The command line end to end: `info`, `noise`, and one-line errors with exit code 2.

mod common;

use common::{bin, error_line, mnist_dir};
use std::process::{Command, Output};

fn run(c: &mut Command) -> Output {
    c.output().expect("run wgpu-diffusion")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn info_prints_adapter_features_and_limits() {
    let o = run(bin().arg("info"));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8(o.stdout).unwrap();
    for k in [
        "adapter",
        "backend",
        "device type",
        "timestamp-query",
        "max_storage_buffer_binding_size",
    ] {
        assert!(s.contains(k), "missing {k} in:\n{s}");
    }
    let o = run(bin().args(["info", "--json"]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["adapter"].is_string());
    assert!(v["features"]["subgroup"].is_boolean());
    assert!(
        v["limits"]["max_compute_workgroups_per_dimension"]
            .as_u64()
            .unwrap()
            >= 65535
    );
}

/// `--limits webgpu` opens the device at WebGPU's default limits (which `info` names), the
/// environment variable does the same, and a model too big for them is one line naming the
/// limit and the batch that would fit.
#[test]
fn webgpu_limits_are_webgpus_defaults() {
    let limits_of = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let flag = limits_of(run(bin().args(["info", "--json", "--limits", "webgpu"])));
    let env = limits_of(run(bin()
        .env("WGPU_DIFFUSION_LIMITS", "webgpu")
        .args(["info", "--json"])));
    let adapter = limits_of(run(bin().args(["info", "--json", "--limits", "adapter"])));
    for v in [&flag, &env] {
        assert_eq!(v["limits_from"], "webgpu");
        let l = &v["limits"];
        assert_eq!(l["max_compute_invocations_per_workgroup"], 256, "{l}");
        assert_eq!(l["max_compute_workgroup_storage_size"], 16384, "{l}");
        assert_eq!(l["max_storage_buffers_per_shader_stage"], 8, "{l}");
        assert_eq!(l["max_buffer_size"], 256 << 20, "{l}");
    }
    assert_eq!(adapter["limits_from"], "adapter");

    let o = run(bin()
        .args([
            "train",
            "--preset",
            "notebook",
            "--limits",
            "webgpu",
            "--max-steps",
            "1",
        ])
        .args(["--data", mnist_dir().to_str().unwrap(), "--out"])
        .arg(std::env::temp_dir().join(format!("wgpu-diffusion-webgpu-{}", std::process::id()))));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = error_line(&o);
    for part in [
        "the QKV activations",
        "WebGPU's default max_storage_buffer_binding_size of 128.0 MiB",
        "samples at once fit",
    ] {
        assert!(line.contains(part), "missing '{part}' in: {line}");
    }
    let o = run(bin().args(["info", "--limits", "browser"]));
    assert_eq!(o.status.code(), Some(2));
}

/// Over ssh or in a container XDG_RUNTIME_DIR is unset; the program prints nothing to stderr
/// then (Mesa 22.3's device-select layer printed two lines about it: see
/// `Gpu::new`). With that layer installed, removing the fix makes this test fail.
#[test]
fn nothing_on_stderr_without_a_runtime_dir() {
    let o = run(bin()
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .arg("info"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "stderr of `info`");
}

#[test]
fn noise_writes_png_of_expected_size() {
    let out = std::env::temp_dir().join(format!("wgpu-diffusion-noise-{}.png", std::process::id()));
    let o = run(bin()
        .args(["noise", "--steps", "0,50,500", "--zoom", "2", "--seed", "3"])
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    // 3 digits of 28*2 pixels with a 2-pixel border around and between them.
    assert_eq!((img.width(), img.height()), (3 * (56 + 2) + 2, 56 + 4));
    let grey = img.to_luma8();
    // The clean digit (first cell) has dark background and bright strokes; the last is noise.
    let cell = |k: u32| -> Vec<u8> {
        (0..56)
            .flat_map(|y| (0..56).map(move |x| (x, y)))
            .map(|(x, y)| grey.get_pixel(2 + k * 58 + x, 2 + y).0[0])
            .collect()
    };
    let dark = |c: &[u8]| c.iter().filter(|&&v| v < 10).count() as f64 / c.len() as f64;
    assert!(
        dark(&cell(0)) > 0.5,
        "clean digit should be mostly black background"
    );
    assert!(dark(&cell(2)) < 0.05, "n = 500 should be almost pure noise");
    let _ = std::fs::remove_file(out);
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        vec!["noise", "--bogus"],
        vec!["noise", "--index", "minus-one"],
        vec!["noise", "--steps", "1,x"],
        vec!["frobnicate"],
    ] {
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        error_line(&o);
    }
}

#[test]
fn bad_values_exit_2_with_one_line() {
    let d = mnist_dir();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["noise".into(), "--alpha".into(), "1.5".into()],
            "--alpha",
        ),
        (
            vec!["noise".into(), "--data".into(), "/nonexistent/mnist".into()],
            "/nonexistent/mnist",
        ),
        (
            vec![
                "noise".into(),
                "--data".into(),
                d.display().to_string(),
                "--index".into(),
                "60000".into(),
            ],
            "out of range",
        ),
        (
            vec!["train".into(), "--minutes".into(), "-1".into()],
            "minutes must be a positive number, got -1",
        ),
        (
            vec!["noise".into(), "--alpha".into(), "-0.5".into()],
            "--alpha",
        ),
        (
            vec!["sample".into(), "--count".into(), "-5".into()],
            "invalid value '-5' for '--count",
        ),
    ];
    for (args, needle) in cases {
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = error_line(&o);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn no_adapter_is_one_line_and_exit_2() {
    let o = run(bin()
        .args(["--backend", "vulkan", "info"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(
        line.contains("no GPU adapter") && line.contains("mesa-vulkan-drivers"),
        "{line}"
    );

    let o = run(bin().args(["--adapter", "no-such-gpu-name", "info"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("no-such-gpu-name"));
}

/// On a CPU adapter the seed preset says at start that it wants a GPU and what the fast recipe
/// draws here; the tiny preset (and a resumed run) says nothing of it.
#[test]
fn a_cpu_adapter_is_told_about_the_fast_recipe() {
    let note = "wants a GPU";
    let train = |preset: &str, out: &std::path::Path, extra: &[&str]| {
        let mut c = bin();
        c.args(["train", "--preset", preset, "--train-subset", "5"])
            .args(["--val-count", "10", "--data"])
            .arg(mnist_dir())
            .arg("--out")
            .arg(out)
            .args(extra);
        common::ok(&run(&mut c))
    };
    let dir = common::tmp("cli", "cpu-note");
    let gpu = common::gpu();
    let seed = train("seed", &dir.join("seed"), &["--max-steps", "1"]);
    if gpu.is_cpu() {
        let line = seed.lines().find(|l| l.contains(note)).unwrap_or_else(|| {
            panic!("no note on {}:\n{seed}", gpu.info.name);
        });
        assert!(line.contains("--preset fast --minutes 30"), "{line}");
    } else {
        assert!(!seed.contains(note), "{seed}");
    }
    let tiny = train("tiny", &dir.join("tiny"), &["--max-steps", "1"]);
    assert!(!tiny.contains(note), "{tiny}");
    let resumed = train("seed", &dir.join("seed"), &["--resume", "--max-steps", "2"]);
    assert!(!resumed.contains(note), "{resumed}");
}
