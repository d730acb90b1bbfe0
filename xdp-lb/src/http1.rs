//! The small HTTP/1.1 server under the metrics and registration endpoints: one request
//! per connection, its head and body bounded and read under one deadline, one answer, then
//! the connection closes. No keep-alive, no chunked bodies: what a scraper and `curl` need.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
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

async fn accept_loop<H, F>(listener: TcpListener, limits: Limits, handler: Arc<H>)
where
    H: Fn(Result<Request, Unreadable>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    answer(stream, peer, limits, handler.as_ref()).await;
                    drop(slot);
                });
            }
            Err(err) => {
                log::warn!(
                    "http {}: accept: {err}",
                    listener
                        .local_addr()
                        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer<H, F>(mut stream: TcpStream, peer: SocketAddr, limits: Limits, handler: &H)
where
    H: Fn(Result<Request, Unreadable>, SocketAddr) -> F,
    F: Future<Output = Response>,
{
    let request =
        match tokio::time::timeout(limits.timeout, read_request(&mut stream, limits)).await {
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
    let length = match request.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| Unreadable::new(400, format!("Content-Length {v:?} is not a number")))?,
    };
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

fn parse_head(head: &str) -> Result<Request, Unreadable> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Unreadable::new(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Unreadable::new(400, format!("{version:?} is not HTTP/1.x")));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Unreadable::new(400, "malformed method"));
    }
    if !target.starts_with('/') {
        return Err(Unreadable::new(400, "the request target must be a path"));
    }
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Unreadable::new(400, "malformed header line"));
        };
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Unreadable::new(400, "malformed header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
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
        let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        let cases: [(&[u8], u16); 8] = [
            (long_head.as_bytes(), 431),
            (b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n", 413),
            (b"GET /\r\n\r\n", 400),
            (b"GET / SPDY/3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort", 400),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
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

    #[tokio::test]
    async fn a_silent_client_gets_408_and_the_server_answers_the_next_one() {
        let endpoint = serve(
            "127.0.0.1:0".parse().unwrap(),
            Limits {
                timeout: Duration::from_millis(200),
                ..LIMITS
            },
            |request: Result<Request, Unreadable>, _| async move {
                match request {
                    Ok(r) => Response::new(200, "text/plain", r.path),
                    Err(why) => Response::new(why.status, "text/plain", why.message),
                }
            },
        )
        .unwrap();
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
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
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
}
