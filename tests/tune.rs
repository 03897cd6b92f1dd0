//! The GEMM tuner: it picks, for odd and aligned shapes and every transpose, the fastest
//! candidate that matched the naive kernel; it never picks a candidate that is wrong (one
//! broken on purpose with the perturbation hook); the dense layer uses the cached choice, and
//! a cached name that is no candidate is timed again.

mod common;

use wgpu_diffusion::gpu::{Gpu, GpuOptions, GpuTensor, TuneMode};
use wgpu_diffusion::ops::matmul::{self, Gemm, MatmulKernel};
use wgpu_diffusion::ops::tune::{self, candidates, check_shape};
use wgpu_diffusion::testing::uniform_data;

fn gpu_with(mode: TuneMode, dir: &std::path::Path, perturb: Option<&str>) -> Gpu {
    Gpu::new(&GpuOptions {
        tune: mode,
        cache_dir: Some(dir.to_path_buf()),
        perturb: perturb.map(str::to_string),
        ..GpuOptions::default()
    })
    .expect("an adapter (lavapipe on CI)")
}

fn spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Gemm {
    Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        accumulate: false,
    }
}

#[test]
fn the_fastest_correct_candidate_wins() {
    let dir = common::tmp("tune", "fastest");
    let gpu = gpu_with(TuneMode::Full, &dir, None);
    for s in [
        spec(37, 41, 13, false, false),
        spec(68, 132, 36, false, true),
        spec(72, 76, 67, true, false),
        spec(5, 300, 9, true, true),
    ] {
        let t = tune::tune(&gpu, &s).unwrap();
        assert_eq!(t.trials.len(), candidates(&gpu).len());
        for trial in &t.trials {
            assert!(
                trial.ok,
                "{}: {} failed: {:?}",
                t.key, trial.name, trial.note
            );
        }
        let best = t
            .trials
            .iter()
            .min_by(|a, b| a.secs.partial_cmp(&b.secs).unwrap())
            .unwrap();
        assert_eq!(t.choice.name(), best.name, "{}", t.key);
    }
}

#[test]
fn a_wrong_candidate_is_never_chosen() {
    let dir = common::tmp("tune", "wrong");
    // Every register-kernel candidate adds 1 to its first output.
    let gpu = gpu_with(TuneMode::Full, &dir, Some("matmul_register"));
    let s = spec(68, 132, 36, false, false);
    let t = tune::tune(&gpu, &s).unwrap();
    for trial in &t.trials {
        let register = trial.name.starts_with("register");
        assert_eq!(trial.ok, !register, "{}: {:?}", trial.name, trial.note);
        if register {
            assert!(trial.max_err.unwrap() >= 0.5, "{}", trial.name);
        }
    }
    assert_ne!(t.choice.kernel, MatmulKernel::Register);
    // With every candidate broken (not the oracle) there is no choice: an error, never a
    // wrong kernel.
    let gpu = gpu_with(
        TuneMode::Full,
        &dir,
        Some("matmul_register,matmul_tiled,matmul_subgroup"),
    );
    let err = tune::tune(&gpu, &s).expect_err("no correct candidate");
    assert!(
        err.to_string().contains("no matrix kernel candidate"),
        "{err}"
    );
}

#[test]
fn the_check_shape_keeps_k_transposes_and_alignment() {
    let s = spec(2500, 6001, 324, true, false);
    let c = check_shape(&s);
    assert_eq!((c.k, c.trans_a, c.trans_b), (324, true, false));
    assert!(c.m < 400 && c.n < 400, "{c:?}");
    assert_eq!((c.m % 4, c.n % 4), (2500 % 4, 6001 % 4));
    assert_eq!(
        check_shape(&spec(37, 41, 13, false, false)),
        spec(37, 41, 13, false, false)
    );
}

#[test]
fn the_time_shape_keeps_k_transposes_and_alignment() {
    let gpu = common::gpu();
    let s = spec(2500, 6001, 324, false, true);
    let t = tune::time_shape(&gpu, &s);
    assert_eq!((t.k, t.trans_a, t.trans_b), (324, false, true));
    assert_eq!((t.m % 4, t.n % 4), (2500 % 4, 6001 % 4));
    if gpu.is_cpu() {
        assert!(t.flops() <= 1e9 && t.flops() * 2.5 > 1e9, "{t:?}");
    } else {
        assert_eq!(t, s);
    }
    let small = spec(37, 41, 13, false, false);
    assert_eq!(tune::time_shape(&gpu, &small), small);
}

/// Runs the dense layer's forward at `s` and returns the entry point it dispatched.
fn forward_entry(gpu: &Gpu, s: &Gemm) -> String {
    let x = GpuTensor::from_slice(gpu, "x", &[s.m * s.k], &uniform_data(s.m * s.k, 1)).unwrap();
    let w = GpuTensor::from_slice(gpu, "w", &[s.k * s.n], &uniform_data(s.k * s.n, 2)).unwrap();
    let y = GpuTensor::zeros(gpu, "y", &[s.m * s.n]).unwrap();
    let d = matmul::matmul_forward(gpu, &x, &w, None, &y, s.m, s.k, s.n).unwrap();
    d.kernel.label.clone()
}

#[test]
fn the_layer_uses_the_cache_and_retunes_unknown_names() {
    let dir = common::tmp("tune", "cache");
    let s = spec(40, 24, 36, false, false);
    let key = tune::key(&s);
    // A first run tunes the shape and keeps its choice.
    let gpu = gpu_with(TuneMode::Cached, &dir, None);
    forward_entry(&gpu, &s);
    let first = gpu
        .tune
        .choices()
        .get(&key)
        .cloned()
        .expect("a cached choice");
    assert_eq!(gpu.tune.used().get(&key), Some(&first));
    drop(gpu);
    // A cached tiled choice is what the next run dispatches (tiled is never the built-in on
    // a CPU adapter, nor always the winner here).
    let gpu = gpu_with(TuneMode::Cached, &dir, None);
    gpu.tune.put(&key, "tiled 64x64x16/4x4").unwrap();
    drop(gpu);
    let gpu = gpu_with(TuneMode::Cached, &dir, None);
    assert!(forward_entry(&gpu, &s).starts_with("matmul::matmul_tiled"));
    // A name that is no candidate is timed again and replaced.
    gpu.tune.put(&key, "register 3x3x3").unwrap();
    drop(gpu);
    let gpu = gpu_with(TuneMode::Cached, &dir, None);
    forward_entry(&gpu, &s);
    let now = gpu.tune.choices().get(&key).cloned().unwrap();
    assert!(candidates(&gpu).iter().any(|c| c.name() == now), "{now}");
    // `off` ignores the cache: the built-in kernel.
    let gpu = gpu_with(TuneMode::Off, &dir, None);
    let builtin = MatmulKernel::auto(&gpu).name();
    assert!(forward_entry(&gpu, &s).contains(builtin));
}
