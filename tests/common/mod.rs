//! Shared set-up for the GPU tests: each test opens its own device (lavapipe on CI).
#![allow(dead_code)]

use wgpu_diffusion::gpu::{Gpu, GpuOptions};

/// A device on the best adapter, honouring WGPU_BACKEND / WGPU_ADAPTER_NAME.
pub fn gpu() -> Gpu {
    match Gpu::new(&GpuOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("GPU tests need an adapter (lavapipe on CI): {e}"),
    }
}
