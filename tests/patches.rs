//! patches_forward / patches_backward / recompose on the GPU against the CPU reference, for the
//! presets' geometries and odd ones, odd batch sizes, with and without the conditioning token.

mod common;

use wgpu_diffusion::config::Geometry;
use wgpu_diffusion::gpu::{Elem, Gpu, GpuTensor};
use wgpu_diffusion::ops::patches;
use wgpu_diffusion::reference::patches as reference;
use wgpu_diffusion::testing::{assert_close, uniform_data};

/// seed (P=10, O=4), tiny (P=6, O=2), P=2/O=1, and two odd ones (P=5/O=4, P=13/O=1, g=2).
const GEOMETRIES: [(u32, u32); 5] = [(10, 4), (6, 2), (2, 1), (5, 4), (13, 1)];
const BATCHES: [usize; 2] = [1, 3];

fn forward(gpu: &Gpu, g: &Geometry, b: usize, t: usize, images: &[f32], cond: &[f32]) -> Vec<f32> {
    let x = GpuTensor::from_slice(gpu, "images", &[b, g.pixels() as usize], images).unwrap();
    let c = GpuTensor::from_slice(gpu, "cond", &[b], cond).unwrap();
    let out = GpuTensor::zeros(gpu, "tokens", &[b, t, g.dim() as usize]).unwrap();
    let d = patches::patches_forward(gpu, g, b, t, &x, &c, &out).unwrap();
    gpu.run(&[&d]).unwrap();
    out.read(gpu).unwrap()
}

fn backward(gpu: &Gpu, g: &Geometry, b: usize, t: usize, dtokens: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let dt = GpuTensor::from_slice(gpu, "dtokens", &[b, t, g.dim() as usize], dtokens).unwrap();
    let dx = GpuTensor::zeros(gpu, "dimages", &[b, g.pixels() as usize]).unwrap();
    let dc = GpuTensor::zeros(gpu, "dcond", &[b]).unwrap();
    let d = patches::patches_backward(gpu, g, b, t, &dt, &dx, &dc).unwrap();
    gpu.run(&[&d]).unwrap();
    (dx.read(gpu).unwrap(), dc.read(gpu).unwrap())
}

fn recompose(gpu: &Gpu, g: &Geometry, b: usize, t: usize, tokens: &[f32]) -> Vec<f32> {
    recompose_of(gpu, g, b, t, tokens, Elem::F32)
}

/// [`recompose`] of the model's output stored as `elem` (the image is f32).
fn recompose_of(
    gpu: &Gpu,
    g: &Geometry,
    b: usize,
    t: usize,
    tokens: &[f32],
    elem: Elem,
) -> Vec<f32> {
    let shape = [b, t, g.dim() as usize];
    let tk = GpuTensor::from_values(gpu, "ptokens", &shape, tokens, elem).unwrap();
    let img = GpuTensor::zeros(gpu, "image", &[b, g.pixels() as usize]).unwrap();
    let d = patches::recompose(gpu, g, b, t, &tk, &img).unwrap();
    gpu.run(&[&d]).unwrap();
    img.read(gpu).unwrap()
}

#[test]
fn forward_matches_reference() {
    let gpu = common::gpu();
    for (p, o) in GEOMETRIES {
        let g = Geometry::new(p, o).unwrap();
        for b in BATCHES {
            for t in [g.patches() as usize, g.tokens() as usize] {
                let images = uniform_data(b * g.pixels() as usize, 1);
                let cond = uniform_data(b, 2);
                let got = forward(&gpu, &g, b, t, &images, &cond);
                let want = reference::patches_forward(&g, &images, &cond, t);
                // A copy: exact.
                assert_close(
                    &format!("forward P={p} O={o} B={b} T={t}"),
                    &got,
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn backward_matches_reference() {
    let gpu = common::gpu();
    for (p, o) in GEOMETRIES {
        let g = Geometry::new(p, o).unwrap();
        for b in BATCHES {
            for t in [g.patches() as usize, g.tokens() as usize] {
                let dt = uniform_data(b * t * g.dim() as usize, 3);
                let (dx, dc) = backward(&gpu, &g, b, t, &dt);
                let (want_dx, want_dc) = reference::patches_backward(&g, &dt, t);
                let name = format!("backward P={p} O={o} B={b} T={t}");
                assert_close(&name, &dx, &want_dx, 1e-6, 1e-6);
                assert_close(&format!("{name} dcond"), &dc, &want_dc, 1e-5, 1e-5);
            }
        }
    }
}

/// <forward(x, c), y> = <x, backward(y).dimages> + <c, backward(y).dcond>, all on the GPU.
#[test]
fn backward_is_adjoint_of_forward() {
    let gpu = common::gpu();
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum::<f64>()
    };
    for (p, o) in GEOMETRIES {
        let g = Geometry::new(p, o).unwrap();
        let (b, t) = (3, g.tokens() as usize);
        let x = uniform_data(b * g.pixels() as usize, 4);
        let c = uniform_data(b, 5);
        let y = uniform_data(b * t * g.dim() as usize, 6);
        let fx = forward(&gpu, &g, b, t, &x, &c);
        let (dx, dc) = backward(&gpu, &g, b, t, &y);
        let lhs = dot(&fx, &y);
        let rhs = dot(&x, &dx) + dot(&c, &dc);
        assert!(
            (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
            "P={p} O={o}: <Fx,y> = {lhs} but <x,F*y> = {rhs}"
        );
    }
}

#[test]
fn recompose_matches_reference() {
    let gpu = common::gpu();
    for (p, o) in GEOMETRIES {
        let g = Geometry::new(p, o).unwrap();
        for b in BATCHES {
            let t = g.tokens() as usize;
            let tokens = uniform_data(b * t * g.dim() as usize, 7);
            let got = recompose(&gpu, &g, b, t, &tokens);
            let want = reference::recompose(&g, &tokens, t);
            assert_close(
                &format!("recompose P={p} O={o} B={b}"),
                &got,
                &want,
                1e-6,
                1e-6,
            );
        }
    }
}

/// recompose of f16 tokens into the f32 image: the sums are f32, so on the same f16 values it
/// is held to f32's tolerance. Mutation: summing in f16 (`var s: elem`) fails it.
#[test]
fn f16_recompose_matches_reference() {
    let Some(gpu) = common::f16_gpu() else {
        return;
    };
    for (p, o) in GEOMETRIES {
        let g = Geometry::new(p, o).unwrap();
        for b in BATCHES {
            let t = g.tokens() as usize;
            let tokens =
                wgpu_diffusion::testing::round_f16(&uniform_data(b * t * g.dim() as usize, 8));
            let got = recompose_of(&gpu, &g, b, t, &tokens, Elem::F16);
            let want = reference::recompose(&g, &tokens, t);
            assert_close(
                &format!("f16 recompose P={p} O={o} B={b}"),
                &got,
                &want,
                1e-6,
                1e-6,
            );
        }
    }
}

/// recompose(patches_forward(x)) == x for every valid geometry of a 28x28 image.
#[test]
fn recompose_inverts_forward_for_every_geometry() {
    let gpu = common::gpu();
    let mut checked = 0;
    for o in 0..14 {
        for p in 1..=28 {
            let Ok(g) = Geometry::new(p, o) else { continue };
            let b = 2;
            let x = uniform_data(b * g.pixels() as usize, 8 + p as u64);
            let t = g.patches() as usize;
            let tokens = forward(&gpu, &g, b, t, &x, &[0.0; 2]);
            let back = recompose(&gpu, &g, b, t, &tokens);
            // Up to 169 copies summed then divided: allow a few hundred ulps of round-off.
            assert_close(
                &format!("recompose(forward) P={p} O={o}"),
                &back,
                &x,
                2e-5,
                2e-5,
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} geometries");
}

/// A batch large enough that the 1-D grid spills into the y dimension (> 65,535 workgroups).
#[test]
fn large_batch_spills_into_second_grid_dimension() {
    let gpu = common::gpu();
    let g = Geometry::new(2, 1).unwrap(); // D = 16, T = 170: 2720 values per sample
    let b = 1600; // 4.35 M tokens values > 65,535 x 64
    let groups = gpu
        .groups_1d((b * g.patches() as usize * g.dim() as usize) as u64, 64)
        .unwrap();
    assert!(groups[1] > 1, "test shape does not spill: {groups:?}");
    let x = uniform_data(b * g.pixels() as usize, 9);
    let t = g.patches() as usize;
    let tokens = forward(&gpu, &g, b, t, &x, &vec![0.0; b]);
    let want = reference::patches_forward(&g, &x, &vec![0.0; b], t);
    assert_close("forward, spilled grid", &tokens, &want, 0.0, 0.0);
    let back = recompose(&gpu, &g, b, t, &tokens);
    assert_close("recompose, spilled grid", &back, &x, 1e-6, 1e-6);
}
