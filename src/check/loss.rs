//! The MSE loss (`shaders/loss.wgsl`): `mse_forward` into its history slot and
//! `mse_backward`, plain (W = 1) and weighted by each sample's noise level (W = 30, a^n from
//! pure noise to none, so the weights span the cap, values in between and 1).

use super::Checker;
use crate::ops::loss;
use crate::reference::loss as reference;
use crate::testing::{tokens_with_levels, uniform_data, TOKEN_SHAPES};

/// `--quick`: an odd shape and the seed's (P = 4, D = 324), of the shared [`TOKEN_SHAPES`].
const QUICK_SHAPES: [(usize, usize, usize); 2] = [(3, 4, 5), (5, 4, 324)];
const HISTORY: usize = 8;

pub fn check(c: &mut Checker) {
    let shapes: &[_] = if c.quick {
        &QUICK_SHAPES
    } else {
        &TOKEN_SHAPES
    };
    for (i, &(b, p, d)) in shapes.iter().enumerate() {
        for max in [1, 30] {
            let shape = format!("B={b} T={} P={p} D={d} W={max}", p + 1);
            c.case("mse_forward", shape.clone(), |c| {
                mse_case(c, &shape, i, (b, p, d), max)
            });
        }
    }
}

fn mse_case(
    c: &mut Checker,
    shape: &str,
    i: usize,
    (b, p, d): (usize, usize, usize),
    max: u32,
) -> crate::Result<()> {
    let t = p + 1;
    let out = uniform_data(b * t * d, 10 + i as u64);
    let target = uniform_data(b * p * d, 20 + i as u64);
    let tokens = tokens_with_levels(b, t, d);
    let t64: Vec<f64> = tokens.iter().map(|&v| v as f64).collect();
    let w = reference::sample_weights(&t64, b, t, d, max);
    let (ot, tt) = (c.tensor("out", &out)?, c.tensor("target", &target)?);
    let tk = c.tensor("tokens", &tokens)?;
    let lw = loss::LevelWeight { tokens: &tk, max };
    let history = c.tensor("history", &[-1.0; HISTORY])?;
    let dout = c.tensor("dout", &vec![5.0; b * t * d])?;
    let mse = loss::MseForward::new(c.gpu, &ot, &tt, lw, &history, b, t, p, d)?;
    let back = loss::mse_backward(c.gpu, &ot, &tt, lw, &dout, b, t, p, d)?;
    // A slot past the start: the others must stay untouched.
    let slot = (i * 3 + max as usize) % HISTORY;
    mse.set_slot(c.gpu, slot as u32);
    c.run(&[&mse.dispatch, &back])?;
    let mut want = vec![-1.0; HISTORY];
    want[slot] = reference::mse(&out, &target, &w, b, t, p, d);
    c.compare_tensor("mse_forward", shape, &history, &want, 0.0, 2e-6);
    let want = reference::mse_backward(&out, &target, &w, b, t, p, d);
    c.compare_tensor("mse_backward", shape, &dout, &want, 1e-9, 1e-6);
    Ok(())
}
