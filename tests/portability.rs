//! Every pipeline the program builds, translated by naga for the other backends: MSL 2.4
//! (Metal), HLSL shader model 6.0 (DX12), SPIR-V 1.3 (Vulkan) and GLSL ES 3.10 (GL), each with
//! the `override` constants the host passes, as wgpu does at run time on those platforms. The
//! pipelines are the ones `check` builds, those of every preset's networks and samplers,
//! the bench's FMA probe and the test hook, and every shader must be among them, so a shader or a constant that one backend cannot express fails here, without a GPU.

mod common;

use std::collections::HashMap;
use wgpu_diffusion::gpu::timing::measure_peak_gflops;
use wgpu_diffusion::gpu::{kernels::shader, Elem, Gpu, GpuTensor, SHADERS};
use wgpu_diffusion::model::network::{Network, Optimizer};
use wgpu_diffusion::model::ParamLayout;
use wgpu_diffusion::sample::{Sampler, SamplerModel, Schedule, Stack};
use wgpu_diffusion::settings::recipe::{Preset, Recipe, Source};
use wgpu_diffusion::settings::train::TrainFlags;

use naga::back::pipeline_constants::process_overrides;
use naga::back::PipelineConstants;
use naga::valid::{ValidationFlags, Validator};
use naga::ShaderStage;

/// Builds one network (with its gradients and optimizer) and one sampler per stage of every
/// preset at batch 2: the model's pipelines with the model's constants.
fn build_every_preset(gpu: &Gpu) {
    for &preset in <Preset as clap::ValueEnum>::value_variants() {
        let recipe = Recipe::load(&Source::Preset(preset), &TrainFlags::default()).unwrap();
        for stage in &recipe.stages {
            let config = stage.settings.model().unwrap();
            let layout = ParamLayout::new(&config);
            let zeros = vec![0.0; layout.total];
            let params = GpuTensor::from_slice(gpu, "params", &[layout.total], &zeros).unwrap();
            let opt =
                Optimizer::new(gpu, &layout, &params, &zeros, &zeros, &zeros, 1e-3, 0.9).unwrap();
            Network::new(gpu, &config, &layout, 2, &params, Some(&opt.grads)).unwrap();
            let model = SamplerModel {
                config: &config,
                layout: &layout,
                params: &params,
            };
            let schedule = Schedule::plain(0.99, 500, 4, 1.0);
            Sampler::new(gpu, Stack::of(model), 2, schedule, 1).unwrap();
            // And with `--precision f16`, where the adapter can.
            if gpu.check_elem(Elem::F16).is_ok() {
                let (layout, params) =
                    wgpu_diffusion::sample::params_on_gpu(gpu, &config, &zeros, Elem::F16).unwrap();
                let model = SamplerModel {
                    config: &config,
                    layout: &layout,
                    params: &params,
                };
                Sampler::new(gpu, Stack::of(model), 2, schedule, 1).unwrap();
            }
        }
    }
}

/// One failure per backend that could not take the pipeline, as "backend: error". An f16
/// pipeline goes to MSL, HLSL at shader model 6.2 and SPIR-V: wgpu's GL backend offers no
/// shader-f16 (and naga's GLSL writer refuses 2-byte floats).
fn translate(
    module: &naga::Module,
    entry: &str,
    constants: &PipelineConstants,
    elem: Elem,
) -> Vec<String> {
    let mut failures = Vec::new();
    let stage = Some((ShaderStage::Compute, entry));
    let mut fail = |backend: &str, e: String| failures.push(format!("{backend}: {e}"));
    let backends = [
        ("msl", naga::back::msl::supported_capabilities()),
        ("hlsl", naga::back::hlsl::supported_capabilities()),
        ("spv", naga::back::spv::supported_capabilities()),
        ("glsl", naga::back::glsl::supported_capabilities()),
    ];
    for (backend, caps) in backends {
        if elem == Elem::F16 && backend == "glsl" {
            continue;
        }
        let info = match Validator::new(ValidationFlags::all(), caps).validate(module) {
            Ok(info) => info,
            Err(e) => {
                fail(backend, format!("invalid for this backend: {e}"));
                continue;
            }
        };
        let (module, info) = match process_overrides(module, &info, stage, constants) {
            Ok(m) => m,
            Err(e) => {
                fail(backend, format!("constants: {e}"));
                continue;
            }
        };
        if let Err(e) = write(backend, &module, &info, entry, elem) {
            fail(backend, e);
        }
    }
    failures
}

fn write(
    backend: &str,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    elem: Elem,
) -> Result<(), String> {
    use naga::back::{glsl, hlsl, msl, spv};
    let stage = (ShaderStage::Compute, entry.to_string());
    match backend {
        "msl" => {
            let options = msl::Options {
                lang_version: (2, 4),
                fake_missing_bindings: true,
                ..Default::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some(stage),
                ..Default::default()
            };
            msl::write_string(module, info, &options, &pipeline)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        "hlsl" => {
            let options = hlsl::Options {
                shader_model: match elem {
                    Elem::F32 => hlsl::ShaderModel::V6_0,
                    Elem::F16 => hlsl::ShaderModel::V6_2,
                },
                fake_missing_bindings: true,
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some(stage),
            };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &options, &pipeline)
                .write(module, info, None)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        "spv" => {
            let options = spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let pipeline = spv::PipelineOptions {
                shader_stage: ShaderStage::Compute,
                entry_point: entry.to_string(),
            };
            spv::write_vec(module, info, &options, Some(&pipeline))
                .map(drop)
                .map_err(|e| e.to_string())
        }
        _ => {
            let options = glsl::Options {
                version: glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                },
                ..Default::default()
            };
            let pipeline = glsl::PipelineOptions {
                shader_stage: ShaderStage::Compute,
                entry_point: entry.to_string(),
                multiview: None,
            };
            let mut out = String::new();
            let policies = naga::proc::BoundsCheckPolicies::default();
            glsl::Writer::new(&mut out, module, info, &options, &pipeline, policies)
                .and_then(|mut w| w.write())
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

#[test]
fn every_built_pipeline_translates_to_msl_hlsl_spirv_and_glsl() {
    let gpu = common::gpu();
    let report = wgpu_diffusion::check::run(&gpu, false);
    assert!(
        report.failed.is_empty(),
        "check failed: {:?}",
        report.failed
    );
    build_every_preset(&gpu);
    // The bench's FMA probe and `check`'s test hook, which no command above builds.
    measure_peak_gflops(&gpu, 1 << 10).unwrap();
    gpu.kernel("perturb", "perturb", &[]).unwrap();
    let built = gpu.built_kernels();
    let mut modules = HashMap::new();
    let mut failures = Vec::new();
    for k in &built {
        let (name, entry) = (k.shader, &k.entry);
        let module = modules.entry((name, k.elem)).or_insert_with(|| {
            let wgsl = shader(name).unwrap().wgsl_of(k.elem);
            naga::front::wgsl::parse_str(&wgsl).unwrap()
        });
        let constants: PipelineConstants = k.constants.iter().cloned().collect();
        for f in translate(module, entry, &constants, k.elem) {
            failures.push(format!(
                "{name}::{entry} {} {constants:?}: {f}",
                k.elem.name()
            ));
        }
    }
    let missing: Vec<_> = SHADERS
        .iter()
        .filter(|s| !modules.contains_key(&(s.name, Elem::F32)))
        .map(|s| s.name)
        .collect();
    println!(
        "{} pipelines of {} shaders translated; not built: {missing:?}",
        built.len(),
        modules.len()
    );
    assert!(missing.is_empty(), "shaders never built here: {missing:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
