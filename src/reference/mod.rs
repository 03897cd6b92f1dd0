//! Plain CPU references: simple loops, written for clarity, that the WGSL kernels are tested
//! against (and, for backward passes, that are themselves checked by finite differences).

pub mod adam;
pub mod attention;
pub mod classifier;
pub mod gelu;
pub mod label;
pub mod loss;
pub mod matmul;
pub mod model;
pub mod noise;
pub mod patches;
pub mod rows;
pub mod sample;
pub mod skip;
