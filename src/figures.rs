//! Pictures: grey-scale strips and grids of 28x28 images written as PNG, atomically
//! (temporary file, then rename), and the forward-process figure of `noise`.

use crate::config::{IMAGE_SIZE, PIXELS};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::math::rng::streams;
use crate::ops::noise::{NoiseConfig, NoiseInject};
use std::path::Path;

/// How image values map to grey levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// Data range: x = p/256 - 0.5, so grey = clamp((x + 0.5) * 256).
    Data,
    /// Each image stretched from its own minimum (black) to maximum (white).
    PerImage,
}

/// Lays `images` ([n, 28*28]) out in a grid of `cols` columns with a `gap`-pixel black border,
/// each pixel enlarged `zoom` times. Returns (width, height, grey bytes).
pub fn grid(
    images: &[f32],
    cols: usize,
    zoom: usize,
    gap: usize,
    scale: Scale,
) -> (u32, u32, Vec<u8>) {
    let s = IMAGE_SIZE as usize;
    let n = images.len() / PIXELS as usize;
    let cols = cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let cell = s * zoom + gap;
    let (w, h) = (cols * cell + gap, rows * cell + gap);
    let mut out = vec![0u8; w * h];
    for k in 0..n {
        let img = &images[k * PIXELS as usize..(k + 1) * PIXELS as usize];
        let (lo, hi) = match scale {
            Scale::Data => (-0.5, 0.5 - 1.0 / 256.0),
            Scale::PerImage => img
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                }),
        };
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (r0, c0) = ((k / cols) * cell + gap, (k % cols) * cell + gap);
        for y in 0..s * zoom {
            for x in 0..s * zoom {
                let v = img[(y / zoom) * s + x / zoom];
                let g = ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8;
                out[(r0 + y) * w + c0 + x] = g;
            }
        }
    }
    (w as u32, h as u32, out)
}

/// Writes a grey PNG atomically: `path.tmp` then rename.
pub fn write_png(path: &Path, width: u32, height: u32, grey: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("png.tmp");
    image::save_buffer_with_format(
        &tmp,
        grey,
        width,
        height,
        image::ExtendedColorType::L8,
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(crate::error::io_err(
        ErrorKind::Io,
        "cannot rename to",
        path,
    ))
}

/// The seed's forward-process figure: image `index` of `data` (8-bit, [N, 784]) noised at each
/// level in `levels` with `A_n = a^n x + (1 - a^n) N`, on the GPU. Returns [levels, 784].
pub fn noising_sequence(
    gpu: &Gpu,
    data: &[u8],
    index: usize,
    levels: &[u32],
    alpha: f32,
    seed: u64,
) -> Result<Vec<f32>> {
    let px = PIXELS as usize;
    let count = data.len() / px;
    if index >= count {
        return Err(Error::config(format!(
            "--index {index} is out of range: the set has {count} images (0..={})",
            count.saturating_sub(1)
        )));
    }
    if levels.is_empty() {
        return Err(Error::config("--steps needs at least one level"));
    }
    let b = levels.len();
    // Only the one image travels to the GPU.
    let img = GpuTensor::from_bytes(gpu, "image", &data[index * px..(index + 1) * px])?;
    let perm = GpuTensor::from_slice(gpu, "perm", &[1], &[0u32])?;
    let lv = GpuTensor::from_slice(gpu, "levels", &[b], levels)?;
    let cond = GpuTensor::zeros(gpu, "cond", &[b])?;
    let noise = GpuTensor::zeros(gpu, "noise", &[b, px])?;
    let noisy = GpuTensor::zeros(gpu, "noisy", &[b, px])?;
    let config = NoiseConfig {
        seed,
        stream: streams::FIGURE,
        alpha,
        n_max: *levels.iter().max().unwrap(),
        repeat: b as u32,
    };
    let op = NoiseInject::at_levels(gpu, &config, b, &img, &perm, &lv, &cond, &noise, &noisy)?;
    op.set_step(gpu, 0, 0);
    gpu.run(&[&op.dispatch])?;
    noisy.read(gpu)
}

/// Writes digit 0's denoising trajectory ([steps + 1, 784], from noise to digit) as a PNG strip
/// of at most 11 evenly spaced states and as an animated GIF of every state. Returns the paths.
pub fn write_trajectory(out: &Path, traj: &[f32], steps: usize) -> Result<Vec<String>> {
    let px = PIXELS as usize;
    let states = steps + 1;
    let shown: Vec<usize> = if states <= 11 {
        (0..states).collect()
    } else {
        (0..11).map(|i| i * steps / 10).collect()
    };
    let strip: Vec<f32> = shown
        .iter()
        .flat_map(|&k| traj[k * px..(k + 1) * px].iter().copied())
        .collect();
    let (w, h, grey) = grid(&strip, shown.len(), 3, 2, Scale::PerImage);
    let png = out.join("trajectory.png");
    write_png(&png, w, h, &grey)?;

    let gif = out.join("trajectory.gif");
    let tmp = out.join("trajectory.gif.tmp");
    let write = || -> std::result::Result<(), image::ImageError> {
        let file = std::fs::File::create(&tmp)?;
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(file, 10);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        let every = states.div_ceil(100).max(1); // at most ~100 frames
        let mut frames: Vec<usize> = (0..states).step_by(every).collect();
        if frames.last() != Some(&(states - 1)) {
            frames.push(states - 1);
        }
        for (i, &k) in frames.iter().enumerate() {
            let (w, h, g) = grid(&traj[k * px..(k + 1) * px], 1, 4, 0, Scale::Data);
            let rgba: Vec<u8> = g.iter().flat_map(|&v| [v, v, v, 255]).collect();
            let img = image::RgbaImage::from_raw(w, h, rgba).expect("frame size");
            let ms = if i + 1 == frames.len() { 1500 } else { 40 };
            enc.encode_frame(image::Frame::from_parts(
                img,
                0,
                0,
                image::Delay::from_numer_denom_ms(ms, 1),
            ))?;
        }
        Ok(())
    };
    write().map_err(|e| Error::io(format!("cannot write {}: {e}", gif.display())))?;
    std::fs::rename(&tmp, &gif).map_err(crate::error::io_err(
        ErrorKind::Io,
        "cannot rename to",
        &gif,
    ))?;
    Ok(vec![png.display().to_string(), gif.display().to_string()])
}

/// 3x5 bitmaps (rows top to bottom, 3 bits each, MSB left) of the characters labels use.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'n' => [0, 0, 6, 5, 5],
        's' => [3, 4, 2, 1, 6],
        '=' => [0, 7, 0, 7, 0],
        '.' => [0, 0, 0, 0, 2],
        '\'' => [2, 2, 0, 0, 0],
        _ => [0; 5],
    }
}

/// Grey image with `text` drawn in white at `zoom` times the 3x5 font, on black, `width` wide.
pub fn label(text: &str, width: u32, zoom: u32) -> (u32, u32, Vec<u8>) {
    let h = 7 * zoom;
    let mut out = vec![0u8; (width * h) as usize];
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..zoom {
                        for dx in 0..zoom {
                            let x = (i as u32 * 4 + col) * zoom + dx + zoom;
                            let y = (row as u32 + 1) * zoom + dy;
                            if x < width {
                                out[(y * width + x) as usize] = 255;
                            }
                        }
                    }
                }
            }
        }
    }
    (width, h, out)
}

/// Stacks grey images vertically (all `width` wide).
pub fn stack(parts: &[(u32, u32, Vec<u8>)]) -> (u32, u32, Vec<u8>) {
    let w = parts.iter().map(|p| p.0).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut h = 0;
    for (pw, ph, px) in parts {
        for y in 0..*ph {
            let row = &px[(y * pw) as usize..((y + 1) * pw) as usize];
            out.extend_from_slice(row);
            out.extend(std::iter::repeat_n(0u8, (w - pw) as usize));
        }
        h += ph;
    }
    (w, h, out)
}

/// Places grey images side by side (tops aligned), padding with black.
pub fn side_by_side(parts: &[(u32, u32, Vec<u8>)], gap: u32) -> (u32, u32, Vec<u8>) {
    let h = parts.iter().map(|p| p.1).max().unwrap_or(0);
    let w: u32 =
        parts.iter().map(|p| p.0).sum::<u32>() + gap * parts.len().saturating_sub(1) as u32;
    let mut out = vec![0u8; (w * h) as usize];
    let mut x0 = 0;
    for (pw, ph, px) in parts {
        for y in 0..*ph {
            let dst = (y * w + x0) as usize;
            out[dst..dst + *pw as usize]
                .copy_from_slice(&px[(y * pw) as usize..((y + 1) * pw) as usize]);
        }
        x0 += pw + gap;
    }
    (w, h, out)
}
