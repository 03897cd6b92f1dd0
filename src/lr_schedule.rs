//! The learning rate of each training step: an optional linear warm-up, then the constant
//! `--lr`, then an optional cosine decay to `--lr-min` over the run's last `--decay-steps`
//! steps (the "warmup-stable-decay" schedule). The seed trains at a constant rate: both
//! phases default to 0 steps.
//!
//! The rate is a function of the global step only, so a resumed run continues the same
//! schedule, and a constant-rate run can be finished with a decay by resuming it with a
//! larger `--max-steps` and `--decay-steps`. The host computes it in f64 and hands it to
//! Adam's per-step uniform write (no extra GPU work).

use crate::error::{Error, Result};

/// The schedule of one run (steps are 0-based update indices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The rate between warm-up and decay.
    pub lr: f32,
    /// Steps of linear warm-up: step s < warmup uses lr (s + 1) / warmup.
    pub warmup: u64,
    /// Steps of cosine decay at the end of the run.
    pub decay_steps: u64,
    /// The rate the decay ends at (the last step's rate).
    pub lr_min: f32,
    /// Steps in the whole run (the decay ends at step total - 1).
    pub total: u64,
}

impl LrSchedule {
    /// A constant rate (the seed's schedule).
    pub fn constant(lr: f32) -> LrSchedule {
        LrSchedule {
            lr,
            warmup: 0,
            decay_steps: 0,
            lr_min: lr,
            total: u64::MAX,
        }
    }

    /// Checks the phases fit the run: a positive finite rate, lr_min in [0, lr], and warm-up
    /// plus decay no longer than `total` steps.
    pub fn new(
        lr: f32,
        warmup: u64,
        decay_steps: u64,
        lr_min: f32,
        total: u64,
    ) -> Result<LrSchedule> {
        let bad = |m: String| Err(Error::config(m));
        if !(lr > 0.0 && lr.is_finite()) {
            return bad(format!("--lr must be positive, got {lr}"));
        }
        if !(lr_min >= 0.0 && lr_min <= lr) {
            return bad(format!(
                "--lr-min must be in [0, --lr = {lr}], got {lr_min}"
            ));
        }
        if warmup.saturating_add(decay_steps) > total {
            return bad(format!(
                "--warmup {warmup} plus --decay-steps {decay_steps} exceed the run's {total} steps \
                 (set by --max-steps, or --epochs times the steps per epoch)"
            ));
        }
        Ok(LrSchedule {
            lr,
            warmup,
            decay_steps,
            lr_min,
            total,
        })
    }

    /// The first step of the decay (`total` when there is none).
    pub fn decay_start(&self) -> u64 {
        self.total - self.decay_steps
    }

    /// The rate of step `step` (0-based).
    pub fn at(&self, step: u64) -> f32 {
        let lr = self.lr as f64;
        let mut rate = lr;
        if step >= self.decay_start() && self.decay_steps > 0 {
            // Progress 1/D .. 1 over the decay: the last step lands on lr_min.
            let p = ((step - self.decay_start() + 1) as f64 / self.decay_steps as f64).min(1.0);
            let min = self.lr_min as f64;
            rate = min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        }
        if step < self.warmup {
            rate *= (step + 1) as f64 / self.warmup as f64;
        }
        rate as f32
    }
}

impl std::fmt::Display for LrSchedule {
    /// "lr 0.001", with the warm-up and decay when there are any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Six significant digits: lr / 10 in f32 prints as 0.0001, not 0.000100000005.
        let short = |x: f32| format!("{:.5e}", x).parse::<f64>().unwrap();
        write!(f, "lr {}", short(self.lr))?;
        if self.warmup > 0 {
            write!(f, " after {} warm-up steps", self.warmup)?;
        }
        if self.decay_steps > 0 {
            write!(
                f,
                ", cosine decay to {} over steps {}..{}",
                short(self.lr_min),
                self.decay_start() + 1,
                self.total
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::constant(1e-3);
        for step in [0, 1, 1000, u64::MAX - 1] {
            assert_eq!(s.at(step), 1e-3);
        }
        let s = LrSchedule::new(1e-3, 0, 0, 1e-4, 100).unwrap();
        assert!((0..100).all(|k| s.at(k) == 1e-3));
    }

    #[test]
    fn warmup_rises_linearly_then_holds() {
        let s = LrSchedule::new(1e-3, 10, 0, 0.0, 100).unwrap();
        assert!((s.at(0) - 1e-4).abs() < 1e-10);
        assert!((s.at(4) - 5e-4).abs() < 1e-10);
        assert_eq!(s.at(9), 1e-3);
        assert_eq!(s.at(10), 1e-3);
        assert_eq!(s.at(99), 1e-3);
        assert!((0..9).all(|k| s.at(k) < s.at(k + 1)));
    }

    #[test]
    fn decay_is_a_half_cosine_ending_at_lr_min() {
        let s = LrSchedule::new(1e-3, 0, 100, 1e-4, 1000).unwrap();
        assert_eq!(s.decay_start(), 900);
        assert_eq!(s.at(899), 1e-3);
        // Halfway (p = 1/2): the mean of lr and lr_min.
        assert!((s.at(949) - 5.5e-4).abs() < 1e-9, "{}", s.at(949));
        assert!((s.at(999) - 1e-4).abs() < 1e-10);
        // Past the end (a run resumed with a larger --max-steps but the same schedule) it stays.
        assert!((s.at(5000) - 1e-4).abs() < 1e-10);
        assert!((900..999).all(|k| s.at(k) > s.at(k + 1)));
        // First decay step: a small drop (p = 1/100).
        let first = 1e-4 + 9e-4 * 0.5 * (1.0 + (std::f64::consts::PI / 100.0).cos());
        assert!((s.at(900) as f64 - first).abs() < 1e-9);
    }

    #[test]
    fn warmup_and_decay_together() {
        let s = LrSchedule::new(2e-3, 4, 4, 0.0, 8).unwrap();
        let r: Vec<f32> = (0..8).map(|k| s.at(k)).collect();
        assert!(
            (r[0] - 5e-4).abs() < 1e-9 && (r[3] - 2e-3).abs() < 1e-9,
            "{r:?}"
        );
        assert!(r[4] < 2e-3 && r[7] == 0.0, "{r:?}");
    }

    #[test]
    fn display_names_the_phases() {
        assert_eq!(LrSchedule::constant(1e-3).to_string(), "lr 0.001");
        let s = LrSchedule::new(1e-3, 10, 100, 1e-4, 1000).unwrap();
        assert_eq!(
            s.to_string(),
            "lr 0.001 after 10 warm-up steps, cosine decay to 0.0001 over steps 901..1000"
        );
        let s = LrSchedule::new(1e-3, 0, 100, 1e-3 / 10.0, 1000).unwrap();
        assert!(
            s.to_string().ends_with("to 0.0001 over steps 901..1000"),
            "{s}"
        );
    }

    #[test]
    fn impossible_schedules_are_refused() {
        let e = |r: Result<LrSchedule>| r.unwrap_err().to_string();
        assert!(e(LrSchedule::new(1e-3, 60, 50, 0.0, 100)).contains("exceed the run's 100 steps"));
        assert!(e(LrSchedule::new(1e-3, 0, 10, 2e-3, 100)).contains("--lr-min"));
        assert!(e(LrSchedule::new(1e-3, 0, 10, -1.0, 100)).contains("--lr-min"));
        assert!(e(LrSchedule::new(0.0, 0, 0, 0.0, 100)).contains("--lr"));
        assert!(e(LrSchedule::new(f32::NAN, 0, 0, 0.0, 100)).contains("--lr"));
    }
}
