//! The web console in a real browser (root only): headless Chromium in the client's
//! namespace loads the agent's page from the LB's management address while HTTP traffic
//! flows, and the test reads the page as it renders: every backend with its state and a
//! non-zero packet rate, a backend whose nginx stops shown `down` within the health check's
//! bound, the verdict in the timeline, and a plain banner when the agent is gone.
//!
//! `XDP_LB_CONSOLE_SCREENSHOT=PATH` also writes the screenshot there (how
//! `docs/console.png` is made).

use std::{
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;
use xdp_lb_tests::{Lab, LabOptions, browser::Browser, is_root};

/// The default check (a TCP connect every second, 800 ms timeout, down after 2 failures)
/// marks a dead server down within 2 x 1 s + 0.8 s; the page refreshes every second from a
/// report at most a second old. The bound asserted leaves room for a loaded machine.
const DOWN_BOUND: Duration = Duration::from_secs(15);
/// The longest the page may take to show the lab's backends with rates.
const PATIENCE: Duration = Duration::from_secs(30);

/// A backend's row as the page shows it.
#[derive(Debug, Deserialize)]
struct Row {
    address: String,
    /// The state cell's text.
    state: String,
    /// The packets/s cell's text.
    pps: String,
}

#[derive(Debug, Deserialize)]
struct Service {
    name: String,
    rows: Vec<Row>,
}

/// The page's backend tables, read from its DOM.
const READ_ROWS: &str = r#"JSON.stringify([...document.querySelectorAll('section.service')].map(s => ({
  name: s.dataset.service,
  rows: [...s.querySelectorAll('tr.backend')].map(r => ({
    address: r.cells[0].textContent.trim(),
    state: r.querySelector('.state-cell').textContent.trim(),
    pps: r.querySelector('td.pps').textContent.trim(),
  })),
})))"#;

fn rows(browser: &mut Browser) -> Vec<Service> {
    let json = browser.eval(READ_ROWS).expect("reading the page");
    serde_json::from_str(json.as_str().unwrap_or("[]")).expect("the rows as JSON")
}

/// A packets/s cell as a number (`1.2 k` is 1200; `–` is none yet).
fn rate(text: &str) -> Option<f64> {
    let (number, unit) = text.split_once(' ').unwrap_or((text, ""));
    let scale = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn hls(services: &[Service]) -> Option<&Service> {
    services.iter().find(|s| s.name == "video-hls")
}

/// Waits (at most `bound`) until `check` holds for what the page shows; panics with the
/// page's last rows otherwise.
fn wait_page(
    browser: &mut Browser,
    bound: Duration,
    what: &str,
    check: &dyn Fn(&[Service]) -> bool,
) {
    let deadline = Instant::now() + bound;
    loop {
        let services = rows(browser);
        if check(&services) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {bound:?}; it shows {services:#?}"
        );
        thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_console_shows_backends_states_and_rates_live_and_a_stopped_backend_goes_down() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions::default()).expect("bringing the lab up");
    let config = lab.write_lab_config_with_console().expect("the config");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let mut agent = lab
        .start_agent(&binary, &config)
        .expect("starting the agent");
    // New flows all the time (each curl from a new source port), spread over the backends.
    let loop_script = format!(
        "while :; do curl -s -o /dev/null --max-time 2 http://{}:{}/; sleep 0.05; done",
        Lab::VIP,
        Lab::HTTP_PORT
    );
    let _traffic = lab
        .spawn(lab.ns_client(), &["sh", "-c", &loop_script])
        .expect("starting the client's traffic");

    let mut browser = Browser::open(&lab, lab.ns_client(), &Lab::console_url(), 1400, 1250)
        .expect("starting chromium in the client's namespace");
    let backends: Vec<String> = (0..lab.backends()).map(Lab::backend_addr).collect();
    wait_page(
        &mut browser,
        PATIENCE,
        "every backend up with packets flowing",
        &|services| {
            hls(services).is_some_and(|s| {
                s.rows.len() == backends.len()
                    && s.rows.iter().zip(&backends).all(|(row, address)| {
                        row.address == *address
                            && row.state == "up"
                            && rate(&row.pps).is_some_and(|pps| pps > 0.0)
                    })
            }) && services.iter().any(|s| s.name == "video-rtmp")
        },
    );
    let pill = browser
        .eval("document.getElementById('connection').textContent")
        .unwrap();
    assert_eq!(pill, "live");

    // b1's nginx stops: the page shows it down, the others up, within the check's bound.
    lab.quit_backend_nginx(0).expect("nginx -s quit on b1");
    let stopped = Instant::now();
    wait_page(
        &mut browser,
        DOWN_BOUND,
        "b1 down and the others up",
        &|services| {
            hls(services).is_some_and(|s| {
                s.rows
                    .iter()
                    .all(|row| (row.state == "down") == (row.address == backends[0]))
            })
        },
    );
    eprintln!(
        "the page showed b1 down {:?} after its nginx was told to quit",
        stopped.elapsed()
    );
    let timeline = browser
        .eval("document.getElementById('timeline').textContent")
        .unwrap();
    let timeline = timeline.as_str().unwrap_or_default();
    assert!(
        timeline.contains(&backends[0]) && timeline.contains("down") && timeline.contains("switch"),
        "the timeline shows the verdict and the table switch: {timeline}"
    );
    let verdicts = browser
        .eval("[...document.querySelectorAll('#verdicts tr[data-counter]')].map(r => r.dataset.counter).join(' ')")
        .unwrap();
    assert!(
        verdicts.as_str().unwrap_or_default().split(' ').count() > 3,
        "the verdict counters are listed: {verdicts}"
    );
    // Let the line chart gather a few points before the picture.
    thread::sleep(Duration::from_secs(3));
    let shot = lab.dir().join("console.png");
    browser.screenshot(&shot).expect("the screenshot");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Some(path) = std::env::var_os("XDP_LB_CONSOLE_SCREENSHOT") {
        std::fs::copy(&shot, &path).expect("copying the screenshot");
    }

    // The agent gone: the page says so plainly.
    agent.kill().expect("stopping the agent");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let banner = browser
            .eval("document.getElementById('banners').textContent")
            .unwrap();
        if banner
            .as_str()
            .is_some_and(|b| b.contains("Agent unreachable"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no unreachable banner: {banner}");
        thread::sleep(Duration::from_millis(250));
    }
}
