//! Parameter layout: every trainable tensor is a range of ONE flat f32 buffer (so Adam is one
//! dispatch over parameters, gradients, m and v), each range starting on an aligned offset so
//! it can be bound on its own. Gradients use the same layout.
//!
//! Tensors, in order (T tokens, D width, HK = heads * key_dim):
//!   `pos`              [T, D]     positional embedding E_pos, uniform(-0.05, 0.05)
//!   with `--classes`:
//!   `label`            [11, D]    the label embedding (digits 0..9, row 10 "no label"),
//!                                 uniform(-0.05, 0.05) as Keras' Embedding; added to the
//!                                 conditioning token
//!   `layer{l}.w_qkv`   [D, 3*HK]  Wq | Wk | Wv side by side (columns 0..HK, HK..2HK, 2HK..3HK)
//!   `layer{l}.b_qkv`   [3*HK]     bq | bk | bv, zeros
//!   `layer{l}.w_o`     [HK, D]    Wo
//!   `layer{l}.b_o`     [D]        bo, zeros
//!   with `--mlp F` (F > 0), after them:
//!   `layer{l}.w_1`     [D, F]     Glorot uniform (Keras' Dense default)
//!   `layer{l}.b_1`     [F]        zeros
//!   `layer{l}.w_2`     [F, D]     Glorot uniform
//!   `layer{l}.b_2`     [D]        zeros
//!   with `--skip pixel-mixture`, last:
//!   `skip.prior`       [3, P, D]  the skip's per-position prior in the patch tokens' layout
//!                                 (rows: background fraction, ink mean, ink variance; see
//!                                 reference::skip::pixel_prior), NOT trained: the backward
//!                                 leaves its gradient zero, so Adam never moves it
//! Head h of Q (K, V) is columns h*key_dim .. (h+1)*key_dim of its block.

use crate::config::{ModelConfig, Skip};
use crate::math::prior::PixelPrior;
use crate::math::rng;

/// How a tensor is initialised (Keras' defaults for `MultiHeadAttention`, docs/model.md §3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    /// Uniform in (-limit, limit).
    Uniform(f32),
    /// `skip.prior`'s rows [3, ..] filled with the global prior (PixelPrior::GLOBAL), which
    /// `train` replaces with the data's per-position one. Not a trained tensor.
    Prior,
}

/// One parameter tensor: name, shape, first element in the flat buffer, initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub init: Init,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// Whether training changes this tensor (all but `skip.prior`).
    pub fn trained(&self) -> bool {
        self.init != Init::Prior
    }
}

/// All parameter tensors of a model and the size of the flat buffer holding them.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    /// Elements in the flat buffer, padding included.
    pub total: usize,
}

/// Offsets are multiples of this many bytes: the largest storage-offset alignment WebGPU
/// allows an adapter to require.
pub const PARAM_ALIGN_BYTES: usize = 256;

/// Offsets of a checkpoint's (f32) layout are multiples of this many elements.
pub const PARAM_ALIGN: usize = PARAM_ALIGN_BYTES / 4;

/// First RNG stream of the initialisation; tensor i uses stream `INIT_STREAM + i`.
pub const INIT_STREAM: u32 = 1 << 16;

impl ParamLayout {
    /// The layout of f32 parameters: a checkpoint's, and training's.
    pub fn new(config: &ModelConfig) -> ParamLayout {
        Self::aligned(config, PARAM_ALIGN)
    }

    /// The layout for elements of `bytes` bytes (2: f16 weights), offsets still on
    /// [`PARAM_ALIGN_BYTES`].
    pub fn for_element_bytes(config: &ModelConfig, bytes: usize) -> ParamLayout {
        Self::aligned(config, PARAM_ALIGN_BYTES / bytes)
    }

    /// `values` (in this layout) placed in layout `to` of the same tensors; padding zero.
    pub fn relayout(&self, values: &[f32], to: &ParamLayout) -> Vec<f32> {
        let mut out = vec![0.0; to.total];
        for (a, b) in self.tensors.iter().zip(&to.tensors) {
            assert_eq!(
                a.name, b.name,
                "relayout between layouts of different models"
            );
            out[b.range()].copy_from_slice(&values[a.range()]);
        }
        out
    }

    fn aligned(config: &ModelConfig, align: usize) -> ParamLayout {
        let g = &config.geometry;
        let (t, d, hk) = (g.tokens() as usize, g.dim() as usize, config.hk() as usize);
        let (h, k) = (config.heads as f32, config.key_dim as f32);
        let df = d as f32;
        // Keras (tf 2.x) fans of EinsumDense kernels: (D, H, K) for Q/K/V, (H, K, D) for output.
        let qkv_limit = (6.0 / (h * df + k * df)).sqrt();
        let out_limit = (6.0 / (k * h + df * h)).sqrt();
        let mut tensors = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>, init: Init| {
            let len: usize = shape.iter().product();
            tensors.push(TensorSpec {
                name,
                shape,
                offset,
                init,
            });
            offset += len.div_ceil(align) * align;
        };
        push("pos".into(), vec![t, d], Init::Uniform(0.05));
        if config.classes {
            let rows = crate::config::NO_LABEL as usize + 1;
            push("label".into(), vec![rows, d], Init::Uniform(0.05));
        }
        for l in 0..config.layers {
            push(
                format!("layer{l}.w_qkv"),
                vec![d, 3 * hk],
                Init::Uniform(qkv_limit),
            );
            push(format!("layer{l}.b_qkv"), vec![3 * hk], Init::Zeros);
            push(
                format!("layer{l}.w_o"),
                vec![hk, d],
                Init::Uniform(out_limit),
            );
            push(format!("layer{l}.b_o"), vec![d], Init::Zeros);
            if config.mlp > 0 {
                let f = config.mlp as usize;
                let glorot = (6.0 / (df + f as f32)).sqrt();
                push(format!("layer{l}.w_1"), vec![d, f], Init::Uniform(glorot));
                push(format!("layer{l}.b_1"), vec![f], Init::Zeros);
                push(format!("layer{l}.w_2"), vec![f, d], Init::Uniform(glorot));
                push(format!("layer{l}.b_2"), vec![d], Init::Zeros);
            }
        }
        if config.skip == Skip::PixelMixture {
            push(
                "skip.prior".into(),
                vec![3, g.patches() as usize, d],
                Init::Prior,
            );
        }
        ParamLayout {
            tensors,
            total: offset,
        }
    }

    /// The tensor called `name` (panics on an unknown name: a programming error).
    pub fn get(&self, name: &str) -> &TensorSpec {
        self.find(name)
            .unwrap_or_else(|| panic!("no parameter tensor named {name}"))
    }

    /// The tensor called `name`, if this layout has one.
    pub fn find(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Initial values (padding is zero), reproducible from `seed` on any machine: tensor i's
    /// element j is uniform from Philox bits at (seed, step 0, stream INIT_STREAM + i, j).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut out = vec![0.0; self.total];
        for (i, t) in self.tensors.iter().enumerate() {
            match t.init {
                Init::Zeros => {}
                Init::Uniform(limit) => {
                    for (j, v) in out[t.range()].iter_mut().enumerate() {
                        let b = rng::bits(seed, 0, INIT_STREAM + i as u32, j as u32)[0];
                        let u = (b >> 8) as f32 / 16_777_216.0; // [0, 1)
                        *v = (2.0 * u - 1.0) * limit;
                    }
                }
                Init::Prior => {
                    let p = PixelPrior::GLOBAL;
                    let rows = out[t.range()].chunks_exact_mut(t.len() / 3);
                    for (row, v) in rows.zip([p.frac, p.ink_mean, p.ink_var]) {
                        row.fill(v as f32);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::recipe::Preset;

    #[test]
    fn seed_layout_matches_spec() {
        let config = Preset::Seed.model();
        let l = ParamLayout::new(&config);
        let n: usize = l.tensors.iter().map(|t| t.len()).sum();
        assert_eq!(n as u64, config.parameter_count());
        assert!(l.tensors.iter().all(|t| t.offset % PARAM_ALIGN == 0));
        match (l.get("layer0.w_qkv").init, l.get("layer2.w_o").init) {
            (Init::Uniform(a), Init::Uniform(b)) => {
                assert!((a - 0.0124).abs() < 1e-4, "{a}");
                assert!((b - 0.0266).abs() < 1e-4, "{b}");
            }
            other => panic!("{other:?}"),
        }
        let p = l.init(7);
        let w = &p[l.get("layer0.w_qkv").range()];
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max < 0.0125 && max > 0.012, "{max}");
        assert!(p[l.get("layer1.b_qkv").range()].iter().all(|&v| v == 0.0));
        assert_ne!(l.init(8), p);
    }
}
