//! The small HTTP/1.1 server under the metrics, console and registration endpoints: one
//! request per connection, its head and body bounded and read under one deadline, one
//! answer, then the connection closes. No keep-alive, no chunked bodies: what a scraper, a
//! browser and `curl` need.
//!
//! Strict where RFC 9112 says a server must or may reject: only HTTP/1.0 and HTTP/1.1,
//! every line ended by CRLF (a bare CR or LF is refused, never read as a line end), a
//! request target of visible ASCII, header names that are tokens and values without
//! control bytes, no obsolete line folding, one `Host` for HTTP/1.1, `Content-Length` of
//! digits only and never two different ones, no `Transfer-Encoding`.
//!
//! Slow clients cannot starve the others: at most [`MAX_READING`] connections may be
//! sending their request at once, and a new connection past that sheds the one that has
//! been reading longest (a slowloris client; a real one sends its request in one go).

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, oneshot},
    task::JoinHandle,
};

/// Connections open at once (reading or being answered); more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;
/// Connections still sending their request; a new one past this sheds the oldest.
pub const MAX_READING: usize = 128;
/// How long writing an answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the answer, how long and how much of the client's unread input is drained.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// How much of a request is read, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line and headers.
    pub head: usize,
    /// Body (by `Content-Length`).
    pub body: usize,
    /// For the whole request.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request that could not be read, and the status it deserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub status: u16,
    pub message: String,
}

impl Unreadable {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, e.g. `("WWW-Authenticate", "Bearer")`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The answer to a HEAD request: the head of the GET's answer (its `Content-Length`
    /// too), without the body.
    pub head_only: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            head_only: false,
        }
    }

    /// With one more header line.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        505 => "HTTP Version Not Supported",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A served endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct Endpoint {
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` and answers every connection with `handler`, given the request (or why
/// it could not be read) and the peer's address. Connections that break or go silent
/// before a whole request are closed without an answer, or with 408.
pub fn serve<H, F>(listen: SocketAddr, limits: Limits, handler: H) -> anyhow::Result<Endpoint>
where
    H: Fn(Result<Request, Unreadable>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let std_listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, limits, Arc::new(handler)));
    Ok(Endpoint { local_addr, task })
}

/// The connections still reading their request, oldest first: dropping one's sender
/// sheds it.
#[derive(Default)]
struct Reading {
    next: u64,
    open: BTreeMap<u64, oneshot::Sender<()>>,
    shed: u64,
}

impl Reading {
    /// Registers a new reader, shedding the oldest when [`MAX_READING`] are open.
    fn admit(registry: &Mutex<Reading>) -> (u64, oneshot::Receiver<()>, Option<u64>) {
        let mut reading = registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut shed_total = None;
        if reading.open.len() >= MAX_READING {
            // Dropping the sender wakes the reader, which closes its connection.
            reading.open.pop_first();
            reading.shed += 1;
            shed_total = Some(reading.shed);
        }
        let id = reading.next;
        reading.next += 1;
        let (tx, rx) = oneshot::channel();
        reading.open.insert(id, tx);
        (id, rx, shed_total)
    }

    fn done(registry: &Mutex<Reading>, id: u64) {
        registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .remove(&id);
    }
}

async fn accept_loop<H, F>(listener: TcpListener, limits: Limits, handler: Arc<H>)
where
    H: Fn(Result<Request, Unreadable>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reading = Arc::new(Mutex::new(Reading::default()));
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let mut accept_errors = crate::logging::Limited::new(std::time::Duration::from_secs(10), 3);
    let mut shed_log = crate::logging::Limited::new(std::time::Duration::from_secs(10), 1);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (id, shed, shed_total) = Reading::admit(&reading);
                if let Some(total) = shed_total
                    && let Some(suppressed) = shed_log.allow()
                {
                    log::warn!(
                        "http {local}: more than {MAX_READING} connections were sending their \
                         request at once: the slowest is closed ({total} so far{})",
                        crate::logging::suppressed_note(suppressed)
                    );
                }
                let handler = handler.clone();
                let reading = reading.clone();
                tokio::spawn(async move {
                    answer(stream, peer, limits, handler.as_ref(), shed, || {
                        Reading::done(&reading, id)
                    })
                    .await;
                    drop(slot);
                });
            }
            Err(err) => {
                if let Some(suppressed) = accept_errors.allow() {
                    log::warn!(
                        "http {local}: accept: {err}{}",
                        crate::logging::suppressed_note(suppressed)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer<H, F>(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: &H,
    shed: oneshot::Receiver<()>,
    read_done: impl FnOnce(),
) where
    H: Fn(Result<Request, Unreadable>, SocketAddr) -> F,
    F: Future<Output = Response>,
{
    let read = tokio::select! {
        read = tokio::time::timeout(limits.timeout, read_request(&mut stream, limits)) => Some(read),
        _ = shed => None,
    };
    read_done();
    let Some(read) = read else {
        log::debug!("http: {peer}: shed while still sending its request");
        return;
    };
    let request = match read {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(Failed::Unreadable(why))) => Err(why),
        // The peer went away: nobody to answer.
        Ok(Err(Failed::Io(err))) => {
            log::debug!("http: {peer}: {err}");
            return;
        }
        Err(_) => Err(Unreadable::new(
            408,
            format!("no whole request within {} s", limits.timeout.as_secs()),
        )),
    };
    let response = handler(request, peer).await;
    let bytes = response.to_bytes();
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if let Ok(Err(err)) = written {
        log::debug!("http: {peer}: writing the answer: {err}");
        return;
    }
    // What the client sent beyond what was read (an oversized body) is read and dropped
    // for a moment: closing with unread data would reset the connection, and the client
    // could lose the answer.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

enum Failed {
    Unreadable(Unreadable),
    Io(std::io::Error),
}

impl From<Unreadable> for Failed {
    fn from(why: Unreadable) -> Self {
        Failed::Unreadable(why)
    }
}

/// Reads one request: the head up to its blank line, then `Content-Length` bytes of body.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    limits: Limits,
) -> Result<Request, Failed> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end;
        }
        if buf.len() > limits.head {
            return Err(Unreadable::new(
                431,
                format!("request head longer than {} bytes", limits.head),
            )
            .into());
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(Failed::Io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Failed::Io(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                Unreadable::new(400, "the request ends before its blank line").into()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > limits.head {
        return Err(Unreadable::new(
            431,
            format!("request head longer than {} bytes", limits.head),
        )
        .into());
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| Unreadable::new(400, "the request head is not UTF-8"))?;
    let mut request = parse_head(head)?;
    if request.header("transfer-encoding").is_some() {
        return Err(
            Unreadable::new(400, "chunked bodies are not accepted: send Content-Length").into(),
        );
    }
    let length = content_length(&request)?;
    if length > limits.body {
        return Err(Unreadable::new(
            413,
            format!(
                "body of {length} bytes; at most {} are accepted",
                limits.body
            ),
        )
        .into());
    }
    let mut body = buf.split_off(head_end + 4);
    body.truncate(length);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(4096)];
        let n = stream.read(&mut chunk).await.map_err(Failed::Io)?;
        if n == 0 {
            return Err(Unreadable::new(400, "the body is shorter than its Content-Length").into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    request.body = body;
    Ok(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body's length: `Content-Length` of digits only, the same in every field line that
/// gives it (RFC 9112 6.3: a server must reject differing ones), 0 without one.
fn content_length(request: &Request) -> Result<usize, Unreadable> {
    let mut length = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        // A list ("5, 5") is what a proxy may fold repeated fields into.
        for item in value.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Unreadable::new(
                    400,
                    format!("Content-Length {} is not a number", escaped(value)),
                ));
            }
            let n = item
                .parse::<usize>()
                .map_err(|_| Unreadable::new(400, format!("Content-Length {item} is too large")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Unreadable::new(400, "two different Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

/// `value` quoted for an error message: control bytes escaped, at most 64 characters.
fn escaped(value: &str) -> String {
    let clipped: String = value.chars().take(64).collect();
    format!("{clipped:?}")
}

/// A header name's characters: RFC 9110's `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_head(head: &str) -> Result<Request, Unreadable> {
    // A bare CR or LF is never a line end here: a client (or a proxy) that reads it as one
    // would see other lines than this server does.
    let bytes = head.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let bare = match b {
            b'\r' => bytes.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || bytes[i - 1] != b'\r',
            _ => false,
        };
        if bare {
            return Err(Unreadable::new(400, "a bare CR or LF in the request head"));
        }
    }
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Unreadable::new(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/") {
        return Err(Unreadable::new(
            400,
            format!("{} is not HTTP/1.x", escaped(version)),
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Unreadable::new(
            505,
            format!(
                "{} is not supported: HTTP/1.1 or HTTP/1.0",
                escaped(version)
            ),
        ));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Unreadable::new(400, "malformed method"));
    }
    if !target.starts_with('/') {
        return Err(Unreadable::new(400, "the request target must be a path"));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Unreadable::new(
            400,
            "the request target holds a byte that is not visible ASCII",
        ));
    }
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(Unreadable::new(
                400,
                "obsolete line folding (a header line starting with white space)",
            ));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Unreadable::new(400, "malformed header line"));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(Unreadable::new(400, "malformed header name"));
        }
        if value
            .bytes()
            .any(|b| (b.is_ascii_control() && b != b'\t') || b == 0x7f)
        {
            return Err(Unreadable::new(
                400,
                format!("a control byte in the value of {name}"),
            ));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let hosts = headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (hosts == 0 && version == "HTTP/1.1") {
        return Err(Unreadable::new(
            400,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    Ok(Request {
        method: method.to_owned(),
        path,
        headers,
        body: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        head: 256,
        body: 16,
        timeout: Duration::from_secs(5),
    };

    async fn read(raw: &[u8]) -> Result<Request, Unreadable> {
        let mut input = raw;
        match read_request(&mut input, LIMITS).await {
            Ok(r) => Ok(r),
            Err(Failed::Unreadable(why)) => Err(why),
            Err(Failed::Io(err)) => Err(Unreadable::new(0, err.to_string())),
        }
    }

    #[tokio::test]
    async fn a_request_is_read_with_its_headers_and_body() {
        let r = read(b"POST /v1/x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAuthorization: Bearer t\r\n\r\nhello").await.unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/x"));
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        assert_eq!(r.body, b"hello");
    }

    #[tokio::test]
    async fn oversized_malformed_and_cut_requests_get_their_status() {
        let long_head = format!(
            "GET / HTTP/1.1\r\nHost: lb\r\nX: {}\r\n\r\n",
            "a".repeat(300)
        );
        let cases: [(&[u8], u16); 8] = [
            (long_head.as_bytes(), 431),
            (
                b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 17\r\n\r\n",
                413,
            ),
            (b"GET /\r\n\r\n", 400),
            (b"GET / SPDY/3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: lb\r\nno colon\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: x\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 9\r\n\r\nshort",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ];
        for (raw, status) in cases {
            let got = read(raw).await.unwrap_err();
            assert_eq!(
                got.status,
                status,
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(read(b"GET / HTT").await.unwrap_err().status, 400);
        assert_eq!(
            read(b"").await.unwrap_err().status,
            0,
            "a closed connection is not answered"
        );
    }

    /// A server on a free port that answers a request with its path, and a request it
    /// could not read with the status and reason; `timeout` for a whole request.
    fn echo_server(timeout: Duration) -> Endpoint {
        serve(
            "127.0.0.1:0".parse().unwrap(),
            Limits { timeout, ..LIMITS },
            |request: Result<Request, Unreadable>, _| async move {
                match request {
                    Ok(r) => Response::new(200, "text/plain", r.path),
                    Err(why) => Response::new(why.status, "text/plain", why.message),
                }
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_silent_client_gets_408_and_the_server_answers_the_next_one() {
        let endpoint = echo_server(Duration::from_millis(200));
        let addr = endpoint.local_addr;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut answer = String::new();
        silent.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("Content-Length: 8\r\nConnection: close\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\n/metrics"), "{answer}");
    }

    #[tokio::test]
    async fn what_rfc_9112_says_to_reject_is_rejected() {
        let cases: [(&[u8], u16, &str); 14] = [
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello",
                400,
                "two different Content-Length values",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 5\r\n\r\nhello",
                400,
                "two different Content-Length values",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
                400,
                "not a number",
            ),
            (
                b"GET /v1/x\nX-Forged: 1 HTTP/1.1\r\nHost: a\r\n\r\n",
                400,
                "bare CR or LF",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
                400,
                "bare CR or LF",
            ),
            (b"GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505, "not supported"),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "not supported"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
                400,
                "folding",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
                400,
                "control byte",
            ),
            (b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "visible ASCII"),
            (b"GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                400,
                "exactly one Host",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: b\r\n\r\n",
                400,
                "header name",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n",
                400,
                "header name",
            ),
        ];
        for (raw, status, why) in cases {
            let got = read(raw).await.unwrap_err();
            assert_eq!(
                (got.status, got.message.contains(why)),
                (status, true),
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // What is allowed stays allowed.
        let same_twice = read(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await
        .unwrap();
        assert_eq!(same_twice.body, b"hello");
        let old = read(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        assert_eq!(old.path, "/metrics");
        let tabbed = read(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(tabbed.header("x"), Some("a\tb"));
    }

    #[tokio::test]
    async fn slow_clients_holding_every_reading_slot_do_not_keep_a_real_one_waiting() {
        // A long deadline: a server that only waits for slow clients to time out would
        // keep the real request waiting for 60 s.
        let endpoint = echo_server(Duration::from_secs(60));
        let addr = endpoint.local_addr;
        // Slowloris: more connections than MAX_READING, each sending a part of a request
        // head and then nothing.
        let mut slow = Vec::new();
        for _ in 0..MAX_READING + 40 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await.unwrap();
            slow.push(conn);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_string(&mut answer))
            .await
            .expect("the real request is answered before the slow ones' deadline")
            .unwrap();
        assert!(answer.ends_with("\r\n\r\n/metrics"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // The oldest slow clients were shed: their connections are closed, unanswered.
        let mut first = slow.remove(0);
        let mut rest = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), first.read_to_string(&mut rest))
            .await
            .expect("the oldest slow client is closed")
            .unwrap_or(0);
        assert_eq!((n, rest.as_str()), (0, ""));
    }

    #[tokio::test]
    async fn mutated_requests_are_refused_with_a_client_error_or_read_and_never_panic() {
        use futures::FutureExt as _;
        let valid: [&[u8]; 4] = [
            b"GET /metrics HTTP/1.1\r\nHost: lb\r\nAccept: text/plain\r\n\r\n",
            b"POST /v1/services/video-hls/backends HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer t\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}",
            b"DELETE /v1/services/a/backends/10.0.0.1 HTTP/1.0\r\n\r\n",
            b"HEAD /status.json?x=1 HTTP/1.1\r\nHost: lb\r\n\r\n",
        ];
        let pieces: [&[u8]; 16] = [
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b"%",
            b"%+1",
            b"\0",
            b"\x7f",
            b"\xff",
            b"Content-Length: 3\r\n",
            b"Host: x\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"HTTP/1.9",
            b"?",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
        };
        let (mut refused, mut read_ok) = (0, 0);
        for input in valid {
            read(input).await.unwrap_or_else(|e| panic!("{e:?}"));
            for _ in 0..1500 {
                let mut bytes = input.to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(bytes.len() + 1);
                    match next(3) {
                        0 => {
                            let piece = pieces[next(pieces.len())];
                            bytes.splice(at..at, piece.iter().copied());
                        }
                        1 => {
                            let to = (at + next(8)).min(bytes.len());
                            bytes.drain(at..to);
                        }
                        _ => {
                            if at < bytes.len() {
                                bytes[at] = next(256) as u8;
                            }
                        }
                    }
                }
                let got = std::panic::AssertUnwindSafe(read(&bytes))
                    .catch_unwind()
                    .await;
                match got {
                    Err(_) => panic!("panicked on {:?}", String::from_utf8_lossy(&bytes)),
                    Ok(Ok(request)) => {
                        // What is read is what this server promises to read.
                        assert!(request.path.starts_with('/'));
                        assert!(request.path.bytes().all(|b| b.is_ascii_graphic()));
                        assert!(request.headers.iter().all(|(n, v)| {
                            n.bytes().all(is_token_byte)
                                && !v.bytes().any(|b| b.is_ascii_control() && b != b'\t')
                        }));
                        read_ok += 1;
                    }
                    Ok(Err(why)) => {
                        assert!(
                            matches!(why.status, 0 | 400 | 413 | 431 | 505)
                                && !why.message.is_empty(),
                            "{why:?} for {:?}",
                            String::from_utf8_lossy(&bytes)
                        );
                        refused += 1;
                    }
                }
            }
        }
        assert!(
            refused > 1000 && read_ok > 50,
            "refused {refused}, read {read_ok}"
        );
    }
}
