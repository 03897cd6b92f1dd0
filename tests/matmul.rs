//! The GEMM kernels (naive, tiled, register, subgroup; scalar and vec4 loads) and the bias gradient
//! against the CPU reference: every version x transposes x bias/accumulate on small, odd and
//! larger-than-a-tile shapes; the dense layer's forward and backward; views at nonzero offsets;
//! row tiles spilling into z; other block sizes; and the errors for bad arguments.

mod common;

use wgpu_diffusion::gpu::{Elem, Gpu, GpuTensor};
use wgpu_diffusion::ops::matmul::{
    self, Gemm, MatmulKernel, RegisterBlocking, TiledBlocking, Tuning,
};
use wgpu_diffusion::reference::matmul as reference;
use wgpu_diffusion::testing::{assert_close, f16_tolerance, round_f16, uniform_data};

/// (M, N, K): tiny, odd, one tile, larger than a tile in every dimension, M and N prime with K
/// not a multiple of 4, multiples of 4 (the vec4 path) past a tile, and multiples of 4 with an
/// odd K (the vec4 path's K tail when only Aᵀ·B is aligned).
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (3, 5, 7),
    (4, 4, 4),
    (64, 64, 64),
    (67, 129, 33),
    (37, 41, 13),
    (68, 132, 36),
    (72, 76, 67),
];

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// |err| <= abs + rel |want|, with abs growing with the length of the dot products.
fn tol(k: usize) -> (f32, f32) {
    (1e-6 * (k as f32 + 1.0), 1e-5)
}

fn upload(gpu: &Gpu, label: &str, data: &[f32], elem: Elem) -> GpuTensor {
    GpuTensor::from_values(gpu, label, &[data.len()], data, elem).unwrap()
}

/// Reference for C = op(A)·op(B) (+ bias) (+ c0 if accumulating).
fn want(spec: &Gemm, a: &[f32], b: &[f32], bias: Option<&[f32]>, c0: &[f32]) -> Vec<f32> {
    let mut c = reference::gemm(a, b, spec.m, spec.n, spec.k, spec.trans_a, spec.trans_b);
    for (idx, v) in c.iter_mut().enumerate() {
        if let Some(bias) = bias {
            *v += bias[idx % spec.n];
        }
        if spec.accumulate {
            *v += c0[idx];
        }
    }
    c
}

fn check_gemm(gpu: &Gpu, kernel: MatmulKernel, tuning: &Tuning, spec: Gemm, with_bias: bool) {
    check_gemm_of(gpu, kernel, tuning, spec, with_bias, Elem::F32);
}

/// [`check_gemm`] with every operand stored as `elem`. In f16 the inputs are f16 values (the
/// reference gets the same ones) and the kernel sums in f32: its result is f32's rounded once,
/// held to f32's tolerance plus one f16 rounding (`f16_tolerance`).
fn check_gemm_of(
    gpu: &Gpu,
    kernel: MatmulKernel,
    tuning: &Tuning,
    spec: Gemm,
    with_bias: bool,
    elem: Elem,
) {
    let Gemm { m, n, k, .. } = spec;
    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
    let inputs = |len, seed| match elem {
        Elem::F32 => uniform_data(len, seed),
        Elem::F16 => round_f16(&uniform_data(len, seed)),
    };
    let a = inputs(m * k, seed);
    let b = inputs(k * n, seed + 1);
    let bias = inputs(n, seed + 2);
    let c0 = inputs(m * n, seed + 3);
    let ta = upload(gpu, "A", &a, elem);
    let tb = upload(gpu, "B", &b, elem);
    let tbias = upload(gpu, "bias", &bias, elem);
    let tc = upload(gpu, "C", &c0, elem);
    let d = matmul::gemm_with(
        gpu,
        kernel,
        tuning,
        spec,
        &ta,
        &tb,
        with_bias.then_some(&tbias),
        &tc,
    )
    .unwrap();
    gpu.run(&[&d]).unwrap();
    let got = tc.read_values(gpu).unwrap();
    let want = want(&spec, &a, &b, with_bias.then_some(&bias[..]), &c0);
    let (abs, rel) = match elem {
        Elem::F32 => tol(k),
        Elem::F16 => f16_tolerance(tol(k).0, tol(k).1),
    };
    assert_close(
        &format!(
            "{kernel} (entry {}) {m}x{n}x{k} trans_a={} trans_b={} bias={with_bias} accumulate={} {tuning:?}",
            d.kernel.label, spec.trans_a, spec.trans_b, spec.accumulate
        ),
        &got,
        &want,
        abs,
        rel,
    );
}

fn every_case(kernel: MatmulKernel) {
    every_case_with(&common::gpu(), kernel, &Tuning::DEFAULT);
}

fn every_case_with(gpu: &Gpu, kernel: MatmulKernel, tuning: &Tuning) {
    for (m, n, k) in SHAPES {
        for (trans_a, trans_b) in TRANSPOSES {
            for (with_bias, accumulate) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let spec = Gemm {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    accumulate,
                };
                check_gemm(gpu, kernel, tuning, spec, with_bias);
            }
        }
    }
}

/// Odd, past-a-tile, aligned (vec4 loads) and aligned-with-odd-K shapes of [`SHAPES`].
const F16_SHAPES: [(usize, usize, usize); 4] =
    [(3, 5, 7), (67, 129, 33), (68, 132, 36), (72, 76, 67)];

/// Every kernel (the subgroup one where the adapter has subgroups) with f16 operands on
/// [`F16_SHAPES`], every transpose, with and without the epilogue. Mutation: summing in f16 in the naive kernel
/// (`var s: elem = 0.0;` and `s = fma(elem(..), elem(..), s)`) fails it at K = 7.
#[test]
fn f16_kernels_match_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    let mut kernels = vec![
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Register,
    ];
    if gpu.features.contains(wgpu::Features::SUBGROUP) {
        kernels.push(MatmulKernel::Subgroup);
    }
    for kernel in kernels {
        let tuning = match kernel {
            MatmulKernel::Subgroup => {
                subgroup_tuning(&gpu, matmul::REGISTER.rows, matmul::REGISTER.cols, 1)
            }
            _ => Tuning::DEFAULT,
        };
        for (m, n, k) in F16_SHAPES {
            for (trans_a, trans_b) in TRANSPOSES {
                for epilogue in [false, true] {
                    let spec = Gemm {
                        m,
                        n,
                        k,
                        trans_a,
                        trans_b,
                        accumulate: epilogue,
                    };
                    check_gemm_of(&gpu, kernel, &tuning, spec, epilogue, Elem::F16);
                }
            }
        }
    }
}

#[test]
fn naive_matches_reference() {
    every_case(MatmulKernel::Naive);
}

#[test]
fn tiled_matches_reference() {
    every_case(MatmulKernel::Tiled);
}

#[test]
fn register_matches_reference() {
    every_case(MatmulKernel::Register);
}

/// The register blocking `rows x cols` with the fewest lanes the subgroup kernel accepts here
/// (a multiple of the adapter's largest subgroup, at least 8), times `times`.
fn subgroup_tuning(gpu: &Gpu, rows: u32, cols: u32, times: u32) -> Tuning {
    let lanes = gpu.info.subgroup_max_size.max(8) * times;
    Tuning {
        register: RegisterBlocking { rows, cols, lanes },
        ..Tuning::DEFAULT
    }
}

/// The subgroup kernel on every shape, transpose and epilogue, with the default rows x cols,
/// then with other blockings (fewer and more rows, one vec4 of columns, two subgroups per
/// workgroup), and with row tiles spilling into z. Adapters without subgroups refuse it with
/// a clear error (lavapipe has them: 8 lanes).
#[test]
fn subgroup_matches_reference() {
    let gpu = common::gpu();
    if !gpu.features.contains(wgpu::Features::SUBGROUP) {
        let r = MatmulKernel::Subgroup.supports(&gpu, &Tuning::DEFAULT);
        let e = r.expect_err("no subgroups, yet the subgroup kernel is accepted");
        assert!(e.to_string().contains("no subgroup"), "{e}");
        eprintln!("note: this adapter has no subgroups; the subgroup kernel is not tested");
        return;
    }
    let r = &matmul::REGISTER;
    every_case_with(
        &gpu,
        MatmulKernel::Subgroup,
        &subgroup_tuning(&gpu, r.rows, r.cols, 1),
    );
    let cases = [
        ((67, 129, 33), (true, true)),
        ((68, 132, 36), (false, false)),
        ((72, 76, 67), (true, false)),
        ((37, 41, 13), (false, true)),
    ];
    for (rows, cols, times) in [(4, 8, 1), (3, 4, 2), (16, 4, 1)] {
        let tuning = subgroup_tuning(&gpu, rows, cols, times);
        for ((m, n, k), (trans_a, trans_b)) in cases {
            let spec = Gemm {
                m,
                n,
                k,
                trans_a,
                trans_b,
                accumulate: true,
            };
            check_gemm(&gpu, MatmulKernel::Subgroup, &tuning, spec, true);
        }
    }
    let spill = subgroup_tuning(&gpu, 1, 4, 1);
    check_gemm(
        &gpu,
        MatmulKernel::Subgroup,
        &spill,
        Gemm::new(70_001, 2, 3),
        true,
    );
    let odd = subgroup_tuning(&gpu, 8, 8, 1);
    let odd = Tuning {
        register: RegisterBlocking {
            lanes: odd.register.lanes + 4,
            ..odd.register
        },
        ..odd
    };
    let e = MatmulKernel::Subgroup.supports(&gpu, &odd).unwrap_err();
    assert!(e.to_string().contains("largest subgroup"), "{e}");
}

/// Other block sizes than the defaults (what the bench's sweep may try) stay correct.
#[test]
fn other_blockings_match_reference() {
    let gpu = common::gpu();
    let tunings = [
        Tuning {
            naive_wg: 8,
            tiled: TiledBlocking {
                tile_m: 32,
                tile_n: 64,
                tile_k: 8,
                thread_m: 2,
                thread_n: 8,
            },
            register: RegisterBlocking {
                rows: 8,
                cols: 8,
                lanes: 4,
            },
        },
        Tuning {
            naive_wg: 4,
            tiled: TiledBlocking {
                tile_m: 16,
                tile_n: 16,
                tile_k: 5,
                thread_m: 1,
                thread_n: 1,
            },
            register: RegisterBlocking {
                rows: 3,
                cols: 4,
                lanes: 16,
            },
        },
        Tuning {
            naive_wg: 16,
            tiled: TILED_WIDE,
            register: RegisterBlocking {
                rows: 16,
                cols: 4,
                lanes: 8,
            },
        },
    ];
    // Unaligned (scalar loads), aligned with Bᵀ (vec4 loads), aligned Aᵀ·B with an odd K (vec4
    // loads and the K tail): one transpose combination each, to keep pipeline builds few.
    let cases = [
        ((67, 129, 33), (true, true)),
        ((68, 132, 36), (false, true)),
        ((72, 76, 67), (true, false)),
    ];
    for tuning in &tunings {
        for kernel in MatmulKernel::PORTABLE {
            for ((m, n, k), (trans_a, trans_b)) in cases {
                let spec = Gemm {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    accumulate: true,
                };
                check_gemm(&gpu, kernel, tuning, spec, true);
            }
        }
    }
}

const TILED_WIDE: TiledBlocking = TiledBlocking {
    tile_m: 128,
    tile_n: 64,
    tile_k: 4,
    thread_m: 8,
    thread_n: 8,
};

/// More than 65,535 row tiles: the host spills them into z and every kernel still covers them.
#[test]
fn row_tiles_spill_into_z() {
    let gpu = common::gpu();
    let tuning = Tuning {
        naive_wg: 1,
        tiled: TiledBlocking {
            tile_m: 1,
            tile_n: 8,
            tile_k: 4,
            thread_m: 1,
            thread_n: 1,
        },
        register: RegisterBlocking {
            rows: 1,
            cols: 4,
            lanes: 4,
        },
    };
    let (m, n, k) = (70_001, 3, 2);
    for kernel in MatmulKernel::PORTABLE {
        check_gemm(&gpu, kernel, &tuning, Gemm::new(m, k, n), true);
    }
}

/// (M, K, N) of the dense layer's forward and backward: tiny, odd, past a tile, aligned, and
/// the seed's patch embedding (K = 324).
const DENSE_SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (3, 5, 7),
    (67, 33, 129),
    (40, 36, 24),
    (15, 324, 60),
];

#[test]
fn forward_matches_reference() {
    let gpu = common::gpu();
    for (m, k, n) in DENSE_SHAPES {
        let x = uniform_data(m * k, 21);
        let w = uniform_data(k * n, 22);
        let b = uniform_data(n, 23);
        let (tx, tw, tb) = (
            upload(&gpu, "x", &x, Elem::F32),
            upload(&gpu, "w", &w, Elem::F32),
            upload(&gpu, "b", &b, Elem::F32),
        );
        for with_bias in [false, true] {
            let ty = GpuTensor::zeros(&gpu, "y", &[m, n]).unwrap();
            let d = matmul::matmul_forward(&gpu, &tx, &tw, with_bias.then_some(&tb), &ty, m, k, n)
                .unwrap();
            gpu.run(&[&d]).unwrap();
            let want = reference::matmul_forward(&x, &w, with_bias.then_some(&b[..]), m, k, n);
            let (abs, rel) = tol(k);
            assert_close(
                &format!(
                    "matmul_forward {m}x{k}x{n} bias={with_bias} ({})",
                    MatmulKernel::auto(&gpu)
                ),
                &ty.read::<f32>(&gpu).unwrap(),
                &want,
                abs,
                rel,
            );
        }
    }
}

#[test]
fn backward_matches_reference() {
    let gpu = common::gpu();
    for (m, k, n) in DENSE_SHAPES {
        let x = uniform_data(m * k, 31);
        let w = uniform_data(k * n, 32);
        let dy = uniform_data(m * n, 33);
        let dx0 = uniform_data(m * k, 34);
        let (want_dx, want_dw, want_db) = reference::matmul_backward(&x, &w, &dy, m, k, n);
        for accumulate_dx in [false, true] {
            let (tx, tw, tdy) = (
                upload(&gpu, "x", &x, Elem::F32),
                upload(&gpu, "w", &w, Elem::F32),
                upload(&gpu, "dy", &dy, Elem::F32),
            );
            let tdx = upload(&gpu, "dx", &dx0, Elem::F32);
            // dw and db start as garbage: they are written, not accumulated.
            let tdw = upload(&gpu, "dw", &uniform_data(k * n, 35), Elem::F32);
            let tdb = upload(&gpu, "db", &uniform_data(n, 36), Elem::F32);
            let ds = matmul::matmul_backward(
                &gpu,
                &tx,
                &tw,
                &tdy,
                &tdx,
                &tdw,
                &tdb,
                m,
                k,
                n,
                accumulate_dx,
            )
            .unwrap();
            gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
            let name = format!(
                "matmul_backward {m}x{k}x{n} accumulate_dx={accumulate_dx} ({})",
                MatmulKernel::auto(&gpu)
            );
            let want_dx: Vec<f32> = if accumulate_dx {
                want_dx.iter().zip(&dx0).map(|(a, b)| a + b).collect()
            } else {
                want_dx.clone()
            };
            let (abs, rel) = tol(n);
            assert_close(
                &format!("{name} dx"),
                &tdx.read::<f32>(&gpu).unwrap(),
                &want_dx,
                abs,
                rel,
            );
            let (abs, rel) = tol(m);
            assert_close(
                &format!("{name} dw"),
                &tdw.read::<f32>(&gpu).unwrap(),
                &want_dw,
                abs,
                rel,
            );
            assert_close(
                &format!("{name} db"),
                &tdb.read::<f32>(&gpu).unwrap(),
                &want_db,
                abs,
                rel,
            );
        }
    }
}

#[test]
fn colsum_matches_reference() {
    let gpu = common::gpu();
    for (m, n) in [(1, 1), (3, 5), (1000, 3), (5, 200), (130, 67)] {
        let dy = uniform_data(m * n, 41);
        let out0 = uniform_data(n, 42);
        for accumulate in [false, true] {
            let tdy = upload(&gpu, "dy", &dy, Elem::F32);
            let out = upload(&gpu, "db", &out0, Elem::F32);
            let d = matmul::colsum(&gpu, &tdy, &out, m, n, accumulate).unwrap();
            gpu.run(&[&d]).unwrap();
            let mut want = reference::colsum(&dy, m, n);
            if accumulate {
                want.iter_mut().zip(&out0).for_each(|(w, o)| *w += o);
            }
            let (abs, rel) = tol(m);
            assert_close(
                &format!("colsum {m}x{n} accumulate={accumulate}"),
                &out.read::<f32>(&gpu).unwrap(),
                &want,
                abs,
                rel,
            );
        }
    }
}

/// Weights and biases as views into one flat parameter buffer (offsets multiples of 64 floats),
/// inputs and outputs as views into larger buffers too; the data around the views is untouched.
#[test]
fn views_at_nonzero_offsets() {
    let gpu = common::gpu();
    let kernels = MatmulKernel::ALL
        .into_iter()
        .filter(|k| k.supports(&gpu, &Tuning::DEFAULT).is_ok());
    for kernel in kernels {
        for (m, k, n) in [(67, 33, 129), (40, 36, 24)] {
            let x = uniform_data(m * k, 51);
            let w = uniform_data(k * n, 52);
            let b = uniform_data(n, 53);
            let (w_off, b_off, x_off, y_off) = (64, 64 * (2 + (k * n) / 64), 128, 192);
            let mut flat = uniform_data(b_off + n + 64, 54);
            flat[w_off..w_off + k * n].copy_from_slice(&w);
            flat[b_off..b_off + n].copy_from_slice(&b);
            let params = upload(&gpu, "params", &flat, Elem::F32);
            let mut acts = uniform_data(x_off + m * k + 64, 55);
            acts[x_off..x_off + m * k].copy_from_slice(&x);
            let acts = upload(&gpu, "acts", &acts, Elem::F32);
            let out0 = uniform_data(y_off + m * n + 64, 56);
            let out = upload(&gpu, "out", &out0, Elem::F32);
            let tw = params.view("w", w_off, &[k, n]);
            let tb = params.view("b", b_off, &[n]);
            let tx = acts.view("x", x_off, &[m, k]);
            let ty = out.view("y", y_off, &[m, n]);
            let d =
                matmul::gemm(&gpu, kernel, Gemm::new(m, k, n), &tx, &tw, Some(&tb), &ty).unwrap();
            gpu.run(&[&d]).unwrap();
            let want = reference::matmul_forward(&x, &w, Some(&b), m, k, n);
            let (abs, rel) = tol(k);
            let name = format!("{kernel} views {m}x{k}x{n}");
            assert_close(&name, &ty.read::<f32>(&gpu).unwrap(), &want, abs, rel);
            let all = out.read::<f32>(&gpu).unwrap();
            assert_eq!(
                all[..y_off],
                out0[..y_off],
                "{name}: wrote before the output view"
            );
            assert_eq!(
                all[y_off + m * n..],
                out0[y_off + m * n..],
                "{name}: wrote past the output view"
            );
        }
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let gpu = common::gpu();
    let a = upload(&gpu, "A", &uniform_data(12, 1), Elem::F32);
    let b = upload(&gpu, "B", &uniform_data(20, 2), Elem::F32);
    let c = GpuTensor::zeros(&gpu, "C", &[3, 5]).unwrap();
    let ok = matmul::gemm(
        &gpu,
        MatmulKernel::Naive,
        Gemm::new(3, 4, 5),
        &a,
        &b,
        None,
        &c,
    );
    assert!(ok.is_ok());
    fn msg<T>(r: wgpu_diffusion::Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }
    let e = msg(matmul::gemm(
        &gpu,
        MatmulKernel::Naive,
        Gemm::new(3, 3, 5),
        &a,
        &b,
        None,
        &c,
    ));
    assert!(e.contains("A") && e.contains("expected"), "{e}");
    let e = msg(matmul::gemm(
        &gpu,
        MatmulKernel::Tiled,
        Gemm::new(3, 4, 5),
        &a,
        &b,
        Some(&a),
        &c,
    ));
    assert!(e.contains("bias"), "{e}");
    let e = msg(matmul::gemm(
        &gpu,
        MatmulKernel::Register,
        Gemm::new(0, 4, 5),
        &a,
        &b,
        None,
        &c,
    ));
    assert!(e.contains("at least 1"), "{e}");
    let (a31, a14, a34) = (
        a.view("x", 0, &[3, 1]),
        a.view("w", 0, &[1, 4]),
        a.view("y", 0, &[3, 4]),
    );
    let e = msg(matmul::gemm(
        &gpu,
        MatmulKernel::Register,
        Gemm::new(3, 1, 4),
        &a31,
        &a14,
        None,
        &a34,
    ));
    assert!(e.contains("shares a buffer"), "{e}");
    let e = msg(matmul::colsum(&gpu, &b, &c, 4, 5, false));
    assert!(e.contains("output") && e.contains("expected"), "{e}");
    let e = msg(matmul::matmul_backward(
        &gpu, &a, &b, &c, &a, &b, &c, 3, 4, 5, false,
    ));
    assert!(e.contains("expected"), "{e}");
    // llvmpipe stops shaders after 65,535 loop iterations: adapters with that cap refuse such
    // work.
    let long = upload(&gpu, "long", &uniform_data(70_000, 3), Elem::F32);
    let one = GpuTensor::zeros(&gpu, "one", &[1]).unwrap();
    let r = matmul::gemm(
        &gpu,
        MatmulKernel::Naive,
        Gemm::new(1, 70_000, 1),
        &long,
        &long,
        None,
        &one,
    );
    if gpu.loop_cap().is_some() {
        let e = msg(r);
        assert!(e.contains("65,535"), "{e}");
    } else {
        assert!(r.is_ok());
    }
}

#[test]
fn kernel_choice() {
    let gpu = common::gpu();
    assert_eq!(MatmulKernel::parse("Tiled"), Some(MatmulKernel::Tiled));
    assert_eq!(
        MatmulKernel::parse("register"),
        Some(MatmulKernel::Register)
    );
    assert_eq!(MatmulKernel::parse("naive"), Some(MatmulKernel::Naive));
    assert_eq!(
        MatmulKernel::parse("subgroup"),
        Some(MatmulKernel::Subgroup)
    );
    assert_eq!(MatmulKernel::parse("fast"), None);
    if std::env::var(matmul::KERNEL_ENV).is_err() {
        let subgroups = MatmulKernel::Subgroup
            .supports(&gpu, &Tuning::DEFAULT)
            .is_ok();
        let want = match (gpu.is_cpu(), subgroups) {
            (false, _) => MatmulKernel::Tiled,
            (true, true) => MatmulKernel::Subgroup,
            (true, false) => MatmulKernel::Register,
        };
        assert_eq!(MatmulKernel::auto(&gpu), want);
    }
    assert_eq!(matmul::flops(2, 3, 4), 48.0);
}
