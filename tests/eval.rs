//! The `eval` command's parts: the classifier trained on lavapipe with fast settings, its
//! save/load round trip, the metrics, and the CLI end to end on real test digits.

mod common;

use common::{bin, error_line, mnist_dir};
use wgpu_diffusion::data;
use wgpu_diffusion::eval::classifier::{self, Classifier, ClassifierSettings};

/// Measured on lavapipe (2 cores shared with a training run): 2 epochs of batch 128 at lr 1e-3
/// (the second at lr / 10) reach 97.3% test accuracy in about 68 s; the command's default
/// (8 epochs, the last 2 at lr / 10) is too slow for a test.
fn fast_settings() -> ClassifierSettings {
    ClassifierSettings {
        epochs: 2,
        batch: 128,
        lr: 1e-3,
        seed: 0,
        train_subset: None,
        decay_epochs: 1,
    }
}

/// One training (it is the slow part), then the CLI on 200 real test digits with it.
#[test]
fn classifier_trains_and_eval_reports_real_digits_as_good() {
    let gpu = common::gpu();
    let mnist = data::load(Some(&mnist_dir())).unwrap();
    let c = classifier::train(&gpu, &mnist, &fast_settings()).unwrap();
    eprintln!(
        "classifier: test accuracy {:.4}, last loss {:.4}, {:.1} s",
        c.meta.test_accuracy, c.meta.final_train_loss, c.meta.train_seconds
    );
    assert!(
        c.meta.test_accuracy >= 0.97,
        "accuracy {}",
        c.meta.test_accuracy
    );
    let dir = common::tmp("eval", "cli");
    let path = dir.join("classifier.safetensors");
    c.save(&path).unwrap();
    let back = Classifier::load(&path).unwrap();
    assert_eq!(back.params, c.params);
    assert_eq!(back.meta.test_accuracy, c.meta.test_accuracy);
    // The FID reference statistics are cached with the weights, bit for bit.
    assert_eq!(back.test_stats, c.test_stats);
    assert_eq!(c.test_stats.n, mnist.test.count);
    assert_eq!(c.test_stats.dim(), classifier::FEATURES);

    let n = 200;
    let idx = dir.join("digits-idx3-ubyte");
    data::idx::write_idx_images(&idx, n, 28, 28, &mnist.test.pixels[..n * 784]).unwrap();
    let out = common::ok(
        &bin()
            .arg("eval")
            .arg("--samples")
            .arg(&idx)
            .arg("--classifier")
            .arg(&path)
            .args(["--nn-train", "5000", "--json", "--data"])
            .arg(mnist_dir())
            .output()
            .unwrap(),
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!("{r:#}");
    for k in [
        "n",
        "fid",
        "confidence_mean",
        "confident_frac",
        "label_histogram",
        "entropy_ratio",
        "nn_distance_samples",
        "nn_distance_test",
    ] {
        assert!(!r[k].is_null(), "missing {k}");
    }
    assert_eq!(r["n"], n);
    assert_eq!(r["classifier"]["trained_now"], false);
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let noise = f(&r["sanity"]["noise"]["fid"]);
    assert!(
        f(&r["fid"]) < noise / 10.0,
        "fid {} vs noise {noise}",
        r["fid"]
    );
    assert!(f(&r["confidence_mean"]) > 0.9);
    assert!(f(&r["entropy_ratio"]) > 0.9);
    assert_eq!(r["label_histogram"].as_array().unwrap().len(), 10);
    let (s, t) = (f(&r["nn_distance_samples"]), f(&r["nn_distance_test"]));
    assert!(s > 0.5 * t && s < 2.0 * t, "nn {s} vs {t}");

    // Labelled digits (`sample` of a class-conditional model writes labels-idx1-ubyte beside
    // its samples): with their true labels the classifier agrees with the digit asked for about
    // as often as its test accuracy, and each digit's FID against that digit's test images is
    // small; labels shifted by one (every digit asked to be the next) agree almost never and
    // give every digit a larger FID.
    let labelled = |labels: Option<&std::path::Path>| {
        let mut cmd = bin();
        cmd.arg("eval").arg("--samples").arg(&idx);
        if let Some(l) = labels {
            cmd.arg("--labels").arg(l);
        }
        let out = cmd
            .arg("--classifier")
            .arg(&path)
            .args(["--nn-train", "1000", "--json", "--data"])
            .arg(mnist_dir())
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(common::ok(&out).trim()).unwrap();
        r["digits"].clone()
    };
    let truth = &mnist.test_labels[..n];
    data::idx::write_idx_labels(dir.join("labels-idx1-ubyte"), truth).unwrap();
    let shifted_path = dir.join("shifted-idx1-ubyte");
    let shifted: Vec<u8> = truth.iter().map(|d| (d + 1) % 10).collect();
    data::idx::write_idx_labels(&shifted_path, &shifted).unwrap();
    let (right, wrong) = (labelled(None), labelled(Some(&shifted_path)));
    eprintln!("true labels {right:#}\nshifted {wrong:#}");
    assert!(f(&right["agreement"]) >= 0.95, "{right}");
    assert!(f(&wrong["agreement"]) <= 0.05, "{wrong}");
    assert!(right["labels"]
        .as_str()
        .unwrap()
        .ends_with("labels-idx1-ubyte"));
    let rows = |r: &serde_json::Value| r["per_digit"].as_array().unwrap().clone();
    assert_eq!(rows(&right).len(), 10);
    for (a, b) in rows(&right).iter().zip(rows(&wrong)) {
        let d = a["digit"].as_u64().unwrap() as u8;
        assert_eq!(a["n"], truth.iter().filter(|&&t| t == d).count());
        assert!(f(&a["agreement"]) >= 0.8, "{a}");
        assert!(f(&a["fid"]) < f(&b["fid"]), "digit {d}: {a} vs shifted {b}");
    }
    // Without labels: grouped by the classifier's reading, no agreement.
    std::fs::remove_file(dir.join("labels-idx1-ubyte")).unwrap();
    let read = labelled(None);
    assert!(read["agreement"].is_null(), "{read}");
    assert_eq!(rows(&read).len(), 10);
    for r in rows(&read) {
        assert!(r["agreement"].is_null() && f(&r["fid"]) >= 0.0, "{r}");
    }

    // Text form, and a corrupt classifier file: one error line, exit 2.
    let text = common::ok(
        &bin()
            .arg("eval")
            .arg("--samples")
            .arg(&idx)
            .arg("--classifier")
            .arg(&path)
            .args(["--nn-train", "1000", "--data"])
            .arg(mnist_dir())
            .output()
            .unwrap(),
    );
    assert!(
        text.contains("sanity: uniform noise") && text.contains("FID"),
        "{text}"
    );
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let o = bin()
        .arg("eval")
        .arg("--samples")
        .arg(&idx)
        .arg("--classifier")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("corrupt"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_rejects_missing_and_malformed_inputs() {
    let dir = common::tmp("eval", "bad");
    let o = bin()
        .args(["eval", "--samples"])
        .arg(dir.join("absent"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    error_line(&o);
    // Labels are not images.
    let labels = dir.join("labels-idx1-ubyte");
    data::idx::write_idx_labels(&labels, &[1, 2, 3]).unwrap();
    let o = bin()
        .args(["eval", "--samples"])
        .arg(&labels)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("28x28"));
    // Labels that do not match the samples: a wrong count, a label that is not a digit.
    let images = dir.join("samples-idx3-ubyte");
    data::idx::write_idx_images(&images, 2, 28, 28, &[0u8; 2 * 784]).unwrap();
    for (bytes, needle) in [
        (vec![1u8, 2, 3], "expected 2 labels"),
        (vec![1, 10], "label 10"),
    ] {
        data::idx::write_idx_labels(&labels, &bytes).unwrap();
        let o = bin()
            .args(["eval", "--samples"])
            .arg(&images)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(error_line(&o).contains(needle), "{}", error_line(&o));
    }
    // Neither source.
    let o = bin().arg("eval").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn metrics_on_known_inputs() {
    use wgpu_diffusion::eval::metrics;
    assert!((metrics::entropy_ratio(&[5; 10]) - 1.0).abs() < 1e-12);
    assert_eq!(metrics::entropy_ratio(&[0, 7, 0, 0, 0, 0, 0, 0, 0, 0]), 0.0);
    let (m, f) = metrics::confidence(&[0.95, 0.05, 0.5, 0.5], 2);
    assert!((m - 0.725).abs() < 1e-6 && (f - 0.5).abs() < 1e-12);
    assert_eq!(metrics::histogram(&[0, 2, 2, 11], 3), vec![1, 0, 2]);
    // Nearest neighbours: a copy is at 0; a digit differing by 16 in one pixel is at 16/256.
    let refs: Vec<u8> = (0..3 * 784).map(|i| (i * 7 % 251) as u8).collect();
    let mut q = refs[784..2 * 784].to_vec();
    let d = metrics::nearest_distances(&q, &refs, 784);
    assert!(d[0] < 1e-3, "{d:?}");
    q[5] = q[5].wrapping_add(16);
    let d = metrics::nearest_distances(&q, &refs, 784);
    assert!((d[0] - 16.0 / 256.0).abs() < 2e-3, "{d:?}");
}

/// CPU forward of the MLP in f64: the mean cross-entropy of `x` [b, 784] with `labels`.
fn cpu_loss(p: &[f32], x: &[f32], labels: &[u32], b: usize) -> f64 {
    let lay = classifier::layout();
    let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut width = 784;
    for l in 0..3 {
        let (_, wo, ws) = &lay[2 * l];
        let (_, bo, _) = &lay[2 * l + 1];
        let n = ws[1];
        let mut y = vec![0.0f64; b * n];
        for r in 0..b {
            for j in 0..n {
                let mut s = p[bo + j] as f64;
                for k in 0..width {
                    s += h[r * width + k] * p[wo + k * n + j] as f64;
                }
                y[r * n + j] = if l < 2 { s.max(0.0) } else { s };
            }
        }
        h = y;
        width = n;
    }
    let mut loss = 0.0;
    for r in 0..b {
        let row = &h[r * 10..(r + 1) * 10];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
    }
    loss / b as f64
}

#[test]
fn classifier_gradients_match_finite_differences() {
    use wgpu_diffusion::gpu::GpuTensor;
    let gpu = common::gpu();
    let b = 4;
    let params = classifier::init_params(3);
    let x: Vec<f32> = wgpu_diffusion::testing::uniform_data(b * 784, 5);
    let labels: Vec<u32> = (0..b as u32).map(|i| (i * 3) % 10).collect();
    let pt = GpuTensor::from_slice(&gpu, "p", &[params.len()], &params).unwrap();
    let gt = GpuTensor::zeros(&gpu, "g", &[params.len()]).unwrap();
    let mlp = classifier::ClassifierNet::new(&gpu, &pt, Some(&gt), b).unwrap();
    mlp.x.write(&gpu, &x);
    mlp.labels.write(&gpu, &labels);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mlp.record_forward(&mut pass);
        mlp.record_backward(&mut pass);
    }
    gpu.queue.submit([enc.finish()]);
    let g: Vec<f32> = gt.read(&gpu).unwrap();
    let hist: Vec<f32> = mlp.history.read(&gpu).unwrap();
    let l0 = cpu_loss(&params, &x, &labels, b);
    assert!(
        (hist[0] as f64 - l0).abs() < 1e-4,
        "loss {} vs {l0}",
        hist[0]
    );
    // A few parameters of each tensor.
    for (name, off, shape) in classifier::layout() {
        let len: usize = shape.iter().product();
        for i in [0, len / 3, len - 1] {
            let mut pp = params.clone();
            let h = 1e-2f32;
            pp[off + i] += h;
            let up = cpu_loss(&pp, &x, &labels, b);
            pp[off + i] -= 2.0 * h;
            let down = cpu_loss(&pp, &x, &labels, b);
            let fd = (up - down) / (2.0 * h as f64);
            let got = g[off + i] as f64;
            assert!(
                (fd - got).abs() < 1e-3 + 1e-2 * fd.abs(),
                "{name}[{i}]: gpu {got} vs finite difference {fd}"
            );
        }
    }
}

/// A cached classifier of an older format is stale (trained again, not refused); junk is
/// refused as corrupt; the current format loads; an absent file is simply not cached.
#[test]
fn stale_classifier_files_are_recognised() {
    use wgpu_diffusion::eval::classifier::{read_cached, ClassifierMeta};
    use wgpu_diffusion::eval::fid::Stats;
    let dir = common::tmp("eval", "stale");
    let d = classifier::FEATURES;
    let c = Classifier {
        params: classifier::init_params(0),
        meta: ClassifierMeta {
            test_accuracy: 0.5,
            settings: ClassifierSettings::default(),
            train_images: 1,
            train_seconds: 0.0,
            final_train_loss: 1.0,
            test_images: 3,
            adapter: "none".into(),
        },
        test_stats: Stats {
            mean: vec![0.25; d],
            cov: (0..d * d).map(|i| (i % 7) as f64).collect(),
            n: 3,
        },
    };
    let current = dir.join("current.safetensors");
    c.save(&current).unwrap();
    let back = read_cached(&current)
        .unwrap()
        .expect("the current format loads");
    assert_eq!(back.test_stats, c.test_stats);
    assert_eq!(Classifier::load(&current).unwrap().test_stats, c.test_stats);

    let old = dir.join("old.safetensors");
    let info = std::collections::HashMap::from([(
        "format".to_string(),
        "wgpu-diffusion-classifier/1".to_string(),
    )]);
    let bytes = safetensors::serialize(
        Vec::<(String, safetensors::tensor::TensorView)>::new(),
        Some(info),
    )
    .unwrap();
    std::fs::write(&old, bytes).unwrap();
    assert!(
        read_cached(&old).unwrap().is_none(),
        "an older format is stale"
    );

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"junk").unwrap();
    let e = read_cached(&junk).expect_err("junk is refused").to_string();
    assert!(e.contains("corrupt"), "{e}");
    assert!(read_cached(&dir.join("absent.safetensors"))
        .unwrap()
        .is_none());
    std::fs::remove_dir_all(&dir).ok();
}
