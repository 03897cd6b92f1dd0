//! The downloader against a tiny HTTP/1.1 server on 127.0.0.1 (no other network): good,
//! corrupt, truncated and missing files, mirror fallback, and nothing left behind on failure.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use wgpu_diffusion::data::{
    download_files, encode_idx, load_dir_with, parse_mirror_list, read_idx_file,
    resolve_data_dir_with, MnistFile, DEFAULT_MIRRORS,
};
use wgpu_diffusion::error::Error;

/// What the server answers for one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// Content-Length to announce when it differs from the body's (a connection cut short).
    announce: Option<usize>,
}

fn ok(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        body,
        announce: None,
    }
}

/// A one-thread HTTP/1.1 server serving a fixed map; unknown paths get 404. It handles at
/// most `MAX_CONNECTIONS` connections and stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

const MAX_CONNECTIONS: usize = 64;

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let _ = serve(stream, &routes);
            }
        });
        Server {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    /// The base URL of the mirror (with a trailing slash, as the real ones have).
    fn base(&self) -> String {
        format!("http://{}/mnist/", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Reply>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = routes.get(&path).cloned().unwrap_or(Reply {
        status: 404,
        body: b"not found".to_vec(),
        announce: None,
    });
    let reason = match reply.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.announce.unwrap_or(reply.body.len())
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&reply.body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)
}

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
            "wgpu-diffusion-download-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
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

const NAME: &str = "train-images-idx3-ubyte";

/// A synthetic 3-image 28x28 IDX file.
fn images(seed: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..3 * 784)
        .map(|i| ((i + seed) * 13 % 256) as u8)
        .collect();
    encode_idx(&[3, 28, 28], &pixels).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn route(name: &str, reply: Reply) -> HashMap<String, Reply> {
    HashMap::from([(format!("/mnist/{name}.gz"), reply)])
}

/// Asserts a one-line error containing every phrase; returns its message.
#[track_caller]
fn expect_err(r: Result<(), Error>, phrases: &[&str]) -> String {
    let msg = r.expect_err("expected an error").to_string();
    eprintln!("error: {msg}");
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    for p in phrases {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
    msg
}

#[test]
fn good_file_lands_and_verifies() {
    let raw = images(0);
    let gz = gzip(&raw);
    let server = Server::start(route(NAME, ok(gz.clone())));
    let dir = TempDir::new("good");
    let target = dir.path().join("sub");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    download_files(&target, &[server.base()], &files, false).unwrap();
    let path = target.join(format!("{NAME}.gz"));
    assert_eq!(
        fs::read(&path).unwrap(),
        gz,
        "the .gz is stored as received"
    );
    assert_eq!(read_idx_file(&path).unwrap().dims, vec![3, 28, 28]);
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1, "no .part left");

    // Present and valid: not fetched again (the mirror is gone now).
    drop(server);
    download_files(&target, &["http://127.0.0.1:9/".into()], &files, false).unwrap();
}

#[test]
fn corrupt_file_fails_checksum() {
    let raw = images(0);
    // Same size, other bytes.
    let server = Server::start(route(NAME, ok(gzip(&images(1)))));
    let dir = TempDir::new("corrupt");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    expect_err(
        download_files(dir.path(), &[server.base()], &files, false),
        &[
            "download of train-images-idx3-ubyte failed from 1 mirror (last: ",
            "sha256 mismatch",
            &server.base(),
        ],
    );
    assert!(dir.names().is_empty(), "left: {:?}", dir.names());
}

#[test]
fn wrong_size_fails() {
    let raw = images(0);
    let mut longer = raw.clone();
    longer.push(0);
    let server = Server::start(route(NAME, ok(gzip(&longer))));
    let dir = TempDir::new("size");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    expect_err(
        download_files(dir.path(), &[server.base()], &files, false),
        &[NAME, "larger than expected"],
    );
    assert!(dir.names().is_empty());
}

#[test]
fn truncated_gzip_fails() {
    let raw = images(0);
    let gz = gzip(&raw);
    let server = Server::start(route(NAME, ok(gz[..gz.len() / 2].to_vec())));
    let dir = TempDir::new("truncated");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    expect_err(
        download_files(dir.path(), &[server.base()], &files, false),
        &[NAME, "corrupt gzip data"],
    );
    assert!(dir.names().is_empty());
}

#[test]
fn connection_cut_short_fails() {
    let raw = images(0);
    let gz = gzip(&raw);
    let reply = Reply {
        status: 200,
        body: gz[..gz.len() / 2].to_vec(),
        announce: Some(gz.len()),
    };
    let server = Server::start(route(NAME, reply));
    let dir = TempDir::new("cut");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    expect_err(
        download_files(dir.path(), &[server.base()], &files, false),
        &[NAME, "failed from 1 mirror"],
    );
    assert!(dir.names().is_empty());
}

#[test]
fn missing_file_404_names_file_and_mirror() {
    let raw = images(0);
    let server = Server::start(HashMap::new());
    let dir = TempDir::new("404");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    let url = format!("{}{NAME}.gz", server.base());
    expect_err(
        download_files(dir.path(), &[server.base()], &files, false),
        &[
            "download of train-images-idx3-ubyte failed",
            &format!("(last: {url}: status 404)"),
        ],
    );
    assert!(dir.names().is_empty());
}

#[test]
fn mirror_fallback_uses_the_second_mirror() {
    let raw = images(0);
    let bad = Server::start(HashMap::new());
    let good = Server::start(route(NAME, ok(gzip(&raw))));
    let dir = TempDir::new("fallback");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    // No trailing slash on the second base: both spellings work.
    let second = good.base().trim_end_matches('/').to_string();
    download_files(dir.path(), &[bad.base(), second], &files, false).unwrap();
    assert_eq!(dir.names(), vec![format!("{NAME}.gz")]);
}

#[test]
fn all_mirrors_failing_reports_the_last() {
    let raw = images(0);
    let a = Server::start(HashMap::new());
    let b = Server::start(route(NAME, ok(gzip(&images(2)))));
    // A port with nothing listening (bound, then released).
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mnist/", l.local_addr().unwrap())
    };
    let dir = TempDir::new("all-fail");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    let msg = expect_err(
        download_files(dir.path(), &[a.base(), dead, b.base()], &files, false),
        &[
            "failed from all 3 mirrors",
            &format!("(last: {}{NAME}.gz: ", b.base()),
            "sha256 mismatch",
        ],
    );
    assert!(!msg.contains("status 404"), "{msg}");
    assert!(dir.names().is_empty());
}

#[test]
fn no_mirrors_is_an_error() {
    let raw = images(0);
    let dir = TempDir::new("no-mirrors");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    expect_err(
        download_files(dir.path(), &[], &files, false),
        &["download of train-images-idx3-ubyte: no mirrors given"],
    );
    assert!(dir.names().is_empty());
}

#[test]
fn raw_body_is_stored_raw() {
    // As if a server had decoded the gzip (Content-Encoding) for us.
    let raw = images(0);
    let server = Server::start(route(NAME, ok(raw.clone())));
    let dir = TempDir::new("raw");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    download_files(dir.path(), &[server.base()], &files, false).unwrap();
    assert_eq!(dir.names(), vec![NAME.to_string()]);
    assert_eq!(fs::read(dir.path().join(NAME)).unwrap(), raw);
}

#[test]
fn invalid_local_file_is_replaced() {
    let raw = images(0);
    let server = Server::start(route(NAME, ok(gzip(&raw))));
    let dir = TempDir::new("replace");
    fs::write(dir.path().join(NAME), images(5)).unwrap();
    let files = [MnistFile::for_bytes(NAME, &raw)];
    download_files(dir.path(), &[server.base()], &files, false).unwrap();
    assert_eq!(dir.names(), vec![format!("{NAME}.gz")]);
}

#[test]
fn default_folder_is_downloaded_and_loads() {
    let names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let contents = [
        images(0),
        encode_idx(&[3], &[1, 2, 3]).unwrap(),
        images(1),
        encode_idx(&[3], &[7, 8, 9]).unwrap(),
    ];
    let routes: HashMap<String, Reply> = names
        .iter()
        .zip(&contents)
        .map(|(n, c)| (format!("/mnist/{n}.gz"), ok(gzip(c))))
        .collect();
    let server = Server::start(routes);
    let files: [MnistFile; 4] =
        std::array::from_fn(|i| MnistFile::for_bytes(names[i], &contents[i]));
    let dir = TempDir::new("default");
    let default = dir.path().join("data").join("mnist");
    let got = resolve_data_dir_with(None, None, &default, &[server.base()], &files, false);
    assert_eq!(got.unwrap(), default);
    let m = load_dir_with(&default, &files).unwrap();
    assert_eq!(m.train.count, 3);
    assert_eq!(m.test_labels, vec![7, 8, 9]);
    assert_eq!(fs::read_dir(&default).unwrap().count(), 4);
}

#[test]
fn mirror_list_parsing() {
    assert_eq!(
        parse_mirror_list(Some(" http://a/ , ,http://b")),
        vec!["http://a/".to_string(), "http://b".to_string()]
    );
    assert_eq!(parse_mirror_list(Some(" , ")), DEFAULT_MIRRORS.to_vec());
    assert_eq!(parse_mirror_list(None), DEFAULT_MIRRORS.to_vec());
}

#[test]
fn failed_default_download_suggests_data_flag() {
    let raw = images(0);
    let server = Server::start(HashMap::new());
    let dir = TempDir::new("default-fail");
    let default = dir.path().join("data").join("mnist");
    let files = [MnistFile::for_bytes(NAME, &raw)];
    let r = resolve_data_dir_with(None, None, &default, &[server.base()], &files, false);
    expect_err(
        r.map(|_| ()),
        &[
            "download of train-images-idx3-ubyte failed from 1 mirror",
            "status 404",
            "--data DIR or $MNIST_DIR",
        ],
    );
    assert_eq!(fs::read_dir(&default).unwrap().count(), 0, "nothing left");
}
