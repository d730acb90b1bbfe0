//! The `rtmp` check: the start of a real RTMP handshake. C0 (version 3) and C1 (1536
//! bytes: a 4-byte time, 4 zero bytes, 1528 random bytes) go out; S0 (version 3) and the
//! 1536 bytes of S1 must come back within the timeout. A server that still accepts TCP but
//! whose RTMP side hangs fails here, where a `tcp` check would pass. The connection is
//! closed without C2: the server sees a client that gave up.

use std::{
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::check::{Check, Deadline, Outcome, random_u64};

/// The RTMP version byte of C0 and S0.
pub const RTMP_VERSION: u8 = 3;
/// Bytes of C1, S1 (and C2, S2).
pub const HANDSHAKE_SIZE: usize = 1536;

/// An `rtmp` check of the server at `to`, from `source` (or the kernel's pick).
pub(super) struct Rtmp {
    pub source: Option<IpAddr>,
    pub to: SocketAddr,
}

impl Check for Rtmp {
    async fn run(self, deadline: &Deadline) -> Outcome {
        handshake(deadline, self.source, self.to).await
    }
}

async fn handshake(deadline: &Deadline, source: Option<IpAddr>, to: SocketAddr) -> Outcome {
    let mut stream = deadline.connect(source, to).await?;
    deadline
        .run("sending C0+C1", stream.write_all(&c0c1()))
        .await?;
    let mut reply = vec![0u8; 1 + HANDSHAKE_SIZE];
    let mut got = 0;
    while got < reply.len() {
        let n = deadline
            .run("waiting for S0+S1", stream.read(&mut reply[got..]))
            .await
            .map_err(|why| format!("{why} after {got} of {} bytes", reply.len()))?;
        if n == 0 {
            return Err(format!(
                "the connection closed after {got} of the {} bytes of S0+S1",
                reply.len()
            ));
        }
        if got == 0 && reply[0] != RTMP_VERSION {
            return Err(format!(
                "S0 is version {}, not RTMP's {RTMP_VERSION}",
                reply[0]
            ));
        }
        got += n;
    }
    Ok("RTMP handshake".to_owned())
}

/// C0 and C1.
fn c0c1() -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HANDSHAKE_SIZE);
    out.push(RTMP_VERSION);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // The time field is 32 bits and wraps, as in every RTMP implementation.
    out.extend_from_slice(&((millis & 0xffff_ffff) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    while out.len() < 1 + HANDSHAKE_SIZE {
        out.extend_from_slice(&random_u64().to_le_bytes());
    }
    out.truncate(1 + HANDSHAKE_SIZE);
    out
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt as _, net::TcpListener, task::JoinHandle};

    use super::*;
    use crate::{
        config::CheckKind,
        health::probe::{
            probe,
            tests::{LOCAL, check},
        },
    };

    /// A server that reads C0+C1, then answers `reply` (or nothing when `None`); yields
    /// what it read.
    async fn server(reply: Option<Vec<u8>>) -> (u16, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut c0c1 = vec![0u8; 1 + HANDSHAKE_SIZE];
            let _ = conn.read_exact(&mut c0c1).await;
            match reply {
                Some(bytes) => {
                    let _ = conn.write_all(&bytes).await;
                }
                None => tokio::time::sleep(std::time::Duration::from_secs(5)).await,
            }
            c0c1
        });
        (port, task)
    }

    fn s0s1s2() -> Vec<u8> {
        let mut reply = vec![RTMP_VERSION];
        reply.extend(std::iter::repeat_n(0x5a, 2 * HANDSHAKE_SIZE));
        reply
    }

    #[tokio::test]
    async fn a_server_answering_s0_and_s1_passes_and_got_a_well_formed_c0_c1() {
        let (port, sent) = server(Some(s0s1s2())).await;
        let outcome = probe(&check(CheckKind::Rtmp, port, 500), LOCAL, Some(LOCAL)).await;
        assert_eq!(outcome, Ok("RTMP handshake".to_owned()));
        let sent = sent.await.unwrap();
        assert_eq!(sent.len(), 1 + HANDSHAKE_SIZE);
        assert_eq!(sent[0], RTMP_VERSION);
        assert_eq!(&sent[5..9], &[0, 0, 0, 0], "C1's zero field");
        assert!(sent[9..].iter().any(|b| *b != 0), "C1 carries random bytes");
    }

    #[tokio::test]
    async fn a_server_that_accepts_tcp_but_never_answers_the_handshake_fails() {
        let (port, _sent) = server(None).await;
        let outcome = probe(&check(CheckKind::Rtmp, port, 300), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err(
                "waiting for S0+S1: timed out (300ms check timeout) after 0 of 1537 bytes"
                    .to_owned()
            )
        );
        let (port, _sent) = server(None).await;
        let tcp = probe(&check(CheckKind::Tcp, port, 300), LOCAL, None).await;
        assert!(tcp.is_ok(), "the same server passes a tcp check: {tcp:?}");
    }

    #[tokio::test]
    async fn a_wrong_version_or_a_short_answer_fails() {
        let (port, _sent) = server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
        let outcome = probe(&check(CheckKind::Rtmp, port, 500), LOCAL, None).await;
        assert_eq!(outcome, Err("S0 is version 72, not RTMP's 3".to_owned()));
        let (port, _sent) = server(Some(vec![RTMP_VERSION; 100])).await;
        let outcome = probe(&check(CheckKind::Rtmp, port, 500), LOCAL, None).await;
        assert_eq!(
            outcome,
            Err("the connection closed after 100 of the 1537 bytes of S0+S1".to_owned())
        );
    }

    #[test]
    fn c1_is_fresh_each_time() {
        assert_ne!(c0c1()[9..], c0c1()[9..]);
    }
}
