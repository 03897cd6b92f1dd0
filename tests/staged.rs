//! A staged recipe end to end (a test-sized copy of the fast recipe): `train --config` fills a
//! run folder that `sample --run` and `eval --run` use with no other flags; config.toml repeats
//! the run; `--minutes` ends a run on time and `--resume` continues in the stage it was in.

mod common;

use common::{bin, error_line, mnist_dir};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Small shapes and a few steps per stage; the fast recipe's sampler.
const RECIPE: &str = r#"
preset = "tiny"
skip = "wiener"
train-subset = 100
val-count = 20
batch-images = 2
repeat = 5
sample-every = 0
log-every = 1
max-steps = 3

[[stage]]
name = "guide"
mlp = 8
max-steps = 2

[[stage]]
name = "model"
mlp = 16

[[stage]]
name = "refiner"
skip = "pixel-mixture"
level-max = 60

[sample]
checkpoint = "model/checkpoint.safetensors"
guide = "guide/checkpoint.safetensors"
guidance = 2.0
refiner = ["refiner/checkpoint.safetensors@200"]
steps = 5
step-scale = 1.0
low-step-scale = 1.5
low-from = 100
eta = 1.0
clip = true
"#;

fn train(args: &[&str], out: &Path) -> Output {
    bin()
        .arg("train")
        .args(args)
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// The train_loss column of a metrics.csv's step rows.
fn losses(csv: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
        .filter(|c| c[3].is_empty())
        .map(|c| c[2].clone())
        .collect()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&common::ok(o)).unwrap()
}

fn sample(run: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["sample", "--run"])
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(["--count", "6", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_staged_run_folder_is_what_sample_and_eval_read() {
    let base = common::tmp("staged", "folder");
    let recipe = base.join("recipe.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let run = base.join("run");
    let log = common::ok(&train(&["--config", recipe.to_str().unwrap()], &run));
    for (stage, steps) in [("guide", 2), ("model", 3), ("refiner", 3)] {
        let dir = run.join(stage);
        assert!(dir.join("checkpoint.safetensors").exists(), "{stage}");
        assert_eq!(losses(&dir.join("metrics.csv")).len(), steps, "{stage}");
        assert!(log.contains(&format!("stage {stage}: ")), "{log}");
    }
    assert!(
        log.contains(&format!("sample --run {}", run.display())),
        "{log}"
    );

    // sample --run: the whole stack with the recipe's settings, named in the JSON.
    let out = base.join("samples");
    let v = json(&sample(&run, &out, &[]));
    assert!(v["model"]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("model/checkpoint.safetensors"));
    assert!(v["guide"]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("guide/checkpoint.safetensors"));
    assert_eq!(v["guide"]["guidance"], 2.0);
    // 5 steps of 500: levels 500, 400, .., 100; the refiner from 200 takes steps 3 and 4.
    assert_eq!(v["refiners"][0]["refine_from"], 200);
    assert_eq!(v["refiners"][0]["from_step"], 3);
    let s = &v["settings"];
    assert_eq!(
        (s["steps"].as_u64(), s["eta"].as_f64(), s["clip"].as_bool()),
        (Some(5), Some(1.0), Some(true))
    );
    assert_eq!(
        (s["low-step-scale"].as_f64(), s["low-from"].as_u64()),
        (Some(1.5), Some(100))
    );
    assert_eq!(v["run"].as_str().unwrap(), run.to_str().unwrap());
    let digits = std::fs::read(out.join("samples-idx3-ubyte")).unwrap();
    // A flag overrides a stored setting.
    let v = json(&sample(&run, &out, &["--guidance", "3"]));
    assert_eq!(v["guide"]["guidance"], 3.0);
    assert_eq!(v["settings"]["steps"], 5);
    assert_ne!(
        std::fs::read(out.join("samples-idx3-ubyte")).unwrap(),
        digits
    );

    // config.toml repeats the run: the same losses in every stage.
    let again = base.join("again");
    let config = run.join("config.toml");
    common::ok(&train(&["--config", config.to_str().unwrap()], &again));
    for stage in ["guide", "model", "refiner"] {
        let (a, b) = (
            run.join(stage).join("metrics.csv"),
            again.join(stage).join("metrics.csv"),
        );
        assert_eq!(losses(&a), losses(&b), "{stage}");
    }

    // eval --run: the same stack, sampled and measured (a quick classifier: the plumbing).
    let clf = quick_classifier(&base);
    let o = bin()
        .args(["eval", "--run"])
        .arg(&run)
        .args([
            "--count",
            "12",
            "--nn-count",
            "5",
            "--nn-train",
            "100",
            "--json",
            "--classifier",
        ])
        .arg(&clf)
        .arg("--data")
        .arg(mnist_dir())
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v["n"], 12);
    assert_eq!(v["stack"]["guide"]["guidance"], 2.0);
    assert_eq!(v["stack"]["settings"]["steps"], 5);

    // A missing or corrupt stage: one line naming it, exit 2 (eval: before it loads data).
    let broken = base.join("broken");
    copy_dir(&run, &broken);
    std::fs::remove_file(broken.join("refiner/checkpoint.safetensors")).unwrap();
    let o = sample(&broken, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("refiner/checkpoint.safetensors"),
        "{}",
        error_line(&o)
    );
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = bin()
        .args(["eval", "--run"])
        .arg(&broken)
        .arg("--data")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("refiner/checkpoint.safetensors"),
        "{}",
        error_line(&o)
    );
    copy_dir(&run, &broken);
    std::fs::write(broken.join("guide/checkpoint.safetensors"), b"junk").unwrap();
    let o = sample(&broken, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(
        line.contains("guide/checkpoint.safetensors") && line.contains("corrupt"),
        "{line}"
    );
    // A folder that is not a run.
    let o = sample(&empty, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("config.toml"), "{}", error_line(&o));
    let _ = std::fs::remove_dir_all(base);
}

/// `--minutes`: the run ends on time with a valid checkpoint, the log says why, and the rate
/// decays over the budget's last part (decay-fraction) rather than being cut off.
#[test]
fn a_budget_ends_the_run_and_the_rate_decays_inside_it() {
    let base = common::tmp("staged", "budget");
    let run = base.join("run");
    let args = [
        "--preset",
        "tiny",
        "--train-subset",
        "200",
        "--val-count",
        "20",
        "--batch-images",
        "4",
        "--repeat",
        "25",
        "--sample-every",
        "0",
        "--log-every",
        "5",
        "--minutes",
        "0.05",
        "--lr",
        "1e-3",
        "--lr-min",
        "1e-4",
        "--decay-fraction",
        "0.5",
        "--json",
    ];
    let o = train(&args, &run);
    let out = common::ok(&o);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let stage = &summary["summary"]["stages"][0];
    assert_eq!(stage["end"], "budget", "{summary}");
    let secs = stage["seconds"].as_f64().unwrap();
    assert!((3.0..33.0).contains(&secs), "a 3 s budget took {secs} s");
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lr: Vec<f32> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(11).unwrap().parse().unwrap())
        .collect();
    assert!(lr.len() >= 4, "{text}");
    assert_eq!(lr[0], 1e-3, "constant over the budget's first half");
    let last = *lr.last().unwrap();
    assert!(
        last < 2e-4,
        "the last step's rate {last} is not near lr-min"
    );
    assert!(lr.windows(2).all(|w| w[1] <= w[0]), "{lr:?}");
    // The checkpoint is a valid one.
    let o = bin()
        .args(["sample", "--checkpoint"])
        .arg(run.join("checkpoint.safetensors"))
        .args(["--count", "2", "--steps", "2", "--out"])
        .arg(base.join("s"))
        .output()
        .unwrap();
    common::ok(&o);
    let _ = std::fs::remove_dir_all(base);
}

/// Ctrl-C (SIGTERM) in the second stage of a budgeted run, then `train --resume --out OUT`
/// alone: the recipe comes from OUT/config.toml, the finished stage is skipped, the stopped
/// one continues from its step, and the last one runs.
#[test]
fn resume_continues_in_the_stage_it_stopped_in() {
    let base = common::tmp("staged", "resume");
    let recipe = base.join("recipe.toml");
    let budget = RECIPE
        .replace("max-steps = 3\n", "minutes = 0.3\n")
        .replace(
            "[[stage]]\nname = \"guide\"\n",
            "[[stage]]\nname = \"guide\"\nshare = 0.1\n",
        );
    let budget = budget
        .replace("name = \"model\"\n", "name = \"model\"\nshare = 0.6\n")
        .replace("name = \"refiner\"\n", "name = \"refiner\"\nshare = 0.3\n");
    std::fs::write(&recipe, budget).unwrap();
    let run = base.join("run");
    let child = bin()
        .args(["train", "--config", recipe.to_str().unwrap(), "--data"])
        .arg(mnist_dir())
        .arg("--out")
        .arg(&run)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let csv = run.join("model/metrics.csv");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 4 {
        assert!(t0.elapsed().as_secs() < 300, "no model rows after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = error_line(&o);
    let step: u64 = line
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !run.join("refiner").exists(),
        "the refiner started before the model ended"
    );

    let log = common::ok(&train(&["--resume"], &run));
    assert!(log.contains("stage guide: 2 steps"), "{log}");
    assert!(log.contains("done before this run"), "{log}");
    assert!(log.contains(&format!("resuming at step {step}")), "{log}");
    assert!(
        log.contains("stage model: the"),
        "the model stage's budget ended it:\n{log}"
    );
    assert!(run.join("refiner/checkpoint.safetensors").exists());
    // The model's rows run on from the stopped step, none twice.
    let text = std::fs::read_to_string(&csv).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(3) == Some(""))
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[1] == w[0] + 1), "{steps:?}");
    assert!(*steps.last().unwrap() > step);
    let _ = std::fs::remove_dir_all(base);
}

/// A classifier trained in seconds (1 epoch of 2,000 digits): enough for eval's plumbing.
fn quick_classifier(base: &Path) -> PathBuf {
    use wgpu_diffusion::eval::classifier::{self, ClassifierSettings};
    let gpu = common::gpu();
    let mnist = wgpu_diffusion::data::load(Some(&mnist_dir())).unwrap();
    let settings = ClassifierSettings {
        epochs: 1,
        train_subset: Some(2000),
        decay_epochs: 0,
        ..ClassifierSettings::default()
    };
    let clf = base.join("classifier.safetensors");
    classifier::train(&gpu, &mnist, &settings)
        .unwrap()
        .save(&clf)
        .unwrap();
    clf
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
