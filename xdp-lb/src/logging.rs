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

#[cfg(test)]
mod tests {
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
}
