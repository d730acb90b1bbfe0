//! The command line never hangs on a file that is not a regular file, nor reads an endless
//! one: `check` on a FIFO and `service add` of a device or of a too-long standard input
//! answer at once with what is wrong.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Runs the agent binary with `args` (and `stdin` fed to it), killing it after 10 s: a
/// command that hangs fails the test instead of hanging it.
fn xdp_lb(args: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xdp-lb"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running xdp-lb");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The reader may stop early; a broken pipe is expected then.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("xdp-lb {args:?} hung for 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xdp-lb-cli-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_refuses_a_fifo_at_once_instead_of_waiting_for_a_writer() {
    let dir = scratch("fifo");
    let fifo = dir.join("xdp-lb.yaml");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let out = xdp_lb(&["check", fifo.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a FIFO, not a regular file"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn service_add_refuses_a_device_and_an_overlong_standard_input() {
    let dir = scratch("add");
    let socket = dir.join("no-agent.sock");
    let socket = socket.to_str().unwrap();
    let out = xdp_lb(&["service", "add", "/dev/zero", "--socket", socket], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/dev/zero is a device, not a regular file"),
        "{stderr}"
    );

    let out = xdp_lb(
        &["service", "add", "-", "--socket", socket],
        Some(vec![b'#'; 1 << 20]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("standard input is larger than 65536 bytes"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
