//! Sample quality: the `eval` command. The MNIST classifier trained with this program's
//! kernels ([`classifier`]: dense layers from `ops::matmul`, ReLU and softmax cross-entropy
//! from `ops::classifier`), cached in `./data/classifier.safetensors`; its penultimate
//! features of samples, training and test digits; and the report ([`metrics`], [`command`]) —
//! classifier-feature FID (with n), mean max-softmax confidence, the predicted-label histogram
//! and its entropy, and the nearest-training-digit distance (a memorisation check).
//!
//! [`fid`] is the Fréchet distance between two feature sets' Gaussian statistics (CPU, f64).

pub mod classifier;
pub mod command;
pub mod digits;
pub mod fid;
pub mod levels;
pub mod metrics;

pub use command::{quality, report_text, run_command, EvalArgs, EvalReport, Quality};
