//! Host side of `shaders/matmul.wgsl` and `shaders/matmul_subgroup.wgsl`: a general GEMM
//! (`C = op(A)·op(B) (+ bias) (+ C)`) in four kernel versions with explicit blockings, and the
//! bias gradient ([`colsum`]). The dense layer built on it, with the tuner's choice of kernel,
//! is [`crate::ops::matmul`]; the tuner ([`crate::ops::tune`]) builds on this module alone.
//!
//! Versions (see the shader's header): [`MatmulKernel::Naive`] (the oracle),
//! [`MatmulKernel::Tiled`] (workgroup-memory tiles, staged with vec4 loads where aligned: real
//! GPUs) and [`MatmulKernel::Register`] (register blocking with vec4 loads, no workgroup
//! memory: CPU adapters) and [`MatmulKernel::Subgroup`] (the register blocking with A shared
//! through subgroup shuffles: adapters with subgroups, a tuner candidate).
//! [`MatmulKernel::auto`] picks by adapter; `WGPU_DIFFUSION_MATMUL=naive|tiled|register|subgroup`
//! forces one. The block sizes below are the one source of truth, passed as overrides.

use super::check_loops;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Elem, Gpu, GpuTensor};

/// v1: `NAIVE_WG x NAIVE_WG` threads per workgroup, one output each.
pub const NAIVE_WG: u32 = 16;
/// v2 blocking: a 64x64 block of C per workgroup of 16x16 threads, 4x4 outputs per thread,
/// 16-deep slabs in workgroup memory.
pub const TILED: TiledBlocking = TiledBlocking {
    tile_m: 64,
    tile_n: 64,
    tile_k: 16,
    thread_m: 4,
    thread_n: 4,
};
/// v3 and v4 blocking: 8 threads side by side (one SIMD group of a 256-bit CPU, one lavapipe
/// subgroup), each 8x8 outputs (the fastest single blocking measured on lavapipe; 4x4, 8x4
/// and 16x8 were slower).
pub const REGISTER: RegisterBlocking = RegisterBlocking {
    rows: 8,
    cols: 8,
    lanes: 8,
};
/// colsum: columns per workgroup and partial sums per column.
pub const COLSUM_COLS: u32 = 64;
pub const COLSUM_ROWS: u32 = 4;

/// Accumulators and per-step values the shader's register arrays hold (`MAX_ACC`, `MAX_SIDE`).
const MAX_ACC: u32 = 64;
const MAX_SIDE: u32 = 16;

/// Block sizes of [`MatmulKernel::Tiled`]: `thread_m, thread_n <= 16`, `thread_m * thread_n
/// <= 64`, tiles multiples of the per-thread blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledBlocking {
    /// Rows and columns of C per workgroup.
    pub tile_m: u32,
    pub tile_n: u32,
    /// Depth of the slabs staged in workgroup memory.
    pub tile_k: u32,
    /// Outputs per thread (the workgroup is `tile_n/thread_n x tile_m/thread_m`).
    pub thread_m: u32,
    pub thread_n: u32,
}

/// Block sizes of [`MatmulKernel::Register`]: `rows * cols <= 64`, `rows, cols <= 16`, `cols`
/// a multiple of 4; vec4 loads also need `rows` to be a multiple of 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterBlocking {
    /// Rows of C per thread (and per workgroup).
    pub rows: u32,
    /// Consecutive columns of C per thread (a multiple of 4).
    pub cols: u32,
    /// Threads per workgroup, side by side along N.
    pub lanes: u32,
}

/// Every block size, for kernel-development sweeps ([`gemm_with`]); [`Tuning::DEFAULT`] holds
/// the constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub naive_wg: u32,
    pub tiled: TiledBlocking,
    pub register: RegisterBlocking,
}

impl Tuning {
    pub const DEFAULT: Tuning = Tuning {
        naive_wg: NAIVE_WG,
        tiled: TILED,
        register: REGISTER,
    };
}

impl Default for Tuning {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which GEMM kernel version to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// v1: one output per thread.
    Naive,
    /// v2: workgroup-memory tiling and register blocking (real GPUs).
    Tiled,
    /// v3: register blocking, vec4 loads where aligned, no workgroup memory (CPU adapters).
    Register,
    /// v4: v3's blocking (`Tuning::register`) with op(A) shared through subgroup shuffles; only
    /// on adapters with subgroups, with `lanes` a multiple of the largest subgroup size.
    Subgroup,
}

/// Environment variable that forces a kernel version: `naive`, `tiled`, `register` or
/// `subgroup`.
pub const KERNEL_ENV: &str = "WGPU_DIFFUSION_MATMUL";

impl MatmulKernel {
    pub const ALL: [MatmulKernel; 4] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Register,
        MatmulKernel::Subgroup,
    ];
    /// The versions every adapter runs, with any valid blocking.
    pub const PORTABLE: [MatmulKernel; 3] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled,
        MatmulKernel::Register,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled => "tiled",
            MatmulKernel::Register => "register",
            MatmulKernel::Subgroup => "subgroup",
        }
    }

    /// The shader file holding this version's entry points.
    fn shader(self) -> &'static str {
        match self {
            MatmulKernel::Subgroup => "matmul_subgroup",
            _ => "matmul",
        }
    }

    /// Whether this adapter runs this version with `tuning` (an error naming why not).
    pub fn supports(self, gpu: &Gpu, tuning: &Tuning) -> Result<()> {
        check_tuning(gpu, self, tuning)
    }

    /// Parses `naive`, `tiled`, `register` or `subgroup` (case-insensitive).
    pub fn parse(s: &str) -> Option<MatmulKernel> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The version for this adapter: on CPU adapters `Subgroup` where the default blocking
    /// fits their subgroups (lavapipe: 1.5-2x the register kernel's train step), else
    /// `Register`; `Tiled` on GPUs; unless [`KERNEL_ENV`] names one (an unknown name is
    /// reported once on stderr and ignored).
    pub fn auto(gpu: &Gpu) -> MatmulKernel {
        if let Ok(v) = std::env::var(KERNEL_ENV) {
            if !v.is_empty() {
                if let Some(k) = Self::parse(&v) {
                    return k;
                }
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "warning: {KERNEL_ENV}={v} is not naive, tiled, register or subgroup; \
                         ignored"
                    )
                });
            }
        }
        if !gpu.is_cpu() {
            MatmulKernel::Tiled
        } else if MatmulKernel::Subgroup
            .supports(gpu, &Tuning::DEFAULT)
            .is_ok()
        {
            MatmulKernel::Subgroup
        } else {
            MatmulKernel::Register
        }
    }
}

impl std::fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shape and options of one GEMM: `C[m, n] = op(A)·op(B) (+ bias) (+ C if accumulate)`, op(A)
/// `[m, k]` (A stored `[k, m]` when `trans_a`), op(B) `[k, n]` (B stored `[n, k]` when
/// `trans_b`), all row-major.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

impl Gemm {
    /// `C[m, n] = A[m, k]·B[k, n]`, the sizes in the order the operands read (as
    /// [`matmul_forward`](crate::ops::matmul::matmul_forward)'s `m, k, n`).
    pub fn new(m: usize, k: usize, n: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            ..Gemm::default()
        }
    }

    pub fn flops(&self) -> f64 {
        flops(self.m, self.k, self.n)
    }
}

/// Floating-point operations of an `[m, k]·[k, n]` product (one multiply and one add each).
pub fn flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
}

/// Bits of `Params::flags` (the shader's HAS_BIAS_BIT and ACCUMULATE_BIT).
const HAS_BIAS: u32 = 1;
const ACCUMULATE: u32 = 2;

fn params(gpu: &Gpu, m: usize, n: usize, k: usize, flags: u32) -> wgpu::Buffer {
    gpu.uniform(
        "matmul-params",
        &Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            flags,
        },
    )
}

fn err(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::gpu(format!("{op}: {msg}"))
}

fn check_len(op: &str, what: &str, t: &GpuTensor, len: usize, shape: &str) -> Result<()> {
    if t.len() != len {
        return Err(err(
            op,
            format!(
                "{what} {} has {} elements ({:?}), expected {shape} = {len}",
                t.label,
                t.len(),
                t.shape
            ),
        ));
    }
    Ok(())
}

/// The output must not share a buffer with an input: one dispatch cannot bind a buffer both
/// read-only and read-write.
fn check_distinct(op: &str, out: &GpuTensor, inputs: &[&GpuTensor]) -> Result<()> {
    for t in inputs {
        if t.buffer == out.buffer {
            return Err(err(
                op,
                format!(
                    "output {} shares a buffer with input {}: write into a separate buffer",
                    out.label, t.label
                ),
            ));
        }
    }
    Ok(())
}

fn check_offset(gpu: &Gpu, op: &str, t: &GpuTensor) -> Result<()> {
    let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
    if !(t.byte_offset() as usize).is_multiple_of(align) {
        return Err(err(
            op,
            format!(
                "view {} starts at element {}, not a multiple of the adapter's storage offset \
                 alignment ({align} bytes)",
                t.label, t.offset
            ),
        ));
    }
    Ok(())
}

fn check_size(op: &str, spec: &Gemm) -> Result<()> {
    if spec.m == 0 || spec.n == 0 || spec.k == 0 {
        return Err(err(
            op,
            format!(
                "sizes must be at least 1 (M={}, N={}, K={})",
                spec.m, spec.n, spec.k
            ),
        ));
    }
    let biggest = (spec.m * spec.k).max(spec.k * spec.n).max(spec.m * spec.n);
    if biggest > u32::MAX as usize {
        return Err(err(
            op,
            format!("{biggest} elements overflow 32-bit indices"),
        ));
    }
    Ok(())
}

/// Workgroups for `cols` column tiles and `rows` row tiles: rows go to y and spill into z past
/// the per-dimension limit (the shader indexes row tiles as `y + z * num_workgroups.y`).
fn grid(gpu: &Gpu, op: &str, cols: usize, rows: usize) -> Result<[u32; 3]> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let z = rows.div_ceil(max).max(1);
    let y = rows.div_ceil(z).max(1);
    if cols > max || z > max {
        return Err(Error::adapter(format!(
            "{op}: {cols} x {rows} workgroups exceed {} {max} per dimension",
            gpu.limits_choice.owner()
        )));
    }
    Ok([cols as u32, y as u32, z as u32])
}

fn check_tuning(gpu: &Gpu, kernel: MatmulKernel, t: &Tuning) -> Result<()> {
    let bad = |m: String| Err(Error::config(format!("matmul {kernel} blocking: {m}")));
    let max_inv = gpu.limits.max_compute_invocations_per_workgroup;
    match kernel {
        MatmulKernel::Naive => {
            if t.naive_wg == 0 || t.naive_wg * t.naive_wg > max_inv {
                return bad(format!("{0}x{0} threads", t.naive_wg));
            }
        }
        MatmulKernel::Tiled => {
            let b = &t.tiled;
            if b.thread_m == 0
                || b.thread_n == 0
                || b.tile_k == 0
                || !b.tile_m.is_multiple_of(b.thread_m)
                || !b.tile_n.is_multiple_of(b.thread_n)
                || b.thread_m > MAX_SIDE
                || b.thread_n > MAX_SIDE
                || b.thread_m * b.thread_n > MAX_ACC
                || (b.tile_m / b.thread_m) * (b.tile_n / b.thread_n) > max_inv
                || b.tile_m / b.thread_m == 0
                || b.tile_n / b.thread_n == 0
                || (b.tile_m + b.tile_n) * b.tile_k * 4
                    > gpu.limits.max_compute_workgroup_storage_size
            {
                return bad(format!("{b:?}"));
            }
        }
        MatmulKernel::Subgroup => {
            check_subgroups(gpu, &t.register)?;
            return check_tuning(gpu, MatmulKernel::Register, t);
        }
        MatmulKernel::Register => {
            let b = &t.register;
            if b.rows == 0
                || b.cols == 0
                || !b.cols.is_multiple_of(4)
                || b.cols > MAX_SIDE
                || b.lanes == 0
                || b.rows > MAX_SIDE
                || b.rows * b.cols > MAX_ACC
                || b.lanes > max_inv
            {
                return bad(format!("{b:?}"));
            }
        }
    }
    Ok(())
}

/// The subgroup kernel needs the adapter's subgroups, and `lanes` a multiple of its largest
/// subgroup size so that no subgroup is partial (the shuffles read every lane).
fn check_subgroups(gpu: &Gpu, b: &RegisterBlocking) -> Result<()> {
    if !gpu.features.contains(wgpu::Features::SUBGROUP) {
        return Err(Error::config(
            "matmul subgroup kernel: this adapter has no subgroup operations".to_string(),
        ));
    }
    let max = gpu.info.subgroup_max_size.max(1);
    if b.lanes == 0 || !b.lanes.is_multiple_of(max) {
        return Err(Error::config(format!(
            "matmul subgroup blocking: {} lanes is not a multiple of the adapter's largest \
             subgroup ({max})",
            b.lanes
        )));
    }
    Ok(())
}

/// `C = op(A)·op(B) (+ bias[n]) (+ C if spec.accumulate)` with `kernel`: checks lengths (A
/// `m*k`, B `k*n`, bias `n`, C `m*n`; shapes are not checked, so views of any shape with the
/// right length work) and returns the prepared dispatch.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    gpu: &Gpu,
    kernel: MatmulKernel,
    spec: Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<Dispatch> {
    gemm_with(gpu, kernel, &Tuning::DEFAULT, spec, a, b, bias, c)
}

/// [`gemm`] with explicit block sizes (benches sweep them; everything else uses
/// [`Tuning::DEFAULT`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    tuning: &Tuning,
    spec: Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<Dispatch> {
    let op = format!(
        "gemm {}x{}x{}{}{}",
        spec.m,
        spec.n,
        spec.k,
        if spec.trans_a { " Aᵀ" } else { "" },
        if spec.trans_b { " Bᵀ" } else { "" }
    );
    let op = op.as_str();
    check_operands(gpu, op, &spec, a, b, bias, c)?;
    check_tuning(gpu, kernel, tuning)?;
    let vec4 = vec4_loads(kernel, &spec, tuning, a, b);
    check_loops(
        gpu,
        &format!("{op}: the {kernel} kernel with K = {}", spec.k),
        loop_iterations(kernel, tuning, spec.k, vec4),
    )?;
    let mut constants: Vec<(&str, f64)> = vec![
        ("TRANS_A", spec.trans_a as u32 as f64),
        ("TRANS_B", spec.trans_b as u32 as f64),
    ];
    let (entry, groups) = entry_and_grid(gpu, op, kernel, tuning, &spec, vec4, &mut constants)?;
    let elem = Elem::of(op, &[a, b, bias.unwrap_or(a), c])?;
    let kern = gpu.kernel_of(kernel.shader(), entry, &constants, elem)?;
    let flags =
        if bias.is_some() { HAS_BIAS } else { 0 } | if spec.accumulate { ACCUMULATE } else { 0 };
    let p = params(gpu, spec.m, spec.n, spec.k, flags);
    // Without a bias, binding 3 gets A (read-only, never read: the HAS_BIAS flag is off).
    let bias_bind = bias.unwrap_or(a).bind();
    let (ia, ib) = vec4_bindings(entry);
    gpu.dispatch(
        &kern,
        &[
            (0, p.as_entire_binding()),
            (ia, a.bind()),
            (ib, b.bind()),
            (3, bias_bind),
            (4, c.bind()),
        ],
        groups,
    )
}

/// The operands of `op`: sizes, lengths (A `m*k`, B `k*n`, bias `n`, C `m*n`), C apart from
/// the inputs, and offsets the adapter can bind.
fn check_operands(
    gpu: &Gpu,
    op: &str,
    spec: &Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<()> {
    check_size(op, spec)?;
    let Gemm { m, n, k, .. } = *spec;
    let (sa, sb) = (
        if spec.trans_a { "[K, M]" } else { "[M, K]" },
        if spec.trans_b { "[N, K]" } else { "[K, N]" },
    );
    check_len(op, "A", a, m * k, sa)?;
    check_len(op, "B", b, k * n, sb)?;
    check_len(op, "C", c, m * n, "[M, N]")?;
    if let Some(bias) = bias {
        check_len(op, "bias", bias, n, "[N]")?;
        check_distinct(op, c, &[a, b, bias])?;
    } else {
        check_distinct(op, c, &[a, b])?;
    }
    for t in [a, b, c].into_iter().chain(bias) {
        check_offset(gpu, op, t)?;
    }
    Ok(())
}

/// The bindings of A and B for `entry`: the `*4` entry points read B as vec4s (binding 6),
/// and A too (binding 5) except the subgroup kernel's.
fn vec4_bindings(entry: &str) -> (u32, u32) {
    match entry {
        "matmul_subgroup4" => (1, 6),
        e if e.ends_with('4') => (5, 6),
        _ => (1, 2),
    }
}

/// Whether `kernel` may load vec4s: A's and B's contiguous dimension and start multiples of 4,
/// and the blocking's sides along them too (the subgroup kernel: B's alone, when B is not
/// transposed).
fn vec4_loads(
    kernel: MatmulKernel,
    spec: &Gemm,
    tuning: &Tuning,
    a: &GpuTensor,
    b: &GpuTensor,
) -> bool {
    let a_inner = if spec.trans_a { spec.m } else { spec.k };
    let b_inner = if spec.trans_b { spec.k } else { spec.n };
    let aligned = a_inner.is_multiple_of(4)
        && b_inner.is_multiple_of(4)
        && a.offset.is_multiple_of(4)
        && b.offset.is_multiple_of(4);
    let (r, t) = (&tuning.register, &tuning.tiled);
    if kernel == MatmulKernel::Subgroup {
        return !spec.trans_b && spec.n.is_multiple_of(4) && b.offset.is_multiple_of(4);
    }
    aligned
        && match kernel {
            MatmulKernel::Naive | MatmulKernel::Subgroup => false,
            MatmulKernel::Register => r.rows.is_multiple_of(4) && r.cols.is_multiple_of(4),
            MatmulKernel::Tiled => [t.tile_m, t.tile_n, t.tile_k]
                .iter()
                .all(|x| x.is_multiple_of(4)),
        }
}

/// Loop iterations one invocation runs, counted pessimistically (for the adapter's loop cap,
/// [`check_loops`]).
fn loop_iterations(kernel: MatmulKernel, tuning: &Tuning, k: usize, vec4: bool) -> u64 {
    let kf = k as f64;
    let n = match kernel {
        MatmulKernel::Naive => kf,
        // Slab loads and the slab loop, plus a row loop the compiler may keep.
        MatmulKernel::Tiled => {
            let tk = tuning.tiled.tile_k as f64;
            (kf / tk).ceil() * (2.0 + tk * (2.0 + tuning.tiled.thread_m as f64))
        }
        MatmulKernel::Register if vec4 => kf / 4.0 + 4.0,
        MatmulKernel::Register => kf,
        // One step of K at a time, plus a chunk loop every subgroup-size steps (at least 4).
        MatmulKernel::Subgroup => kf * 1.25 + 4.0,
    };
    n.ceil() as u64
}

/// The entry point and workgroup grid of `kernel`, its blocking pushed onto `constants`.
fn entry_and_grid(
    gpu: &Gpu,
    op: &str,
    kernel: MatmulKernel,
    tuning: &Tuning,
    spec: &Gemm,
    vec4: bool,
    constants: &mut Vec<(&str, f64)>,
) -> Result<(&'static str, [u32; 3])> {
    let (m, n) = (spec.m, spec.n);
    match kernel {
        MatmulKernel::Naive => {
            let w = tuning.naive_wg as usize;
            constants.push(("NAIVE_WG", w as f64));
            Ok(("matmul_naive", grid(gpu, op, n.div_ceil(w), m.div_ceil(w))?))
        }
        MatmulKernel::Tiled => {
            let t = &tuning.tiled;
            constants.extend([
                ("TILE_M", t.tile_m as f64),
                ("TILE_N", t.tile_n as f64),
                ("TILE_K", t.tile_k as f64),
                ("THREAD_M", t.thread_m as f64),
                ("THREAD_N", t.thread_n as f64),
            ]);
            let (gx, gy) = (n.div_ceil(t.tile_n as usize), m.div_ceil(t.tile_m as usize));
            let entry = if vec4 {
                "matmul_tiled4"
            } else {
                "matmul_tiled"
            };
            Ok((entry, grid(gpu, op, gx, gy)?))
        }
        MatmulKernel::Register | MatmulKernel::Subgroup => {
            let r = &tuning.register;
            constants.extend([
                ("REG_ROWS", r.rows as f64),
                ("REG_COLS", r.cols as f64),
                ("REG_LANES", r.lanes as f64),
            ]);
            let gx = n.div_ceil((r.cols * r.lanes) as usize);
            let g = grid(gpu, op, gx, m.div_ceil(r.rows as usize))?;
            let entry = match (kernel, vec4) {
                (MatmulKernel::Subgroup, true) => "matmul_subgroup4",
                (MatmulKernel::Subgroup, false) => "matmul_subgroup",
                (_, true) => "matmul_register4",
                (_, false) => "matmul_register",
            };
            Ok((entry, g))
        }
    }
}

/// `out[n] = Σ_m dy[m, n] (+ out if accumulate)`: the bias gradient.
pub fn colsum(
    gpu: &Gpu,
    dy: &GpuTensor,
    out: &GpuTensor,
    m: usize,
    n: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let op = format!("colsum {m}x{n}");
    let op = op.as_str();
    check_size(op, &Gemm::new(m, 1, n))?;
    check_len(op, "dY", dy, m * n, "[M, N]")?;
    check_len(op, "output", out, n, "[N]")?;
    check_distinct(op, out, &[dy])?;
    check_offset(gpu, op, dy)?;
    check_offset(gpu, op, out)?;
    check_loops(
        gpu,
        &format!("{op}: summing M = {m} rows"),
        m.div_ceil(COLSUM_ROWS as usize) as u64 + COLSUM_ROWS as u64,
    )?;
    let kern = gpu.kernel_of(
        "matmul",
        "colsum",
        &[
            ("COLSUM_COLS", COLSUM_COLS as f64),
            ("COLSUM_ROWS", COLSUM_ROWS as f64),
        ],
        Elem::of(op, &[dy, out])?,
    )?;
    let flags = if accumulate { ACCUMULATE } else { 0 };
    let p = params(gpu, m, n, 1, flags);
    let groups = gpu.groups_1d(n as u64, COLSUM_COLS)?;
    gpu.dispatch(
        &kern,
        &[(0, p.as_entire_binding()), (2, dy.bind()), (4, out.bind())],
        groups,
    )
}
