//! The scrapers: `status` over the control socket and `GET /metrics` inside the LB's
//! namespace, each on a thread of its own, every second (at a random phase) or back to
//! back. Every answer must carry the whole connection table's count, so a scrape that did
//! not walk it is not counted as one.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde::Serialize;
use xdp_lb::control::{
    client,
    protocol::{Request, Response},
};

use crate::netns;

/// How the agent is scraped while a verdict is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scraping {
    /// Nobody asks the agent anything.
    None,
    /// `status` and `/metrics` once a second each, as a Prometheus and a watching operator
    /// would.
    EverySecond,
    /// `status` and `/metrics` each again as soon as the last one answered.
    Continuous,
}

impl Scraping {
    pub const ALL: [Scraping; 3] = [Scraping::None, Scraping::EverySecond, Scraping::Continuous];

    pub fn describe(self) -> &'static str {
        match self {
            Scraping::None => "not scraped",
            Scraping::EverySecond => "`status` and `/metrics` every second",
            Scraping::Continuous => "`status` and `/metrics` back to back",
        }
    }
}

/// Where the agent answers, and what every answer must count.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub socket: PathBuf,
    pub lb_ns: String,
    pub metrics: SocketAddr,
    pub flows: u64,
}

/// One `status`: how long it took (ms). Fails unless it counted `flows` entries.
pub fn status(at: &Endpoints) -> Result<f64> {
    let started = Instant::now();
    let answer = client::call(&at.socket, &Request::Status)?;
    let took = started.elapsed().as_secs_f64() * 1e3;
    match answer {
        Response::Status(report) => {
            ensure!(
                report.active_flows == at.flows,
                "status counted {} flows, not the {} in the table",
                report.active_flows,
                at.flows
            );
            Ok(took)
        }
        other => bail!("status answered {other:?}"),
    }
}

/// One `GET /metrics` (from a thread inside the LB's namespace): how long it took (ms).
/// Fails unless it answered 200 with `xdp_lb_active_flows` equal to `flows`.
pub fn metrics_inside(at: &Endpoints) -> Result<f64> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&at.metrics, Duration::from_secs(5))
        .with_context(|| format!("connecting to {}", at.metrics))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        at.metrics
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let took = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "/metrics answered {:?}",
        answer.lines().next().unwrap_or_default()
    );
    let counted = answer
        .lines()
        .find_map(|l| l.strip_prefix("xdp_lb_active_flows "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("/metrics has no xdp_lb_active_flows"))?;
    ensure!(
        counted == at.flows,
        "/metrics counted {counted} flows, not the {} in the table",
        at.flows
    );
    Ok(took)
}

/// What one scraper got: how long each answered scrape took (ms), and why the others
/// failed.
#[derive(Clone, Debug, Default)]
pub struct Scrapes {
    pub ms: Vec<f64>,
    pub failed: Vec<String>,
}

impl Scrapes {
    pub fn extend(&mut self, other: Scrapes) {
        self.ms.extend(other.ms);
        self.failed.extend(other.failed);
    }
}

/// By kind.
#[derive(Clone, Debug, Default)]
pub struct Scraped {
    pub status: Scrapes,
    pub metrics: Scrapes,
}

/// Scrapers running until [`Scrapers::stop`].
pub struct Scrapers {
    stop: Arc<AtomicBool>,
    status: Option<thread::JoinHandle<Result<Scrapes>>>,
    metrics: Option<thread::JoinHandle<Result<Scrapes>>>,
}

impl Scrapers {
    pub fn start(scraping: Scraping, at: &Endpoints) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let period = match scraping {
            Scraping::None => {
                return Ok(Self {
                    stop,
                    status: None,
                    metrics: None,
                });
            }
            Scraping::EverySecond => Some(Duration::from_secs(1)),
            Scraping::Continuous => None,
        };
        let (status_at, status_stop) = (at.clone(), stop.clone());
        let status = thread::Builder::new()
            .name("scrape-status".into())
            .spawn(move || repeat(period, &status_stop, || status(&status_at)))?;
        let (metrics_at, metrics_stop) = (at.clone(), stop.clone());
        let metrics = thread::Builder::new()
            .name("scrape-metrics".into())
            .spawn(move || {
                let ns = metrics_at.lb_ns.clone();
                netns::run_inside(&ns, move || {
                    repeat(period, &metrics_stop, || metrics_inside(&metrics_at))
                })
            })?;
        Ok(Self {
            stop,
            status: Some(status),
            metrics: Some(metrics),
        })
    }

    /// Stops the scrapers (each ends its scrape under way) and returns what they took.
    pub fn stop(mut self) -> Result<Scraped> {
        self.stop.store(true, Ordering::SeqCst);
        let join = |t: Option<thread::JoinHandle<Result<Scrapes>>>| match t {
            Some(t) => t.join().map_err(|_| anyhow!("a scraper panicked"))?,
            None => Ok(Scrapes::default()),
        };
        Ok(Scraped {
            status: join(self.status.take()).context("scraping status")?,
            metrics: join(self.metrics.take()).context("scraping /metrics")?,
        })
    }
}

impl Drop for Scrapers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs `scrape` until `stop`: on a grid of `period` from a random phase (a scrape longer
/// than the period skips the grid points it overran, as Prometheus does), or back to back.
/// A failed scrape is noted and the next one follows (after a pause, back to back).
fn repeat(
    period: Option<Duration>,
    stop: &AtomicBool,
    mut scrape: impl FnMut() -> Result<f64>,
) -> Result<Scrapes> {
    let mut took = Scrapes::default();
    let started = Instant::now();
    let mut next = period.map(|p| started + p.mul_f64(random_fraction()));
    while !stop.load(Ordering::SeqCst) {
        if let (Some(at), Some(p)) = (next.as_mut(), period) {
            let now = Instant::now();
            if now < *at {
                thread::sleep((*at - now).min(Duration::from_millis(20)));
                continue;
            }
            while *at <= now {
                *at += p;
            }
        }
        match scrape() {
            Ok(ms) => took.ms.push(ms),
            Err(err) => {
                took.failed.push(format!("{err:#}"));
                if period.is_none() {
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    Ok(took)
}

/// A number in [0, 1) from the clock (the phase need not be unpredictable, only unrelated
/// to the health checks' own).
fn random_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1e6
}
