//! `wgpu-diffusion check [--quick]`: every kernel on this adapter against its CPU reference,
//! on small odd and aligned shapes: each GEMM candidate of the tuner, attention, patches,
//! noise, the skip, the loss, the row ops, Adam, GELU, the label embedding, the sampling step
//! and the classifier.
//! A table of (kernel, shape, max error, tolerance, OK/FAIL, time) and exit 1 naming each
//! kernel that failed. It is the test suite's kernel half, shipped: the one command that
//! imports `reference/`.
//!
//! Each op has a module with one `check` function that runs its cases through
//! [`Checker::case`]: a case builds its inputs, runs the kernels, reads back and calls
//! [`Checker::compare`]; an error inside a case (a shape the adapter refuses, a GPU error) is
//! a failed row, never the end of the run.

use crate::error::Result;
use crate::gpu::tensor::Snapshot;
use crate::gpu::{Dispatch, Elem, Gpu, GpuTensor};
use crate::testing::compare;
use serde::Serialize;
use web_time::Instant;

mod adam;
mod attention;
mod classifier;
mod gelu;
mod half;
mod label;
mod loss;
mod matmul;
mod noise;
mod patches;
mod rows;
mod sample;
mod skip;

/// Flags of `check`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CheckArgs {
    /// Fewer shapes (under 30 s on lavapipe the first time, a second or two after).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// f16: the kernels that sample with `--precision f16` instead, their activations and
    /// weights stored as f16 (the adapter needs shader-f16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::settings::sample::Precision,
}

/// One comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub shape: String,
    /// Largest |GPU - reference|, when the kernel ran.
    pub max_err: Option<f32>,
    /// Tolerance: |err| <= abs + rel |reference|.
    pub abs: f32,
    pub rel: f32,
    pub ok: bool,
    /// Seconds of the GPU work compared (pipeline builds excluded).
    pub secs: f64,
    /// The first mismatches or the error, when it failed.
    pub note: Option<String>,
}

impl CheckRow {
    /// Judges `got` against `want` within the row's tolerance.
    fn judge(&mut self, got: &[f32], want: &[f32]) {
        let name = format!("{} {}", self.kernel, self.shape);
        let result = compare(&name, got, want, self.abs, self.rel);
        self.max_err = Some(
            got.iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) }),
        );
        self.ok = result.is_ok();
        self.note = result.err();
    }
}

/// What `check` prints.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub adapter: String,
    pub quick: bool,
    pub rows: Vec<CheckRow>,
    /// Kernels with at least one failed row, in order of first failure.
    pub failed: Vec<String>,
    pub secs: f64,
}

/// Runs the cases and collects their rows.
pub struct Checker<'a> {
    pub gpu: &'a Gpu,
    pub quick: bool,
    rows: Vec<CheckRow>,
    /// Seconds of the last [`Checker::run`].
    last_secs: f64,
    /// Comparisons whose GPU side was copied aside ([`Checker::compare_tensor`]) and is read
    /// when the checker settles.
    deferred: Vec<Deferred<'a>>,
}

/// A row waiting for its GPU values.
struct Deferred<'a> {
    row: usize,
    got: Option<Snapshot<'a>>,
    convert: fn(&[u8]) -> Vec<f32>,
    want: Vec<f32>,
}

/// A tensor's bytes as the f32 values they are.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

/// An f16 tensor's bytes as f32 values.
pub fn f16s(bytes: &[u8]) -> Vec<f32> {
    let h: Vec<::half::f16> = bytemuck::pod_collect_to_vec(bytes);
    h.iter().map(|v| v.to_f32()).collect()
}

impl<'a> Checker<'a> {
    pub fn new(gpu: &'a Gpu, quick: bool) -> Checker<'a> {
        Checker {
            gpu,
            quick,
            rows: Vec::new(),
            last_secs: 0.0,
            deferred: Vec::new(),
        }
    }

    /// Runs `kernel`'s case at `shape`: its error, if any, becomes a failed row.
    pub fn case(
        &mut self,
        kernel: &str,
        shape: impl std::fmt::Display,
        f: impl FnOnce(&mut Checker<'a>) -> Result<()>,
    ) {
        self.last_secs = 0.0;
        let r = f(self);
        self.case_result(kernel, shape, r);
    }

    /// A case's result, run by its caller (an awaited case, which [`Checker::case`] cannot
    /// run): its error, if any, becomes a failed row.
    pub fn case_result(&mut self, kernel: &str, shape: impl std::fmt::Display, r: Result<()>) {
        let shape = shape.to_string();
        if let Err(e) = r {
            self.rows.push(CheckRow {
                kernel: kernel.to_string(),
                shape,
                max_err: None,
                abs: 0.0,
                rel: 0.0,
                ok: false,
                secs: 0.0,
                note: Some(e.to_string()),
            });
        }
    }

    /// Runs `dispatches` in one pass and waits; the time goes to the next compared row.
    pub fn run(&mut self, dispatches: &[&Dispatch]) -> Result<()> {
        let start = Instant::now();
        self.gpu.run(dispatches)?;
        self.gpu.wait()?;
        self.last_secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// A 1-D tensor holding `data`.
    pub fn tensor(&self, label: &str, data: &[f32]) -> Result<GpuTensor> {
        GpuTensor::from_slice(self.gpu, label, &[data.len()], data)
    }

    /// Records `kernel` at `shape`: `got` against `want` within `abs + rel |want|`.
    pub fn compare(
        &mut self,
        kernel: &str,
        shape: impl std::fmt::Display,
        got: &[f32],
        want: &[f32],
        abs: f32,
        rel: f32,
    ) {
        let mut row = self.pending_row(kernel, shape, abs, rel);
        row.judge(got, want);
        self.rows.push(row);
    }

    /// [`Checker::compare`] of `got`'s contents as they are now: copied aside at this point
    /// of the queue, read and judged when the checker settles (so that a browser page, which
    /// may not wait, runs the same cases).
    pub fn compare_tensor(
        &mut self,
        kernel: &str,
        shape: impl std::fmt::Display,
        got: &GpuTensor,
        want: &[f32],
        abs: f32,
        rel: f32,
    ) {
        let convert = match got.elem {
            Elem::F32 => f32s,
            Elem::F16 => f16s,
        };
        self.compare_tensor_as(kernel, shape, got, convert, want, abs, rel)
    }

    /// [`Checker::compare_tensor`] of `convert(bytes)`, for tensors that do not hold f32.
    #[allow(clippy::too_many_arguments)]
    pub fn compare_tensor_as(
        &mut self,
        kernel: &str,
        shape: impl std::fmt::Display,
        got: &GpuTensor,
        convert: fn(&[u8]) -> Vec<f32>,
        want: &[f32],
        abs: f32,
        rel: f32,
    ) {
        let bytes = (got.len() * got.elem.bytes()) as u64;
        let snapshot = (self.gpu).snapshot(&got.buffer, got.byte_offset(), bytes);
        let row = self.pending_row(kernel, shape, abs, rel);
        self.rows.push(row);
        self.deferred.push(Deferred {
            row: self.rows.len() - 1,
            got: snapshot,
            convert,
            want: want.to_vec(),
        });
    }

    fn pending_row(
        &self,
        kernel: &str,
        shape: impl std::fmt::Display,
        abs: f32,
        rel: f32,
    ) -> CheckRow {
        CheckRow {
            kernel: kernel.to_string(),
            shape: shape.to_string(),
            max_err: None,
            abs,
            rel,
            ok: false,
            secs: self.last_secs,
            note: Some("not read back".to_string()),
        }
    }

    /// Reads back and judges every deferred comparison.
    pub async fn settle(&mut self) {
        for d in std::mem::take(&mut self.deferred) {
            let got = match d.got {
                Some(s) => s.read().await.map(|b| (d.convert)(&b)),
                None => Ok(Vec::new()),
            };
            let row = &mut self.rows[d.row];
            match got {
                Ok(got) => row.judge(&got, &d.want),
                Err(e) => row.note = Some(e.to_string()),
            }
        }
    }

    fn report(self, secs: f64) -> CheckReport {
        let mut failed: Vec<String> = Vec::new();
        for r in self.rows.iter().filter(|r| !r.ok) {
            if !failed.contains(&r.kernel) {
                failed.push(r.kernel.clone());
            }
        }
        CheckReport {
            adapter: self.gpu.describe(),
            quick: self.quick,
            rows: self.rows,
            failed,
            secs,
        }
    }
}

/// The ops whose cases only compare through [`Checker::compare_tensor`]: those a browser page
/// runs too.
const DEFERRED_OPS: [fn(&mut Checker); 10] = [
    matmul::check,
    attention::check,
    patches::check,
    noise::check,
    skip::check,
    loss::check,
    rows::check,
    adam::check,
    gelu::check,
    label::check,
];

/// Every op's cases on `gpu`.
pub fn run(gpu: &Gpu, quick: bool) -> CheckReport {
    let start = Instant::now();
    let mut c = Checker::new(gpu, quick);
    for op in DEFERRED_OPS {
        op(&mut c);
        pollster::block_on(c.settle());
    }
    pollster::block_on(sample::check(&mut c));
    classifier::check(&mut c);
    c.report(start.elapsed().as_secs_f64())
}

/// `check --precision f16`: the f16 kernels' cases ([`half`]), or one failed row when the
/// adapter has no shader-f16.
pub fn run_f16(gpu: &Gpu, quick: bool) -> CheckReport {
    let start = Instant::now();
    let mut c = Checker::new(gpu, quick);
    half::check(&mut c);
    pollster::block_on(c.settle());
    c.report(start.elapsed().as_secs_f64())
}

/// [`run`] for a browser page, where nothing may block: every op but the classifier (whose
/// cases read back as they go; the page has no use for it).
pub async fn run_async(gpu: &Gpu, quick: bool) -> CheckReport {
    let start = Instant::now();
    let mut c = Checker::new(gpu, quick);
    for op in DEFERRED_OPS {
        op(&mut c);
        c.settle().await;
    }
    sample::check(&mut c).await;
    c.report(start.elapsed().as_secs_f64())
}

impl CheckReport {
    /// An error naming each failed kernel (exit 1), if any failed.
    pub fn result(&self) -> Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        let rows = self.rows.iter().filter(|r| !r.ok).count();
        Err(crate::Error::gpu(format!(
            "check failed on {}: {} ({rows} of {} comparisons)",
            self.adapter,
            self.failed.join(", "),
            self.rows.len()
        )))
    }

    /// The table, one row per comparison, and a summary line.
    pub fn print_table(&self) {
        println!("adapter: {}", self.adapter);
        println!(
            "{:<34} {:<26} {:>10} {:>20} {:<4} {:>9}",
            "kernel", "shape", "max err", "tolerance", "", "ms"
        );
        for r in &self.rows {
            let err = r.max_err.map_or("-".to_string(), |e| format!("{e:.2e}"));
            let tol = format!("{:.0e} + {:.0e}|ref|", r.abs, r.rel);
            let ok = if r.ok { "OK" } else { "FAIL" };
            println!(
                "{:<34} {:<26} {:>10} {:>20} {:<4} {:>9.2}",
                r.kernel,
                r.shape,
                err,
                tol,
                ok,
                r.secs * 1e3
            );
            if let Some(note) = r.note.as_ref().filter(|_| !r.ok) {
                for line in note.lines().take(4) {
                    println!("    {line}");
                }
            }
        }
        let failed = self.rows.iter().filter(|r| !r.ok).count();
        println!(
            "{} comparisons, {failed} failed, in {:.1} s",
            self.rows.len(),
            self.secs
        );
    }
}
