//! Remote registration: servers (or an orchestrator) add and remove themselves over HTTP,
//! authenticated by a bearer token, on the `registration.listen` address.
//!
//! ```text
//! POST   /v1/services/{service}/backends            {"address":"10.0.0.14","weight":1}
//! DELETE /v1/services/{service}/backends/{address}
//! Authorization: Bearer <the token in registration.token_file>
//! ```
//!
//! Each becomes the control request `xdp-lb backend add|remove` sends, through the same
//! channel to the agent's loop: validated the same way, and kept in the run-time change
//! file. Answers are JSON: `{"result":"ok","message":...}` (201 for an add, 200 for a
//! removal) or `{"result":"error","message":...}` with 400 (malformed), 401 (missing or
//! wrong token: nothing changes), 404 (unknown path), 405, 413, 422 (refused by the agent,
//! with its reason) or 503.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::anyhow;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{
    config::{MAX_TOKEN_BYTES, Registration, read_token_file},
    control::{
        protocol::{Request, Response},
        server::{Pending, ask},
    },
    http1::{self, Endpoint, Limits, Unreadable},
    logging::{Limited, suppressed_note},
};

/// What one request may send, and for how long.
const LIMITS: Limits = Limits {
    head: 8 * 1024,
    body: 16 * 1024,
    timeout: Duration::from_secs(5),
};
/// How long a request waits for the agent's loop (an add resolves the backend's MAC).
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The body of `POST /v1/services/{service}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    address: IpAddr,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Resolved from the neighbour table when not given.
    #[serde(default)]
    mac: Option<String>,
    /// The VLAN it is on, when not its service's.
    #[serde(default)]
    vlan: Option<u16>,
}

fn default_weight() -> u32 {
    1
}

/// Serves registration as `registration` says (nothing when `None`) until the endpoint is
/// dropped. The token is read once, here.
pub fn start(
    registration: Option<&Registration>,
    requests: &mpsc::Sender<Pending>,
) -> anyhow::Result<Option<Endpoint>> {
    let Some(registration) = registration else {
        return Ok(None);
    };
    let token = read_token_file(&registration.token_file).map_err(|why| {
        anyhow!(
            "registration.token_file {} {why}",
            registration.token_file.display()
        )
    })?;
    let requests = requests.clone();
    // Refusals are logged with the client's address, a few per window: a client sending
    // bad requests as fast as it can does not flood the journal.
    let refusals = Arc::new(Mutex::new(Limited::new(Duration::from_secs(10), 5)));
    let endpoint = http1::serve(registration.listen, LIMITS, move |request, peer| {
        let (requests, token, refusals) = (requests.clone(), token.clone(), refusals.clone());
        async move { answer(request, peer, &token, &requests, &refusals).await }
    })?;
    log::info!(
        "registration: serving http://{}/v1/services/SERVICE/backends (bearer token from {})",
        endpoint.local_addr,
        registration.token_file.display()
    );
    Ok(Some(endpoint))
}

fn json(status: u16, result: &str, message: &str) -> http1::Response {
    let body = serde_json::json!({ "result": result, "message": message }).to_string() + "\n";
    http1::Response::new(status, "application/json", body)
}

fn error(status: u16, message: &str) -> http1::Response {
    json(status, "error", message)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Add { service: String },
    Remove { service: String, address: String },
}

async fn answer(
    request: Result<http1::Request, Unreadable>,
    peer: SocketAddr,
    token: &str,
    requests: &mpsc::Sender<Pending>,
    refusals: &Mutex<Limited>,
) -> http1::Response {
    let refused_note = || {
        refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow()
            .map(suppressed_note)
    };
    let request = match request {
        Ok(r) => r,
        Err(why) => return error(why.status, &why.message),
    };
    if !authorized(request.header("authorization"), token) {
        if let Some(note) = refused_note() {
            log::warn!(
                "registration: refused {} {} from {peer}: missing or wrong bearer token{note}",
                request.method,
                crate::config::quoted(&request.path)
            );
        }
        let mut refused = error(
            401,
            "a valid `Authorization: Bearer TOKEN` header is required",
        );
        refused
            .headers
            .push(("WWW-Authenticate", "Bearer realm=\"xdp-lb\"".to_owned()));
        return refused;
    }
    let route = match route(&request.method, &request.path) {
        Ok(route) => route,
        Err(refused) => return refused,
    };
    let service = match &route {
        Route::Add { service } | Route::Remove { service, .. } => service,
    };
    if !crate::config::valid_name(service) {
        return error(
            404,
            &format!(
                "{} is not a service name (1 to 64 characters of A-Z a-z 0-9 _ . -)",
                crate::config::quoted(service)
            ),
        );
    }
    let (control, created) = match route {
        Route::Add { service } => {
            let body: NewBackend = match serde_json::from_slice(&request.body) {
                Ok(body) => body,
                Err(err) => {
                    return error(
                        400,
                        &format!(
                            "the body must be JSON like {{\"address\":\"10.0.0.14\",\"weight\":1}}: {err}"
                        ),
                    );
                }
            };
            let add = Request::BackendAdd {
                service,
                address: body.address,
                weight: body.weight,
                mac: body.mac,
                vlan: body.vlan,
            };
            (add, true)
        }
        Route::Remove { service, address } => {
            let Ok(address) = address.parse::<IpAddr>() else {
                return error(400, &format!("{address:?} is not an IP address"));
            };
            (Request::BackendRemove { service, address }, false)
        }
    };
    let what = format!("{control:?}");
    match tokio::time::timeout(ASK_TIMEOUT, ask(requests, control)).await {
        Ok(Response::Ok { message }) => {
            log::info!("registration: {peer}: {what}: {message}");
            json(if created { 201 } else { 200 }, "ok", &message)
        }
        Ok(Response::Error { message }) if message.contains("shutting down") => {
            error(503, &message)
        }
        Ok(Response::Error { message }) => {
            if let Some(note) = refused_note() {
                log::warn!("registration: {peer}: {what} refused: {message}{note}");
            }
            error(422, &message)
        }
        Ok(other) => error(500, &format!("unexpected answer from the agent: {other:?}")),
        Err(_) => error(
            503,
            "the agent did not answer within 30 s; the request is dropped, not applied later \
             (see `xdp-lb status` for what is in place, and send it again)",
        ),
    }
}

/// The route of `method` and `path`, or the answer for one that has none.
fn route(method: &str, path: &str) -> Result<Route, http1::Response> {
    let not_found = || {
        error(
            404,
            "no such path: see /v1/services/SERVICE/backends[/ADDRESS]",
        )
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decoded = |s: &str| {
        percent_decode(s).ok_or_else(|| error(400, "malformed percent-encoding in the path"))
    };
    match segments.as_slice() {
        ["v1", "services", service, "backends"] if !service.is_empty() => {
            if method != "POST" {
                return Err(not_allowed("POST"));
            }
            Ok(Route::Add {
                service: decoded(service)?,
            })
        }
        ["v1", "services", service, "backends", address]
            if !service.is_empty() && !address.is_empty() =>
        {
            if method != "DELETE" {
                return Err(not_allowed("DELETE"));
            }
            Ok(Route::Remove {
                service: decoded(service)?,
                address: decoded(address)?,
            })
        }
        _ => Err(not_found()),
    }
}

fn not_allowed(allowed: &str) -> http1::Response {
    let mut response = error(405, &format!("this path takes {allowed}"));
    response.headers.push(("Allow", allowed.to_owned()));
    response
}

/// `%XX` sequences decoded; `None` when one is malformed (two hex digits, nothing else:
/// `%+1` is not 0x01), decodes to a control byte, or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if byte.is_ascii_control() {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `header` is `Bearer <token>` (the scheme in any case).
pub(crate) fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some((scheme, given)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim().as_bytes(), token.as_bytes())
}

/// Compares two secrets in a time that depends on neither's content nor length: every
/// byte of a fixed-size window is compared, differences are accumulated with XOR/OR, and
/// the lengths are compared the same way.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len())
        | u8::from(given.len() > MAX_TOKEN_BYTES)
        | u8::from(expected.is_empty());
    for i in 0..MAX_TOKEN_BYTES {
        let g = given.get(i).copied().unwrap_or(0);
        let e = expected.get(i).copied().unwrap_or(0);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn secrets_match_only_when_equal_in_content_and_length() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"s3cre\0"] {
            assert!(!same_secret(wrong, b"s3cret"), "{wrong:?}");
        }
        assert!(!same_secret(b"", b""), "an empty token never matches");
        let long = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert!(!same_secret(&long, &long));
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        assert!(authorized(Some("Bearer tok"), "tok"));
        assert!(authorized(Some("bearer tok"), "tok"));
        for bad in [
            None,
            Some("tok"),
            Some("Basic tok"),
            Some("Bearer"),
            Some("Bearer tok2"),
        ] {
            assert!(!authorized(bad, "tok"), "{bad:?}");
        }
    }

    #[test]
    fn paths_map_to_routes_and_others_are_404_or_405() {
        assert_eq!(
            route("POST", "/v1/services/video-hls/backends").unwrap(),
            Route::Add {
                service: "video-hls".into()
            }
        );
        assert_eq!(
            route("DELETE", "/v1/services/video-hls/backends/fd00%3A%3A1").unwrap(),
            Route::Remove {
                service: "video-hls".into(),
                address: "fd00::1".into()
            }
        );
        assert_eq!(
            route("GET", "/v1/services/video-hls/backends")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route("POST", "/v1/services/video-hls/backends/10.0.0.1")
                .unwrap_err()
                .status,
            405
        );
        for path in [
            "/",
            "/v1/services",
            "/v1/services//backends",
            "/v2/services/a/backends",
            "/v1/services/a/backends/1/2",
        ] {
            assert_eq!(route("POST", path).unwrap_err().status, 404, "{path}");
        }
        assert_eq!(
            route("DELETE", "/v1/services/a/backends/%zz")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%+1"), None, "%+1 is not a byte");
        assert_eq!(percent_decode("a%0a"), None, "a decoded line feed");
        assert_eq!(percent_decode("a%7F"), None);
        assert_eq!(percent_decode("video%2Dhls").as_deref(), Some("video-hls"));
    }

    /// The agent's loop stand-in: records what it was asked, refuses unknown services.
    fn fake_agent() -> (mpsc::Sender<Pending>, mpsc::UnboundedReceiver<Request>) {
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let answer = match &request {
                    Request::BackendAdd { service, .. }
                    | Request::BackendRemove { service, .. }
                        if service == "video-hls" =>
                    {
                        Response::Ok {
                            message: "reload applied: 1 change(s)".into(),
                        }
                    }
                    _ => Response::error("there is no service nope"),
                };
                let _ = seen_tx.send(request);
                let _ = reply.send(answer);
            }
        });
        (tx, seen)
    }

    struct TokenFile(PathBuf);

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    async fn call(addr: SocketAddr, raw: String) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post(token: Option<&str>, service: &str, body: &str) -> String {
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        format!(
            "POST /v1/services/{service}/backends HTTP/1.1\r\nHost: lb\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn only_the_right_token_reaches_the_agent_and_answers_are_json() {
        let path =
            std::env::temp_dir().join(format!("xdp-lb-register-test-{}.token", std::process::id()));
        fs::write(&path, "t0ken-1234\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let _cleanup = TokenFile(path.clone());
        let registration = Registration {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: path,
        };
        let (agent, mut seen) = fake_agent();
        let endpoint = start(Some(&registration), &agent).unwrap().unwrap();
        let addr = endpoint.local_addr;
        let body = r#"{"address":"10.0.0.14","weight":2}"#;

        for token in [None, Some("wrong"), Some("t0ken-12345")] {
            let (status, answer) = call(addr, post(token, "video-hls", body)).await;
            assert_eq!(status, 401, "{token:?}");
            assert_eq!(answer["result"], "error");
        }
        assert!(seen.try_recv().is_err(), "nothing reached the agent");

        let (status, answer) = call(addr, post(Some("t0ken-1234"), "video-hls", body)).await;
        assert_eq!(
            (status, answer["result"].as_str()),
            (201, Some("ok")),
            "{answer}"
        );
        assert_eq!(
            seen.recv().await.unwrap(),
            Request::BackendAdd {
                service: "video-hls".into(),
                address: "10.0.0.14".parse().unwrap(),
                weight: 2,
                mac: None,
                vlan: None
            }
        );

        let (status, answer) = call(
            addr,
            post(Some("t0ken-1234"), "nope", r#"{"address":"10.0.0.14"}"#),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(answer["message"], "there is no service nope");
        assert_eq!(
            seen.recv().await.unwrap(),
            Request::BackendAdd {
                service: "nope".into(),
                address: "10.0.0.14".parse().unwrap(),
                weight: 1,
                mac: None,
                vlan: None
            }
        );

        for bad in [
            "",
            "{",
            r#"{"address":"nope"}"#,
            r#"{"address":"10.0.0.14","colour":"red"}"#,
        ] {
            let (status, answer) = call(addr, post(Some("t0ken-1234"), "video-hls", bad)).await;
            assert_eq!(status, 400, "{bad}: {answer}");
        }
        let big = format!(
            r#"{{"address":"10.0.0.14","mac":"{}"}}"#,
            "a".repeat(17 * 1024)
        );
        assert_eq!(
            call(addr, post(Some("t0ken-1234"), "video-hls", &big))
                .await
                .0,
            413
        );

        let delete = "DELETE /v1/services/video-hls/backends/10.0.0.14 HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer t0ken-1234\r\n\r\n";
        let (status, _) = call(addr, delete.to_owned()).await;
        assert_eq!(status, 200);
        assert_eq!(
            seen.recv().await.unwrap(),
            Request::BackendRemove {
                service: "video-hls".into(),
                address: "10.0.0.14".parse().unwrap()
            }
        );
        // A name no file could hold is refused before the agent sees it, and not echoed.
        let long = "n".repeat(4000);
        let (status, answer) = call(addr, post(Some("t0ken-1234"), &long, body)).await;
        assert_eq!(status, 404);
        let message = answer["message"].as_str().unwrap();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("(4000 bytes in all)"), "{message}");
        // A control byte is refused as it is decoded, before it could be logged.
        let (status, _) = call(addr, post(Some("t0ken-1234"), "a%0Ab", body)).await;
        assert_eq!(status, 400);
        let unknown =
            "GET /v1/other HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer t0ken-1234\r\n\r\n";
        assert_eq!(call(addr, unknown.to_owned()).await.0, 404);
        assert!(
            seen.try_recv().is_err(),
            "refused requests reached the agent"
        );
    }

    #[tokio::test]
    async fn a_token_file_that_went_bad_stops_the_start_with_the_reason() {
        let registration = Registration {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: "/nonexistent/xdp-lb.token".into(),
        };
        let (agent, _seen) = fake_agent();
        let err = start(Some(&registration), &agent).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/xdp-lb.token cannot be opened"),
            "{err}"
        );
    }
}
