//! The browser page's side of wgpu-diffusion: the same kernels and sampler as the program,
//! on the browser's WebGPU (opened at WebGPU's default limits), with every wait a promise.
//!
//! `web/index.html` loads it through the module wasm-bindgen writes (`scripts/build-web.sh`).

use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wgpu_diffusion::gpu::{Elem, Gpu, GpuOptions, LimitsChoice};
use wgpu_diffusion::sample::bundle::{Bundle, Uploaded};
use wgpu_diffusion::sample::{to_bytes, Precision, SampleFlags};

/// The browser's adapter and device, and the model the page draws from.
#[wasm_bindgen]
pub struct Page {
    gpu: Rc<Gpu>,
    model: RefCell<Option<Rc<Model>>>,
}

/// A bundle (or checkpoint) read and its weights on the GPU.
struct Model {
    bundle: Bundle,
    uploaded: Uploaded,
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
        Ok(Page {
            gpu: Rc::new(gpu),
            model: RefCell::new(None),
        })
    }

    /// The adapter, its optional features and its limits, as `info --json` prints them.
    pub fn adapter(&self) -> String {
        serde_json::to_string(&wgpu_diffusion::info::report(&self.gpu)).unwrap()
    }

    /// `check --quick` on this adapter, but for the classifier's cases (which read back as
    /// they go): resolves to the report as `check --json` prints it.
    pub fn check(&self) -> js_sys::Promise {
        let gpu = self.gpu.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let report = wgpu_diffusion::check::run_async(&gpu, true).await;
            Ok(JsValue::from_str(&serde_json::to_string(&report).unwrap()))
        })
    }

    /// Reads a bundle of `export-web` (or a checkpoint of `train`, with the article's
    /// sampler) and puts its models on the GPU for [`Page::draw`]; `name` names the file in
    /// errors. Returns what the model is, as JSON: `classes` (class-conditional or not), the
    /// sampler's settings (`sample`, as the flags name them), each part's name and weights,
    /// how the file stored them, and `precision`: how the page computes (`precision` asks:
    /// `f32`, `f16`, or `auto`, f16 where the adapter has shader-f16), with `precision_note`
    /// saying why when `auto` fell back to f32.
    pub fn load(&self, bytes: Vec<u8>, name: String, precision: String) -> Result<String, JsValue> {
        let bundle = Bundle::from_bytes(&bytes, &name).map_err(js_error)?;
        let has_f16 = self.gpu.check_elem(Elem::F16).is_ok();
        let (precision, note) = match precision.as_str() {
            "f32" => (Precision::F32, None),
            "f16" => (Precision::F16, None),
            "auto" | "" if has_f16 => (Precision::F16, None),
            "auto" | "" => (
                Precision::F32,
                Some(format!(
                    "{} has no shader-f16: the page computes in f32",
                    self.gpu.adapter_name()
                )),
            ),
            other => {
                return Err(js_error(format!(
                    "precision {other:?}: expected auto, f32 or f16"
                )))
            }
        };
        let uploaded = bundle.upload(&self.gpu, precision).map_err(js_error)?;
        let main = (bundle.parts.iter())
            .find(|p| Some(p.name.as_ref()) == bundle.settings.checkpoint.as_deref())
            .expect("a bundle holds its main model");
        let about = serde_json::json!({
            "name": name,
            "classes": main.config.model.classes,
            "storage": bundle.storage,
            "bytes": bytes.len(),
            "sample": bundle.settings.to_flags(),
            "describe": bundle.settings.describe(),
            "precision": precision,
            "precision_note": note,
            "parts": bundle.parts.iter().map(|p| (p.name.clone(), p.weights.len())).collect::<Vec<_>>(),
        });
        *self.model.borrow_mut() = Some(Rc::new(Model { bundle, uploaded }));
        Ok(about.to_string())
    }

    /// Draws digits `0..count` from the loaded model with its settings and `flags` over them
    /// (a JSON object of `sample`'s flags, e.g. `{"steps": 20, "cfg": 2, "seed": 3}`),
    /// digit `digit` (-1: the digits 0..9 in turn) of a class-conditional model: what
    /// `sample --run RUN --count COUNT [--digit D] FLAGS` writes natively. The loop is
    /// submitted `every` steps at a time; after each part, `on_part(steps_done, bytes)` gets
    /// the digits as they stand. Resolves to `count` x 784 bytes (0 to 255).
    pub fn draw(
        &self,
        flags: String,
        count: u32,
        digit: i32,
        every: u32,
        on_part: js_sys::Function,
    ) -> js_sys::Promise {
        let gpu = self.gpu.clone();
        let model = self.model.borrow().clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let model = model.ok_or_else(|| js_error("no model is loaded"))?;
            let flags: SampleFlags = serde_json::from_str(&flags)
                .map_err(|e| js_error(format!("the sampler settings: {e}")))?;
            let digits = u32::try_from(digit).ok().map(|d| vec![d]);
            let (s, schedule, classes) = (model.bundle)
                .settings_with(&flags, digits.as_deref())
                .map_err(js_error)?;
            let sampler = (model.uploaded)
                .sampler(&gpu, &s, schedule, classes.as_ref(), count as usize)
                .map_err(js_error)?;
            let report = |k: u32, state: &[f32]| {
                let bytes = js_sys::Uint8Array::from(&to_bytes(state)[..]);
                let _ = on_part.call2(&JsValue::NULL, &JsValue::from(k), &bytes);
            };
            let digits = sampler
                .run_parts_async(&gpu, 0, every, report)
                .await
                .map_err(js_error)?;
            Ok(js_sys::Uint8Array::from(&to_bytes(&digits)[..]).into())
        })
    }
}
