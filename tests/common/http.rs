//! A scriptable HTTP/1.1 (and HTTPS) server for tests, plus a small blocking curl client.
//!
//! ```ignore
//! let server = HttpServer::start(None, |req| match req.path.as_str() {
//!     "/hello" => Response::ok("hi"),
//!     "/big" => Response::ok(vec![0u8; 1 << 20]).truncate_after(1000),
//!     _ => Response::not_found(),
//! });
//! let reply = request("GET", &server.url("/hello"), &[], b"", None).unwrap();
//! assert_eq!(reply.status, 200);
//! assert_eq!(server.requests()[0].path, "/hello");
//! ```
//!
//! The server binds `127.0.0.1:0` and runs one thread per connection. Connections are kept alive
//! (HTTP/1.1 rules, `Connection: close` honoured), every request is logged before the handler sees
//! it, and [`Response`] carries fault behaviours (truncation, stalls, throttling, …). Dropping the
//! server shuts every socket down, wakes every sleeping behaviour and joins every thread, so a test
//! never hangs on it. A handler that panics gets its client a 500, and the panic is re-raised when
//! the server is dropped, so assertions inside handlers are not lost.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslStream};

use super::tls::TestCa;

/// Longest request line or header line the server accepts.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines in one request.
const MAX_HEADERS: usize = 200;
/// Size of the pieces a body is written in (one chunk each when chunked).
const WRITE_PIECE: usize = 16 * 1024;

/// How long [`request`] may take before it fails: a safety net against hangs, not a bound any
/// test relies on.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// The handler type: any closure from a request to a response, shared between connection threads.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync + 'static;

/// Lock a mutex, ignoring poisoning: a panicking handler or test thread must not wedge the helpers.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait on `cv` until `ready` returns `Some` for the state in `m` (checked at once and after
/// every wake-up), or until `deadline`: then `Err` with the guard, for a failure message.
pub fn wait_until<'a, T, R>(
    m: &'a Mutex<T>,
    cv: &Condvar,
    deadline: Instant,
    mut ready: impl FnMut(&T) -> Option<R>,
) -> Result<R, MutexGuard<'a, T>> {
    let mut guard = lock(m);
    loop {
        if let Some(r) = ready(&guard) {
            return Ok(r);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(guard);
        }
        guard = cv
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

// ---------------------------------------------------------------------------------------------
// Request

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`, …
    pub method: String,
    /// The path part of the request target, without the query (not percent-decoded).
    pub path: String,
    /// The raw query string without `?` (empty if none).
    pub query: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header lines in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The request body (de-chunked).
    pub body: Vec<u8>,
    /// Which accepted connection carried it (1 for the first connection, 2 for the next, …).
    pub connection_id: u64,
    /// Position in the server's request log (0-based).
    pub seq: usize,
}

impl Request {
    /// The first value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// All values of header `name` (case-insensitive), in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first query parameter `name`, percent-decoded (`+` as space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params(name).into_iter().next()
    }

    /// Every query parameter `name` in order, percent-decoded: e.g. repeated `scope=`.
    pub fn query_params(&self, name: &str) -> Vec<String> {
        self.query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
            .collect()
    }

    /// `(user, password)` from an `Authorization: Basic …` header, if present and well-formed.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header("Authorization")?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = openssl::base64::decode_block(b64.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// The token of an `Authorization: Bearer …` header, if present.
    pub fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.header("Authorization")?.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// Path plus `?query` as it appeared on the request line.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The requested `Range: bytes=START-[END]`, as `(start, inclusive end)`; `None` when absent,
    /// multi-range or not parseable (servers then answer the whole body).
    pub fn byte_range(&self) -> Option<(u64, Option<u64>)> {
        let spec = self.header("Range")?.strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let start = start.trim().parse().ok()?;
        let end = match end.trim() {
            "" => None,
            e => Some(e.parse().ok()?),
        };
        Some((start, end))
    }

    fn wants_close(&self) -> bool {
        let conn = self.header("Connection").unwrap_or("");
        let has = |tok: &str| conn.split(',').any(|t| t.trim().eq_ignore_ascii_case(tok));
        if self.version == "HTTP/1.0" {
            !has("keep-alive")
        } else {
            has("close")
        }
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode `s` for use as a query parameter value (unreserved characters kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Response

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// `Content-Length` (added unless the handler set one).
    ContentLength,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
}

/// A deliberate failure while answering.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Headers as if complete, then only this many body bytes, then an abrupt close.
    TruncateAfter(usize),
    /// This many body bytes, then silence for the duration, then an abrupt close.
    StallAfter(usize, Duration),
    /// Close the connection without sending a single byte.
    CloseWithoutResponse,
}

/// Whether [`Response::ranged_with`] honours a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeSupport {
    /// Answer a valid `Range: bytes=N-[M]` with 206 and `Content-Range`.
    Honour,
    /// Behave like a server without range support: always 200 with the full body.
    Ignore,
}

/// What the server sends back: status, headers, body and optional fault behaviours.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header lines, in order. `Content-Length`, `Transfer-Encoding` and `Connection: close` are
    /// added by the server as the framing needs; a `Content-Length` set here is sent unchanged.
    pub headers: Vec<(String, String)>,
    /// The full body (behaviours may send less of it).
    pub body: Vec<u8>,
    delay: Option<Duration>,
    framing: Framing,
    fault: Fault,
    bytes_per_sec: Option<u64>,
}

impl Response {
    /// A response with status `code`, no headers and an empty body.
    pub fn status(code: u16) -> Response {
        Response {
            status: code,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            framing: Framing::ContentLength,
            fault: Fault::None,
            bytes_per_sec: None,
        }
    }

    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Response {
        Response::status(200).body(body)
    }

    /// 404 with a short text body.
    pub fn not_found() -> Response {
        Response::status(404).body("not found\n")
    }

    /// A redirect (`code` is 301, 302, 303, 307 or 308) to `location`.
    pub fn redirect(code: u16, location: &str) -> Response {
        Response::status(code).header("Location", location)
    }

    /// 200 with `value` serialised, `Content-Type: application/json`.
    pub fn json(value: &serde_json::Value) -> Response {
        Response::ok(serde_json::to_vec(value).expect("serialise JSON"))
            .header("Content-Type", "application/json")
    }

    /// `full` honouring a `Range` request header: see [`Response::ranged_with`].
    pub fn ranged(req: &Request, full: impl Into<Vec<u8>>) -> Response {
        Response::ranged_with(req, full, RangeSupport::Honour)
    }

    /// With [`RangeSupport::Honour`]: 206 with the requested slice and
    /// `Content-Range: bytes S-E/LEN` for a valid `Range: bytes=S-[E]`, 416 when S is past the
    /// end, 200 with the whole body otherwise (no or unparseable Range). With
    /// [`RangeSupport::Ignore`]: always 200 with the whole body.
    pub fn ranged_with(req: &Request, full: impl Into<Vec<u8>>, support: RangeSupport) -> Response {
        let full = full.into();
        let len = full.len() as u64;
        let range = match support {
            RangeSupport::Honour => req.byte_range(),
            RangeSupport::Ignore => return Response::ok(full),
        };
        let Some((start, end)) = range else {
            return Response::ok(full).header("Accept-Ranges", "bytes");
        };
        if start >= len {
            return Response::status(416).header("Content-Range", &format!("bytes */{len}"));
        }
        let end = end.map_or(len - 1, |e| e.min(len - 1));
        if end < start {
            return Response::ok(full).header("Accept-Ranges", "bytes");
        }
        Response::status(206)
            .header("Accept-Ranges", "bytes")
            .header("Content-Range", &format!("bytes {start}-{end}/{len}"))
            .body(full[start as usize..=end as usize].to_vec())
    }

    /// Add a header line.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replace the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Send the body with `Transfer-Encoding: chunked`.
    pub fn chunked(mut self) -> Response {
        self.framing = Framing::Chunked;
        self
    }

    /// Send no `Content-Length`: the body is delimited by closing the connection (HTTP/1.1
    /// allows it; the connection is not reused).
    pub fn no_content_length(mut self) -> Response {
        self.framing = Framing::UntilClose;
        self
    }

    /// Send the headers (with the full `Content-Length`), then only the first `n` body bytes,
    /// then close the connection abruptly: the client must see a truncated transfer.
    pub fn truncate_after(mut self, n: usize) -> Response {
        self.fault = Fault::TruncateAfter(n);
        self
    }

    /// Send the headers and the first `n` body bytes, then keep the socket open but silent for
    /// `dur` (cut short when the server is dropped), then close it abruptly.
    pub fn stall_after(mut self, n: usize, dur: Duration) -> Response {
        self.fault = Fault::StallAfter(n, dur);
        self
    }

    /// Read the request, then close the connection without sending anything.
    pub fn close_without_response(mut self) -> Response {
        self.fault = Fault::CloseWithoutResponse;
        self
    }

    /// Throttle the body to about `bytes_per_sec` (written in ten pieces per second).
    pub fn slow(mut self, bytes_per_sec: u64) -> Response {
        self.bytes_per_sec = Some(bytes_per_sec.max(1));
        self
    }

    /// Wait `dur` before sending anything (cut short when the server is dropped).
    pub fn delay(mut self, dur: Duration) -> Response {
        self.delay = Some(dur);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Router

/// Exact-path dispatch with a fallback (404 unless set); turn it into a handler with
/// [`Router::into_handler`].
#[derive(Default)]
pub struct Router {
    routes: HashMap<String, Box<Handler>>,
    fallback: Option<Box<Handler>>,
}

impl Router {
    /// An empty router: every path answers 404.
    pub fn new() -> Router {
        Router::default()
    }

    /// Answer requests for exactly `path` (query ignored) with `handler`.
    pub fn route(
        mut self,
        path: &str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Router {
        self.routes.insert(path.to_string(), Box::new(handler));
        self
    }

    /// Serve fixed content at `path`, like a static file server (GET/HEAD, Range honoured).
    pub fn serve_bytes(self, path: &str, content: impl Into<Vec<u8>>) -> Router {
        let content: Vec<u8> = content.into();
        self.route(path, move |req| Response::ranged(req, content.clone()))
    }

    /// Answer every unrouted path with `handler` instead of 404.
    pub fn fallback(
        mut self,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Router {
        self.fallback = Some(Box::new(handler));
        self
    }

    /// Dispatch one request.
    pub fn handle(&self, req: &Request) -> Response {
        match (self.routes.get(&req.path), &self.fallback) {
            (Some(h), _) => h(req),
            (None, Some(f)) => f(req),
            (None, None) => Response::not_found(),
        }
    }

    /// The router as a handler for [`HttpServer::start`].
    pub fn into_handler(self) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
        move |req| self.handle(req)
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// A stop flag that sleeping behaviours wait on, so dropping the server wakes them at once.
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn is_set(&self) -> bool {
        *lock(&self.stopped)
    }

    fn set(&self) {
        *lock(&self.stopped) = true;
        self.cv.notify_all();
    }

    /// Sleep for `dur` unless stopped first. Returns false if the server is stopping.
    fn sleep(&self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        wait_until(&self.stopped, &self.cv, deadline, |stopped| {
            stopped.then_some(())
        })
        .is_err()
    }
}

/// State shared between the server handle, the accept thread and the connection threads.
struct Shared {
    handler: Box<Handler>,
    acceptor: Option<SslAcceptor>,
    stop: Stop,
    /// The request log, and a condvar signalled on every append (for `wait_for_request`).
    log: Mutex<Vec<Request>>,
    log_cv: Condvar,
    connections: AtomicU64,
    /// A clone of every open connection's socket, so Drop can shut them down.
    live: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Messages of handler panics, re-raised on Drop.
    panics: Mutex<Vec<String>>,
}

/// The scriptable HTTP(S) server. See the module documentation.
pub struct HttpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Start serving on `127.0.0.1:<free port>`, over HTTPS with the certificate of `tls` if
    /// given, answering every request with `handler`.
    pub fn start(
        tls: Option<&TestCa>,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> HttpServer {
        HttpServer::start_with_acceptor(tls.map(TestCa::acceptor), handler)
    }

    /// Like [`HttpServer::start`] with any TLS acceptor, e.g. one from
    /// [`super::tls::acceptor_for`] with a certificate for other names.
    pub fn start_with_acceptor(
        acceptor: Option<SslAcceptor>,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            acceptor,
            stop: Stop {
                stopped: Mutex::new(false),
                cv: Condvar::new(),
            },
            log: Mutex::new(Vec::new()),
            log_cv: Condvar::new(),
            connections: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            panics: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("http-accept-{}", addr.port()))
            .spawn(move || accept_loop(&accept_shared, listener))
            .expect("spawn accept thread");
        HttpServer {
            shared,
            addr,
            accept_thread: Some(accept_thread),
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.acceptor.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// `base_url()` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// How many connections have been accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// A copy of the request log, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// The request targets (path plus `?query`) of the log, in arrival order.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.shared.log).iter().map(Request::target).collect()
    }

    /// Block until a logged request satisfies `pred` (looking at earlier ones too) and return
    /// it. Panics with the log so far after `timeout`.
    pub fn wait_for_request(&self, pred: impl Fn(&Request) -> bool, timeout: Duration) -> Request {
        let deadline = Instant::now() + timeout;
        let found = wait_until(&self.shared.log, &self.shared.log_cv, deadline, |log| {
            log.iter().find(|r| pred(r)).cloned()
        });
        found.unwrap_or_else(|log| {
            let seen: Vec<String> = log
                .iter()
                .map(|r| format!("{} {}", r.method, r.target()))
                .collect();
            panic!("no matching request within {timeout:?}; requests so far: {seen:#?}");
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.set();
        // Wake the blocking accept(); the loop sees the stop flag and exits.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        // No new connections can appear now. Unblock every reader and writer, then join.
        for stream in lock(&self.shared.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        let panics = lock(&self.shared.panics);
        if !panics.is_empty() && !thread::panicking() {
            panic!("HttpServer handler panicked: {}", panics.join("; "));
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.is_set() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        lock(&shared.live).insert(id, clone);
        let conn_shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name(format!("http-conn-{id}"))
            .spawn(move || {
                serve_connection(&conn_shared, id, stream);
                lock(&conn_shared.live).remove(&id);
            })
            .expect("spawn connection thread");
        lock(&shared.threads).push(handle);
    }
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Conn {
    /// An orderly close: TLS sends close_notify (so a close-delimited body is not mistaken for
    /// a truncation), TCP sends FIN.
    fn close_gracefully(self) {
        match self {
            Conn::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Conn::Tls(mut s) => {
                let _ = s.shutdown();
                let _ = s.get_ref().shutdown(Shutdown::Write);
            }
        }
    }
}

/// What to do with the connection after a response.
#[derive(PartialEq)]
enum After {
    KeepAlive,
    /// Orderly close.
    Close,
    /// Drop the socket without TLS close_notify: a simulated network failure.
    Abort,
}

fn serve_connection(shared: &Shared, id: u64, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let conn = match &shared.acceptor {
        None => Conn::Plain(tcp),
        Some(acceptor) => match acceptor.accept(tcp) {
            Ok(s) => Conn::Tls(Box::new(s)),
            Err(_) => return,
        },
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut req = match read_request(&mut reader, id) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return;
            }
            Err(_) => return,
        };
        {
            let mut log = lock(&shared.log);
            req.seq = log.len();
            log.push(req.clone());
            shared.log_cv.notify_all();
        }
        let resp = match panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&req))) {
            Ok(resp) => resp,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".to_string());
                lock(&shared.panics).push(format!("{} {}: {msg}", req.method, req.target()));
                Response::status(500)
                    .header("Connection", "close")
                    .body("handler panicked\n")
            }
        };
        match write_response(reader.get_mut(), &req, &resp, &shared.stop) {
            After::KeepAlive => continue,
            After::Close => {
                reader.into_inner().close_gracefully();
                return;
            }
            After::Abort => return,
        }
    }
}

/// Read one line (up to `\n`), at most `MAX_LINE` bytes. `None` at a clean EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(bad("line too long or cut short"));
    }
    let line = String::from_utf8(buf).map_err(|_| bad("non-UTF-8 line"))?;
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Parse one request from the connection. `None` when the client closed it between requests.
fn read_request(reader: &mut BufReader<Conn>, connection_id: u64) -> io::Result<Option<Request>> {
    // Tolerate stray empty lines between requests (RFC 9112 §2.2).
    let request_line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| bad("EOF in headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad("too many headers"));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("header without colon"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
        connection_id,
        seq: 0,
    };
    if req
        .header("Expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if req
        .header("Transfer-Encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        req.body = read_chunked_body(reader)?;
    } else if let Some(len) = req.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked_body(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| bad("EOF in chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?
                .ok_or_else(|| bad("EOF in trailers"))?
                .is_empty()
            {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?
            .ok_or_else(|| bad("EOF after chunk"))?
            .is_empty()
        {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(conn: &mut Conn, req: &Request, resp: &Response, stop: &Stop) -> After {
    if let Some(d) = resp.delay {
        if !stop.sleep(d) {
            return After::Abort;
        }
    }
    if resp.fault == Fault::CloseWithoutResponse {
        return After::Abort;
    }
    match write_response_bytes(conn, req, resp, stop) {
        Ok(after) => after,
        Err(_) => After::Abort,
    }
}

fn write_response_bytes(
    conn: &mut Conn,
    req: &Request,
    resp: &Response,
    stop: &Stop,
) -> io::Result<After> {
    let bodyless_status = matches!(resp.status, 100..=199 | 204 | 304);
    let send_body = !bodyless_status && req.method != "HEAD";
    let handler_closes = resp
        .get_header("Connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let close = req.wants_close()
        || handler_closes
        || resp.framing == Framing::UntilClose
        || resp.fault != Fault::None;

    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match resp.framing {
        Framing::ContentLength
            if !bodyless_status && resp.get_header("Content-Length").is_none() =>
        {
            head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        }
        Framing::Chunked if !bodyless_status => head.push_str("Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if close && !handler_closes {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;

    if send_body {
        let limit = match resp.fault {
            Fault::TruncateAfter(n) | Fault::StallAfter(n, _) => n.min(resp.body.len()),
            _ => resp.body.len(),
        };
        let piece = match resp.bytes_per_sec {
            Some(rate) => ((rate / 10).max(1) as usize).min(WRITE_PIECE),
            None => WRITE_PIECE,
        };
        for chunk in resp.body[..limit].chunks(piece) {
            if resp.framing == Framing::Chunked {
                write!(conn, "{:x}\r\n", chunk.len())?;
                conn.write_all(chunk)?;
                conn.write_all(b"\r\n")?;
            } else {
                conn.write_all(chunk)?;
            }
            conn.flush()?;
            if let Some(rate) = resp.bytes_per_sec {
                let pause = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                if !stop.sleep(pause) {
                    return Ok(After::Abort);
                }
            }
        }
        if resp.framing == Framing::Chunked && resp.fault == Fault::None {
            conn.write_all(b"0\r\n\r\n")?;
        }
    }
    conn.flush()?;
    Ok(match resp.fault {
        Fault::TruncateAfter(_) | Fault::CloseWithoutResponse => After::Abort,
        Fault::StallAfter(_, dur) => {
            stop.sleep(dur);
            After::Abort
        }
        Fault::None if close => After::Close,
        Fault::None => After::KeepAlive,
    })
}

// ---------------------------------------------------------------------------------------------
// Blocking client (curl easy)

/// A response as seen by [`request`].
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// The status code of the final response.
    pub status: u32,
    /// Header lines of the final response (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body as received (not decoded).
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body as text (lossy UTF-8), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Perform one blocking request with curl: `method` on `url` with extra header lines and a body
/// (sent for any method when non-empty), trusting `ca` for HTTPS. Redirects are not followed,
/// curl adds no `Accept`, `Content-Type` or `Expect` header of its own, proxies from the
/// environment are ignored, and the whole exchange is bounded by a 120 s safety deadline.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ca: Option<&TestCa>,
) -> Result<HttpReply, curl::Error> {
    let mut easy = curl::easy::Easy::new();
    easy.url(url)?;
    // Test servers are local: a proxy from the environment must not get in the way.
    easy.noproxy("*")?;
    easy.timeout(CLIENT_DEADLINE)?;
    if let Some(ca) = ca {
        easy.cainfo(ca.ca_pem_path())?;
    }
    match method {
        "GET" if body.is_empty() => easy.get(true)?,
        "HEAD" => easy.nobody(true)?,
        _ => {
            easy.custom_request(method)?;
            if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
                easy.post(true)?;
                easy.post_fields_copy(body)?;
            }
        }
    }
    let mut list = curl::easy::List::new();
    for (k, v) in headers {
        list.append(&format!("{k}: {v}"))?;
    }
    // An empty value removes curl's default for that header.
    for default in ["Accept", "Content-Type", "Expect"] {
        if header_value_str(headers, default).is_none() {
            list.append(&format!("{default}:"))?;
        }
    }
    easy.http_headers(list)?;

    let mut reply_headers = Vec::new();
    let mut reply_body = Vec::new();
    {
        let mut transfer = easy.transfer();
        transfer.header_function(|line| {
            let line = String::from_utf8_lossy(line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.starts_with("HTTP/") {
                // A new response (after 100 Continue): forget the previous header block.
                reply_headers.clear();
            } else if let Some((k, v)) = line.split_once(':') {
                reply_headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            true
        })?;
        transfer.write_function(|data| {
            reply_body.extend_from_slice(data);
            Ok(data.len())
        })?;
        transfer.perform()?;
    }
    Ok(HttpReply {
        status: easy.response_code()?,
        headers: reply_headers,
        body: reply_body,
    })
}

fn header_value_str<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Headers that belong to one connection, not to the message: never forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Expect",
    "Host",
    "Content-Length",
];

/// Reverse-proxy helper: replay `req` (method, path, query, headers, body) against
/// `upstream_base` (e.g. `https://127.0.0.1:5000`, trusting `ca`) and turn the answer into a
/// [`Response`]. Hop-by-hop headers are dropped; `Location` is passed through unchanged. A
/// transport failure becomes a 502. Use it inside a handler to forward most requests and tamper
/// with some.
pub fn forward(req: &Request, upstream_base: &str, ca: Option<&TestCa>) -> Response {
    let url = format!("{}{}", upstream_base.trim_end_matches('/'), req.target());
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let reply = match request(&req.method, &url, &headers, &req.body, ca) {
        Ok(reply) => reply,
        Err(e) => return Response::status(502).body(format!("forward to {url}: {e}\n")),
    };
    let mut resp = Response::status(reply.status as u16).body(reply.body);
    for (k, v) in reply.headers {
        // A HEAD answer has no body but must keep the upstream's Content-Length.
        let keep_length = req.method == "HEAD" && k.eq_ignore_ascii_case("Content-Length");
        if keep_length || !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(&k)) {
            resp.headers.push((k, v));
        }
    }
    resp
}
