//! The transformer of SPEC §3: its parameter layout and initialisation ([`params`]).

pub mod network;
pub mod params;

pub use params::{Init, ParamLayout, TensorSpec};
