//! The classifier flags of `eval` and `train --eval-every`.

use super::{
    cached_or_train, read_cached, Classifier, ClassifierSettings, DEFAULT_PATH, DEFAULT_SETTINGS,
};
use crate::data::Mnist;
use crate::error::Result;
use crate::gpu::Gpu;

/// The classifier flags of `eval` and `train --eval-every`: where it is cached and how it is
/// trained when it is not.
#[derive(clap::Args, Debug, Clone)]
pub struct ClassifierArgs {
    /// The cached classifier (trained and written here when absent).
    #[arg(long = "classifier", value_name = "PATH", default_value = DEFAULT_PATH)]
    pub path: std::path::PathBuf,
    /// Train the classifier again even if the cached file exists.
    #[arg(long)]
    pub retrain: bool,
    /// Classifier training epochs (when it is trained).
    #[arg(long, default_value_t = DEFAULT_SETTINGS.epochs)]
    pub classifier_epochs: u32,
    /// Classifier training batch.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.batch)]
    pub classifier_batch: usize,
    /// Classifier Adam learning rate.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.lr)]
    pub classifier_lr: f32,
    /// Of those, the last epochs that run at a tenth of the learning rate.
    #[arg(long, default_value_t = DEFAULT_SETTINGS.decay_epochs)]
    pub classifier_decay_epochs: u32,
}

impl Default for ClassifierArgs {
    /// The flags' defaults.
    fn default() -> Self {
        ClassifierArgs {
            path: DEFAULT_PATH.into(),
            retrain: false,
            classifier_epochs: DEFAULT_SETTINGS.epochs,
            classifier_batch: DEFAULT_SETTINGS.batch,
            classifier_lr: DEFAULT_SETTINGS.lr,
            classifier_decay_epochs: DEFAULT_SETTINGS.decay_epochs,
        }
    }
}

impl ClassifierArgs {
    /// The cached classifier ([`read_cached`]; none with --retrain): call it before any long
    /// work, so that a broken cache fails first.
    pub fn read_cached(&self) -> Result<Option<Classifier>> {
        if self.retrain {
            return Ok(None);
        }
        read_cached(&self.path)
    }

    /// The settings a classifier is trained with when there is no cached one.
    pub fn settings(&self) -> ClassifierSettings {
        ClassifierSettings {
            epochs: self.classifier_epochs,
            batch: self.classifier_batch,
            lr: self.classifier_lr,
            decay_epochs: self.classifier_decay_epochs,
            ..DEFAULT_SETTINGS
        }
    }

    /// `cached` (from [`ClassifierArgs::read_cached`]) or one trained now with these flags and
    /// cached at --classifier; the flag says whether it was trained now.
    pub fn cached_or_train(
        &self,
        gpu: &Gpu,
        cached: Option<Classifier>,
        mnist: &Mnist,
    ) -> Result<(Classifier, bool)> {
        cached_or_train(gpu, &self.path, cached, mnist, &self.settings())
    }
}

#[cfg(test)]
mod tests {
    use super::ClassifierArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        classifier: ClassifierArgs,
    }

    /// `ClassifierArgs::default()` (what code that builds TrainArgs by hand gets) is what the
    /// flags give when none is passed.
    #[test]
    fn flag_defaults_are_the_default() {
        let parsed = Flags::parse_from(["x"]).classifier;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ClassifierArgs::default())
        );
        let given = Flags::parse_from(["x", "--classifier", "c.st", "--retrain"]).classifier;
        assert_eq!(given.path, std::path::PathBuf::from("c.st"));
        assert!(given.retrain && given.read_cached().unwrap().is_none());
    }
}
