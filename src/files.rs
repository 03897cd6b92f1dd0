//! Files written so that a crash or kill leaves either the old file or the new one.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` via `path.tmp`, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via(path, ".tmp", bytes)
}

/// [`write_atomic`] for a file that several processes may write at once (a cache): each
/// writes through its own `path.<pid>.tmp`, and the last rename wins whole.
pub fn write_atomic_shared(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via(path, &format!(".{}.tmp", std::process::id()), bytes)
}

fn write_via(path: &Path, suffix: &str, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(suffix);
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}: {e}", path.display()))
    })
}
