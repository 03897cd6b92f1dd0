//! wgpu-diffusion: a diffusion model for MNIST digits whose every numeric operation runs in
//! hand-written WGSL compute shaders through wgpu. See README.md; the model is
//! stated in docs/model.md, which comments cite by section (`docs/model.md §N`).

pub mod check;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
// The commands that read MNIST from the file system or the network, and train, are native
// only; the rest (the kernels, the sampler, `check`) also builds for a browser page.
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
pub mod figures;
pub mod files;
pub mod gpu;
pub mod info;
pub mod lr_schedule;
pub mod math;
pub mod model;
pub mod ops;
pub mod reference;
pub mod sample;
pub mod settings;
pub mod testing;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use error::{Error, ErrorKind, Result};
