//! Reading the files an operator names (the config, the registration token, a service's
//! YAML, the agent's own state files) without ever hanging on them: a FIFO, a device or a
//! directory is refused without blocking (opened non-blocking, then checked to be a regular
//! file), every read is bounded in size, and the agent reads with a deadline off its loop
//! ([`read_within`]), so a file on a hung network filesystem delays one reload, not the
//! agent.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

/// The longest the agent waits for a file's bytes.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// The bytes of the regular file at `path`, at most `max` of them. The error says what is
/// wrong, without the path (callers name the file).
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It has no
    // effect on the reads of a regular file.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot be opened: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        let kind = meta.file_type();
        let what = if kind.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            "a FIFO"
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            "a socket"
        } else {
            "a device"
        };
        return Err(format!("is {what}, not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("is larger than {max} bytes"));
    }
    Ok(bytes)
}

/// [`read_regular`] on a blocking thread, given up after `deadline`: the caller goes on
/// (the thread stays blocked in the kernel until the filesystem answers, and its result is
/// dropped).
pub async fn read_within(path: &Path, max: u64, deadline: Duration) -> Result<Vec<u8>, String> {
    let owned: PathBuf = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_regular(&owned, max));
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(format!("reading it failed: {join}")),
        Err(_) => Err(format!(
            "reading it took longer than {} s (a hung network filesystem?)",
            deadline.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_directory_and_a_device_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            read_regular(&fifo, 10).unwrap_err(),
            "is a FIFO, not a regular file"
        );
        assert_eq!(
            read_regular(dir.path(), 10).unwrap_err(),
            "is a directory, not a regular file"
        );
        assert_eq!(
            read_regular(Path::new("/dev/zero"), 10).unwrap_err(),
            "is a device, not a regular file"
        );
        assert!(
            read_regular(&dir.path().join("missing"), 10)
                .unwrap_err()
                .starts_with("cannot be opened:")
        );
    }

    #[test]
    fn a_regular_file_is_read_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_regular(&path, 10).unwrap(), b"0123456789");
        assert_eq!(
            read_regular(&path, 9).unwrap_err(),
            "is larger than 9 bytes"
        );
    }

    #[tokio::test]
    async fn the_deadline_read_answers_like_the_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(read_within(&path, 10, READ_DEADLINE).await.unwrap(), b"abc");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_within(&fifo, 10, READ_DEADLINE).await.is_err());
    }
}
