//! Counting the connection table off the control loop. A table of millions of entries
//! takes a second or more to walk; done in the loop, every `status` and every metrics
//! scrape would hold health verdicts back that long. A thread of its own walks it through
//! a handle of its own on the map; requests that arrive while it counts share the next
//! count, so a burst of scrapes costs one walk.

use std::{
    collections::HashMap,
    sync::{Arc, mpsc},
    thread,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::sync::oneshot;
use xdp_lb_common::{FLOW_F_FIN, FLOW_F_RST, FlowKey, FlowValue, PROTO_TCP};

use crate::config::FlowTable;

/// Live connection-table entries per (backend id, epoch), and in all.
#[derive(Clone, Debug, Default)]
pub struct Census {
    pub by_backend: HashMap<(u32, u32), u64>,
    pub total: u64,
}

type Waiter = oneshot::Sender<Arc<Census>>;

/// The counting thread; it ends when this is dropped.
pub struct FlowCensus {
    requests: mpsc::Sender<Waiter>,
}

impl FlowCensus {
    /// Starts the thread on `flows` (a handle of its own), counting as `timeouts` say.
    pub fn start(
        flows: BpfHashMap<MapData, FlowKey, FlowValue>,
        timeouts: FlowTable,
    ) -> anyhow::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Waiter>();
        thread::Builder::new()
            .name("flow-census".into())
            .spawn(move || {
                lower_priority();
                while let Ok(first) = incoming.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(incoming.try_iter());
                    let census = Arc::new(count(&flows, &timeouts));
                    for waiter in waiting {
                        let _ = waiter.send(census.clone());
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// A count begun after this call (`None` if the thread is gone).
    pub fn count(&self) -> impl std::future::Future<Output = Option<Arc<Census>>> + use<> {
        let (tx, rx) = oneshot::channel();
        let sent = self.requests.send(tx).is_ok();
        async move { if sent { rx.await.ok() } else { None } }
    }
}

/// The census thread's nice value: on a busy machine the control loop and the health
/// checkers, at the default 0, get the CPU before a walk of millions of entries does, so
/// a scrape waits rather than a verdict.
pub const CENSUS_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to [`CENSUS_NICE`] (Linux: nice is per thread).
fn lower_priority() {
    // SAFETY: setpriority(2) takes plain integers; `who` 0 is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CENSUS_NICE) } != 0 {
        log::warn!(
            "flow census: cannot lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// How far the data plane's clock readings may lag `monotonic_ns`: more than two jiffies at
/// HZ=100 (the coarse clock steps once a jiffy, and a CPU's cached reading may be a jiffy
/// older still: see the data plane's `flows::now_ns`).
pub const COARSE_CLOCK_LAG_NS: u64 = 30_000_000;

/// A time that every last-seen time the data plane writes from now on is at or after
/// (`monotonic_ns` less the coarse clock's lag).
pub fn coarse_floor_ns() -> u64 {
    monotonic_ns().saturating_sub(COARSE_CLOCK_LAG_NS)
}

/// `bpf_ktime_get_coarse_ns()` now, near enough: the clock of the entries' last-seen times.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own; CLOCK_MONOTONIC exists on
    // every Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Whether the data plane would ignore this entry as idle for too long.
pub fn expired(key: &FlowKey, value: &FlowValue, now: u64, timeouts: &FlowTable) -> bool {
    let seconds = if key.proto != PROTO_TCP {
        timeouts.udp_timeout_s
    } else if value.flags & FLOW_F_RST != 0 {
        timeouts.tcp_close_timeout_s.min(timeouts.tcp_timeout_s)
    } else if value.flags & FLOW_F_FIN != 0 {
        timeouts.tcp_fin_timeout_s.min(timeouts.tcp_timeout_s)
    } else {
        timeouts.tcp_timeout_s
    };
    now.saturating_sub(value.last_seen_ns) > u64::from(seconds) * 1_000_000_000
}

/// An entry idle longer than its protocol's timeout is not counted: the data plane ignores
/// it (and replaces it at its flow's next packet), so a drained backend's count falls to 0
/// once its flows have ended and their timeout has passed.
fn count(flows: &BpfHashMap<MapData, FlowKey, FlowValue>, timeouts: &FlowTable) -> Census {
    let now = monotonic_ns();
    let mut census = Census::default();
    for (key, value) in flows.iter().filter_map(Result::ok) {
        if expired(&key, &value, now, timeouts) {
            continue;
        }
        census.total += 1;
        *census
            .by_backend
            .entry((value.backend_id, value.backend_epoch))
            .or_insert(0) += 1;
    }
    census
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_idle_beyond_its_protocol_s_timeout_is_expired() {
        let timeouts = FlowTable {
            tcp_timeout_s: 10,
            udp_timeout_s: 2,
            ..FlowTable::default()
        };
        let key = |proto| FlowKey {
            proto,
            ..FlowKey::default()
        };
        let seen = |s: u64| FlowValue {
            last_seen_ns: s * 1_000_000_000,
            ..FlowValue::default()
        };
        let now = 100 * 1_000_000_000;
        assert!(!expired(&key(PROTO_TCP), &seen(95), now, &timeouts));
        assert!(expired(&key(PROTO_TCP), &seen(89), now, &timeouts));
        assert!(expired(&key(17), &seen(95), now, &timeouts));
        assert!(!expired(&key(17), &seen(99), now, &timeouts));
        assert!(monotonic_ns() > 0);
    }

    #[test]
    fn the_census_thread_yields_the_cpu_to_the_rest_of_the_agent() {
        let nice = || {
            // getpriority(2) may return -1 as a value: errno tells an error apart.
            // SAFETY: plain integers; `who` 0 is the calling thread.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        };
        let before = nice();
        let census = std::thread::spawn(move || {
            lower_priority();
            nice()
        })
        .join()
        .expect("the thread");
        assert_eq!(census, CENSUS_NICE);
        assert_eq!(nice(), before, "only the census thread is lowered");
    }
}
