//! Prometheus metrics: `GET /metrics` on the `metrics.listen` address answers the agent's
//! status report (asked through the control loop, as `xdp-lb status` does) as OpenMetrics
//! text (`exposition.rs`); anything else is 404.

mod exposition;

use std::{net::SocketAddr, time::Duration};

use tokio::sync::mpsc;

pub use exposition::{BACKEND_STATES, render};

use crate::{
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
/// The OpenMetrics text format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the metrics on `listen` (nothing when `None`) until the endpoint is dropped.
pub fn start(
    listen: Option<SocketAddr>,
    requests: &mpsc::Sender<Pending>,
) -> anyhow::Result<Option<Endpoint>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let requests = requests.clone();
    let endpoint = http1::serve(listen, LIMITS, move |request, _peer| {
        let requests = requests.clone();
        async move { answer(request, &requests).await }
    })?;
    log::info!("metrics: serving http://{}/metrics", endpoint.local_addr);
    Ok(Some(endpoint))
}

fn text(status: u16, body: impl Into<Vec<u8>>) -> http1::Response {
    http1::Response::new(status, "text/plain; charset=utf-8", body)
}

async fn answer(
    request: Result<http1::Request, Unreadable>,
    requests: &mpsc::Sender<Pending>,
) -> http1::Response {
    let request = match request {
        Ok(r) => r,
        Err(why) => return text(why.status, format!("{}\n", why.message)),
    };
    if request.method != "GET" || request.path != "/metrics" {
        return text(404, "not found: the metrics are at GET /metrics\n");
    }
    match tokio::time::timeout(ASK_TIMEOUT, ask(requests, Request::Status)).await {
        Ok(Response::Status(report)) => http1::Response::new(200, CONTENT_TYPE, render(&report)),
        Ok(Response::Error { message }) => text(503, format!("{message}\n")),
        Ok(other) => text(
            500,
            format!("unexpected answer from the agent: {other:?}\n"),
        ),
        Err(_) => text(503, "the agent did not answer within 10 s\n"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::control::protocol::StatusReport;

    /// A stand-in for the agent's loop: answers every status request with `report`.
    fn fake_agent(report: StatusReport) -> mpsc::Sender<Pending> {
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let answer = match request {
                    Request::Status => Response::Status(report.clone()),
                    _ => Response::error("not this"),
                };
                let _ = reply.send(answer);
            }
        });
        tx
    }

    async fn get(addr: SocketAddr, raw: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn get_metrics_answers_the_report_and_anything_else_is_404() {
        let report = StatusReport {
            active_flows: 12,
            ..StatusReport::default()
        };
        let endpoint = start(Some("127.0.0.1:0".parse().unwrap()), &fake_agent(report))
            .unwrap()
            .unwrap();
        let addr = endpoint.local_addr;
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("\nxdp_lb_active_flows 12\n"), "{ok}");
        for other in [
            "GET / HTTP/1.1\r\n\r\n",
            "POST /metrics HTTP/1.1\r\n\r\n",
            "GET /metricsx HTTP/1.1\r\n\r\n",
        ] {
            let answer = get(addr, other).await;
            assert!(
                answer.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{other:?}: {answer}"
            );
        }
        let with_body = get(
            addr,
            "GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(with_body.starts_with("HTTP/1.1 413 "), "{with_body}");
    }

    #[tokio::test]
    async fn metrics_are_off_without_an_address() {
        let (tx, _rx) = mpsc::channel(1);
        assert!(start(None, &tx).unwrap().is_none());
    }
}
