//! `wgpu-diffusion info`: the adapter, its optional features and the limits the kernels depend on.

use crate::gpu::context::OPTIONAL_FEATURES;
use crate::gpu::Gpu;
use serde::Serialize;
use std::collections::BTreeMap;

/// The limits the kernels depend on, by name.
pub fn limits(gpu: &Gpu) -> Vec<(&'static str, u64)> {
    let l = &gpu.limits;
    vec![
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "min_storage_buffer_offset_alignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
    ]
}

/// What `info --json` prints: the adapter, its optional features and its limits.
#[derive(Debug, Serialize)]
pub struct InfoReport {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub vendor: String,
    pub device: String,
    pub driver: String,
    pub driver_info: String,
    pub features: BTreeMap<&'static str, bool>,
    /// Whose limits the device was opened with: "adapter" or "webgpu" (`--limits`).
    pub limits_from: String,
    pub limits: BTreeMap<&'static str, u64>,
    /// The tuner's cache file of this adapter and driver, and the GEMM variant it chose per
    /// shape (empty with `--tune off` or before the first tuned run).
    pub tune_cache: Option<String>,
    pub tuned: BTreeMap<String, String>,
}

/// The report of `gpu`'s adapter.
pub fn report(gpu: &Gpu) -> InfoReport {
    let i = &gpu.info;
    InfoReport {
        adapter: i.name.clone(),
        backend: format!("{:?}", i.backend).to_lowercase(),
        device_type: format!("{:?}", i.device_type),
        vendor: format!("{:#06x}", i.vendor),
        device: format!("{:#06x}", i.device),
        driver: i.driver.clone(),
        driver_info: i.driver_info.clone(),
        features: OPTIONAL_FEATURES
            .iter()
            .map(|(f, name)| (*name, gpu.has(*f)))
            .collect(),
        limits_from: gpu.limits_choice.name().to_string(),
        limits: limits(gpu).into_iter().collect(),
        tune_cache: gpu.tune.path.as_ref().map(|p| p.display().to_string()),
        tuned: gpu.tune.choices(),
    }
}

/// The report as aligned text lines.
pub fn report_text(gpu: &Gpu) -> String {
    let i = &gpu.info;
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<40} {v}\n"));
    line("adapter", i.name.clone());
    line("backend", format!("{:?}", i.backend).to_lowercase());
    line("device type", format!("{:?}", i.device_type));
    line(
        "driver",
        format!("{} {}", i.driver, i.driver_info).trim().to_string(),
    );
    for (f, name) in OPTIONAL_FEATURES {
        line(name, if gpu.has(f) { "yes" } else { "no" }.to_string());
    }
    line(
        "limits",
        format!(
            "{} (--limits {})",
            gpu.limits_choice.owner(),
            gpu.limits_choice.name()
        ),
    );
    for (k, v) in limits(gpu) {
        line(k, v.to_string());
    }
    let cache = gpu.tune.path.as_ref();
    line(
        "tune cache",
        cache.map_or("none (no cache folder)".into(), |p| p.display().to_string()),
    );
    let tuned = gpu.tune.choices();
    if tuned.is_empty() {
        line("tuned shapes", "none yet".to_string());
    }
    for (shape, variant) in tuned {
        line(&format!("  {shape}"), variant);
    }
    s
}
