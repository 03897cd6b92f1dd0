//! The IDX file format of MNIST (unsigned-byte data only), raw or gzipped.
//!
//! Layout: magic `00 00 08 ndim`, then `ndim` big-endian u32 dimensions, then the
//! product of the dimensions in bytes, row-major. Nothing may follow the data.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{io_err, Error, ErrorKind, Result};

/// The IDX type code of unsigned bytes, the only one MNIST uses.
const DTYPE_U8: u8 = 0x08;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX file: its dimensions and its bytes (row-major, `dims.iter().product()` long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (`[count, rows, cols]` or `[count]`).
    pub dims: Vec<usize>,
    /// The values, row-major (`dims.iter().product()` bytes).
    pub data: Vec<u8>,
}

/// Parses an unsigned-byte IDX file of 1 or 3 dimensions held in memory. `name` (a path or
/// URL) starts every error message. The length must match the header exactly.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<Idx> {
    if bytes.len() < 4 {
        return Err(Error::data(format!(
            "{name}: truncated: expected at least 4 bytes of IDX header, found {}",
            bytes.len()
        )));
    }
    let magic = &bytes[..4];
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::data(format!(
            "{name}: not an IDX file (bad magic {:02x} {:02x} {:02x} {:02x}, expected 00 00 08 0n)",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    if magic[2] != DTYPE_U8 {
        return Err(Error::data(format!(
            "{name}: unsupported IDX data type 0x{:02x} (only unsigned bytes, 0x08, are supported)",
            magic[2]
        )));
    }
    let ndim = magic[3] as usize;
    if ndim != 1 && ndim != 3 {
        return Err(Error::data(format!(
            "{name}: IDX file has {ndim} dimensions (expected 1 for labels or 3 for images)"
        )));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::data(format!(
            "{name}: truncated: expected at least {header} bytes of IDX header, found {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| Error::data(format!("{name}: IDX dimensions {dims:?} are too large")))?;
    if bytes.len() < expected {
        return Err(Error::data(format!(
            "{name}: truncated: expected {expected} bytes, found {}",
            bytes.len()
        )));
    }
    if bytes.len() > expected {
        return Err(Error::data(format!(
            "{name}: extra bytes after the IDX data: expected {expected} bytes, found {}",
            bytes.len()
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// True when `bytes` starts like a gzip stream (`1f 8b`).
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses a whole gzip stream (one or more members). At most `limit` decompressed
/// bytes are produced; more is an error ("larger than expected"). `name` starts errors.
pub fn gunzip(bytes: &[u8], limit: usize, name: &str) -> Result<Vec<u8>> {
    // The gzip trailer's ISIZE (size mod 2^32) is a good capacity hint for one member.
    let hint = match bytes.len() {
        n if n >= 18 => {
            u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]) as usize
        }
        _ => 0,
    };
    // Bounded: a corrupt trailer must not make us reserve gigabytes.
    let cap = hint
        .min(limit.saturating_add(1))
        .min(bytes.len().saturating_mul(1032))
        .min(1 << 28);
    let mut out = Vec::with_capacity(cap);
    let mut decoder = MultiGzDecoder::new(bytes).take((limit as u64).saturating_add(1));
    decoder.read_to_end(&mut out).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::UnexpectedEof {
            "truncated stream".to_string()
        } else {
            e.to_string()
        };
        Error::data(format!("{name}: corrupt gzip data: {why}"))
    })?;
    if out.len() > limit {
        return Err(Error::data(format!(
            "{name}: decompressed data is larger than expected ({limit} bytes)"
        )));
    }
    Ok(out)
}

/// Reads a file whole, decompressing it when it is gzip (detected by content, not by name).
/// At most `limit` decompressed bytes are accepted.
pub(crate) fn read_maybe_gz(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(io_err(ErrorKind::Data, "reading", path))?;
    if is_gzip(&bytes) {
        gunzip(&bytes, limit, &path.display().to_string())
    } else if bytes.len() > limit {
        Err(Error::data(format!(
            "{}: file is larger than expected ({limit} bytes)",
            path.display()
        )))
    } else {
        Ok(bytes)
    }
}

/// Reads and parses an IDX file, raw or gzipped (detected by the `1f 8b` magic).
pub fn read_idx_file(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path, usize::MAX)?;
    parse_idx(&bytes, &path.display().to_string())
}

/// Writes `count` images of `rows` x `cols` bytes (row-major, `pixels.len()` must be
/// `count * rows * cols`) as a raw IDX file, atomically (via a `.tmp` sibling and a rename).
pub fn write_idx_images(
    path: impl AsRef<Path>,
    count: usize,
    rows: usize,
    cols: usize,
    pixels: &[u8],
) -> Result<()> {
    let path = path.as_ref();
    let expected = count.checked_mul(rows).and_then(|n| n.checked_mul(cols));
    if expected != Some(pixels.len()) {
        return Err(Error::data(format!(
            "writing {}: {} pixel bytes given for {count} images of {rows}x{cols}",
            path.display(),
            pixels.len()
        )));
    }
    write_idx(path, &[count, rows, cols], pixels)
}

/// Writes labels as a raw one-dimensional IDX file, atomically (`.tmp` sibling and rename).
pub fn write_idx_labels(path: impl AsRef<Path>, labels: &[u8]) -> Result<()> {
    write_idx(path.as_ref(), &[labels.len()], labels)
}

/// Encodes an unsigned-byte IDX file (header + data) in memory.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, DTYPE_U8, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::data(format!("IDX dimension {d} does not fit in 32 bits")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    let bytes = encode_idx(dims, data)
        .map_err(|e| Error::data(format!("writing {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// An unsigned-byte IDX file written a chunk at a time, for more data than memory holds: the
/// header (dimensions known up front) goes first, then [`IdxWriter::append`] adds rows, and
/// [`IdxWriter::finish`] checks that every byte came, syncs and renames the `.tmp` sibling
/// to `path` (the final name only ever holds a complete file). Dropped unfinished, the
/// temporary file is removed.
pub struct IdxWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<fs::File>>,
    left: u64,
}

impl IdxWriter {
    /// Creates `path.tmp` and writes the header of an IDX file of dimensions `dims`.
    pub fn create(path: &Path, dims: &[usize]) -> Result<IdxWriter> {
        let header = encode_idx(dims, &[])
            .map_err(|e| Error::data(format!("writing {}: {e}", path.display())))?;
        let tmp = sibling(path, ".tmp");
        let f = fs::File::create(&tmp).map_err(io_err(ErrorKind::Io, "creating", &tmp))?;
        let mut w = IdxWriter {
            path: path.to_path_buf(),
            left: dims.iter().map(|&d| d as u64).product(),
            tmp,
            file: Some(io::BufWriter::with_capacity(1 << 20, f)),
        };
        w.write(&header)?;
        Ok(w)
    }

    /// Appends `bytes` (whole rows, in order); more than the header announced is an error.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.left {
            return Err(Error::data(format!(
                "writing {}: {} bytes more than its dimensions hold",
                self.path.display(),
                bytes.len() as u64 - self.left
            )));
        }
        self.left -= bytes.len() as u64;
        self.write(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("open until finished");
        f.write_all(bytes)
            .map_err(io_err(ErrorKind::Io, "writing", &self.tmp))
    }

    /// Syncs the file and gives it its name; errors if bytes are missing.
    pub fn finish(mut self) -> Result<()> {
        if self.left > 0 {
            return Err(Error::data(format!(
                "writing {}: {} bytes short of its dimensions",
                self.path.display(),
                self.left
            )));
        }
        let f = self.file.take().expect("open until finished");
        let tmp = self.tmp.clone();
        let synced = f.into_inner().map_err(|e| e.into_error());
        if let Err(e) = synced.and_then(|f| f.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(ErrorKind::Io, "writing", &tmp)(e));
        }
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!(
                "renaming {} to {}: {e}",
                tmp.display(),
                self.path.display()
            ))
        })
    }
}

impl Drop for IdxWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// `path` with `suffix` appended to its file name (`a/b.gz` + `.part` = `a/b.gz.part`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through `path.tmp`: the final name only ever holds a complete
/// file. The temporary file is removed when anything fails.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via(path, &sibling(path, ".tmp"), bytes)
}

/// Writes `bytes` to `tmp`, syncs it, then renames it to `path`; removes `tmp` on failure.
pub(crate) fn write_via(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let result = (|| {
        let mut f = fs::File::create(tmp).map_err(io_err(ErrorKind::Io, "creating", tmp))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_err(ErrorKind::Io, "writing", tmp))?;
        drop(f);
        fs::rename(tmp, path).map_err(|e| {
            Error::io(format!(
                "renaming {} to {}: {e}",
                tmp.display(),
                path.display()
            ))
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let bytes = encode_idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
        let idx = parse_idx(&bytes, "x").unwrap();
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.data.len(), 12);
        assert_eq!(idx.data[11], 12);
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let msg = |b: &[u8]| parse_idx(b, "f").unwrap_err().message;
        assert!(msg(&[0, 0]).contains("truncated"));
        assert!(msg(&[1, 0, 8, 1, 0, 0, 0, 0]).contains("not an IDX file"));
        assert!(msg(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).contains("data type 0x0d"));
        assert!(msg(&[0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0]).contains("2 dimensions"));
        assert!(msg(&[0, 0, 8, 3, 0, 0, 0, 1]).contains("truncated"));
        let huge = [
            0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        // Too large on 32-bit targets, merely truncated on 64-bit ones: an error either way.
        assert!(parse_idx(&huge, "f").is_err());
    }

    #[test]
    fn empty_label_file_is_valid() {
        let idx = parse_idx(&[0, 0, 8, 1, 0, 0, 0, 0], "f").unwrap();
        assert_eq!(idx.dims, vec![0]);
        assert!(idx.data.is_empty());
    }

    #[test]
    fn sibling_appends_suffix() {
        assert_eq!(
            sibling(Path::new("a/b.gz"), ".part"),
            PathBuf::from("a/b.gz.part")
        );
    }
}
