//! The operations endpoints: the management listener (the Prometheus metrics, the web
//! console and its status report) and the remote registration API (`metrics.rs`,
//! `console.rs` and `register.rs` serve them). Both are off unless the file names them, and
//! both are bound at start: changing either needs a restart. As written in `raw.rs`;
//! checked, validated and written back here.

pub(crate) mod raw;

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde_saphyr::Spanned;

use self::raw::RawRegistration;
use crate::config::{
    file::raw::RawConfig,
    shared::{checker::Checker, errors::shown, host::HostFacts, number::at, yaml::string},
};

/// Longest registration token (read from its file, surrounding whitespace dropped).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The operations endpoints; `None` for an endpoint that is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    /// Where `GET /metrics`, the web console and `GET /status.json` are served.
    pub metrics: Option<Metrics>,
    /// Where backends may be added and removed over HTTP with a bearer token.
    pub registration: Option<Registration>,
}

/// The management listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
    /// Holds a bearer token `/metrics` and `/status.json` then require (the console's page
    /// asks for it); `None`: no token, as for a listener on a management address.
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub listen: SocketAddr,
    /// Holds the bearer token; root's, not world-readable.
    pub token_file: PathBuf,
}

impl Ops {
    /// What differs from `running` that only a restart applies (the listeners are bound
    /// at start), or `None`.
    pub fn restart_needed(&self, running: &Ops) -> Option<String> {
        let mut fixed = Vec::new();
        if self.metrics != running.metrics {
            fixed.push("metrics");
        }
        if self.registration != running.registration {
            fixed.push("registration");
        }
        (!fixed.is_empty()).then(|| fixed.join(", "))
    }
}

/// The registration token in `path`: one line of printable ASCII, at most
/// [`MAX_TOKEN_BYTES`], in a regular file nobody but its owner and group can read.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_regular(path, MAX_TOKEN_BYTES as u64 * 2)?;
    let meta = fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "is readable by every user (mode {mode:04o}); make it root's only: chmod 600"
        ));
    }
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err("is empty (write a token in it, e.g. `openssl rand -hex 32`)".to_owned());
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("holds more than {MAX_TOKEN_BYTES} bytes"));
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(
            "must hold one token of printable ASCII without spaces (e.g. `openssl rand -hex 32`)"
                .to_owned(),
        );
    }
    Ok(String::from_utf8_lossy(token).into_owned())
}

impl Checker<'_> {
    /// `metrics` and `registration`.
    pub(crate) fn ops(&mut self, raw: &RawConfig, host: &dyn HostFacts) -> Option<Ops> {
        let before = self.errors.len();
        let metrics = raw.metrics.as_ref().and_then(|m| {
            let listen = self.listen(&m.value.listen, "metrics.listen");
            let token_file = match &m.value.token_file {
                None => Some(None),
                Some(file) => self.token_file(file, "metrics.token_file", host).map(Some),
            };
            Some(Metrics {
                listen: listen?,
                token_file: token_file?,
            })
        });
        let registration = raw
            .registration
            .as_ref()
            .and_then(|r| self.registration(&r.value, host));
        if let (Some(m), Some(r), Some(raw_r)) = (&metrics, &registration, &raw.registration)
            && m.listen.port() == r.listen.port()
        {
            let m = m.listen;
            // The second bind fails at start (after the program is attached) when the
            // addresses are equal, or when one listens on every address of its family (and
            // an IPv6 `[::]` takes IPv4 too).
            let wildcard = |a: SocketAddr, b: SocketAddr| {
                a.ip().is_unspecified() && (a.is_ipv6() || b.is_ipv4())
            };
            let message = if m == r.listen {
                Some(format!(
                    "{m} is also metrics.listen: give each its own port"
                ))
            } else if wildcard(m, r.listen) || wildcard(r.listen, m) {
                Some(format!(
                    "{} and metrics.listen {m} overlap (the same port, and one listens on every address): give each its own port",
                    r.listen
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.error(at(&raw_r.value.listen), "registration.listen", message);
            }
        }
        (self.errors.len() == before).then_some(Ops {
            metrics,
            registration,
        })
    }

    fn registration(
        &mut self,
        raw: &RawRegistration,
        host: &dyn HostFacts,
    ) -> Option<Registration> {
        let listen = self.listen(&raw.listen, "registration.listen");
        let token_file = self.token_file(&raw.token_file, "registration.token_file", host)?;
        Some(Registration {
            listen: listen?,
            token_file,
        })
    }

    /// An absolute path to a token file the host accepts (see [`read_token_file`]).
    fn token_file(
        &mut self,
        file: &Spanned<String>,
        field: &str,
        host: &dyn HostFacts,
    ) -> Option<PathBuf> {
        let path = Path::new(&file.value);
        if !path.is_absolute() {
            let message = format!(
                "{} is not an absolute path (write the full path of the token file)",
                shown(&file.value)
            );
            self.error(at(file), field, message);
            return None;
        }
        if let Err(why) = host.secret_file(path) {
            self.error(at(file), field, format!("{} {why}", shown(&file.value)));
            return None;
        }
        Some(path.to_path_buf())
    }

    /// An address and port to listen on.
    fn listen(&mut self, value: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match value.value.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Some(addr),
            Ok(_) => {
                let message = format!("{}: port 0 is not a port to listen on", shown(&value.value));
                self.error(at(value), field, message);
                None
            }
            Err(_) => {
                let message = format!(
                    "{} is not an address and port (e.g. 127.0.0.1:9100 or [::1]:9100)",
                    shown(&value.value)
                );
                self.error(at(value), field, message);
                None
            }
        }
    }
}

/// `metrics` and `registration` in the effective configuration (nothing when off).
pub(crate) fn render(out: &mut String, ops: &Ops) -> std::fmt::Result {
    if let Some(m) = &ops.metrics {
        writeln!(out, "metrics:")?;
        writeln!(out, "  listen: {}", socket(m.listen))?;
        if let Some(path) = &m.token_file {
            writeln!(out, "  token_file: {}", string(&path.to_string_lossy()))?;
        }
    }
    if let Some(r) = &ops.registration {
        writeln!(out, "registration:")?;
        writeln!(out, "  listen: {}", socket(r.listen))?;
        writeln!(
            out,
            "  token_file: {}",
            string(&r.token_file.to_string_lossy())
        )?;
    }
    Ok(())
}

/// A listen address as a YAML scalar (an IPv6 one starts with `[`, a flow sequence
/// unquoted).
fn socket(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("\"{v6}\""),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::config::{LiveHost, file::tests::ok_file, parse_file};

    /// Writes `text` to `dir/name` with permissions `mode`.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_token_is_one_private_line_of_printable_ascii() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(&dir, "good", "  c0ffee-token\n", 0o600);
        assert_eq!(read_token_file(&good).unwrap(), "c0ffee-token");
        let group = file(&dir, "group", "tok\n", 0o640);
        assert_eq!(read_token_file(&group).unwrap(), "tok");
        let cases = [
            (
                file(&dir, "open", "tok\n", 0o644),
                "is readable by every user (mode 0644); make it root's only: chmod 600",
            ),
            (
                file(&dir, "empty", " \n", 0o600),
                "is empty (write a token in it, e.g. `openssl rand -hex 32`)",
            ),
            (
                file(&dir, "spaces", "two words\n", 0o600),
                "must hold one token of printable ASCII without spaces (e.g. `openssl rand -hex 32`)",
            ),
            (
                file(&dir, "long", &"a".repeat(MAX_TOKEN_BYTES + 1), 0o600),
                "holds more than 4096 bytes",
            ),
        ];
        for (path, why) in cases {
            assert_eq!(
                read_token_file(&path).unwrap_err(),
                why,
                "{}",
                path.display()
            );
        }
        assert!(
            read_token_file(&dir.path().join("missing"))
                .unwrap_err()
                .starts_with("cannot be opened: ")
        );
        assert_eq!(
            read_token_file(dir.path()).unwrap_err(),
            "is a directory, not a regular file"
        );
    }

    #[test]
    fn the_live_host_refuses_a_bad_token_file_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let open = file(&dir, "open", "tok\n", 0o604);
        let text = format!(
            "interfaces: [lo]\nregistration:\n  listen: 127.0.0.1:9180\n  token_file: {}\nservices: []\n",
            open.display()
        );
        let errors = parse_file(Path::new("t.yaml"), &text, &LiveHost).unwrap_err();
        let e = &errors.0[0];
        assert_eq!(
            (errors.len(), e.line, e.field.as_str()),
            (1, 4, "registration.token_file"),
            "{errors}"
        );
        assert!(
            e.message
                .ends_with("is readable by every user (mode 0604); make it root's only: chmod 600"),
            "{e}"
        );

        fs::set_permissions(&open, fs::Permissions::from_mode(0o600)).unwrap();
        let file = parse_file(Path::new("t.yaml"), &text, &LiveHost).unwrap();
        assert_eq!(
            file.ops.registration,
            Some(Registration {
                listen: "127.0.0.1:9180".parse().unwrap(),
                token_file: open
            })
        );
    }

    #[test]
    fn endpoints_are_off_unless_named_and_a_change_of_either_needs_a_restart() {
        let base = "interfaces: [eth0]\nservices: []\n";
        let off = ok_file(base);
        assert_eq!(off.ops, Ops::default());
        let metrics = ok_file(&format!("metrics:\n  listen: \"[::1]:9100\"\n{base}"));
        assert_eq!(
            metrics.ops.metrics,
            Some(Metrics {
                listen: "[::1]:9100".parse().unwrap(),
                token_file: None
            })
        );
        assert_eq!(
            metrics.ops.restart_needed(&off.ops).as_deref(),
            Some("metrics")
        );
        let both = ok_file(&format!(
            "metrics: {{listen: 127.0.0.1:9100}}\nregistration: {{listen: 10.0.0.1:9180, token_file: /etc/xdp-lb/t}}\n{base}"
        ));
        assert_eq!(
            both.ops.restart_needed(&off.ops).as_deref(),
            Some("metrics, registration")
        );
        assert_eq!(both.ops.restart_needed(&both.ops), None);
    }
}
