//! The training loop reads back only at logged rows and checkpoints, never per step: the number
//! of readbacks of a run does not grow with its number of steps.

mod common;

use std::path::PathBuf;
use wgpu_diffusion::settings::recipe::Preset;
use wgpu_diffusion::settings::train::TrainFlags;
use wgpu_diffusion::train::{self, TrainArgs};

fn args(out: PathBuf, steps: u64, log_every: u64) -> TrainArgs {
    TrainArgs {
        preset: Some(Preset::Tiny),
        config: None,
        settings: TrainFlags {
            batch_images: Some(2),
            repeat: Some(10),
            lr: Some(1e-3),
            // A schedule: its per-step rate must not add readbacks either.
            warmup: Some(2),
            decay_steps: Some(2),
            epochs: Some(1),
            max_steps: Some(steps),
            train_subset: Some(1000),
            val_count: Some(20),
            seed: Some(1),
            log_every: Some(log_every),
            checkpoint_every: Some(1000),
            sample_every: Some(0),
            ..TrainFlags::default()
        },
        data: Some(
            match std::env::var_os("MNIST_DIR").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d),
                None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"),
            },
        ),
        out,
        resume: false,
        json: true,
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
        assert_eq!(s.stages[0].steps, steps);
        counts.push(gpu.readbacks() - before);
        let _ = std::fs::remove_dir_all(out);
    }
    // Two logged rows (one loss-history read each) + the final checkpoint and best weights
    // (params, EMA, m, v each) = 10, for 10 steps as for 40.
    assert_eq!(counts, vec![10, 10], "readbacks per run");
}
