//! Downloading the MNIST files from public mirrors, verified before they are kept.
//!
//! Each file is fetched as `BASE/<name>.gz`, held in memory, decompressed and checked (size
//! and sha256 of the decompressed bytes). Only then is it written, *as received*, to
//! `<name>.gz.part` and renamed to `<name>.gz` (or `<name>.part` -> `<name>` when a server
//! already decoded the gzip for us). No partial or unverified file is ever left behind.

use std::fs;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use ureq::Agent;

use super::idx::{self, gunzip, is_gzip};
use super::{find_file, MnistFile};
use crate::error::{io_err, Error, ErrorKind, Result};

/// Public mirrors of the original `.gz` files, tried in this order.
pub const DEFAULT_MIRRORS: [&str; 3] = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://raw.githubusercontent.com/fgnt/mnist/master/",
];

/// Environment variable that replaces the mirror list (comma-separated base URLs).
pub const MIRRORS_ENV: &str = "MNIST_MIRRORS";

/// Connect timeout, and the longest a single read may stall.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The mirrors to use: the comma-separated base URLs of `$MNIST_MIRRORS` when it holds any,
/// else [`DEFAULT_MIRRORS`].
pub fn mirrors_from_env() -> Vec<String> {
    parse_mirror_list(std::env::var(MIRRORS_ENV).ok().as_deref())
}

/// The base URLs of a comma-separated list (blanks ignored); [`DEFAULT_MIRRORS`] when the
/// list is absent or holds none.
pub fn parse_mirror_list(list: Option<&str>) -> Vec<String> {
    let mirrors: Vec<String> = list
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if mirrors.is_empty() {
        DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect()
    } else {
        mirrors
    }
}

/// Makes sure every file of `files` is in `dir` (created if needed) and valid, downloading
/// the missing or invalid ones from `mirrors` in turn. A progress bar is drawn on stderr when
/// `progress` is set and stderr is a terminal (a one-line note per file otherwise).
/// Fails with one line naming the file and the last mirror's error when no mirror served a
/// valid copy; nothing is written for that file then.
pub fn download_files(
    dir: &Path,
    mirrors: &[String],
    files: &[MnistFile],
    progress: bool,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(ErrorKind::Data, "creating folder", dir))?;
    let agent: Agent = Agent::config_builder()
        .timeout_connect(Some(TIMEOUT))
        .timeout_per_read(Some(TIMEOUT))
        .build()
        .into();
    for file in files {
        if is_present_and_valid(dir, file) {
            continue;
        }
        download_one(&agent, dir, mirrors, file, progress)?;
    }
    Ok(())
}

/// True when `file` is in `dir` (raw or gzipped) with the right size and sha256.
fn is_present_and_valid(dir: &Path, file: &MnistFile) -> bool {
    let Some(path) = find_file(dir, file.name) else {
        return false;
    };
    idx::read_maybe_gz(&path, file.size)
        .and_then(|bytes| file.verify(&bytes, &path.display().to_string()))
        .is_ok()
}

/// Tries every mirror for one file; keeps the first copy that verifies.
fn download_one(
    agent: &Agent,
    dir: &Path,
    mirrors: &[String],
    file: &MnistFile,
    progress: bool,
) -> Result<()> {
    if mirrors.is_empty() {
        return Err(Error::data(format!(
            "download of {}: no mirrors given",
            file.name
        )));
    }
    let mut last = String::new();
    for (i, base) in mirrors.iter().enumerate() {
        let url = format!("{}/{}.gz", base.trim_end_matches('/'), file.name);
        match fetch(agent, &url, file, progress).and_then(|body| verified(body, file, &url)) {
            Ok(body) => return store(dir, file, &body),
            Err(e) => last = e,
        }
        if progress && i + 1 < mirrors.len() {
            eprintln!("{last}; trying the next mirror");
        }
    }
    let from = match mirrors.len() {
        1 => "1 mirror".to_string(),
        n => format!("all {n} mirrors"),
    };
    Err(Error::data(format!(
        "download of {} failed from {from} (last: {last})",
        file.name
    )))
}

/// Fetches `url` whole into memory; errors are `"URL: reason"`.
fn fetch(
    agent: &Agent,
    url: &str,
    file: &MnistFile,
    progress: bool,
) -> std::result::Result<Vec<u8>, String> {
    let mut response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("{url}: status {code}"),
        e => format!("{url}: {e}"),
    })?;
    let body = response.body_mut();
    let length = body.content_length();
    // Even incompressible data gains only a little from gzip's framing.
    let limit = file.size as u64 + file.size as u64 / 64 + 4096;
    if let Some(n) = length.filter(|&n| n > limit) {
        return Err(format!(
            "{url}: response of {n} bytes is too large for {}",
            file.name
        ));
    }
    let bar = progress_bar(url, file.name, length, progress);
    let mut bytes = Vec::with_capacity(length.unwrap_or(0) as usize);
    let read = bar
        .wrap_read(body.with_config().limit(limit).reader())
        .read_to_end(&mut bytes);
    bar.finish_and_clear();
    read.map_err(|e| format!("{url}: {e}"))?;
    Ok(bytes)
}

/// Checks a downloaded body (gzip or, if the server decoded it, raw); returns it unchanged.
fn verified(body: Vec<u8>, file: &MnistFile, url: &str) -> std::result::Result<Vec<u8>, String> {
    let check = if is_gzip(&body) {
        gunzip(&body, file.size, url).and_then(|raw| file.verify(&raw, url))
    } else {
        file.verify(&body, url)
    };
    check.map(|()| body).map_err(|e| e.message)
}

/// Writes a verified body under its final name (through a `.part` sibling), and removes
/// the other form of the file (`name` vs `name.gz`), which was missing or invalid.
fn store(dir: &Path, file: &MnistFile, body: &[u8]) -> Result<()> {
    let (keep, other) = if is_gzip(body) {
        (format!("{}.gz", file.name), file.name.to_string())
    } else {
        (file.name.to_string(), format!("{}.gz", file.name))
    };
    let path = dir.join(&keep);
    idx::write_via(&path, &idx::sibling(&path, ".part"), body)?;
    let other = dir.join(other);
    if other.exists() {
        fs::remove_file(&other).map_err(io_err(ErrorKind::Data, "removing invalid", &other))?;
    }
    Ok(())
}

/// A byte progress bar on stderr when asked for and stderr is a terminal; otherwise hidden
/// (with a one-line note when asked for).
fn progress_bar(url: &str, name: &str, length: Option<u64>, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    if !std::io::stderr().is_terminal() {
        eprintln!("downloading {url}");
        return ProgressBar::hidden();
    }
    let (bar, template) = match length {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("{name}.gz"));
    bar
}
