//! `export-web`: a run's models and sampler settings in one bundle for the browser page. The
//! bundle holds the checkpoints' EMA weights exactly (f32) or rounded to f16, its settings
//! are the run's with the flags over them, and the sampler it makes draws the digits
//! `sample` draws from the same checkpoints; bad input is one line and a non-zero exit.

mod common;

use common::{bin, error_line, mnist_dir};
use std::path::{Path, PathBuf};
use std::process::Output;
use wgpu_diffusion::checkpoint;
use wgpu_diffusion::data::idx::read_idx_file;
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::sample::bundle::{Bundle, Storage};
use wgpu_diffusion::sample::{to_bytes, SampleFlags};

/// A tiny class-conditional run of 3 training steps: its folder.
fn run_folder(dir: &Path) -> PathBuf {
    let o = bin()
        .args([
            "train",
            "--preset",
            "tiny",
            "--classes",
            "--train-subset",
            "100",
        ])
        .args(["--val-count", "20", "--batch-images", "2", "--repeat", "10"])
        .args(["--max-steps", "3", "--sample-every", "0", "--data"])
        .arg(mnist_dir())
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    common::ok(&o);
    dir.to_path_buf()
}

fn export(run: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("export-web")
        .arg(run)
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn read(path: &Path) -> Bundle {
    Bundle::from_bytes(&std::fs::read(path).unwrap(), &path.display().to_string()).unwrap()
}

/// The stack both sides sample: the run's checkpoint as model, guide and refiner.
fn stack(ckpt: &Path) -> Vec<String> {
    let c = ckpt.display().to_string();
    [
        "--guide",
        &c,
        "--guidance",
        "2",
        "--refiner",
        &format!("{c}@100"),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--steps", "8", "--eta", "1"].map(String::from))
    .collect()
}

/// The bundle's parts, weights and settings: f32 exactly the checkpoint's EMA, f16 within
/// f16's rounding (half an ulp: 2^-11 relative, 2^-25 absolute below the normal range) and
/// half the bytes; the settings are the run's with the flags over them, the paths the
/// parts' names.
#[test]
fn the_bundle_holds_the_run_s_weights_and_settings() {
    let base = common::tmp("export_web", "weights");
    let run = run_folder(&base.join("run"));
    let ckpt = run.join("checkpoint.safetensors");
    let args = stack(&ckpt);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (f32_path, f16_path) = (base.join("b32.safetensors"), base.join("b16.safetensors"));
    let o = export(
        &ckpt,
        &f32_path,
        &[&args[..], &["--storage", "f32"]].concat(),
    );
    assert!(common::ok(&o).contains("model"), "{}", common::ok(&o));
    common::ok(&export(&ckpt, &f16_path, &args));

    let config = checkpoint::read_run_config(&ckpt).unwrap();
    let layout = ParamLayout::new(&config.model);
    let ema = checkpoint::load(&ckpt, &layout)
        .unwrap()
        .buffers
        .ema
        .unwrap();
    let (b32, b16) = (read(&f32_path), read(&f16_path));
    let names: Vec<&str> = b32.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["model", "guide", "refiner0"]);
    assert_eq!((b32.storage, b16.storage), (Storage::F32, Storage::F16));
    for (p32, p16) in b32.parts.iter().zip(&b16.parts) {
        assert_eq!(p32.config, config);
        assert_eq!(p32.weights, ema, "{}: f32 is not the EMA exactly", p32.name);
        let worst = (p16.weights.iter().zip(&ema))
            .map(|(h, w)| (h - w).abs() / (w.abs() * 2f32.powi(-11) + 2f32.powi(-25)))
            .fold(0.0, f32::max);
        assert!(
            worst <= 1.0,
            "{}: f16 off by {worst} of its rounding",
            p16.name
        );
        assert_ne!(
            p16.weights, ema,
            "f16 weights equal to the f32 ones: not rounded"
        );
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(&f16_path) / size(&f32_path);
    assert!(ratio < 0.52, "f16 bundle is {ratio:.3} of the f32 one");
    let s = &b32.settings;
    assert_eq!((s.steps, s.eta, s.guidance), (8, 1.0, Some(2.0)));
    assert_eq!(s.checkpoint.as_deref(), Some(Path::new("model")));
    assert_eq!(s.guide.as_deref(), Some(Path::new("guide")));
    assert_eq!(s.refiner[0].checkpoint, Path::new("refiner0"));
    assert_eq!(s.refiner[0].from_level, 100);

    // A run folder exports its own [sample] settings and checkpoint.
    let o = export(&run, &base.join("run.safetensors"), &["--storage", "f32"]);
    common::ok(&o);
    let b = read(&base.join("run.safetensors"));
    assert_eq!(b.parts.len(), 1);
    assert_eq!(b.parts[0].weights, ema);
}

/// The bundle's sampler (what the page runs) draws the digits `sample` draws from the same
/// checkpoints, flags and seed, bit for bit on this adapter: model, guide, refiner, fresh
/// noise and classifier-free guidance of digit 3.
#[test]
fn the_bundle_draws_what_sample_draws() {
    let base = common::tmp("export_web", "draw");
    let run = run_folder(&base.join("run"));
    let ckpt = run.join("checkpoint.safetensors");
    let args = stack(&ckpt);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bundle_path = base.join("bundle.safetensors");
    common::ok(&export(
        &ckpt,
        &bundle_path,
        &[&args[..], &["--storage", "f32"]].concat(),
    ));
    let out = base.join("native");
    let o = bin()
        .arg("sample")
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(&args)
        .args([
            "--count", "6", "--digit", "3", "--cfg", "2", "--seed", "5", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    common::ok(&o);
    let native = read_idx_file(out.join("samples-idx3-ubyte")).unwrap().data;

    let gpu = common::gpu();
    let bundle = read(&bundle_path);
    let flags = SampleFlags {
        cfg: Some(2.0),
        seed: Some(5),
        ..Default::default()
    };
    let (s, schedule, classes) = bundle.settings_with(&flags, Some(&[3])).unwrap();
    let models = bundle.upload(&gpu, s.precision).unwrap();
    let sampler = models
        .sampler(&gpu, &s, schedule, classes.as_ref(), 6)
        .unwrap();
    let page = to_bytes(&sampler.run(&gpu, 0).unwrap());
    assert_eq!(page.len(), native.len());
    assert!(page == native, "the bundle's digits differ from sample's");

    // The loop's flags change the digits; the models cannot be changed.
    let other = SampleFlags {
        seed: Some(6),
        ..flags.clone()
    };
    let (s, schedule, classes) = bundle.settings_with(&other, Some(&[3])).unwrap();
    let sampler = models
        .sampler(&gpu, &s, schedule, classes.as_ref(), 6)
        .unwrap();
    assert_ne!(to_bytes(&sampler.run(&gpu, 0).unwrap()), native);
    let swap = SampleFlags {
        guide: Some(ckpt.clone()),
        ..Default::default()
    };
    let e = bundle.settings_with(&swap, None).err().unwrap().to_string();
    assert!(e.contains("cannot be changed"), "{e}");
    let e = bundle
        .settings_with(&flags, Some(&[12]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("digit 12"), "{e}");
}

/// A plain checkpoint reads as a one-part bundle with the article's sampler; errors are one
/// line and exit 2 (a missing run, a checkpoint given twice, a file that is neither) or the
/// error's kind (a corrupt bundle).
#[test]
fn export_web_errors_and_plain_checkpoints() {
    let base = common::tmp("export_web", "errors");
    let run = run_folder(&base.join("run"));
    let ckpt = run.join("checkpoint.safetensors");
    let plain = read(&ckpt);
    assert_eq!(plain.parts.len(), 1);
    assert_eq!(
        plain.settings.checkpoint.as_deref(),
        Some(Path::new("model"))
    );
    let mut article = wgpu_diffusion::settings::recipe::default_sample_settings();
    article.checkpoint = Some(PathBuf::from("model"));
    assert_eq!(plain.settings, article, "the article's sampler");

    let out = base.join("b.safetensors");
    let o = export(&base.join("nowhere"), &out, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(error_line(&o).contains("nowhere"), "{}", error_line(&o));
    let o = export(&ckpt, &out, &["--checkpoint", "x.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("cannot name another"),
        "{}",
        error_line(&o)
    );
    let o = export(&ckpt, &out, &["--guidance", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("needs a guide"),
        "{}",
        error_line(&o)
    );
    assert!(!out.exists(), "a refused export wrote a file");

    let e = Bundle::from_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "x")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("neither a bundle"), "{e}");
    let e = Bundle::from_bytes(b"garbage", "g")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
    common::ok(&export(&ckpt, &out, &[]));
    let mut bytes = std::fs::read(&out).unwrap();
    bytes.truncate(bytes.len() - 100);
    let e = Bundle::from_bytes(&bytes, "cut").err().unwrap().to_string();
    assert!(e.contains("cut"), "{e}");
}
