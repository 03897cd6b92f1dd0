//! The training loop reads back only at logged rows and checkpoints, never per step: the number
//! of readbacks of a run does not grow with its number of steps.

mod common;

use std::path::PathBuf;
use wgpu_diffusion::config::Preset;
use wgpu_diffusion::train::{self, ShapeArgs, TrainArgs};

fn args(out: PathBuf, steps: u64, log_every: u64) -> TrainArgs {
    TrainArgs {
        preset: Preset::Tiny,
        shape: ShapeArgs::default(),
        loss_weight_max: 1,
        alpha: 0.99,
        n_max: 500,
        level_max: None,
        batch_images: 2,
        repeat: 10,
        lr: 1e-3,
        // A schedule: its per-step rate must not add readbacks either.
        warmup: 2,
        decay_steps: 2,
        lr_min: None,
        epochs: 1,
        patience: 5,
        max_steps: Some(steps),
        train_subset: Some(1000),
        val_count: 20,
        ema: 0.999,
        seed: 1,
        data: Some(
            match std::env::var_os("MNIST_DIR").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d),
                None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"),
            },
        ),
        out,
        resume: false,
        json: true,
        log_every,
        checkpoint_every: 1000,
        sample_every: 0,
        eval_every: 0,
        eval_count: 2000,
        classifier: Default::default(),
    }
}

#[test]
fn readbacks_do_not_grow_with_steps() {
    let gpu = common::gpu();
    let mut counts = Vec::new();
    for (steps, log_every) in [(10, 5), (40, 20)] {
        let out = std::env::temp_dir().join(format!(
            "wgpu-diffusion-readback-{steps}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        let before = gpu.readbacks();
        let s = train::run(&gpu, &args(out.clone(), steps, log_every)).unwrap();
        assert_eq!(s.steps, steps);
        counts.push(gpu.readbacks() - before);
        let _ = std::fs::remove_dir_all(out);
    }
    // Two logged rows (one loss-history read each) + the final checkpoint and best weights
    // (params, EMA, m, v each) = 10, for 10 steps as for 40.
    assert_eq!(counts, vec![10, 10], "readbacks per run");
}
