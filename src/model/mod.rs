//! The transformer of docs/model.md §3 on the GPU ([`network`]); its parameter layout and
//! initialisation are shared math (`math::params`).

pub mod network;

pub use crate::math::params::{Init, ParamLayout, TensorSpec};
