//! A run's models in one file, for the browser page (`export-web`): the weights the sampler
//! uses of the model, its guide and each refiner (as f32, or f16 to halve the download), and
//! the run's `[sample]` settings, as one safetensors file. [`Bundle::from_bytes`] reads it
//! (or a plain checkpoint, sampled with the article's sampler); [`Bundle::settings_with`]
//! checks the page's settings as `sample` does, and [`Bundle::upload`] makes the sampler
//! `sample --run` makes of the same settings.
//!
//! Tensor names: `<part>.<tensor>`, part `model`, `guide` or `refiner<i>`, tensor one of
//! [`ParamLayout`]'s. Metadata: `format` ([`BUNDLE_FORMAT`]) and `bundle`, the JSON of
//! [`Header`]: the sample settings (whose model paths are the part names) and each part's
//! run configuration.

use super::command::{check_stack_of, checkpoint_weights, upload_model, LoadedModel};
use super::{Classes, Guide, Sampler, SamplerModel, Schedule, Stack};
use crate::checkpoint::{read_state_bytes, RunConfig, FORMAT};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::ParamLayout;
use crate::settings::sample::{Precision, SampleFlags, SampleSettings, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Marks a bundle and its version.
pub const BUNDLE_FORMAT: &str = "wgpu-diffusion-bundle/1";

/// How a bundle stores its weights.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 4 bytes a weight: the weights exactly.
    F32,
    /// 2 bytes a weight: each weight rounded to the nearest f16 (relative error at most
    /// 2^-11 for weights of magnitude 2^-14 to 65504).
    F16,
}

/// One model of a bundle.
pub struct Part {
    /// `model`, `guide` or `refiner<i>`: its path in the bundle's settings.
    pub name: String,
    pub config: RunConfig,
    /// The weights the sampler uses, in `config`'s layout's flat order.
    pub weights: Vec<f32>,
}

/// The sampler's models and settings, read from a bundle or a checkpoint.
pub struct Bundle {
    /// The `[sample]` settings, their model paths the parts' names.
    pub settings: SampleSettings,
    pub parts: Vec<Part>,
    /// How the file stored the weights.
    pub storage: Storage,
}

/// A bundle's metadata.
#[derive(Serialize, Deserialize)]
struct Header {
    sample: SampleSettings,
    storage: Storage,
    parts: Vec<PartHeader>,
}

/// A bundle's metadata as read: the settings it names over the defaults (a bundle written
/// before a setting existed gets that setting's default).
#[derive(Deserialize)]
struct HeaderIn {
    sample: SampleFlags,
    storage: Storage,
    parts: Vec<PartHeader>,
}

#[derive(Serialize, Deserialize)]
struct PartHeader {
    name: String,
    config: RunConfig,
}

impl Bundle {
    /// The models `s` names, each with the weights `s.weights` picks, read from their
    /// checkpoints; the settings' paths become the parts' names.
    pub fn of_settings(s: &SampleSettings) -> Result<Bundle> {
        let mut settings = s.clone();
        let mut parts = Vec::new();
        let mut take = |path: &mut PathBuf, name: String| -> Result<()> {
            let bytes = crate::checkpoint::read(path)?;
            let file = path.display().to_string();
            let config = read_state_bytes(&bytes, &file)?.config;
            let (weights, used) = checkpoint_weights(&bytes, &file, &config, s.weights)?;
            if used != s.weights {
                eprintln!("note: {file} has no EMA weights; exporting the raw weights");
            }
            parts.push(Part {
                name: name.clone(),
                config,
                weights,
            });
            *path = PathBuf::from(name);
            Ok(())
        };
        take(
            settings.checkpoint.as_mut().expect("resolved"),
            "model".into(),
        )?;
        if let Some(g) = settings.guide.as_mut() {
            take(g, "guide".into())?;
        }
        for (i, r) in settings.refiner.iter_mut().enumerate() {
            take(&mut r.checkpoint, format!("refiner{i}"))?;
        }
        Ok(Bundle {
            settings,
            parts,
            storage: Storage::F32,
        })
    }

    /// The bundle as a safetensors file, its weights stored as `storage`.
    pub fn to_bytes(&self, storage: Storage) -> Result<Vec<u8>> {
        let header = Header {
            sample: self.settings.clone(),
            storage,
            parts: (self.parts.iter())
                .map(|p| PartHeader {
                    name: p.name.clone(),
                    config: p.config.clone(),
                })
                .collect(),
        };
        let stored: Vec<Vec<u8>> = self
            .parts
            .iter()
            .map(|p| encode(&p.weights, storage))
            .collect();
        let dtype = match storage {
            Storage::F32 => Dtype::F32,
            Storage::F16 => Dtype::F16,
        };
        let width = dtype.bitsize() / 8;
        let mut views = Vec::new();
        for (part, bytes) in self.parts.iter().zip(&stored) {
            for t in &ParamLayout::new(&part.config.model).tensors {
                let r = t.range();
                let data = &bytes[r.start * width..r.end * width];
                let view = TensorView::new(dtype, t.shape.clone(), data).map_err(|e| {
                    Error::io(format!("bundle tensor {}.{}: {e}", part.name, t.name))
                })?;
                views.push((format!("{}.{}", part.name, t.name), view));
            }
        }
        let mut info = HashMap::new();
        info.insert("format".to_string(), BUNDLE_FORMAT.to_string());
        info.insert(
            "bundle".to_string(),
            serde_json::to_string(&header).unwrap(),
        );
        safetensors::serialize(views, Some(info))
            .map_err(|e| Error::io(format!("cannot serialise the bundle: {e}")))
    }

    /// A bundle's bytes, or a checkpoint's (its EMA weights, else its raw ones, with the
    /// article's sampler); `name` names the file in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Bundle> {
        let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(name, e))?;
        let info = md.metadata().clone().unwrap_or_default();
        match info.get("format").map(String::as_str) {
            Some(BUNDLE_FORMAT) => read_bundle(bytes, name, &info),
            Some(FORMAT) => {
                let config = read_state_bytes(bytes, name)?.config;
                let (weights, _) = checkpoint_weights(bytes, name, &config, Weights::Ema)?;
                let mut settings = crate::settings::recipe::default_sample_settings();
                settings.checkpoint = Some(PathBuf::from("model"));
                Ok(Bundle {
                    settings,
                    parts: vec![Part {
                        name: "model".into(),
                        config,
                        weights,
                    }],
                    storage: Storage::F32,
                })
            }
            other => Err(Error::checkpoint(format!(
                "{name} is neither a bundle of export-web nor a checkpoint of train (format {:?})",
                other.unwrap_or("none")
            ))),
        }
    }

    /// The part named `path`.
    fn part(&self, path: &Path) -> Result<&Part> {
        self.parts
            .iter()
            .find(|p| Path::new(&p.name) == path)
            .ok_or_else(|| Error::checkpoint(format!("the bundle has no model {}", path.display())))
    }

    /// The bundle's settings with `flags` over them (the loop's settings only: the models are
    /// the bundle's), checked as `sample` checks them, for the digits `digits` asks.
    pub fn settings_with(
        &self,
        flags: &SampleFlags,
        digits: Option<&[u32]>,
    ) -> Result<(SampleSettings, Schedule, Option<Classes>)> {
        if flags.checkpoint.is_some() || flags.guide.is_some() || flags.refiner.is_some() {
            return Err(Error::config(
                "a bundle samples its own models: checkpoint, guide and refiner cannot be changed",
            ));
        }
        let mut s = self.settings.clone();
        s.apply(flags);
        let (_, schedule, classes) =
            check_stack_of(&s, digits, |p| Ok(self.part(p)?.config.clone()))?;
        Ok((s, schedule, classes))
    }

    /// Every part's weights on the GPU, stored as `precision` asks, uploaded once for any
    /// number of samplers.
    pub fn upload(&self, gpu: &Gpu, precision: Precision) -> Result<Uploaded> {
        let upload = |p: &Part| {
            upload_model(
                gpu,
                &p.name,
                p.config.clone(),
                &p.weights,
                Weights::Ema,
                precision,
            )
        };
        let models = (self.parts.iter()).map(upload).collect::<Result<_>>()?;
        Ok(Uploaded { models })
    }
}

/// A bundle's models on the GPU ([`Bundle::upload`]).
pub struct Uploaded {
    models: Vec<LoadedModel>,
}

impl Uploaded {
    fn model(&self, path: &Path) -> Result<SamplerModel<'_>> {
        (self.models.iter())
            .find(|m| m.path == path)
            .map(LoadedModel::view)
            .ok_or_else(|| Error::checkpoint(format!("the bundle has no model {}", path.display())))
    }

    /// A sampler of `batch` digits for settings `s`, `schedule` and `classes` (from
    /// [`Bundle::settings_with`]): the stack `sample` makes of the same settings, once every
    /// model is known to fit the device at that batch.
    pub fn sampler(
        &self,
        gpu: &Gpu,
        s: &SampleSettings,
        schedule: Schedule,
        classes: Option<&Classes>,
        batch: usize,
    ) -> Result<Sampler> {
        let model = self.model(s.checkpoint.as_ref().expect("a bundle names its model"))?;
        let guide = match (&s.guide, s.guidance) {
            (Some(p), Some(w)) => Some(Guide {
                model: self.model(p)?,
                guidance: w as f32,
                from_level: s.guide_from,
            }),
            _ => None,
        };
        let refiners = (s.refiner.iter())
            .map(|r| Ok((self.model(&r.checkpoint)?, r.from_level)))
            .collect::<Result<Vec<_>>>()?;
        let used = (guide.iter().map(|g| g.model))
            .chain(refiners.iter().map(|r| r.0))
            .chain([model]);
        for m in used {
            crate::model::network::check_fits(gpu, m.config, batch)?;
        }
        let stack = Stack {
            model,
            guide,
            refiners: &refiners,
            classes,
        };
        Sampler::new(gpu, stack, batch, schedule, s.seed)
    }
}

fn encode(weights: &[f32], storage: Storage) -> Vec<u8> {
    match storage {
        Storage::F32 => bytemuck::cast_slice(weights).to_vec(),
        Storage::F16 => {
            let h: Vec<half::f16> = weights.iter().map(|&w| half::f16::from_f32(w)).collect();
            bytemuck::cast_slice(&h).to_vec()
        }
    }
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> Error {
    Error::checkpoint(format!("{name} is corrupt or not a safetensors file: {e}"))
}

fn read_bundle(bytes: &[u8], name: &str, info: &HashMap<String, String>) -> Result<Bundle> {
    let header: HeaderIn = info
        .get("bundle")
        .ok_or_else(|| Error::checkpoint(format!("bundle {name} has no 'bundle' entry")))
        .and_then(|h| serde_json::from_str(h).map_err(|e| corrupt(name, e)))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(name, e))?;
    let parts = header
        .parts
        .into_iter()
        .map(|p| {
            let weights = read_part(&st, name, &p)?;
            Ok(Part {
                name: p.name,
                config: p.config,
                weights,
            })
        })
        .collect::<Result<_>>()?;
    let mut settings = crate::settings::recipe::default_sample_settings();
    settings.apply(&header.sample);
    Ok(Bundle {
        settings,
        parts,
        storage: header.storage,
    })
}

fn read_part(st: &SafeTensors, file: &str, p: &PartHeader) -> Result<Vec<f32>> {
    let layout = ParamLayout::new(&p.config.model);
    let mut flat = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        let name = format!("{}.{}", p.name, t.name);
        let v = st
            .tensor(&name)
            .map_err(|_| Error::checkpoint(format!("bundle {file} lacks tensor {name}")))?;
        let out = &mut flat[t.range()];
        match v.dtype() {
            _ if v.shape() != t.shape.as_slice() => {
                return Err(Error::checkpoint(format!(
                    "bundle {file}: tensor {name} is {:?}, its model needs {:?}",
                    v.shape(),
                    t.shape
                )))
            }
            Dtype::F32 => out.copy_from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(v.data())),
            Dtype::F16 => {
                let h: Vec<half::f16> = bytemuck::pod_collect_to_vec(v.data());
                for (o, x) in out.iter_mut().zip(h) {
                    *o = x.to_f32();
                }
            }
            d => {
                return Err(Error::checkpoint(format!(
                    "bundle {file}: tensor {name} is {d:?}, not F32 or F16"
                )))
            }
        }
    }
    Ok(flat)
}
