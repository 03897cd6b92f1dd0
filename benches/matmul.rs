//! The GEMM kernel versions (v1 naive, v2 tiled, v3 register) and the bias gradient at the
//! model's shapes: each version is validated against v1 (v1 against f64 dot products on sampled
//! outputs) on the bench shape, then timed; median ms, GFLOP/s, ratio to the plain-loop CPU
//! reference (1 thread) and to the fastest version.
//!
//! `cargo bench --bench matmul [-- --quick] [--sweep] [--tune]`
//!   On a real GPU: the seed preset's shapes, M = 2500 rows (500 samples x 5 tokens), D = 324,
//!   3HK = 6000, HK = 2000: QKV and output projection, forward and backward.
//!   On a CPU adapter (lavapipe): the same N and K with M = 100 rows, so it ends in about a
//!   minute. `--quick`: one small shape. `--sweep`: also time other register/tiled blockings.
//!   `--tune`: instead, the tuner's trials per shape (each candidate checked, then timed) and
//!   its choice, with the seconds the tuning took.

use std::time::Instant;
use wgpu_diffusion::gpu::timing::time_dispatches;
use wgpu_diffusion::gpu::{Elem, Gpu, GpuOptions, GpuTensor};
use wgpu_diffusion::ops::matmul::{
    self, Gemm, MatmulKernel, RegisterBlocking, TiledBlocking, Tuning,
};
use wgpu_diffusion::ops::tune;
use wgpu_diffusion::reference::matmul as reference;
use wgpu_diffusion::testing::{compare, f16_tolerance, round_f16, uniform_data};

struct Case {
    name: &'static str,
    spec: Gemm,
    bias: bool,
}

fn cases(m: usize, quick: bool) -> Vec<Case> {
    let (d, qkv, hk) = (324, 6000, 2000);
    let g = |m, n, k, trans_a, trans_b| Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        accumulate: false,
    };
    if quick {
        return vec![Case {
            name: "qkv fwd (small)",
            spec: g(m, 600, d, false, false),
            bias: true,
        }];
    }
    vec![
        Case {
            name: "qkv fwd X·W+b",
            spec: g(m, qkv, d, false, false),
            bias: true,
        },
        Case {
            name: "proj fwd O·W+b",
            spec: g(m, d, hk, false, false),
            bias: true,
        },
        Case {
            name: "proj dO=dY·Wᵀ",
            spec: g(m, hk, d, false, true),
            bias: false,
        },
        Case {
            name: "proj dW=Oᵀ·dY",
            spec: g(hk, d, m, true, false),
            bias: false,
        },
        Case {
            name: "qkv dX=dQ·Wᵀ",
            spec: g(m, d, qkv, false, true),
            bias: false,
        },
        Case {
            name: "qkv dW=Xᵀ·dQ",
            spec: g(d, qkv, m, true, false),
            bias: false,
        },
    ]
}

struct Buffers {
    a: GpuTensor,
    b: GpuTensor,
    bias: GpuTensor,
    c: GpuTensor,
    host_a: Vec<f32>,
    host_b: Vec<f32>,
    host_bias: Vec<f32>,
}

/// The operands stored as `elem` (for f16 the host copies hold the f16 values).
fn buffers(gpu: &Gpu, s: &Gemm, elem: Elem) -> Buffers {
    let values = |n, seed| match elem {
        Elem::F32 => uniform_data(n, seed),
        Elem::F16 => round_f16(&uniform_data(n, seed)),
    };
    let host_a = values(s.m * s.k, 1);
    let host_b = values(s.k * s.n, 2);
    let host_bias = values(s.n, 3);
    let up = |l: &str, v: &[f32]| GpuTensor::from_values(gpu, l, &[v.len()], v, elem).unwrap();
    Buffers {
        a: up("A", &host_a),
        b: up("B", &host_b),
        bias: up("bias", &host_bias),
        c: GpuTensor::zeros_of(gpu, "C", &[s.m, s.n], elem).unwrap(),
        host_a,
        host_b,
        host_bias,
    }
}

/// v1 against f64 dot products on ~2000 sampled outputs (the full reference is too slow at
/// the GPU shapes).
fn check_sampled(s: &Gemm, buf: &Buffers, with_bias: bool, got: &[f32]) -> Result<(), String> {
    let samples = 2000.min(s.m * s.n);
    let mut want = Vec::with_capacity(samples);
    let mut have = Vec::with_capacity(samples);
    let (a, b) = (&buf.host_a, &buf.host_b);
    for t in 0..samples {
        let idx = (t as u64 * 2_654_435_761 % (s.m * s.n) as u64) as usize;
        let (i, j) = (idx / s.n, idx % s.n);
        let mut acc = 0.0f64;
        for p in 0..s.k {
            let x = if s.trans_a {
                a[p * s.m + i]
            } else {
                a[i * s.k + p]
            };
            let y = if s.trans_b {
                b[j * s.k + p]
            } else {
                b[p * s.n + j]
            };
            acc += x as f64 * y as f64;
        }
        if with_bias {
            acc += buf.host_bias[j] as f64;
        }
        want.push(acc as f32);
        have.push(got[idx]);
    }
    let (abs, rel) = (1e-6 * (s.k as f32 + 1.0), 1e-5);
    let (abs, rel) = match buf.c.elem {
        Elem::F32 => (abs, rel),
        Elem::F16 => f16_tolerance(abs, rel),
    };
    compare("vs f64", &have, &want, abs, rel)
}

/// GFLOP/s of the plain-loop CPU reference on this case's N and K (fewer rows if large).
fn cpu_gflops(s: &Gemm) -> f64 {
    let rows = ((2e8 / matmul::flops(1, s.k, s.n)) as usize).clamp(1, s.m);
    let a = uniform_data(rows * s.k, 4);
    let b = uniform_data(s.k * s.n, 5);
    let t = Instant::now();
    let c = reference::gemm(&a, &b, rows, s.n, s.k, s.trans_a, s.trans_b);
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(c);
    matmul::flops(rows, s.k, s.n) / secs / 1e9
}

struct Row {
    label: String,
    check: String,
    secs: f64,
}

fn time_kernel(
    gpu: &Gpu,
    kernel: MatmulKernel,
    tuning: &Tuning,
    case: &Case,
    buf: &Buffers,
    oracle: Option<&[f32]>,
    reps: usize,
) -> Option<(Row, Vec<f32>)> {
    let s = &case.spec;
    let bias = case.bias.then_some(&buf.bias);
    let d = match matmul::gemm_with(gpu, kernel, tuning, *s, &buf.a, &buf.b, bias, &buf.c) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{} {kernel} skipped: {e}", case.name);
            return None;
        }
    };
    // Validate before timing.
    buf.c.write_values(gpu, &vec![f32::NAN; s.m * s.n]);
    gpu.run(&[&d]).unwrap();
    let got = buf.c.read_values(gpu).unwrap();
    let checked = match oracle {
        Some(want) => compare("vs naive", &got, want, 1e-6 * (s.k as f32 + 1.0), 1e-5),
        None => check_sampled(s, buf, case.bias, &got),
    };
    let check = match checked {
        Ok(()) => "OK".to_string(),
        Err(e) => {
            eprintln!("{} {kernel}: {e}", case.name);
            "FAIL".to_string()
        }
    };
    let secs = time_dispatches(gpu, &[&d], reps).unwrap();
    let entry = d.kernel.label.trim_start_matches("matmul::").to_string();
    Some((
        Row {
            label: entry,
            check,
            secs,
        },
        got,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: one bench, nothing to list
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sweep = args.iter().any(|a| a == "--sweep");
    let gpu = Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let cpu = gpu.is_cpu();
    let m = match (cpu, quick) {
        (true, true) => 100,
        (true, false) => 100,
        (false, true) => 500,
        (false, false) => 2500,
    };
    // Slow versions get one timed run on a CPU adapter.
    let reps = |k: MatmulKernel| match (cpu, k) {
        (true, MatmulKernel::Register | MatmulKernel::Subgroup) => 5,
        (true, _) => 1,
        (false, _) => 20,
    };
    println!("adapter: {}", gpu.describe());
    println!(
        "auto kernel: {}; blockings: naive {w}x{w}, tiled {:?}, register {:?}",
        MatmulKernel::auto(&gpu),
        matmul::TILED,
        matmul::REGISTER,
        w = matmul::NAIVE_WG,
    );
    println!(
        "{} rows{}",
        m,
        if cpu {
            " (reduced for a CPU adapter; the model's batch has 2500)"
        } else {
            ""
        }
    );
    println!(
        "{:<16} {:>5} {:>5} {:>5}  {:<17} {:<5} {:>10} {:>9} {:>8} {:>8}",
        "case", "M", "N", "K", "kernel", "check", "median ms", "GFLOP/s", "vs CPU", "vs best"
    );
    if args.iter().any(|a| a == "--tune") {
        for case in cases(m, quick) {
            print_tuning(&gpu, case.name, &case.spec);
        }
        return;
    }
    // Every version this adapter runs with the default blocking (the subgroup kernel needs
    // subgroups no wider than its lanes).
    let kernels: Vec<MatmulKernel> = MatmulKernel::ALL
        .into_iter()
        .filter(|k| k.supports(&gpu, &Tuning::DEFAULT).is_ok())
        .collect();
    // f32's rows per kernel, then f16's (when the adapter has shader-f16).
    let mut totals = vec![0.0f64; 2 * kernels.len()];
    let mut total_flops = 0.0;
    let mut all_ok = true;
    for case in cases(m, quick) {
        let s = &case.spec;
        let buf = buffers(&gpu, s, Elem::F32);
        let cpu_rate = cpu_gflops(s);
        let mut rows = Vec::new();
        let mut oracle: Option<Vec<f32>> = None;
        for &kernel in &kernels {
            let Some((row, got)) = time_kernel(
                &gpu,
                kernel,
                &Tuning::DEFAULT,
                &case,
                &buf,
                oracle.as_deref(),
                reps(kernel),
            ) else {
                std::process::exit(1)
            };
            if oracle.is_none() {
                oracle = Some(got);
            }
            rows.push(row);
        }
        // The same kernels on f16 operands (sums in f32), checked on sampled outputs.
        if gpu.check_elem(Elem::F16).is_ok() {
            let buf16 = buffers(&gpu, s, Elem::F16);
            for &kernel in &kernels {
                let t = &Tuning::DEFAULT;
                if let Some((row, _)) =
                    time_kernel(&gpu, kernel, t, &case, &buf16, None, reps(kernel))
                {
                    rows.push(row);
                }
            }
        }
        if sweep {
            for tuning in sweep_tunings() {
                for kernel in [MatmulKernel::Tiled, MatmulKernel::Register] {
                    if (kernel == MatmulKernel::Tiled) != (tuning.tiled != matmul::TILED) {
                        continue;
                    }
                    let Some((mut row, _)) = time_kernel(
                        &gpu,
                        kernel,
                        &tuning,
                        &case,
                        &buf,
                        oracle.as_deref(),
                        reps(kernel),
                    ) else {
                        continue;
                    };
                    row.label = match kernel {
                        MatmulKernel::Tiled => {
                            let t = tuning.tiled;
                            format!(
                                " {}x{}x{}/{}x{}",
                                t.tile_m, t.tile_n, t.tile_k, t.thread_m, t.thread_n
                            )
                        }
                        _ => {
                            let r = tuning.register;
                            format!(" {}x{}x{}", r.rows, r.cols, r.lanes)
                        }
                    };
                    rows.push(row);
                }
            }
        }
        let best = rows.iter().map(|r| r.secs).fold(f64::INFINITY, f64::min);
        total_flops += s.flops();
        for (i, r) in rows.iter().enumerate() {
            if i < totals.len() {
                totals[i] += r.secs;
            }
            all_ok &= r.check == "OK";
            let rate = s.flops() / r.secs / 1e9;
            println!(
                "{:<16} {:>5} {:>5} {:>5}  {:<17} {:<5} {:>10.3} {:>9.2} {:>7.1}x {:>7.2}x",
                case.name,
                s.m,
                s.n,
                s.k,
                r.label,
                r.check,
                r.secs * 1e3,
                rate,
                rate / cpu_rate,
                r.secs / best
            );
        }
        println!(
            "{:<16} {:>5} {:>5} {:>5}  {:<17} {:<5} {:>10} {:>9.2}",
            "", "", "", "", "CPU reference", "", "", cpu_rate
        );
    }
    println!("all cases, default blockings:");
    let precisions = kernels
        .iter()
        .map(|_| "f32")
        .chain(kernels.iter().map(|_| "f16"));
    let names = kernels.iter().chain(&kernels);
    for ((k, p), t) in names.zip(precisions).zip(&totals) {
        if *t > 0.0 {
            println!(
                "  {:<9} {p} {:10.3} ms  {:8.2} GFLOP/s",
                k.name(),
                t * 1e3,
                total_flops / t / 1e9
            );
        }
    }

    // Bias gradients of the two layers.
    for n in [6000, 324] {
        let dy = GpuTensor::from_slice(&gpu, "dy", &[m, n], &uniform_data(m * n, 6)).unwrap();
        let db = GpuTensor::zeros(&gpu, "db", &[n]).unwrap();
        let d = matmul::colsum(&gpu, &dy, &db, m, n, false).unwrap();
        gpu.run(&[&d]).unwrap();
        let want = reference::colsum(&dy.read::<f32>(&gpu).unwrap(), m, n);
        let ok = compare(
            "colsum",
            &db.read::<f32>(&gpu).unwrap(),
            &want,
            1e-6 * m as f32,
            1e-5,
        );
        all_ok &= ok.is_ok();
        let secs = time_dispatches(&gpu, &[&d], if cpu { 5 } else { 20 }).unwrap();
        println!(
            "colsum {m}x{n}: {} {:9.3} ms  {:8.2} GB/s",
            if ok.is_ok() { "OK" } else { "FAIL" },
            secs * 1e3,
            (m * n * 4) as f64 / secs / 1e9
        );
    }
    if !all_ok {
        eprintln!("some kernels FAILED validation");
        std::process::exit(1);
    }
}

/// The tuner's trials on `spec` and its choice.
fn print_tuning(gpu: &Gpu, name: &str, spec: &Gemm) {
    let t = tune::tune(gpu, spec).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    println!(
        "{name}: {} tuned in {:.1} s, chose {}",
        t.key,
        t.secs,
        t.choice.name()
    );
    for trial in &t.trials {
        let err = trial.max_err.map_or("-".into(), |e| format!("{e:.1e}"));
        let note = trial.note.as_deref().unwrap_or("");
        match (trial.secs, trial.gflops) {
            (Some(secs), Some(g)) => println!(
                "  {:<22} {:>10.3} ms {:>8.2} GFLOP/s  max err {err}",
                trial.name,
                secs * 1e3,
                g
            ),
            _ => println!("  {:<22} FAILED  max err {err}  {note}", trial.name),
        }
    }
}

/// Other blockings for `--sweep` (each differs from the defaults in one kernel's blocking).
fn sweep_tunings() -> Vec<Tuning> {
    let reg = |rows, cols, lanes| Tuning {
        register: RegisterBlocking { rows, cols, lanes },
        ..Tuning::DEFAULT
    };
    let tiled = |tile_m, tile_n, tile_k, thread_m, thread_n| Tuning {
        tiled: TiledBlocking {
            tile_m,
            tile_n,
            tile_k,
            thread_m,
            thread_n,
        },
        ..Tuning::DEFAULT
    };
    let mut v = vec![
        reg(4, 4, 8),
        reg(8, 4, 8),
        reg(4, 8, 8),
        reg(16, 4, 8),
        reg(8, 8, 4),
        reg(8, 8, 16),
        reg(8, 8, 64),
        tiled(128, 128, 8, 8, 8),
        tiled(64, 64, 8, 4, 4),
        tiled(32, 32, 16, 2, 2),
    ];
    v.retain(|t| *t != Tuning::DEFAULT);
    v
}
