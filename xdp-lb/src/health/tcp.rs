//! The `tcp` check: a connection is accepted within the timeout.

use std::net::{IpAddr, SocketAddr};

use super::check::{Check, Deadline, Outcome};

/// A `tcp` check of the server at `to`, from `source` (or the kernel's pick).
pub(super) struct Tcp {
    pub source: Option<IpAddr>,
    pub to: SocketAddr,
}

impl Check for Tcp {
    async fn run(self, deadline: &Deadline) -> Outcome {
        let stream = deadline.connect(self.source, self.to).await?;
        drop(stream);
        Ok("connected".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        config::CheckKind,
        health::probe::{
            probe,
            tests::{LOCAL, check},
        },
    };

    #[tokio::test]
    async fn a_tcp_check_passes_when_the_port_accepts() {
        let listener = tokio::net::TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let outcome = probe(&check(CheckKind::Tcp, port, 500), LOCAL, Some(LOCAL)).await;
        assert_eq!(outcome, Ok("connected".to_owned()));
    }

    #[tokio::test]
    async fn a_tcp_check_fails_on_a_refused_connection_and_says_so() {
        let listener = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let outcome = probe(&check(CheckKind::Tcp, port, 500), LOCAL, None).await;
        assert_eq!(outcome, Err("connect: connection refused".to_owned()));
    }

    #[tokio::test]
    async fn a_tcp_check_to_a_silent_address_fails_within_its_timeout() {
        // TEST-NET-1 (192.0.2.0/24) is never answered: the SYN goes nowhere, or nowhere is
        // routed at all.
        let started = std::time::Instant::now();
        let outcome = probe(
            &check(CheckKind::Tcp, 9, 200),
            "192.0.2.1".parse().unwrap(),
            None,
        )
        .await;
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
