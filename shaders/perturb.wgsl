// A test hook, never part of a run: adds PERTURBATION to element 0 of a buffer. The kernel
// table dispatches it after every dispatch of a kernel named in GpuOptions::perturb (the
// program's WGPU_DIFFUSION_PERTURB), on that kernel's first writable buffer, so that tests
// can prove `check` and the tuner notice a wrong kernel.

const PERTURBATION: f32 = 1.0;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(1)
fn perturb() {
    x[0] = x[0] + PERTURBATION;
}
