//! The agent's log lines: as env_logger writes them on a terminal, and under systemd
//! (`JOURNAL_STREAM` set: stderr goes to journald) each line prefixed with its syslog
//! priority (`<4>` for a warning), so `journalctl -p warning -u xdp-lb` shows exactly the
//! warnings and errors. journald adds the time itself.

use std::io::Write as _;

use log::Level;

/// The sd-daemon priority of a log level (syslog's: 3 err, 4 warning, 6 info, 7 debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One journald line: the priority prefix, then the message (continuation lines of a
/// multi-line message get the prefix too, so none falls back to the default priority).
pub fn journal_line(level: Level, target: &str, message: &str) -> String {
    let prefix = format!("<{}>", priority(level));
    message
        .lines()
        .map(|line| format!("{prefix}{target}: {line}\n"))
        .collect()
}

/// Starts the logger (RUST_LOG, default `info`).
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let line = journal_line(record.level(), record.target(), &record.args().to_string());
            buf.write_all(line.as_bytes())
        });
    }
    builder.init();
}

/// A budget for log lines about clients: at most `burst` lines per `window`, so that a
/// peer sending bad requests as fast as it can cannot push the real alerts out of
/// journald's rate limit. The next line allowed says how many were left out.
#[derive(Debug)]
pub struct Limited {
    window: std::time::Duration,
    burst: u32,
    started: Option<std::time::Instant>,
    used: u32,
    suppressed: u64,
}

impl Limited {
    pub fn new(window: std::time::Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left out since
    /// the last one written; `None` when this one is to be left out.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }

    fn allow_at(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .started
            .is_none_or(|started| now.duration_since(started) >= self.window)
        {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The tail of a rate-limited line: how many like it were left out, if any.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!("; {suppressed} more like it not logged")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn each_level_gets_its_syslog_priority_so_journalctl_p_warning_selects_warnings() {
        assert_eq!(
            journal_line(Level::Warn, "xdp_lb::agent", "backend 10.0.0.11 is down"),
            "<4>xdp_lb::agent: backend 10.0.0.11 is down\n"
        );
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }

    #[test]
    fn every_line_of_a_multi_line_message_keeps_the_priority() {
        assert_eq!(
            journal_line(Level::Error, "xdp_lb", "reload refused:\nline 3: bad"),
            "<3>xdp_lb: reload refused:\n<3>xdp_lb: line 3: bad\n"
        );
    }

    #[test]
    fn a_budget_lets_a_burst_through_per_window_and_counts_what_it_left_out() {
        let mut limited = Limited::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(limited.allow_at(t0), Some(0));
        assert_eq!(limited.allow_at(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(limited.allow_at(t0 + Duration::from_secs(9)), None);
        }
        assert_eq!(limited.allow_at(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(limited.allow_at(t0 + Duration::from_secs(10)), Some(0));
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), "; 3 more like it not logged");
    }
}
