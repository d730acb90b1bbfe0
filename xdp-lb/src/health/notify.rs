//! The notify command (keepalived's `notify`, mon's alerts): run on every state change
//! with the change in its environment, on a task of its own so that nothing waits for it,
//! killed (with whatever it started) when it outlives its timeout. Its failures are logged
//! as warnings and never stop the agent.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jiff::Timestamp;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{io::AsyncReadExt as _, process::Command, task::JoinHandle};

use super::Event;
use crate::config::{Notify, format_duration};

/// Most of a failing command's stderr quoted in the warning.
const MAX_STDERR: usize = 2048;

#[derive(Clone, Debug)]
pub struct Notifier {
    command: PathBuf,
    timeout: Duration,
    runs: Arc<NotifyRuns>,
}

/// How the notify command's runs ended (for the metrics), counted from the agent's start.
#[derive(Debug, Default)]
pub struct NotifyRuns {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    not_started: AtomicU64,
}

impl NotifyRuns {
    /// `(result, runs)` for each way a run can end: `ok`, `failed` (a non-zero exit or a
    /// signal), `timeout` (killed) and `not_started`.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        [
            ("ok", self.ok.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("timeout", self.timed_out.load(Ordering::Relaxed)),
            ("not_started", self.not_started.load(Ordering::Relaxed)),
        ]
    }

    fn count(&self, ended: &Result<(), Failure>) {
        let counter = match ended {
            Ok(()) => &self.ok,
            Err(Failure::Failed(_)) => &self.failed,
            Err(Failure::TimedOut(_)) => &self.timed_out,
            Err(Failure::NotStarted(_)) => &self.not_started,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Notifier {
    pub fn new(notify: &Notify) -> Self {
        Self {
            command: notify.command.clone(),
            timeout: notify.timeout,
            runs: Arc::default(),
        }
    }

    /// Counts its runs in `runs` (kept by the agent across reloads, which make new
    /// notifiers).
    pub fn counting(mut self, runs: Arc<NotifyRuns>) -> Self {
        self.runs = runs;
        self
    }

    /// Starts the command for `event` and returns at once; the task logs how it ended.
    pub fn notify(&self, event: &Event) -> JoinHandle<()> {
        let env = environment(event);
        let (command, timeout, runs) = (self.command.clone(), self.timeout, self.runs.clone());
        let what = format!(
            "notify command {} for {} {}",
            command.display(),
            event.service,
            event.address
        );
        tokio::spawn(async move {
            let ended = execute(&command, &env, timeout).await;
            runs.count(&ended);
            match ended {
                Ok(()) => log::debug!("{what}: done"),
                Err(failure) => log::warn!("{what}: {}", failure.why()),
            }
        })
    }
}

/// How a run went wrong, and what to say about it.
enum Failure {
    NotStarted(String),
    Failed(String),
    TimedOut(String),
}

impl Failure {
    fn why(self) -> String {
        match self {
            Failure::NotStarted(why) | Failure::Failed(why) | Failure::TimedOut(why) => why,
        }
    }
}

/// The variables a notify command gets.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    vec![
        ("XDP_LB_SERVICE", event.service.clone()),
        ("XDP_LB_BACKEND", event.address.to_string()),
        ("XDP_LB_ROLE", event.role.to_string()),
        ("XDP_LB_OLD_STATE", event.from.to_string()),
        ("XDP_LB_NEW_STATE", event.to.to_string()),
        ("XDP_LB_REASON", event.reason.clone()),
        ("XDP_LB_TIME", rfc3339(event.at)),
    ]
}

/// Runs `command` with `env` added to the agent's environment, for at most `timeout`.
pub async fn run(
    command: &std::path::Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    execute(command, env, timeout).await.map_err(Failure::why)
}

async fn execute(
    command: &std::path::Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), Failure> {
    let mut child = Command::new(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::NotStarted(format!("cannot start it: {e}")))?;
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let finished = tokio::time::timeout(timeout, async {
        let mut said = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            // Kept short; the rest is read and dropped so the command never blocks on it.
            let mut chunk = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = MAX_STDERR.saturating_sub(said.len());
                said.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
        (child.wait().await, said)
    })
    .await;
    match finished {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), said)) => {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("signal {signal}"),
                (None, None) => status.to_string(),
            };
            let said = String::from_utf8_lossy(&said);
            Err(Failure::Failed(format!(
                "failed ({how}); stderr: {:?}",
                said.trim()
            )))
        }
        Ok((Err(e), _)) => Err(Failure::Failed(format!("waiting for it: {e}"))),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group is the command's own (process_group(0)) and its leader has not
                // been reaped yet, so the id is still theirs.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(Failure::TimedOut(format!(
                "still running after {}; killed",
                format_duration(timeout)
            )))
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second: `2026-05-01T12:34:56Z`. A time before 1970 (a
/// clock gone wrong) is written as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Instant};

    use super::*;
    use crate::config::{HealthState, Role};

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn event(service: &str) -> Event {
        Event {
            run: 1,
            service: service.to_owned(),
            address: "10.77.0.11".parse().unwrap(),
            role: Role::Primary,
            from: HealthState::Up,
            to: HealthState::Down,
            reason: "connect: connection refused".to_owned(),
            checks: 2,
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn times_are_rfc_3339_in_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999)),
            "2023-11-14T22:13:20Z",
            "cut to the second, not rounded"
        );
    }

    #[tokio::test]
    async fn the_command_gets_the_change_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = script(
            dir.path(),
            "notify.sh",
            &format!("env | grep ^XDP_LB_ | sort > {}", out.display()),
        );
        run(
            &cmd,
            &environment(&event("video-hls")),
            Duration::from_secs(5),
        )
        .await
        .expect("the command ran");
        // Variables the test itself inherited (a runner's XDP_LB_* settings) pass through
        // unchanged; the ones the agent adds are these.
        let inherited: Vec<String> = std::env::vars().map(|(k, _)| format!("{k}=")).collect();
        let added: String = fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| !inherited.iter().any(|k| l.starts_with(k.as_str())))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            added,
            "XDP_LB_BACKEND=10.77.0.11\nXDP_LB_NEW_STATE=down\nXDP_LB_OLD_STATE=up\n\
             XDP_LB_REASON=connect: connection refused\nXDP_LB_ROLE=primary\n\
             XDP_LB_SERVICE=video-hls\nXDP_LB_TIME=2023-11-14T22:13:20Z\n"
        );
    }

    #[tokio::test]
    async fn a_failing_or_missing_command_is_reported_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = script(
            dir.path(),
            "fail.sh",
            "echo 'mail: command not found' >&2; exit 127",
        );
        let err = run(&cmd, &[], Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            err,
            "failed (exit status 127); stderr: \"mail: command not found\""
        );
        let err = run(&dir.path().join("missing.sh"), &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.starts_with("cannot start it: "), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let cmd = script(
            dir.path(),
            "hang.sh",
            &format!("sleep 60 & echo $! > {}; wait", pid_file.display()),
        );
        let started = Instant::now();
        let err = run(&cmd, &[], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err, "still running after 300ms; killed");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The killed sleep is a zombie until init reaps it, or gone.
        let gone = |pid: i32| {
            fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(child) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(child), "the command's own child was killed too");
    }

    #[tokio::test]
    async fn a_hanging_notification_does_not_hold_up_the_next_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let body = format!(
            "echo \"$XDP_LB_SERVICE\" >> {log}\n[ \"$XDP_LB_SERVICE\" = slow ] && sleep 60\nexit 0",
            log = log.display()
        );
        let notifier = Notifier::new(&Notify {
            command: script(dir.path(), "n.sh", &body),
            timeout: Duration::from_secs(4),
        });
        let slow = notifier.notify(&event("slow"));
        let fast = notifier.notify(&event("fast"));
        tokio::time::timeout(Duration::from_secs(3), fast)
            .await
            .expect("the second finished while the first hung")
            .unwrap();
        assert!(!slow.is_finished(), "the first one still hangs");
        tokio::time::timeout(Duration::from_secs(10), slow)
            .await
            .expect("the slow one was killed")
            .unwrap();
        let seen = fs::read_to_string(&log).unwrap();
        assert!(seen.contains("slow") && seen.contains("fast"), "{seen}");
    }

    #[tokio::test]
    async fn every_run_is_counted_by_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(NotifyRuns::default());
        let notifier = |body: &str, name: &str, timeout_ms: u64| {
            Notifier::new(&Notify {
                command: script(dir.path(), name, body),
                timeout: Duration::from_millis(timeout_ms),
            })
            .counting(runs.clone())
        };
        let missing = Notifier::new(&Notify {
            command: dir.path().join("missing.sh"),
            timeout: Duration::from_secs(5),
        })
        .counting(runs.clone());
        let tasks = [
            notifier("exit 0", "ok.sh", 5000).notify(&event("a")),
            notifier("exit 0", "ok2.sh", 5000).notify(&event("b")),
            notifier("exit 3", "fail.sh", 5000).notify(&event("c")),
            notifier("sleep 30", "hang.sh", 200).notify(&event("d")),
            missing.notify(&event("e")),
        ];
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("every run ended")
                .unwrap();
        }
        assert_eq!(
            runs.counts(),
            [("ok", 2), ("failed", 1), ("timeout", 1), ("not_started", 1)]
        );
    }
}
