//! Overlapping patches: `patches_forward` (images and cond -> tokens), `patches_backward`
//! (its adjoint: dimages and dcond) and `recompose` (tokens -> images, overlaps averaged)
//! against the CPU reference, with and without the conditioning token. Each geometry is its
//! own set of pipelines (SIZE, PATCH and OVERLAP are override constants).

use super::Checker;
use crate::config::Geometry;
use crate::ops::patches;
use crate::reference::patches as reference;
use crate::testing::uniform_data;

/// (size, patch, overlap, batch, with the conditioning token): a tiny 6x6 image (g = 2), the
/// seed preset (P = 10, O = 4), an odd one (P = 5, O = 4), the tiny preset (P = 6, O = 2)
/// and P = 13, O = 1.
const CASES: [(u32, u32, u32, usize, bool); 5] = [
    (6, 2, 1, 1, false),
    (28, 10, 4, 3, true),
    (28, 5, 4, 3, false),
    (28, 6, 2, 2, true),
    (28, 13, 1, 5, true),
];
const QUICK: usize = 2;

pub fn check(c: &mut Checker) {
    let cases = if c.quick { &CASES[..QUICK] } else { &CASES[..] };
    for &(size, patch, overlap, batch, cond_token) in cases {
        // T = g^2 + 1 with the conditioning token, g^2 without.
        let shape = format!("S={size} P={patch} O={overlap} B={batch}");
        c.case("patches", shape.clone(), |c| {
            let g = Geometry::with_size(size, patch, overlap)?;
            let t = if cond_token { g.tokens() } else { g.patches() } as usize;
            case(c, &g, batch, t, &format!("{shape} T={t}"))
        });
    }
}

/// The three kernels on one geometry, batch and token count; one row per output.
fn case(c: &mut Checker, g: &Geometry, b: usize, t: usize, shape: &str) -> crate::Result<()> {
    let (px, d) = (g.pixels() as usize, g.dim() as usize);
    let seed = (g.size * 10_007 + g.patch * 101 + g.overlap) as u64 + b as u64;
    let (images, cond) = (uniform_data(b * px, seed), uniform_data(b, seed + 1));
    let dtokens = uniform_data(b * t * d, seed + 2);
    let (x, cd, dt) = (
        c.tensor("images", &images)?,
        c.tensor("cond", &cond)?,
        c.tensor("dtokens", &dtokens)?,
    );
    // Garbage in every output: each element must be written.
    let out = c.tensor("tokens", &vec![7.0; b * t * d])?;
    let (dx, dc) = (
        c.tensor("dimages", &vec![7.0; b * px])?,
        c.tensor("dcond", &vec![7.0; b])?,
    );
    let img = c.tensor("image", &vec![7.0; b * px])?;
    let f = patches::patches_forward(c.gpu, g, b, t, &x, &cd, &out)?;
    let bw = patches::patches_backward(c.gpu, g, b, t, &dt, &dx, &dc)?;
    let r = patches::recompose(c.gpu, g, b, t, &dt, &img)?;
    c.run(&[&f])?;
    let want = reference::patches_forward(g, &images, &cond, t);
    // A copy: exact.
    c.compare_tensor("patches_forward", shape, &out, &want, 0.0, 0.0);
    c.run(&[&bw])?;
    let (want_dx, want_dc) = reference::patches_backward(g, &dtokens, t);
    c.compare_tensor("patches_backward dimages", shape, &dx, &want_dx, 1e-6, 1e-6);
    c.compare_tensor("patches_backward dcond", shape, &dc, &want_dc, 1e-5, 1e-5);
    c.run(&[&r])?;
    let want = reference::recompose(g, &dtokens, t);
    c.compare_tensor("recompose", shape, &img, &want, 1e-6, 1e-6);
    Ok(())
}
