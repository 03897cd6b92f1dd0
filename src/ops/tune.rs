//! The GEMM tuner: for each shape a run uses, time the candidate kernels (version x blocking)
//! on this adapter, check each against the naive kernel (the oracle) on the same inputs, and
//! keep the fastest correct one in the adapter's cache ([`crate::gpu::tune`]).
//!
//! Candidates are listed per adapter type: on CPU adapters the register and subgroup
//! kernels' blockings (and the tiled kernel, to be sure), on GPUs the tiled kernel's 2D block
//! tilings (64x64 and larger tiles, 4x4 and 8x8 outputs per thread), the register and the
//! subgroup kernels. A shape is keyed by its sizes and transposes (`gemm 128x64x36 ·Bᵀ`);
//! bias and accumulation only touch the epilogue and share the choice.

use crate::error::{Error, Result};
use crate::gpu::timing::time_dispatches;
use crate::gpu::{Gpu, GpuTensor, TuneMode};
use crate::math::verify::{compare, uniform_data};
use crate::ops::gemm::{
    gemm_with, Gemm, MatmulKernel, RegisterBlocking, TiledBlocking, Tuning, KERNEL_ENV,
};
use web_time::Instant;

/// Timed runs per candidate after a warm-up (the median is kept), and the work each run
/// should reach (it repeats the dispatch up to [`MAX_REPEATS`] times to get there).
const TIMED_RUNS: usize = 2;
const MIN_FLOPS_PER_RUN: f64 = 5e7;
const MAX_REPEATS: usize = 16;

/// One kernel version with its blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub kernel: MatmulKernel,
    pub tuning: Tuning,
}

impl Candidate {
    const fn register(rows: u32, cols: u32, lanes: u32) -> Candidate {
        let mut tuning = Tuning::DEFAULT;
        tuning.register = RegisterBlocking { rows, cols, lanes };
        Candidate {
            kernel: MatmulKernel::Register,
            tuning,
        }
    }

    const fn subgroup(rows: u32, cols: u32, lanes: u32) -> Candidate {
        let mut c = Candidate::register(rows, cols, lanes);
        c.kernel = MatmulKernel::Subgroup;
        c
    }

    const fn tiled(tile_m: u32, tile_n: u32, tile_k: u32, thread_m: u32, thread_n: u32) -> Self {
        let mut tuning = Tuning::DEFAULT;
        tuning.tiled = TiledBlocking {
            tile_m,
            tile_n,
            tile_k,
            thread_m,
            thread_n,
        };
        Candidate {
            kernel: MatmulKernel::Tiled,
            tuning,
        }
    }

    /// The name in the cache and in reports: `register 8x8x8` (rows x cols x lanes), `tiled
    /// 64x64x16/4x4` (tile M x N x K / outputs per thread), `naive 16`.
    pub fn name(&self) -> String {
        let t = &self.tuning;
        match self.kernel {
            MatmulKernel::Naive => format!("naive {}", t.naive_wg),
            MatmulKernel::Tiled => {
                let b = &t.tiled;
                format!(
                    "tiled {}x{}x{}/{}x{}",
                    b.tile_m, b.tile_n, b.tile_k, b.thread_m, b.thread_n
                )
            }
            MatmulKernel::Register | MatmulKernel::Subgroup => {
                let b = &t.register;
                format!("{} {}x{}x{}", self.kernel, b.rows, b.cols, b.lanes)
            }
        }
    }
}

/// Candidates on CPU adapters: 8x8x8 is the best single blocking measured on lavapipe; the
/// others win on some shapes (narrow N, few rows). The subgroup kernels run where the adapter
/// has subgroups (lavapipe's are 8 lanes wide).
const CPU_CANDIDATES: [Candidate; 9] = [
    Candidate::register(8, 8, 8),
    Candidate::register(4, 8, 8),
    Candidate::register(8, 4, 8),
    Candidate::register(8, 8, 16),
    Candidate::tiled(64, 64, 16, 4, 4),
    Candidate::subgroup(8, 8, 8),
    Candidate::subgroup(16, 4, 8),
    Candidate::subgroup(12, 4, 8),
    Candidate::subgroup(8, 4, 8),
];

/// Candidates on GPUs: 2D block tiling in workgroup memory with register tiles of 4x4 and
/// 8x8 outputs per thread (64 to 256 threads), the register kernel, and the subgroup kernel
/// with 64 lanes (a multiple of every common subgroup size up to 64).
const GPU_CANDIDATES: [Candidate; 9] = [
    Candidate::tiled(64, 64, 16, 4, 4),
    Candidate::tiled(64, 64, 8, 8, 8),
    Candidate::tiled(128, 64, 8, 8, 8),
    Candidate::tiled(128, 128, 8, 8, 8),
    Candidate::tiled(32, 32, 16, 2, 2),
    Candidate::register(8, 8, 8),
    Candidate::register(4, 4, 64),
    Candidate::subgroup(8, 8, 64),
    Candidate::subgroup(4, 8, 64),
];

/// The candidates timed on this adapter: its type's list, less those it cannot run (the
/// subgroup kernels without subgroups, or with subgroups wider than their lanes).
pub fn candidates(gpu: &Gpu) -> Vec<Candidate> {
    let list: &[Candidate] = if gpu.is_cpu() {
        &CPU_CANDIDATES
    } else {
        &GPU_CANDIDATES
    };
    list.iter()
        .copied()
        .filter(|c| c.kernel.supports(gpu, &c.tuning).is_ok())
        .collect()
}

/// The built-in choice (no timing), [`MatmulKernel::auto`]: on CPU adapters the subgroup
/// kernel where the default blocking fits their subgroups, else the register kernel; tiled on
/// GPUs.
pub fn builtin(gpu: &Gpu) -> Candidate {
    Candidate {
        kernel: MatmulKernel::auto(gpu),
        tuning: Tuning::DEFAULT,
    }
}

/// The cache key of `spec`'s shape.
pub fn key(spec: &Gemm) -> String {
    format!(
        "gemm {}x{}x{} {}·{}",
        spec.m,
        spec.n,
        spec.k,
        if spec.trans_a { "Aᵀ" } else { "A" },
        if spec.trans_b { "Bᵀ" } else { "B" }
    )
}

/// The kernel for `spec`: the one [`KERNEL_ENV`] forces, else the built-in one (`--tune off`),
/// else the cached choice, else the winner of [`tune`] (then cached).
pub fn choose(gpu: &Gpu, spec: &Gemm) -> Result<Candidate> {
    let c = choice(gpu, spec)?;
    gpu.tune.note_use(&key(spec), &c.name());
    Ok(c)
}

fn choice(gpu: &Gpu, spec: &Gemm) -> Result<Candidate> {
    let forced = std::env::var(KERNEL_ENV).is_ok_and(|v| !v.is_empty());
    if forced || gpu.tune.mode == TuneMode::Off {
        return Ok(builtin(gpu));
    }
    let key = key(spec);
    let cached = gpu
        .tune
        .get(&key)
        .and_then(|name| candidates(gpu).into_iter().find(|c| c.name() == name));
    if let Some(c) = cached {
        return Ok(c);
    }
    announce_once(gpu);
    let tuned = tune(gpu, spec)?;
    if let Err(e) = gpu.tune.put(&key, &tuned.choice.name()) {
        // The choice still holds for this run; only the next one pays again.
        eprintln!("note: the kernel choice is not kept: {e}");
    }
    Ok(tuned.choice)
}

fn announce_once(gpu: &Gpu) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let place = match &gpu.tune.path {
            Some(p) => format!("kept in {}", p.display()),
            None => "not kept: no cache folder".to_string(),
        };
        eprintln!("note: timing the matrix kernels for shapes new to this adapter ({place})");
    });
}

/// How one candidate did on a shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Trial {
    pub name: String,
    /// Median seconds per GEMM, when it ran.
    pub secs: Option<f64>,
    pub gflops: Option<f64>,
    /// Largest |candidate - naive| over the output.
    pub max_err: Option<f32>,
    /// Ran and matched the oracle.
    pub ok: bool,
    /// Why it did not run or did not match.
    pub note: Option<String>,
}

/// The outcome of timing one shape.
#[derive(Clone, Debug)]
pub struct Tuned {
    pub key: String,
    pub choice: Candidate,
    pub trials: Vec<Trial>,
    /// Seconds the whole tuning of this shape took (compiles included).
    pub secs: f64,
}

/// Times every candidate on `spec` (on scratch buffers; bias and accumulation off) and picks
/// the fastest one that matched the naive kernel. Errors only when none did.
///
/// Correctness is checked on [`check_shape`] (the same K, transposes and alignment, M and N
/// cut to at most two tiles), so that the slow oracle does not cost more than the timing.
pub fn tune(gpu: &Gpu, spec: &Gemm) -> Result<Tuned> {
    let start = Instant::now();
    let spec = Gemm {
        accumulate: false,
        ..*spec
    };
    let (small, timed) = (check_shape(&spec), time_shape(gpu, &spec));
    let (io, io_small) = (Scratch::new(gpu, &timed)?, Scratch::new(gpu, &small)?);
    let oracle = io_small.run(gpu, &Candidate::naive(), &small)?;
    let list = candidates(gpu);
    let trials: Vec<Trial> = list
        .iter()
        .map(|c| trial(gpu, c, (&io_small, &small, &oracle), (&io, &timed)))
        .collect();
    let best = trials
        .iter()
        .zip(&list)
        .filter(|(t, _)| t.ok)
        .min_by(|(a, _), (b, _)| a.secs.partial_cmp(&b.secs).unwrap());
    let Some((_, choice)) = best else {
        let why: Vec<String> = trials
            .iter()
            .map(|t| format!("{}: {}", t.name, t.note.clone().unwrap_or_default()))
            .collect();
        return Err(Error::gpu(format!(
            "{}: no matrix kernel candidate ran correctly on this adapter ({})",
            key(&spec),
            why.join("; ")
        )));
    };
    Ok(Tuned {
        key: key(&spec),
        choice: *choice,
        trials,
        secs: start.elapsed().as_secs_f64(),
    })
}

impl Candidate {
    fn naive() -> Candidate {
        Candidate {
            kernel: MatmulKernel::Naive,
            tuning: Tuning::DEFAULT,
        }
    }
}

/// Tolerance against the oracle: |err| <= abs + rel |naive|, abs growing with K.
pub fn tolerance(k: usize) -> (f32, f32) {
    (4e-6 * (k as f32 + 1.0), 1e-5)
}

/// The shape a candidate is checked on for `spec`: the same K and transposes; M and N kept
/// below 2 x [`CHECK_SIDE`] with their remainders mod 4 (which decide the vec4 loads).
pub fn check_shape(spec: &Gemm) -> Gemm {
    let cut = |x: usize| {
        if x > 2 * CHECK_SIDE {
            CHECK_SIDE + 4 + x % 4
        } else {
            x
        }
    };
    Gemm {
        m: cut(spec.m),
        n: cut(spec.n),
        ..*spec
    }
}

/// The shape the candidates are timed on: `spec` itself, except on CPU adapters, where M and
/// N are halved (keeping their remainders mod 4) until one GEMM is at most [`CPU_TIME_FLOPS`]:
/// there the kernels' ranking holds at that size, and timing the full shapes of the seed
/// preset took 101 s on the first run.
pub fn time_shape(gpu: &Gpu, spec: &Gemm) -> Gemm {
    let mut s = *spec;
    let half = |x: usize| (x / 2 - (x / 2) % 4 + x % 4).max(1);
    while gpu.is_cpu() && s.flops() > CPU_TIME_FLOPS && (s.m > 64 || s.n > 64) {
        if s.m >= s.n {
            s.m = half(s.m);
        } else {
            s.n = half(s.n);
        }
    }
    s
}

/// Work of one timed GEMM on CPU adapters (about 0.1 s at lavapipe's 10 GFLOP/s).
const CPU_TIME_FLOPS: f64 = 1e9;

/// Rows and columns past which [`check_shape`] cuts a side: at least a 128-wide tile and a
/// partial one.
const CHECK_SIDE: usize = 160;

/// Checks candidate `c` on the small shape against the oracle's output, then times it on the
/// full shape.
fn trial(
    gpu: &Gpu,
    c: &Candidate,
    (io_small, small, oracle): (&Scratch, &Gemm, &[f32]),
    (io, spec): (&Scratch, &Gemm),
) -> Trial {
    let mut t = Trial {
        name: c.name(),
        secs: None,
        gflops: None,
        max_err: None,
        ok: false,
        note: None,
    };
    let got = match io_small.run(gpu, c, small) {
        Ok(v) => v,
        Err(e) => {
            t.note = Some(e.to_string());
            return t;
        }
    };
    let err = got
        .iter()
        .zip(oracle)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    t.max_err = Some(err);
    let (abs, rel) = tolerance(spec.k);
    if let Err(e) = compare(&t.name, &got, oracle, abs, rel) {
        t.note = Some(e);
        return t;
    }
    match io.time(gpu, c, spec) {
        Ok(secs) => {
            t.secs = Some(secs);
            t.gflops = Some(spec.flops() / secs / 1e9);
            t.ok = true;
        }
        Err(e) => t.note = Some(e.to_string()),
    }
    t
}

/// Inputs and output of the shape being tuned (random data, never the run's own buffers).
struct Scratch {
    a: GpuTensor,
    b: GpuTensor,
    c: GpuTensor,
}

impl Scratch {
    fn new(gpu: &Gpu, spec: &Gemm) -> Result<Scratch> {
        let Gemm { m, n, k, .. } = *spec;
        let seed = (m * 1_000_003 + n * 1009 + k) as u64;
        Ok(Scratch {
            a: GpuTensor::from_slice(gpu, "tune-a", &[m * k], &uniform_data(m * k, seed))?,
            b: GpuTensor::from_slice(gpu, "tune-b", &[k * n], &uniform_data(k * n, seed + 1))?,
            c: GpuTensor::zeros(gpu, "tune-c", &[m * n])?,
        })
    }

    /// C with candidate `c`, read back.
    fn run(&self, gpu: &Gpu, c: &Candidate, spec: &Gemm) -> Result<Vec<f32>> {
        let d = gemm_with(
            gpu, c.kernel, &c.tuning, *spec, &self.a, &self.b, None, &self.c,
        )?;
        gpu.run(&[&d])?;
        self.c.read::<f32>(gpu)
    }

    /// Median seconds per GEMM with candidate `c`.
    fn time(&self, gpu: &Gpu, c: &Candidate, spec: &Gemm) -> Result<f64> {
        let d = gemm_with(
            gpu, c.kernel, &c.tuning, *spec, &self.a, &self.b, None, &self.c,
        )?;
        let repeats = ((MIN_FLOPS_PER_RUN / spec.flops()).ceil() as usize).clamp(1, MAX_REPEATS);
        let run: Vec<_> = std::iter::repeat_n(&d, repeats).collect();
        Ok(time_dispatches(gpu, &run, TIMED_RUNS)? / repeats as f64)
    }
}
