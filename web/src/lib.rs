//! The browser page's side of wgpu-diffusion: the same kernels and sampler as the program,
//! on the browser's WebGPU (opened at WebGPU's default limits), with every wait a promise.
//!
//! `web/index.html` loads it through the module wasm-bindgen writes (`scripts/build-web.sh`).

use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wgpu_diffusion::gpu::{Gpu, GpuOptions, LimitsChoice};
use wgpu_diffusion::sample::{load_model_bytes, to_bytes, Sampler, Schedule, Stack};
use wgpu_diffusion::settings::sample::Weights;

/// The browser's adapter and device.
#[wasm_bindgen]
pub struct Page {
    gpu: Rc<Gpu>,
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

#[wasm_bindgen]
impl Page {
    /// Opens the best adapter the browser offers at WebGPU's default limits. `perturb` is
    /// the test hook of `WGPU_DIFFUSION_PERTURB` (empty: none): kernels whose label contains
    /// it get a wrong value added after each dispatch, which [`Page::check`] must catch.
    pub async fn open(perturb: String) -> Result<Page, JsValue> {
        let options = GpuOptions {
            limits: LimitsChoice::Webgpu,
            perturb: Some(perturb).filter(|p| !p.is_empty()),
            ..GpuOptions::default()
        };
        let gpu = Gpu::new_async(&options).await.map_err(js_error)?;
        Ok(Page { gpu: Rc::new(gpu) })
    }

    /// The adapter, its optional features and its limits, as `info --json` prints them.
    pub fn adapter(&self) -> String {
        serde_json::to_string(&wgpu_diffusion::info::report(&self.gpu)).unwrap()
    }

    /// `check --quick` on this adapter, but for the sampling loop and the classifier (whose
    /// cases read back as they go): resolves to the report as `check --json` prints it.
    pub fn check(&self) -> js_sys::Promise {
        let gpu = self.gpu.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let report = wgpu_diffusion::check::run_async(&gpu, true).await;
            Ok(JsValue::from_str(&serde_json::to_string(&report).unwrap()))
        })
    }

    /// Draws digits `0..count` from the checkpoint's EMA weights (its raw weights when it has
    /// none) with `steps` deterministic steps at step scale `scale` and initial noise `seed`:
    /// the digits `sample --checkpoint FILE --count COUNT --steps STEPS --step-scale SCALE
    /// --eta 0 --seed SEED` writes natively. Resolves to `count` x 784 bytes (0 to 255);
    /// `name` names the file in errors.
    pub fn draw(
        &self,
        checkpoint: Vec<u8>,
        name: String,
        count: u32,
        steps: u32,
        scale: f32,
        seed: u64,
    ) -> js_sys::Promise {
        let gpu = self.gpu.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let digits = draw(&gpu, &checkpoint, &name, count, steps, scale, seed)
                .await
                .map_err(js_error)?;
            Ok(js_sys::Uint8Array::from(&digits[..]).into())
        })
    }
}

async fn draw(
    gpu: &Gpu,
    checkpoint: &[u8],
    name: &str,
    count: u32,
    steps: u32,
    scale: f32,
    seed: u64,
) -> wgpu_diffusion::Result<Vec<u8>> {
    let model = load_model_bytes(gpu, checkpoint, name, Weights::Ema)?;
    wgpu_diffusion::model::network::check_fits(gpu, &model.config.model, count as usize)?;
    let config = &model.config;
    let schedule = Schedule::plain(config.alpha, config.n_max, steps, scale);
    schedule.validate()?;
    let sampler = Sampler::new(gpu, Stack::of(model.view()), count as usize, schedule, seed)?;
    let images = sampler.run_async(gpu, 0).await?;
    Ok(to_bytes(&images))
}
