//! The tuner's memory: which kernel variant won for which shape on this adapter, kept in a
//! file under the user's cache folder so that only the first run pays for the timing.
//!
//! One JSON file per adapter and driver (`tune-<hash>.json` in `$XDG_CACHE_HOME/wgpu-diffusion`
//! or the platform's cache folder), holding the adapter's name, backend, driver and driver
//! version, and a map from a shape's key (e.g. `gemm 128x64x36 ·Bᵀ`) to the winning variant's
//! name. The ops decide what a key and a name mean (`ops::tune`); this module stores them. A
//! file that cannot be read, is of another format version or of another driver is replaced
//! after a one-line note; nothing here ever stops a run.

use crate::error::Result;
use crate::files::write_atomic_shared;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file format's version: a file of another version is retuned.
pub const TUNE_FORMAT: u32 = 1;
/// Environment variable with the default of `--tune`.
pub const TUNE_ENV: &str = "WGPU_DIFFUSION_TUNE";
/// Environment variable that moves the cache folder (tests, read-only homes).
pub const CACHE_DIR_ENV: &str = "WGPU_DIFFUSION_CACHE_DIR";

/// How kernels are chosen for each shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TuneMode {
    /// `cached` on GPUs, `off` on CPU adapters: on lavapipe the kernels timed alone ranked
    /// differently from the whole training step (docs/experiments/14).
    Auto,
    /// No timing: the ops' built-in kernel per adapter type.
    #[default]
    Off,
    /// Use the cached choice; time the candidates for a shape the cache does not hold yet.
    Cached,
    /// Time every shape again in this run and replace the cached choices.
    Full,
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TuneFile {
    pub format: u32,
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    /// Shape key -> winning variant.
    pub choices: BTreeMap<String, String>,
}

/// The choices of one adapter: read once when the device opens, written after each tuned
/// shape (atomically).
pub struct TuneCache {
    pub mode: TuneMode,
    /// The cache file; `None` when no cache folder could be found (choices then last one run).
    pub path: Option<PathBuf>,
    file: Mutex<TuneFile>,
    /// Keys timed in this run (`full` times each shape once per run, not once per call).
    fresh: Mutex<HashSet<String>>,
    /// Every shape this run asked for, with the variant it got (for reports).
    used: Mutex<BTreeMap<String, String>>,
}

impl TuneMode {
    /// `Auto` made concrete for an adapter (`cpu`: a CPU implementation such as lavapipe).
    pub fn resolve(self, cpu: bool) -> TuneMode {
        match self {
            TuneMode::Auto if cpu => TuneMode::Off,
            TuneMode::Auto => TuneMode::Cached,
            m => m,
        }
    }
}

impl TuneCache {
    /// The cache of the adapter that `blank` names ([`TuneFile::of`]) in `mode`, read from
    /// `dir` (else the default folder); with a note for the user when an existing file had to
    /// be set aside.
    pub fn open(
        mode: TuneMode,
        dir: Option<&Path>,
        blank: TuneFile,
    ) -> (TuneCache, Option<String>) {
        // The device resolves `auto` by adapter type; alone, it means the cache.
        let mode = mode.resolve(false);
        let path = dir
            .map(Path::to_path_buf)
            .or_else(default_dir)
            .map(|d| d.join(format!("tune-{:016x}.json", fnv1a(&identity(&blank)))));
        let (file, note) = match (&path, mode) {
            (Some(p), TuneMode::Cached | TuneMode::Full) => read_file(p, &blank),
            _ => (blank, None),
        };
        let cache = TuneCache {
            mode,
            path,
            file: Mutex::new(file),
            fresh: Mutex::new(HashSet::new()),
            used: Mutex::new(BTreeMap::new()),
        };
        (cache, note)
    }

    /// The cached choice for `key`, if the mode lets the cache answer.
    pub fn get(&self, key: &str) -> Option<String> {
        let usable = match self.mode {
            TuneMode::Off => false,
            TuneMode::Cached | TuneMode::Auto => true,
            TuneMode::Full => self.fresh.lock().unwrap().contains(key),
        };
        usable
            .then(|| self.file.lock().unwrap().choices.get(key).cloned())
            .flatten()
    }

    /// Records the choice for `key` and writes the file.
    pub fn put(&self, key: &str, choice: &str) -> Result<()> {
        self.fresh.lock().unwrap().insert(key.to_string());
        let mut file = self.file.lock().unwrap();
        file.choices.insert(key.to_string(), choice.to_string());
        match &self.path {
            Some(p) => {
                let json = serde_json::to_vec_pretty(&*file).expect("plain data");
                write_atomic_shared(p, &json)
            }
            None => Ok(()),
        }
    }

    /// Every cached choice (for `info`).
    pub fn choices(&self) -> BTreeMap<String, String> {
        self.file.lock().unwrap().choices.clone()
    }

    /// Notes that this run uses `variant` for `key`.
    pub fn note_use(&self, key: &str, variant: &str) {
        let mut used = self.used.lock().unwrap();
        used.insert(key.to_string(), variant.to_string());
    }

    /// The shapes this run used, with their variants (for the benches and reports).
    pub fn used(&self) -> BTreeMap<String, String> {
        self.used.lock().unwrap().clone()
    }
}

impl TuneFile {
    /// An empty cache of `info`'s adapter and driver.
    pub fn of(info: &wgpu::AdapterInfo) -> TuneFile {
        TuneFile {
            format: TUNE_FORMAT,
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            choices: BTreeMap::new(),
        }
    }
}

/// What a cache file must match to be used: format, adapter and driver.
fn identity(f: &TuneFile) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        f.format, f.adapter, f.backend, f.driver, f.driver_info
    )
}

/// `$WGPU_DIFFUSION_CACHE_DIR`, else `$XDG_CACHE_HOME/wgpu-diffusion` or the platform's.
fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    #[cfg(not(target_arch = "wasm32"))]
    return dirs::cache_dir().map(|d| d.join("wgpu-diffusion"));
    // A page has no cache folder: the tuner keeps its choices in memory.
    #[cfg(target_arch = "wasm32")]
    None
}

/// The file at `path` if it is a cache of this adapter and driver; else a blank one and a note
/// (none when there is no file yet).
fn read_file(path: &Path, blank: &TuneFile) -> (TuneFile, Option<String>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (blank.clone(), None),
        Err(e) => {
            return (
                blank.clone(),
                Some(format!("cannot read {}: {e}", path.display())),
            )
        }
    };
    let why = match serde_json::from_slice::<TuneFile>(&bytes) {
        Ok(f) if identity(&f) == identity(blank) => return (f, None),
        Ok(f) if f.format != TUNE_FORMAT => format!("is of format {}", f.format),
        Ok(_) => "is of another adapter or driver".to_string(),
        Err(e) => format!("is not a tune cache ({e})"),
    };
    let note = format!("{} {why}; the kernels are timed again", path.display());
    (blank.clone(), Some(note))
}

/// FNV-1a, 64 bits: a stable file name per adapter (std's hasher may change between releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(driver_info: &str) -> TuneFile {
        TuneFile {
            format: TUNE_FORMAT,
            adapter: "test adapter".into(),
            backend: "Vulkan".into(),
            driver: "test driver".into(),
            driver_info: driver_info.into(),
            choices: BTreeMap::new(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("wgpu-diffusion-tune-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn choices_survive_a_new_process_of_the_same_driver_only() {
        let d = dir("roundtrip");
        let (c, note) = TuneCache::open(TuneMode::Cached, Some(&d), info("25.0.7"));
        assert!(note.is_none() && c.get("k").is_none());
        c.put("k", "v").unwrap();
        let (c, note) = TuneCache::open(TuneMode::Cached, Some(&d), info("25.0.7"));
        assert_eq!((c.get("k"), note), (Some("v".to_string()), None));
        // Another driver version has a file of its own.
        let (c, note) = TuneCache::open(TuneMode::Cached, Some(&d), info("22.3.6"));
        assert_eq!((c.get("k"), note), (None, None));
        // `off` never answers; `full` answers only what it timed in this run.
        let (c, _) = TuneCache::open(TuneMode::Off, Some(&d), info("25.0.7"));
        assert_eq!(c.get("k"), None);
        let (c, _) = TuneCache::open(TuneMode::Full, Some(&d), info("25.0.7"));
        assert_eq!(c.get("k"), None);
        c.put("k", "w").unwrap();
        assert_eq!(c.get("k"), Some("w".to_string()));
    }

    #[test]
    fn auto_tunes_on_gpus_only() {
        assert_eq!(TuneMode::Auto.resolve(true), TuneMode::Off);
        assert_eq!(TuneMode::Auto.resolve(false), TuneMode::Cached);
        for m in [TuneMode::Off, TuneMode::Cached, TuneMode::Full] {
            assert_eq!((m.resolve(true), m.resolve(false)), (m, m));
        }
    }

    #[test]
    fn corrupt_old_and_foreign_files_are_retuned_with_a_note() {
        let d = dir("corrupt");
        let (c, _) = TuneCache::open(TuneMode::Cached, Some(&d), info("1"));
        let path = c.path.clone().unwrap();
        std::fs::create_dir_all(&d).unwrap();
        let cases: [(&[u8], &str); 3] = [
            (b"{ not json", "is not a tune cache"),
            (
                br#"{"format":0,"adapter":"","backend":"","driver":"","driver_info":"","choices":{"k":"v"}}"#,
                "is of format 0",
            ),
            (
                br#"{"format":1,"adapter":"other","backend":"Vulkan","driver":"test driver","driver_info":"1","choices":{"k":"v"}}"#,
                "of another adapter or driver",
            ),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, bytes).unwrap();
            let (c, note) = TuneCache::open(TuneMode::Cached, Some(&d), info("1"));
            let note = note.expect("a note");
            assert!(note.contains(why), "{note}");
            assert_eq!(c.get("k"), None, "{why}");
            // The next choice replaces the file.
            c.put("k", "v").unwrap();
            let (c, note) = TuneCache::open(TuneMode::Cached, Some(&d), info("1"));
            assert_eq!((c.get("k"), note), (Some("v".to_string()), None));
        }
    }
}
