//! One error type for the whole program. Every variant renders as one line that names the
//! problem; `main` prints it and exits with `exit_code()` (never a panic for bad input).

use std::fmt;

/// What went wrong, grouped by who can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad command-line values or an impossible configuration (patch/overlap, ranges).
    Config,
    /// Missing, truncated or corrupt data file, checksum mismatch, failed download.
    Data,
    /// No usable GPU adapter, or the adapter cannot run the model (limits).
    Adapter,
    /// A wgpu validation or device error, a shader that does not compile.
    Gpu,
    /// A checkpoint that is missing, corrupt or from another configuration.
    Checkpoint,
    /// Training diverged (NaN or infinite loss).
    Diverged,
    /// Any other I/O failure (writing outputs).
    Io,
    /// Stopped by Ctrl-C or SIGTERM after saving what it had (exit 130, as shells report a
    /// SIGINT).
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, always: fold any newlines an underlying library put in its message.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Error { kind, message }
    }
    pub fn config(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, m)
    }
    pub fn data(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, m)
    }
    pub fn adapter(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Adapter, m)
    }
    pub fn gpu(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Gpu, m)
    }
    pub fn checkpoint(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Checkpoint, m)
    }
    pub fn io(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, m)
    }

    /// Process exit code: 2 for anything the user can fix by changing input or setup
    /// (the same code clap uses for bad flags), 3 for a diverged run, 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Config | ErrorKind::Data | ErrorKind::Adapter | ErrorKind::Checkpoint => 2,
            ErrorKind::Diverged => 3,
            ErrorKind::Gpu | ErrorKind::Io => 1,
            ErrorKind::Interrupted => 130,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Attach a path or action to an `io::Error`: `fs::read(p).map_err(io_err(Kind::Data, "reading", p))`.
pub fn io_err<'a>(
    kind: ErrorKind,
    action: &'a str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::new(kind, format!("{action} {}: {e}", path.display()))
}
