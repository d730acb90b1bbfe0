//! `examples/notify-mail.sh`, run as the agent runs a notify command, with a stand-in `mail`
//! first in PATH that records its arguments and message.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// A scratch directory holding the stand-in `mail`; removed when dropped.
struct FakeMail(PathBuf);

impl FakeMail {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xdp-lb-mail-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mail = dir.join("mail");
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {dir}/args\ncat > {dir}/message\n",
            dir = dir.display()
        );
        fs::write(&mail, script).unwrap();
        fs::set_permissions(&mail, fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Runs the example script with the change of a server in its environment.
    fn notify(&self, extra: &[(&str, &str)]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notify-mail.sh");
        let path = format!(
            "{}:{}",
            self.0.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let status = Command::new(&script)
            .env_remove("XDP_LB_MAILTO")
            .env("PATH", path)
            .env("XDP_LB_SERVICE", "video-hls")
            .env("XDP_LB_BACKEND", "10.0.0.11")
            .env("XDP_LB_ROLE", "primary")
            .env("XDP_LB_OLD_STATE", "up")
            .env("XDP_LB_NEW_STATE", "down")
            .env("XDP_LB_REASON", "connect: connection refused")
            .env("XDP_LB_TIME", "2026-05-01T12:34:56Z")
            .envs(extra.iter().copied())
            .status()
            .expect("running examples/notify-mail.sh");
        assert!(status.success(), "{status}");
    }
}

impl Drop for FakeMail {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_example_notify_script_mails_root_with_the_server_and_its_new_state_in_the_subject() {
    let mail = FakeMail::new("root");
    mail.notify(&[]);
    assert_eq!(mail.read("args"), "-s\nxdp-lb: 10.0.0.11 is down\nroot\n");
    let message = mail.read("message");
    for line in [
        "service:  video-hls",
        "server:   10.0.0.11 (primary)",
        "state:    up -> down",
        "reason:   connect: connection refused",
        "time:     2026-05-01T12:34:56Z",
    ] {
        assert!(message.contains(line), "{line:?} in {message}");
    }
}

#[test]
fn the_example_notify_script_mails_whoever_xdp_lb_mailto_names() {
    let mail = FakeMail::new("mailto");
    mail.notify(&[
        ("XDP_LB_MAILTO", "noc@example.net"),
        ("XDP_LB_NEW_STATE", "up"),
    ]);
    assert_eq!(
        mail.read("args"),
        "-s\nxdp-lb: 10.0.0.11 is up\nnoc@example.net\n"
    );
}
