//! The kernel table: every shader in `shaders/*.wgsl`, compiled once per device, and compute
//! pipelines specialised with `override` constants, built once and cached.
//!
//! A [`Dispatch`] is a pipeline plus a bind group plus a workgroup count, prepared before the
//! hot loop; recording it into a pass allocates nothing.

use crate::error::{Error, Result};
use crate::gpu::{Elem, Gpu};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One WGSL file of `shaders/`.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// Whether [`PRELUDE`] goes in front of it (every shader with `override WG`).
    pub prelude: bool,
}

/// `shaders/prelude.wgsl`: functions several shaders share (`linear_index`, the workgroup
/// reduction, the mixture prior's log-odds), written once.
pub const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");

/// Threads of the one-workgroup reductions (`RWG` in the prelude: `mse_forward`, `xent_mean`).
pub const REDUCE_WG: u32 = 256;

impl Shader {
    /// The WGSL text the device compiles for activations stored as `elem`: the alias `elem`
    /// ([`Elem::wgsl_alias`]), the prelude (with `RWG`) and the file. Every shader is written
    /// once; those that touch activations declare them `array<elem>` and compute in f32.
    pub fn wgsl_of(&self, elem: Elem) -> String {
        let alias = elem.wgsl_alias();
        if self.prelude {
            format!(
                "{alias}const RWG: u32 = {REDUCE_WG}u;\n{PRELUDE}\n// shaders/{}.wgsl\n{}",
                self.name, self.source
            )
        } else {
            format!("{alias}{}", self.source)
        }
    }

    /// [`Shader::wgsl_of`] in f32.
    pub fn wgsl(&self) -> String {
        self.wgsl_of(Elem::F32)
    }
}

/// Every shader the program uses, and the test hook's. Tests parse and validate each one with
/// naga.
pub const SHADERS: &[Shader] = &[
    PERTURB,
    Shader {
        name: "patches",
        source: include_str!("../../shaders/patches.wgsl"),
        prelude: true,
    },
    Shader {
        name: "noise",
        source: include_str!("../../shaders/noise.wgsl"),
        prelude: true,
    },
    Shader {
        name: "matmul",
        source: include_str!("../../shaders/matmul.wgsl"),
        prelude: false,
    },
    // matmul.wgsl's helpers and the subgroup GEMM: built only when the subgroup kernel runs,
    // so adapters without subgroups never compile a subgroup operation.
    Shader {
        name: "matmul_subgroup",
        source: concat!(
            include_str!("../../shaders/matmul.wgsl"),
            "\n// shaders/matmul_subgroup.wgsl\n",
            include_str!("../../shaders/matmul_subgroup.wgsl")
        ),
        prelude: false,
    },
    Shader {
        name: "attention",
        source: include_str!("../../shaders/attention.wgsl"),
        prelude: true,
    },
    Shader {
        name: "adam",
        source: include_str!("../../shaders/adam.wgsl"),
        prelude: true,
    },
    Shader {
        name: "gelu",
        source: include_str!("../../shaders/gelu.wgsl"),
        prelude: true,
    },
    Shader {
        name: "skip",
        source: include_str!("../../shaders/skip.wgsl"),
        prelude: true,
    },
    Shader {
        name: "rows",
        source: include_str!("../../shaders/rows.wgsl"),
        prelude: true,
    },
    Shader {
        name: "label",
        source: include_str!("../../shaders/label.wgsl"),
        prelude: true,
    },
    Shader {
        name: "loss",
        source: include_str!("../../shaders/loss.wgsl"),
        prelude: true,
    },
    Shader {
        name: "peak",
        source: include_str!("../../shaders/peak.wgsl"),
        prelude: true,
    },
    Shader {
        name: "sample",
        source: include_str!("../../shaders/sample.wgsl"),
        prelude: true,
    },
    Shader {
        name: "classifier",
        source: include_str!("../../shaders/classifier.wgsl"),
        prelude: true,
    },
];

/// The test hook of [`GpuOptions::perturb`](crate::gpu::GpuOptions::perturb).
const PERTURB: Shader = Shader {
    name: "perturb",
    source: include_str!("../../shaders/perturb.wgsl"),
    prelude: false,
};

/// Looks a shader up by name.
pub fn shader(name: &str) -> Result<&'static Shader> {
    SHADERS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::gpu(format!("no shader named '{name}' in the kernel table")))
}

/// Workgroup size of the 1-D elementwise kernels (passed to WGSL as the `WG` override).
pub const WG_1D: u32 = 64;

/// A compute pipeline with its bind-group layout.
pub struct Kernel {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The shader's writable bindings when this kernel is to be perturbed (a test hook).
    perturb: Option<Vec<u32>>,
}

type KernelKey = (&'static str, Elem, String, Vec<(String, u64)>);

/// Shader modules and pipelines of one device.
#[derive(Default)]
pub struct KernelCache {
    modules: Mutex<HashMap<(&'static str, Elem), Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl Gpu {
    fn module(&self, shader: &'static Shader, elem: Elem) -> Result<Arc<wgpu::ShaderModule>> {
        if let Some(m) = self
            .kernels
            .modules
            .lock()
            .unwrap()
            .get(&(shader.name, elem))
        {
            return Ok(m.clone());
        }
        self.check_elem(elem)?;
        let (module, error) = self.validated(|| {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.wgsl_of(elem).into()),
                })
        });
        if let Some(e) = error {
            return Err(Error::gpu(format!(
                "shaders/{}.wgsl ({}) does not compile: {e}",
                shader.name,
                elem.name()
            )));
        }
        let module = Arc::new(module);
        self.kernels
            .modules
            .lock()
            .unwrap()
            .insert((shader.name, elem), module.clone());
        Ok(module)
    }

    /// The adapter's name, or "this adapter" where the backend gives none (a browser's).
    pub fn adapter_name(&self) -> &str {
        match self.info.name.as_str() {
            "" => "this adapter",
            name => name,
        }
    }

    /// Errors, in one line naming the adapter, when it cannot run kernels storing `elem`.
    pub fn check_elem(&self, elem: Elem) -> Result<()> {
        if elem == Elem::F16 && !self.features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::adapter(format!(
                "{} has no shader-f16 feature: it cannot run --precision f16 (use --precision f32)",
                self.adapter_name()
            )));
        }
        Ok(())
    }

    /// Runs `make` inside a validation error scope and returns what it made with the scope's
    /// first error. In a browser page the scope's answer only arrives after control returns
    /// to the event loop, so there no scope is opened: a validation error reaches the
    /// device's uncaptured-error handler and surfaces at the next [`Gpu::check`].
    fn validated<R>(&self, make: impl FnOnce() -> R) -> (R, Option<wgpu::Error>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let made = make();
            (made, pollster::block_on(scope.pop()))
        }
        #[cfg(target_arch = "wasm32")]
        (make(), None)
    }

    /// The pipeline for `shader`'s `entry`, specialised with `constants` (WGSL `override`s);
    /// built on first use, then reused.
    pub fn kernel(
        &self,
        shader_name: &str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<Kernel>> {
        self.kernel_of(shader_name, entry, constants, Elem::F32)
    }

    /// [`Gpu::kernel`] for activations stored as `elem` (the shader's `elem` alias).
    pub fn kernel_of(
        &self,
        shader_name: &str,
        entry: &str,
        constants: &[(&str, f64)],
        elem: Elem,
    ) -> Result<Arc<Kernel>> {
        let shader = shader(shader_name)?;
        let key: KernelKey = (
            shader.name,
            elem,
            entry.to_string(),
            constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        );
        if let Some(k) = self.kernels.pipelines.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let module = self.module(shader, elem)?;
        let label = match elem {
            Elem::F32 => format!("{}::{entry}", shader.name),
            Elem::F16 => format!("{}::{entry}[f16]", shader.name),
        };
        let (pipeline, error) = self.validated(|| {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        });
        if let Some(e) = error {
            return Err(Error::gpu(format!(
                "cannot build kernel {label} {constants:?}: {e}"
            )));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let perturb = self
            .perturb
            .as_ref()
            .filter(|p| p.split(',').any(|p| label.contains(p)) && shader.name != PERTURB.name)
            .map(|_| writable_bindings(&shader.wgsl_of(elem)));
        let k = Arc::new(Kernel {
            label,
            pipeline,
            layout,
            perturb,
        });
        self.kernels
            .pipelines
            .lock()
            .unwrap()
            .insert(key, k.clone());
        Ok(k)
    }

    /// Every pipeline built so far: (shader, entry point, constants), sorted; what the
    /// portability tests translate for the other backends.
    pub fn built_kernels(&self) -> Vec<BuiltKernel> {
        let mut built: Vec<_> = (self.kernels.pipelines.lock().unwrap().keys())
            .map(|(shader, elem, entry, constants)| {
                let constants = constants
                    .iter()
                    .map(|(k, bits)| (k.clone(), f64::from_bits(*bits)))
                    .collect();
                BuiltKernel {
                    shader,
                    elem: *elem,
                    entry: entry.clone(),
                    constants,
                }
            })
            .collect();
        built.sort_by(|a, b| {
            (a.shader, a.elem.name(), &a.entry).cmp(&(b.shader, b.elem.name(), &b.entry))
        });
        built
    }

    /// A dispatch of `kernel` over `groups` workgroups with `bindings` as (binding, resource)
    /// of group 0 (`tensor.bind()`, `uniform.as_entire_binding()`). Built once, recorded many
    /// times.
    pub fn dispatch(
        &self,
        kernel: &Arc<Kernel>,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::adapter(format!(
                "kernel {} needs {groups:?} workgroups, over {} limit of {max} per dimension",
                kernel.label,
                self.limits_choice.owner()
            )));
        }
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let (bind_group, error) = self.validated(|| {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.label),
                layout: &kernel.layout,
                entries: &entries,
            })
        });
        if let Some(e) = error {
            return Err(Error::gpu(format!(
                "cannot bind buffers for {}: {e}",
                kernel.label
            )));
        }
        let then = match &kernel.perturb {
            Some(writable) => self.perturbation(writable, bindings)?,
            None => None,
        };
        Ok(Dispatch {
            kernel: kernel.clone(),
            bind_group,
            groups,
            then,
        })
    }

    /// The test hook's dispatch on the first writable buffer among `bindings`.
    fn perturbation(
        &self,
        writable: &[u32],
        bindings: &[(u32, wgpu::BindingResource<'_>)],
    ) -> Result<Option<Box<Dispatch>>> {
        let Some((_, target)) = bindings.iter().find(|(b, _)| writable.contains(b)) else {
            return Ok(None);
        };
        let k = self.kernel(PERTURB.name, "perturb", &[])?;
        Ok(Some(Box::new(self.dispatch(
            &k,
            &[(0, target.clone())],
            [1, 1, 1],
        )?)))
    }

    /// Workgroups for `n` threads in 1-D groups of `wg`: ceil-divided, spilling into y when x
    /// would pass the per-dimension limit (kernels rebuild the index with `linear_index`).
    pub fn groups_1d(&self, n: u64, wg: u32) -> Result<[u32; 3]> {
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let groups = n.div_ceil(wg as u64).max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(Error::adapter(format!(
                "{n} threads need {groups} workgroups of {wg}, more than {} {max} x {max}",
                self.limits_choice.owner()
            )));
        }
        Ok([x as u32, y as u32, 1])
    }
}

/// A pipeline the kernel cache holds: shader, storage type, entry point and constants.
#[derive(Clone, Debug)]
pub struct BuiltKernel {
    pub shader: &'static str,
    pub elem: Elem,
    pub entry: String,
    pub constants: Vec<(String, f64)>,
}

/// A prepared dispatch: pipeline, bind group and workgroup count.
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    /// The test hook's perturbation, recorded right after (only when asked for).
    then: Option<Box<Dispatch>>,
}

impl Dispatch {
    /// Records this dispatch into `pass`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
        if let Some(t) = &self.then {
            t.record(pass);
        }
    }
}

/// The bindings of group 0 that `wgsl` declares writable (`var<storage, read_write>`).
fn writable_bindings(wgsl: &str) -> Vec<u32> {
    let Ok(module) = naga::front::wgsl::parse_str(wgsl) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = module
        .global_variables
        .iter()
        .filter_map(|(_, g)| match (g.space, &g.binding) {
            (naga::AddressSpace::Storage { access }, Some(b))
                if b.group == 0 && access.contains(naga::StorageAccess::STORE) =>
            {
                Some(b.binding)
            }
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out
}
