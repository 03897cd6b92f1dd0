//! The learning rate of each training step: an optional linear warm-up, then the constant
//! rate, then an optional cosine decay to `lr-min` over the run's end (the
//! "warmup-stable-decay" schedule). The seed trains at a constant rate: both phases are off.
//!
//! The end is counted in steps (`decay-steps`, or `decay-fraction` of the run's steps), or,
//! for a run with a wall-clock budget (`minutes`), in seconds (`decay-fraction` of the
//! budget), so that a 10-minute run decays in its own last minutes. The rate is a function of
//! the global step (and of the seconds trained, counted across resumes), so a resumed run
//! continues the same schedule, and a constant-rate run can be finished with a decay by
//! resuming it with a larger `max-steps` and `decay-steps`. The host computes it in f64 and
//! hands it to Adam's per-step uniform write (no extra GPU work).

use crate::error::{Error, Result};

/// How long a run is: the schedule's decay ends at its end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunLength {
    /// A number of steps (`--max-steps`, else all epochs).
    Steps(u64),
    /// A wall-clock budget in seconds (`--minutes`).
    Seconds(f64),
}

/// The schedule of one run (steps are 0-based update indices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The rate between warm-up and decay.
    pub lr: f32,
    /// Steps of linear warm-up: step s < warmup uses lr (s + 1) / warmup.
    pub warmup: u64,
    /// The rate the decay ends at (the last step's rate).
    pub lr_min: f32,
    /// The decay, if any: its start and end, in steps or seconds.
    pub decay: Option<Decay>,
}

/// A cosine decay from `start` to `end`, both in the unit of `length`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decay {
    pub start: f64,
    pub end: f64,
    pub length: RunLength,
}

impl LrSchedule {
    /// A constant rate (the seed's schedule).
    pub fn constant(lr: f32) -> LrSchedule {
        LrSchedule {
            lr,
            warmup: 0,
            lr_min: lr,
            decay: None,
        }
    }

    /// Checks the phases fit the run: a positive finite rate, lr_min in [0, lr], at most one
    /// of `decay_steps` (steps at the end of a run of known steps) and `decay_fraction` (a
    /// share of the run at its end, in [0, 1)), and a warm-up (plus a decay in steps) no
    /// longer than a run of known steps.
    pub fn new(
        lr: f32,
        warmup: u64,
        decay_steps: u64,
        decay_fraction: f64,
        lr_min: f32,
        length: RunLength,
    ) -> Result<LrSchedule> {
        let bad = |m: String| Err(Error::config(m));
        if !(lr > 0.0 && lr.is_finite()) {
            return bad(format!("lr must be positive, got {lr}"));
        }
        if !(lr_min >= 0.0 && lr_min <= lr) {
            return bad(format!("lr-min must be in [0, lr = {lr}], got {lr_min}"));
        }
        if !(0.0..1.0).contains(&decay_fraction) {
            return bad(format!(
                "decay-fraction must be in [0, 1), got {decay_fraction}"
            ));
        }
        if decay_steps > 0 && decay_fraction > 0.0 {
            return bad("set decay-steps or decay-fraction, not both".into());
        }
        let decay = match length {
            RunLength::Steps(total) => {
                let d = if decay_fraction > 0.0 {
                    (decay_fraction * total as f64).round() as u64
                } else {
                    decay_steps
                };
                if warmup.saturating_add(d) > total {
                    return bad(format!(
                        "warmup {warmup} plus a decay of {d} steps exceed the run's {total} steps \
                         (set by max-steps, or epochs times the steps per epoch)"
                    ));
                }
                (d > 0).then(|| Decay {
                    start: (total - d) as f64,
                    end: total as f64,
                    length,
                })
            }
            RunLength::Seconds(budget) => {
                if decay_steps > 0 {
                    return bad(
                        "decay-steps counts steps, and a run with minutes has no known number \
                         of steps: use decay-fraction"
                            .into(),
                    );
                }
                (decay_fraction > 0.0).then_some(Decay {
                    start: budget * (1.0 - decay_fraction),
                    end: budget,
                    length,
                })
            }
        };
        Ok(LrSchedule {
            lr,
            warmup,
            lr_min,
            decay,
        })
    }

    /// The rate of step `step` (0-based), taken `seconds` into the run.
    pub fn at(&self, step: u64, seconds: f64) -> f32 {
        let lr = self.lr as f64;
        let mut rate = lr;
        if let Some(d) = &self.decay {
            // Progress over the decay: in steps 1/D .. 1 (the last step lands on lr_min), in
            // seconds the share of the decay's time gone.
            let p = match d.length {
                RunLength::Steps(_) => (step as f64 + 1.0 - d.start) / (d.end - d.start),
                RunLength::Seconds(_) => (seconds - d.start) / (d.end - d.start),
            };
            if p > 0.0 {
                let p = p.min(1.0);
                let min = self.lr_min as f64;
                rate = min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
            }
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
        match &self.decay {
            Some(
                d @ Decay {
                    length: RunLength::Steps(_),
                    ..
                },
            ) => write!(
                f,
                ", cosine decay to {} over steps {}..{}",
                short(self.lr_min),
                d.start as u64 + 1,
                d.end as u64
            ),
            Some(d) => write!(
                f,
                ", cosine decay to {} over the last {:.1} of {:.1} minutes",
                short(self.lr_min),
                (d.end - d.start) / 60.0,
                d.end / 60.0
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunLength::{Seconds, Steps};

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::constant(1e-3);
        for step in [0, 1, 1000, u64::MAX - 1] {
            assert_eq!(s.at(step, 0.0), 1e-3);
        }
        let s = LrSchedule::new(1e-3, 0, 0, 0.0, 1e-4, RunLength::Steps(100)).unwrap();
        assert!((0..100).all(|k| s.at(k, 0.0) == 1e-3));
    }

    #[test]
    fn warmup_rises_linearly_then_holds() {
        let s = LrSchedule::new(1e-3, 10, 0, 0.0, 0.0, RunLength::Steps(100)).unwrap();
        assert!((s.at(0, 0.0) - 1e-4).abs() < 1e-10);
        assert!((s.at(4, 0.0) - 5e-4).abs() < 1e-10);
        assert_eq!(s.at(9, 0.0), 1e-3);
        assert_eq!(s.at(10, 0.0), 1e-3);
        assert_eq!(s.at(99, 0.0), 1e-3);
        assert!((0..9).all(|k| s.at(k, 0.0) < s.at(k + 1, 0.0)));
    }

    #[test]
    fn decay_is_a_half_cosine_ending_at_lr_min() {
        let s = LrSchedule::new(1e-3, 0, 100, 0.0, 1e-4, RunLength::Steps(1000)).unwrap();
        assert_eq!(s.decay.map(|d| d.start), Some(900.0));
        assert_eq!(s.at(899, 0.0), 1e-3);
        // Halfway (p = 1/2): the mean of lr and lr_min.
        assert!((s.at(949, 0.0) - 5.5e-4).abs() < 1e-9, "{}", s.at(949, 0.0));
        assert!((s.at(999, 0.0) - 1e-4).abs() < 1e-10);
        // Past the end (a run resumed with a larger --max-steps but the same schedule) it stays.
        assert!((s.at(5000, 0.0) - 1e-4).abs() < 1e-10);
        assert!((900..999).all(|k| s.at(k, 0.0) > s.at(k + 1, 0.0)));
        // First decay step: a small drop (p = 1/100).
        let first = 1e-4 + 9e-4 * 0.5 * (1.0 + (std::f64::consts::PI / 100.0).cos());
        assert!((s.at(900, 0.0) as f64 - first).abs() < 1e-9);
    }

    #[test]
    fn warmup_and_decay_together() {
        let s = LrSchedule::new(2e-3, 4, 4, 0.0, 0.0, RunLength::Steps(8)).unwrap();
        let r: Vec<f32> = (0..8).map(|k| s.at(k, 0.0)).collect();
        assert!(
            (r[0] - 5e-4).abs() < 1e-9 && (r[3] - 2e-3).abs() < 1e-9,
            "{r:?}"
        );
        assert!(r[4] < 2e-3 && r[7] == 0.0, "{r:?}");
    }

    #[test]
    fn display_names_the_phases() {
        assert_eq!(LrSchedule::constant(1e-3).to_string(), "lr 0.001");
        let s = LrSchedule::new(1e-3, 10, 100, 0.0, 1e-4, RunLength::Steps(1000)).unwrap();
        assert_eq!(
            s.to_string(),
            "lr 0.001 after 10 warm-up steps, cosine decay to 0.0001 over steps 901..1000"
        );
        let s = LrSchedule::new(1e-3, 0, 100, 0.0, 1e-3 / 10.0, RunLength::Steps(1000)).unwrap();
        assert!(
            s.to_string().ends_with("to 0.0001 over steps 901..1000"),
            "{s}"
        );
    }

    #[test]
    fn impossible_schedules_are_refused() {
        let e = |r: Result<LrSchedule>| r.unwrap_err().to_string();
        assert!(e(LrSchedule::new(
            1e-3,
            60,
            50,
            0.0,
            0.0,
            RunLength::Steps(100)
        ))
        .contains("exceed the run's 100 steps"));
        assert!(e(LrSchedule::new(
            1e-3,
            0,
            10,
            0.0,
            2e-3,
            RunLength::Steps(100)
        ))
        .contains("lr-min"));
        assert!(e(LrSchedule::new(
            1e-3,
            0,
            10,
            0.0,
            -1.0,
            RunLength::Steps(100)
        ))
        .contains("lr-min"));
        assert!(e(LrSchedule::new(0.0, 0, 0, 0.0, 0.0, RunLength::Steps(100))).contains("lr must"));
        assert!(e(LrSchedule::new(
            f32::NAN,
            0,
            0,
            0.0,
            0.0,
            RunLength::Steps(100)
        ))
        .contains("lr must"));
    }

    #[test]
    fn decay_fraction_of_steps_is_decay_steps() {
        let by_fraction = LrSchedule::new(1e-3, 10, 0, 0.25, 1e-4, Steps(1000)).unwrap();
        let by_steps = LrSchedule::new(1e-3, 10, 250, 0.0, 1e-4, Steps(1000)).unwrap();
        assert_eq!(by_fraction, by_steps);
    }

    /// A budget of 600 s with decay-fraction 0.3: constant until 420 s, a half cosine to
    /// lr-min at 600 s, lr-min after it; the steps only count for the warm-up.
    #[test]
    fn decay_over_the_last_part_of_a_budget() {
        let s = LrSchedule::new(1e-3, 5, 0, 0.3, 1e-4, Seconds(600.0)).unwrap();
        assert!((s.at(0, 0.0) - 2e-4).abs() < 1e-10, "warm-up by steps");
        assert_eq!(s.at(100, 419.9), 1e-3);
        assert!(
            (s.at(100, 510.0) - 5.5e-4).abs() < 1e-9,
            "{}",
            s.at(100, 510.0)
        );
        assert!((s.at(100, 600.0) - 1e-4).abs() < 1e-10);
        assert!((s.at(100, 9000.0) - 1e-4).abs() < 1e-10);
        let r: Vec<f32> = (0..=18)
            .map(|k| s.at(100, 420.0 + 10.0 * k as f64))
            .collect();
        assert!(r.windows(2).all(|w| w[1] < w[0]), "{r:?}");
        assert_eq!(
            s.to_string(),
            "lr 0.001 after 5 warm-up steps, cosine decay to 0.0001 over the last 3.0 of 10.0 minutes"
        );
        // No decay: the budget only ends the run.
        let c = LrSchedule::new(1e-3, 0, 0, 0.0, 1e-4, Seconds(600.0)).unwrap();
        assert_eq!((c.at(0, 0.0), c.at(9, 599.0)), (1e-3, 1e-3));
    }

    #[test]
    fn decay_settings_that_do_not_fit_are_refused() {
        let e = |r: Result<LrSchedule>| r.unwrap_err().to_string();
        assert!(e(LrSchedule::new(1e-3, 0, 10, 0.0, 0.0, Seconds(60.0))).contains("decay-fraction"));
        assert!(e(LrSchedule::new(1e-3, 0, 10, 0.5, 0.0, Steps(100))).contains("not both"));
        for f in [1.0, -0.1, f64::NAN] {
            assert!(e(LrSchedule::new(1e-3, 0, 0, f, 0.0, Steps(100))).contains("decay-fraction"));
        }
        assert!(e(LrSchedule::new(1e-3, 60, 0, 0.5, 0.0, Steps(100))).contains("exceed"));
    }
}
