//! The network-namespace lab: a client, the LB and LVS/DR backends running real nginx
//! (HTTP/HLS and RTMP) on one bridged L2 segment, for the integration tests and for
//! `cargo xtask run`.
//!
//! ```text
//!                      <id>-sw: bridge br0 (ports cl, lb*, b1, b2, ...)
//!        +-----------------+--------------------+-------------------+
//!   <id>-cl eth0       <id>-lb eth0          <id>-b1 eth0   ...   <id>-bN eth0
//!   10.77.0.2/24       10.77.0.1/24          10.77.0.11/24        10.77.0.(10+N)/24
//!   client             + VIP 10.77.0.100/32  VIP on lo, arp_ignore/arp_announce
//!                      agent (xdp_lb)        nginx: http 8080, rtmp 1935
//!                      nginx 10.77.0.1:8000
//! ```
//!
//! `*`: the switch side of the LB's veth runs `xdp_pass`, because a frame XDP_TX-ed out of a
//! veth only reaches a peer that runs an XDP program. The client, the LB and the backends
//! have TX checksum offload off on eth0 (a frame that went through XDP loses the "checksum
//! still to be completed" state veth relies on).
//!
//! With `LabOptions::client_behind_router: Some(mtu)` the segment's first port is a router
//! (`<id>-rt`, 10.77.0.3, forwarding on) instead, and the client sits behind it on a link
//! of its own: `<id>-rt eth1` 10.77.1.1/24 with MTU `mtu`, `<id>-cl eth0` 10.77.1.2/24 with
//! 1500 and a default route through the router; the LB and the backends route 10.77.1.0/24
//! through 10.77.0.3. The backends' full-size packets then draw "fragmentation needed"
//! from the router, to the VIP (`tests/tests/lab_pmtu.rs`).
//!
//! With `LabOptions::ipv6` every host also gets an IPv6 address without DAD (client
//! fd77::2, LB fd77::1, router fd77::3, backends fd77::11 ...; the router's client link
//! fd77:1::/64), the VIP fd77::100 is on the LB's eth0 and every backend's lo, and the
//! backends' nginx also listens on `[::]:8080`; otherwise IPv6 is off in every namespace
//! (`tests/tests/lab_ipv6.rs`).
//!
//! Every namespace name starts with the lab's id (`xl` + 4 digits of the pid + a counter),
//! so labs can run in parallel; [`Lab`] is a guard that tears everything down on drop.
//! Building a lab needs root.
//!
//! ```no_run
//! use xdp_lb_tests::{Lab, LabOptions};
//! # fn main() -> anyhow::Result<()> {
//! let lab = Lab::up(LabOptions { lb_agent: true, ..LabOptions::default() })?;
//! let body = lab.http_get_via_vip("/")?; // "b1\n", "b2\n" or "b3\n"
//! # Ok(()) }
//! ```

pub mod bench;
mod bgp;
pub mod browser;
mod cmd;
pub mod demo;
pub mod demo_bgp;
mod exec;
pub mod faults;
pub mod forward;
pub mod frames;
mod lab;
pub mod netns;
mod nginx;
mod process;
pub mod stale;
mod traffic;

pub use bgp::{ANNOUNCE_TABLE, HOLD_TIME_S};
pub use cmd::{EXEC_TIMEOUT, check, describe, quote_output, run, run_env, run_ok, status_text};
pub use lab::{KEEP_DIR_ENV, Lab, LabOptions, MAX_BACKENDS};
pub use nginx::{RTMP_MODULE, playlist};
pub use process::LabProcess;

/// Whether this process runs as root (labs need it; tests skip without it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
