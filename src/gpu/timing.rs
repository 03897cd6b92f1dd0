//! GPU timing with timestamp queries where the adapter has them (benches and `bench`-style
//! commands), with a wall-clock fallback.

use crate::error::Result;
use crate::gpu::{Dispatch, Gpu};
use web_time::Instant;

/// Seconds per run of `dispatches` (one compute pass), the median over `reps` runs after one
/// warm-up; measured with timestamp queries when available, else wall clock around a wait.
pub fn time_dispatches(gpu: &Gpu, dispatches: &[&Dispatch], reps: usize) -> Result<f64> {
    gpu.run(dispatches)?;
    gpu.wait()?;
    let mut samples = Vec::with_capacity(reps);
    let ts = gpu.has(wgpu::Features::TIMESTAMP_QUERY);
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    let qs = ts.then(|| {
        gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timing-resolve"),
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timed"),
                timestamp_writes: qs.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        if let Some(q) = &qs {
            enc.resolve_query_set(q, 0..2, &resolve, 0);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait()?;
        let wall = start.elapsed().as_secs_f64();
        let secs = if qs.is_some() {
            let t: Vec<u64> = gpu.read(&resolve, 0, 2)?;
            let gpu_secs = t[1].wrapping_sub(t[0]) as f64 * period;
            if gpu_secs > 0.0 && gpu_secs <= wall * 1.5 {
                gpu_secs
            } else {
                wall
            }
        } else {
            wall
        };
        samples.push(secs);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(samples[samples.len() / 2])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PeakParams {
    a: f32,
    b: f32,
    _pad: [u32; 2],
}

/// Measured f32 FMA throughput of the adapter in GFLOP/s (`shaders/peak.wgsl`): the ceiling
/// the benches report kernels against. `threads` sets the size of the probe.
pub fn measure_peak_gflops(gpu: &Gpu, threads: u32) -> Result<f64> {
    const ITERS: u32 = 2048;
    let wg = crate::gpu::kernels::WG_1D;
    let k = gpu.kernel(
        "peak",
        "fma_peak",
        &[("WG", wg as f64), ("ITERS", ITERS as f64)],
    )?;
    let out = crate::gpu::GpuTensor::zeros(gpu, "peak-out", &[threads as usize])?;
    let p = gpu.uniform(
        "peak-params",
        &PeakParams {
            a: 0.999,
            b: 1e-3,
            _pad: [0; 2],
        },
    );
    let d = gpu.dispatch(
        &k,
        &[(0, p.as_entire_binding()), (1, out.bind())],
        gpu.groups_1d(threads as u64, wg)?,
    )?;
    // The fastest of three medians: a probe this short is easily slowed by another process,
    // and every "% of peak" is read against it.
    let mut secs = f64::INFINITY;
    for _ in 0..3 {
        secs = secs.min(time_dispatches(gpu, &[&d], 3)?);
    }
    Ok(threads as f64 * ITERS as f64 * 16.0 / secs / 1e9)
}
