//! `train` end to end on the tiny preset: the loss falls, resume is exact, and bad input is a
//! one-line error with a non-zero exit code that overwrites nothing.

mod common;

use common::{error_line, mnist_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-diffusion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The `train --preset tiny` command on a small subset, with extra flags.
fn train_command(out: &Path, extra: &[&str]) -> Command {
    let mut c = common::bin();
    c.args([
        "train",
        "--preset",
        "tiny",
        "--train-subset",
        "200",
        "--val-count",
        "40",
    ])
    .args(["--batch-images", "4", "--repeat", "25", "--log-every", "1"])
    .arg("--data")
    .arg(mnist_dir())
    .arg("--out")
    .arg(out)
    .args(extra);
    c
}

/// Runs [`train_command`] to the end.
fn train(out: &Path, extra: &[&str]) -> Output {
    train_command(out, extra).output().unwrap()
}

/// The columns of every per-step row of metrics.csv (not the epoch rows), after checking
/// its header.
fn step_rows(out: &Path) -> Vec<Vec<String>> {
    csv_rows(out)
        .into_iter()
        .filter(|c| c[3].is_empty())
        .collect()
}

/// Every row of metrics.csv (per-step and per-epoch), its header checked.
fn csv_rows(out: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,step,train_loss,val_loss,seconds,samples_per_s,eval_n,fid,confidence_mean,confident_frac,entropy_ratio,lr")
    );
    lines
        .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
        .collect()
}

/// The validation loss of every epoch row of metrics.csv.
fn val_losses(out: &Path) -> Vec<f32> {
    csv_rows(out)
        .iter()
        .filter_map(|c| c[3].parse().ok())
        .collect()
}

/// (step, train_loss) of every per-step row of metrics.csv.
fn losses(out: &Path) -> Vec<(u64, String)> {
    step_rows(out)
        .into_iter()
        .map(|c| (c[1].parse().unwrap(), c[2].clone()))
        .collect()
}

/// (step, lr) of every per-step row of metrics.csv.
fn lrs(out: &Path) -> Vec<(u64, f32)> {
    step_rows(out)
        .into_iter()
        .map(|c| (c[1].parse().unwrap(), c[11].parse().unwrap()))
        .collect()
}

#[test]
fn loss_falls_and_epochs_validate() {
    let out = tmp("train-falls");
    // 200 images / 4 per step = 50 steps per epoch: 3 epochs.
    let o = train(&out, &["--epochs", "3", "--lr", "3e-3"]);
    common::ok(&o);
    let l: Vec<f32> = losses(&out)
        .iter()
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    assert_eq!(l.len(), 150);
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[140..].iter().sum::<f32>() / 10.0;
    assert!(last < 0.9 * first, "loss did not fall: {first} -> {last}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let val: Vec<f32> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split(',')
                .nth(3)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().unwrap())
        })
        .collect();
    assert_eq!(val.len(), 3, "one validation row per epoch:\n{csv}");
    assert!(val[2] < val[0], "validation loss did not fall: {val:?}");
    assert!(out.join("checkpoint.safetensors").exists());
    assert!(out.join("best.safetensors").exists());
    assert!(!out.join("checkpoint.safetensors.tmp").exists());
    let _ = std::fs::remove_dir_all(out);
}

/// `--eval-every 1`: every epoch row carries the sample-quality columns, computed by a
/// classifier given with `--classifier` (a quick one: the test is about the plumbing; the
/// metrics themselves are tested in tests/eval.rs).
#[test]
fn eval_every_writes_sample_quality_to_metrics() {
    use wgpu_diffusion::eval::classifier::{self, ClassifierSettings};
    let out = tmp("train-eval");
    std::fs::create_dir_all(&out).unwrap();
    let gpu = common::gpu();
    let mnist = wgpu_diffusion::data::load(Some(&mnist_dir())).unwrap();
    let settings = ClassifierSettings {
        epochs: 1,
        train_subset: Some(2000),
        decay_epochs: 0,
        ..ClassifierSettings::default()
    };
    let clf = out.join("classifier.safetensors");
    classifier::train(&gpu, &mnist, &settings)
        .unwrap()
        .save(&clf)
        .unwrap();
    let run = out.join("run");
    // 200 images / 4 per step: 50 steps per epoch, 2 epochs, both evaluated on 30 samples.
    let o = train(
        &run,
        &[
            "--epochs",
            "2",
            "--eval-every",
            "1",
            "--eval-count",
            "30",
            "--sample-every",
            "0",
            "--classifier",
            clf.to_str().unwrap(),
        ],
    );
    common::ok(&o);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .collect();
    let evals: Vec<&Vec<&str>> = rows.iter().filter(|c| !c[6].is_empty()).collect();
    assert_eq!(evals.len(), 2, "one evaluation per epoch:\n{csv}");
    for c in &evals {
        assert!(!c[3].is_empty(), "evaluations sit on epoch rows:\n{csv}");
        assert_eq!(c[6], "30");
        let v: Vec<f64> = c[7..11].iter().map(|x| x.parse().unwrap()).collect();
        assert!(v[0].is_finite() && v[0] > 0.0, "fid {}", v[0]);
        assert!(v[1] > 0.1 && v[1] <= 1.0, "confidence {}", v[1]);
        assert!((0.0..=1.0).contains(&v[2]), "confident fraction {}", v[2]);
        assert!((0.0..=1.0).contains(&v[3]), "entropy ratio {}", v[3]);
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("30 samples: FID"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A corrupt classifier fails before anything is written; --eval-count 0 is refused.
    let bad = out.join("bad.safetensors");
    std::fs::write(&bad, b"junk").unwrap();
    let run2 = out.join("run2");
    let o = train(
        &run2,
        &["--eval-every", "1", "--classifier", bad.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("corrupt"), "{}", error_line(&o));
    assert!(!run2.exists());
    let o = train(&run2, &["--eval-every", "1", "--eval-count", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("eval-count"), "{}", error_line(&o));
    let _ = std::fs::remove_dir_all(out);
}

/// SIGTERM (as Ctrl-C) mid-run: the step in flight finishes, its loss is logged, a checkpoint
/// is written, exit code 130; `--resume` continues from that step.
#[test]
fn interrupt_saves_a_checkpoint_and_resumes() {
    let out = tmp("train-interrupt");
    let child = train_command(
        &out,
        &[
            "--max-steps",
            "100000",
            "--epochs",
            "1000",
            "--sample-every",
            "0",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Wait for a few logged steps.
    let csv = out.join("metrics.csv");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 4 {
        assert!(t0.elapsed().as_secs() < 300, "no training rows after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = error_line(&o);
    assert!(
        line.contains("interrupted after step") && line.contains("--resume"),
        "{line}"
    );
    let step: u64 = line
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .parse()
        .unwrap();
    // Every step up to the interruption is logged, and the checkpoint is at that step.
    assert_eq!(losses(&out).len() as u64, step);
    assert!(out.join("checkpoint.safetensors").exists());
    assert!(!out.join("checkpoint.safetensors.tmp").exists());
    let o = train(&out, &["--max-steps", &(step + 2).to_string(), "--resume"]);
    common::ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("resuming at step {step}")),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(losses(&out).len() as u64, step + 2);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn resume_is_exact() {
    let straight = tmp("train-straight");
    let split = tmp("train-split");
    common::ok(&train(&straight, &["--max-steps", "30"]));
    common::ok(&train(&split, &["--max-steps", "15"]));
    common::ok(&train(&split, &["--max-steps", "30", "--resume"]));
    let a = losses(&straight);
    let b = losses(&split);
    assert_eq!(a.len(), 30);
    assert_eq!(a, b, "resumed run differs from the straight run");
    // Resuming may lower the learning rate by hand; the log says so.
    let o = train(&split, &["--max-steps", "33", "--resume", "--lr", "5e-5"]);
    common::ok(&o);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        log.contains("resuming at step 30 at lr 0.00005 (it ran at lr 0.0001 before)"),
        "{log}"
    );
    assert_eq!(losses(&split).len(), 33);
    let _ = std::fs::remove_dir_all(straight);
    let _ = std::fs::remove_dir_all(split);
}

/// A class-conditional run (labels, label dropout drawn from the GPU RNG) resumes exactly too,
/// and its losses are not the unconditional run's.
#[test]
fn conditional_resume_is_exact() {
    let (straight, split, plain) = (
        tmp("train-cond-straight"),
        tmp("train-cond-split"),
        tmp("train-cond-plain"),
    );
    let cond = ["--classes", "--label-dropout", "0.3"];
    common::ok(&train(
        &straight,
        &[&cond[..], &["--max-steps", "20"]].concat(),
    ));
    common::ok(&train(
        &split,
        &[&cond[..], &["--max-steps", "10"]].concat(),
    ));
    // Resuming it as an unconditional run is refused, naming the key.
    let o = train(&split, &["--max-steps", "20", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("model.classes"),
        "{}",
        error_line(&o)
    );
    let resume = ["--max-steps", "20", "--resume"];
    common::ok(&train(&split, &[&cond[..], &resume[..]].concat()));
    common::ok(&train(&plain, &["--max-steps", "20"]));
    let (a, b) = (losses(&straight), losses(&split));
    assert_eq!(a.len(), 20);
    assert_eq!(
        a, b,
        "resumed conditional run differs from the straight run"
    );
    assert_ne!(a, losses(&plain), "the labels changed no loss");
    for d in [straight, split, plain] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// --warmup/--decay-steps/--lr-min: each step's rate is the schedule's (logged as metrics.csv's
/// lr column; that Adam uses the rate it is given is tests/model.rs's check), a resumed run
/// continues the schedule, and a constant-rate run can be finished with a decay by resuming it.
#[test]
fn lr_schedule_is_followed_and_resumed() {
    use wgpu_diffusion::lr_schedule::{LrSchedule, RunLength::Steps};
    let out = tmp("train-lr");
    let sched = [
        "--lr",
        "2e-3",
        "--warmup",
        "4",
        "--decay-steps",
        "8",
        "--lr-min",
        "1e-4",
    ];
    let o = train(&out, &[&["--max-steps", "20"][..], &sched[..]].concat());
    common::ok(&o);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        log.contains("lr 0.002 after 4 warm-up steps, cosine decay to 0.0001 over steps 13..20"),
        "{log}"
    );
    let want = LrSchedule::new(2e-3, 4, 8, 0.0, 1e-4, Steps(20)).unwrap();
    let got = lrs(&out);
    assert_eq!(got.len(), 20);
    for &(step, lr) in &got {
        assert_eq!(lr, want.at(step - 1, 0.0), "step {step}");
    }
    assert_eq!(got[3].1, 2e-3);
    assert!((got[19].1 - 1e-4).abs() < 1e-10);

    // A constant-rate run of 10 steps, finished by a decay over 6 more, is the straight run
    // with that decay: same rates, same losses.
    let fin = tmp("train-lr-finish");
    common::ok(&train(&fin, &["--max-steps", "10", "--lr", "2e-3"]));
    let decay = ["--max-steps", "16", "--lr", "2e-3", "--decay-steps", "6"];
    common::ok(&train(&fin, &[&["--resume"][..], &decay[..]].concat()));
    let straight = tmp("train-lr-straight");
    common::ok(&train(&straight, &decay));
    let got = lrs(&fin);
    let want = LrSchedule::new(2e-3, 0, 6, 0.0, (2e-3f64 / 10.0) as f32, Steps(16)).unwrap();
    assert_eq!(got.len(), 16);
    for &(step, lr) in &got {
        assert_eq!(lr, want.at(step - 1, 0.0), "step {step}");
    }
    assert_eq!(got[9].1, 2e-3);
    assert!(
        (got[15].1 - 2e-4).abs() < 1e-10,
        "--lr-min defaults to --lr / 10"
    );
    assert_eq!(lrs(&straight), got);
    assert_eq!(
        losses(&straight),
        losses(&fin),
        "resumed decay differs from the straight run"
    );
    for d in [out, fin, straight] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Resuming a run whose metrics.csv has an older header (fewer columns) gives it the current
/// one and keeps the old rows.
#[test]
fn resume_upgrades_an_old_metrics_header() {
    let out = tmp("train-old-csv");
    common::ok(&train(&out, &["--max-steps", "3"]));
    let path = out.join("metrics.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let (header, rows) = text.split_once('\n').unwrap();
    let old_header = header.strip_suffix(",lr").unwrap();
    // The old version's rows: one column fewer.
    let old_rows: String = rows
        .lines()
        .map(|l| format!("{}\n", &l[..l.rfind(',').unwrap()]))
        .collect();
    std::fs::write(&path, format!("{old_header}\n{old_rows}")).unwrap();
    common::ok(&train(&out, &["--max-steps", "5", "--resume"]));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("{header}\n{old_rows}")), "{text}");
    assert_eq!(losses(&out).len(), 5);
    // A file that is not ours is refused rather than rewritten.
    std::fs::write(&path, "something,else\n").unwrap();
    let o = train(&out, &["--max-steps", "6", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("does not look like a metrics.csv"));
    let _ = std::fs::remove_dir_all(out);
}

/// `--level-max` reaches the training batches: the tiny model's first loss (initial
/// weights, identity skip: output ~ A = a^n x + (1 - a^n) N against N) is
/// ~a^2n E(x - N)^2 ~ 1.2 when every level is 0 or 1, and ~0.12 averaged over 0..=500.
/// The run says its levels; like the rate, they may change on --resume, and the log says so.
#[test]
fn level_max_sets_the_training_levels() {
    let first_loss = |out: &Path| -> f32 { losses(out)[0].1.parse().unwrap() };
    let all = tmp("train-levels-all");
    common::ok(&train(&all, &["--max-steps", "1"]));
    let low = tmp("train-levels-low");
    let o = train(&low, &["--max-steps", "1", "--level-max", "1"]);
    common::ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("levels 0..=1"));
    let (a, l) = (first_loss(&all), first_loss(&low));
    assert!(
        a < 0.4 && l > 0.8,
        "first loss {a} (0..=500) vs {l} (0..=1)"
    );
    common::ok(&train(
        &low,
        &["--max-steps", "2", "--level-max", "1", "--resume"],
    ));
    assert_eq!(losses(&low).len(), 2);
}

#[test]
fn bad_runs_are_one_line_errors_and_overwrite_nothing() {
    let out = tmp("train-errors");
    common::ok(&train(&out, &["--max-steps", "3"]));
    let ckpt = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();

    // A second run into the same folder without --resume.
    let o = train(&out, &["--max-steps", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("--resume"));
    // Resuming with another configuration.
    let o = train(&out, &["--max-steps", "6", "--resume", "--heads", "3"]);
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(
        line.contains("another configuration") && line.contains("heads"),
        "{line}"
    );
    // ... or with a feed-forward block the checkpoint does not have.
    let o = train(&out, &["--max-steps", "6", "--resume", "--mlp", "16"]);
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(line.contains("mlp 0 (checkpoint) vs 16 (flags)"), "{line}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "checkpoint was modified"
    );

    // A diverging run stops with exit 3 and names the step.
    let nan = tmp("train-nan");
    let o = train(&nan, &["--max-steps", "40", "--lr", "1e30"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(error_line(&o).contains("at step"));

    // A corrupt checkpoint.
    std::fs::write(&ckpt, b"not a checkpoint").unwrap();
    let o = train(&out, &["--max-steps", "6", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("corrupt"));

    // Impossible geometry, out-of-range flags, unknown preset, a model too big for the adapter.
    for (args, needle) in [
        (vec!["--patch", "7"], "impossible patch geometry"),
        (vec!["--alpha", "1.5"], "alpha"),
        (
            vec!["--level-max", "501"],
            "level-max must be at most n-max (500)",
        ),
        (
            vec!["--max-steps", "40", "--warmup", "30", "--decay-steps", "20"],
            "exceed the run's 40 steps",
        ),
        (vec!["--decay-steps", "5", "--lr-min", "1"], "lr-min"),
        (vec!["--layers", "0"], "--layers"),
        (vec!["--loss-weight-max", "0"], "--loss-weight-max"),
        (
            vec!["--heads", "4000", "--key-dim", "1000"],
            "max_storage_buffer_binding_size",
        ),
    ] {
        let o = train(&tmp("train-bad"), &args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let line = error_line(&o);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    // An unknown preset.
    let o = common::bin()
        .args(["train", "--preset", "huge"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("huge"));
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(nan);
}

/// `--skip pixel-mixture`: a fresh run computes the skip's per-position prior from the digits
/// it trains on (here the first 200) and stores it as `skip.prior` in the checkpoint; the
/// steps leave it as it was (it is data, not a weight), in the weights and their EMA alike.
#[test]
fn pixel_mixture_prior_comes_from_the_training_digits() {
    use wgpu_diffusion::config::{ModelConfig, Skip};
    use wgpu_diffusion::model::ParamLayout;
    use wgpu_diffusion::reference::skip::pixel_prior;
    use wgpu_diffusion::settings::recipe::Preset;
    let out = tmp("train-pixel-prior");
    common::ok(&train(
        &out,
        &["--max-steps", "3", "--skip", "pixel-mixture"],
    ));
    let config = ModelConfig {
        skip: Skip::PixelMixture,
        ..Preset::Tiny.model()
    };
    let layout = ParamLayout::new(&config);
    let loaded =
        wgpu_diffusion::checkpoint::load(&out.join("checkpoint.safetensors"), &layout).unwrap();
    let mnist = wgpu_diffusion::data::load(Some(&mnist_dir())).unwrap();
    let px = config.geometry.pixels() as usize;
    let want = pixel_prior(&config.geometry, &mnist.train.pixels[..200 * px]);
    let r = layout.get("skip.prior").range();
    assert_eq!(&loaded.buffers.params[r.clone()], &want[..]);
    let ema = loaded.buffers.ema.unwrap();
    wgpu_diffusion::testing::assert_close("EMA prior", &ema[r.clone()], &want, 1e-6, 1e-6);
    // Not the global prior: the corner pixel (token 0, element 0) is background in all 200
    // digits, (200 + 1) / (200 + 2).
    assert!((want[0] - 201.0 / 202.0).abs() < 1e-6, "{}", want[0]);
}

/// `--loss-weight-max W`: the logged and stored objective weighs each sample by
/// min(1/q^2, W) (checked against the reference in tests/loss.rs and tests/model.rs); here,
/// that the flag reaches the run: the first step's loss on the same batch is larger than the
/// plain mean's (every weight is >= 1, most > 1 over levels 0..=500), and the log says so;
/// and that W may change on --resume (the next step's loss is the new W's).
#[test]
fn loss_weight_reaches_the_run() {
    let first_loss = |out: &Path| -> f32 { losses(out)[0].1.parse().unwrap() };
    let plain = tmp("train-weight-plain");
    common::ok(&train(&plain, &["--max-steps", "1"]));
    let weighted = tmp("train-weight-30");
    let o = train(&weighted, &["--max-steps", "1", "--loss-weight-max", "30"]);
    common::ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("loss weight <= 30"));
    let (p, w) = (first_loss(&plain), first_loss(&weighted));
    assert!(w > 3.0 * p, "weighted first loss {w} vs plain {p}");

    // Like the rate, W may change on --resume: the log says so and the next step's loss is
    // the weighted one (against the same second step run plain).
    let straight = tmp("train-weight-plain-2");
    common::ok(&train(&straight, &["--max-steps", "2"]));
    let o = train(
        &plain,
        &["--max-steps", "2", "--resume", "--loss-weight-max", "30"],
    );
    common::ok(&o);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        log.contains("resuming at step 1") && log.contains("loss weight <= 30 (<= 1 before;"),
        "{log}"
    );
    let second = |out: &Path| -> f32 { losses(out)[1].1.parse().unwrap() };
    let (p2, w2) = (second(&straight), second(&plain));
    assert!(w2 > 3.0 * p2, "resumed weighted loss {w2} vs plain {p2}");
    // ... and the checkpoint now records W = 30: resuming it without the flag goes back to 1.
    let o = train(&plain, &["--max-steps", "3", "--resume"]);
    common::ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("loss weight <= 1 (<= 30 before;"));
}

/// The validation loss is weighed by W too, so a resume with another W restarts the best
/// validation loss: the first epoch after it writes best.safetensors even though its
/// (W = 30) validation loss is larger than the epoch before's (W = 1). (200 digits in batches
/// of 4: 50 steps per epoch.)
#[test]
fn loss_weight_change_restarts_the_best_validation_loss() {
    let out = tmp("train-weight-best");
    common::ok(&train(&out, &["--max-steps", "50"]));
    let best = out.join("best.safetensors");
    let before = std::fs::read(&best).unwrap();
    let o = train(
        &out,
        &["--max-steps", "100", "--resume", "--loss-weight-max", "30"],
    );
    common::ok(&o);
    let vals = val_losses(&out);
    assert_eq!(vals.len(), 2, "one validation loss per epoch: {vals:?}");
    assert!(
        vals[1] > vals[0],
        "W = 30 validation {} vs W = 1 {}",
        vals[1],
        vals[0]
    );
    assert_ne!(
        std::fs::read(&best).unwrap(),
        before,
        "best.safetensors was not rewritten"
    );
}
