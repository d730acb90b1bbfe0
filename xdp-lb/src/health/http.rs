//! The `http` check (HLS origins): an HTTP/1.1 GET with `Connection: close`, answered
//! with the expected status and, when asked, a body holding the expected substring. Only
//! the first 64 KiB of a body are read.

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::check::{Check, Deadline, Outcome};
use crate::config::HttpCheck;

/// Most of a body read for the `expect_body` search.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest status line and headers accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An `http` check of the server at `to`, from `source` (or the kernel's pick): `http`'s
/// request, and the status (and body) it expects.
pub(super) struct Http<'a> {
    pub source: Option<IpAddr>,
    pub to: SocketAddr,
    pub http: &'a HttpCheck,
}

impl Check for Http<'_> {
    async fn run(self, deadline: &Deadline) -> Outcome {
        exchange(deadline, self.source, self.to, self.http).await
    }
}

async fn exchange(
    deadline: &Deadline,
    source: Option<IpAddr>,
    to: SocketAddr,
    http: &HttpCheck,
) -> Outcome {
    let mut stream = deadline.connect(source, to).await?;
    deadline
        .run(
            "sending the request",
            stream.write_all(request(to, &http.path).as_bytes()),
        )
        .await?;
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
        pos: 0,
    };
    let head = deadline.run("reading the response", reader.head()).await?;
    let status = status_of(&head).ok_or_else(|| {
        let line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default())
            .into_owned();
        format!(
            "reading the response: not an HTTP response (it starts {:?})",
            truncate(&line, 40)
        )
    })?;
    if status != http.expect_status {
        return Err(format!(
            "HTTP status {status}, expected {}",
            http.expect_status
        ));
    }
    let Some(needle) = &http.expect_body else {
        return Ok(format!("HTTP {status}"));
    };
    let body = deadline
        .run("reading the body", reader.body(framing(&head)))
        .await?;
    if needle.is_empty() || body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        Ok(format!("HTTP {status} with {needle:?} in the body"))
    } else {
        Err(format!(
            "HTTP {status} but the body does not contain {needle:?}"
        ))
    }
}

/// The request: the server's address (and port unless 80) as the Host.
fn request(to: SocketAddr, path: &str) -> String {
    let host = match (to.ip(), to.port()) {
        (IpAddr::V4(v4), 80) => v4.to_string(),
        (IpAddr::V6(v6), 80) => format!("[{v6}]"),
        _ => to.to_string(),
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xdp-lb-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// The status code of a response head (`HTTP/1.1 200 OK`).
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.parse().ok())?
}

/// How the body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(head: &[u8]) -> Framing {
    let text = String::from_utf8_lossy(head);
    let mut framing = Framing::UntilClose;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().ends_with("chunked")
        {
            return Framing::Chunked;
        }
        if name.eq_ignore_ascii_case("content-length")
            && let Ok(n) = value.parse::<usize>()
        {
            framing = Framing::Length(n);
        }
    }
    framing
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// A response read in pieces.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
}

impl Reader {
    /// Reads more bytes; 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The status line and headers, up to the blank line.
    async fn head(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.pos = end + 4;
                return Ok(self.buf[..end].to_vec());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid(format!(
                    "no end of the headers in {MAX_HEAD} bytes"
                )));
            }
            if self.fill().await? == 0 {
                return Err(invalid(format!(
                    "the connection closed after {} bytes, before the headers ended",
                    self.buf.len()
                )));
            }
        }
    }

    /// The body (its first [`MAX_BODY`] bytes).
    async fn body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        match framing {
            Framing::Length(n) => self.up_to(n.min(MAX_BODY)).await,
            Framing::UntilClose => self.up_to(MAX_BODY).await,
            Framing::Chunked => {
                let mut body = Vec::new();
                while body.len() < MAX_BODY {
                    let line = self.line().await?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| invalid(format!("bad chunk size {:?}", truncate(size, 20))))?;
                    if size == 0 {
                        break;
                    }
                    let take = size.min(MAX_BODY - body.len());
                    body.extend(self.up_to(take).await?);
                    if take < size {
                        break;
                    }
                    self.line().await?;
                }
                Ok(body)
            }
        }
    }

    /// The next `n` bytes, or fewer when the stream ends first.
    async fn up_to(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if self.fill().await? == 0 {
                break;
            }
        }
        let end = (self.pos + n).min(self.buf.len());
        let out = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Ok(out)
    }

    /// The next line, without its CRLF.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + at]).into_owned();
                self.pos += at + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(invalid("a chunk header line is too long".to_owned()));
            }
            if self.fill().await? == 0 {
                return Err(invalid(
                    "the connection closed inside a chunked body".to_owned(),
                ));
            }
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
        task::JoinHandle,
    };

    use super::*;
    use crate::{
        config::CheckKind,
        health::probe::{
            probe,
            tests::{LOCAL, check},
        },
    };

    /// A server answering one connection with `response` (after reading the request
    /// head), or never answering when `None`; yields the request it got.
    async fn server(response: Option<Vec<u8>>) -> (u16, JoinHandle<String>) {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            match response {
                Some(bytes) => {
                    let _ = conn.write_all(&bytes).await;
                }
                None => tokio::time::sleep(std::time::Duration::from_secs(5)).await,
            }
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, task)
    }

    fn http(path: &str, status: u16, body: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            path: path.to_owned(),
            expect_status: status,
            expect_body: body.map(str::to_owned),
        })
    }

    #[tokio::test]
    async fn a_server_answering_the_expected_status_and_body_passes_and_gets_a_proper_request() {
        let (port, request) = server(Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n".to_vec(),
        ))
        .await;
        let outcome = probe(
            &check(http("/health", 200, Some("ok")), port, 500),
            LOCAL,
            Some(LOCAL),
        )
        .await;
        assert_eq!(outcome, Ok("HTTP 200 with \"ok\" in the body".to_owned()));
        let request = request.await.unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_wrong_status_fails_the_check() {
        let (port, _request) = server(Some(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ))
        .await;
        let outcome = probe(&check(http("/health", 200, None), port, 500), LOCAL, None).await;
        assert_eq!(outcome, Err("HTTP status 404, expected 200".to_owned()));
    }

    #[tokio::test]
    async fn a_body_without_the_expected_substring_fails_the_check() {
        let (port, _request) = server(Some(b"HTTP/1.0 200 OK\r\n\r\nmaintenance".to_vec())).await;
        let outcome = probe(&check(http("/", 200, Some("ok")), port, 500), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err("HTTP 200 but the body does not contain \"ok\"".to_owned())
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_searched_across_its_chunks() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n#EXT\r\n3;x=y\r\nM3U\r\n0\r\n\r\n".to_vec();
        let (port, _request) = server(Some(response)).await;
        let outcome = probe(
            &check(http("/live.m3u8", 200, Some("#EXTM3U")), port, 500),
            LOCAL,
            None,
        )
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[tokio::test]
    async fn only_the_first_64_kib_of_a_body_are_searched() {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 2
        )
        .into_bytes();
        response.extend(std::iter::repeat_n(b'.', MAX_BODY));
        response.extend(b"ok");
        let (port, _request) = server(Some(response)).await;
        let outcome = probe(&check(http("/", 200, Some("ok")), port, 1000), LOCAL, None).await;
        assert!(outcome.is_err(), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_server_that_accepts_but_never_answers_fails_at_the_timeout() {
        let (port, _request) = server(None).await;
        let outcome = probe(&check(http("/", 200, None), port, 300), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err("reading the response: timed out (300ms check timeout)".to_owned())
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_fails_the_check() {
        let (port, _request) = server(Some(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec())).await;
        let outcome = probe(&check(http("/", 200, None), port, 500), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err(
                "reading the response: not an HTTP response (it starts \"SSH-2.0-OpenSSH\")"
                    .to_owned()
            )
        );
        let (port, _request) = server(Some(b"HTTP/1.1 200".to_vec())).await;
        let outcome = probe(&check(http("/", 200, None), port, 500), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err("reading the response: the connection closed after 12 bytes, before the headers ended".to_owned())
        );
    }

    #[test]
    fn status_lines_and_framing_are_read_from_the_head() {
        assert_eq!(status_of(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(status_of(b"HTTP/1.0 200"), Some(200));
        assert_eq!(status_of(b"HTTP/2 200"), None);
        assert_eq!(status_of(b"HTTP/1.1 20 OK"), None);
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12"),
            Framing::Length(12)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked"),
            Framing::Chunked
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nServer: x"),
            Framing::UntilClose
        );
        assert_eq!(
            request("[fd00::11]:80".parse().unwrap(), "/")
                .lines()
                .nth(1),
            Some("Host: [fd00::11]")
        );
    }
}
