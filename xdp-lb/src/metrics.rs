//! The management listener on `metrics.listen`: `GET /metrics` answers the agent's status
//! report (asked through the control loop, as `xdp-lb status` does) as OpenMetrics text
//! (`exposition.rs`); the web console (`console.rs`) is served beside it, `GET /` the page
//! and `GET /status.json` the report as JSON. Anything else is 404 or 405.

mod exposition;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, mpsc},
    time::Instant,
};

pub use exposition::{BACKEND_STATES, render};

use crate::{
    config::{Metrics, read_token_file},
    console::{self, Route},
    control::{
        protocol::{Request, Response},
        server::{Pending, ask},
    },
    http1::{self, Endpoint, Limits, Unreadable},
};

/// What a scrape may send, and for how long.
const LIMITS: Limits = Limits {
    head: 8 * 1024,
    body: 0,
    timeout: Duration::from_secs(5),
};
/// How long a scrape waits for the agent's loop (busy resolving a reload, say).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// A report younger than this answers every `/status.json` request: however many consoles
/// are open, the agent makes at most one report (and one audit) a second for them.
const SHARED_REPORT_AGE: Duration = Duration::from_secs(1);
/// The OpenMetrics text format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The last `/status.json` answer and when it was made.
type SharedReport = Arc<Mutex<Option<(Instant, Arc<Vec<u8>>)>>>;

/// Serves the listener (nothing when `None`) until the endpoint is dropped. The token, when
/// there is one, is read once, here.
pub fn start(
    metrics: Option<&Metrics>,
    requests: &mpsc::Sender<Pending>,
) -> anyhow::Result<Option<Endpoint>> {
    let Some(metrics) = metrics else {
        return Ok(None);
    };
    let token = match &metrics.token_file {
        None => None,
        Some(path) => Some(
            read_token_file(path)
                .map_err(|why| anyhow::anyhow!("metrics.token_file {} {why}", path.display()))?,
        ),
    };
    let token: Option<Arc<str>> = token.map(Into::into);
    let requests = requests.clone();
    let shared = SharedReport::default();
    let protected = token.is_some();
    let endpoint = http1::serve(metrics.listen, LIMITS, move |request, _peer| {
        let (requests, token, shared) = (requests.clone(), token.clone(), shared.clone());
        async move { answer(request, token.as_deref(), &requests, &shared).await }
    })?;
    let addr = endpoint.local_addr;
    log::info!(
        "metrics: serving http://{addr}/metrics; web console: http://{addr}/ ({})",
        if protected {
            "the data needs the bearer token of metrics.token_file"
        } else {
            "no login: keep it on a management address"
        }
    );
    Ok(Some(endpoint))
}

async fn answer(
    request: Result<http1::Request, Unreadable>,
    token: Option<&str>,
    requests: &mpsc::Sender<Pending>,
    shared: &SharedReport,
) -> http1::Response {
    let request = match request {
        Ok(r) => r,
        Err(why) => {
            return console::secured(console::text(why.status, format!("{}\n", why.message)));
        }
    };
    let (route, head) = match console::route(&request, token) {
        Ok(allowed) => allowed,
        Err(refused) => return console::secured(refused),
    };
    let mut response = match route {
        Route::Asset(asset) => http1::Response::new(200, asset.content_type, asset.body),
        Route::Metrics => match status(requests).await {
            Ok(report) => http1::Response::new(200, CONTENT_TYPE, render(&report)),
            Err(refused) => refused,
        },
        Route::Status => match shared_status(requests, shared).await {
            Ok(json) => http1::Response::new(200, console::JSON, json.as_slice()),
            Err(refused) => refused,
        },
    };
    response.head_only = head;
    console::secured(response)
}

/// The agent's report, or the answer saying why there is none.
async fn status(
    requests: &mpsc::Sender<Pending>,
) -> Result<crate::control::protocol::StatusReport, http1::Response> {
    match tokio::time::timeout(ASK_TIMEOUT, ask(requests, Request::Status)).await {
        Ok(Response::Status(report)) => Ok(report),
        Ok(Response::Error { message }) => Err(console::text(503, format!("{message}\n"))),
        Ok(other) => Err(console::text(
            500,
            format!("unexpected answer from the agent: {other:?}\n"),
        )),
        Err(_) => Err(console::text(503, "the agent did not answer within 10 s\n")),
    }
}

/// The report as JSON, shared with every request within [`SHARED_REPORT_AGE`] of it
/// (requests arriving while it is made wait for it).
async fn shared_status(
    requests: &mpsc::Sender<Pending>,
    shared: &SharedReport,
) -> Result<Arc<Vec<u8>>, http1::Response> {
    let mut last = shared.lock().await;
    if let Some((made, json)) = last.as_ref()
        && made.elapsed() < SHARED_REPORT_AGE
    {
        return Ok(json.clone());
    }
    let report = status(requests).await?;
    let json = Arc::new(
        serde_json::to_vec(&report)
            .map_err(|err| console::text(500, format!("writing the report as JSON: {err}\n")))?,
    );
    *last = Some((Instant::now(), json.clone()));
    Ok(json)
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::control::protocol::StatusReport;

    /// A stand-in for the agent's loop: answers every status request with `report`, and
    /// counts them.
    fn fake_agent(report: StatusReport) -> (mpsc::Sender<Pending>, Arc<AtomicUsize>) {
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let answer = match request {
                    Request::Status => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Response::Status(report.clone())
                    }
                    _ => Response::error("not this"),
                };
                let _ = reply.send(answer);
            }
        });
        (tx, asked)
    }

    fn listener(token_file: Option<std::path::PathBuf>) -> Metrics {
        Metrics {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file,
        }
    }

    async fn get(addr: SocketAddr, raw: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// An answer's head lines and its body.
    fn split(answer: &str) -> (&str, &str) {
        answer.split_once("\r\n\r\n").unwrap()
    }

    #[tokio::test]
    async fn get_metrics_answers_the_report_and_other_paths_and_methods_are_refused() {
        let report = StatusReport {
            active_flows: 12,
            ..StatusReport::default()
        };
        let (agent, _) = fake_agent(report);
        let endpoint = start(Some(&listener(None)), &agent).unwrap().unwrap();
        let addr = endpoint.local_addr;
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("\nxdp_lb_active_flows 12\n"), "{ok}");
        for (other, status) in [
            (
                "GET /metricsx HTTP/1.1\r\nHost: lb\r\n\r\n",
                "404 Not Found",
            ),
            (
                "GET /index.html HTTP/1.1\r\nHost: lb\r\n\r\n",
                "404 Not Found",
            ),
            (
                "POST /metrics HTTP/1.1\r\nHost: lb\r\n\r\n",
                "405 Method Not Allowed",
            ),
            (
                "DELETE /status.json HTTP/1.1\r\nHost: lb\r\n\r\n",
                "405 Method Not Allowed",
            ),
        ] {
            let answer = get(addr, other).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{other:?}: {answer}"
            );
            assert!(
                answer.contains(console::CONTENT_SECURITY_POLICY),
                "{answer}"
            );
        }
        let with_body = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(with_body.starts_with("HTTP/1.1 413 "), "{with_body}");
    }

    #[tokio::test]
    async fn the_page_its_files_and_the_report_are_served_with_their_types_and_a_strict_policy() {
        let report = StatusReport {
            active_flows: 7,
            at_ms: 1234,
            ..StatusReport::default()
        };
        let (agent, asked) = fake_agent(report.clone());
        let endpoint = start(Some(&listener(None)), &agent).unwrap().unwrap();
        let addr = endpoint.local_addr;
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/console.js", "text/javascript; charset=utf-8"),
            ("/console.css", "text/css; charset=utf-8"),
            ("/vendor/chart.umd.min.js", "text/javascript; charset=utf-8"),
            ("/status.json", "application/json"),
        ] {
            let answer = get(addr, &format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n")).await;
            let (head, body) = split(&answer);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
            assert!(
                head.contains(&format!("\r\nContent-Type: {content_type}\r\n")),
                "{path}: {head}"
            );
            for header in [
                "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options: nosniff",
                "Cache-Control: no-store",
            ] {
                assert!(
                    head.contains(&format!("\r\n{header}\r\n")),
                    "{path}: {head}"
                );
            }
            if let Some(asset) = console::ASSETS.iter().find(|a| a.path == path) {
                assert_eq!(body.as_bytes(), asset.body, "{path}");
            } else {
                let served: StatusReport = serde_json::from_str(body).unwrap();
                assert_eq!(served, report);
            }
            let head_answer = get(addr, &format!("HEAD {path} HTTP/1.1\r\nHost: lb\r\n\r\n")).await;
            let (head_only, nothing) = split(&head_answer);
            assert_eq!(nothing, "", "HEAD {path}: no body");
            assert!(
                head_only.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
                "HEAD {path}: {head_only}"
            );
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "reports within a second are shared: one asked of the agent"
        );
    }

    #[tokio::test]
    async fn with_a_token_file_the_data_needs_the_token_and_the_page_does_not() {
        use std::os::unix::fs::PermissionsExt as _;
        let path =
            std::env::temp_dir().join(format!("xdp-lb-console-test-{}.token", std::process::id()));
        std::fs::write(&path, "c0ns0le-t0ken\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (agent, _) = fake_agent(StatusReport::default());
        let endpoint = start(Some(&listener(Some(path.clone()))), &agent)
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let addr = endpoint.local_addr;
        for path in ["/status.json", "/metrics"] {
            let refused = get(addr, &format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n")).await;
            assert!(
                refused.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
                "{refused}"
            );
            let wrong = get(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer nope\r\n\r\n"),
            )
            .await;
            assert!(wrong.starts_with("HTTP/1.1 401 "), "{wrong}");
            let ok = get(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer c0ns0le-t0ken\r\n\r\n"
                ),
            )
            .await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        }
        let page = get(addr, "GET / HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    }

    #[tokio::test]
    async fn a_token_file_that_cannot_be_read_stops_the_start() {
        let (agent, _) = fake_agent(StatusReport::default());
        let missing = listener(Some("/nonexistent/xdp-lb/console.token".into()));
        let err = start(Some(&missing), &agent).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "metrics.token_file /nonexistent/xdp-lb/console.token cannot be opened"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn metrics_are_off_without_an_address() {
        let (tx, _rx) = mpsc::channel(1);
        assert!(start(None, &tx).unwrap().is_none());
    }
}
