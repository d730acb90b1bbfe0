//! Real nginx servers inside lab namespaces: the backends (HTTP/HLS on 8080, RTMP on 1935)
//! and the LB host's own service.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::cmd::{self, quote_output};

/// The nginx-rtmp dynamic module (Debian's libnginx-mod-rtmp).
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// The HLS playlist every backend serves at `/live.m3u8` (segment names carry the backend's
/// name, so a client can tell who answered).
pub fn playlist(name: &str) -> String {
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:2.0,\n{name}-seg0.ts\n#EXT-X-ENDLIST\n"
    )
}

/// One nginx instance: its files live under `prefix`, its master runs in namespace `ns`.
#[derive(Debug)]
pub struct Nginx {
    /// What it is, for messages ("b1", "lb").
    pub name: String,
    /// The namespace it runs in.
    pub ns: String,
    /// Its prefix directory (configuration, logs, temp files, document root).
    pub prefix: PathBuf,
    /// The master's pid, once started.
    pub pid: Option<i32>,
}

impl Nginx {
    /// Lays out `prefix` (conf, logs, temp paths, document root) for an instance.
    fn new(name: &str, ns: &str, prefix: &Path) -> Result<Self> {
        for sub in [
            "logs",
            "www",
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            let dir = prefix.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self {
            name: name.to_owned(),
            ns: ns.to_owned(),
            prefix: prefix.to_owned(),
            pid: None,
        })
    }

    /// The configuration file.
    pub fn conf_path(&self) -> PathBuf {
        self.prefix.join("nginx.conf")
    }

    /// The master's pid file.
    pub fn pid_path(&self) -> PathBuf {
        self.prefix.join("logs/nginx.pid")
    }

    /// The error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.prefix.join("logs/error.log")
    }

    /// The RTMP access log (backends only): one line per finished RTMP session.
    pub fn rtmp_log_path(&self) -> PathBuf {
        self.prefix.join("logs/rtmp-access.log")
    }

    /// The part of the configuration every instance shares: process, logs and the http
    /// block's opening (temp paths, types, access log).
    fn common_conf(&self) -> String {
        let p = self.prefix.display();
        format!(
            "user root;\n\
             worker_processes 1;\n\
             daemon on;\n\
             pid {p}/logs/nginx.pid;\n\
             lock_file {p}/logs/nginx.lock;\n\
             error_log {p}/logs/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log {p}/logs/access.log;\n\
             \x20   client_body_temp_path {p}/tmp/body;\n\
             \x20   proxy_temp_path {p}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {p}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {p}/tmp/scgi;\n\
             \x20   default_type text/plain;\n\
             \x20   types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n\
             \x20   keepalive_timeout 5s;\n"
        )
    }

    /// A backend: HTTP on 0.0.0.0:8080 (and `[::]:8080` with `ipv6`; `/` answers its name,
    /// `/health`, `/live.m3u8`) and RTMP on 1935 (`application live`), with an RTMP access
    /// log.
    pub fn backend(name: &str, ns: &str, prefix: &Path, ipv6: bool) -> Result<Self> {
        let nginx = Self::new(name, ns, prefix)?;
        let www = prefix.join("www");
        fs::write(www.join("live.m3u8"), playlist(name)).context("writing the HLS playlist")?;
        fs::write(www.join(format!("{name}-seg0.ts")), [0x47u8; 188])
            .context("writing the HLS segment")?;
        let p = prefix.display();
        let conf = format!(
            "load_module {RTMP_MODULE};\n\
             {common}\
             \x20   server {{\n\
             \x20       listen 0.0.0.0:8080;\n\
             {listen6}\
             \x20       root {p}/www;\n\
             \x20       location = / {{ return 200 \"{name}\\n\"; }}\n\
             \x20       location = /health {{ return 200 \"ok\\n\"; }}\n\
             \x20       location / {{ add_header X-Backend {name}; try_files $uri =404; }}\n\
             \x20   }}\n\
             }}\n\
             rtmp {{\n\
             \x20   access_log {p}/logs/rtmp-access.log;\n\
             \x20   server {{\n\
             \x20       listen 1935;\n\
             \x20       application live {{ live on; }}\n\
             \x20   }}\n\
             }}\n",
            common = nginx.common_conf(),
            listen6 = if ipv6 {
                "        listen [::]:8080 ipv6only=on;\n"
            } else {
                ""
            },
        );
        fs::write(nginx.conf_path(), conf).context("writing a backend's nginx.conf")?;
        Ok(nginx)
    }

    /// The LB host's own service: HTTP on `addr:port` answering `lb\n` at `/`.
    pub fn lb_service(ns: &str, prefix: &Path, addr: &str, port: u16) -> Result<Self> {
        let nginx = Self::new("lb", ns, prefix)?;
        let conf = format!(
            "{common}\
             \x20   server {{\n\
             \x20       listen {addr}:{port};\n\
             \x20       location / {{ return 200 \"lb\\n\"; }}\n\
             \x20   }}\n\
             }}\n",
            common = nginx.common_conf(),
        );
        fs::write(nginx.conf_path(), conf).context("writing the LB's nginx.conf")?;
        Ok(nginx)
    }

    /// Starts the daemon (`ip netns exec NS nginx -c CONF -p PREFIX`) and waits for its pid
    /// file. nginx binds its sockets before it daemonizes, so it listens once this returns.
    pub fn start(&mut self) -> Result<()> {
        let conf = self.conf_path();
        let prefix = format!("{}/", self.prefix.display());
        let conf = conf
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", conf.display()))?;
        let argv = [
            "ip", "netns", "exec", &self.ns, "nginx", "-c", conf, "-p", &prefix,
        ];
        let output = cmd::run(&argv, Duration::from_secs(30))?;
        if !output.status.success() {
            bail!(
                "starting nginx {} failed: `{}` ({}); stderr: {}; error log: {}",
                self.name,
                cmd::describe(&argv),
                cmd::status_text(output.status),
                quote_output(&output.stderr),
                quote_output(&fs::read(self.error_log_path()).unwrap_or_default())
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = fs::read_to_string(self.pid_path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                self.pid = Some(pid);
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx {} started but wrote no pid file {} within 10 s; error log: {}",
                    self.name,
                    self.pid_path().display(),
                    quote_output(&fs::read(self.error_log_path()).unwrap_or_default())
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the master (SIGTERM: fast shutdown; SIGKILL after 3 s). Workers left behind are
    /// killed with everything else in the namespace by the lab.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        // The master is not our child (it daemonized); make sure the pid is still nginx's.
        // A zombie counts as gone: pid 1 reaps orphans in its own time.
        let alive = || {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.contains("(nginx)")
                    && stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        };
        if !alive() {
            return;
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
