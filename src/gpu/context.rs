//! Instance, adapter and device creation.
//!
//! Picks the best adapter (discrete > integrated > virtual > CPU, native backends before GL),
//! honours `--backend` / `--adapter` and wgpu's `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`, and asks
//! for the adapter's real limits (or WebGPU's defaults, `--limits webgpu`) and the optional
//! features we use when present.

use crate::error::{Error, Result};
use crate::gpu::kernels::KernelCache;
use crate::gpu::tune::{TuneCache, TuneFile, TuneMode};
use std::sync::{Arc, Mutex};

/// A backend the user can force with `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

/// The limits the device is opened with (`--limits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitsChoice {
    /// The adapter's own limits: the most it can do.
    #[default]
    Adapter,
    /// WebGPU's default limits, what a browser grants a page that asks for nothing more
    /// (256 invocations and 16 KiB of workgroup memory, 128 MiB storage bindings, 256 MiB
    /// buffers): a run that works here works in a browser's WebGPU.
    Webgpu,
}

impl LimitsChoice {
    fn limits(self, adapter: &wgpu::Adapter) -> wgpu::Limits {
        match self {
            LimitsChoice::Adapter => adapter.limits(),
            LimitsChoice::Webgpu => wgpu::Limits::defaults(),
        }
    }

    /// The flag's value: "adapter" or "webgpu".
    pub fn name(self) -> &'static str {
        match self {
            LimitsChoice::Adapter => "adapter",
            LimitsChoice::Webgpu => "webgpu",
        }
    }

    /// Whose limits they are, for messages: "the adapter's" or "WebGPU's default".
    pub fn owner(self) -> &'static str {
        match self {
            LimitsChoice::Adapter => "the adapter's",
            LimitsChoice::Webgpu => "WebGPU's default",
        }
    }
}

/// How to choose the adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Only this backend (else `WGPU_BACKEND`, else all).
    pub backend: Option<BackendChoice>,
    /// Case-insensitive substring of the adapter name (else `WGPU_ADAPTER_NAME`).
    pub adapter: Option<String>,
    /// The device's limits (the adapter's unless asked for WebGPU's defaults).
    pub limits: LimitsChoice,
    /// How kernels are chosen per shape (the tuner; off by default in the library).
    pub tune: TuneMode,
    /// Folder of the tuner's cache (else `WGPU_DIFFUSION_CACHE_DIR`, else the user's cache).
    pub cache_dir: Option<std::path::PathBuf>,
    /// A test hook: every kernel whose label (`shader::entry`) contains this text (or one of
    /// its comma-separated parts) gets 1.0
    /// added to element 0 of its first writable buffer after each dispatch, so that tests can
    /// prove that `check` and the tuner catch a wrong kernel. The program reads it from
    /// `WGPU_DIFFUSION_PERTURB`.
    pub perturb: Option<String>,
}

/// Optional features we use when the adapter has them.
pub const OPTIONAL_FEATURES: [(wgpu::Features, &str); 3] = [
    (wgpu::Features::SHADER_F16, "shader-f16"),
    (wgpu::Features::SUBGROUP, "subgroup"),
    (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
];

const NO_ADAPTER_HINT: &str = "install a Vulkan driver for your GPU, or Mesa's software Vulkan \
(lavapipe) to run on the CPU: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu)";

/// A device with its queue, the adapter it came from, and the kernel cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: wgpu::Adapter,
    pub info: wgpu::AdapterInfo,
    /// Features enabled on the device (a subset of [`OPTIONAL_FEATURES`]).
    pub features: wgpu::Features,
    /// The limits the device was created with: the adapter's own or WebGPU's defaults.
    pub limits: wgpu::Limits,
    /// Which of the two [`Gpu::limits`] are.
    pub limits_choice: LimitsChoice,
    /// The tuner's choices for this adapter.
    pub tune: TuneCache,
    pub(crate) kernels: KernelCache,
    /// [`GpuOptions::perturb`].
    pub(crate) perturb: Option<String>,
    pub(crate) readbacks: std::sync::atomic::AtomicU64,
    errors: Arc<Mutex<Vec<String>>>,
    _instance: wgpu::Instance,
}

/// Mesa's implicit Vulkan layer VK_LAYER_MESA_device_select (installed with lavapipe) orders
/// the devices by the display's; to find the display it connects to Wayland, whose client
/// library prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment." twice
/// when that variable is unset (over ssh, in containers; Mesa 22.3). The program picks its
/// adapter itself and shows nothing, so the layer is turned off by its own switch,
/// `NODEVICE_SELECT=1`, unless the user set that variable.
#[cfg(not(target_arch = "wasm32"))]
fn quiet_device_select_layer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Once per process, before the first instance (the binary opens its device before it
    // starts any thread).
    ONCE.call_once(|| {
        if std::env::var_os("NODEVICE_SELECT").is_none() {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        _ => 0,
    }
}

impl Gpu {
    /// Creates a device on the best matching adapter, or explains in one line why it can't
    /// (blocks; [`Gpu::new_async`] in a browser page).
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(opts))
    }

    /// [`Gpu::new`] as a future, for a browser page, where nothing may block.
    pub async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        #[cfg(not(target_arch = "wasm32"))]
        quiet_device_select_layer();
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::all();
        let mut desc = desc.with_env();
        if let Some(b) = opts.backend {
            desc.backends = b.backends();
        }
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let mut adapters = instance.enumerate_adapters(backends).await;
        if adapters.is_empty() {
            let which = match opts.backend {
                Some(b) => format!("for backend {b:?}").to_lowercase(),
                None => "on any backend".to_string(),
            };
            return Err(Error::adapter(format!(
                "no GPU adapter found {which}: {NO_ADAPTER_HINT}"
            )));
        }
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        if let Some(w) = &wanted {
            let all: Vec<String> = adapters
                .iter()
                .map(|a| {
                    let i = a.get_info();
                    format!("{} ({:?})", i.name, i.backend).to_lowercase()
                })
                .collect();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&w.to_lowercase()));
            if adapters.is_empty() {
                return Err(Error::adapter(format!(
                    "no adapter name contains '{w}'; available: {}",
                    all.join(", ")
                )));
            }
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            std::cmp::Reverse((type_rank(i.device_type), backend_rank(i.backend)))
        });
        let adapter = adapters.swap_remove(0);
        Self::from_adapter(instance, adapter, opts).await
    }

    async fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        opts: &GpuOptions,
    ) -> Result<Gpu> {
        let info = adapter.get_info();
        let mut wanted = wgpu::Features::empty();
        for (f, _) in OPTIONAL_FEATURES {
            wanted |= f;
        }
        let features = adapter.features() & wanted;
        let limits = opts.limits.limits(&adapter);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-diffusion"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| {
                Error::adapter(format!(
                    "could not open a device on '{}' ({:?}): {e}",
                    info.name, info.backend
                ))
            })?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            lost.lock()
                .unwrap()
                .push(format!("device lost ({reason:?}): {msg}"));
        });
        // `auto` tunes on GPUs only (on lavapipe the tuned kernels were no faster in a step).
        let mode = opts.tune.resolve(info.device_type == wgpu::DeviceType::Cpu);
        let (tune, note) = TuneCache::open(mode, opts.cache_dir.as_deref(), TuneFile::of(&info));
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(Gpu {
            tune,
            perturb: opts.perturb.clone().filter(|p| !p.is_empty()),
            device,
            queue,
            adapter,
            info,
            features,
            limits,
            limits_choice: opts.limits,
            kernels: KernelCache::default(),
            readbacks: Default::default(),
            errors,
            _instance: instance,
        })
    }

    /// Returns the first uncaptured wgpu error since the last call, as an `Error`.
    pub fn check(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            Ok(())
        } else {
            let first = errs.remove(0);
            let more = errs.len();
            errs.clear();
            let tail = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            Err(Error::gpu(format!("GPU error: {first}{tail}")))
        }
    }

    /// Blocks until all submitted work is done, then reports any GPU error.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }

    /// How many times [`Gpu::read`] copied data back to the host on this device (tests use it
    /// to prove that hot loops read nothing back).
    pub fn readbacks(&self) -> u64 {
        self.readbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn has(&self, f: wgpu::Features) -> bool {
        self.features.contains(f)
    }

    /// A one-line description: name, backend, device type.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Whether this adapter is a CPU implementation (lavapipe, llvmpipe, WARP…): kernels pick
    /// variants that suit it.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The most loop iterations one shader invocation may run on this adapter, when it has
    /// such a cap: Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535
    /// iterations in all have run (`LP_MAX_TGSI_LOOP_ITERATIONS`, shared by all its loops),
    /// silently. Ops refuse shapes that would pass it.
    pub fn loop_cap(&self) -> Option<u64> {
        self.info
            .name
            .to_lowercase()
            .contains("llvmpipe")
            .then_some(65_535)
    }

    /// Records `dispatches` into one compute pass and submits it.
    pub fn run(&self, dispatches: &[&crate::gpu::Dispatch]) -> Result<()> {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
        self.check()
    }
}
