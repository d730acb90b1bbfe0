//! Traffic from the client (HTTP through curl, RTMP publishes through ffmpeg), what the
//! backends saw, and the agent configuration for the lab.

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{Lab, cmd};

impl Lab {
    /// The agent YAML for this lab: interface eth0; services `video-rtmp` (tcp/1935) and
    /// `video-hls` (tcp/8080) on the VIP, each with every backend by address (no MAC: the
    /// agent resolves them) and a Maglev table of 65537 slots.
    pub fn lab_config(&self) -> String {
        let mut yaml = String::from("interfaces: [eth0]\nservices:\n");
        for (name, port) in [
            ("video-rtmp", Self::RTMP_PORT),
            ("video-hls", Self::HTTP_PORT),
        ] {
            // Writing to a String cannot fail.
            let _ = write!(
                yaml,
                "  - name: {name}\n    vip: {vip}\n    port: {port}\n    protocol: tcp\n    \
                 maglev_size: 65537\n    backends:\n",
                vip = Self::VIP,
            );
            for i in 0..self.backends {
                let _ = writeln!(yaml, "      - address: {}", Self::backend_addr(i));
            }
        }
        yaml
    }

    /// Writes [`Self::lab_config`] to `xdp-lb.yaml` in the lab directory; returns its path.
    pub fn write_lab_config(&self) -> Result<PathBuf> {
        let path = self.dir().join("xdp-lb.yaml");
        fs::write(&path, self.lab_config())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// [`Self::write_lab_config`] with the agent's management listener (metrics and web
    /// console) on [`Self::LB_ADDR`]:[`Self::CONSOLE_PORT`], reachable from the client.
    pub fn write_lab_config_with_console(&self) -> Result<PathBuf> {
        let path = self.dir().join("xdp-lb.yaml");
        let yaml = format!(
            "metrics:\n  listen: {}:{}\n{}",
            Self::LB_ADDR,
            Self::CONSOLE_PORT,
            self.lab_config()
        );
        fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The web console's address inside the lab (see [`Self::write_lab_config_with_console`]).
    pub fn console_url() -> String {
        format!("http://{}:{}/", Self::LB_ADDR, Self::CONSOLE_PORT)
    }

    /// `curl -sS --max-time 5 http://VIP:8080PATH` from the client; the body. Fails with
    /// curl's stderr when the request fails (or the status is 4xx/5xx).
    pub fn http_get_via_vip(&self, path: &str) -> Result<String> {
        self.http_get(
            &format!("http://{}:{}{path}", Self::VIP, Self::HTTP_PORT),
            None,
        )
    }

    /// Like [`Self::http_get_via_vip`], but from client source port `local_port`, so that
    /// requests are distinct flows for the load balancer.
    pub fn http_get_via_vip_from_port(&self, path: &str, local_port: u16) -> Result<String> {
        self.http_get(
            &format!("http://{}:{}{path}", Self::VIP, Self::HTTP_PORT),
            Some(local_port),
        )
    }

    /// `curl -sS --fail --max-time 5 URL` from the client (optionally from a fixed source
    /// port); the body.
    pub fn http_get(&self, url: &str, local_port: Option<u16>) -> Result<String> {
        let port = local_port.map(|p| p.to_string());
        let mut args = vec!["curl", "-sS", "--fail", "--max-time", "5"];
        if let Some(port) = &port {
            args.extend(["--local-port", port]);
        }
        args.push(url);
        self.exec_ok(self.ns_client(), &args)
    }

    /// Publishes `seconds` of a test pattern from the client to `rtmp://VIP/live/STREAM`
    /// with ffmpeg (killed after `seconds + 30` s). Returns ffmpeg's output whatever its
    /// exit status; see [`Self::rtmp_publish_ok`].
    pub fn rtmp_publish(&self, seconds: u32, stream: &str) -> Result<Output> {
        let url = format!("rtmp://{}:{}/live/{stream}", Self::VIP, Self::RTMP_PORT);
        let argv = Self::publish_argv(&url, seconds);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.exec_timeout(
            self.ns_client(),
            &args,
            Duration::from_secs(u64::from(seconds) + 30),
        )
    }

    /// The ffmpeg command line publishing `seconds` of a test pattern to `url` (FLV over
    /// RTMP, errors only on stderr).
    pub fn publish_argv(url: &str, seconds: u32) -> Vec<String> {
        let duration = seconds.to_string();
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            &duration,
            "-c:v",
            "flv1",
            "-f",
            "flv",
            url,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }

    /// [`Self::rtmp_publish`] that fails, with ffmpeg's stderr, unless ffmpeg succeeds.
    pub fn rtmp_publish_ok(&self, seconds: u32, stream: &str) -> Result<()> {
        let output = self.rtmp_publish(seconds, stream)?;
        ensure!(
            output.status.success(),
            "publishing rtmp://{}/live/{stream} with ffmpeg failed ({}): {}",
            Self::VIP,
            cmd::status_text(output.status),
            cmd::quote_output(&output.stderr)
        );
        Ok(())
    }

    /// The path of backend `i`'s (0-based) RTMP access log.
    pub fn rtmp_log_path(&self, backend: usize) -> Result<PathBuf> {
        ensure!(
            backend < self.backends,
            "lab {} has no backend {backend}",
            self.id
        );
        Ok(self.nginx[backend].rtmp_log_path())
    }

    /// Backend `i`'s (0-based) document root: `location /` serves its files over HTTP, so
    /// a test can make a page appear and disappear (an HTTP health check's target).
    pub fn backend_www(&self, backend: usize) -> Result<PathBuf> {
        ensure!(
            backend < self.backends,
            "lab {} has no backend {backend}",
            self.id
        );
        Ok(self.nginx[backend].prefix.join("www"))
    }

    /// The lines of backend `i`'s (0-based) RTMP access log for publish sessions. nginx-rtmp
    /// writes a session's line when the session ENDS, so a publish shows up shortly after
    /// ffmpeg exits (see [`Self::wait_rtmp_publish`]).
    pub fn rtmp_publishes(&self, backend: usize) -> Result<Vec<String>> {
        let path = self.rtmp_log_path(backend)?;
        let log = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        Ok(log
            .lines()
            .filter(|line| line.to_ascii_lowercase().contains("publish"))
            .map(str::to_owned)
            .collect())
    }

    /// Waits (at most `timeout`) until some backend's RTMP access log has a publish line for
    /// `stream`; returns that backend's index (0-based). Fails when none shows up, or when
    /// more than one backend logged it.
    pub fn wait_rtmp_publish(&self, stream: &str, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let needle = format!("\"{stream}\"");
        loop {
            let mut found = Vec::new();
            for backend in 0..self.backends {
                if self
                    .rtmp_publishes(backend)?
                    .iter()
                    .any(|line| line.contains(&needle))
                {
                    found.push(backend);
                }
            }
            match found.as_slice() {
                [one] => return Ok(*one),
                [] if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                [] => bail!(
                    "no backend logged a publish of stream {stream} within {:.1} s",
                    timeout.as_secs_f64()
                ),
                many => bail!(
                    "backends {:?} all logged a publish of stream {stream}",
                    many.iter()
                        .map(|&i| Self::backend_name(i))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }
}
