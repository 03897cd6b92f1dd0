//! The sampling schedule (docs/model.md §5): the levels of the n' steps, their step scales and noise
//! coefficients. Plain math that the GPU sampler and the CPU reference share.

use crate::error::{Error, Result};

/// The schedule of a sampling run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// a, the training noising factor.
    pub alpha: f32,
    /// n_max of training.
    pub n_max: u32,
    /// n', the number of denoising steps.
    pub steps: u32,
    /// s, the step scale (1 plain, 1.5 "more trust in the model").
    pub scale: f32,
    /// E in [0, 1], the share of fresh noise in each step (0: the seed's deterministic loop).
    pub eta: f32,
    /// Clamp each step's digit estimate to the pixel range (`--clip`; the seed does not).
    pub clip: bool,
    /// `--background N` (an extension; 0: off): at the steps whose level is at most N, each
    /// pixel's predicted noise is blended with the exact noise of a background pixel, by the
    /// posterior that it is background under `--skip mixture`'s prior
    /// (`reference::sample::background_blend`).
    pub background: u32,
    /// `--low-step-scale S --low-from N` (an extension; `low_from` 0: off): the step scale
    /// at the steps whose level is at most N, `scale` above it (e.g. 1 where the shapes are
    /// decided, 1.5 where the strokes are).
    pub low_scale: f32,
    pub low_from: u32,
}

impl Schedule {
    /// The seed's loop: n' = `steps` at scale `scale` throughout, deterministic, no clip, no
    /// background blend (the other flags are set on the result).
    pub fn plain(alpha: f32, n_max: u32, steps: u32, scale: f32) -> Schedule {
        Schedule {
            alpha,
            n_max,
            steps,
            scale,
            eta: 0.0,
            clip: false,
            background: 0,
            low_scale: scale,
            low_from: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::config("steps must be at least 1"));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::config(format!(
                "step-scale must be positive, got {}",
                self.scale
            )));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::config(format!(
                "eta must be in [0, 1], got {}",
                self.eta
            )));
        }
        if self.low_from > 0 && !(self.low_scale > 0.0 && self.low_scale.is_finite()) {
            return Err(Error::config(format!(
                "low-step-scale must be positive, got {}",
                self.low_scale
            )));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) || self.n_max == 0 {
            return Err(Error::config(format!(
                "alpha must be in (0, 1) and n_max >= 1, got {} and {}",
                self.alpha, self.n_max
            )));
        }
        Ok(())
    }

    /// a' = a^(n_max / n') (computed in f64).
    pub fn alpha_prime(&self) -> f64 {
        (self.alpha as f64).powf(self.n_max as f64 / self.steps as f64)
    }

    /// Conditioning value of step k (0-based): a'^(n' - k).
    pub fn table(&self) -> Vec<f32> {
        let ap = self.alpha_prime();
        (0..self.steps)
            .map(|k| ap.powi((self.steps - k) as i32) as f32)
            .collect()
    }

    /// The first step k whose level (n' - k) n_max / n' is at most `level` (`steps` when none
    /// is, as for `level` 0).
    pub fn first_step_at_or_below(&self, level: u32) -> u32 {
        let n = self.steps as u64;
        let lowest = (level as u64 * n / self.n_max as u64).min(n);
        (n - lowest) as u32
    }

    /// How many of the first steps are at levels of at least `level` (steps k with
    /// (n' - k) n_max / n' >= level; all n' for level 0).
    pub fn steps_at_or_above(&self, level: u32) -> u32 {
        let (n, n_max) = (self.steps as u64, self.n_max as u64);
        let lowest = (level as u64 * n).div_ceil(n_max);
        (n + 1).saturating_sub(lowest).min(n) as u32
    }

    /// The first step of `--background` ([`Self::first_step_at_or_below`] its level).
    pub fn background_from(&self) -> u32 {
        self.first_step_at_or_below(self.background)
    }

    /// The step scale s of step k: `low_scale` from the first step at or below `low_from`
    /// (when it is set), else `scale`.
    pub fn scale_at(&self, k: u32) -> f32 {
        if self.low_from > 0 && k >= self.first_step_at_or_below(self.low_from) {
            self.low_scale
        } else {
            self.scale
        }
    }

    /// a'^s of step k, the factor it divides by.
    pub fn keep(&self, k: u32) -> f32 {
        self.alpha_prime().powf(self.scale_at(k) as f64) as f32
    }

    /// Per step k, the stochastic step's additions to the seed's update (see the module
    /// header): A += c0 N_hat + c1 Z with c0 = (1 - a'^m) (sqrt(1 - r^2) - 1),
    /// c1 = (1 - a'^m) r, m = n' - k - s (s the step's scale). All zero when eta = 0 or
    /// m <= 0.
    pub fn noise_coefs(&self) -> Vec<[f32; 2]> {
        let ap = self.alpha_prime();
        let ratio = |j: f64| (1.0 - ap.powf(j)) / ap.powf(j);
        (0..self.steps)
            .map(|k| {
                let n = (self.steps - k) as f64;
                let m = n - self.scale_at(k) as f64;
                if self.eta == 0.0 || m <= 0.0 {
                    return [0.0, 0.0];
                }
                let q = ratio(m) / ratio(n);
                let r = self.eta as f64 * (1.0 - q * q).max(0.0).sqrt();
                let sigma = 1.0 - ap.powf(m);
                [
                    (sigma * ((1.0 - r * r).sqrt() - 1.0)) as f32,
                    (sigma * r) as f32,
                ]
            })
            .collect()
    }

    /// What the GPU loop reads per step k: (a'^(n'-k), a'^s, c0, c1) ([`Self::table`],
    /// [`Self::keep`], [`Self::noise_coefs`]).
    pub fn step_table(&self) -> Vec<[f32; 4]> {
        let coefs = self.noise_coefs();
        self.table()
            .iter()
            .zip(coefs)
            .enumerate()
            .map(|(k, (&u, [c0, c1]))| [u, self.keep(k as u32), c0, c1])
            .collect()
    }
}
