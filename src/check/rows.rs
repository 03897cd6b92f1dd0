//! The row and element ops (`shaders/rows.wgsl`): the positional embedding (`add_pos`,
//! `pos_backward`), the elementwise `add`, `add_inplace` and `copy`, and the patch rows of
//! [B, T, C] tensors (`drop_cond`, `drop_cond_add`, `pad_cond`).

use super::Checker;
use crate::gpu::GpuTensor;
use crate::ops::rows::{self, TokenRows};
use crate::reference::rows as reference;
use crate::testing::{uniform_data, ELEMENT_COUNTS, TOKEN_SHAPES};

/// `--quick`: an odd shape and the seed's (P = 4, D = 324), of the shared [`TOKEN_SHAPES`].
const QUICK_SHAPES: [(usize, usize, usize); 2] = [(3, 4, 5), (5, 4, 324)];
/// `--quick`: under a workgroup and an odd count past a thousand, of [`ELEMENT_COUNTS`].
const QUICK_SIZES: [usize; 2] = [63, 4099];

pub fn check(c: &mut Checker) {
    let shapes: &[_] = if c.quick {
        &QUICK_SHAPES
    } else {
        &TOKEN_SHAPES
    };
    for &(b, p, d) in shapes {
        let shape = format!("B={b} T={} P={p} D={d}", p + 1);
        c.case("add_pos", shape.clone(), |c| {
            pos_case(c, &shape, b, p + 1, d)
        });
    }
    let sizes: &[_] = if c.quick {
        &QUICK_SIZES
    } else {
        &ELEMENT_COUNTS
    };
    for &n in sizes {
        let shape = format!("n={n}");
        c.case("add", shape.clone(), |c| elementwise_case(c, &shape, n));
    }
    for &(b, p, w) in shapes {
        let r = TokenRows {
            batch: b,
            tokens: p + 1,
            patches: p,
            width: w,
        };
        let shape = format!("B={b} T={} P={p} C={w}", p + 1);
        c.case("drop_cond", shape.clone(), |c| cond_case(c, &shape, r));
    }
}

/// add_pos and its backward, pos_backward.
fn pos_case(c: &mut Checker, shape: &str, b: usize, t: usize, d: usize) -> crate::Result<()> {
    let (tokens, pos, dx) = (
        uniform_data(b * t * d, 1),
        uniform_data(t * d, 2),
        uniform_data(b * t * d, 3),
    );
    let (tk, ps, dxt) = (
        c.tensor("tokens", &tokens)?,
        c.tensor("pos", &pos)?,
        c.tensor("dx", &dx)?,
    );
    let xs = c.tensor("x_start", &vec![9.0; b * t * d])?;
    let dpos = c.tensor("dpos", &vec![9.0; t * d])?;
    let f = rows::add_pos(c.gpu, &tk, &ps, &xs, b, t, d)?;
    let g = rows::pos_backward(c.gpu, &dxt, &dpos, b, t, d)?;
    c.run(&[&f, &g])?;
    let want = reference::add_pos(&tokens, &pos);
    c.compare_tensor("add_pos", shape, &xs, &want, 0.0, 0.0);
    let want = reference::pos_backward(&dx, t, d);
    c.compare_tensor("pos_backward", shape, &dpos, &want, 1e-6, 1e-5);
    Ok(())
}

/// add, add_inplace and copy over `n` values.
fn elementwise_case(c: &mut Checker, shape: &str, n: usize) -> crate::Result<()> {
    let (a, b) = (uniform_data(n, 4), uniform_data(n, 5));
    let (at, bt) = (c.tensor("a", &a)?, c.tensor("b", &b)?);
    let y = c.tensor("y", &vec![9.0; n])?;
    let acc = c.tensor("acc", &b)?;
    let dst = GpuTensor::zeros(c.gpu, "copy", &[n])?;
    let d1 = rows::add(c.gpu, &at, &bt, &y)?;
    let d2 = rows::add_inplace(c.gpu, &acc, &at)?;
    let d3 = rows::copy(c.gpu, &at, &dst)?;
    c.run(&[&d1, &d2, &d3])?;
    let want = reference::add(&a, &b);
    c.compare_tensor("add", shape, &y, &want, 0.0, 0.0);
    c.compare_tensor("add_inplace", shape, &acc, &want, 0.0, 0.0);
    c.compare_tensor("copy", shape, &dst, &a, 0.0, 0.0);
    Ok(())
}

/// drop_cond, drop_cond_add and pad_cond (drop_cond's backward).
fn cond_case(c: &mut Checker, shape: &str, r: TokenRows) -> crate::Result<()> {
    let (b, t, p, w) = (r.batch, r.tokens, r.patches, r.width);
    let (x, dy, acc) = (
        uniform_data(b * t * w, 6),
        uniform_data(b * p * w, 7),
        uniform_data(b * p * w, 8),
    );
    let (xt, dyt, acct) = (
        c.tensor("x", &x)?,
        c.tensor("dy", &dy)?,
        c.tensor("acc", &acc)?,
    );
    let y = c.tensor("y", &vec![9.0; b * p * w])?;
    let dx = c.tensor("dx", &vec![9.0; b * t * w])?;
    let d1 = rows::drop_cond(c.gpu, &xt, &y, r)?;
    let d2 = rows::drop_cond_add(c.gpu, &xt, &acct, r)?;
    let d3 = rows::pad_cond(c.gpu, &dyt, &dx, r)?;
    c.run(&[&d1, &d2, &d3])?;
    let dropped = reference::drop_cond(&x, b, t, p, w);
    c.compare_tensor("drop_cond", shape, &y, &dropped, 0.0, 0.0);
    let want = reference::add(&acc, &dropped);
    c.compare_tensor("drop_cond_add", shape, &acct, &want, 0.0, 0.0);
    let want = reference::pad_cond(&dy, b, t, p, w);
    c.compare_tensor("pad_cond", shape, &dx, &want, 0.0, 0.0);
    Ok(())
}
