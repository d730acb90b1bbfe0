//! Loads the real data plane (no interface attached) and runs frames through it with
//! BPF_PROG_TEST_RUN, as Katran's tester does: frame in, verdict and frame out.

#![allow(dead_code)]

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use xdp_lb::{
    balancer::{Balancer, Forwarding, LocalInterface},
    config::{Backend, FlowTable, HashMode, MacAddr, NoBackendAction, Protocol, Service},
    dataplane::{Dataplane, LoadOptions, LogLevel},
};
use xdp_lb_common::Counter;

use super::frames::LB_MAC;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// The loopback device: BPF_PROG_TEST_RUN's ingress interface.
pub const LOOPBACK_IFINDEX: u32 = 1;
pub const SEED: u32 = 0x5eed_1b5d;

/// Each backend's MAC in the fixtures: 02:be:<the address's last four bytes>.
pub fn backend_mac(address: IpAddr) -> MacAddr {
    let o: Vec<u8> = match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets()[12..].to_vec(),
    };
    MacAddr([0x02, 0xbe, o[0], o[1], o[2], o[3]])
}

pub fn service(name: &str, vip: &str, port: u16, protocol: Protocol, backends: &[&str]) -> Service {
    Service {
        name: name.to_owned(),
        vip: vip.parse().expect("test VIP"),
        port,
        protocol,
        maglev_size: 65537,
        when_no_backend: NoBackendAction::Drop,
        when_backend_down: Default::default(),
        persistence: None,
        hash: HashMode::Flow,
        vlan: None,
        backends: backends
            .iter()
            .map(|a| Backend {
                address: a.parse().expect("test backend"),
                weight: 1,
                mac: None,
                vlan: None,
            })
            .collect(),
        pools: Vec::new(),
        clients: Vec::new(),
    }
}

pub struct Harness {
    pub balancer: Balancer,
}

pub struct Run {
    pub action: u32,
    pub frame: Vec<u8>,
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "packet tests load BPF programs: run them as root (cargo xtask test)"
    );
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the calling
/// CPU, so its per-CPU maps are that CPU's.
pub fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("a CPU number");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pinning to a CPU");
}

/// Runs `f` once on every online CPU, on this thread pinned there (each run reads and
/// writes that CPU's per-CPU maps).
pub fn on_every_cpu(mut f: impl FnMut(usize)) {
    let cpus = aya::util::online_cpus().expect("online CPUs");
    assert!(!cpus.is_empty());
    for cpu in cpus {
        pin_to_cpu(cpu as usize);
        f(cpu as usize);
    }
}

impl Harness {
    /// Loads the data plane with these services; every backend is reached through the
    /// ingress interface (loopback under BPF_PROG_TEST_RUN) at `backend_mac(address)`.
    pub fn new(services: &[Service]) -> Self {
        Self::with_forwarding(services, &Self::loopback_forwarding)
    }

    /// Every backend reached through the ingress interface, as `new`.
    pub fn loopback_forwarding(b: &Backend) -> Option<Forwarding> {
        Some(Forwarding {
            mac: backend_mac(b.address),
            src_mac: MacAddr(LB_MAC),
            ifindex: LOOPBACK_IFINDEX,
        })
    }

    pub fn with_forwarding(
        services: &[Service],
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> Self {
        Self::with_flow_table(services, FlowTable::default(), forwarding)
    }

    pub fn with_flow_table(
        services: &[Service],
        flow_table: FlowTable,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> Self {
        require_root();
        // Two regions for each service's own table and for each of its pools', and for two
        // small tables added at run time.
        let slots: u32 = services
            .iter()
            .flat_map(|s| {
                std::iter::once(s.maglev_size).chain(s.pools.iter().map(|p| p.maglev_size))
            })
            .map(|size| 2 * size)
            .sum::<u32>()
            + 4 * xdp_lb_common::MAGLEV_MIN_SIZE;
        let dataplane = Dataplane::load(&LoadOptions {
            flow_hash_seed: SEED,
            maglev_table_slots: slots,
            flow_table,
            log_level: aya_log_level(),
        })
        .expect("loading the data plane");
        let mut balancer = Balancer::new(dataplane, SEED);
        // The fixtures' frames are addressed to LB_MAC, as the agent registers the MAC of
        // every interface it attaches to.
        balancer.set_local_interfaces([LocalInterface {
            ifindex: LOOPBACK_IFINDEX,
            name: "lo".to_owned(),
            macs: vec![MacAddr(LB_MAC)],
        }]);
        for s in services {
            balancer
                .add_service(s, forwarding)
                .expect("adding a service");
        }
        balancer
            .sync_local_macs()
            .expect("registering the LB's MACs");
        Self { balancer }
    }

    /// Runs one frame through the program.
    pub fn run(&self, frame: &[u8]) -> Run {
        self.run_with(frame, None)
    }

    /// As `run`, with the frame received on interface `ifindex` (which must exist in the
    /// calling thread's network namespace).
    pub fn run_on(&self, frame: &[u8], ifindex: u32) -> Run {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let md = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.run_with(frame, Some(&ctx))
    }

    /// One BPF_PROG_TEST_RUN of `frame`, with an `xdp_md` context or the kernel's default
    /// (received on loopback).
    fn run_with(&self, frame: &[u8], ctx: Option<&[u8]>) -> Run {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .balancer
            .dataplane()
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        Run {
            action: result.return_value,
            frame: out,
        }
    }

    /// The backend a frame was sent to, from its rewritten destination MAC.
    pub fn sent_to(&self, run: &Run) -> Option<IpAddr> {
        assert!(
            run.action == XDP_TX || run.action == XDP_REDIRECT,
            "not forwarded: action {}",
            run.action
        );
        let mac = &run.frame[0..6];
        self.balancer
            .services()
            .flat_map(|s| s.backends.keys())
            .find(|a| backend_mac(**a).0 == mac)
            .copied()
    }

    pub fn flow_stats(&self) -> Vec<Counter> {
        self.balancer.dataplane().flow_counters()
    }

    pub fn verdicts(&self) -> Vec<Counter> {
        self.balancer.dataplane().verdict_counters()
    }

    /// The id and epoch the balancer gave `backend` of `service`, and the service's id: what
    /// a connection-table entry for it holds.
    pub fn placed(&self, service: &str, backend: IpAddr) -> (u32, u32, u32) {
        let s = self.balancer.service(service).expect("the service");
        let b = &s.backends[&backend];
        (b.id, b.epoch, s.id)
    }

    /// Backend `address` (weight 1, reached like the others) joins `service`: Maglev sends a
    /// share of every flow's 5-tuples there from now on (one new table for the service).
    pub fn add_backend(&mut self, service: &str, address: &str) {
        let backend = Backend {
            address: address.parse().expect("a test backend address"),
            weight: 1,
            mac: None,
            vlan: None,
        };
        self.balancer
            .add_backend(service, &backend, Self::loopback_forwarding(&backend))
            .expect("adding a backend");
    }

    /// The backend userspace predicts for a flow.
    pub fn predict(&self, service: &str, client: &str, port: u16) -> IpAddr {
        self.balancer
            .predict(service, client.parse().expect("test client"), port)
            .expect("prediction")
            .expect("the service has backends")
    }
}

fn aya_log_level() -> LogLevel {
    LogLevel::Warn
}
