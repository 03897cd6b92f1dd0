//! The output skip terms (`shaders/skip.wgsl`): `skip_forward` and `skip_backward` for each
//! skip with a kernel (`wiener`, `mixture`, `pixel-mixture` with a random per-pixel prior),
//! on noisy patches at noise levels from none to nearly pure noise.

use super::Checker;
use crate::config::Skip;
use crate::gpu::GpuTensor;
use crate::ops::skip;
use crate::reference::skip as reference;
use crate::testing::{noisy_tokens, random_prior, uniform_data, SKIP_SHAPES};

const KINDS: [(Skip, &str); 3] = [
    (Skip::Wiener, "wiener"),
    (Skip::Mixture, "mixture"),
    (Skip::PixelMixture, "pixel-mixture"),
];
/// `--quick`: an odd shape and the seed's geometry, of the shared [`SKIP_SHAPES`].
const QUICK_SHAPES: [(usize, usize, usize); 2] = [(3, 5, 7), (4, 5, 324)];

pub fn check(c: &mut Checker) {
    let shapes: &[_] = if c.quick { &QUICK_SHAPES } else { &SKIP_SHAPES };
    for (kind, name) in KINDS {
        for &(b, t, d) in shapes {
            let label = format!("skip_forward {name}");
            let shape = format!("B={b} T={t} D={d}");
            c.case(&label, shape.clone(), |c| {
                skip_case(c, kind, name, &shape, b, t, d)
            });
        }
    }
}

fn skip_case(
    c: &mut Checker,
    kind: Skip,
    name: &str,
    shape: &str,
    b: usize,
    t: usize,
    d: usize,
) -> crate::Result<()> {
    let n = b * t * d;
    let (x, dy, tokens) = (
        uniform_data(n, 1),
        uniform_data(n, 3),
        noisy_tokens(b, t, d),
    );
    let prior = (kind == Skip::PixelMixture).then(|| random_prior((t - 1) * d, 4));
    let (xt, dyt, tk) = (
        c.tensor("x", &x)?,
        c.tensor("dy", &dy)?,
        c.tensor("tokens", &tokens)?,
    );
    let (y, dx) = (
        c.tensor("y", &vec![7.0; n])?,
        c.tensor("dx", &vec![7.0; n])?,
    );
    let pt = match &prior {
        Some(p) => Some(GpuTensor::from_slice(c.gpu, "prior", &[p.len()], p)?),
        None => None,
    };
    let f = skip::skip_forward(c.gpu, kind, pt.as_ref(), &xt, &tk, &y, b, t, d)?;
    let g = skip::skip_backward(c.gpu, kind, pt.as_ref(), &dyt, &tk, &dx, b, t, d)?;
    c.run(&[&f, &g])?;
    let prior = prior.as_deref();
    // The mixture's weight is a logistic of a log-odds with large terms: f32 rounding moves
    // the estimate more than the Wiener skip's (tests/skip.rs).
    let (abs, rel) = match kind {
        Skip::Mixture | Skip::PixelMixture => (2e-4, 1e-4),
        _ => (1e-6, 1e-5),
    };
    let want = reference::skip_forward(kind, prior, &x, &tokens, b, t, d);
    let label = format!("skip_forward {name}");
    c.compare_tensor(&label, shape, &y, &want, abs, rel);
    let want = reference::skip_backward(kind, prior, &dy, &tokens, b, t, d);
    let label = format!("skip_backward {name}");
    c.compare_tensor(&label, shape, &dx, &want, abs, rel);
    Ok(())
}
