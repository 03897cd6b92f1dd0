//! Shapes and hyperparameters: the single source of truth for the geometry of patches and the
//! size of the model (docs/model.md §3). Kernels receive these values as `override` constants or uniforms.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Side of an MNIST image in pixels.
pub const IMAGE_SIZE: u32 = 28;
/// Pixels per image.
pub const PIXELS: u32 = IMAGE_SIZE * IMAGE_SIZE;

/// The range of the pixels in the model's scale: x = p/256 - 0.5, p in 0..=255, lies in
/// [PIXEL_LO, PIXEL_HI] (the sampler's `--clip` keeps its digit estimate there).
pub const PIXEL_LO: f32 = -0.5;
pub const PIXEL_HI: f32 = 0.5;

/// Mean of the training pixels in the model's scale, x = p/256 - 0.5, over all 60,000 MNIST
/// training digits (47,040,000 pixels).
pub const PIXEL_MEAN: f32 = -0.369_85;
/// Their variance.
pub const PIXEL_VAR: f32 = 0.094_19;
/// `--skip mixture`'s prior of a pixel: background (exactly PIXEL_LO, p = 0) with this
/// probability, else ink of mean INK_MEAN and variance INK_VAR (over the same 47,040,000
/// pixels: 80.88 % are 0).
pub const BACKGROUND_FRAC: f32 = 0.808_798;
pub const INK_MEAN: f32 = 0.180_693;
pub const INK_VAR: f32 = 0.117_870;

/// The digits a class-conditional model knows (labels 0..CLASSES).
pub const CLASSES: u32 = 10;
/// The label entry that means "no label": what label dropout trains and what classifier-free
/// guidance's unconditional call uses. The embedding has CLASSES + 1 rows.
pub const NO_LABEL: u32 = CLASSES;

/// What the model's output adds to its last layer for the predicted noise (an extension; the
/// seed's network is `Identity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Skip {
    /// The seed: the output is the last layer's x (whose x_start residual holds the noisy
    /// patch itself).
    #[default]
    Identity,
    /// The noisy patch A enters scaled by the noise level, as the best linear estimate of the
    /// noise, and the network's own part R = x - A is scaled by the size of what that
    /// estimate misses (EDM's preconditioning): out = c (A - a^n mean) + q R,
    /// c = s / (a^2n var + s^2), q = sqrt(a^2n var / (a^2n var + s^2)), s = 1 - a^n, with the
    /// training pixels' mean and variance.
    Wiener,
    /// As `wiener`, but the estimate is the posterior mean of the noise under a two-part
    /// prior of each pixel, background (exactly -0.5, 81 % of MNIST's pixels) or ink (a
    /// Gaussian), and q is the posterior's standard deviation, per pixel. It removes the
    /// noise from background pixels at low noise, which no linear estimate can.
    Mixture,
    /// As `mixture`, with a prior of its own for each of the 784 positions (background
    /// fraction, ink mean and variance of that pixel over the training digits): a pixel where
    /// no digit has ink is background with near certainty. The prior is a tensor of the
    /// checkpoint (`skip.prior`, not trained), which `train` computes from the data.
    #[value(name = "pixel-mixture")]
    #[serde(rename = "pixel-mixture")]
    PixelMixture,
}

/// How an image is cut into overlapping square patches.
///
/// Patch (i, j), i, j in 0..g, covers rows `i*P .. i*P + P + 2*O` and the same columns, so
/// neighbouring patches share a band `2*O` pixels wide; `g = (SIZE - 2*O) / P` must be exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub size: u32,
    pub patch: u32,
    pub overlap: u32,
}

impl Geometry {
    /// A validated geometry for 28x28 images.
    pub fn new(patch: u32, overlap: u32) -> Result<Self> {
        Self::with_size(IMAGE_SIZE, patch, overlap)
    }

    /// A validated geometry for `size`x`size` images; the error names the values and the
    /// nearest valid choices.
    pub fn with_size(size: u32, patch: u32, overlap: u32) -> Result<Self> {
        let fits = |p: u32, o: u32| p >= 1 && size > 2 * o && (size - 2 * o).is_multiple_of(p);
        if fits(patch, overlap) {
            return Ok(Geometry {
                size,
                patch,
                overlap,
            });
        }
        let patches: Vec<String> = if size > 2 * overlap {
            (1..=size - 2 * overlap)
                .filter(|&p| fits(p, overlap))
                .map(|p| p.to_string())
                .collect()
        } else {
            vec![]
        };
        let overlaps: Vec<String> = (0..size.div_ceil(2))
            .filter(|&o| fits(patch, o))
            .map(|o| o.to_string())
            .collect();
        let why = if patch == 0 {
            "the patch size must be at least 1".to_string()
        } else if size <= 2 * overlap {
            format!("2 x overlap must be less than the image size {size}")
        } else {
            format!(
                "{size} - 2 x {overlap} = {} is not a multiple of {patch}",
                size - 2 * overlap
            )
        };
        let mut hint = String::new();
        if !patches.is_empty() {
            hint += &format!("; with overlap {overlap} use patch {}", patches.join(", "));
        }
        if !overlaps.is_empty() {
            hint += &format!("; with patch {patch} use overlap {}", overlaps.join(", "));
        }
        Err(Error::config(format!(
            "impossible patch geometry: patch {patch}, overlap {overlap} on {size}x{size} images ({why}){hint}"
        )))
    }

    /// Patches per side, `g = (SIZE - 2*O) / P`.
    pub fn grid(&self) -> u32 {
        (self.size - 2 * self.overlap) / self.patch
    }
    /// Side of one patch including its overlap, `P + 2*O`.
    pub fn width(&self) -> u32 {
        self.patch + 2 * self.overlap
    }
    /// Values per patch (token width), `D = (P + 2*O)^2`.
    pub fn dim(&self) -> u32 {
        self.width() * self.width()
    }
    /// Number of image patches, `g^2`.
    pub fn patches(&self) -> u32 {
        self.grid() * self.grid()
    }
    /// Tokens per sample: the patches plus the conditioning token, `T = g^2 + 1`.
    pub fn tokens(&self) -> u32 {
        self.patches() + 1
    }
    /// Pixels per image.
    pub fn pixels(&self) -> u32 {
        self.size * self.size
    }

    /// Visits every (patch c, value d, pixel index) triple of one image: value d of patch c
    /// is a copy of that pixel (patch c = i g + j covers rows i P .. i P + P + 2 O and the
    /// same columns from j P).
    pub fn for_each_copy(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (grid, p, w, s) = (
            self.grid() as usize,
            self.patch as usize,
            self.width() as usize,
            self.size as usize,
        );
        for i in 0..grid {
            for j in 0..grid {
                for r in 0..w {
                    for c in 0..w {
                        f(i * grid + j, r * w + c, (i * p + r) * s + j * p + c);
                    }
                }
            }
        }
    }
}

/// The transformer's shape (docs/model.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub geometry: Geometry,
    /// L: attention layers.
    pub layers: u32,
    /// H: heads per layer.
    pub heads: u32,
    /// K: key (and value) width per head.
    pub key_dim: u32,
    /// F: hidden width of the feed-forward block after each attention layer (an extension;
    /// 0 = none, as in the seed). Checkpoints written before it existed read as 0.
    #[serde(default)]
    pub mlp: u32,
    /// The output's skip term (an extension; `Identity`, the seed's, for checkpoints written
    /// before it existed).
    #[serde(default)]
    pub skip: Skip,
    /// W of `--loss-weight-max` (an extension): a sample at noise level a^n weighs
    /// min(1 / q^2, W) in the loss, q the Wiener skip's residual scale there
    /// (`reference::loss::level_weight`); 1 (the seed's plain mean, and what checkpoints
    /// written before it existed read as) weighs every sample alike.
    #[serde(default = "one")]
    pub loss_weight_max: u32,
    /// Class-conditional (an extension, `--classes`): a learned embedding of the digit's
    /// label (CLASSES digits and NO_LABEL) is added to the conditioning token. Checkpoints
    /// written before it existed read as false (unconditional).
    #[serde(default)]
    pub classes: bool,
}

fn one() -> u32 {
    1
}

/// "1 layers, 8 heads x 32, mlp 256, patch 10 overlap 4" (the mlp part only when F > 0).
impl std::fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} layers, {} heads x {}",
            self.layers, self.heads, self.key_dim
        )?;
        if self.mlp > 0 {
            write!(f, ", mlp {}", self.mlp)?;
        }
        if let Some(v) = (self.skip != Skip::Identity)
            .then(|| clap::ValueEnum::to_possible_value(&self.skip))
            .flatten()
        {
            write!(f, ", {} skip", v.get_name())?;
        }
        if self.loss_weight_max > 1 {
            write!(f, ", loss weight <= {}", self.loss_weight_max)?;
        }
        let g = &self.geometry;
        write!(f, ", patch {} overlap {}", g.patch, g.overlap)?;
        if self.classes {
            write!(f, ", class-conditional")?;
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Validates that every size is positive.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("layers", self.layers),
            ("heads", self.heads),
            ("key-dim", self.key_dim),
            ("loss-weight-max", self.loss_weight_max),
        ] {
            if v == 0 {
                return Err(Error::config(format!("--{name} must be at least 1, got 0")));
            }
        }
        Ok(())
    }
    /// `H*K`, the width of Q, K and V.
    pub fn hk(&self) -> u32 {
        self.heads * self.key_dim
    }
    /// Number of trainable weights.
    pub fn parameter_count(&self) -> u64 {
        let (t, d, hk) = (
            self.geometry.tokens() as u64,
            self.geometry.dim() as u64,
            self.hk() as u64,
        );
        let f = self.mlp as u64;
        let mlp = if f > 0 { d * f + f + f * d + d } else { 0 };
        let per_layer = 3 * (d * hk + hk) + hk * d + d + mlp;
        let labels = if self.classes {
            (CLASSES as u64 + 1) * d
        } else {
            0
        };
        t * d + labels + self.layers as u64 * per_layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_geometry_names_values_and_alternatives() {
        let e = Geometry::new(7, 4).unwrap_err().to_string();
        assert!(e.contains("patch 7, overlap 4"), "{e}");
        assert!(
            e.contains("with overlap 4 use patch 1, 2, 4, 5, 10, 20"),
            "{e}"
        );
        assert!(e.contains("with patch 7 use overlap 0, 7"), "{e}");
        assert!(!e.contains('\n'));
        assert!(Geometry::new(0, 1).is_err());
        assert!(Geometry::new(1, 14).is_err());
        assert!(Geometry::new(2, 1).is_ok());
    }

    #[test]
    fn mlp_counts_its_weights_and_old_configs_read_as_none() {
        let t = crate::settings::recipe::Preset::Tiny.model();
        assert_eq!(t.mlp, 0);
        let m = ModelConfig { mlp: 7, ..t };
        // W_1 [100, 7] + b_1 [7] + W_2 [7, 100] + b_2 [100] per layer.
        assert_eq!(
            m.parameter_count() - t.parameter_count(),
            700 + 7 + 700 + 100
        );
        assert_eq!(
            m.to_string(),
            "1 layers, 2 heads x 8, mlp 7, patch 6 overlap 2"
        );
        assert_eq!(t.to_string(), "1 layers, 2 heads x 8, patch 6 overlap 2");
        // A configuration written before --mlp existed.
        let mut json = serde_json::to_value(t).unwrap();
        json.as_object_mut().unwrap().remove("mlp");
        assert_eq!(serde_json::from_value::<ModelConfig>(json).unwrap(), t);
        let round: ModelConfig = serde_json::from_value(serde_json::to_value(m).unwrap()).unwrap();
        assert_eq!(round, m);
    }

    #[test]
    fn classes_count_their_table_and_old_configs_read_as_unconditional() {
        let t = crate::settings::recipe::Preset::Tiny.model();
        assert!(!t.classes);
        let c = ModelConfig { classes: true, ..t };
        // The label table [11, D]: 10 digits and "no label".
        let d = t.geometry.dim() as u64;
        assert_eq!(c.parameter_count() - t.parameter_count(), 11 * d);
        assert!(c.to_string().ends_with(", class-conditional"), "{c}");
        // A configuration written before --classes existed.
        let mut json = serde_json::to_value(t).unwrap();
        json.as_object_mut().unwrap().remove("classes");
        assert_eq!(serde_json::from_value::<ModelConfig>(json).unwrap(), t);
        let round: ModelConfig = serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}
