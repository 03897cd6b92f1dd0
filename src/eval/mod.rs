//! Sample quality (issue 5). The `eval` command will hold here: the MNIST classifier trained
//! with our own kernels (dense layers from `ops::matmul`, ReLU and softmax cross-entropy from
//! `ops::classifier`), cached in `./data/classifier.safetensors`; its penultimate features of
//! samples, training and test digits; and the report — classifier-feature FID (with n), mean
//! max-softmax confidence, the predicted-label histogram and its entropy, and the
//! nearest-training-digit distance (a memorisation check).
//!
//! Built so far: [`fid`], the Fréchet distance between two feature sets' Gaussian statistics
//! (CPU, f64).

pub mod fid;
