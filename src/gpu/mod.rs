//! The GPU runtime: device setup ([`context`]), the kernel table with its pipeline cache
//! ([`kernels`]), tensors and the one readback helper ([`tensor`]), GPU timing ([`timing`]) and the tuner's cache of kernel choices ([`tune`]).
//!
//! Device setup is separate from the work: every op and test receives a `&Gpu`.

pub mod context;
pub mod kernels;
pub mod signal;
pub mod tensor;
pub mod timing;
pub mod tune;

pub use context::{BackendChoice, Gpu, GpuOptions, LimitsChoice};
pub use kernels::{Dispatch, Kernel, SHADERS};
pub use tensor::{Elem, GpuTensor};
pub use tune::{TuneCache, TuneMode};
