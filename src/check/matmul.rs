//! GEMM: the naive kernel (the oracle) and each of the tuner's candidates on this adapter,
//! every transpose combination, with bias and accumulation; the bias gradient.

use super::Checker;
use crate::ops::matmul::{colsum, gemm_with, Gemm, MatmulKernel, Tuning};
use crate::ops::tune::{candidates, tolerance};
use crate::reference::matmul as reference;
use crate::testing::uniform_data;

/// (M, N, K): odd (scalar loads), aligned past a 64-tile (vec4 loads), aligned with an odd K.
const SHAPES: [(usize, usize, usize); 3] = [(37, 41, 13), (68, 132, 36), (72, 76, 67)];
/// (M, N, K) with (Aᵀ, Bᵀ).
type Case = ((usize, usize, usize), (bool, bool));

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];
/// `--quick`: two cases per kernel, the scalar and the vec4 path, each a different pair of
/// transposes (every transpose combination is a pipeline to build, seconds each on a CPU
/// adapter with a cold shader cache).
const QUICK_CASES: [Case; 2] = [
    ((37, 41, 13), (false, false)),
    ((68, 132, 36), (true, true)),
];

/// The (shape, transposes) cases of this run.
fn cases(quick: bool) -> Vec<Case> {
    if quick {
        return QUICK_CASES.to_vec();
    }
    SHAPES
        .iter()
        .flat_map(|&s| TRANSPOSES.iter().map(move |&t| (s, t)))
        .collect()
}

pub fn check(c: &mut Checker) {
    let naive = (MatmulKernel::Naive, Tuning::DEFAULT, "naive".to_string());
    let tuned = candidates(c.gpu)
        .into_iter()
        .map(|k| (k.kernel, k.tuning, k.name()));
    for (v, (kernel, tuning, name)) in std::iter::once(naive).chain(tuned).enumerate() {
        let label = format!("matmul {name}");
        // Quick: the naive and the built-in kernel (the first candidate) take every case, the
        // other candidates the aligned one (the path the model's shapes take).
        let skip = if c.quick && v > 1 { 1 } else { 0 };
        for (i, ((m, n, k), (trans_a, trans_b))) in
            cases(c.quick).into_iter().enumerate().skip(skip)
        {
            // Bias and accumulation take turns, so every flag is on in some case.
            let (bias, accumulate) = (i % 2 == 0, i % 3 != 1);
            let spec = Gemm {
                m,
                n,
                k,
                trans_a,
                trans_b,
                accumulate,
            };
            let shape = format!(
                "{m}x{n}x{k} {}·{}{}{}",
                if trans_a { "Aᵀ" } else { "A" },
                if trans_b { "Bᵀ" } else { "B" },
                if bias { " +b" } else { "" },
                if accumulate { " +C" } else { "" }
            );
            c.case(&label, shape.clone(), |c| {
                gemm_case(c, &label, &shape, kernel, &tuning, spec, bias)
            });
        }
    }
    colsum_cases(c);
}

#[allow(clippy::too_many_arguments)]
fn gemm_case(
    c: &mut Checker,
    label: &str,
    shape: &str,
    kernel: MatmulKernel,
    tuning: &Tuning,
    spec: Gemm,
    with_bias: bool,
) -> crate::Result<()> {
    let Gemm { m, n, k, .. } = spec;
    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
    let (a, b) = (uniform_data(m * k, seed), uniform_data(k * n, seed + 1));
    let (bias, c0) = (uniform_data(n, seed + 2), uniform_data(m * n, seed + 3));
    let (ta, tb) = (c.tensor("A", &a)?, c.tensor("B", &b)?);
    let (tbias, tc) = (c.tensor("bias", &bias)?, c.tensor("C", &c0)?);
    let tbias = with_bias.then_some(&tbias);
    let d = gemm_with(c.gpu, kernel, tuning, spec, &ta, &tb, tbias, &tc)?;
    c.run(&[&d])?;
    let mut want = reference::gemm(&a, &b, m, n, k, spec.trans_a, spec.trans_b);
    for (idx, v) in want.iter_mut().enumerate() {
        if with_bias {
            *v += bias[idx % n];
        }
        if spec.accumulate {
            *v += c0[idx];
        }
    }
    let (abs, rel) = tolerance(k);
    c.compare_tensor(label, shape, &tc, &want, abs, rel);
    Ok(())
}

fn colsum_cases(c: &mut Checker) {
    for (m, n) in [(3, 5), (130, 67), (1000, 3)] {
        for accumulate in [false, true] {
            let shape = format!("{m}x{n}{}", if accumulate { " +out" } else { "" });
            c.case("colsum", shape.clone(), |c| {
                let (dy, out0) = (uniform_data(m * n, 41), uniform_data(n, 42));
                let (tdy, out) = (c.tensor("dy", &dy)?, c.tensor("db", &out0)?);
                let d = colsum(c.gpu, &tdy, &out, m, n, accumulate)?;
                c.run(&[&d])?;
                let mut want = reference::colsum(&dy, m, n);
                if accumulate {
                    want.iter_mut().zip(&out0).for_each(|(w, o)| *w += o);
                }
                let (abs, rel) = tolerance(m);
                c.compare_tensor("colsum", &shape, &out, &want, abs, rel);
                Ok(())
            });
        }
    }
}
