//! Shared set-up for the GPU tests: each test opens its own device (lavapipe on CI).
#![allow(dead_code)]

use wgpu_diffusion::gpu::{Gpu, GpuOptions, LimitsChoice};

/// A device on the best adapter, honouring WGPU_BACKEND / WGPU_ADAPTER_NAME, at the
/// adapter's limits or, with `WGPU_DIFFUSION_LIMITS=webgpu`, WebGPU's defaults (the whole
/// suite can so run as a browser would).
pub fn gpu() -> Gpu {
    let limits = match std::env::var("WGPU_DIFFUSION_LIMITS").as_deref() {
        Ok("webgpu") => LimitsChoice::Webgpu,
        Ok("adapter") | Ok("") | Err(_) => LimitsChoice::Adapter,
        Ok(other) => panic!("WGPU_DIFFUSION_LIMITS={other}: expected adapter or webgpu"),
    };
    let options = GpuOptions {
        limits,
        ..GpuOptions::default()
    };
    match Gpu::new(&options) {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need an adapter (lavapipe on CI): {e}"),
    }
}

/// The MNIST folder: $MNIST_DIR, else ../shared/mnist beside the project (as in CI).
pub fn mnist_dir() -> std::path::PathBuf {
    match std::env::var_os("MNIST_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"),
    }
}

/// The program, in the environment the tests run in (no display, often no XDG_RUNTIME_DIR),
/// with the built-in kernels (`--tune off`: no timing, nothing written to the user's cache;
/// tests/tune.rs and tests/check.rs cover the tuner).
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-diffusion"));
    c.env("WGPU_DIFFUSION_TUNE", "off");
    c
}

/// The one `error…` line on stderr (fails the test unless there is exactly one).
pub fn error_line(o: &std::process::Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected exactly one error line, got:\n{e}");
    lines[0].to_string()
}

/// A fresh, empty folder under the system's temp folder, named by the test file (`suite`),
/// the case and this process.
pub fn tmp(suite: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wgpu-diffusion-{suite}-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The program's stdout, after checking that it succeeded (else its output fails the test).
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A 1-D tensor holding `data`.
pub fn tensor(gpu: &Gpu, name: &str, data: &[f32]) -> wgpu_diffusion::gpu::GpuTensor {
    wgpu_diffusion::gpu::GpuTensor::from_slice(gpu, name, &[data.len()], data).unwrap()
}

/// A 1-D tensor holding `data` stored as `elem`.
pub fn tensor_of(
    gpu: &Gpu,
    name: &str,
    data: &[f32],
    elem: wgpu_diffusion::gpu::Elem,
) -> wgpu_diffusion::gpu::GpuTensor {
    wgpu_diffusion::gpu::GpuTensor::from_values(gpu, name, &[data.len()], data, elem).unwrap()
}

/// The device when its adapter has shader-f16; else None, once the refusal has been checked
/// to be the one clear line (`--precision f16` on such an adapter).
pub fn f16_gpu() -> Option<Gpu> {
    let gpu = gpu();
    if gpu.features.contains(wgpu::Features::SHADER_F16) {
        return Some(gpu);
    }
    let e = gpu
        .check_elem(wgpu_diffusion::gpu::Elem::F16)
        .expect_err("no shader-f16, yet f16 kernels are accepted");
    assert!(e.to_string().contains("no shader-f16"), "{e}");
    eprintln!("note: this adapter has no shader-f16; the f16 kernels are not tested");
    None
}
