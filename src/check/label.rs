//! The label embedding of a class-conditional model (`shaders/label.wgsl`): `label_forward`
//! and `label_backward`, with labels covering every row, "no label" and one past the table.

use super::Checker;
use crate::config::NO_LABEL;
use crate::gpu::GpuTensor;
use crate::ops::label::{self, LabelShape};
use crate::reference::label as reference;
use crate::testing::{label_ids, label_shapes, uniform_data};

/// `--quick` (B, P, D): odd, and the whole-image model's (P = 1, D = 784), of the shared
/// [`label_shapes`].
const QUICK_SHAPES: [(usize, usize, usize); 2] = [(3, 4, 5), (40, 1, 784)];
const ROWS: usize = NO_LABEL as usize + 1;

pub fn check(c: &mut Checker) {
    let shapes: Vec<_> = if c.quick {
        QUICK_SHAPES.to_vec()
    } else {
        label_shapes().collect()
    };
    for (b, p, d) in shapes {
        let t = p + 1;
        let shape = format!("B={b} T={t} D={d}");
        c.case("label_forward", shape.clone(), |c| {
            let (x, table) = (uniform_data(b * t * d, 1), uniform_data(ROWS * d, 2));
            let dx = uniform_data(b * t * d, 3);
            let labels = label_ids(b);
            let lt = GpuTensor::from_slice(c.gpu, "labels", &[b], &labels)?;
            let (xt, tt, dxt) = (
                c.tensor("x", &x)?,
                c.tensor("table", &table)?,
                c.tensor("dx", &dx)?,
            );
            let dtable = c.tensor("dtable", &vec![9.0; ROWS * d])?;
            let s = LabelShape {
                batch: b,
                tokens: t,
                dim: d,
                rows: ROWS,
            };
            let f = label::label_forward(c.gpu, &s, &lt, &tt, &xt)?;
            let g = label::label_backward(c.gpu, &s, &lt, &dxt, &dtable)?;
            c.run(&[&f, &g])?;
            let want = reference::label_forward(&x, &labels, &table, t, d);
            c.compare_tensor("label_forward", &shape, &xt, &want, 0.0, 0.0);
            let want = reference::label_backward(&dx, &labels, ROWS, t, d);
            c.compare_tensor("label_backward", &shape, &dtable, &want, 1e-6, 1e-5);
            Ok(())
        });
    }
}
