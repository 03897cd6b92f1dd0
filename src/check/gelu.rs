//! GELU forward and backward, with values far into both tails.

use super::Checker;
use crate::ops::gelu;
use crate::reference::gelu as reference;
use crate::testing::{gelu_inputs, uniform_data};

const SIZES: [usize; 4] = [1, 7, 64, 1000];

pub fn check(c: &mut Checker) {
    for n in SIZES {
        c.case("gelu_forward", format!("n={n}"), |c| {
            let x = gelu_inputs(n, n as u64);
            let dy = uniform_data(n, n as u64 + 1);
            let (xt, dyt) = (c.tensor("x", &x)?, c.tensor("dy", &dy)?);
            let (y, dx) = (
                c.tensor("y", &vec![7.0; n])?,
                c.tensor("dx", &vec![7.0; n])?,
            );
            let f = gelu::gelu_forward(c.gpu, &xt, &y)?;
            let b = gelu::gelu_backward(c.gpu, &xt, &dyt, &dx)?;
            c.run(&[&f, &b])?;
            let shape = format!("n={n}");
            let want = reference::gelu_forward(&x);
            c.compare_tensor("gelu_forward", &shape, &y, &want, 1e-6, 1e-5);
            let want = reference::gelu_backward(&x, &dy);
            c.compare_tensor("gelu_backward", &shape, &dx, &want, 1e-6, 1e-5);
            Ok(())
        });
    }
}
