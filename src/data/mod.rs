//! MNIST: finding, downloading, verifying and parsing the four IDX files.
//!
//! The data folder is `--data DIR`, else `$MNIST_DIR`, else `./data/mnist` (downloaded there
//! from public mirrors when files are missing; `$MNIST_MIRRORS` overrides the mirror list).
//! Each file may be raw or gzipped (`name` or `name.gz`); the size and sha256 of the
//! *decompressed* bytes are checked against [`MNIST_FILES`] before parsing.

#[cfg(not(target_arch = "wasm32"))]
pub mod download;
pub mod idx;

use std::path::{Path, PathBuf};
use std::thread;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
pub use download::{
    download_files, mirrors_from_env, parse_mirror_list, DEFAULT_MIRRORS, MIRRORS_ENV,
};
pub use idx::{
    encode_idx, gunzip, is_gzip, parse_idx, read_idx_file, write_idx_images, write_idx_labels, Idx,
    IdxWriter,
};

/// Side of an MNIST image in pixels (images are `IMAGE_SIDE` x `IMAGE_SIDE`).
pub const IMAGE_SIDE: usize = 28;
/// Number of training digits.
pub const TRAIN_COUNT: usize = 60_000;
/// Number of test digits.
pub const TEST_COUNT: usize = 10_000;
/// Environment variable naming the data folder (after `--data`, before `./data/mnist`).
pub const DIR_ENV: &str = "MNIST_DIR";
/// The data folder used (and downloaded into) when neither `--data` nor `$MNIST_DIR` is given.
pub const DEFAULT_DIR: &str = "data/mnist";

/// One of the four MNIST files: its name (without `.gz`), and the size and sha256 of its
/// decompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// File name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// Size in bytes of the decompressed file.
    pub size: usize,
    /// SHA-256 of the decompressed file.
    pub sha256: [u8; 32],
}

/// The official files, in the order train images, train labels, test images, test labels
/// (the order every `files` table of this module uses).
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        size: 47_040_016,
        sha256: hex32("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        size: 60_008,
        sha256: hex32("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        size: 7_840_016,
        sha256: hex32("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        size: 10_008,
        sha256: hex32("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
];

impl MnistFile {
    /// A table entry for `bytes` (its real size and sha256): for tests and custom data.
    pub fn for_bytes(name: &'static str, bytes: &[u8]) -> Self {
        MnistFile {
            name,
            size: bytes.len(),
            sha256: sha256(bytes),
        }
    }

    /// Checks that decompressed `bytes` have this file's size and sha256; `source` (a path
    /// or URL) starts the error message.
    pub fn verify(&self, bytes: &[u8], source: &str) -> Result<()> {
        if bytes.len() != self.size {
            return Err(Error::data(format!(
                "{source}: wrong size for {}: expected {} bytes (decompressed), found {}",
                self.name,
                self.size,
                bytes.len()
            )));
        }
        let actual = sha256(bytes);
        if actual != self.sha256 {
            return Err(Error::data(format!(
                "{source}: sha256 mismatch for {}: expected {}…, got {}…",
                self.name,
                &hex(&self.sha256)[..16],
                &hex(&actual)[..16]
            )));
        }
        Ok(())
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits at compile time (a bad literal fails the build).
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("bad hex digit"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 64, "sha256 needs 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// A set of grey images: `count` images of `rows` x `cols` bytes, row-major, one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows per image (28 for MNIST).
    pub rows: usize,
    /// Columns per image (28 for MNIST).
    pub cols: usize,
    /// `count * rows * cols` grey values 0-255, image after image, each row-major.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels in one image (`rows * cols`).
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i` (panics when `i >= count`, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// The MNIST training and test sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    /// The 60,000 training images.
    pub train: Images,
    /// One digit 0-9 per training image.
    pub train_labels: Vec<u8>,
    /// The 10,000 test images.
    pub test: Images,
    /// One digit 0-9 per test image.
    pub test_labels: Vec<u8>,
}

/// The path of `name` in `dir`, raw (`name`) preferred over gzipped (`name.gz`); `None` when
/// neither exists.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The error for a file that is in neither form.
fn not_found(dir: &Path, name: &str) -> Error {
    Error::data(format!(
        "MNIST file {name}(.gz) not found in {}",
        dir.display()
    ))
}

/// Names in `files` that are in neither form in `dir`.
pub fn missing_files<'a>(dir: &Path, files: &'a [MnistFile]) -> Vec<&'a str> {
    files
        .iter()
        .filter(|f| find_file(dir, f.name).is_none())
        .map(|f| f.name)
        .collect()
}

/// Reads `file` from `dir` (raw or gzipped), checks size and sha256 of the decompressed
/// bytes, and parses it.
fn load_file(dir: &Path, file: &MnistFile) -> Result<(PathBuf, Idx)> {
    let path = find_file(dir, file.name).ok_or_else(|| not_found(dir, file.name))?;
    let shown = path.display().to_string();
    let bytes = idx::read_maybe_gz(&path, file.size)?;
    file.verify(&bytes, &shown)?;
    let parsed = parse_idx(&bytes, &shown)?;
    Ok((path, parsed))
}

/// Turns a parsed 3-D IDX file into 28x28 images.
fn to_images(path: &Path, idx: Idx) -> Result<Images> {
    match idx.dims[..] {
        [count, rows, cols] if rows == IMAGE_SIDE && cols == IMAGE_SIDE => Ok(Images {
            count,
            rows,
            cols,
            pixels: idx.data,
        }),
        [_, rows, cols] => Err(Error::data(format!(
            "{}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}",
            path.display()
        ))),
        _ => Err(Error::data(format!(
            "{}: expected an image file (3 dimensions), found {} dimension(s)",
            path.display(),
            idx.dims.len()
        ))),
    }
}

/// Turns a parsed 1-D IDX file into labels 0..=9, checking there is one per image.
fn to_labels(path: &Path, idx: Idx, images: &Images, images_path: &Path) -> Result<Vec<u8>> {
    if idx.dims.len() != 1 {
        return Err(Error::data(format!(
            "{}: expected a label file (1 dimension), found {} dimensions",
            path.display(),
            idx.dims.len()
        )));
    }
    if idx.data.len() != images.count {
        return Err(Error::data(format!(
            "{}: {} labels, but {} has {} images",
            path.display(),
            idx.data.len(),
            images_path.display(),
            images.count
        )));
    }
    if let Some(i) = idx.data.iter().position(|&l| l > 9) {
        return Err(Error::data(format!(
            "{}: label {} at index {i} is not a digit 0-9",
            path.display(),
            idx.data[i]
        )));
    }
    Ok(idx.data)
}

/// Loads and checks the four files named by `files` (train images, train labels, test
/// images, test labels) from `dir`: size and sha256 from the table, 28x28 images, one label
/// (0-9) per image. The files are read in parallel.
pub fn load_dir_with(dir: &Path, files: &[MnistFile; 4]) -> Result<Mnist> {
    if !dir.is_dir() {
        return Err(Error::data(format!(
            "MNIST folder {} does not exist",
            dir.display()
        )));
    }
    // Fail fast, before reading 47 MB, when a file is simply absent.
    if let Some(f) = files.iter().find(|f| find_file(dir, f.name).is_none()) {
        return Err(not_found(dir, f.name));
    }
    let results: Vec<Result<(PathBuf, Idx)>> = thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| s.spawn(move || load_file(dir, f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::data("MNIST loader thread panicked")))
            })
            .collect()
    });
    let mut results = results.into_iter();
    let mut next = || results.next().expect("four results");
    let (train_path, train_idx) = next()?;
    let (train_labels_path, train_labels_idx) = next()?;
    let (test_path, test_idx) = next()?;
    let (test_labels_path, test_labels_idx) = next()?;
    let train = to_images(&train_path, train_idx)?;
    let train_labels = to_labels(&train_labels_path, train_labels_idx, &train, &train_path)?;
    let test = to_images(&test_path, test_idx)?;
    let test_labels = to_labels(&test_labels_path, test_labels_idx, &test, &test_path)?;
    Ok(Mnist {
        train,
        train_labels,
        test,
        test_labels,
    })
}

/// Loads and verifies the official MNIST files from `dir` (60,000 training and 10,000 test
/// digits). Each file may be `name` or `name.gz`.
pub fn load_dir(dir: &Path) -> Result<Mnist> {
    let mnist = load_dir_with(dir, &MNIST_FILES)?;
    // Implied by the checksums; kept so that a wrong table can never go unnoticed.
    for (images, name, want) in [
        (&mnist.train, MNIST_FILES[0].name, TRAIN_COUNT),
        (&mnist.test, MNIST_FILES[2].name, TEST_COUNT),
    ] {
        if images.count != want {
            return Err(Error::data(format!(
                "{}: {name} has {} images, expected {want}",
                dir.display(),
                images.count
            )));
        }
    }
    Ok(mnist)
}

/// Checks that an explicitly requested folder exists and holds every file; `flag` names the
/// request (`--data` or `$MNIST_DIR`) in the error.
#[cfg(not(target_arch = "wasm32"))]
fn check_explicit(dir: &Path, flag: &str, files: &[MnistFile]) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::data(format!(
            "MNIST folder {} (from {flag}) does not exist",
            dir.display()
        )));
    }
    if let Some(name) = missing_files(dir, files).first() {
        return Err(Error::data(format!(
            "MNIST file {name}(.gz) not found in {} (from {flag})",
            dir.display()
        )));
    }
    Ok(())
}

/// Finds the data folder: `cli` (`--data`), else `env_dir` (`$MNIST_DIR`), else
/// `default_dir`, into which missing `files` are downloaded from `mirrors` (in turn).
/// An explicit folder that does not exist or lacks a file is an error naming it; it is never
/// downloaded into. The files' contents are checked later, by [`load_dir_with`].
#[cfg(not(target_arch = "wasm32"))]
pub fn resolve_data_dir_with(
    cli: Option<&Path>,
    env_dir: Option<&Path>,
    default_dir: &Path,
    mirrors: &[String],
    files: &[MnistFile],
    progress: bool,
) -> Result<PathBuf> {
    if let Some(dir) = cli {
        check_explicit(dir, "--data", files)?;
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env_dir {
        check_explicit(dir, &format!("${DIR_ENV}"), files)?;
        return Ok(dir.to_path_buf());
    }
    if !missing_files(default_dir, files).is_empty() {
        download_files(default_dir, mirrors, files, progress).map_err(|e| {
            Error::new(
                e.kind,
                format!(
                    "{e}; or give a folder holding the MNIST files with --data DIR or ${DIR_ENV}"
                ),
            )
        })?;
    }
    Ok(default_dir.to_path_buf())
}

/// Finds the data folder for the CLI: `--data DIR`, else `$MNIST_DIR` (when set and not
/// empty), else `./data/mnist`, downloading missing files there from the mirrors
/// ([`DEFAULT_MIRRORS`], or the comma-separated base URLs in `$MNIST_MIRRORS`).
#[cfg(not(target_arch = "wasm32"))]
pub fn resolve_data_dir(cli: Option<&Path>) -> Result<PathBuf> {
    let env_dir = std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    resolve_data_dir_with(
        cli,
        env_dir.as_deref(),
        Path::new(DEFAULT_DIR),
        &mirrors_from_env(),
        &MNIST_FILES,
        true,
    )
}

/// Finds the data folder ([`resolve_data_dir`]) and loads it ([`load_dir`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn load(cli: Option<&Path>) -> Result<Mnist> {
    load_dir(&resolve_data_dir(cli)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_matches_hex() {
        let h = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db";
        assert_eq!(hex(&hex32(h)), h);
        assert_eq!(hex(&MNIST_FILES[0].sha256), h);
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_names_size_and_checksum_problems() {
        let f = MnistFile::for_bytes("labels", b"abc");
        assert!(f.verify(b"abc", "src").is_ok());
        let e = f.verify(b"abcd", "src").unwrap_err().message;
        assert!(e.contains("wrong size") && e.contains("labels"), "{e}");
        let e = f.verify(b"abd", "src").unwrap_err().message;
        assert!(e.starts_with("src: sha256 mismatch for labels"), "{e}");
    }

    #[test]
    fn images_index_by_image() {
        let im = Images {
            count: 2,
            rows: 1,
            cols: 2,
            pixels: vec![1, 2, 3, 4],
        };
        assert_eq!(im.image(1), &[3, 4]);
    }
}
