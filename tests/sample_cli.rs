//! `sample` end to end: a checkpoint made by `train` gives an IDX file that our own reader
//! loads, a grid, a trajectory; bad input is one line and a non-zero exit.

mod common;

use common::{bin, error_line, mnist_dir};
use std::path::{Path, PathBuf};
use std::process::Output;
use wgpu_diffusion::data::idx::read_idx_file;

/// A tiny checkpoint from 3 training steps (`extra`: more train flags).
fn checkpoint(dir: &Path, extra: &[&str]) -> PathBuf {
    let o = bin()
        .args([
            "train",
            "--preset",
            "tiny",
            "--train-subset",
            "100",
            "--val-count",
            "20",
        ])
        .args([
            "--batch-images",
            "2",
            "--repeat",
            "10",
            "--max-steps",
            "3",
            "--sample-every",
            "0",
        ])
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    common::ok(&o);
    dir.join("best.safetensors")
}

fn sample(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("sample")
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `eval --checkpoint CKPT ARGS` with an empty data folder (under `base`): whatever it reports
/// comes before it looks for the data.
fn eval_without_data(base: &Path, ckpt: &Path, args: &[&str]) -> Output {
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    bin()
        .arg("eval")
        .arg("--checkpoint")
        .arg(ckpt)
        .args(args)
        .arg("--data")
        .arg(&empty)
        .output()
        .unwrap()
}

#[test]
fn sample_writes_idx_grid_and_trajectory() {
    let base = std::env::temp_dir().join(format!("wgpu-diffusion-sample-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ckpt = checkpoint(&base.join("run"), &[]);
    let out = base.join("samples");
    let o = sample(
        &ckpt,
        &out,
        &[
            "--count",
            "21",
            "--steps",
            "4",
            "--batch",
            "8",
            "--grid",
            "4",
            "--trajectory",
            "--json",
        ],
    );
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 21);
    assert!(v["digits_per_s"].as_f64().unwrap() > 0.0);
    let idx = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
    assert_eq!(idx.dims, vec![21, 28, 28]);
    let img = image::open(out.join("grid.png")).unwrap();
    assert_eq!((img.width(), img.height()), (4 * 58 + 2, 4 * 58 + 2));
    assert!(out.join("trajectory.png").exists() && out.join("trajectory.gif").exists());

    // The same seed gives the same digits, whatever the batch; another seed others.
    let out2 = base.join("samples2");
    common::ok(&sample(
        &ckpt,
        &out2,
        &["--count", "21", "--steps", "4", "--batch", "21"],
    ));
    let idx2 = read_idx_file(out2.join("samples-idx3-ubyte")).unwrap();
    assert_eq!(idx.data, idx2.data, "chunked and unchunked runs differ");
    common::ok(&sample(
        &ckpt,
        &out2,
        &["--count", "21", "--steps", "4", "--seed", "9"],
    ));
    let idx3 = read_idx_file(out2.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(idx.data, idx3.data, "another seed gave the same digits");

    // --background reaches the loop (all 4 steps here: levels 500, 375, 250, 125).
    let o = sample(
        &ckpt,
        &out2,
        &[
            "--count",
            "21",
            "--steps",
            "4",
            "--background",
            "500",
            "--json",
        ],
    );
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["settings"]["background"], 500);
    let idx4 = read_idx_file(out2.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(idx.data, idx4.data, "--background changed no digit");

    // --low-step-scale reaches the loop (from level 250: the last two of the 4 steps).
    let args = [
        "--count",
        "21",
        "--steps",
        "4",
        "--low-step-scale",
        "2",
        "--low-from",
        "250",
        "--json",
    ];
    let o = sample(&ckpt, &out2, &args);
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["settings"]["low-step-scale"].as_f64(),
            v["settings"]["low-from"].as_u64()
        ),
        (Some(2.0), Some(250))
    );
    let idx5 = read_idx_file(out2.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(idx.data, idx5.data, "--low-step-scale changed no digit");

    // Bad input: one line, exit 2.
    let corrupt = base.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage").unwrap();
    for (ck, args, needle) in [
        (ckpt.clone(), vec!["--count", "0"], "--count"),
        (
            ckpt.clone(),
            vec!["--count", "5000000000"],
            "IDX file holds",
        ),
        (ckpt.clone(), vec!["--steps", "0"], "steps"),
        (ckpt.clone(), vec!["--step-scale", "0"], "step-scale"),
        (ckpt.clone(), vec!["--step-scale", "-1.5"], "step-scale"),
        (ckpt.clone(), vec!["--eta", "1.5"], "eta"),
        (
            ckpt.clone(),
            vec!["--low-step-scale", "0", "--low-from", "60"],
            "low-step-scale",
        ),
        (ckpt.clone(), vec!["--low-step-scale", "1.5"], "low-from"),
        (
            ckpt.clone(),
            vec!["--low-step-scale", "1.5", "--low-from", "0"],
            "low-from",
        ),
        (
            base.join("missing.safetensors"),
            vec![],
            "missing.safetensors",
        ),
        (corrupt, vec![], "corrupt"),
    ] {
        let o = sample(&ck, &base.join("bad"), &args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let line = error_line(&o);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    // eval checks the sampling flags before it looks for the data.
    let o = eval_without_data(&base, &ckpt, &["--eta", "-0.2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("eta"), "{}", error_line(&o));
    let _ = std::fs::remove_dir_all(base);
}

/// A model with the feed-forward block (`train --mlp`): the sampler builds it from the
/// configuration in the checkpoint.
#[test]
fn sample_from_a_model_with_mlp() {
    let base =
        std::env::temp_dir().join(format!("wgpu-diffusion-sample-mlp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ckpt = checkpoint(&base.join("run"), &["--mlp", "16"]);
    let meta = wgpu_diffusion::train::read_run_config(&ckpt).unwrap();
    assert_eq!(meta.model.mlp, 16);
    let out = base.join("samples");
    common::ok(&sample(&ckpt, &out, &["--count", "5", "--steps", "3"]));
    let idx = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
    assert_eq!(idx.dims, vec![5, 28, 28]);
    let _ = std::fs::remove_dir_all(&base);
}

/// `--refiner CKPT --refine-from LEVEL`: a second model (another shape) takes the low levels;
/// the JSON names it and the step it starts at, and the digits change; two pairs chain. A
/// refiner trained with another alpha, --refine-from 0, levels that rise, a --refiner without
/// its level, one flag without the other, or a refiner file that is not there: one line,
/// exit 2.
#[test]
fn sample_with_a_refiner() {
    let base = std::env::temp_dir().join(format!(
        "wgpu-diffusion-sample-refiner-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let ckpt = checkpoint(&base.join("run"), &[]);
    let refiner = checkpoint(
        &base.join("refiner"),
        &[
            "--patch",
            "8",
            "--overlap",
            "2",
            "--skip",
            "wiener",
            "--level-max",
            "100",
        ],
    );
    let other_alpha = checkpoint(&base.join("alpha"), &["--alpha", "0.98"]);
    let out = base.join("samples");
    let plain = base.join("plain");
    common::ok(&sample(&ckpt, &plain, &["--count", "6", "--steps", "5"]));
    let refine = |r: &Path, level: &str| {
        let spec = format!("{}@{level}", r.display());
        let args = ["--count", "6", "--steps", "5", "--json", "--refiner", &spec];
        sample(&ckpt, &out, &args)
    };
    // 5 steps of 500: levels 500, 400, .., 100; from 200 the last two call the refiner.
    let o = refine(&refiner, "200");
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &v["refiners"][0];
    assert_eq!(r["refine_from"], 200);
    assert_eq!(r["from_step"], 3);
    assert!(r["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("best.safetensors"));
    assert_eq!(v["refiners"].as_array().unwrap().len(), 1);
    let a = read_idx_file(plain.join("samples-idx3-ubyte")).unwrap();
    let b = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(a.data, b.data, "--refiner changed no digit");

    // Two refiners: the refiner from 300 (step 2), then the model's own checkpoint from 100
    // (step 4); the JSON lists both in order.
    let (r, m) = (refiner.to_str().unwrap(), ckpt.to_str().unwrap());
    let two = |levels: [&str; 2]| {
        let (first, second) = (format!("{r}@{}", levels[0]), format!("{m}@{}", levels[1]));
        let args = [
            "--count",
            "6",
            "--steps",
            "5",
            "--json",
            "--refiner",
            &first,
            "--refiner",
            &second,
        ];
        sample(&ckpt, &out, &args)
    };
    let o = two(["300", "100"]);
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps: Vec<_> = v["refiners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["refine_from"].as_u64().unwrap(),
                r["from_step"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, vec![(300, 2), (100, 4)]);
    let o = two(["100", "300"]);
    assert_eq!(o.status.code(), Some(2), "levels that rise");
    assert!(error_line(&o).contains("decrease"), "{}", error_line(&o));
    let args = ["--refiner", &format!("{r}@300"), "--refiner", m];
    let o = sample(&ckpt, &out, &args);
    assert_eq!(o.status.code(), Some(2), "a --refiner without its level");
    assert!(error_line(&o).contains("PATH@LEVEL"), "{}", error_line(&o));

    let o = refine(&other_alpha, "200");
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("alpha"), "{}", error_line(&o));
    let o = refine(&refiner, "0");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("refiner level"),
        "{}",
        error_line(&o)
    );
    let o = refine(&refiner, "x");
    assert_eq!(o.status.code(), Some(2), "a level that is not a number");
    assert!(error_line(&o).contains("PATH@LEVEL"), "{}", error_line(&o));
    // A refiner that is not there: the checkpoint reader's line, naming the path.
    let missing = base.join("no-such-refiner.safetensors");
    let o = refine(&missing, "200");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("no-such-refiner.safetensors"),
        "{}",
        error_line(&o)
    );
    // eval checks the refiner before it looks for the data.
    let r = other_alpha.to_str().unwrap();
    let o = eval_without_data(&base, &ckpt, &["--refiner", &format!("{r}@50")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("alpha"), "{}", error_line(&o));
    let _ = std::fs::remove_dir_all(&base);
}

/// `--guide CKPT --guidance W [--guide-from LEVEL]`: a second model (another shape) guides the
/// model's steps; the JSON names it, its weight and first step, and the digits change. One
/// flag without the other, a weight that is not a positive number, --guide-from 0, a guide
/// trained with another alpha, or a guide file that is not there: one line, exit 2 (eval
/// checks the guide before it looks for the data).
#[test]
fn sample_with_a_guide() {
    let base = std::env::temp_dir().join(format!(
        "wgpu-diffusion-sample-guide-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let ckpt = checkpoint(&base.join("run"), &[]);
    let guide = checkpoint(&base.join("guide"), &["--patch", "8", "--overlap", "2"]);
    let other_alpha = checkpoint(&base.join("alpha"), &["--alpha", "0.98"]);
    let (out, plain) = (base.join("samples"), base.join("plain"));
    let few = ["--count", "6", "--steps", "5"];
    common::ok(&sample(&ckpt, &plain, &few));
    let guided = |g: &Path, w: &str| {
        let mut args = few.to_vec();
        args.extend(["--json", "--guide", g.to_str().unwrap(), "--guidance", w]);
        sample(&ckpt, &out, &args)
    };
    let o = guided(&guide, "2");
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["guide"]["guidance"], 2.0);
    assert!(v["guide"]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("guide/best.safetensors"));
    let a = read_idx_file(plain.join("samples-idx3-ubyte")).unwrap();
    let b = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(a.data, b.data, "--guide changed no digit");
    assert!(v["guide"]["guide_from"].is_null());
    assert_eq!(v["guide"]["from_step"], 0);
    let o = sample(&ckpt, &plain, &["--json"]);
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["guide"].is_null(), "{v}");
    // --guide-from 200: 5 steps of 500 (levels 500, 400, .., 100), guided from step 3.
    let g = guide.to_str().unwrap();
    let mut args = few.to_vec();
    args.extend([
        "--json",
        "--guide",
        g,
        "--guidance",
        "2",
        "--guide-from",
        "200",
    ]);
    let o = sample(&ckpt, &out, &args);
    common::ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["guide"]["guide_from"], 200);
    assert_eq!(v["guide"]["from_step"], 3);
    let c = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
    assert_ne!(c.data, b.data, "--guide-from changed no digit");
    *args.last_mut().unwrap() = "0";
    let o = sample(&ckpt, &out, &args);
    assert_eq!(o.status.code(), Some(2), "--guide-from 0");
    assert!(error_line(&o).contains("guide-from"), "{}", error_line(&o));
    let o = sample(&ckpt, &out, &["--guide-from", "200"]);
    assert_eq!(o.status.code(), Some(2), "--guide-from without --guide");

    let o = sample(&ckpt, &out, &["--guide", g]);
    assert_eq!(o.status.code(), Some(2), "--guide without --guidance");
    let o = sample(&ckpt, &out, &["--guidance", "2"]);
    assert_eq!(o.status.code(), Some(2), "--guidance without --guide");
    for w in ["0", "-1", "inf"] {
        let o = guided(&guide, w);
        assert_eq!(o.status.code(), Some(2), "--guidance {w}");
        assert!(error_line(&o).contains("guidance"), "{}", error_line(&o));
    }
    let o = guided(&other_alpha, "2");
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(line.contains("alpha") && line.contains("guide"), "{line}");
    let missing = base.join("no-such-guide.safetensors");
    let o = guided(&missing, "2");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("no-such-guide"),
        "{}",
        error_line(&o)
    );
    let o = eval_without_data(&base, &ckpt, &["--guide", g, "--guidance", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("guidance"), "{}", error_line(&o));
    let a = other_alpha.to_str().unwrap();
    let o = eval_without_data(&base, &ckpt, &["--guide", a, "--guidance", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("alpha"), "{}", error_line(&o));
    let _ = std::fs::remove_dir_all(&base);
}

/// A class-conditional checkpoint (`train --classes`): `--per-digit` writes ten labelled
/// rows and the labels file; `--digit` and `--digits` label every digit as asked (cycled);
/// the digit asked for changes the digits; `--cfg` is reported and changes them too. Errors,
/// one line and exit 2: a digit outside 0..9, `--cfg` not a positive finite number,
/// `--per-digit 0`, and digits or `--cfg` asked of an unconditional checkpoint (also in
/// `eval`, before it reads any data).
#[test]
fn sample_class_conditional_digits() {
    let base = common::tmp("sample", "classes");
    let ckpt = checkpoint(&base.join("run"), &["--classes"]);
    let plain = checkpoint(&base.join("plain"), &[]);
    let out = base.join("samples");
    let few = ["--steps", "4", "--json"];
    let run = |extra: &[&str]| {
        let o = sample(&ckpt, &out, &[&few[..], extra].concat());
        let v: serde_json::Value = serde_json::from_str(common::ok(&o).trim()).unwrap();
        let labels = read_idx_file(out.join("labels-idx1-ubyte")).unwrap();
        let digits = read_idx_file(out.join("samples-idx3-ubyte")).unwrap();
        (v, labels.data, digits.data)
    };
    let (v, labels, digits) = run(&["--per-digit", "3"]);
    assert_eq!(v["count"], 30);
    let want: Vec<u8> = (0..10).flat_map(|d| [d; 3]).collect();
    assert_eq!(labels, want);
    assert_eq!(digits.len(), 30 * 784);
    // Ten rows of three 58-pixel cells (zoom 2, 2-pixel gaps), a 15-pixel label column on
    // the left.
    let img = image::open(out.join("grid.png")).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (15 + 3 * 58 + 2, 10 * (58 + 2))
    );
    assert_eq!(v["classes"]["weight"], 1.5, "the default cfg");

    let (_, labels, sevens) = run(&["--digit", "7", "--count", "5"]);
    assert_eq!(labels, vec![7; 5]);
    let (_, labels, mixed) = run(&["--digits", "0,3", "--count", "5"]);
    assert_eq!(labels, vec![0, 3, 0, 3, 0]);
    assert_ne!(
        sevens[..784],
        mixed[..784],
        "the digit asked for changed nothing"
    );
    // Without digits: 0..9 cycled.
    let (v, labels, _) = run(&["--count", "12", "--cfg", "3"]);
    assert_eq!(labels, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    assert_eq!(v["classes"]["weight"], 3.0);
    let (_, _, zeros3) = run(&["--digit", "0", "--count", "5", "--cfg", "3"]);
    assert_ne!(zeros3[..784], mixed[..784], "--cfg changed nothing");

    let fails = |ckpt: &Path, args: &[&str], needle: &str| {
        let o = sample(ckpt, &out, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let line = error_line(&o);
        assert!(line.contains(needle), "{args:?}: {line}");
    };
    fails(&ckpt, &["--digit", "10"], "digit 10");
    fails(&ckpt, &["--digits", "1,12"], "digit 12");
    for w in ["0", "-1", "nan", "inf"] {
        fails(&ckpt, &["--cfg", w], "cfg");
    }
    fails(&ckpt, &["--per-digit", "0"], "per-digit");
    fails(
        &ckpt,
        &["--cfg-min-level", "501"],
        "cfg-min-level 501 is above n-max 500",
    );
    fails(&plain, &["--cfg-min-level", "100"], "class-conditional");
    fails(&plain, &["--digit", "3"], "class-conditional");
    fails(&plain, &["--cfg", "2"], "class-conditional");
    fails(&plain, &["--per-digit", "2"], "class-conditional");
    let o = sample(&ckpt, &out, &["--digit", "-1"]);
    assert_eq!(o.status.code(), Some(2), "--digit -1");
    let o = sample(&ckpt, &out, &["--digit", "1", "--digits", "2"]);
    assert_eq!(o.status.code(), Some(2), "--digit with --digits");
    for (ckpt, args, needle) in [
        (&plain, ["--digit", "3"], "class-conditional"),
        (&ckpt, ["--digit", "11"], "digit 11"),
        (&ckpt, ["--cfg", "0"], "cfg"),
    ] {
        let o = eval_without_data(&base, ckpt, &args);
        assert_eq!(o.status.code(), Some(2), "eval {args:?}");
        assert!(error_line(&o).contains(needle), "{}", error_line(&o));
    }
    let _ = std::fs::remove_dir_all(&base);
}
