//! Recipe files: every preset loads, a resolved recipe written as config.toml reads back to
//! itself, flags override a file, and each kind of bad file is one error naming the key or
//! the file.

mod common;

use std::path::PathBuf;
use wgpu_diffusion::settings::recipe::{Preset, Recipe, Source};
use wgpu_diffusion::settings::sample::SampleFlags;
use wgpu_diffusion::settings::train::{TrainFlags, TrainSettings};

/// Writes `text` as a recipe file and loads it with `cli` over it.
fn load(name: &str, text: &str, cli: &TrainFlags) -> Result<Recipe, String> {
    let path = common::tmp("recipe", name).join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    Recipe::load(&Source::File(path), cli).map_err(|e| e.to_string())
}

const PRESETS: [Preset; 5] = [
    Preset::Seed,
    Preset::Notebook,
    Preset::Tiny,
    Preset::Fast,
    Preset::Digits,
];

#[test]
fn every_preset_loads_and_round_trips() {
    for p in PRESETS {
        let flags = [
            TrainFlags::default(),
            TrainFlags {
                lr: Some(3e-3),
                minutes: Some(2.5),
                mlp: Some(48),
                ..TrainFlags::default()
            },
        ];
        for cli in flags {
            let r = Recipe::load(&Source::Preset(p), &cli).unwrap();
            // The flags reach every stage, over the stage's own keys.
            for s in &r.stages {
                assert_eq!(s.settings.lr, cli.lr.unwrap_or(s.settings.lr));
                if let Some(m) = cli.mlp {
                    assert_eq!(s.settings.mlp, m, "{p:?} {:?}", s.name);
                }
            }
            let back = load("round", &r.to_toml(), &TrainFlags::default()).unwrap();
            assert_eq!(
                back.stages,
                r.stages,
                "{p:?} with {cli:?}:\n{}",
                r.to_toml()
            );
            assert_eq!(back.common, r.common);
            assert_eq!(back.sample, r.sample);
        }
    }
}

/// The digits preset trains what `--preset fast --classes` trains (every stage conditional)
/// and samples with its own guidance weights.
#[test]
fn digits_preset_is_the_fast_recipe_with_classes() {
    let digits = Recipe::load(&Source::Preset(Preset::Digits), &TrainFlags::default()).unwrap();
    let classes = TrainFlags {
        classes: Some(true),
        ..TrainFlags::default()
    };
    let fast = Recipe::load(&Source::Preset(Preset::Fast), &classes).unwrap();
    assert_eq!(digits.stages.len(), 3);
    assert_eq!(digits.stages, fast.stages);
    assert!(digits.stages.iter().all(|s| s.settings.classes));
    assert_eq!(digits.sample.guidance, Some(1.5));
    assert_eq!(digits.sample.cfg, Some(1.35));
    assert_eq!(digits.sample.cfg_min_level, Some(0));
    let plain = Recipe::load(&Source::Preset(Preset::Fast), &TrainFlags::default()).unwrap();
    assert!(plain.stages.iter().all(|s| !s.settings.classes));
}

/// The seed file names every setting; a file changes only what it names.
#[test]
fn a_file_is_a_layer_over_the_seed_or_its_preset() {
    let seed = Recipe::load(&Source::Preset(Preset::Seed), &TrainFlags::default()).unwrap();
    let r = load("layer", "lr = 0.003\n", &TrainFlags::default()).unwrap();
    let want = TrainSettings {
        lr: 0.003,
        ..seed.common.clone()
    };
    assert_eq!(r.common, want);
    assert_eq!(r.sample, seed.sample);
    // preset = "tiny": tiny's keys under the file's.
    let r = load(
        "layer2",
        "preset = \"tiny\"\nheads = 3\n",
        &TrainFlags::default(),
    )
    .unwrap();
    let tiny = Preset::Tiny.model();
    let m = r.common.model().unwrap();
    assert_eq!(
        (m.heads, m.key_dim, m.geometry),
        (3, tiny.key_dim, tiny.geometry)
    );
    // Flags over the file.
    let cli = TrainFlags {
        heads: Some(5),
        ..TrainFlags::default()
    };
    let r = load("layer3", "preset = \"tiny\"\nheads = 3\n", &cli).unwrap();
    assert_eq!(r.common.heads, 5);
    // A staged file over fast: the budget is split by the shares, the [sample] table merged.
    let r = load(
        "layer4",
        "preset = \"fast\"\nminutes = 20.0\n[sample]\nguidance = 3.0\n",
        &TrainFlags::default(),
    )
    .unwrap();
    let minutes: Vec<f64> = r
        .stages
        .iter()
        .map(|s| s.settings.minutes.unwrap())
        .collect();
    let shares: Vec<f64> = r.stages.iter().map(|s| s.share).collect();
    for (m, s) in minutes.iter().zip(&shares) {
        assert!((m - 20.0 * s).abs() < 1e-9, "{minutes:?} {shares:?}");
    }
    assert_eq!(r.sample.guidance, Some(3.0));
    assert_eq!(r.sample.steps, 50);
}

#[test]
fn bad_files_are_one_line_naming_the_key() {
    let none = TrainFlags::default();
    for (text, needles) in [
        ("mpl = 16\n", vec!["mpl", "unknown key"]),
        ("lr = \"fast\"\n", vec!["lr", "f64"]),
        ("lr = 1e-3\nlr = 2e-3\n", vec!["line 2"]),
        ("alpha = 1.5\n", vec!["alpha must be in (0, 1)"]),
        ("preset = \"huge\"\n", vec!["huge"]),
        ("[sample]\nstep = 5\n", vec!["[sample]", "step", "unknown key"]),
        (
            "[[stage]]\nname = \"a\"\nshare = 0.5\nmpl = 3\n",
            vec!["stage a", "mpl", "unknown key"],
        ),
        (
            "[[stage]]\nname = \"a\"\nshare = 0.5\n[[stage]]\nname = \"b\"\nshare = 0.4\n[sample]\ncheckpoint = \"a/checkpoint.safetensors\"\n",
            vec!["sum to 0.9"],
        ),
        (
            "[[stage]]\nname = \"a\"\nminutes = 3.0\n[sample]\ncheckpoint = \"a/checkpoint.safetensors\"\n",
            vec!["stage a", "share"],
        ),
        (
            "[[stage]]\nname = \"a/b\"\n",
            vec!["a/b", "folder"],
        ),
        (
            "[[stage]]\nname = \"a\"\n[[stage]]\nname = \"a\"\n",
            vec!["two stages"],
        ),
        (
            "[[stage]]\nname = \"a\"\n[sample]\ncheckpoint = \"b/checkpoint.safetensors\"\n",
            vec!["b/checkpoint.safetensors", "not a checkpoint of this recipe"],
        ),
        (
            "[[stage]]\nname = \"a\"\n[[stage]]\nname = \"b\"\nalpha = 0.98\n[sample]\ncheckpoint = \"a/checkpoint.safetensors\"\nguide = \"b/checkpoint.safetensors\"\nguidance = 2.0\n",
            vec!["stage b", "alpha 0.98"],
        ),
        (
            "[sample]\nguide = \"checkpoint.safetensors\"\n",
            vec!["--guidance"],
        ),
        ("minutes = -1.0\n", vec!["minutes must be a positive number"]),
        (
            "minutes = 5.0\ndecay-steps = 10\n",
            vec!["decay-fraction"],
        ),
    ] {
        let e = load("bad", text, &none).expect_err(text);
        assert!(!e.contains('\n'), "{e}");
        for n in needles {
            assert!(e.contains(n), "{text:?}: {e}");
        }
    }
    let missing = PathBuf::from("/no/such/recipe.toml");
    let e = Recipe::load(&Source::File(missing), &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/recipe.toml"), "{e}");
}

/// Each settings struct: `apply` sets what the overrides hold, `over` layers them, `without`
/// drops another's keys, `from_complete` names what is missing.
#[test]
fn overrides_layer_and_complete() {
    let a = SampleFlags {
        steps: Some(10),
        eta: Some(0.5),
        ..SampleFlags::default()
    };
    let b = SampleFlags {
        steps: Some(20),
        clip: Some(true),
        ..SampleFlags::default()
    };
    let ab = b.over(&a);
    assert_eq!(
        (ab.steps, ab.eta, ab.clip),
        (Some(20), Some(0.5), Some(true))
    );
    assert_eq!(ab.without(&b).keys(), vec!["eta"]);
    let e = wgpu_diffusion::settings::sample::SampleSettings::from_complete(ab).unwrap_err();
    assert!(e.contains("step-scale") && e.contains("background"), "{e}");
    assert!(!e.contains("checkpoint"), "opt keys are not required: {e}");
}
