//! Fixtures for the pull-tar and pull-raw tests: an HTTPS server that serves images the
//! way a distribution's download server does (ETags, `If-None-Match`, `SHA256SUMS`,
//! `SHA256SUMS.gpg`), the command line to run against it, a checker for the tool's log
//! (the three downloads run at once, so their lines interleave), a `NOTIFY_SOCKET`
//! listener, and an inotify watch to learn when the tool created a temporary file.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cli::{systemd_import, CliOutput};
use super::gpg::TestKey;
use super::http::{lock, HttpServer, Request, Response};
use super::tls::TestCa;

/// A change to the response for one file (a fault, a throttle, extra headers).
pub type Shape = Arc<dyn Fn(Response) -> Response + Send + Sync>;

/// One file the server has.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    etag: Option<String>,
    /// Answer `If-None-Match` with 304 when it names the ETag (what real servers do).
    honour_if_none_match: bool,
    /// Answer `Range` (with `If-Range` naming the ETag, or none) with 206.
    honour_range: bool,
    shape: Option<Shape>,
}

/// An HTTPS file server for images. Paths not put are 404.
pub struct ImageServer {
    files: Arc<Mutex<HashMap<String, Served>>>,
    /// Per path: how many responses carried the body (200).
    bodies: Arc<Mutex<HashMap<String, usize>>>,
    /// Per path: body bytes of all responses (200 and 206), as handed to the server.
    bytes: Arc<Mutex<HashMap<String, u64>>>,
    pub http: HttpServer,
    pub ca: TestCa,
}

impl Default for ImageServer {
    fn default() -> Self {
        ImageServer::new()
    }
}

impl ImageServer {
    pub fn new() -> ImageServer {
        let ca = TestCa::new();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let bodies: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let bytes: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let (served, counted) = (Arc::clone(&files), Arc::clone(&bodies));
        let sent = Arc::clone(&bytes);
        let http = HttpServer::start(Some(&ca), move |req| {
            let file = lock(&served).get(&req.path).cloned();
            let Some(file) = file else {
                return Response::not_found();
            };
            let resp = respond(req, &file);
            if resp.status == 200 {
                *lock(&counted).entry(req.path.clone()).or_default() += 1;
            }
            if req.method != "HEAD" {
                *lock(&sent).entry(req.path.clone()).or_default() += resp.body.len() as u64;
            }
            resp
        });
        ImageServer {
            files,
            bodies,
            bytes,
            http,
            ca,
        }
    }

    /// `https://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        self.http.url(path)
    }

    /// Serve `body` at `path`, without an ETag.
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        lock(&self.files).insert(
            path.to_string(),
            Served {
                body: body.into(),
                etag: None,
                honour_if_none_match: true,
                honour_range: true,
                shape: None,
            },
        );
    }

    /// Serve `body` at `path` with this ETag.
    pub fn put_with_etag(&self, path: &str, body: impl Into<Vec<u8>>, etag: &str) {
        self.put(path, body);
        self.set_etag(path, Some(etag));
    }

    fn edit(&self, path: &str, f: impl FnOnce(&mut Served)) {
        let mut files = lock(&self.files);
        let file = files
            .get_mut(path)
            .unwrap_or_else(|| panic!("{path} is not served"));
        f(file);
    }

    pub fn set_etag(&self, path: &str, etag: Option<&str>) {
        self.edit(path, |f| f.etag = etag.map(str::to_string));
    }

    /// Answer with the full body even when `If-None-Match` names the ETag.
    pub fn ignore_if_none_match(&self, path: &str) {
        self.edit(path, |f| f.honour_if_none_match = false);
    }

    /// Answer every request for `path` with the whole body (200), `Range` or not.
    pub fn ignore_range(&self, path: &str) {
        self.edit(path, |f| f.honour_range = false);
    }

    /// Body bytes the server handed out for `path` so far (responses cut short by a
    /// shape count whole).
    pub fn bytes_sent(&self, path: &str) -> u64 {
        lock(&self.bytes).get(path).copied().unwrap_or(0)
    }

    /// Change every later response for `path` with `shape` (a fault, a throttle, …).
    pub fn shape(&self, path: &str, shape: impl Fn(Response) -> Response + Send + Sync + 'static) {
        self.edit(path, |f| f.shape = Some(Arc::new(shape)));
    }

    pub fn remove(&self, path: &str) {
        lock(&self.files).remove(path);
    }

    /// Serve `<dir>/SHA256SUMS` listing the given (name, content) pairs in binary-mode
    /// lines (`<hex> *<name>`), the way `sha256sum --binary` writes them. Returns it.
    pub fn put_sums(&self, dir: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
        let sums: String = entries
            .iter()
            .map(|(name, body)| format!("{} *{}\n", sha256_hex(body), name))
            .collect();
        self.put(&format!("{dir}/SHA256SUMS"), sums.clone());
        sums.into_bytes()
    }

    /// Serve `<dir>/SHA256SUMS.gpg`: `key`'s signature of the `<dir>/SHA256SUMS` served
    /// now. Returns it.
    pub fn sign_sums(&self, dir: &str, key: &TestKey) -> Vec<u8> {
        let sums = lock(&self.files)
            .get(&format!("{dir}/SHA256SUMS"))
            .map(|f| f.body.clone())
            .expect("SHA256SUMS is served");
        let sig = key.sign(&sums);
        self.put(&format!("{dir}/SHA256SUMS.gpg"), sig.clone());
        sig
    }

    /// Serve `body` at `<dir>/<name>` with its SHA256SUMS and, with a key, its signature.
    /// Returns the sizes of the two companions (0 for no signature).
    pub fn put_verified(
        &self,
        dir: &str,
        name: &str,
        body: &[u8],
        key: Option<&TestKey>,
    ) -> (usize, usize) {
        self.put(&format!("{dir}/{name}"), body.to_vec());
        let sums = self.put_sums(dir, &[(name, body)]);
        let sig = key.map_or(0, |key| self.sign_sums(dir, key).len());
        (sums.len(), sig)
    }

    /// The requests for `path` (query ignored), in arrival order.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.http
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many responses for `path` carried the body (status 200).
    pub fn bodies_sent(&self, path: &str) -> usize {
        lock(&self.bodies).get(path).copied().unwrap_or(0)
    }
}

fn answers_not_modified(req: &Request, file: &Served) -> bool {
    let Some(etag) = &file.etag else {
        return false;
    };
    file.honour_if_none_match
        && req
            .header("If-None-Match")
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
}

fn respond(req: &Request, file: &Served) -> Response {
    // `If-Range` must name the current ETag for a range to be served.
    let ranged = file.honour_range
        && req
            .header("If-Range")
            .is_none_or(|v| file.etag.as_deref() == Some(v));
    let mut resp = if answers_not_modified(req, file) {
        Response::status(304)
    } else if ranged {
        Response::ranged(req, file.body.clone())
    } else {
        Response::ok(file.body.clone())
    };
    if let Some(etag) = &file.etag {
        resp = resp.header("ETag", etag);
    }
    match &file.shape {
        Some(shape) => shape(resp),
        None => resp,
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `systemd-import --image-root=ROOT ARGS…` against `server` (its CA trusted), verifying
/// signatures against `key`'s keyring if given.
pub fn pull_cmd(
    server: &ImageServer,
    root: &Path,
    key: Option<&TestKey>,
    args: &[&str],
) -> Command {
    let mut cmd = systemd_import();
    cmd.arg(format!("--image-root={}", root.display()))
        .args(args)
        .env("SSL_CERT_FILE", server.ca.ca_pem_path());
    match key {
        Some(key) => cmd.env("SYSTEMD_IMPORT_TEST_PUBRING", &key.keyring),
        // A keyring that does not exist: gpg fails if it is ever asked.
        None => cmd.env(
            "SYSTEMD_IMPORT_TEST_PUBRING",
            root.join("no-such-keyring.gpg"),
        ),
    };
    cmd
}

/// One job's log lines, in the order that job logs them.
pub fn download_lines(url: &str, size: usize) -> Vec<String> {
    vec![
        format!(
            "Downloading {} for {url}.",
            systemd_import::util::format::format_bytes(size as u64)
        ),
        format!("Download of {url} complete."),
    ]
}

/// Assert that stderr is exactly `head`, then an interleaving of the `jobs`' line lists
/// (each in its own order), then `tail`. Lines gpg prints (`gpg: …`) are left out of the
/// comparison; with `gpg_lines` at least one must be there.
pub fn assert_log(
    out: &CliOutput,
    head: &[&str],
    jobs: &[Vec<String>],
    tail: &[&str],
    gpg_lines: bool,
) {
    let all = &out.stderr_lines;
    let fail = |why: String| -> ! { panic!("{why}; stderr:\n{}", out.stderr) };
    let gpg = all.iter().filter(|l| l.starts_with("gpg: ")).count();
    if gpg_lines != (gpg > 0) {
        fail(format!(
            "expected gpg output: {gpg_lines}, found {gpg} lines"
        ));
    }
    let lines: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("gpg: ") && !is_progress_line(l))
        .collect();
    if lines.len() < head.len() || lines[..head.len()] != *head {
        fail(format!("stderr does not start with {head:#?}"));
    }
    let mut next = vec![0usize; jobs.len()];
    let mut i = head.len();
    while next.iter().zip(jobs).any(|(n, j)| *n < j.len()) {
        let Some(line) = lines.get(i) else {
            fail("stderr ended within the downloads".into())
        };
        let Some(k) = (0..jobs.len()).find(|&k| jobs[k].get(next[k]).is_some_and(|l| l == line))
        else {
            fail(format!(
                "unexpected line {line:?} among the downloads, expected one of {:?}",
                (0..jobs.len())
                    .filter_map(|k| jobs[k].get(next[k]))
                    .collect::<Vec<_>>()
            ))
        };
        next[k] += 1;
        i += 1;
    }
    if lines[i..] != *tail {
        fail(format!("after the downloads expected {tail:#?}"));
    }
}

/// `Got N% of URL.` (and the rate variant): how many appear depends on timing.
pub fn is_progress_line(line: &str) -> bool {
    line.starts_with("Got ") && line.contains("% of ")
}

/// The last two lines a pull stopped by SIGINT/SIGTERM prints, with its status.
pub fn assert_aborted(out: &CliOutput) {
    assert_eq!(out.status, 1, "{}", out.stderr);
    let n = out.stderr_lines.len();
    assert!(n >= 2, "{}", out.stderr);
    assert_eq!(
        out.stderr_lines[n - 2..],
        ["Transfer aborted.", "Exiting."],
        "{}",
        out.stderr
    );
}

/// A datagram socket to pass as `NOTIFY_SOCKET`, collecting what the tool sends.
pub struct NotifyListener {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl Default for NotifyListener {
    fn default() -> Self {
        NotifyListener::new()
    }
}

impl NotifyListener {
    pub fn new() -> NotifyListener {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        NotifyListener {
            _dir: dir,
            path,
            socket,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message received so far (call it after the tool exited).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// The `X_IMPORT_PROGRESS=` values received so far, in order.
    pub fn progress(&self) -> Vec<u32> {
        self.messages()
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|l| l.strip_prefix("X_IMPORT_PROGRESS=")?.parse().ok())
            .collect()
    }
}

/// Learns through inotify when entries appear in (or are written in) a directory: a real
/// synchronisation with the tool under test, instead of sleeping.
pub struct DirWatch {
    fd: OwnedFd,
    seen: Vec<(u32, String)>,
}

impl DirWatch {
    /// Watch `dir` for created, written and moved-in entries. Set it up before the tool
    /// starts.
    pub fn new(dir: &Path) -> DirWatch {
        // SAFETY: plain syscall; the result is checked and owned.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let mask = libc::IN_CREATE | libc::IN_MODIFY | libc::IN_MOVED_TO;
        // SAFETY: a valid inotify fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        DirWatch {
            fd,
            seen: Vec::new(),
        }
    }

    /// Block until an event with a bit of `mask` for an entry whose name satisfies `pred`
    /// happened (earlier ones count); returns the name. Panics after `timeout`.
    pub fn wait_for(
        &mut self,
        mask: u32,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, name)) = self.seen.iter().find(|(m, n)| m & mask != 0 && pred(n)) {
                return name.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no such inotify event; seen: {:?}",
                self.seen
            );
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            self.read_events();
        }
    }

    fn read_events(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote a whole event at `off`; read it unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_bytes = &buf[off + header..off + header + ev.len as usize];
                let name = name_bytes.split(|b| *b == 0).next().unwrap_or_default();
                self.seen
                    .push((ev.mask, String::from_utf8_lossy(name).into_owned()));
                off += header + ev.len as usize;
            }
        }
    }
}

/// Names in `root` (not recursive) that start with `.#`: temporary objects.
pub fn temporaries(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".#") && !is_owner_lock(n))
        .collect()
}

/// A running pull's locks: its owner lock (`.#owner-<token>.lock`, and the temporary name
/// it is made under), its local name's lock (`.#local-<name>.lock`) and the partial
/// download of its URL (`.#url-<url>.partial`, its lock on the URL too): not temporaries
/// of the image; they go when the pull ends.
pub fn is_owner_lock(name: &str) -> bool {
    name.starts_with(".#owner-")
        || name.starts_with(".#.#owner-")
        || name.starts_with(".#local-")
        || (name.starts_with(".#url-") && name.ends_with(".partial"))
}

/// Compress `data` with an external tool (`gzip`, `xz`, `bzip2`, `zstd`), as a server's
/// files are made. Panics with what to install if the tool is missing.
pub fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install gzip, xz-utils, bzip2 and zstd")
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{tool} failed");
    out.stdout
}

/// [`assert_log`] for a `--verify=checksum` pull of `url` (a body of `body_len` bytes,
/// a `SHA256SUMS` of `sums_len` beside it) saved as `local` (`None`: cache only), ending
/// with `tail`.
pub fn assert_checksum_pull_log(
    out: &CliOutput,
    url: &str,
    local: Option<&str>,
    (body_len, sums_len): (usize, usize),
    tail: &[&str],
) {
    let pulling = match local {
        Some(local) => format!("Pulling '{url}', saving as '{local}'."),
        None => format!("Pulling '{url}'."),
    };
    let sums = systemd_import::util::names::url_change_last_component(url, "SHA256SUMS").unwrap();
    assert_log(
        out,
        &[&pulling],
        &[
            download_lines(url, body_len),
            download_lines(&sums, sums_len),
        ],
        tail,
        false,
    );
}

/// Run `systemd-import` against `server` (see [`pull_cmd`]) to completion.
pub fn pull(server: &ImageServer, root: &Path, key: Option<&TestKey>, args: &[&str]) -> CliOutput {
    super::cli::run(&mut pull_cmd(server, root, key, args))
}

/// Top-level names in `root` (dot files included), sorted.
pub fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Exit status 1, and `root` holds exactly what it held `before`.
pub fn assert_failed_cleanly(out: &CliOutput, root: &Path, before: &[String]) {
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(names(root), before, "{}", out.stderr);
}
