//! IDX reading and writing, MNIST folder loading and its error messages, on synthetic files;
//! plus the real MNIST files when `$MNIST_DIR` points at them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;
use flate2::Compression;
use wgpu_diffusion::data::{
    self, encode_idx, load_dir_with, parse_idx, read_idx_file, resolve_data_dir_with,
    write_idx_images, write_idx_labels, IdxWriter, MnistFile,
};
use wgpu_diffusion::error::{Error, ErrorKind, Result};

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "wgpu-diffusion-data-idx-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Names of the files in the folder, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Three synthetic 28x28 images.
fn pixels(count: usize) -> Vec<u8> {
    (0..count * 28 * 28).map(|i| (i * 7 % 256) as u8).collect()
}

const LABELS: [u8; 3] = [3, 1, 4];

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Asserts `r` failed with a one-line data error containing every phrase; returns the message.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T>, phrases: &[&str]) -> String {
    let e: Error = r.expect_err("expected an error");
    let msg = e.to_string();
    eprintln!("error: {msg}");
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    for p in phrases {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
    msg
}

#[test]
fn images_round_trip_raw() {
    let dir = TempDir::new("img-raw");
    let path = dir.join("images");
    write_idx_images(&path, 3, 28, 28, &pixels(3)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 16 + 3 * 28 * 28);
    let idx = read_idx_file(&path).unwrap();
    assert_eq!(idx.dims, vec![3, 28, 28]);
    assert_eq!(idx.data, pixels(3));
    assert_eq!(dir.names(), vec!["images"], "no .tmp file left");
}

#[test]
fn labels_round_trip_raw() {
    let dir = TempDir::new("lbl-raw");
    let path = dir.join("labels");
    write_idx_labels(&path, &LABELS).unwrap();
    let idx = read_idx_file(&path).unwrap();
    assert_eq!(idx.dims, vec![3]);
    assert_eq!(idx.data, LABELS);
    assert_eq!(dir.names(), vec!["labels"]);
}

#[test]
fn gzipped_files_are_detected_by_content() {
    let dir = TempDir::new("gz");
    // No .gz extension on purpose: detection is by the 1f 8b magic.
    let images = dir.join("images.idx");
    let labels = dir.join("labels.gz");
    fs::write(
        &images,
        gzip(&encode_idx(&[3, 28, 28], &pixels(3)).unwrap()),
    )
    .unwrap();
    fs::write(&labels, gzip(&encode_idx(&[3], &LABELS).unwrap())).unwrap();
    let idx = read_idx_file(&images).unwrap();
    assert_eq!(idx.dims, vec![3, 28, 28]);
    assert_eq!(idx.data, pixels(3));
    assert_eq!(read_idx_file(&labels).unwrap().data, LABELS);
}

#[test]
fn writing_rejects_wrong_pixel_count_and_leaves_nothing() {
    let dir = TempDir::new("bad-write");
    let path = dir.join("images");
    expect_err(
        write_idx_images(&path, 3, 28, 28, &pixels(2)),
        &["images", "1568 pixel bytes given for 3 images of 28x28"],
    );
    assert!(dir.names().is_empty());
}

/// The streaming writer gives the same file as the one-shot writer, chunk by chunk; the
/// final name appears only at `finish`, and a short, long or abandoned file leaves nothing.
#[test]
fn streamed_images_match_and_leave_nothing_when_incomplete() {
    let dir = TempDir::new("stream");
    let (path, whole) = (dir.join("streamed"), dir.join("whole"));
    write_idx_images(&whole, 5, 28, 28, &pixels(5)).unwrap();
    let mut w = IdxWriter::create(&path, &[5, 28, 28]).unwrap();
    for chunk in pixels(5).chunks(2 * 28 * 28) {
        w.append(chunk).unwrap();
    }
    assert_eq!(
        dir.names(),
        vec!["streamed.tmp", "whole"],
        "named only when finished"
    );
    w.finish().unwrap();
    assert_eq!(fs::read(&path).unwrap(), fs::read(&whole).unwrap());
    assert_eq!(dir.names(), vec!["streamed", "whole"]);

    let short = dir.join("short");
    let mut w = IdxWriter::create(&short, &[3, 28, 28]).unwrap();
    w.append(&pixels(2)).unwrap();
    expect_err(w.finish(), &["short", "784 bytes short"]);
    let mut w = IdxWriter::create(&short, &[3, 28, 28]).unwrap();
    expect_err(w.append(&pixels(4)), &["short", "784 bytes more"]);
    drop(w);
    let w = IdxWriter::create(&short, &[3]).unwrap();
    drop(w);
    assert_eq!(
        dir.names(),
        vec!["streamed", "whole"],
        "no partial file left"
    );
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = encode_idx(&[3], &LABELS).unwrap();
    bytes[0] = 0x1f;
    expect_err(
        parse_idx(&bytes, "labels.bin"),
        &["labels.bin", "not an IDX file"],
    );
    bytes[0] = 0;
    bytes[2] = 0x0d;
    expect_err(
        parse_idx(&bytes, "labels.bin"),
        &["unsupported IDX data type 0x0d"],
    );
    expect_err(
        parse_idx(&[0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0], "x"),
        &["x: IDX file has 2 dimensions"],
    );
}

#[test]
fn truncated_file_is_rejected() {
    let dir = TempDir::new("trunc");
    let path = dir.join("images");
    let bytes = encode_idx(&[3, 28, 28], &pixels(3)).unwrap();
    fs::write(&path, &bytes[..2000]).unwrap();
    expect_err(
        read_idx_file(&path),
        &[
            path.to_str().unwrap(),
            "truncated: expected 2368 bytes, found 2000",
        ],
    );
    expect_err(parse_idx(&bytes[..10], "h"), &["h: truncated"]);
}

#[test]
fn extra_bytes_are_rejected() {
    let mut bytes = encode_idx(&[3], &LABELS).unwrap();
    bytes.push(0);
    expect_err(
        parse_idx(&bytes, "labels"),
        &["labels: extra bytes", "expected 11 bytes, found 12"],
    );
}

#[test]
fn corrupt_gzip_is_rejected() {
    let dir = TempDir::new("corrupt-gz");
    let gz = gzip(&encode_idx(&[3, 28, 28], &pixels(3)).unwrap());
    // Damaged deflate data (or a checksum that no longer matches).
    let mut damaged = gz.clone();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 8] {
        *b ^= 0x5a;
    }
    let path = dir.join("damaged.gz");
    fs::write(&path, &damaged).unwrap();
    expect_err(read_idx_file(&path), &["damaged.gz", "corrupt gzip data"]);
    // A cut-off stream.
    let path = dir.join("cut.gz");
    fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    expect_err(read_idx_file(&path), &["cut.gz", "corrupt gzip data"]);
    // Garbage after a gzip header.
    let path = dir.join("garbage.gz");
    fs::write(&path, [0x1f, 0x8b, 1, 2, 3]).unwrap();
    expect_err(read_idx_file(&path), &["garbage.gz", "corrupt gzip data"]);
}

#[test]
fn missing_file_is_an_error() {
    let dir = TempDir::new("missing");
    let path = dir.join("nothing-here");
    let e = read_idx_file(&path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Data);
    expect_err(Err::<(), _>(e), &["nothing-here"]);
}

/// A folder of four synthetic MNIST-named files (some gzipped) and the table that matches.
fn synthetic_dir(tag: &str) -> (TempDir, [MnistFile; 4]) {
    let dir = TempDir::new(tag);
    let train = encode_idx(&[3, 28, 28], &pixels(3)).unwrap();
    let train_labels = encode_idx(&[3], &LABELS).unwrap();
    let test = encode_idx(&[2, 28, 28], &pixels(2)).unwrap();
    let test_labels = encode_idx(&[2], &[9, 0]).unwrap();
    fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&train)).unwrap();
    fs::write(dir.join("train-labels-idx1-ubyte"), &train_labels).unwrap();
    fs::write(dir.join("t10k-images-idx3-ubyte"), &test).unwrap();
    fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gzip(&test_labels)).unwrap();
    let files = [
        MnistFile::for_bytes("train-images-idx3-ubyte", &train),
        MnistFile::for_bytes("train-labels-idx1-ubyte", &train_labels),
        MnistFile::for_bytes("t10k-images-idx3-ubyte", &test),
        MnistFile::for_bytes("t10k-labels-idx1-ubyte", &test_labels),
    ];
    (dir, files)
}

#[test]
fn synthetic_folder_loads() {
    let (dir, files) = synthetic_dir("load");
    let m = load_dir_with(dir.path(), &files).unwrap();
    assert_eq!((m.train.count, m.train.rows, m.train.cols), (3, 28, 28));
    assert_eq!(m.train.pixels, pixels(3));
    assert_eq!(m.train_labels, LABELS);
    assert_eq!(m.test.count, 2);
    assert_eq!(m.test.image(1), &pixels(2)[784..]);
    assert_eq!(m.test_labels, vec![9, 0]);
}

#[test]
fn missing_mnist_file_names_file_and_folder() {
    let (dir, files) = synthetic_dir("missing-mnist");
    fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    expect_err(
        load_dir_with(dir.path(), &files),
        &[
            "MNIST file t10k-labels-idx1-ubyte(.gz) not found in",
            dir.path().to_str().unwrap(),
        ],
    );
    expect_err(
        load_dir_with(&dir.join("nope"), &files),
        &["MNIST folder", "nope", "does not exist"],
    );
}

#[test]
fn checksum_mismatch_is_rejected() {
    let (dir, mut files) = synthetic_dir("sha");
    files[1].sha256[0] ^= 1;
    let msg = expect_err(
        load_dir_with(dir.path(), &files),
        &[
            "train-labels-idx1-ubyte",
            "sha256 mismatch",
            "expected",
            "got",
        ],
    );
    let want = &data::hex(&files[1].sha256)[..16];
    assert!(msg.contains(want), "{msg}");
}

#[test]
fn wrong_size_is_rejected() {
    let (dir, mut files) = synthetic_dir("size");
    files[2].size += 1;
    expect_err(
        load_dir_with(dir.path(), &files),
        &[
            "t10k-images-idx3-ubyte",
            "wrong size",
            "expected 1585 bytes",
        ],
    );
}

#[test]
fn images_must_be_28x28_and_match_labels() {
    let dir = TempDir::new("shape");
    let train = encode_idx(&[3, 20, 20], &vec![0; 1200]).unwrap();
    let train_labels = encode_idx(&[2], &[1, 2]).unwrap();
    let test = encode_idx(&[1, 28, 28], &pixels(1)).unwrap();
    let test_labels = encode_idx(&[1], &[12]).unwrap();
    let mut files = [
        MnistFile::for_bytes("a", &train),
        MnistFile::for_bytes("b", &train_labels),
        MnistFile::for_bytes("c", &test),
        MnistFile::for_bytes("d", &test_labels),
    ];
    for (f, bytes) in files
        .iter()
        .zip([&train, &train_labels, &test, &test_labels])
    {
        fs::write(dir.join(f.name), bytes).unwrap();
    }
    expect_err(
        load_dir_with(dir.path(), &files),
        &["images are 20x20, expected 28x28"],
    );
    // Use the 28x28 test images as training images: now the label count is wrong.
    files[0] = files[2];
    expect_err(
        load_dir_with(dir.path(), &files),
        &["2 labels, but", "has 1 images"],
    );
    files[1] = files[3];
    expect_err(
        load_dir_with(dir.path(), &files),
        &["label 12 at index 0 is not a digit 0-9"],
    );
}

#[test]
fn explicit_folders_must_exist_and_hold_the_files() {
    let (dir, files) = synthetic_dir("resolve");
    let default = dir.join("unused-default");
    let no_mirrors: Vec<String> = Vec::new();
    let ok = resolve_data_dir_with(Some(dir.path()), None, &default, &no_mirrors, &files, false);
    assert_eq!(ok.unwrap(), dir.path());
    let ok = resolve_data_dir_with(None, Some(dir.path()), &default, &no_mirrors, &files, false);
    assert_eq!(ok.unwrap(), dir.path());

    let nowhere = dir.join("nowhere");
    expect_err(
        resolve_data_dir_with(Some(&nowhere), None, &default, &no_mirrors, &files, false),
        &["MNIST folder", "nowhere", "(from --data) does not exist"],
    );
    expect_err(
        resolve_data_dir_with(None, Some(&nowhere), &default, &no_mirrors, &files, false),
        &[
            "MNIST folder",
            "nowhere",
            "(from $MNIST_DIR) does not exist",
        ],
    );
    let empty = TempDir::new("resolve-empty");
    expect_err(
        resolve_data_dir_with(
            Some(empty.path()),
            None,
            &default,
            &no_mirrors,
            &files,
            false,
        ),
        &[
            "MNIST file train-images-idx3-ubyte(.gz) not found in",
            "(from --data)",
        ],
    );
    expect_err(
        resolve_data_dir_with(
            None,
            Some(empty.path()),
            &default,
            &no_mirrors,
            &files,
            false,
        ),
        &[
            "MNIST file train-images-idx3-ubyte(.gz) not found in",
            "(from $MNIST_DIR)",
        ],
    );
    // Explicit folders are never downloaded into; the default one was not touched.
    assert!(!default.exists());
    assert!(empty.names().is_empty());
}

#[test]
fn real_mnist_from_mnist_dir() {
    let Some(dir) = std::env::var_os("MNIST_DIR").filter(|d| !d.is_empty()) else {
        eprintln!("note: MNIST_DIR is not set; skipping the real-MNIST check");
        return;
    };
    let dir = PathBuf::from(dir);
    if !data::missing_files(&dir, &data::MNIST_FILES).is_empty() {
        eprintln!(
            "note: MNIST_DIR={} lacks the MNIST files; skipping",
            dir.display()
        );
        return;
    }
    let start = std::time::Instant::now();
    let m = data::load_dir(&dir).unwrap();
    eprintln!("loaded and verified MNIST in {:?}", start.elapsed());
    assert_eq!(m.train.count, 60_000);
    assert_eq!(m.test.count, 10_000);
    assert_eq!((m.train.rows, m.train.cols), (28, 28));
    assert_eq!(m.train.pixels.len(), 60_000 * 784);
    assert_eq!(m.train_labels.len(), 60_000);
    assert_eq!(m.test_labels.len(), 10_000);
    assert_eq!(m.train_labels[0], 5);
    assert_eq!(m.test_labels[0], 7);
}
