//! Scriptable HTTP/1.1 target server (see the `testkit` module docs).
//!
//! Structure:
//! * [`TargetServer`] is a cheap cloneable handle. The last clone to be
//!   dropped closes the stop channel, which ends the accept loop, which in turn
//!   aborts every connection task it owns (a `JoinSet`), so nothing leaks.
//! * Background tasks only hold `Arc<State>`, never the handle itself;
//!   otherwise the handle could never become "the last one".
//! * Each connection is served by one task with a buffered reader. Requests
//!   are parsed by hand so that the reply can be anything from a proper
//!   response to a TCP reset.
//! * Locks are `std::sync::Mutex`, taken only for short bookkeeping and never
//!   across an `.await`; the user responder runs with no lock held so it may
//!   call back into the handle.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for a request line plus headers (and, separately, for chunked
/// trailers). Larger heads are answered with 431 and the connection closed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Upper bound for a decoded request body. Larger bodies get 413 and a close.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Longest chunk-size line we accept; real clients send a few hex digits.
const MAX_CHUNK_LINE: usize = 1024;

/// Blank lines tolerated before a request line (RFC 9112 §2.2 allows some,
/// because clients occasionally emit a stray CRLF after a body).
const MAX_LEADING_BLANK_LINES: u32 = 8;

const DEFAULT_OK_BODY: &str = r#"{"ok":true}"#;
const UNAUTHORIZED_BODY: &str = r#"{"error":"unauthorized"}"#;
const UNAVAILABLE_BODY: &str = r#"{"error":"unavailable"}"#;

/// Bytes sent for [`Reply::Malformed`]: the status code is not a number and a
/// NUL sits in the header block, so no HTTP client can accept it.
const MALFORMED_RESPONSE: &[u8] = b"HTTP/1.1 ??? not-a-status\r\n\x00garbage\x7f\r\n\r\n";

/// How many body bytes [`Reply::ResetMidResponse`] promises versus delivers.
const MID_RESPONSE_PROMISED: usize = 1024;
const MID_RESPONSE_SENT: &[u8] = br#"{"ok":tr"#;

/// What the server does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A complete response. `Content-Length` is computed from `body` and
    /// `Content-Type: application/json` is added unless `headers` set their
    /// own (a `Content-Length` in `headers` is sent verbatim instead of the
    /// computed one, which lets a test lie on purpose).
    Status {
        code: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Wait, then act out the inner reply. Used to provoke client timeouts.
    Delay(Duration, Box<Reply>),
    /// Read the request, then drop the socket with `SO_LINGER = 0` so the
    /// client sees a TCP reset instead of any response.
    Reset,
    /// Send a status line and headers promising a longer body, part of that
    /// body, then reset the connection.
    ResetMidResponse,
    /// Send bytes that are not a valid HTTP response, then close.
    Malformed,
    /// Never answer. The connection stays open until the client gives up
    /// (closes it) or the server stops.
    Hang,
}

impl Reply {
    /// `200 {"ok":true}`.
    pub fn ok() -> Self {
        Reply::Status {
            code: 200,
            body: DEFAULT_OK_BODY.to_owned(),
            headers: Vec::new(),
        }
    }

    /// Given status with a small JSON body `{"status":code}`, so clients that
    /// always parse JSON error bodies still get something valid.
    pub fn status(code: u16) -> Self {
        Reply::Status {
            code,
            body: format!(r#"{{"status":{code}}}"#),
            headers: Vec::new(),
        }
    }

    /// Given status with `value` serialised as the body.
    pub fn json(code: u16, value: serde_json::Value) -> Self {
        Reply::Status {
            code,
            body: value.to_string(),
            headers: Vec::new(),
        }
    }

    /// Given status with an arbitrary body and content type.
    pub fn body(code: u16, content_type: &str, body: impl Into<String>) -> Self {
        Reply::Status {
            code,
            body: body.into(),
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
        }
    }

    /// A redirect: `code` (301, 302, 303, 307, 308…) with `Location: location` and a small JSON
    /// body naming it, as web servers and load balancers send when a URL moved (or a login
    /// page takes over). `location` is sent verbatim, so a test may make it relative, absolute,
    /// hostile or a loop back to the same path.
    pub fn redirect(code: u16, location: impl Into<String>) -> Self {
        let location = location.into();
        Reply::Status {
            code,
            body: serde_json::json!({ "redirect": location }).to_string(),
            headers: vec![("Location".to_owned(), location)],
        }
    }

    /// `code` with the request echoed back as `text/plain`: request line, every header as
    /// received (the `Authorization` header included) and the body, as a debugging endpoint or
    /// a misconfigured proxy would answer. See [`ReceivedRequest::echo_text`].
    pub fn echo(code: u16, req: &ReceivedRequest) -> Self {
        Reply::body(code, "text/plain; charset=utf-8", req.echo_text())
    }

    /// Adds a response header. Applies to the innermost `Status` of a
    /// `Delay`; variants that send no proper response ignore it.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut cur = &mut self;
        loop {
            match cur {
                Reply::Status { headers, .. } => {
                    headers.push((name.into(), value.into()));
                    break;
                }
                Reply::Delay(_, inner) => cur = inner,
                _ => break,
            }
        }
        self
    }

    /// Wraps the reply in a [`Reply::Delay`].
    pub fn delayed(self, by: Duration) -> Self {
        Reply::Delay(by, Box::new(self))
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// 1-based arrival number; keeps growing across [`TargetServer::clear`].
    pub seq: u64,
    pub method: String,
    /// Path part of the request target, without the query string.
    pub path: String,
    /// Query string without the leading `?`, if the target had one.
    pub query: Option<String>,
    /// Headers in arrival order with their original spelling. Non-UTF-8
    /// bytes are replaced (lossy), which never affects base64/ASCII values.
    pub headers: Vec<(String, String)>,
    /// Decoded body (de-chunked). Empty when body recording is disabled.
    pub body: Vec<u8>,
    /// When the request had been read completely.
    pub at: Instant,
}

impl ReceivedRequest {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as text: `METHOD path[?query] HTTP/1.1`, one `Name: value` line per header in
    /// arrival order, a blank line, and the body (lossy UTF-8). What an echo endpoint answers.
    pub fn echo_text(&self) -> String {
        let mut out = format!("{} {}", self.method, self.path);
        if let Some(q) = &self.query {
            out.push('?');
            out.push_str(q);
        }
        out.push_str(" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body_text());
        out
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// Body parsed as JSON; `None` if it is empty or not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Body as UTF-8 text (lossy), for assertions and logs.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The raw `Authorization` header, exactly as received.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    /// Base64-decoded `user:password` bytes of a `Basic` authorization,
    /// whatever their encoding. Useful to show what a client really sent
    /// when [`basic_auth`](Self::basic_auth) returns `None` (e.g. cp1251).
    pub fn basic_auth_bytes(&self) -> Option<Vec<u8>> {
        let value = self.authorization()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let token = token.trim();
        base64::engine::general_purpose::STANDARD
            .decode(token)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(token))
            .ok()
    }

    /// `(user, password)` of a `Basic` authorization decoded as UTF-8, so
    /// Cyrillic 1C user names ("Администратор") round-trip byte for byte.
    /// `None` if absent, not Basic, not base64, not UTF-8, or without ':'.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let decoded = String::from_utf8(self.basic_auth_bytes()?).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        Some((user.to_owned(), pass.to_owned()))
    }
}

type Responder = Arc<dyn Fn(&ReceivedRequest, u32) -> Option<Reply> + Send + Sync>;

/// How the next request will be answered.
struct Script {
    /// Shared so that the hot path clones a pointer, not a body string.
    default: Arc<Reply>,
    queues: HashMap<String, VecDeque<Reply>>,
    responder: Option<Responder>,
    up: bool,
    auth: Option<(String, String)>,
}

/// What has been received.
#[derive(Default)]
struct Log {
    next_seq: u64,
    requests: Vec<ReceivedRequest>,
    keys: HashMap<String, u32>,
}

/// State shared by the handle and all background tasks.
struct State {
    script: Mutex<Script>,
    log: Mutex<Log>,
    /// Number of requests received; a watch so waiters need no polling.
    total: watch::Sender<u64>,
    connections: AtomicU64,
    rejected: AtomicU64,
    record_requests: AtomicBool,
    record_bodies: AtomicBool,
}

/// A reply chosen for a request: either the shared default or an owned one.
enum Chosen {
    Shared(Arc<Reply>),
    Owned(Reply),
}

impl Chosen {
    fn get(&self) -> &Reply {
        match self {
            Chosen::Shared(r) => r,
            Chosen::Owned(r) => r,
        }
    }
}

/// Poisoning only means a user responder or assertion panicked elsewhere;
/// the bookkeeping itself is always consistent, so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn new() -> Self {
        State {
            script: Mutex::new(Script {
                default: Arc::new(Reply::ok()),
                queues: HashMap::new(),
                responder: None,
                up: true,
                auth: None,
            }),
            log: Mutex::new(Log::default()),
            total: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            record_requests: AtomicBool::new(true),
            record_bodies: AtomicBool::new(true),
        }
    }

    /// Assigns the sequence number and counts the idempotency key; returns
    /// how many times this key has now been seen (0 if there is no key).
    fn register(&self, req: &mut ReceivedRequest) -> u32 {
        let mut log = lock(&self.log);
        log.next_seq += 1;
        req.seq = log.next_seq;
        let Some(key) = req.idempotency_key() else {
            return 0;
        };
        // Look up before inserting so repeated keys cost no allocation.
        if let Some(n) = log.keys.get_mut(key) {
            *n += 1;
            return *n;
        }
        log.keys.insert(key.to_owned(), 1);
        1
    }

    fn decide(&self, req: &ReceivedRequest, nth: u32) -> Chosen {
        let responder = {
            let script = lock(&self.script);
            if !script.up {
                return Chosen::Owned(Reply::Status {
                    code: 503,
                    body: UNAVAILABLE_BODY.to_owned(),
                    headers: vec![("Retry-After".to_owned(), "1".to_owned())],
                });
            }
            if let Some((user, pass)) = &script.auth {
                let ok = req
                    .basic_auth()
                    .is_some_and(|(u, p)| &u == user && &p == pass);
                if !ok {
                    return Chosen::Owned(Reply::Status {
                        code: 401,
                        body: UNAUTHORIZED_BODY.to_owned(),
                        headers: vec![(
                            "WWW-Authenticate".to_owned(),
                            r#"Basic realm="ferry-testkit", charset="UTF-8""#.to_owned(),
                        )],
                    });
                }
            }
            script.responder.clone()
        };
        // Called unlocked: the closure may use the server handle itself.
        if let Some(reply) = responder.and_then(|f| f(req, nth)) {
            return Chosen::Owned(reply);
        }
        let mut script = lock(&self.script);
        if let Some(reply) = script
            .queues
            .get_mut(&req.path)
            .and_then(VecDeque::pop_front)
        {
            return Chosen::Owned(reply);
        }
        Chosen::Shared(script.default.clone())
    }

    fn record(&self, mut req: ReceivedRequest) {
        if self.record_requests.load(Ordering::Relaxed) {
            if !self.record_bodies.load(Ordering::Relaxed) {
                req.body = Vec::new();
            }
            lock(&self.log).requests.push(req);
        }
        // Counted after the log push so a woken waiter finds the request.
        self.total.send_modify(|n| *n += 1);
    }
}

/// Handle to a running target server. Clones share one server; dropping the
/// last clone stops it.
#[derive(Clone)]
pub struct TargetServer {
    inner: Arc<Handle>,
}

struct Handle {
    state: Arc<State>,
    addr: SocketAddr,
    /// Dropped together with the last handle, which the accept loop notices.
    stop: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for TargetServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetServer")
            .field("addr", &self.inner.addr)
            .field("requests", &self.request_count())
            .finish()
    }
}

impl TargetServer {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start() -> io::Result<TargetServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop_rx));
        Ok(TargetServer {
            inner: Arc::new(Handle {
                state,
                addr,
                stop,
                accept_task: Mutex::new(Some(task)),
            }),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `base_url()` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.inner.addr, path)
    }

    /// Stops accepting, closes every open connection (including hanging and
    /// delayed ones) and waits until all of that is done. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.accept_task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    // ----- scripting -------------------------------------------------------

    /// Reply used when neither the responder nor a path queue decides.
    /// Initially [`Reply::ok`].
    pub fn default_reply(&self, reply: Reply) {
        lock(&self.inner.state.script).default = Arc::new(reply);
    }

    /// Appends replies to the FIFO of `path` (path only, no query string);
    /// each request to that path consumes one before the default applies.
    pub fn push_replies(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut script = lock(&self.inner.state.script);
        script
            .queues
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Replies still queued for `path`.
    pub fn queued_replies(&self, path: &str) -> usize {
        lock(&self.inner.state.script)
            .queues
            .get(path)
            .map_or(0, VecDeque::len)
    }

    /// Installs a responder consulted before the queues and the default.
    /// The second argument is how many times the request's `Idempotency-Key`
    /// has been seen including this request (1-based), or 0 without a key.
    /// Returning `None` falls through to the queue/default.
    pub fn set_responder<F>(&self, f: F)
    where
        F: Fn(&ReceivedRequest, u32) -> Option<Reply> + Send + Sync + 'static,
    {
        lock(&self.inner.state.script).responder = Some(Arc::new(f));
    }

    pub fn clear_responder(&self) {
        lock(&self.inner.state.script).responder = None;
    }

    /// `false` simulates an outage: every request is still read and counted
    /// but answered with 503, ahead of auth, responder and queues.
    pub fn set_up(&self, up: bool) {
        lock(&self.inner.state.script).up = up;
    }

    pub fn is_up(&self) -> bool {
        lock(&self.inner.state.script).up
    }

    /// Answers every request with `code` and the request echoed back ([`Reply::echo`]):
    /// headers, credentials and body, like a debugging endpoint or a misconfigured proxy.
    /// Replaces any responder; outage and required auth still come first.
    pub fn echo_requests(&self, code: u16) {
        self.set_responder(move |req, _| Some(Reply::echo(code, req)));
    }

    /// Requests without exactly these Basic credentials get
    /// `401 {"error":"unauthorized"}` (still counted and recorded).
    pub fn required_basic_auth(&self, user: &str, pass: &str) {
        lock(&self.inner.state.script).auth = Some((user.to_owned(), pass.to_owned()));
    }

    pub fn clear_required_basic_auth(&self) {
        lock(&self.inner.state.script).auth = None;
    }

    /// Whether recorded requests keep their bodies (default true). Responders
    /// always see the body; only the stored copy is emptied.
    pub fn record_bodies(&self, on: bool) {
        self.inner.state.record_bodies.store(on, Ordering::Relaxed);
    }

    /// Whether requests are stored at all (default true). With `false` only
    /// the counters work (`request_count`, per-key counts), which keeps
    /// memory flat in load tests with hundreds of thousands of requests.
    pub fn record_requests(&self, on: bool) {
        self.inner
            .state
            .record_requests
            .store(on, Ordering::Relaxed);
    }

    // ----- observation -----------------------------------------------------

    /// Recorded requests in arrival (`seq`) order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        let mut all = lock(&self.inner.state.log).requests.clone();
        // Concurrent connections may record slightly out of order.
        all.sort_by_key(|r| r.seq);
        all
    }

    /// Recorded requests whose path (without query) equals `path`.
    pub fn requests_to(&self, path: &str) -> Vec<ReceivedRequest> {
        let mut hits: Vec<ReceivedRequest> = lock(&self.inner.state.log)
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect();
        hits.sort_by_key(|r| r.seq);
        hits
    }

    /// Complete requests received (including 503/401 ones), whether or not
    /// they are stored. Malformed requests are counted separately by
    /// [`rejected_requests`](Self::rejected_requests).
    pub fn request_count(&self) -> u64 {
        *self.inner.state.total.borrow()
    }

    /// TCP connections accepted since start.
    pub fn connections_accepted(&self) -> u64 {
        self.inner.state.connections.load(Ordering::Relaxed)
    }

    /// Requests refused as unparseable or oversized (400/413/431/501/505).
    pub fn rejected_requests(&self) -> u64 {
        self.inner.state.rejected.load(Ordering::Relaxed)
    }

    /// How many requests carried this `Idempotency-Key`.
    pub fn count_for_key(&self, key: &str) -> u32 {
        lock(&self.inner.state.log)
            .keys
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Every idempotency key seen, with its count.
    pub fn keys_seen(&self) -> HashMap<String, u32> {
        lock(&self.inner.state.log).keys.clone()
    }

    /// Keys seen more than once with their counts, sorted by key.
    pub fn duplicate_keys(&self) -> Vec<(String, u32)> {
        let mut dups: Vec<(String, u32)> = lock(&self.inner.state.log)
            .keys
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        dups.sort();
        dups
    }

    /// Alias of [`duplicate_keys`](Self::duplicate_keys).
    pub fn duplicates(&self) -> Vec<(String, u32)> {
        self.duplicate_keys()
    }

    /// Waits until at least `n` requests have been received (see
    /// [`request_count`](Self::request_count)). Returns `false` if `deadline`
    /// elapses first or the count was reset below `n` meanwhile and never
    /// reached it.
    pub async fn wait_for_requests(&self, n: u64, deadline: Duration) -> bool {
        let mut rx = self.inner.state.total.subscribe();
        matches!(
            tokio::time::timeout(deadline, async { rx.wait_for(|c| *c >= n).await.is_ok() }).await,
            Ok(true)
        )
    }

    /// Forgets recorded requests, key counts and the request count. Script,
    /// connection and rejection counters and `seq` numbering are kept.
    /// Requests in flight during the call may land on either side of it.
    pub fn clear(&self) {
        {
            let mut log = lock(&self.inner.state.log);
            log.requests.clear();
            log.keys.clear();
        }
        self.inner.state.total.send_replace(0);
    }
}

// ----- server internals -----------------------------------------------------

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means every handle is gone, which is a stop request as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            // Reap finished connections so the set does not grow forever.
            Some(_) = conns.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    state.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve_connection(stream, state.clone()));
                }
                // Typically EMFILE under load: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    drop(listener);
    // Aborting drops each socket, which closes hanging/delayed connections.
    conns.shutdown().await;
}

/// Why a request could not be read.
enum ReadError {
    /// Peer closed or the socket failed: just drop the connection.
    Closed,
    /// Protocol violation: answer with this status and close.
    Reject(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

/// Per-connection buffers, reused across keep-alive requests.
struct Conn {
    reader: BufReader<TcpStream>,
    /// Request head, then chunk-size and trailer lines.
    scratch: Vec<u8>,
    out: Vec<u8>,
}

/// A parsed request plus how the connection should behave afterwards.
struct Incoming {
    req: ReceivedRequest,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
}

enum After {
    KeepAlive,
    Close,
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    // Responses go out in one write; without NODELAY a pipelined client would
    // still be stuck behind Nagle + delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        reader: BufReader::with_capacity(16 * 1024, stream),
        scratch: Vec::with_capacity(1024),
        out: Vec::with_capacity(512),
    };
    loop {
        let incoming = match read_request(&mut conn).await {
            Ok(incoming) => incoming,
            Err(ReadError::Closed) => return,
            Err(ReadError::Reject(code, why)) => {
                state.rejected.fetch_add(1, Ordering::Relaxed);
                let body = format!(r#"{{"error":"{why}"}}"#);
                render(&mut conn.out, code, &body, &[], true, false, false);
                let stream = conn.reader.get_mut();
                if stream.write_all(&conn.out).await.is_ok() {
                    let _ = stream.shutdown().await;
                }
                return;
            }
        };
        let Incoming {
            mut req,
            keep_alive,
            http10,
            head_only,
        } = incoming;
        let nth = state.register(&mut req);
        let chosen = state.decide(&req, nth);
        state.record(req);
        match act(&mut conn, chosen.get(), keep_alive, http10, head_only).await {
            After::KeepAlive => {}
            After::Close => return,
        }
    }
}

/// Carries out a reply on the connection.
async fn act(
    conn: &mut Conn,
    mut reply: &Reply,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
) -> After {
    loop {
        match reply {
            Reply::Delay(by, inner) => {
                tokio::time::sleep(*by).await;
                reply = inner;
            }
            Reply::Status {
                code,
                body,
                headers,
            } => {
                let close = !keep_alive || wants_close(headers);
                render(
                    &mut conn.out,
                    *code,
                    body,
                    headers,
                    close,
                    http10,
                    head_only,
                );
                let stream = conn.reader.get_mut();
                if stream.write_all(&conn.out).await.is_err() {
                    return After::Close;
                }
                if close {
                    let _ = stream.shutdown().await;
                    return After::Close;
                }
                return After::KeepAlive;
            }
            Reply::Reset => {
                reset(conn.reader.get_ref());
                return After::Close;
            }
            Reply::ResetMidResponse => {
                conn.out.clear();
                let _ = write!(
                    conn.out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {MID_RESPONSE_PROMISED}\r\n\r\n"
                );
                conn.out.extend_from_slice(MID_RESPONSE_SENT);
                let stream = conn.reader.get_mut();
                let _ = stream.write_all(&conn.out).await;
                let _ = stream.flush().await;
                reset(stream);
                return After::Close;
            }
            Reply::Malformed => {
                let stream = conn.reader.get_mut();
                if stream.write_all(MALFORMED_RESPONSE).await.is_ok() {
                    let _ = stream.shutdown().await;
                }
                return After::Close;
            }
            Reply::Hang => {
                // Say nothing, but notice when the client gives up so that
                // abandoned sockets do not pile up in load tests. Anything
                // it sends meanwhile (pipelined requests) is ignored.
                let mut sink = [0u8; 4096];
                loop {
                    match conn.reader.read(&mut sink).await {
                        Ok(0) | Err(_) => return After::Close,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// Arranges for the socket to be reset (RST) rather than closed (FIN) when
/// it is dropped by the caller.
fn reset(stream: &TcpStream) {
    // Zero linger makes close() send RST and discard unsent data; it never
    // blocks, unlike a non-zero linger. If it fails, a plain close remains.
    let _ = stream.set_zero_linger();
}

fn wants_close(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("connection") && has_token(v, "close"))
}

/// Whether a comma-separated header value contains `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Serialises a complete response into `out` (cleared first) so it can be
/// sent with a single `write_all`.
fn render(
    out: &mut Vec<u8>,
    code: u16,
    body: &str,
    headers: &[(String, String)],
    close: bool,
    http10: bool,
    head_only: bool,
) {
    out.clear();
    // Writes into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", reason(code));
    let (mut has_type, mut has_length, mut has_connection) = (false, false, false);
    for (name, value) in headers {
        has_type |= name.eq_ignore_ascii_case("content-type");
        has_length |= name.eq_ignore_ascii_case("content-length");
        has_connection |= name.eq_ignore_ascii_case("connection");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // 1xx/204/304 never carry a body, so neither type nor length is sent
    // (RFC 9110 forbids Content-Length outright for 1xx and 204).
    let bodiless = code < 200 || code == 204 || code == 304;
    if !has_type && !bodiless {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if !has_length && !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    if !has_connection {
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(body.as_bytes());
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // The reason phrase is informational; any token will do.
        _ => "Status",
    }
}

/// Reads one full request (head and body). `Err(Closed)` on a clean EOF
/// between requests as well as on a broken connection.
async fn read_request(conn: &mut Conn) -> Result<Incoming, ReadError> {
    read_head(&mut conn.reader, &mut conn.scratch).await?;
    let head = parse_head(&conn.scratch)?;

    if head.expect_continue && !head.http10 && (head.chunked || head.content_length > 0) {
        // Clients like curl wait for this before sending large bodies.
        conn.reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }

    let body = if head.chunked {
        let mut body = Vec::new();
        read_chunked(&mut conn.reader, &mut conn.scratch, &mut body).await?;
        body
    } else if head.content_length > 0 {
        // Bounded by MAX_BODY_BYTES in parse_head.
        let mut body = vec![0u8; head.content_length as usize];
        conn.reader.read_exact(&mut body).await?;
        body
    } else {
        Vec::new()
    };

    Ok(Incoming {
        head_only: head.method == "HEAD",
        req: ReceivedRequest {
            seq: 0,
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
            at: Instant::now(),
        },
        keep_alive: head.keep_alive,
        http10: head.http10,
    })
}

/// Reads lines into `head` until the blank line ending the header block.
async fn read_head(reader: &mut BufReader<TcpStream>, head: &mut Vec<u8>) -> Result<(), ReadError> {
    head.clear();
    let mut blank_lines = 0;
    loop {
        let start = head.len();
        let room = (MAX_HEAD_BYTES - start) as u64;
        let n = (&mut *reader).take(room).read_until(b'\n', head).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        if head.last() != Some(&b'\n') {
            if head.len() >= MAX_HEAD_BYTES {
                return Err(ReadError::Reject(431, "request head too large"));
            }
            // EOF in the middle of a line.
            return Err(ReadError::Closed);
        }
        if trim_eol(&head[start..]).is_empty() {
            if start > 0 {
                return Ok(());
            }
            blank_lines += 1;
            if blank_lines > MAX_LEADING_BLANK_LINES {
                return Err(ReadError::Reject(400, "expected a request line"));
            }
            head.clear();
            continue;
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Err(ReadError::Reject(431, "request head too large"));
        }
    }
}

/// Reads one line (including its `\n`) of at most `cap` bytes into `line`.
async fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    cap: usize,
) -> Result<(), ReadError> {
    line.clear();
    let n = (&mut *reader)
        .take(cap as u64)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if line.last() != Some(&b'\n') {
        if line.len() >= cap {
            return Err(ReadError::Reject(400, "line too long"));
        }
        return Err(ReadError::Closed);
    }
    Ok(())
}

/// Decodes a `Transfer-Encoding: chunked` body into `body`.
async fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), ReadError> {
    const BAD_CHUNK: ReadError = ReadError::Reject(400, "malformed chunked body");
    loop {
        read_line(reader, line, MAX_CHUNK_LINE).await?;
        // Chunk extensions (";name=value") are allowed and ignored.
        let size_field = trim_eol(line)
            .split(|&b| b == b';')
            .next()
            .map(trim_ws)
            .unwrap_or_default();
        let size = parse_hex(size_field).ok_or(BAD_CHUNK)?;
        if size == 0 {
            break;
        }
        if size > (MAX_BODY_BYTES - body.len()) as u64 {
            return Err(ReadError::Reject(413, "request body too large"));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..]).await?;
        read_line(reader, line, MAX_CHUNK_LINE).await?;
        if !trim_eol(line).is_empty() {
            return Err(BAD_CHUNK);
        }
    }
    // Trailer fields are read and dropped; they are capped like a head.
    let mut trailer_bytes = 0;
    loop {
        read_line(reader, line, MAX_HEAD_BYTES).await?;
        if trim_eol(line).is_empty() {
            return Ok(());
        }
        trailer_bytes += line.len();
        if trailer_bytes > MAX_HEAD_BYTES {
            return Err(ReadError::Reject(431, "trailers too large"));
        }
    }
}

/// Request line and headers, plus the framing decisions derived from them.
struct Head {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    http10: bool,
    keep_alive: bool,
    chunked: bool,
    content_length: u64,
    expect_continue: bool,
}

fn parse_head(raw: &[u8]) -> Result<Head, ReadError> {
    const BAD_LINE: ReadError = ReadError::Reject(400, "malformed request line");
    const BAD_HEADER: ReadError = ReadError::Reject(400, "malformed header");

    let mut lines = raw.split(|&b| b == b'\n').map(trim_eol);
    let request_line = lines.next().ok_or(BAD_LINE)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_LINE);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(BAD_LINE);
    }
    if target.is_empty() || !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return Err(BAD_LINE);
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if v.starts_with(b"HTTP/") => {
            return Err(ReadError::Reject(505, "only HTTP/1.x is supported"))
        }
        _ => return Err(BAD_LINE),
    };
    // Checked above to be visible ASCII, so this is valid UTF-8.
    let target = String::from_utf8_lossy(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.into_owned(), None),
    };

    let mut headers = Vec::with_capacity(8);
    let mut head = Head {
        method: String::from_utf8_lossy(method).into_owned(),
        path,
        query,
        headers: Vec::new(),
        http10,
        keep_alive: !http10,
        chunked: false,
        content_length: 0,
        expect_continue: false,
    };
    let mut has_te = false;
    let mut content_length: Option<u64> = None;

    for line in lines {
        if line.is_empty() {
            break;
        }
        // Obsolete line folding is a smuggling vector; RFC 9112 lets us refuse.
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(BAD_HEADER);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD_HEADER)?;
        let (name, value) = (&line[..colon], trim_ws(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(BAD_HEADER);
        }
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(BAD_HEADER);
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();

        if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is tolerated (RFC 9110 §8.6).
            for part in value.split(',') {
                let part = part.trim();
                if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ReadError::Reject(400, "bad content-length"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| ReadError::Reject(400, "bad content-length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(ReadError::Reject(400, "conflicting content-length"));
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            // Only the final coding decides the framing.
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(&value, "close") {
                head.keep_alive = false;
            } else if has_token(&value, "keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
        headers.push((name, value));
    }

    if has_te {
        if !head.chunked {
            return Err(ReadError::Reject(501, "unsupported transfer-encoding"));
        }
        if content_length.is_some() {
            // Both present: chunked wins, but the connection can no longer
            // be trusted for another request (RFC 9112 §6.1).
            head.keep_alive = false;
        }
    } else if let Some(n) = content_length {
        if n > MAX_BODY_BYTES as u64 {
            return Err(ReadError::Reject(413, "request body too large"));
        }
        head.content_length = n;
    }
    head.headers = headers;
    Ok(head)
}

/// Token characters allowed in methods and header names (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests;
