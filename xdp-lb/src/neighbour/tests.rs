//! These tests talk to the real kernel: each builds two scratch network namespaces joined by
//! a veth (A = 192.0.2.1, 2001:db8::1 in the "LB" namespace; B = 192.0.2.2, 2001:db8::2) and
//! runs the resolver inside A's namespace on a thread of its own. They need root.

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::*;

/// Two namespaces, deleted (with the veth between them) when dropped.
struct Scratch {
    lb: String,
    peer: String,
}

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = Self {
            lb: format!("xdplb-nb-{id}-lb"),
            peer: format!("xdplb-nb-{id}-peer"),
        };
        let (lb, peer) = (scratch.lb.as_str(), scratch.peer.as_str());
        ip(&["netns", "add", lb]);
        ip(&["netns", "add", peer]);
        ip(&[
            "-n", lb, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns",
            peer,
        ]);
        for (ns, dev, v4, v6) in [
            (lb, "veth-a", "192.0.2.1/24", "2001:db8::1/64"),
            (peer, "veth-b", "192.0.2.2/24", "2001:db8::2/64"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
        }
        ip(&["-n", lb, "neigh", "flush", "dev", "veth-a"]);
        scratch
    }

    /// (ifindex, MAC) of an interface as `ip link` shows them.
    fn link(&self, ns: &str, dev: &str) -> (u32, String) {
        let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev]);
        let ifindex = out.split(':').next().and_then(|i| i.trim().parse().ok());
        let mut words = out.split_whitespace();
        let mac = words.find(|w| *w == "link/ether").and(words.next());
        match (ifindex, mac) {
            (Some(ifindex), Some(mac)) => (ifindex, mac.to_owned()),
            _ => panic!("cannot read ifindex and MAC from {out:?}"),
        }
    }

    fn assert_no_neighbour(&self, addr: &str) {
        let out = ip(&["-n", &self.lb, "neigh", "show", "to", addr, "dev", "veth-a"]);
        assert_eq!(out.trim(), "", "the neighbour table already knows {addr}");
    }

    /// Runs `f` with a resolver opened inside the LB namespace, on a thread of its own.
    fn in_lb<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Neighbours) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.in_lb_on(tokio::runtime::Builder::new_current_thread, f)
    }

    /// [`Self::in_lb`] on a multi-threaded runtime (its worker threads are started from
    /// the namespace's thread, so they are in the namespace too).
    fn in_lb_threaded<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Neighbours) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.in_lb_on(
            || {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(4);
                builder
            },
            f,
        )
    }

    /// `f` on a runtime from `runtime`, built on a thread that entered the LB namespace.
    fn in_lb_on<T, F, Fut>(&self, runtime: fn() -> tokio::runtime::Builder, f: F) -> T
    where
        F: FnOnce(Neighbours) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.lb);
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the namespace");
            // setns(2) changes only this thread's namespace.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = runtime().enable_all().build().expect("tokio runtime");
            runtime.block_on(async { f(Neighbours::new().expect("netlink connection")).await })
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in [&self.lb, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ip {}: {stderr}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[test]
fn opening_a_connection_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    assert!(matches!(Neighbours::new(), Err(NeighbourError::NoRuntime)));
}

#[test]
fn an_interface_is_found_by_name_with_the_ifindex_and_mac_that_ip_link_shows() {
    let scratch = Scratch::new();
    let (ifindex, mac) = scratch.link(&scratch.lb, "veth-a");
    let egress = scratch
        .in_lb(|n| async move { n.interface("veth-a").await })
        .expect("veth-a");
    assert_eq!(
        (egress.ifindex, egress.ifname.as_str()),
        (ifindex, "veth-a")
    );
    assert_eq!(egress.mac.to_string(), mac);
}

#[test]
fn an_interface_that_does_not_exist_is_reported_by_name() {
    let scratch = Scratch::new();
    let err = scratch
        .in_lb(|n| async move { n.interface("eth9").await })
        .expect_err("eth9 does not exist");
    assert_eq!(err.to_string(), "interface eth9 does not exist");
}

fn assert_resolves_peer(target: &'static str) {
    let scratch = Scratch::new();
    let (ifindex, lb_mac) = scratch.link(&scratch.lb, "veth-a");
    let (_, peer_mac) = scratch.link(&scratch.peer, "veth-b");
    scratch.assert_no_neighbour(target);
    let resolved = scratch
        .in_lb(move |n| async move { n.resolve(addr(target), Duration::from_secs(5)).await })
        .expect("the peer answers");
    assert_eq!(resolved.mac.to_string(), peer_mac);
    assert_eq!(
        (resolved.egress.ifindex, resolved.egress.ifname.as_str()),
        (ifindex, "veth-a")
    );
    assert_eq!(resolved.egress.mac.to_string(), lb_mac);
}

#[test]
fn an_ipv4_backend_is_resolved_by_arp_starting_from_an_empty_neighbour_table() {
    assert_resolves_peer("192.0.2.2");
}

#[test]
fn an_ipv6_backend_is_resolved_by_neighbour_discovery_starting_from_an_empty_table() {
    assert_resolves_peer("2001:db8::2");
}

#[test]
fn an_address_on_the_subnet_that_nobody_holds_does_not_answer_within_the_timeout() {
    let scratch = Scratch::new();
    let started = Instant::now();
    let err = scratch
        .in_lb(|n| async move { n.resolve(addr("192.0.2.99"), Duration::from_secs(1)).await })
        .expect_err("nobody holds 192.0.2.99");
    let elapsed = started.elapsed();
    let message = err.to_string();
    assert!(
        message.starts_with("backend 192.0.2.99 did not answer ARP on veth-a within 1s"),
        "{message}"
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "gave up only after {elapsed:?}"
    );
}

#[test]
fn a_backend_behind_a_gateway_is_rejected_as_not_on_the_lbs_segment() {
    let scratch = Scratch::new();
    ip(&[
        "-n",
        &scratch.lb,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.2",
    ]);
    let err = scratch
        .in_lb(|n| async move {
            n.resolve(addr("198.51.100.7"), Duration::from_secs(1))
                .await
        })
        .expect_err("198.51.100.7 is behind a gateway");
    assert_eq!(
        err.to_string(),
        "backend 198.51.100.7 is not on a directly connected network (the route goes via \
         gateway 192.0.2.2 on veth-a); direct server return needs backends on the LB's L2 segment"
    );
}

#[test]
fn an_unroutable_backend_is_reported_as_having_no_route() {
    let scratch = Scratch::new();
    for target in ["203.0.113.9", "2001:db8:ffff::9"] {
        let err = scratch
            .in_lb(move |n| async move { n.egress_for(addr(target)).await })
            .expect_err("nothing routes there");
        assert_eq!(err.to_string(), format!("no route to backend {target}"));
    }
}

#[test]
fn a_local_address_of_the_lb_is_rejected_as_a_backend() {
    let scratch = Scratch::new();
    for target in ["192.0.2.1", "2001:db8::1"] {
        let err = scratch
            .in_lb(move |n| async move { n.resolve(addr(target), Duration::from_secs(1)).await })
            .expect_err("a local address");
        assert!(
            matches!(err, NeighbourError::LocalAddress(a) if a == addr(target)),
            "{err}"
        );
    }
}

#[test]
fn a_permanent_neighbour_entry_is_used_as_it_is() {
    let scratch = Scratch::new();
    let lb = scratch.lb.as_str();
    ip(&[
        "-n",
        lb,
        "neigh",
        "add",
        "192.0.2.50",
        "lladdr",
        "02:00:00:00:00:50",
        "nud",
        "permanent",
        "dev",
        "veth-a",
    ]);
    let resolved = scratch
        .in_lb(|n| async move { n.resolve(addr("192.0.2.50"), Duration::ZERO).await })
        .expect("the permanent entry");
    assert_eq!(resolved.mac, MacAddr([2, 0, 0, 0, 0, 0x50]));
}

#[test]
fn an_interface_with_arp_off_never_yields_its_own_mac_as_the_backends() {
    let scratch = Scratch::new();
    ip(&["-n", &scratch.lb, "link", "set", "veth-a", "arp", "off"]);
    let (_, lb_mac) = scratch.link(&scratch.lb, "veth-a");
    let err = scratch
        .in_lb(|n| async move {
            n.resolve(addr("192.0.2.2"), Duration::from_millis(300))
                .await
        })
        .expect_err("no ARP on veth-a");
    assert_eq!(
        err.to_string(),
        format!(
            "backend 192.0.2.2 did not answer ARP on veth-a within 300ms (neighbour state \
             NOARP with veth-a's own MAC {lb_mac})"
        )
    );
}

#[test]
fn health_checks_leave_from_the_interfaces_own_address_and_never_from_a_vip() {
    let scratch = Scratch::new();
    // A VIP on the same interface, as on a real LB.
    ip(&[
        "-n",
        &scratch.lb,
        "addr",
        "add",
        "192.0.2.100/32",
        "dev",
        "veth-a",
    ]);
    let vips = std::collections::BTreeSet::from([addr("192.0.2.100")]);
    let source = scratch
        .in_lb(move |n| async move { n.source_for(addr("192.0.2.2"), &vips).await })
        .expect("a source address");
    assert_eq!(source, addr("192.0.2.1"));
    let source = scratch
        .in_lb(|n| async move { n.source_for(addr("2001:db8::2"), &Default::default()).await })
        .expect("an IPv6 source address");
    assert_eq!(source, addr("2001:db8::1"));
    let every = std::collections::BTreeSet::from([addr("192.0.2.100"), addr("192.0.2.1")]);
    let err = scratch
        .in_lb(move |n| async move { n.source_for(addr("192.0.2.2"), &every).await })
        .expect_err("only VIPs left");
    assert!(
        matches!(err, NeighbourError::NoSourceAddress { .. }),
        "{err}"
    );
}

/// A sysfs-like tree: each device a directory with `uevent`, `iflink` and `address`.
struct FakeSysfs(std::path::PathBuf);

impl FakeSysfs {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdp-lb-sysfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn device(&self, name: &str, devtype: Option<&str>, iflink: u32, mac: &str) {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let devtype = devtype
            .map(|t| format!("DEVTYPE={t}\n"))
            .unwrap_or_default();
        std::fs::write(dir.join("uevent"), format!("{devtype}INTERFACE={name}\n")).unwrap();
        std::fs::write(dir.join("iflink"), format!("{iflink}\n")).unwrap();
        std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_macs_of_an_interfaces_vlan_devices_are_found_and_no_others() {
    let sys = FakeSysfs::new();
    sys.device("eth0", None, 2, "02:00:00:00:00:02");
    sys.device("eth0.200", Some("vlan"), 2, "02:00:00:00:02:00");
    sys.device("eth0.100", Some("vlan"), 2, "02:00:00:00:01:00");
    sys.device("eth1.300", Some("vlan"), 3, "02:00:00:00:03:00");
    // A veth's iflink is its peer, not a parent.
    sys.device("veth0", None, 2, "02:00:00:00:00:99");
    let macs: Vec<String> = vlan_device_macs_in(&sys.0, 2)
        .iter()
        .map(MacAddr::to_string)
        .collect();
    assert_eq!(macs, ["02:00:00:00:01:00", "02:00:00:00:02:00"]);
    assert!(vlan_device_macs_in(&sys.0, 7).is_empty());
    assert!(vlan_device_macs_in(&sys.0.join("missing"), 2).is_empty());
}

#[test]
fn health_checks_looking_up_their_source_all_at_once_all_get_it() {
    // Every lookup dumps the interface's addresses. The kernel refuses a second dump on a
    // netlink socket while one is still running (EBUSY): checks of healthy servers failed
    // with "no source address" when their lookups met (fall of them in a row took a
    // healthy server out). Many addresses make each dump long enough to meet the others.
    let scratch = Scratch::new();
    let batch: String = (0..1000)
        .map(|i| format!("addr add 10.{}.{}.1/32 dev veth-a\n", i / 250, i % 250))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.batch", scratch.lb));
    std::fs::write(&path, batch).expect("writing the ip batch");
    ip(&["-n", &scratch.lb, "-batch", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    // Lookups arriving one after another from checkers on several threads, as in the agent
    // (the connection then sends a new dump before it has read the last one to its end).
    let failed = scratch.in_lb_threaded(|n| async move {
        let checkers = (0..16).map(|_| {
            let n = n.clone();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..20 {
                    match n.source_for(addr("192.0.2.2"), &Default::default()).await {
                        Ok(source) if source == addr("192.0.2.1") => {}
                        other => failed.push(format!("{other:?}")),
                    }
                }
                failed
            })
        });
        let mut failed = Vec::new();
        for checker in futures::future::join_all(checkers).await {
            failed.extend(checker.expect("a checker task"));
        }
        failed
    });
    assert!(
        failed.is_empty(),
        "{} of 320 lookups: {failed:?}",
        failed.len()
    );
}
