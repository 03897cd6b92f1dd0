//! Math that the GPU side and the CPU reference share, and nothing else: the counter-based RNG
//! and its streams, the skip's priors, the optimizer's settings, the shapes of the ops and of
//! the parameters, the sampling schedule, and how a result is compared with its reference. It builds only on `config` and `error`; both
//! `reference/` and the GPU side (`ops/`, `model/`, the commands) import it, and neither of
//! those two imports the other (tests and benches excepted).

pub mod optim;
pub mod params;
pub mod prior;
pub mod rng;
pub mod schedule;
pub mod shapes;
pub mod verify;

/// Storage type of the CPU reference and of tensors read from the GPU: `f32` (as on the GPU)
/// or `f64` (for finite differences).
pub trait Real: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}
